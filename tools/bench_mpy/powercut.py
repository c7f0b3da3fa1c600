# A reduced journal power-cut sweep (the method of tests/mpy/test_journal_powercut.py, counting
# instead of asserting): a deterministic run of `appends` appends with acks, reclaims, mark
# writes and pending saves is recorded once with every program/erase logged; the image a cut
# after op N leaves is that log replayed up to N (torn: plus half of op N). Each image is mounted,
# the journal recovered and checked. argv: appends, stride (test every stride-th cut point).
#   losses: cut points after which a record that append() had returned is missing, altered or out
#   of order, the journal does not open or cannot append, or the pending blob is wrong
import benchlib
import log
import ramdisk
import record
import vfs
from journal import Journal

appends = benchlib.arg(1, 60)
stride = benchlib.arg(2, 1)
BLOCK = 512
BLOCKS = 96
CFG = {"seg_records": 8, "hwm_step": 50, "reserve_blocks": 4}


def fields_for(i):
    return {
        "kind": record.PURCHASE,
        "time": 800000000 + i * 7,
        "amount": i * 3 % 1000,
        "card_atc": i,
        "card_no": bytes((i % 256,)) * 10,
        "route": 12,
    }


def blob(i):
    return b"pending-%d" % i + bytes(i % 40)


def workload(root, dev, events):
    j = Journal(root, CFG)
    events.append(("open", 0, dev.ops))
    for i in range(1, appends + 1):
        purchase = i % 5 == 0
        if purchase:
            j.save_pending(blob(i))
            events.append(("save", i, dev.ops))
        seq = j.append(fields_for(i))
        events.append(("append", seq, dev.ops))
        if purchase:
            j.clear_pending()
            events.append(("clear", i, dev.ops))
        if i % 23 == 0 and i - 6 > j.acked_seq:
            j.ack(i - 6)
            events.append(("ack", i - 6, dev.ops))
        if i == appends * 3 // 4 and i > j.acked_seq:
            j.ack(i)
            events.append(("ack", i, dev.ops))
    j.close()


def expected_at(events, n):
    last = acked = 0
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
            pending = blob(value)
        elif what == "clear":
            pending = None
    return acked, last, pending, inflight


def check(image, events, n):
    """Problems found after a cut at op n (0 = none)."""
    dev = ramdisk.RAMBlockDev(BLOCK, BLOCKS)
    dev.data[:] = image
    problems = 0
    try:
        vfs.mount(vfs.VfsLfs2(dev, mtime=False), "/pv")
    except OSError:
        return 1
    try:
        acked, last, pending, inflight = expected_at(events, n)
        j = Journal("/pv/j", CFG)
        ok_last = [last]
        if inflight and inflight[0] == "append":
            ok_last.append(inflight[1])
        if j.last_seq not in ok_last:
            problems += 1
        if j.cut_records:
            problems += 1
        recs = j.records_after(j.acked_seq, 1000)
        if len(recs) != j.last_seq - j.acked_seq:
            problems += 1
        seq = j.acked_seq
        for b in recs:
            seq += 1
            if b != record.encode(fields_for(seq), seq):
                problems += 1
                break
        if j.acked_seq > last and not (inflight and inflight[0] == "ack"):
            problems += 1
        got = j.load_pending()
        if inflight and inflight[0] == "save":
            good = got in (pending, blob(inflight[1]))
        elif inflight and inflight[0] == "clear":
            good = got in (pending, None)
        else:
            good = got == pending
        if not good:
            problems += 1
        before = j.last_seq
        if j.append({"kind": record.BOOT, "time": 1}) != before + 1:
            problems += 1
        j.close()
    except Exception:  # noqa: BLE001 - any failure to recover is a loss here
        problems += 1
    finally:
        vfs.umount("/pv")
    return problems


log.set_level(log.ERROR, echo=False)
dev = ramdisk.RAMBlockDev(BLOCK, BLOCKS)
vfs.VfsLfs2.mkfs(dev)
base = bytes(dev.data)
dev.ops = 0
dev.record_ops()
vfs.mount(vfs.VfsLfs2(dev, mtime=False), "/pc")
events = []
workload("/pc/j", dev, events)
vfs.umount("/pc")
total = len(dev.oplog)
tested = 0
losses = 0
for tear in (False, True):
    image = bytearray(base)
    for n in range(total):
        if n % stride == 0:
            img = image
            if tear:
                img = bytearray(image)
                dev.apply_op(img, n, torn=True)
            tested += 1
            if check(img, events, n):
                losses += 1
        dev.apply_op(image, n)
    if not tear:
        tested += 1
        if check(image, events, total):
            losses += 1
benchlib.emit(
    appends=appends,
    ops=total,
    power_cut_points_tested=tested,
    power_cut_losses=losses,
    acks=sum(1 for e in events if e[0] == "ack"),
)
