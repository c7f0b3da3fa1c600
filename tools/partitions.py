"""Read and check an ESP-IDF partition table (the CSV that a MicroPython board definition names
with CONFIG_PARTITION_TABLE_CUSTOM_FILENAME), without ESP-IDF.

    python -m tools.partitions boards/partitions-16MiB-validator.csv --flash 16M

prints the table with offsets, ends and sizes and exits non-zero with the reason if it would not
flash. The rules are ESP-IDF's partition table format as its documentation describes it
(api-guides/partition-tables): `Name, Type, SubType, Offset, Size, Flags`; `#` comments; numbers
in decimal or hex with an optional K/M suffix; an empty offset follows the previous partition,
aligned; the table itself sits at 0x8000 and takes one 4 KiB sector; app partitions start on a
64 KiB boundary, data partitions on a 4 KiB one; names fit the 16-byte field of the binary
table. ESP-IDF's own gen_esp32part.py is not published on PyPI, hence this small reader.
"""

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

TABLE_OFFSET = 0x8000  # CONFIG_PARTITION_TABLE_OFFSET default
TABLE_SIZE = 0x1000
APP_ALIGN = 0x10000
DATA_ALIGN = 0x1000
NAME_MAX = 16  # bytes in the binary entry, NUL-padded
MAX_ENTRIES = 95  # 0xC00 bytes of 32-byte entries, one kept for the MD5 entry

TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {
    0x00: {"factory": 0x00, "test": 0x20, **{"ota_%d" % i: 0x10 + i for i in range(16)}},
    0x01: {
        "ota": 0x00,
        "phy": 0x01,
        "nvs": 0x02,
        "coredump": 0x03,
        "nvs_keys": 0x04,
        "efuse": 0x05,
        "undefined": 0x06,
        "esphttpd": 0x80,
        "fat": 0x81,
        "spiffs": 0x82,
        "littlefs": 0x83,
    },
}
FLAGS = ("encrypted", "readonly")


class TableError(ValueError):
    """The table would not build or flash; the message says which line and why."""


@dataclass(frozen=True)
class Partition:
    name: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: tuple
    line: int

    @property
    def end(self):
        return self.offset + self.size

    @property
    def is_app(self):
        return self.type == TYPES["app"]


def parse_int(text, names=None):
    text = text.strip()
    if names and text in names:
        return names[text]
    m = re.fullmatch(r"(0[xX][0-9a-fA-F]+|\d+)\s*([kKmM]?)", text)
    if not m:
        raise ValueError("not a number or known name: %r" % text)
    value = int(m.group(1), 0)
    return value * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def flash_size(text):
    """'4M', '16MB', '0x400000' -> bytes."""
    return parse_int(text.upper().removesuffix("B"))


def parse(text, table_offset=TABLE_OFFSET):
    """The partitions of a CSV table, in file order, offsets filled in. Raises TableError."""
    parts = []
    next_free = table_offset + TABLE_SIZE
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in (line + ",,,,,").split(",")][:6]
        name, ptype, subtype, offset, size, flags = fields
        try:
            if not name:
                raise ValueError("empty name")
            if len(name.encode()) > NAME_MAX:
                raise ValueError("name %r longer than %d bytes" % (name, NAME_MAX))
            if not ptype:
                raise ValueError("empty type")
            t = parse_int(ptype, TYPES)
            if not 0 <= t <= 0xFE:
                raise ValueError("type %#x out of range" % t)
            if not subtype:
                if t == TYPES["app"]:
                    raise ValueError("an app partition needs a subtype")
                st = SUBTYPES[1]["undefined"]
            else:
                st = parse_int(subtype, SUBTYPES.get(t, {}))
            if not 0 <= st <= 0xFE:
                raise ValueError("subtype %#x out of range" % st)
            if not size:
                raise ValueError("empty size")
            sz = parse_int(size)
            if sz <= 0:
                raise ValueError("size must be positive")
            align = APP_ALIGN if t == TYPES["app"] else DATA_ALIGN
            if offset:
                off = parse_int(offset)
            else:
                off = -(-next_free // align) * align
            fl = tuple(f for f in flags.split(":") if f)
            for f in fl:
                if f not in FLAGS:
                    raise ValueError("unknown flag %r" % f)
        except ValueError as e:
            raise TableError("line %d: %s" % (line_no, e)) from None
        p = Partition(name, t, st, off, sz, fl, line_no)
        parts.append(p)
        next_free = p.end
    return parts


def check(parts, flash_bytes, table_offset=TABLE_OFFSET):
    """Raise TableError unless the table fits `flash_bytes` as ESP-IDF and esptool require."""
    if not parts:
        raise TableError("no partitions")
    if len(parts) > MAX_ENTRIES:
        raise TableError("%d partitions, at most %d fit the table" % (len(parts), MAX_ENTRIES))
    names = [p.name for p in parts]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TableError("names used twice: %s" % ", ".join(dup))
    if sum(1 for p in parts if p.type == 1 and p.subtype == 0) > 1:
        raise TableError("more than one otadata partition")
    prev = None
    for p in sorted(parts, key=lambda p: p.offset):
        where = "line %d (%s)" % (p.line, p.name)
        align = APP_ALIGN if p.is_app else DATA_ALIGN
        if p.offset % align:
            raise TableError("%s: offset %#x not aligned to %#x" % (where, p.offset, align))
        if p.is_app and p.size % APP_ALIGN:
            raise TableError("%s: app size %#x not a multiple of %#x" % (where, p.size, APP_ALIGN))
        if p.size % DATA_ALIGN:
            raise TableError("%s: size %#x not whole 4 KiB sectors" % (where, p.size))
        if p.offset < table_offset + TABLE_SIZE:
            raise TableError(
                "%s: offset %#x is below the end of the partition table (%#x)"
                % (where, p.offset, table_offset + TABLE_SIZE)
            )
        if prev is not None and p.offset < prev.end:
            raise TableError(
                "%s: starts at %#x inside %s (%#x-%#x)"
                % (where, p.offset, prev.name, prev.offset, prev.end)
            )
        if p.end > flash_bytes:
            raise TableError(
                "%s: ends at %#x, past the %d MiB flash" % (where, p.end, flash_bytes >> 20)
            )
        prev = p
    if not any(p.is_app for p in parts):
        raise TableError("no app partition: nothing to boot")


def load(path, flash_bytes=None):
    parts = parse(Path(path).read_text())
    if flash_bytes is not None:
        check(parts, flash_bytes)
    return parts


def by_name(parts):
    return {p.name: p for p in parts}


def describe(parts):
    kinds = {v: k for k, v in TYPES.items()}
    rows = []
    for p in sorted(parts, key=lambda p: p.offset):
        names = {v: k for k, v in SUBTYPES.get(p.type, {}).items()}
        sub = names.get(p.subtype, "%#04x" % p.subtype)
        rows.append(
            "%-10s %-4s %-9s %#09x %#09x %8.2f KiB  %s"
            % (
                p.name,
                kinds.get(p.type, "%#x" % p.type),
                sub,
                p.offset,
                p.end,
                p.size / 1024,
                ":".join(p.flags),
            )
        )
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", type=Path)
    ap.add_argument("--flash", default="4M", help="flash size: 4M, 16M, 0x400000 (default 4M)")
    args = ap.parse_args(argv)
    try:
        parts = load(args.csv, flash_size(args.flash))
    except (OSError, TableError) as e:
        print("%s: %s" % (args.csv, e), file=sys.stderr)
        return 1
    print("name       type sub       offset    end            size")
    print(describe(parts))
    used = max(p.end for p in parts)
    print("flash used up to %#x of %#x" % (used, flash_size(args.flash)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
