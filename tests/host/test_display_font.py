"""The subset font holds every Chinese character the display can show, and the panel renders."""

from pathlib import Path

import font_zh16
import messages

from tools.sim.ssd1306 import SSD1306


def test_font_covers_every_message():
    needed = {ch for text in messages.all_texts() for ch in text if ord(ch) > 0x7F}
    missing = needed - set(font_zh16.CHARS)
    assert not missing, "run `python -m tools.fontgen`: missing " + "".join(sorted(missing))
    assert len(font_zh16.BITMAPS) == 32 * len(font_zh16.CHARS)


def test_panel_decodes_driver_commands_and_snapshots(tmp_path):
    panel = SSD1306()
    for cmd in (0xAE, 0x20, 0x00, 0xAF, 0x21, 0, 127, 0x22, 0, 7):
        assert panel.i2c_write(bytes((0x80, cmd)))
    assert panel.on
    frame = bytearray(1024)
    frame[0] = 0x01  # pixel (0, 0)
    frame[1023] = 0x80  # pixel (127, 63)
    panel.i2c_write(b"\x40" + bytes(frame))
    assert panel.frames == 1
    assert panel.pixel(0, 0) and panel.pixel(127, 63) and not panel.pixel(1, 0)
    png = Path(panel.snapshot(tmp_path / "f.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
