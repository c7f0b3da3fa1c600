# mpy: heapsize=8m timeout=240
# Power cut at EVERY program/erase of a 210-append run (acks, segment reclaim, high-water-mark
# writes and pending-purchase saves interleaved), with and without a torn half-write.
#
# The run is recorded once with every completed program/erase logged; the image a cut after N
# operations leaves is that log applied up to N (plus half of op N when torn). This is exact
# because the journal is deterministic (littlefs mounted with mtime=False); the equivalence is
# checked against live cuts (dev.arm) at sampled points. Each image is then mounted, the journal
# recovered and checked against what had returned before the cut.
import journal
import log
import mptest
import ramdisk
import record
import vfs
from journal import Journal

BLOCK = 512
BLOCKS = 96
CFG = {"seg_records": 8, "hwm_step": 50, "reserve_blocks": 4}
APPENDS = 210
LIVE_SAMPLE = 97  # every this-many cut points also cut live and compare images

_run = None  # (device, base image, events) of the recorded run


def fields_for(i):
    return {
        "kind": record.PURCHASE,
        "time": 800000000 + i * 7,
        "amount": i * 3 % 1000,
        "card_atc": i,
        "card_no": bytes((i % 256,)) * 10,
        "route": 12,
    }


def pending_blob(i):
    return b"pending-%d" % i + bytes(i % 40)


def workload(root, dev, events, holder=None):
    """The deterministic run; events get (what, value, ops done when it returned)."""
    j = Journal(root, CFG)
    if holder is not None:
        holder.append(j)
    events.append(("open", 0, dev.ops))
    for i in range(1, APPENDS + 1):
        purchase = i % 5 == 0
        if purchase:
            j.save_pending(pending_blob(i))
            events.append(("save", i, dev.ops))
        seq = j.append(fields_for(i))
        assert seq == i, "fresh journal numbers from 1"
        events.append(("append", seq, dev.ops))
        if purchase:
            j.clear_pending()
            events.append(("clear", i, dev.ops))
        if i % 23 == 0:
            j.ack(i - 6)  # the uplink lags a few records behind
            events.append(("ack", i - 6, dev.ops))
        if i == 150:
            j.ack(i)  # everything acknowledged: all but the newest segment reclaimed
            events.append(("ack", i, dev.ops))
    j.close()
    return j


def recorded():
    global _run
    if _run is None:
        dev = ramdisk.RAMBlockDev(BLOCK, BLOCKS)
        vfs.VfsLfs2.mkfs(dev)
        base = bytes(dev.data)
        dev.ops = 0  # events count operations from here
        dev.record_ops()
        vfs.mount(vfs.VfsLfs2(dev, mtime=False), "/pc")
        events = []
        workload("/pc/j", dev, events)
        vfs.umount("/pc")
        mptest.eq(dev.ops, len(dev.oplog))
        _run = (dev, base, events)
    return _run


def expected_at(events, n):
    """What had returned before a cut at op n: (acked, last seq, pending state, what was
    in flight) where pending state is None/blob, or "either" when a save or clear was cut."""
    last = 0
    acked = 0
    pending = None
    inflight = None
    for what, value, ops in events:
        if ops > n:
            inflight = (what, value)
            break
        if what == "append":
            last = value
        elif what == "ack":
            acked = value
        elif what == "save":
            pending = pending_blob(value)
        elif what == "clear":
            pending = None
    return acked, last, pending, inflight


def check_image(image, events, n, label):
    dev = ramdisk.RAMBlockDev(BLOCK, BLOCKS)
    dev.data[:] = image
    vfs.mount(vfs.VfsLfs2(dev, mtime=False), "/pv")
    try:
        acked, last, pending, inflight = expected_at(events, n)
        j = Journal("/pv/j", CFG)
        where = "%s cut at op %d (in flight %r)" % (label, n, inflight)
        want_last = [last]
        if inflight and inflight[0] == "append":
            want_last.append(inflight[1])
        got = (where, j.last_seq, want_last)
        mptest.true(j.last_seq in want_last, "%s: last %d, want %r" % got)
        want_acked = [acked]
        if inflight and inflight[0] == "ack":
            want_acked.append(inflight[1])
        mptest.true(
            j.acked_seq in want_acked, "%s: acked %d, want %r" % (where, j.acked_seq, want_acked)
        )
        mptest.eq(j.cut_records, 0, where + ": a power cut must not look like corruption")
        # Every record above the cursor is there, once, in order, intact.
        recs = j.records_after(j.acked_seq, 1000)
        mptest.eq(len(recs), j.last_seq - j.acked_seq, where + ": backlog")
        mptest.eq(j.backlog, len(recs))
        seq = j.acked_seq
        for b in recs:
            seq += 1
            mptest.eq(record.seq_of(b), seq, where + ": order")
            mptest.hex_eq(b, record.encode(fields_for(seq), seq), where + ": content")
        # Acknowledged records not yet reclaimed read back intact too.
        for b in j.records_after(0, 1000):
            s = record.seq_of(b)
            mptest.hex_eq(b, record.encode(fields_for(s), s), where + ": kept record")
        got = j.load_pending()
        if inflight and inflight[0] == "save":
            mptest.true(got in (pending, pending_blob(inflight[1])), where + ": pending")
        elif inflight and inflight[0] == "clear":
            mptest.true(got in (pending, None), where + ": pending")
        else:
            mptest.eq(got, pending, where + ": pending")
        # And it goes on: the next record gets the next number and reads back.
        before = j.last_seq
        nxt = j.append({"kind": record.BOOT, "time": 1})
        mptest.eq(nxt, before + 1, where + ": next number")
        mptest.eq(j.last_seq, nxt)
        mptest.eq(record.decode(j.records_after(nxt - 1, 1)[0])["kind"], record.BOOT)
        j.close()
    finally:
        vfs.umount("/pv")


def live_cut_image(n, tear):
    dev = ramdisk.RAMBlockDev(BLOCK, BLOCKS)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev, mtime=False), "/pl")
    dev.arm(n, tear)
    holder = []
    try:
        workload("/pl/j", dev, [], holder)
        cut = False
    except OSError:
        cut = True
    image = bytes(dev.data)
    # Power back on before letting go of the journal, so that the handle the cut left open
    # closes now rather than when the garbage collector finalises it.
    dev.restore_power()
    for j in holder:
        j.close()
    journal._close_unclosed()
    vfs.umount("/pl")
    mptest.true(cut, "live run cut at op %d" % n)
    return image


def sweep(tear):
    dev, base, events = recorded()
    total = len(dev.oplog)
    log.set_level(log.INFO, echo=False)
    image = bytearray(base)
    live = 0
    for n in range(total):
        img = image
        if tear:
            img = bytearray(image)
            dev.apply_op(img, n, torn=True)
        if n % LIVE_SAMPLE == 0:
            mptest.hex_eq(live_cut_image(n, tear), img, "replayed image = live cut at op %d" % n)
            live += 1
        check_image(img, events, n, "torn" if tear else "clean")
        dev.apply_op(image, n)  # on to the image after op n
    check_image(image, events, total, "no cut")
    log.set_level(log.INFO, echo=True)
    appends = sum(1 for e in events if e[0] == "append")
    acks = sum(1 for e in events if e[0] == "ack")
    mptest.true(appends >= 200)
    mptest.log(
        "%s: %d cut points tested (every program/erase of %d appends, %d acks), %d also cut live"
        % ("torn" if tear else "clean", total + 1, appends, acks, live)
    )


def test_every_cut_point_clean():
    sweep(False)


def test_every_cut_point_torn():
    sweep(True)
