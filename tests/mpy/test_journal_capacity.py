# mpy: heapsize=8m timeout=300
# Figures for docs/journal.md on the ESP32's geometry (4 KB littlefs blocks, MicroPython's default
# littlefs settings): flash work per append at 1,500 taps a day, and a full journal on a small
# file system: purchases are refused before littlefs runs out, and the reserve really is there.
# JOURNAL_BIG=1 also fills the 2 MB file system of a 4 MB board and the 13.1 MB vfs partition of
# a 16 MB board (minutes: littlefs slows down with thousands of files in one directory).
import os
import time

import log
import mptest
import ramdisk
import record
import vfs
from journal import Journal, JournalFull

MP = "/jc"
TAPS_PER_DAY = 1500
FIELDS = {"kind": record.PURCHASE, "time": 800000000, "amount": 200, "route": 12}
_dev = None


def mount(blocks, in_file=False):
    global _dev
    if in_file:
        path = "/tmp/journal_cap_%x.img" % time.time_ns()
        _dev = ramdisk.FileBlockDev(path, 4096, blocks)
        _dev.path = path
    else:
        _dev = ramdisk.RAMBlockDev(4096, blocks)
    vfs.VfsLfs2.mkfs(_dev)
    vfs.mount(vfs.VfsLfs2(_dev), MP)  # mtime on, as on a board
    log.set_level(log.INFO, echo=False)


def teardown():
    global _dev
    if _dev is not None:
        vfs.umount(MP)
        if hasattr(_dev, "close"):
            _dev.close()
            os.remove(_dev.path)
        _dev = None
    log.set_level(log.INFO, echo=True)


def test_flash_work_of_a_day_of_taps():
    mount(512)
    j = Journal(MP + "/journal")
    for _ in range(200):  # warm up past the first segments and mark writes
        j.append(FIELDS)
    e0, p0, b0 = _dev.erases, _dev.programs, _dev.programmed
    for i in range(TAPS_PER_DAY):
        j.append(FIELDS)
        if i % 20 == 19:
            j.ack(j.last_seq - 5)  # batches of 20 uploaded while the bus runs
    erases = _dev.erases - e0
    programmed = _dev.programmed - b0
    per = programmed // TAPS_PER_DAY
    mptest.log(
        "a day of %d taps: %d block erases (%.2f per append), %d programs, %d KB programmed "
        "(%d bytes per 64-byte record); %.1f erases per block per day over 512 blocks"
        % (
            TAPS_PER_DAY,
            erases,
            erases / TAPS_PER_DAY,
            _dev.programs - p0,
            programmed // 1024,
            per,
            erases / 512,
        )
    )
    # littlefs copies the partial last block of a file at each synced append (copy-on-write):
    # that is its price for atomic appends; a whole-segment rewrite per record would cost more
    mptest.true(erases <= 1.3 * TAPS_PER_DAY, "erases %d" % erases)
    mptest.true(per < 4096, "programmed %d bytes per record" % per)


def fill(blocks, reserve_blocks, in_file=False):
    mount(blocks, in_file)
    j = Journal(MP + "/journal", {"reserve_blocks": reserve_blocks})
    n = 0
    while j.can_accept_purchase():
        j.append(FIELDS)
        n += 1
    mptest.eq(j.status()["state"], "full")
    reserve = 0
    try:
        while True:
            j.append(FIELDS)
            reserve += 1
    except JournalFull as e:
        mptest.true("journal full" in str(e), "refused by the journal, not by littlefs: %s" % e)
    mptest.true(reserve >= 64, "the reserve holds a segment")
    free = os.statvfs(MP)[3]
    mptest.between(free, reserve_blocks // 2, blocks, "the journal leaves blocks for littlefs")
    with open(MP + "/params.bin", "wb") as f:  # and the file system still takes a small file
        f.write(bytes(1000))
    j.ack(j.last_seq)
    mptest.eq(j.status()["state"], "ok")
    j.append(FIELDS)
    return j.capacity, n, reserve, free


def test_full_small_file_system_refuses_purchases_before_littlefs_runs_out():
    cap, n, reserve, free = fill(64, 8)
    mptest.log(
        "256 KB fs (64 x 4 KB): purchases refused after %d records, %d more in the reserve, "
        "%d blocks still free; capacity %d once acknowledged" % (n, reserve, free, cap)
    )


def test_capacity_of_4mb_and_16mb_boards():
    if os.getenv("JOURNAL_BIG") != "1":
        mptest.skip("set JOURNAL_BIG=1 to fill 2 MB and 13.1 MB file systems (minutes)")
    for blocks, label in ((512, "2 MB fs (4 MB board)"), (3280, "13.1 MB fs (16 MB board)")):
        t = time.ticks_ms()
        cap, n, reserve, free = fill(blocks, 16, in_file=True)
        mptest.log(
            "%s: purchases refused after %d records (%.1f days at %d a day), %d in the reserve, "
            "%d blocks free; %d s"
            % (
                label,
                n,
                n / TAPS_PER_DAY,
                TAPS_PER_DAY,
                reserve,
                free,
                time.ticks_diff(time.ticks_ms(), t) // 1000,
            )
        )
        teardown()


def reads_per_append(readsize):
    """(label, segments, mean, median, p99, max) block-device reads per append, online and
    with an offline backlog, for littlefs mounted with this read/program size."""
    global _dev
    _dev = ramdisk.RAMBlockDev(4096, 512)
    vfs.VfsLfs2.mkfs(_dev)
    vfs.mount(vfs.VfsLfs2(_dev, readsize=readsize, progsize=readsize), MP)
    log.set_level(log.INFO, echo=False)
    j = Journal(MP + "/journal")
    out = []

    def window(label, n, ack):
        reads = []
        for _ in range(n):
            r = _dev.reads
            j.append(FIELDS)
            if ack and j.last_seq % 20 == 0:
                j.ack(j.last_seq - 5)
            reads.append(_dev.reads - r)
        reads.sort()
        out.append(
            (
                label,
                j.status()["segments"],
                sum(reads) // n,
                reads[n // 2],
                reads[n * 99 // 100],
                reads[-1],
            )
        )

    window("online", 1500, True)
    while j.status()["segments"] < 100:
        j.append(FIELDS)
    window("offline", 640, False)
    teardown()
    return out


def test_append_cost_in_flash_reads():
    if os.getenv("JOURNAL_BIG") != "1":
        mptest.skip("set JOURNAL_BIG=1 to measure reads per append with a 100-segment backlog")
    for readsize in (32, 256):
        for label, segs, mean, median, p99, top in reads_per_append(readsize):
            mptest.log(
                "readsize %d, %s (%d segments): reads per append mean %d, median %d, p99 %d, "
                "max %d" % (readsize, label, segs, mean, median, p99, top)
            )
