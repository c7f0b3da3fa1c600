# mpy: heapsize=8m timeout=600
# Migration of the littlefs journal into the raw-flash log (firmware/txlog_migrate.py): records
# keep their numbers, pending purchases become open intents (unless already booked), it runs
# once, and a power cut at every flash operation of both file systems (clean or torn), followed
# by a reboot and the migration again, loses nothing and doubles nothing.
import os
import struct

import journal
import log
import mptest
import ramdisk
import rawflash
import record
import txlog
import txlog_migrate
import vfs
from crc import crc32

BLOCK = 512
BLOCKS = 96
JCFG = {"seg_records": 8, "hwm_step": 50, "reserve_blocks": 4}
MNT = "/mg"
ROOT = MNT + "/journal"


def setup():
    log.set_level(log.ERROR, echo=False)


def teardown():
    log.set_level(log.INFO, echo=True)
    try:
        vfs.umount(MNT)
    except OSError:
        pass


def card(i):
    return bytes((0x31, 0, 0, 0, 0, 0, 0, 0, 0, i))


def sale(i):
    return {
        "kind": record.PURCHASE,
        "time": 1000 + i,
        "amount": 200,
        "card_no": card(i),
        "card_atc": i,
        "route": 3,
    }


def entry(i, atc):
    return {
        "card_no": card(i),
        "issuer": b"\x01\x02\x03\x04",
        "card_type": 1,
        "txn_type": 6,
        "atc": atc,
        "amount": 150,
        "balance_before": 1000,
        "psam_serial": 77,
        "time": 5000 + i,
        "route": 3,
        "stop": 4,
        "fare_rule": 2,
        "discount": 100,
        "psam_tid": b"\x00\x00\x00\x00\x12\x34",
        "datetime": b"\x20\x26\x12\x04\x10\x00\x00",
    }


def pending_blob(entries):
    # the old firmware's format (its firmware/pending.py), built here independently
    fmt = ">10s4sBBHIIIIHHBH6s7s"
    keys = (
        "card_no",
        "issuer",
        "card_type",
        "txn_type",
        "atc",
        "amount",
        "balance_before",
        "psam_serial",
        "time",
        "route",
        "stop",
        "fare_rule",
        "discount",
        "psam_tid",
        "datetime",
    )
    out = bytearray(b"PD\x01") + bytes((len(entries),))
    for e in entries:
        out += struct.pack(fmt, *[e[k] for k in keys])
    c = crc32(out)
    return bytes(out) + struct.pack(">I", c)


class Power:
    """One power switch for both devices: the order of their operations is logged, and a cut
    at global operation k arms the device that does it."""

    def __init__(self):
        self.order = []


class LfsDev(ramdisk.RAMBlockDev):
    def readblocks(self, block_num, buf, offset=0):
        try:
            ramdisk.RAMBlockDev.readblocks(self, block_num, buf, offset)
        except MemoryError:
            # a littlefs file a cut left open, finalised by the collector with the heap locked:
            # copy without slicing (the base class's slice needs the heap)
            addr = block_num * self.block_size + offset
            d = self.data
            for i in range(len(buf)):
                buf[i] = d[addr + i]

    def _op(self):
        ok = ramdisk.RAMBlockDev._op(self)
        if ok and self.power is not None:
            self.power.order.append(0)
        return ok


class RawDev(rawflash.RawFlash):
    def _op(self):
        ok = rawflash.RawFlash._op(self)
        if ok and self.power is not None:
            self.power.order.append(1)
        return ok


def old_state(n=40, acked=25, pend=None):
    """A littlefs image holding an old journal: n purchases, acked up to `acked`, a pending blob
    (the purchase of card 30 at ATC 30 is also booked: a cut between the two writes)."""
    dev = LfsDev(BLOCK, BLOCKS)
    dev.power = None
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev, mtime=False), MNT)
    j = journal.Journal(ROOT, JCFG)
    for i in range(1, n + 1):
        j.append(sale(i))
    if acked:
        j.ack(acked)
    if pend is None:
        pend = [entry(30, 30), entry(41, 7), entry(42, 9)]
    if pend:
        j.save_pending(pending_blob(pend))
    j.close()
    vfs.umount(MNT)
    return bytes(dev.data)


def boot(lfs_image, raw_image, power=None):
    dev = LfsDev(BLOCK, BLOCKS)
    dev.power = power
    dev.data[:] = lfs_image
    vfs.mount(vfs.VfsLfs2(dev, mtime=False), MNT)
    raw = RawDev(8, data=bytearray(raw_image))
    raw.power = power
    return dev, raw


def high_water(n):
    """The old journal's high-water mark after n appends: numbers go up to it hwm_step at a
    time, and the migration numbers on from it (anything below may have been issued)."""
    step = JCFG["hwm_step"]
    return 1 + step * ((n - 1) // step + 1)


def check_done(lg, n=40, acked=25, intents=((41, 7), (42, 9))):
    first_new = high_water(n)
    mptest.eq(lg.acked_seq, acked)
    mptest.eq(lg.last_seq, first_new - 1 + len(intents))
    recs = lg.records_after(acked, 1000)
    want = list(range(acked + 1, n + 1)) + list(range(first_new, first_new + len(intents)))
    mptest.eq([record.seq_of(b) for b in recs], want)
    for b in recs[: n - acked]:
        s = record.seq_of(b)
        mptest.hex_eq(b, record.encode(sale(s), s), "record %d moved as it was" % s)
    got = [(d["card_no"][-1], d["card_atc"]) for d in lg.open_intents()]
    mptest.eq(got, list(intents))
    mptest.false(txlog_migrate._is_dir(ROOT), "old journal removed")


def test_moves_records_numbers_and_pending_purchases():
    img = old_state()
    lfs, raw = boot(img, b"\xff" * (8 * 4096))
    lg = txlog.TxLog(raw)
    got = txlog_migrate.run(ROOT, lg)
    mptest.eq(got, {"records": 15, "intents": 2, "stale_pending": 1})
    check_done(lg)
    d = lg.open_intents()[0]
    mptest.eq(
        (d["kind"], d["amount"], d["balance_after"], d["psam_serial"]),
        (record.DEBIT_INTENT, 150, 850, 77),
    )
    mptest.eq(txlog_migrate.run(ROOT, lg), None, "once only")
    lg2 = txlog.TxLog(raw)
    check_done(lg2)
    mptest.eq(lg2.append(sale(99)), high_water(40) + 2, "numbering goes on")
    vfs.umount(MNT)


def test_nothing_to_move_and_high_water_mark_kept():
    lfs, raw = boot(old_state(n=10, acked=10, pend=[]), b"\xff" * (8 * 4096))
    lg = txlog.TxLog(raw)
    mptest.eq(txlog_migrate.run(ROOT, lg), {"records": 0, "intents": 0, "stale_pending": 0})
    mptest.eq((lg.last_seq, lg.acked_seq), (high_water(10) - 1, 10))
    mptest.eq(lg.append(sale(1)), high_water(10))
    vfs.umount(MNT)
    lfs, raw = boot(old_state(n=3, acked=0, pend=[]), b"\xff" * (8 * 4096))
    mptest.eq(txlog_migrate.run(MNT + "/none", txlog.TxLog(raw)), None, "no old journal")
    vfs.umount(MNT)


def test_damaged_pending_blob_is_logged_not_fatal():
    dev = LfsDev(BLOCK, BLOCKS)
    dev.power = None
    dev.data[:] = old_state(pend=[])
    vfs.mount(vfs.VfsLfs2(dev, mtime=False), MNT)
    j = journal.Journal(ROOT, JCFG)
    j.save_pending(b"PD\x01\x01garbage")
    j.close()
    lg = txlog.TxLog(rawflash.RawFlash(8))
    mptest.eq(txlog_migrate.run(ROOT, lg)["intents"], 0)
    check_done(lg, intents=())
    vfs.umount(MNT)


def plan(lfs_img, raw_img):
    """The order of flash operations (0 littlefs, 1 raw) of an uncut migration from here."""
    power = Power()
    lfs, raw = boot(lfs_img, raw_img, power)
    txlog_migrate.run(ROOT, txlog.TxLog(raw))
    vfs.umount(MNT)
    return power.order


def cut_run(lfs_img, raw_img, order, k, tear):
    """A migration from these images cut at its global operation k (the device doing it is
    armed at its own index): the images the cut leaves."""
    lfs, raw = boot(lfs_img, raw_img, Power())
    if order[k] == 0:
        lfs.arm(order[:k].count(0), tear == "torn")
    else:
        raw.arm(order[:k].count(1), "bits" if tear == "torn" else "clean", k + 1)
    cut = False
    try:
        txlog_migrate.run(ROOT, txlog.TxLog(raw))
    except OSError:
        cut = True
    mptest.true(cut, "op %d cut" % k)
    lfs.restore_power()
    raw.restore_power()
    # a handle the cut left open may be finalised later with the heap locked: no more logging
    lfs.power = raw.power = None
    try:
        vfs.umount(MNT)
    except OSError:
        pass
    journal._close_unclosed()
    return bytes(lfs.data), bytes(raw.data)


def finish(lfs_img, raw_img, where):
    """Reboot, migrate again, check everything arrived once."""
    lfs, raw = boot(lfs_img, raw_img)
    try:
        txlog_migrate.run(ROOT, txlog.TxLog(raw))
        check_done(txlog.TxLog(raw))
    except AssertionError as e:
        raise AssertionError("%s: %s" % (where, e))
    finally:
        vfs.umount(MNT)


def test_power_cut_at_every_operation_of_both_file_systems():
    img = old_state()
    blank = b"\xff" * (8 * 4096)
    order = plan(img, blank)
    n_lfs = order.count(0)
    n_raw = order.count(1)
    mptest.true(n_lfs > 5 and n_raw > 10, "%d littlefs, %d raw operations" % (n_lfs, n_raw))
    seconds = 0
    for k in range(len(order)):
        for tear in ("clean", "torn"):
            lfs_img, raw_img = cut_run(img, blank, order, k, tear)
            where = "cut at op %d (%s)" % (k, tear)
            finish(lfs_img, raw_img, where)
            if tear == "clean" or k % 3:
                continue
            # and a second cut at every operation of the migration after that reboot
            again = plan(lfs_img, raw_img)
            for k2 in range(len(again)):
                l2, r2 = cut_run(lfs_img, raw_img, again, k2, "torn")
                finish(l2, r2, "%s, then at op %d of the next run" % (where, k2))
                seconds += 1
    mptest.log(
        "%d cut points (x2: clean, torn) over %d littlefs and %d raw flash operations, "
        "%d second cuts" % (len(order), n_lfs, n_raw, seconds)
    )


def test_records_cut_cleanly_from_the_old_journal_never_get_their_numbers_again():
    # Whole records gone from the end of the newest old segment (a file truncated at a record
    # boundary) leave no trace the old journal can see: it reopens at the last record kept. One
    # of the lost records may already be at the back office, so the migrated log must not issue
    # its number again.
    dev = LfsDev(BLOCK, BLOCKS)
    dev.power = None
    dev.data[:] = old_state(n=10, acked=0, pend=[])
    vfs.mount(vfs.VfsLfs2(dev, mtime=False), MNT)
    path = ROOT + "/cur/00000009.seg"
    with open(path, "rb") as f:
        kept = f.read(64)  # record 9 kept, record 10 gone
    with open(path, "wb") as f:
        f.write(kept)
    j = journal.Journal(ROOT, JCFG)
    mptest.eq(j.last_seq, 9, "the old format cannot see the cut")
    mptest.true(j.high_water > 10, "but its high-water mark is past every number issued")
    j.close()
    lg = txlog.TxLog(rawflash.RawFlash(8))
    mptest.eq(txlog_migrate.run(ROOT, lg)["records"], 9)
    new = lg.append(sale(11))
    mptest.true(new > 10, "number %d issued again" % new)
    mptest.eq(new, high_water(10))
    vfs.umount(MNT)


def test_a_foreign_directory_in_the_old_journal_is_left_and_logged():
    lfs, raw = boot(old_state(pend=[]), b"\xff" * (8 * 4096))
    os.mkdir(ROOT + "/stray")
    with open(ROOT + "/stray/x", "wb") as f:
        f.write(b"x")
    lg = txlog.TxLog(raw)
    mptest.eq(txlog_migrate.run(ROOT, lg)["records"], 15)
    mptest.true(txlog_migrate._exists(ROOT + "/migrated"), "marker kept: the move is done")
    mptest.eq(txlog_migrate.run(ROOT, lg), None, "later boots only retry the deletion")
    mptest.eq(lg.last_seq, high_water(40) - 1)
    vfs.umount(MNT)
