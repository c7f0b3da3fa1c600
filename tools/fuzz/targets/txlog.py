"""Transaction-log sectors: firmware/txlog.py opening a damaged raw-flash partition
(boards/unix_sim/rawflash.py in RAM), as tests/mpy/test_fuzz_txlog.py does with seeded damage.

Input: byte 0 sets how many records are written (intents, sales, refusals, boots; acks and
maintenance now and then, from byte 1's bits), then the rest is a list of damage edits, 4 bytes
each plus data: op, sector, slot, arg. Ops: flip bits, write input bytes into a slot, fill a
sector with an input pattern, plant a header-shaped slot, zero a slot, erase a sector, copy a slot.
Invariants: opening never raises; records read back come in increasing order and each one is
byte for byte the record appended under that number, unless the input wrote bytes of its own
(then a record not appended must still decode: a forgery with a good CRC is indistinguishable,
docs/journal.md); the cursor stays within what exists; afterwards an honest append (or LogFull)
works and reads back identical after another boot.
"""

import os
import sys

from tools.fuzz import shim

shim.install()
if os.path.join(shim.ROOT, "boards/unix_sim") not in sys.path:
    sys.path.append(os.path.join(shim.ROOT, "boards/unix_sim"))

import rawflash  # noqa: E402
import record  # noqa: E402
import txlog  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "txlog"
SECTORS = 6
CFG = {"open_max": 4, "release_age": 100000}
KINDS = (record.PURCHASE, record.DEBIT_INTENT, record.REFUSED, record.BOOT)


def fields(i):
    return {
        "kind": KINDS[i % 4],
        "time": 1000 + i,
        "amount": (i * 37) % 5000,
        "card_no": bytes((0x31, 0, 0, 0, 0, 0, 0, 0, 0, i % 6)),
        "card_atc": i % 4,
        "route": 7,
    }


def write(lg, count, habits):
    issued = {}
    for k in range(count):
        f = fields(k)
        try:
            seq = lg.append(f)
        except txlog.LogFull:
            if lg.backlog > 3:
                lg.ack(lg.last_seq - 3)
            continue
        issued[seq] = record.encode(f, seq)
        if habits & 1 and k % 7 == 6 and lg.last_seq > lg.acked_seq:
            lg.ack(lg.acked_seq + 1 + (k % (lg.last_seq - lg.acked_seq)))
        if habits & 2 or k % 3:
            lg.maintain()
    return issued


def damage(dev, edits):
    bs = dev.block_size
    forged = False
    pos = 0
    while pos + 4 <= len(edits) and pos < 400:
        op, s, slot, arg = (
            edits[pos] % 7,
            edits[pos + 1] % SECTORS,
            edits[pos + 2] % 64,
            edits[pos + 3],
        )
        pos += 4
        addr = s * bs + slot * 64
        if op == 0:
            dev.data[addr + arg % 64] ^= 1 << (arg >> 6 | (slot & 4))
        elif op == 1:
            chunk = edits[pos : pos + arg % 65]
            pos += len(chunk)
            dev.data[addr : addr + len(chunk)] = chunk
            forged = True
        elif op == 2:
            pat = (edits[pos : pos + 1 + arg % 16] or b"\x00") * (bs // 1 + 1)
            pos += 1 + arg % 16
            dev.data[s * bs : (s + 1) * bs] = pat[:bs]
            forged = True
        elif op == 3:
            h = bytearray(dev.data[addr : addr + 64])
            h[:4] = b"TXL\x01"
            dev.data[s * bs : s * bs + 64] = h
            forged = True
        elif op == 4:
            dev.data[addr : addr + 64] = bytes(64)
        elif op == 5:
            dev.data[s * bs : (s + 1) * bs] = b"\xff" * bs
        else:
            src = (arg % SECTORS) * bs + (arg >> 3 & 63) * 64
            dev.data[addr : addr + 64] = dev.data[src : src + 64]
    return forged


_images = {}


def one_input(data):
    if len(data) < 2:
        return
    key = (data[0], data[1] & 3)
    if key not in _images:
        dev = rawflash.RawFlash(SECTORS)
        # Writing up to 510 records is 90 % of an input's time and depends on these two bytes
        # only: done once per pair, the flash image and what was issued kept (bounded).
        if len(_images) >= 256:
            _images.clear()
        issued = write(txlog.TxLog(dev, CFG), data[0] * 2, data[1])
        _images[key] = (bytes(dev.data), issued)
    image, issued = _images[key]
    dev = rawflash.RawFlash(SECTORS, data=bytearray(image))
    forged = damage(dev, data[2:])
    lg = txlog.TxLog(dev, CFG)  # must not raise
    prev = 0
    for b in lg.records_after(0, 100000):
        s = record.seq_of(b)
        check(s > prev, "sequence %d after %d" % (s, prev))
        prev = s
        if issued.get(s) == bytes(b):
            continue
        check(forged, "record %d invented or changed without forged bytes" % s)
        record.decode(bytes(b))  # a forgery must at least be a record
    check(0 <= lg.acked_seq <= lg.last_seq, "cursor %d/%d" % (lg.acked_seq, lg.last_seq))
    try:
        new = lg.append({"kind": record.BOOT, "time": 5})
    except txlog.LogFull:
        return
    want = record.encode({"kind": record.BOOT, "time": 5}, new)
    lg = txlog.TxLog(dev, CFG)
    got = [bytes(b) for b in lg.records_after(new - 1, 4) if record.seq_of(b) == new]
    check(got == [want], "the honest record %d after the damage reads back %r" % (new, got))


SEEDS = (
    b"\x00\x00",
    b"\x10\x00",
    b"\x40\x03",
    b"\x20\x01\x00\x00\x03\x21",
    b"\x20\x01\x04\x00\x05\x00",
    b"\x20\x02\x05\x01\x00\x00",
    b"\x60\x03\x06\x00\x02\x19",
    b"\x30\x00\x03\x01\x00\x00",
    b"\x30\x00\x01\x00\x02\x04\x00\x00\x00\x00",
    b"\x30\x00\x02\x00\x00\x00\xff",
)
