"""tools/journal_decode.py: a journal written by the real firmware (MicroPython, littlefs image)
read back on the host, and hand-made directories with every kind of damage."""

import datetime
import json
import os
import subprocess
import zlib

import pytest
import record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mpy_plugin import micropython_bin, micropython_path
from tools import journal_decode as jd

# Runs under MicroPython: the firmware journal on a file-backed littlefs image.
WRITER = r"""
import sys, vfs, log, ramdisk, record
from journal import Journal
img, n, ack = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log.set_level(log.WARNING, echo=False)
dev = ramdisk.FileBlockDev(img, 4096, 64)
vfs.VfsLfs2.mkfs(dev)
vfs.mount(vfs.VfsLfs2(dev), "/fs")
j = Journal("/fs/journal")
for i in range(1, n + 1):
    j.append({"kind": record.PURCHASE if i % 7 else record.REFUSED, "time": 851990400 + i * 60,
              "amount": 200 + i, "balance_before": 10000, "balance_after": 10000 - 200 - i,
              "card_no": bytes((0x31, 0x00)) + bytes(8), "tac": b"\x01\x02\x03\x04",
              "card_atc": i, "route": 12, "stop": i % 30, "psam_serial": 1000 + i})
if ack:
    j.ack(ack)
j.save_pending(b"in-flight purchase")
j.close()
vfs.umount("/fs")
dev.close()
print("WROTE", j.last_seq, j.acked_seq)
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    img = d / "flash.img"
    script = d / "writer.py"
    script.write_text(WRITER)
    env = dict(os.environ, MICROPYPATH=micropython_path())
    out = subprocess.run(
        [micropython_bin(), str(script), str(img), "150", "70"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "WROTE 150 70" in out.stdout, out.stdout + out.stderr
    return img


def fields(i):
    return {"kind": record.PURCHASE, "time": 800000000 + i, "amount": i, "card_atc": i}


def make_dir(root, n, per_seg=8, start=1):
    root.mkdir(parents=True, exist_ok=True)
    for first in range(start, start + n, per_seg):
        last = min(first + per_seg, start + n)
        data = b"".join(record.encode(fields(s), s) for s in range(first, last))
        (root / ("%08x.seg" % first)).write_bytes(data)
    head = b"JM\x01\x00" + (start - 1).to_bytes(4, "big") + (start + n + 50).to_bytes(4, "big")
    (root / "meta").write_bytes(head + zlib.crc32(head).to_bytes(4, "big"))
    return root


def test_image_written_by_the_firmware_decodes_and_verifies(image, capsys):
    rep = jd.decode_path(image)
    assert rep["problems"] == []
    seqs = [r["seq"] for r in rep["records"]]
    # acknowledged whole segments were reclaimed; everything after the cursor is there
    assert seqs == list(range(65, 151))
    assert (rep["last_seq"], rep["acked_seq"], rep["backlog"]) == (150, 70, 80)
    assert rep["hwm"] > 150
    assert bytes.fromhex(rep["pending"]["data"]) == b"in-flight purchase"
    r = rep["records"][0]
    assert (r["amount"], r["card_atc"], r["balance_after"]) == (265, 65, 10000 - 265)
    assert rep["records"][5]["kind"] == record.REFUSED  # seq 70
    assert rep["segments"][-1]["name"] == "cur/00000081.seg", "the active segment, in cur/"
    assert jd.main([str(image)]) == 0
    out = capsys.readouterr().out
    assert "OK: every record checks out" in out
    # no sale carries a zone (reason 0): local time is the default UTC+8, said on every line
    when = datetime.datetime(2000, 1, 1) + datetime.timedelta(
        seconds=851990400 + 65 * 60 + 8 * 3600
    )
    assert when.strftime("%Y-%m-%d %H:%M:%S") + " UTC+08:00" in out
    assert jd.main([str(image), "--json", "--root", "/journal"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["records"][-1]["seq"] == 150 and data["records"][-1]["tac"] == "01020304"


def test_bad_images_exit_2(tmp_path, image, capsys):
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(4096 * 8))
    assert jd.main([str(junk)]) == 2
    assert "not a readable littlefs image" in capsys.readouterr().err
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"\xff" * 1000)
    assert jd.main([str(odd)]) == 2
    assert jd.main([str(tmp_path / "missing")]) == 2
    assert jd.main([str(image), "--root", "/nowhere"]) == 2


def test_clean_directory(tmp_path, capsys):
    d = make_dir(tmp_path / "journal", 20)
    rep = jd.decode_dir(d)
    assert rep["problems"] == [] and [r["seq"] for r in rep["records"]] == list(range(1, 21))
    assert jd.main([str(d)]) == 0


@pytest.mark.parametrize(
    "damage, expect, kept",
    [
        (
            "flip",
            "00000009.seg: record 2 at byte 128: bad CRC",
            list(range(1, 11)) + list(range(17, 21)),
        ),
        (
            "truncate",
            "00000009.seg: record 3 at byte 192: torn record",
            list(range(1, 12)) + list(range(17, 21)),
        ),
        ("garbage", "00000011.seg: record 4 at byte 256: torn record", list(range(1, 21))),
        ("version", "unknown record version", list(range(1, 9)) + list(range(17, 21))),
        ("wrong_seq", "sequence 3 where 9 expected", list(range(1, 9)) + list(range(17, 21))),
        ("gap", "sequence gap: 9..16 missing", list(range(1, 9)) + list(range(17, 21))),
        ("meta", "meta file unreadable", list(range(1, 21))),
        ("pending", "pending file corrupt", list(range(1, 21))),
        ("unknown", "unknown file notes", list(range(1, 21))),
    ],
)
def test_damage_is_reported_and_good_records_kept(tmp_path, damage, expect, kept, capsys):
    d = make_dir(tmp_path / "journal", 20)
    seg9 = d / "00000009.seg"
    raw = bytearray(seg9.read_bytes())
    if damage == "flip":
        raw[2 * 64 + 30] ^= 0x10
        seg9.write_bytes(raw)
    elif damage == "truncate":
        seg9.write_bytes(raw[: 3 * 64 + 5])
    elif damage == "garbage":
        with open(d / "00000011.seg", "ab") as f:
            f.write(b"\x00garbage")
    elif damage == "version":
        raw[0] = 9
        seg9.write_bytes(raw)
    elif damage == "wrong_seq":
        seg9.write_bytes(record.encode(fields(3), 3) + raw[64:])
    elif damage == "gap":
        seg9.unlink()
    elif damage == "meta":
        (d / "meta").write_bytes(b"JM\x01\x00garbage!")
    elif damage == "pending":
        (d / "pending").write_bytes(b"JP\x01B\x00\x05\x00\x00\x00\x00hello")
    elif damage == "unknown":
        (d / "notes").write_text("x")
    rep = jd.decode_dir(d)
    assert any(expect in p for p in rep["problems"]), rep["problems"]
    assert [r["seq"] for r in rep["records"]] == kept
    assert jd.main([str(d)]) == 1
    assert "PROBLEMS:" in capsys.readouterr().out


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(0, 3 * 512 - 1), st.integers(1, 255)), max_size=6),
    st.integers(0, 3 * 512),
    st.binary(max_size=70),
)
def test_random_damage_never_crashes_nor_invents_records(tmp_path_factory, flips, cut, tail):
    d = make_dir(tmp_path_factory.mktemp("j") / "journal", 24)
    originals = {s: record.encode(fields(s), s) for s in range(1, 25)}
    segs = sorted(d.glob("*.seg"))
    blob = bytearray(b"".join(p.read_bytes() for p in segs))
    for pos, x in flips:
        blob[pos] ^= x
    blob = bytes(blob[:cut]) + tail
    for i, p in enumerate(segs):
        p.write_bytes(blob[i * 512 : (i + 1) * 512] if i < 2 else blob[1024:])
    rep = jd.decode_dir(d)
    for r in rep["records"]:
        assert record.encode(r, r["seq"]) == originals[r["seq"]]
    if rep["records"] and len(rep["records"]) < 24:
        assert rep["problems"]


def test_mark_beside_the_directory_is_read(tmp_path):
    d = make_dir(tmp_path / "journal", 5)
    head = b"JH\x01\x00" + (5000).to_bytes(4, "big")
    (tmp_path / "journal.hwm").write_bytes(head + zlib.crc32(head).to_bytes(4, "big"))
    assert jd.decode_dir(d)["hwm"] == 5000
    (tmp_path / "journal.hwm").write_bytes(b"bad")
    assert "journal.hwm unreadable" in jd.decode_dir(d)["problems"]


def test_not_a_directory():
    with pytest.raises(jd.DecodeError):
        jd.decode_dir("/nonexistent/journal")


def test_active_segment_in_cur_and_duplicates(tmp_path):
    d = make_dir(tmp_path / "journal", 20)
    (d / "cur").mkdir()
    (d / "00000011.seg").rename(d / "cur" / "00000011.seg")
    rep = jd.decode_dir(d)
    assert rep["problems"] == [] and [r["seq"] for r in rep["records"]] == list(range(1, 21))
    (d / "00000011.seg").write_bytes((d / "cur" / "00000011.seg").read_bytes())
    assert any("also in" in p for p in jd.decode_dir(d)["problems"])
    (d / "cur" / "junk").write_text("x")
    assert "unknown file cur/junk" in jd.decode_dir(d)["problems"]


# Runs under MicroPython: the firmware's transaction log on the simulation board's file-backed
# raw flash; ends with an append cut half-way (a torn tail slot).
TXLOG_WRITER = r"""
import sys, log, rawflash, record, txlog
img = sys.argv[1]
log.set_level(log.WARNING, echo=False)
dev = rawflash.FileFlash(img, 8, fresh=True)
lg = txlog.TxLog(dev)
card = bytes((0x31, 0x00)) + bytes(8)
for i in range(1, 151):
    kind = record.DEBIT_INTENT if i % 2 else record.PURCHASE
    lg.append({"kind": kind, "time": 851990400 + (i + 1) // 2 * 60, "amount": 200, "card_no": card,
               "card_atc": (i + 1) // 2, "route": 12})
    while lg.maintain():
        pass
    if i in (20, 140):
        lg.note_param_floor(1, i // 10)  # the parameter floor: a note, then carried by headers
lg.append({"kind": record.DEBIT_INTENT, "card_no": card, "card_atc": 999, "amount": 5})
lg.ack(100)
dev.arm(0, "bits", 5)
try:
    lg.append({"kind": record.BOOT})
except rawflash.PowerCut:
    pass
dev.close()
print("WROTE", lg.last_seq, lg.acked_seq)
"""


@pytest.fixture(scope="module")
def txlog_image(tmp_path_factory):
    d = tmp_path_factory.mktemp("txl")
    img = d / "validator.img.txlog"
    script = d / "writer.py"
    script.write_text(TXLOG_WRITER)
    env = dict(os.environ, MICROPYPATH=micropython_path())
    out = subprocess.run(
        [micropython_bin(), str(script), str(img)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "WROTE 151 100" in out.stdout, out.stdout + out.stderr
    return img


def test_txlog_image_written_by_the_firmware_decodes(txlog_image, capsys):
    rep = jd.decode_path(txlog_image)
    assert rep["format"] == "txlog"
    assert rep["problems"] == []
    assert [r["seq"] for r in rep["records"]] == list(range(1, 152))
    assert (rep["last_seq"], rep["acked_seq"], rep["backlog"]) == (151, 100, 51)
    assert rep["open_intents"] == [151], "every other intent was closed by its purchase"
    # each purchase is stored as a delta over its intent (docs/journal.md), read back whole
    sale = rep["records"][1]
    assert (sale["kind"], sale["amount"], sale["card_atc"], sale["time"]) == (1, 200, 1, 851990460)
    blob = txlog_image.read_bytes()
    assert blob[2 * 64] == 0xA6 and blob[2 * 64 + 22 : 3 * 64] == b"\xff" * 42
    assert len(rep["segments"]) == 3
    assert rep["param_floor"] == {"version": 14, "key": 1}, "floor notes are not records"
    assert any("1 torn" in n for n in rep["notes"]), rep["notes"]
    assert jd.main([str(txlog_image)]) == 0
    out = capsys.readouterr().out
    assert "transaction log: last seq 151, acknowledged 100" in out
    assert "parameter floor 14 (key 1)" in out
    assert "OK: every record checks out" in out
    assert jd.main([str(txlog_image), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["records"][0]["kind_name"] == "debit_intent"


def test_txlog_damage_is_reported(tmp_path, txlog_image, capsys):
    blob = bytearray(txlog_image.read_bytes())
    blob[5 * 64 + 30] ^= 0x01  # rot in record 5 (sector 0, slot 5)
    bad = tmp_path / "bad.txlog"
    bad.write_bytes(bytes(blob))
    rep = jd.decode_path(bad)
    assert any("slot 5: unreadable" in p for p in rep["problems"])
    assert jd.main([str(bad)]) == 1
    capsys.readouterr()
    blank = tmp_path / "blank.txlog"
    blank.write_bytes(b"\xff" * 4096 * 4)
    rep = jd.decode_path(blank, txlog=True)
    assert (rep["last_seq"], rep["records"], rep["problems"]) == (0, [], [])
    assert jd.main([str(tmp_path / "odd"), "--txlog"]) == 2


BEIJING = 160  # record.tz_code(8 * 3600): the reason byte of a sale made at UTC+8
CARD = bytes.fromhex("03104991585000011383")  # leading zero: a spreadsheet would drop it


def mixed_dir(root):
    """A journal of every kind an operator meets: a 06:20 Beijing sale (22:20 UTC the day
    before), a refusal, a void, a parameter activation, a clock change and a boot."""
    t = 851990400 - 8 * 3600 + 6 * 3600 + 20 * 60  # 2026-12-31 06:20 at UTC+8
    sale = {
        "card_no": CARD,
        "route": 12,
        "stop": 7,
        "time": t,
        "psam_tid": bytes.fromhex("112233445566"),
    }
    recs = [
        {"kind": record.BOOT, "time": t - 600, "reason": 1, "balance_before": 0x04, "amount": 1},
        {
            "kind": record.DEBIT_INTENT,
            "amount": 200,
            "balance_before": 4800,
            "balance_after": 4600,
            "reason": BEIJING,
            "card_atc": 9,
            "psam_serial": 77,
            **sale,
        },
        {
            "kind": record.PURCHASE,
            "amount": 200,
            "balance_before": 4800,
            "balance_after": 4600,
            "reason": BEIJING,
            "card_atc": 9,
            "psam_serial": 77,
            "tac": b"\xaa\xbb\xcc\xdd",
            **sale,
        },
        {"kind": record.REFUSED, "reason": record.REASON_NOT_WHITELISTED, **sale},
        {
            "kind": record.DEBIT_VOID,
            "reason": 2,
            "amount": 200,
            "balance_before": 150,
            "balance_after": 0,
            "card_atc": 10,
            **sale,
        },
        {"kind": record.PARAM_ACTIVATION, "time": t + 60, "psam_serial": 7, "balance_after": 3},
        {"kind": record.CLOCK_CHANGE, "time": t + 120, "psam_serial": t + 100, "reason": 4},
    ]
    root.mkdir(parents=True)
    (root / "00000001.seg").write_bytes(
        b"".join(record.encode(r, i + 1) for i, r in enumerate(recs))
    )
    return root


def test_table_is_in_local_time_yuan_and_words(tmp_path, capsys):
    d = mixed_dir(tmp_path / "journal")
    assert jd.main([str(d)]) == 0
    out = capsys.readouterr().out
    lines = {int(x.split()[0]): x for x in out.splitlines() if x[:1].isdigit()}
    assert "2026-12-31 06:20:00 UTC+08:00" in lines[3], "the Beijing morning is on its own day"
    assert "0310 4991 5850 0001 1383" in lines[3] and "2.00" in lines[3] and "46.00" in lines[3]
    assert "issuer not on the whitelist" in lines[4]
    assert "card refused DEBIT: balance (9401)" in lines[5]
    assert "parameter version 7, blacklist version 3" in lines[6]
    assert "46.00" not in lines[6] and " 3 " not in lines[6].split("parameter")[0]
    assert "network" in lines[7] and "2026-12-31 06:21:40 UTC+08:00" in lines[7]
    assert "reset: power-on; failed: modem; 1 unconfirmed debits" in lines[1]
    assert "OK: every record checks out (7 records)" in out
    assert jd.main([str(d), "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert "非互通卡" in out and "本地时间" in out and "全部记录校验通过" in out


def test_csv_is_spreadsheet_ready(tmp_path, capsys):
    import csv

    d = mixed_dir(tmp_path / "journal")
    dest = tmp_path / "j.csv"
    assert jd.main([str(d), "--csv", "--out", str(dest)]) == 0
    assert "7 records written" in capsys.readouterr().err
    raw = dest.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "a BOM, so Excel reads the file as UTF-8"
    rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    assert len(rows) == 7 and [r["seq"] for r in rows] == [str(i) for i in range(1, 8)]
    sale = rows[2]
    assert sale["kind"] == "purchase" and sale["card number"] == "0310 4991 5850 0001 1383"
    assert (sale["local time"], sale["zone"], sale["UTC time"]) == (
        "2026-12-31 06:20:00",
        "UTC+08:00",
        "2026-12-30T22:20:00Z",
    )
    assert (sale["amount (yuan)"], sale["balance after (yuan)"], sale["route"], sale["stop"]) == (
        "2.00",
        "46.00",
        "12",
        "7",
    )
    assert sale["TAC"] == "aabbccdd" and sale["PSAM serial (TSN)"] == "77"
    assert rows[3]["reason"] == "issuer not on the whitelist" and rows[3]["amount (yuan)"] == ""
    act = rows[5]
    assert (act["parameter version"], act["blacklist version"]) == ("7", "3")
    assert act["balance after (yuan)"] == "" and act["PSAM serial (TSN)"] == ""
    # Other zone asked for records without one; the sale keeps its own
    assert jd.main([str(d), "--csv", "--tz=-05:00"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert rows[0]["zone"] == "UTC-05:00" and rows[2]["zone"] == "UTC+08:00"
    assert jd.main([str(d), "--csv", "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("设备") is False and "卡号" in out.splitlines()[0] and "消费" in out


def test_bad_requests_are_refused_and_destroy_nothing(tmp_path, capsys):
    d = mixed_dir(tmp_path / "journal")
    dest = tmp_path / "j.csv"
    dest.write_text("yesterday's work")
    assert jd.main([str(d), "--csv", "--out", str(dest)]) == 2
    assert "exists; not overwritten" in capsys.readouterr().err
    assert dest.read_text() == "yesterday's work"
    with pytest.raises(SystemExit) as e:
        jd.main([str(d), "--tz", "Beijing"])
    assert e.value.code == 2 and "want an offset such as +08:00" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        jd.main([str(d), "--out", str(tmp_path / "x.csv")])
    assert "--out goes with --csv" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert jd.main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert "holds no journal" in err and "OK" not in err


def test_json_carries_local_time_and_reason(tmp_path, capsys):
    d = mixed_dir(tmp_path / "journal")
    assert jd.main([str(d), "--json"]) == 0
    recs = json.loads(capsys.readouterr().out)["records"]
    assert recs[2]["time_local"] == "2026-12-31 06:20:00" and recs[2]["zone"] == "UTC+08:00"
    assert recs[3]["reason_text"] == "issuer not on the whitelist"
