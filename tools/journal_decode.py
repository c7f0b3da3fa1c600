"""Print and verify a validator's transaction journal (docs/journal.md, docs/record-format.md).

Input is one of:
- an image of the raw "txlog" partition (`esptool read_flash <offset> <size> txlog.img`, or the
  simulation board's <flash image>.txlog file): the transaction log of firmware/txlog.py, read
  here directly (sector headers, carried intents, records, ack notes); recognised by its sector
  headers, or forced with --txlog;
- the old littlefs journal: its directory pulled off a board (`mpremote cp -r :/journal .`) or a
  raw littlefs image of the board's file system (`esptool read_flash` of the vfs partition). An
  image is read by the MicroPython unix port (its vfs.VfsLfs2 is the board's littlefs), which
  copies the files out for this program; no littlefs package is needed on the host.

    python -m tools.journal_decode txlog.img             # the transaction log
    python -m tools.journal_decode journal/              # the old journal, table
    python -m tools.journal_decode flash.img --json      # JSON, image in 4 KB blocks
    python -m tools.journal_decode flash.img --root /journal --block-size 4096
    python -m tools.journal_decode txlog.img --csv --out journal.csv   # for a spreadsheet
    python -m tools.journal_decode txlog.img --lang zh --tz +08:00     # 中文, local time

Times are shown in local time with their zone: a sale in the zone the validator recorded in it,
every other record in --tz (default: the zone of the newest sale, else UTC+8); the CSV has UTC
as well. Amounts are in yuan; the CSV's columns are described in docs/operators.md.

Exit status: 0 when everything checks out, 1 when problems were found (listed), 2 when the input
cannot be read at all.
"""

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import bootmode  # noqa: E402
import record  # noqa: E402
import timeutil  # noqa: E402

from tools import record_sheet as sheet  # noqa: E402
from tools import versions  # noqa: E402

SEG_RE = re.compile(r"^([0-9a-f]{8})\.seg$")
META_MAGIC = b"JM\x01\x00"
MARK_MAGIC = b"JH\x01\x00"
PEND_MAGIC = b"JP\x01"
BYTE_FIELDS = ("psam_tid", "card_no", "issuer", "tac")


class DecodeError(Exception):
    """The input cannot be read at all (not a directory of segments, not a littlefs image)."""


def _crc_ok(blob, n):
    return len(blob) == n + 4 and struct.unpack(">I", blob[n:])[0] == zlib.crc32(blob[:n])


def read_meta(path):
    """(acked_seq, high-water mark) from a `meta` file, or None (with a problem) when bad."""
    blob = path.read_bytes()
    if len(blob) == 16 and blob[:4] == META_MAGIC and _crc_ok(blob, 12):
        acked, hwm = struct.unpack(">II", blob[4:12])
        return {"acked_seq": acked, "hwm": hwm}
    return None


def read_mark(path):
    blob = path.read_bytes()
    if len(blob) == 12 and blob[:4] == MARK_MAGIC and _crc_ok(blob, 8):
        return struct.unpack(">I", blob[4:8])[0]
    return None


def read_pending(path):
    blob = path.read_bytes()
    if len(blob) >= 10 and blob[:3] == PEND_MAGIC:
        n = struct.unpack(">H", blob[4:6])[0]
        crc = struct.unpack(">I", blob[6:10])[0]
        if len(blob) == 10 + n and crc == zlib.crc32(blob[10:], zlib.crc32(blob[:6])):
            kind = {0x42: "bytes", 0x4A: "json"}.get(blob[3], "kind%d" % blob[3])
            return {"kind": kind, "size": n, "data": blob[10:].hex()}
    return None


def record_view(d):
    """A decoded record as JSON-friendly values (bytes in hex, time also as ISO UTC)."""
    out = dict(d)
    for k in BYTE_FIELDS:
        out[k] = d[k].hex()
    out["kind_name"] = record.kind_name(d["kind"])
    if d["kind"] == record.BOOT:
        out.update(bootmode.boot_info(d))  # reset cause, parts that failed to start
    y, mo, da, h, mi, s = timeutil.from_seconds(d["time"])[:6]
    out["time_utc"] = "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, mo, da, h, mi, s)
    return out


def decode_dir(path):
    """Read a journal directory: every record, checked like the firmware checks them.

    Returns a dict: records (list of dicts, oldest first), segments, meta, pending, problems
    (list of strings). Never raises on bad content; DecodeError when `path` is no directory."""
    path = Path(path)
    if not path.is_dir():
        raise DecodeError("%s is not a directory" % path)
    problems = []
    segments = []
    records = []
    # The segment being appended to lives in cur/, the others beside it.
    where = {}
    for d, prefix in ((path, ""), (path / "cur", "cur/")):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            m = SEG_RE.match(p.name)
            if m:
                first = int(m.group(1), 16)
                if first in where:
                    problems.append("%s also in %s" % (prefix + p.name, where[first].parent))
                else:
                    where[first] = p
            elif not (prefix == "" and p.name in ("meta", "pending", "cur")) and not (
                p.name.endswith(".tmp")
            ):
                problems.append("unknown file %s" % (prefix + p.name))
    if not where and not (path / "meta").exists() and not (path / "pending").exists():
        raise DecodeError(
            "%s holds no journal (no segment files, no meta file): is it the right folder?" % path
        )
    firsts = sorted(where)
    expect = None
    for first in firsts:
        name = "%08x.seg" % first
        blob = where[first].read_bytes()
        if where[first].parent.name == "cur" and where[first].parent != path:
            name = "cur/" + name
        good = 0
        why = None
        for off in range(0, len(blob), record.SIZE):
            chunk = blob[off : off + record.SIZE]
            if len(chunk) != record.SIZE:
                why = "torn record of %d bytes" % len(chunk)
                break
            try:
                d = record.decode(chunk)
            except record.RecordError as e:
                why = str(e)
                break
            if d["seq"] != first + good:
                why = "sequence %d where %d expected" % (d["seq"], first + good)
                break
            d["segment"] = name
            records.append(d)
            good += 1
        if why:
            problems.append("%s: record %d at byte %d: %s" % (name, good, good * 64, why))
        if expect is not None and first > expect:
            problems.append("sequence gap: %d..%d missing before %s" % (expect, first - 1, name))
        elif expect is not None and first < expect:
            problems.append("%s overlaps earlier records" % name)
        expect = first + good
        segments.append({"name": name, "first_seq": first, "records": good, "bytes": len(blob)})
    meta = None
    if (path / "meta").exists():
        meta = read_meta(path / "meta")
        if meta is None:
            problems.append("meta file unreadable")
    mark = None
    mark_path = path.parent / (path.name + ".hwm")
    if mark_path.exists():
        mark = read_mark(mark_path)
        if mark is None:
            problems.append("%s unreadable" % mark_path.name)
    pending = None
    if (path / "pending").exists():
        pending = read_pending(path / "pending")
        if pending is None:
            problems.append("pending file corrupt")
    last = records[-1]["seq"] if records else None
    hwm = max([v for v in ((meta or {}).get("hwm"), mark) if v is not None], default=None)
    if last is not None and hwm is not None and last >= hwm:
        problems.append("last seq %d at or above the high-water mark %d" % (last, hwm))
    acked = (meta or {}).get("acked_seq")
    return {
        "source": str(path),
        "segments": segments,
        "records": records,
        "meta": meta,
        "hwm": hwm,
        "pending": pending,
        "last_seq": last,
        "acked_seq": acked,
        "backlog": sum(1 for r in records if acked is None or r["seq"] > acked),
        "problems": problems,
    }


# ---- the transaction log on raw flash (firmware/txlog.py, docs/journal.md) ---------------------
TXL_MAGIC = b"TXL\x01"
TXL_NOTE = 0xA5
TXL_DELTA = 0xA6  # an outcome written as a delta over its intent (docs/journal.md)
SLOT = 64


def _rebuild(delta, slots, j):
    """The full record of the outcome delta in slot j, from the intent it names (an earlier slot
    of the same sector), or None."""
    ref = struct.unpack(">I", delta[10:14])[0]
    for k in range(j - 1, 0, -1):
        b = slots[k]
        if _slot_kind(b) != "record" or struct.unpack(">I", b[6:10])[0] != ref:
            continue
        if b[1] != record.DEBIT_INTENT:
            continue
        out = bytearray(b)
        out[1], out[2], out[59] = delta[1], delta[2], delta[3]
        out[6:10] = delta[6:10]
        out[49:53] = delta[14:18]
        out[60:64] = struct.pack(">I", zlib.crc32(bytes(out[:60])))
        return bytes(out)
    return None


def _slot_kind(b):
    if b == b"\xff" * SLOT:
        return "erased"
    if b == bytes(SLOT):
        return "sealed"
    if b[0] == TXL_NOTE and b[1] == 1 and _crc_ok(b[:10], 6):
        return "ack"
    if b[0] == TXL_NOTE and b[1] == 2 and _crc_ok(b[:14], 10):
        return "floor"  # the parameter version floor (docs/journal.md), not a record
    if b[0] == TXL_DELTA and _crc_ok(b[:22], 18):
        return "delta"
    try:
        record.decode(b)
        return "record"
    except record.RecordError:
        return "garbage"


def is_txlog_image(blob, block_size=4096):
    if not blob or len(blob) % block_size:
        return False
    return any(
        blob[o : o + 4] == TXL_MAGIC and _crc_ok(blob[o : o + 24], 20)
        for o in range(0, len(blob), block_size)
    )


def _txl_sectors(blob, block_size):
    live = []
    dirty = 0
    for i in range(len(blob) // block_size):
        h = blob[i * block_size : i * block_size + SLOT]
        if h == b"\xff" * SLOT:
            continue
        if h[:4] == TXL_MAGIC and _crc_ok(h[:24], 20):
            epoch, first, acked = struct.unpack(">III", h[4:16])
            sec = {"sector": i, "epoch": epoch, "first_seq": first, "acked": acked}
            sec["carries"] = h[16]
            if _crc_ok(h[24:36], 8):  # the parameter floor after the header (absent before it)
                sec["param_floor"] = struct.unpack(">II", h[24:32])
            live.append(sec)
        else:
            dirty += 1
    live.sort(key=lambda x: x["epoch"])
    return live, dirty


def decode_txlog(blob, source="", block_size=4096):
    """Read a txlog partition image as the firmware does, but every sector (not only the newest):
    records oldest first, the open intents, the cursor, and problems. Never raises on content."""
    problems = []
    notes = []
    live, dirty = _txl_sectors(blob, block_size)
    for a, b in zip(live, live[1:]):
        if b["first_seq"] < a["first_seq"] or b["epoch"] == a["epoch"]:
            problems.append("sector %d: header out of order" % b["sector"])
    records = []
    acked = max([x["acked"] for x in live], default=0)
    if live and live[0]["first_seq"] - 1 > acked:
        acked = live[0]["first_seq"] - 1  # erased sectors were acknowledged
    opened = []
    last = 0
    for k, sec in enumerate(live):
        base = sec["sector"] * block_size
        slots = [blob[base + j * SLOT : base + (j + 1) * SLOT] for j in range(block_size // SLOT)]
        if k == 0:  # intents opened before the oldest sector left
            for j in range(1, 1 + sec["carries"]):
                try:
                    opened.append(record.decode(slots[j]))
                except record.RecordError:
                    problems.append("sector %d: carried intent %d unreadable" % (sec["sector"], j))
        kinds = [_slot_kind(b) for b in slots]
        tail = max([j for j in range(len(slots)) if kinds[j] in ("record", "delta")], default=0)
        sealed = torn = count = 0
        for j in range(1 + sec["carries"], len(slots)):
            kind = kinds[j]
            if kind == "delta":
                full = _rebuild(slots[j], slots, j)
                if full is None:
                    problems.append(
                        "sector %d slot %d: outcome without its intent" % (sec["sector"], j)
                    )
                    continue
                slots[j] = full
                kind = "record"
            if kind == "record":
                d = record.decode(slots[j])
                if d["seq"] <= last or d["seq"] < sec["first_seq"]:
                    problems.append(
                        "sector %d slot %d: record %d out of order" % (sec["sector"], j, d["seq"])
                    )
                    continue
                d["segment"] = "sector %d" % sec["sector"]
                records.append(d)
                count += 1
                last = d["seq"]
                if d["kind"] == record.DEBIT_INTENT:
                    opened.append(d)
                elif d["kind"] in record.OUTCOME_KINDS:
                    opened = [
                        o
                        for o in opened
                        if not (o["card_no"] == d["card_no"] and o["card_atc"] == d["card_atc"])
                    ]
            elif kind == "ack":
                acked = max(acked, struct.unpack(">I", slots[j][2:6])[0])
            elif kind == "floor":
                v, key = struct.unpack(">II", slots[j][2:10])
                pv, pk = sec.get("param_floor", (0, 0))
                sec["param_floor"] = (max(v, pv), max(key, pk))
            elif kind == "sealed":
                sealed += 1
            elif kind == "garbage":
                if k == len(live) - 1 and j > tail:
                    torn += 1  # a cut append: sealed, its number issued again, at the next boot
                else:
                    problems.append("sector %d slot %d: unreadable" % (sec["sector"], j))
        if sealed or torn:
            notes.append("sector %d: %d sealed, %d torn slots" % (sec["sector"], sealed, torn))
        sec["records"] = count
        sec["name"] = "sector %d" % sec["sector"]
    if live:
        last = max(last, live[-1]["first_seq"] - 1)
    acked = min(acked, last)
    prev = None
    for r in records:
        if r["seq"] > acked and prev is not None and prev >= acked and r["seq"] != prev + 1:
            problems.append("sequence gap: %d..%d missing" % (prev + 1, r["seq"] - 1))
        prev = r["seq"]
    if dirty:
        notes.append("%d sectors without a valid header (erased before reuse)" % dirty)
    return {
        "format": "txlog",
        "source": str(source),
        "segments": live,
        "records": records,
        "meta": None,
        "hwm": None,
        "pending": None,
        "open_intents": [d["seq"] for d in opened],
        "last_seq": last,
        "acked_seq": acked,
        "backlog": sum(1 for r in records if r["seq"] > acked),
        "notes": notes,
        "problems": problems,
        # the parameter version floor the log keeps (docs/parameters.md "Rollback")
        "param_floor": {
            "version": max([x.get("param_floor", (0, 0))[0] for x in live], default=0),
            "key": max([x.get("param_floor", (0, 0))[1] for x in live], default=0),
        },
    }


# The MicroPython side of reading an image: mount it read-only, copy every file out.
_MPY_EXTRACT = r"""
import sys, os, vfs
img, bs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Dev:
    def __init__(s, path):
        s.f = open(path, "rb")
        s.f.seek(0, 2)
        s.n = s.f.tell() // bs
    def readblocks(s, b, buf, off=0):
        s.f.seek(b * bs + off)
        s.f.readinto(buf)
    def writeblocks(s, b, buf, off=None):
        raise OSError(30)
    def ioctl(s, op, arg):
        return s.n if op == 4 else bs if op == 5 else 0
try:
    vfs.mount(vfs.VfsLfs2(Dev(img), mtime=False), "/img", readonly=True)
except OSError as e:
    print("MOUNT-FAILED", e)
    sys.exit(3)
def copy(src, dst):
    for name, typ, *_ in os.ilistdir(src):
        s, d = src + "/" + name, dst + "/" + name
        if typ == 0x4000:
            os.mkdir(d)
            copy(s, d)
        else:
            with open(s, "rb") as a, open(d, "wb") as b:
                while True:
                    chunk = a.read(4096)
                    if not chunk:
                        break
                    b.write(chunk)
copy("/img", out)
print("OK")
"""


def micropython_bin():
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if found:
        return found
    raise DecodeError("no micropython binary (needed to read a littlefs image)")


def extract_image(image, block_size, out_dir, mpy=None):
    """Copy the files of a littlefs image into out_dir using the MicroPython unix port."""
    size = os.path.getsize(image)
    if size == 0 or size % block_size:
        raise DecodeError(
            "%s: %d bytes is not a whole number of %d-byte blocks" % (image, size, block_size)
        )
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(_MPY_EXTRACT)
        script = f.name
    try:
        proc = subprocess.run(
            [mpy or micropython_bin(), script, str(image), str(block_size), str(out_dir)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.unlink(script)
    if proc.returncode != 0 or "OK" not in proc.stdout:
        detail = (proc.stdout + proc.stderr).strip().splitlines()
        raise DecodeError("%s is not a readable littlefs image (%s)" % (image, detail[-1:] or "?"))


def find_journal(tree, root=None):
    """The journal directory inside an extracted tree: `root` if given, else the one with
    segment files (or a meta file) nearest the top."""
    tree = Path(tree)
    if root:
        p = tree / root.strip("/")
        if not p.is_dir():
            raise DecodeError("no directory %s in the image" % root)
        return p
    candidates = []
    for dirpath, _dirs, files in os.walk(tree):
        if any(SEG_RE.match(f) for f in files) or "meta" in files:
            candidates.append(Path(dirpath))
    if not candidates:
        raise DecodeError("no journal directory in the image (try --root)")
    return min(candidates, key=lambda p: len(p.parts))


def decode_path(path, root=None, block_size=4096, mpy=None, txlog=False):
    path = Path(path)
    if path.is_dir():
        return decode_dir(path)
    if not path.exists():
        raise DecodeError("%s does not exist" % path)
    if txlog or root is None:
        blob = path.read_bytes()
        if txlog or is_txlog_image(blob, block_size):
            if len(blob) % block_size:
                raise DecodeError("%s: %d bytes, not whole sectors" % (path, len(blob)))
            return decode_txlog(blob, path, block_size)
    with tempfile.TemporaryDirectory() as tmp:
        extract_image(path, block_size, tmp, mpy)
        report = decode_dir(find_journal(tmp, root))
        report["source"] = "%s:%s" % (path, report["source"][len(tmp) :] or "/")
        return report


# (record_sheet column, width) of the table; --csv has every column
TABLE = (
    ("seq", 7),
    ("local_time", 19),
    ("zone", 9),
    ("kind", 20),
    ("card_no", 24),
    ("amount_yuan", 8),
    ("balance_after_yuan", 9),
    ("route", 5),
    ("stop", 5),
)
TABLE_HEAD = {
    "en": (
        "seq",
        "local time",
        "zone",
        "kind",
        "card number",
        "yuan",
        "balance",
        "route",
        "stop",
        "reason / details",
    ),
    "zh": (
        "流水号",
        "本地时间",
        "时区",
        "类型",
        "卡号",
        "金额(元)",
        "余额(元)",
        "线路",
        "站点",
        "原因/说明",
    ),
}
WORDS = {
    "en": {
        "ok": "OK: every record checks out (%d records)",
        "empty": "OK: the journal is empty (no records)",
        "problems": "PROBLEMS:",
        "params": "parameter version %s, blacklist version %s",
        "clock": "time before / proposed: %s",
    },
    "zh": {
        "ok": "正常: 全部记录校验通过 (%d条)",
        "empty": "正常: 日志为空 (无记录)",
        "problems": "问题:",
        "params": "参数版本 %s, 黑名单版本 %s",
        "clock": "调整前/建议时间: %s",
    },
}


def _pad(text, width):
    """ljust by display width: a CJK character takes two columns."""
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    return text + " " * max(0, width - len(text) - wide)


def report_tz(report, tz=None):
    return tz if tz is not None else sheet.guess_tz(report["records"])


def sheet_rows(report, tz=None, lang="en"):
    tz = report_tz(report, tz)
    return [sheet.row(d, tz, lang) for d in report["records"]]


def format_table(report, tz=None, lang="en"):
    w = WORDS[lang]
    lines = ["journal %s" % report["source"]]
    if report.get("format") == "txlog":
        lines.append(
            "transaction log: last seq %s, acknowledged %s, backlog %d, %d sectors in use, "
            "open intents %r"
            % (
                report["last_seq"],
                report["acked_seq"],
                report["backlog"],
                len(report["segments"]),
                report["open_intents"],
            )
        )
        pf = report.get("param_floor") or {}
        if pf.get("version"):
            lines.append("parameter floor %d (key %d)" % (pf["version"], pf["key"]))
        lines.extend("note: " + n for n in report["notes"])
    else:
        lines.append(
            "last seq %s, acknowledged %s, backlog %d, high-water mark %s, %d segments, "
            "pending %s"
            % (
                report["last_seq"],
                report["acked_seq"],
                report["backlog"],
                report["hwm"],
                len(report["segments"]),
                "none" if report["pending"] is None else "%d bytes" % report["pending"]["size"],
            )
        )
    head = TABLE_HEAD[lang]
    lines.append(" ".join(_pad(h, wd) for h, (_k, wd) in zip(head, TABLE)) + " " + head[-1])
    for row in sheet_rows(report, tz, lang):
        details = [row["reason"], row["flags"]]
        if row["param_version"]:
            details.append(w["params"] % (row["param_version"], row["blacklist_version"]))
        if row["clock_other"]:
            details.append(w["clock"] % row["clock_other"])
        line = " ".join(_pad(row[k], wd) for k, wd in TABLE)
        lines.append((line + " " + "; ".join(x for x in details if x)).rstrip())
    if report["problems"]:
        lines.append(w["problems"])
        lines.extend("  " + p for p in report["problems"])
    elif report["records"]:
        lines.append(w["ok"] % len(report["records"]))
    else:
        lines.append(w["empty"])
    return "\n".join(lines)


def write_csv(report, out, tz=None, lang="en"):
    """Every record as one CSV row (record_sheet.COLUMNS but the back office's own)."""
    import csv

    keys = [
        c[0]
        for c in sheet.COLUMNS
        if c[0] not in ("device", "received", "tac_status", "exceptions")
    ]
    w = csv.writer(out)
    w.writerow(sheet.header(lang, keys))
    for row in sheet_rows(report, tz, lang):
        w.writerow([row[k] for k in keys])
    return len(report["records"])


def to_json(report, tz=None):
    out = dict(report)
    tz = report_tz(report, tz)
    out["records"] = []
    for d in report["records"]:
        v = record_view(d)
        row = sheet.row(d, tz)
        v.update(time_local=row["local_time"], zone=row["zone"], reason_text=row["reason"])
        out["records"].append(v)
    return json.dumps(out, indent=1)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.journal_decode",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("path", help="txlog partition image, journal directory or littlefs image")
    ap.add_argument("--txlog", action="store_true", help="read the image as a txlog partition")
    fmt = ap.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON instead of a table")
    fmt.add_argument("--csv", action="store_true", help="CSV for a spreadsheet, one row a record")
    ap.add_argument(
        "--out", help="write the CSV to this file (UTF-8 with BOM, opens in Excel); must not exist"
    )
    ap.add_argument(
        "--tz",
        help="UTC offset for records that carry none, e.g. +08:00 or --tz=-05:00 "
        "(default: the newest sale's, else +08:00)",
    )
    ap.add_argument("--lang", choices=("en", "zh"), default="en", help="words: en or zh (中文)")
    ap.add_argument("--root", help="journal directory inside an image (default: found)")
    ap.add_argument("--block-size", type=int, default=4096, help="image block size (4096)")
    ap.add_argument("--micropython", help="MicroPython unix binary for images")
    versions.add_flag(ap)  # the version set (tools/versions.py)
    args = ap.parse_args(argv)
    tz = None
    if args.tz is not None:
        try:
            tz = sheet.parse_tz(args.tz)
        except ValueError as e:
            ap.error(str(e))
    if args.out and not args.csv:
        ap.error("--out goes with --csv")
    if args.out and os.path.exists(args.out):
        print("journal_decode: %s exists; not overwritten" % args.out, file=sys.stderr)
        return 2
    try:
        report = decode_path(args.path, args.root, args.block_size, args.micropython, args.txlog)
    except (DecodeError, OSError, subprocess.SubprocessError) as e:
        print("journal_decode: %s" % e, file=sys.stderr)
        return 2
    if args.csv:
        if args.out:
            try:
                with open(args.out, "x", newline="", encoding="utf-8-sig") as f:
                    n = write_csv(report, f, tz, args.lang)
            except OSError as e:
                print("journal_decode: %s" % e, file=sys.stderr)
                return 2
            print("%d records written to %s" % (n, args.out), file=sys.stderr)
        else:
            write_csv(report, sys.stdout, tz, args.lang)
        if report["problems"]:
            print("PROBLEMS:\n  " + "\n  ".join(report["problems"]), file=sys.stderr)
    else:
        print(to_json(report, tz) if args.json else format_table(report, tz, args.lang))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
