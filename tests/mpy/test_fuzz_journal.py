# mpy: heapsize=2m timeout=300
# Fuzz (issue 11): journal segments and state files (firmware/journal.py on littlefs over
# tests/mpy/ramdisk.py). Each round writes a journal (records, an ack, a pending blob), damages one
# file with a seeded mutation (bit flips, cuts, inserted or appended bytes, a record duplicated or
# moved, the file renamed, a foreign file planted), reboots and checks: opening never raises; every
# record read back checks out and is byte for byte a record that was appended under that number
# (nothing invented, nothing changed), in increasing order; the cursor stays within what exists;
# the pending blob is the one saved or None; the next append gets a number never issued before;
# a second reboot finds nothing more to cut. (test_journal.py has hand-made corruptions and
# tests/host/test_journal_decode.py fuzzes the host decoder; this runs the device code.)
import os
import sys

import mptest

sys.path.append(mptest.repo_root() + "/tools")

import fuzzgen  # noqa: E402
import journal  # noqa: E402
import log  # noqa: E402
import ramdisk  # noqa: E402
import record  # noqa: E402
import vfs  # noqa: E402
from journal import Journal  # noqa: E402

MP = "/jf"
ROOT = MP + "/j"
CFG = {"seg_records": 8, "hwm_step": 20, "reserve_blocks": 2}
_dev = [None]


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()


def teardown():
    try:
        vfs.umount(MP)
    except OSError:
        pass


def reboot(j):
    try:
        if j is not None:
            j.close()
        journal._close_unclosed()
    except OSError:
        pass
    ramdisk.remount(_dev[0], MP, mtime=False)
    return Journal(ROOT, CFG)


def files():
    out = [ROOT + "/" + n for n in os.listdir(ROOT) if n != "cur"]
    out += [ROOT + "/cur/" + n for n in os.listdir(ROOT + "/cur")]
    return sorted(out)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def damage(rng, path):
    """One seeded change to one file; returns a word for the tally."""
    data = read(path)
    k = rng.below(8)
    if k <= 3:
        write(path, fuzzgen.mutate(rng, data))
        return "mutated"
    if k == 4 and len(data) >= 128:  # a whole record duplicated or swapped: CRCs still good
        i = rng.below(len(data) // 64) * 64
        rec = data[i : i + 64]
        j = rng.below(len(data) // 64) * 64
        write(path, data[:j] + rec + data[j:] if rng.below(2) else data[:j] + rec + data[j + 64 :])
        return "record_moved"
    if k == 5 and path.endswith(".seg"):  # renamed: its records no longer match their numbers
        first = int(path[-12:-4], 16)
        new = max(1, first + rng.choice((-3, -1, 1, 5, 0x1000)))
        os.rename(path, path[:-12] + "%08x.seg" % new)
        return "renamed"
    if k == 6:
        name = rng.choice(("zz.seg", "00000000.seg", "0000000g.seg", "x.tmp", "meta.tmp"))
        write(ROOT + "/" + name, rng.bytes(rng.below(200)))
        return "planted"
    write(path, data[: rng.below(len(data) + 1)])
    return "cut"


def clean_cut(path, orig):
    """The newest segment lost whole records at its end and nothing else."""
    try:
        data = read(path)
    except OSError:
        return False
    return len(data) < len(orig) and len(data) % 64 == 0 and orig[: len(data)] == data


def test_damaged_journal_files_never_invent_records():
    seed = fuzzgen.seed(0x800)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(60)
    tally = fuzzgen.Tally()
    for i in range(n):
        try:
            vfs.umount(MP)
        except OSError:
            pass
        _dev[0], _ = ramdisk.fresh_fs(512, 96, MP, mtime=False)
        j = Journal(ROOT, CFG)
        issued = {}
        count = 5 + rng.below(30)
        for k in range(count):
            seq = j.append({"kind": record.PURCHASE, "amount": k + 1, "time": 1000 + i + k})
            issued[seq] = j.records_after(seq - 1, 1)[0]
        acked = rng.below(count)
        if acked:
            j.ack(acked)
        blob = rng.bytes(1 + rng.below(40))
        j.save_pending(blob)
        j.close()
        journal._close_unclosed()
        segs = [f for f in files() if f.endswith(".seg")]
        path = rng.choice(segs if rng.below(3) else files())
        orig = read(path)
        what = damage(rng, path)
        # a clean cut of the newest segment: invisible to the old format (see below)
        invisible = path == segs[-1] and clean_cut(path, orig)
        tally.add(what + ("_seg" if path.endswith(".seg") else "_" + path.split("/")[-1]))
        log.clear()
        try:
            j = reboot(None)
        except Exception as e:  # noqa: BLE001 - the invariant under test
            raise AssertionError("open raised %r after %s of %s (round %d)" % (e, what, path, i))
        got = j.records_after(0, 1000)
        prev = 0
        for b in got:
            s = record.seq_of(b)
            mptest.true(record.valid(b), "invalid record read back")
            mptest.true(s > prev, "sequence %d after %d" % (s, prev))
            mptest.true(s in issued, "record %d invented (round %d, %s %s)" % (s, i, what, path))
            mptest.eq(b, issued[s], "record %d changed (round %d, %s %s)" % (s, i, what, path))
            prev = s
        mptest.true(0 <= j.acked_seq <= j.last_seq, "cursor %d / %d" % (j.acked_seq, j.last_seq))
        mptest.true(j.backlog >= 0)
        # Records above the cursor that survived are all still to upload.
        mptest.eq(j.backlog, len([b for b in got if record.seq_of(b) > j.acked_seq]), "backlog")
        pend = j.load_pending()
        mptest.true(pend is None or pend == blob, "pending blob changed")
        if len(got) < count - acked:
            tally.add("records_lost")
        new = j.append({"kind": record.BOOT, "time": 5})
        if invisible and new <= max(issued):
            mptest.true(j.high_water > max(issued), "the high-water mark is past the cut")
            tally.add("clean_cut_below_high_water")
            j.close()
            journal._close_unclosed()
            continue
        mptest.true(
            new > max(issued), "number %d issued again (round %d, %s %s)" % (new, i, what, path)
        )
        mptest.eq(record.seq_of(j.records_after(new - 1, 1)[0]), new)
        j = reboot(j)
        mptest.eq(j.cut_records, 0, "a second boot found more to cut")
        mptest.eq(j.last_seq, new)
        j.close()
        journal._close_unclosed()
    teardown()
    mptest.log(fuzzgen.report("journal_files", seed, n, tally))


# Found by this fuzzing: when the newest segment loses whole records at its end (a file
# truncated at a record boundary: by hand, or littlefs falling back to an older metadata
# revision), nothing looks wrong at open, so the journal reopens at the last record kept and would
# issue the lost numbers again. The journal only holds what an older release left for the
# migration now, and the migration numbers on from its high-water mark instead of its last
# record (tests/mpy/test_txlog_migrate.py
# test_records_cut_cleanly_from_the_old_journal_never_get_their_numbers_again).


def test_acknowledged_records_cut_from_the_end_never_get_their_numbers_again():
    # The dangerous half of the cut above: records the back office already holds vanish
    # from the end of the newest segment; reissuing their numbers would make the back office
    # drop the new records as duplicates. The acknowledged cursor gives the cut away.
    try:
        vfs.umount(MP)
    except OSError:
        pass
    _dev[0], _ = ramdisk.fresh_fs(512, 96, MP, mtime=False)
    j = Journal(ROOT, CFG)
    for k in range(10):
        j.append({"kind": record.PURCHASE, "amount": k + 1})
    j.ack(10)
    j.close()
    journal._close_unclosed()
    path = ROOT + "/cur/00000009.seg"
    write(path, read(path)[:64])  # records 10 (acknowledged) gone, 9 intact
    j = reboot(None)
    new = j.append({"kind": record.BOOT})
    j.close()
    journal._close_unclosed()
    teardown()
    mptest.true(new > 10, "acknowledged number %d issued again" % new)
