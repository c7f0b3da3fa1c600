# mpy: heapsize=4m timeout=300
# Fuzz: the raw-flash transaction log (firmware/txlog.py on boards/unix_sim/rawflash.py). Each
# round writes a log (records, intents, acks, rolls, laps), damages the partition with a seeded
# mutation (bit flips or random bytes in a record, header, carry or note slot; a sector filled
# with garbage; a valid-looking header planted; a slot zeroed; a sector erased), reboots and
# checks: opening never raises; every record read back is byte for byte one that was appended
# under that number, in increasing order; the cursor stays within what exists; the next append
# gets a number never issued before (except where the damage erased the newest sector or rotted
# its last record: docs/journal.md *Known limits*, tallied); a second boot finds nothing more to
# cut. tests/mpy/test_txlog.py has the hand-made cases.
import sys

import mptest

sys.path.append(mptest.repo_root() + "/tools")

import fuzzgen  # noqa: E402
import log  # noqa: E402
import rawflash  # noqa: E402
import record  # noqa: E402
import txlog  # noqa: E402
from crc import crc32  # noqa: E402

SECTORS = 6
CFG = {"open_max": 4, "release_age": 100000}


def setup():
    log.set_level(log.INFO, echo=False)


def teardown():
    log.set_level(log.INFO, echo=True)


def fields(rng, i):
    kind = rng.choice((record.PURCHASE, record.DEBIT_INTENT, record.REFUSED, record.BOOT))
    return {
        "kind": kind,
        "time": 1000 + i,
        "amount": rng.below(5000),
        "card_no": bytes((0x31, 0, 0, 0, 0, 0, 0, 0, 0, rng.below(6))),
        "card_atc": rng.below(4),
        "route": 7,
    }


def planted_header(rng):
    h = bytearray(b"\xff" * 64)
    h[:4] = b"TXL\x01"
    for k in range(4, 16):
        h[k] = rng.byte()
    h[16] = rng.below(5)
    h[17] = h[18] = h[19] = 0
    c = crc32(bytes(h[:20]))
    h[20:24] = bytes(((c >> 24) & 255, (c >> 16) & 255, (c >> 8) & 255, c & 255))
    return h


def damage(rng, dev, lg):
    """One seeded change; returns (word for the tally, known limit hit)."""
    bs = dev.block_size
    s = rng.below(SECTORS)
    slot = rng.below(64)
    addr = s * bs + slot * 64
    newest = s == lg._cur
    tail = newest and slot == lg._next - 1
    what = rng.below(7)
    if what == 0:
        for _ in range(1 + rng.below(4)):
            dev.data[addr + rng.below(64)] ^= 1 << rng.below(8)
        return "flip", tail
    if what == 1:
        dev.data[addr : addr + 64] = rng.bytes(64)
        return "garble_slot", tail
    if what == 2:
        dev.data[s * bs : (s + 1) * bs] = rng.bytes(bs)
        return "garble_sector", newest
    if what == 3:
        dev.data[s * bs : s * bs + 64] = planted_header(rng)
        return "plant_header", newest
    if what == 4:
        dev.data[addr : addr + 64] = bytes(64)
        return "zero_slot", tail
    if what == 5:
        dev.data[s * bs : (s + 1) * bs] = b"\xff" * bs
        return "erase_sector", newest
    # a slot copied elsewhere (a duplicated record or note)
    src = rng.below(SECTORS) * bs + rng.below(64) * 64
    dev.data[addr : addr + 64] = dev.data[src : src + 64]
    return "copy_slot", tail


def test_damaged_partition_never_invents_records():
    seed = fuzzgen.seed(0x7C0)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(80)
    tally = fuzzgen.Tally()
    for i in range(n):
        dev = rawflash.RawFlash(SECTORS)
        lg = txlog.TxLog(dev, CFG)
        issued = {}
        count = 5 + rng.below(400)
        for k in range(count):
            f = fields(rng, k)
            try:
                seq = lg.append(f)
            except txlog.LogFull:
                if lg.backlog > 3:
                    lg.ack(lg.last_seq - 3)
                continue
            issued[seq] = record.encode(f, seq)
            if rng.chance(1, 15) and lg.last_seq > lg.acked_seq:
                lg.ack(lg.acked_seq + 1 + rng.below(lg.last_seq - lg.acked_seq))
            if rng.chance(2, 3):
                lg.maintain()
        what, known = damage(rng, dev, lg)
        tally.add(what)
        try:
            lg = txlog.TxLog(dev, CFG)
        except Exception as e:  # noqa: BLE001 - the invariant under test
            raise AssertionError("open raised %r after %s (round %d)" % (e, what, i))
        got = lg.records_after(0, 100000)
        prev = 0
        for b in got:
            s = record.seq_of(b)
            mptest.true(s > prev, "sequence %d after %d (round %d, %s)" % (s, prev, i, what))
            if s not in issued and what == "plant_header":
                tally.add("planted_header_taken")  # a forged header is indistinguishable
                continue
            mptest.true(s in issued, "record %d invented (round %d, %s)" % (s, i, what))
            mptest.eq(b, issued[s], "record %d changed (round %d, %s)" % (s, i, what))
            prev = s
        mptest.true(0 <= lg.acked_seq <= lg.last_seq, "cursor %d/%d" % (lg.acked_seq, lg.last_seq))
        try:
            new = lg.append({"kind": record.BOOT, "time": 5})
        except txlog.LogFull:
            tally.add("full_after_damage")
            continue
        if new <= max(issued):
            mptest.true(known, "number %d issued again (round %d, %s)" % (new, i, what))
            tally.add("KNOWN_LIMIT_number_reissued")
        carries = lg._carry[lg._cur]
        lg = txlog.TxLog(dev, CFG)
        if lg.cut_records:
            # a carried intent that no longer reads (it cannot be sealed: the header counts it)
            # is reported at every boot; anything else is sealed by the first boot
            mptest.true(
                carries > 0
                and what in ("flip", "garble_slot", "zero_slot", "copy_slot", "plant_header"),
                "a second boot found more to cut (round %d, %s)" % (i, what),
            )
            tally.add("carry_damaged")
        mptest.eq(lg.last_seq, new)
    mptest.log(fuzzgen.report("txlog_partition", seed, n, tally))
