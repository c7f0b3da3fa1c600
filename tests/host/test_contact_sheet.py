"""tools/sim/contact_sheet.py: a run's frames in one overview picture."""

from PIL import Image

from tools.sim import contact_sheet


def frame(path, shade):
    Image.new("RGB", (384, 192), (shade, shade, shade)).save(path)
    return path


def test_frames_in_order_with_captions(tmp_path):
    frames = [frame(tmp_path / ("%03d-alice-OK.png" % i), 40 * i) for i in range(1, 6)]
    out = contact_sheet.make_sheet(frames, tmp_path / "overview.png")
    with Image.open(out) as sheet:
        # 4 across, 2 rows, frames at half size under a caption
        assert sheet.size == (4 * (192 + 8) + 8, 2 * (96 + 14 + 8) + 8)
        # the fifth frame (second row, first column) is where it belongs, in its own shade
        assert sheet.getpixel((8 + 50, 8 + 96 + 14 + 8 + 14 + 50)) == (200, 200, 200)
    assert contact_sheet.caption(frames[2]) == "3 alice OK"


def test_a_bad_frame_is_named_not_fatal_and_no_frames_no_sheet(tmp_path):
    good = frame(tmp_path / "001-bob-OK.png", 100)
    bad = tmp_path / "002-bob-INSUFFICIENT.png"
    bad.write_bytes(b"not a png")
    out = contact_sheet.make_sheet([good, bad], tmp_path / "o.png")
    with Image.open(out) as sheet:
        assert sheet.size[0] == 2 * (192 + 8) + 8
    assert contact_sheet.make_sheet([], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
