# mpy: heapsize=2m timeout=120
# The journal's behaviour apart from power cuts (test_journal_powercut.py): reading back across
# reboots, the upload cursor and reclaim, corrupt segments, a full journal, refused acks, a reboot
# in the middle of reclaim, sequence numbers across wipes, and the pending-purchase store.
import os

import journal
import log
import mptest
import ramdisk
import record
import vfs
from journal import Journal

MP = "/jt"
ROOT = MP + "/j"
CFG = {"seg_records": 8, "hwm_step": 20, "reserve_blocks": 2}
_dev = None


def setup():
    global _dev
    _dev, _ = ramdisk.fresh_fs(512, 96, MP, mtime=False)
    log.set_level(log.INFO, echo=False)
    log.clear()


def teardown():
    try:
        vfs.umount(MP)
    except OSError:
        pass
    log.set_level(log.INFO, echo=True)


def reboot(j, cfg=CFG):
    """Power off and on. The flash content is carried to a new device object as the cut left
    it; the old journal's handles are then closed against the old device, which nothing reads
    any more (on a board they would die with the RAM)."""
    global _dev
    old = _dev
    _dev = ramdisk.RAMBlockDev(old.block_size, old.num_blocks)
    _dev.data[:] = old.data
    old.restore_power()
    try:
        if isinstance(j, Journal):
            j.close()
        journal._close_unclosed()
    except OSError:
        pass
    try:
        vfs.umount(MP)
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(_dev, mtime=False), MP)
    return Journal(ROOT, cfg)


class _Gone:
    """Stands for a journal whose opening the power cut interrupted."""


def fields(i, kind=record.PURCHASE):
    return {"kind": kind, "amount": i, "time": 1000 + i, "card_atc": i & 0xFFFF}


def fill(j, n, start=1):
    return [j.append(fields(start + i)) for i in range(n)]


def seqs(recs):
    return [record.seq_of(b) for b in recs]


def seg_path(first):
    """Where segment `first` is: the one being appended to lives in cur/."""
    name = "%08x.seg" % first
    if name in os.listdir(ROOT + "/cur"):
        return ROOT + "/cur/" + name
    return ROOT + "/" + name


def all_segs():
    names = os.listdir(ROOT) + os.listdir(ROOT + "/cur")
    return sorted(n for n in names if n.endswith(".seg"))


def patch(path, offset, data):
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    raw[offset : offset + len(data)] = data
    with open(path, "wb") as f:
        f.write(raw)


def test_appends_read_back_in_order_across_reboots():
    j = Journal(ROOT, CFG)
    mptest.eq(fill(j, 20), list(range(1, 21)))
    j = reboot(j)
    mptest.eq(j.last_seq, 20)
    mptest.eq(j.backlog, 20)
    recs = j.records_after(0, 100)
    mptest.eq(seqs(recs), list(range(1, 21)))
    mptest.eq(record.decode(recs[4])["amount"], 5)
    mptest.eq(j.append(fields(21)), 21)
    mptest.eq(seqs(j.records_after(18, 2)), [19, 20])
    mptest.eq(j.records_after(21, 5), [])
    mptest.eq(all_segs(), ["00000001.seg", "00000009.seg", "00000011.seg"])
    mptest.eq(os.listdir(ROOT + "/cur"), ["00000011.seg"], "only the active segment in cur/")


def test_ack_moves_cursor_and_reclaims_whole_segments_only():
    j = Journal(ROOT, CFG)
    fill(j, 30)
    mptest.true(j.ack(7))
    mptest.true("00000001.seg" in all_segs(), "segment 1..8 not fully acknowledged")
    mptest.true(j.ack(8))
    mptest.false("00000001.seg" in all_segs())
    mptest.false(j.ack(8), "a repeated ack changes nothing")
    mptest.eq(j.backlog, 22)
    mptest.eq(seqs(j.records_after(j.acked_seq, 3)), [9, 10, 11])
    j.ack(30)
    mptest.eq(all_segs(), ["00000019.seg"], "the newest segment stays")
    j = reboot(j)
    mptest.eq((j.last_seq, j.acked_seq, j.backlog), (30, 30, 0))
    mptest.eq(j.append(fields(31)), 31, "numbers go on after everything was acknowledged")


def test_ack_of_unknown_or_regressing_sequence_is_refused_and_logged():
    j = Journal(ROOT, CFG)
    fill(j, 10)
    j.ack(5)
    e = mptest.raises(journal.AckError, j.ack, 11)
    mptest.true(isinstance(e, ValueError))
    mptest.true(log.find("ack 11 refused: unknown"), "logged")
    mptest.raises(journal.AckError, j.ack, 4)
    mptest.true(log.find("ack 4 refused: below the cursor 5"))
    mptest.raises(journal.AckError, j.ack, "7")
    mptest.raises(journal.AckError, j.ack, None)
    mptest.eq(j.acked_seq, 5, "cursor unchanged")
    j = reboot(j)
    mptest.eq(j.acked_seq, 5)


def test_bad_fields_are_refused_before_touching_flash():
    j = Journal(ROOT, CFG)
    fill(j, 3)
    ops = _dev.ops
    mptest.raises(record.RecordError, j.append, {"kind": 1, "amount": 1 << 24})
    mptest.raises(record.RecordError, j.append, {"kind": 1, "tac": b"\x01"})
    mptest.eq(_dev.ops, ops, "no write")
    mptest.eq(j.append(fields(4)), 4, "no number used up")


def test_flipped_bit_in_an_old_segment_cuts_it_and_keeps_the_rest():
    j = Journal(ROOT, CFG)
    fill(j, 24)
    j.close()
    patch(seg_path(9), 3 * 64 + 40, b"\x55")  # record 12 of segment 9..16
    log.clear()
    j = reboot(j)
    mptest.true(
        log.find("segment 00000009.seg: bad record (CRC/version) at record 3", log.WARNING)
    )
    mptest.eq(j.cut_records, 5)
    mptest.eq(seqs(j.records_after(0, 100)), list(range(1, 12)) + list(range(17, 25)))
    mptest.eq(j.last_seq, 24, "later segments carry on")
    mptest.eq(j.append(fields(25)), 25)
    with open(seg_path(9), "rb") as f:
        mptest.eq(len(f.read()), 3 * 64, "the segment was cut on flash")
    mptest.true(log.find("records 12..16 missing", log.WARNING))
    mptest.eq(j.backlog, 20)
    j.ack(13)
    mptest.eq(j.backlog, 9, "17..25")


def test_corrupt_tail_never_reissues_a_cut_number():
    j = Journal(ROOT, CFG)
    fill(j, 12)
    hwm = j._hwm
    j.close()
    patch(seg_path(9), 64 + 10, b"\xff\xff")  # record 10 of 9..12
    j = reboot(j)
    mptest.eq(seqs(j.records_after(0, 100)), list(range(1, 10)))
    mptest.true(j.last_seq >= hwm - 1, "numbers resume past every number ever issued")
    nxt = j.append(fields(99))
    mptest.true(nxt > 12)
    mptest.true(log.find("sequence resumes at", log.WARNING))
    mptest.eq(seqs(j.records_after(9, 10)), [nxt], "the new record reads back")
    mptest.eq(j.backlog, 10, "the backlog counts records, not the numbers skipped")
    j = reboot(j)
    mptest.eq(j.last_seq, nxt)
    mptest.eq(j.cut_records, 0, "the cut is done once")


def test_truncation_and_garbage_appended_are_cut():
    j = Journal(ROOT, CFG)
    fill(j, 20)
    j.close()
    with open(seg_path(17), "ab") as f:
        f.write(b"\x13\x37garbage")  # torn tail
    with open(seg_path(9), "rb") as f:
        raw = f.read()
    with open(seg_path(9), "wb") as f:
        f.write(raw[: 5 * 64 + 17])  # truncated in the middle of record 14
    with open(seg_path(1), "ab") as f:
        f.write(record.encode(fields(3), 3))  # a good record in the wrong place
    j = reboot(j)
    mptest.true(log.find("00000011.seg: torn record at record 4", log.WARNING))
    mptest.true(log.find("00000009.seg: torn record at record 5", log.WARNING))
    mptest.true(log.find("00000001.seg: sequence 3 where 9 expected at record 8", log.WARNING))
    got = seqs(j.records_after(0, 100))
    mptest.eq(got, list(range(1, 14)) + list(range(17, 21)))
    for b in j.records_after(0, 100):
        mptest.true(record.valid(b))


def test_planted_files_are_ignored_or_removed():
    j = Journal(ROOT, CFG)
    fill(j, 10)
    j.close()
    with open(ROOT + "/notes.txt", "w") as f:
        f.write("hello")
    with open(seg_path(200), "wb") as f:
        f.write(b"\xff" * 64)  # erased-looking junk in the newest position
    with open(seg_path(5), "wb") as f:
        f.write(record.encode(fields(5), 5))  # overlaps segment 1..8
    with open(ROOT + "/meta.tmp", "wb") as f:
        f.write(b"half a replacement")
    j = reboot(j)
    mptest.true(log.find("ignoring unknown file notes.txt", log.WARNING))
    mptest.true(log.find("segment 00000005.seg overlaps", log.ERROR))
    mptest.false("meta.tmp" in os.listdir(ROOT))
    mptest.false("000000c8.seg" in all_segs())
    mptest.eq(seqs(j.records_after(0, 100)), list(range(1, 11)))
    mptest.true(j.append(fields(11)) > 10)


def test_corrupt_meta_keeps_every_unacknowledged_record():
    j = Journal(ROOT, CFG)
    fill(j, 20)
    j.ack(12)
    j.close()
    patch(ROOT + "/meta", 5, b"\xee")
    j = reboot(j)
    mptest.true(log.find("journal meta unreadable", log.WARNING))
    # the cursor falls back to what was reclaimed: some records are offered again, none lost
    mptest.eq(j.acked_seq, 8)
    mptest.eq(seqs(j.records_after(j.acked_seq, 100)), list(range(9, 21)))
    mptest.eq(j.append(fields(21)), 21)


def test_full_journal_warns_then_refuses_purchases_but_keeps_the_reserve():
    cfg = dict(CFG)
    cfg.update({"max_segments": 4, "purchase_reserve": 8, "warn_pct": 50})
    j = Journal(ROOT, cfg)
    mptest.eq(j.capacity, 32)
    fill(j, 15)
    mptest.eq(j.status()["state"], "ok")
    fill(j, 1, 16)
    mptest.eq(j.status()["state"], "warn")
    fill(j, 8, 17)
    st = j.status()
    mptest.eq((st["state"], st["used"], st["backlog"]), ("full", 24, 24))
    mptest.false(j.can_accept_purchase())
    # the reserve takes the record of a purchase already under way, recovered ones, events
    fill(j, 8, 25)
    e = mptest.raises(journal.JournalFull, j.append, fields(33))
    mptest.true("full" in str(e))
    mptest.true(log.find("append 33 refused", log.ERROR))
    mptest.eq(j.last_seq, 32, "nothing overwritten, no number used")
    mptest.eq(seqs(j.records_after(0, 100)), list(range(1, 33)))
    j.ack(16)
    mptest.true(j.can_accept_purchase())
    mptest.eq(j.append(fields(33)), 33)
    j = reboot(j, cfg)
    mptest.eq(j.status()["state"], "warn")


def test_file_system_running_out_is_a_journal_full_not_a_crash():
    cfg = dict(CFG)
    cfg["reserve_blocks"] = 0
    j = Journal(ROOT, cfg)
    fill(j, 4)
    filler = bytes(512)
    n = 0
    with open(MP + "/ballast", "wb") as f:  # another part of the firmware eats the space
        try:
            while True:
                f.write(filler)
                f.flush()
                n += 1
        except OSError:
            pass
    mptest.true(n > 10)
    last = j.last_seq
    got = None
    for i in range(40):
        try:
            j.append(fields(last + 1 + i))
        except journal.JournalFull:
            got = True
            break
    mptest.true(got, "ran out")
    # refused by littlefs (ENOSPC inside a segment) or by the space check at a new segment
    mptest.true(log.find("refused: file system full", log.ERROR) or log.find("refused: journal"))
    kept = seqs(j.records_after(0, 1000))
    mptest.eq(kept, list(range(1, j.last_seq + 1)), "what returned is there, no gap")
    os.remove(MP + "/ballast")
    nxt = j.append(fields(0))
    mptest.eq(nxt, kept[-1] + 1)
    j = reboot(j, cfg)
    mptest.eq(seqs(j.records_after(0, 1000)), list(range(1, nxt + 1)))


def test_reboot_in_the_middle_of_reclaim_at_every_operation():
    # An ack writes the cursor then removes segments: cut power at each of its operations.
    tested = 0
    k = 0
    while True:
        teardown()
        setup()
        j = Journal(ROOT, CFG)
        fill(j, 40)
        _dev.arm(k, tear=k % 2 == 1)
        try:
            j.ack(33)
            done = True
        except OSError:
            done = False
        j = reboot(j)
        mptest.true(j.acked_seq in (0, 33), "cursor old or new, cut at op %d" % k)
        mptest.eq(seqs(j.records_after(j.acked_seq, 100)), list(range(j.acked_seq + 1, 41)))
        segs = all_segs()
        if j.acked_seq == 33:
            mptest.eq(segs, ["00000021.seg"], "open finished the reclaim")
        j.ack(36)
        mptest.eq(j.append(fields(41)), 41)
        tested += 1
        if done:
            break
        k += 1
    mptest.log("reclaim: cut at each of %d operations of an ack" % tested)
    mptest.true(tested > 3)


def test_numbers_survive_wipe_directory_loss_and_reformat():
    j = Journal(ROOT, CFG)
    fill(j, 10)
    j.wipe()
    mptest.eq((j.backlog, j.records_after(0, 10)), (0, []))
    mptest.eq(j.append(fields(11)), 11, "no gap in the same session")
    j.wipe()
    j = reboot(j)
    mptest.true(j.append(fields(12)) >= 12)
    top = j.last_seq
    # someone deletes the journal directory by hand: the mark beside it still knows
    j.close()
    for d in (ROOT + "/cur", ROOT):
        for name in os.listdir(d):
            if name != "cur":
                os.remove(d + "/" + name)
        os.rmdir(d)
    j = Journal(ROOT, CFG)
    mptest.true(j.append(fields(13)) > top)
    top = j.last_seq
    # the whole file system is reformatted: only an outside store (NVS on a board) keeps it

    class Mark:
        value = None

        def load(self):
            return self.value

        def save(self, n):
            self.value = n

    mark = Mark()
    cfg = dict(CFG)
    cfg["mark"] = mark
    j.close()
    j = Journal(ROOT, cfg)
    fill(j, 3, 100)
    top = j.last_seq
    j.close()
    teardown()
    setup()  # a new file system
    j = Journal(ROOT, cfg)
    mptest.true(j.append(fields(1)) > top, "numbers never reused")
    mark.load = None  # a broken store is logged and does not stop the journal
    j.close()
    j = Journal(ROOT, cfg)
    mptest.true(log.find("high-water mark store failed", log.WARNING))


def test_pending_store_round_trips_bytes_and_dicts():
    j = Journal(ROOT, CFG)
    mptest.eq(j.load_pending(), None)
    j.save_pending(b"\x00\x01pending")
    j = reboot(j)
    mptest.hex_eq(j.load_pending(), b"\x00\x01pending")
    j.clear_pending()
    mptest.eq(j.load_pending(), None)
    j.clear_pending()  # clearing twice is fine
    ps = journal.PendingStore(j)
    ps.save({"seq": 5, "atc": 7, "card": "3100"})
    j = reboot(j)
    ps = journal.PendingStore(j)
    mptest.eq(ps.load(), {"seq": 5, "atc": 7, "card": "3100"})
    ps.save(bytearray(b"raw"))
    mptest.hex_eq(ps.load(), b"raw")
    ps.clear()
    mptest.eq(ps.load(), None)
    mptest.raises(journal.JournalError, j.save_pending, bytes(2000))


def test_corrupt_pending_is_ignored_and_logged():
    j = Journal(ROOT, CFG)
    j.save_pending(b"abcdef")
    patch(ROOT + "/pending", 12, b"X")
    mptest.eq(j.load_pending(), None)
    mptest.true(log.find("pending record corrupt", log.ERROR))
    with open(ROOT + "/pending", "wb") as f:
        f.write(b"JP")
    mptest.eq(journal.PendingStore(j).load(), None)
    with open(ROOT + "/pending", "wb") as f:
        f.write(b"")
    mptest.eq(j.load_pending(), None)


def test_bad_configuration_is_refused():
    mptest.raises(journal.JournalError, Journal, ROOT, {"segment": 3})
    mptest.raises(journal.JournalError, Journal, ROOT, {"seg_records": 0})


def test_segments_written_with_another_size_still_read():
    j = Journal(ROOT, CFG)
    fill(j, 20)
    j.close()
    cfg = dict(CFG)
    cfg["seg_records"] = 4  # a later firmware with smaller segments
    j = reboot(j, cfg)
    mptest.eq(j.cut_records, 0)
    mptest.eq(seqs(j.records_after(0, 100)), list(range(1, 21)))
    mptest.eq(j.append(fields(21)), 21)
    mptest.true("00000015.seg" in all_segs(), "a new segment of the new size")


def test_power_cut_while_open_repairs_a_corrupt_segment():
    # The repair (copy the good prefix, rename over) is itself cut at each of its operations.
    k = 0
    while True:
        teardown()
        setup()
        j = Journal(ROOT, CFG)
        fill(j, 20)
        j.close()
        patch(seg_path(9), 2 * 64 + 7, b"\x99")
        ramdisk.remount(_dev, MP, mtime=False)
        _dev.arm(k, tear=True)
        try:
            Journal(ROOT, CFG).close()
            done = True
        except OSError:
            done = False
        j = reboot(_Gone())
        got = seqs(j.records_after(0, 100))
        mptest.eq(got, list(range(1, 11)) + list(range(17, 21)), "cut at op %d" % k)
        mptest.eq(j.append(fields(21)), 21)
        if done:
            break
        k += 1
    mptest.log("repair: cut at each of %d operations" % k)
    mptest.true(k >= 2)


class FakeNVS:
    """esp32.NVS's i32 calls over a dict; set_i32 refuses values outside i32 as the port does."""

    def __init__(self):
        self.kept = {}
        self.pending = {}

    def get_i32(self, key):
        if key not in self.kept:
            raise OSError(-4354)
        return self.kept[key]

    def set_i32(self, key, v):
        if not -(1 << 31) <= v < (1 << 31):
            raise OverflowError("i32")
        self.pending[key] = v

    def commit(self):
        self.kept.update(self.pending)


def test_nvs_mark_keeps_numbers_across_a_reformat():
    import journal_nvs

    nvs = FakeNVS()
    mark = journal_nvs.NvsMark(nvs=nvs)
    mptest.eq(mark.load(), None)
    mark.save(0xFFFFFFF0)
    mptest.eq(mark.load(), 0xFFFFFFF0, "u32 through the i32 slot")
    nvs.kept.clear()
    cfg = dict(CFG)
    cfg["mark"] = journal_nvs.NvsMark(nvs=nvs)
    j = Journal(ROOT, cfg)
    fill(j, 5)
    top = j.last_seq
    mptest.true(nvs.kept["hwm"] > top)
    j.close()
    teardown()
    setup()  # reformatted: only NVS remembers
    j = Journal(ROOT, cfg)
    mptest.true(j.append(fields(1)) > top)
    nvs.get_i32 = lambda key: (_ for _ in ()).throw(OSError(5))  # NVS itself failing
    j.close()
    j = Journal(ROOT, cfg)
    mptest.true(log.find("high-water mark store failed", log.WARNING))
    mptest.true(j.append(fields(2)) > top, "the journal goes on with what it has")


def test_only_the_newest_segment_stays_in_cur():
    j = Journal(ROOT, CFG)
    fill(j, 20)
    j.close()
    os.rename(seg_path(9), ROOT + "/cur/00000009.seg")  # as if a rename out of cur/ was lost
    mptest.eq(os.listdir(ROOT + "/cur"), ["00000009.seg", "00000011.seg"])
    j = reboot(j)
    mptest.eq(os.listdir(ROOT + "/cur"), ["00000011.seg"])
    mptest.eq(seqs(j.records_after(0, 100)), list(range(1, 21)))
    fill(j, 5, 21)  # 21..24 fill 17..24, then 25 starts a new segment: 17..24 leaves cur/
    mptest.eq(os.listdir(ROOT + "/cur"), ["00000019.seg"])
    mptest.eq(all_segs(), ["00000001.seg", "00000009.seg", "00000011.seg", "00000019.seg"])
    j = reboot(j)
    mptest.eq(seqs(j.records_after(0, 100)), list(range(1, 26)))


def test_power_cut_at_each_operation_of_a_wipe_never_reuses_numbers():
    k = 0
    while True:
        teardown()
        setup()
        j = Journal(ROOT, CFG)
        fill(j, 30)
        j.save_pending(b"p")
        _dev.arm(k, tear=k % 2 == 0)
        try:
            j.wipe()
            done = True
        except OSError:
            done = False
        j = reboot(j)
        left = seqs(j.records_after(j.acked_seq, 100))
        mptest.eq(
            left, list(range(j.acked_seq + 1, 31)), "cut at op %d: whatever is left is whole" % k
        )
        mptest.true(j.acked_seq in (0, 30), "cursor old or at the end")
        nxt = j.append(fields(99))
        mptest.true(nxt > 30, "cut at op %d: number %d reused" % (k, nxt))
        if done:
            mptest.eq(j.load_pending(), None)
            break
        k += 1
    mptest.log("wipe: cut at each of %d operations" % k)
    mptest.true(k >= 4)
