# mpy: heapsize=512k timeout=120 server=tools.params_compile
# The million-card bundle (built on the host by the compiler's fixture) installed the way a board
# does it: streamed through params.receiver() in 1 KB chunks, the blacklist into a raw slot
# (a file-backed block device here), the rest onto littlefs; then lookups counted per flash block.
# 512k heap: the RAM file system (96 KB) and compiling the modules from source need it; the
# install itself keeps a few KB of heap (measured below).
import gc
import os
import time

import log
import mptest
import params
import ramdisk
import vfs

log.set_level(log.INFO, echo=False)

KEY = b"fixture-device-secret"
DIR = mptest.repo_root() + "/build/params-fixture/"
MP = "/pm"


class FileSlot:
    """A raw partition backed by a host file, counting the blocks it is asked to read."""

    def __init__(self, path, blocks):
        self.blocks = blocks
        try:
            self.f = open(path, "r+b")
        except OSError:
            self.f = open(path, "w+b")
        self.touched = set()
        self.writes = 0

    def readblocks(self, n, buf, off=0):
        self.touched.add(n)
        self.f.seek(n * 4096 + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf):
        self.writes += 1
        self.f.seek(n * 4096)
        self.f.write(buf)

    def ioctl(self, op, arg):
        return self.blocks if op == 4 else 4096 if op == 5 else 0


def teardown():
    try:
        vfs.umount(MP)
    except OSError:
        pass


def test_million_bundle_streams_into_a_slot_and_looks_up_in_two_blocks():
    dev, _ = ramdisk.fresh_fs(num_blocks=24, mount_point=MP)
    slots = [FileSlot(DIR + "slot_a.bin", 1472), FileSlot(DIR + "slot_b.bin", 1472)]
    events = []
    p = params.Params(MP + "/params", KEY, lambda n, i: events.append(i["version"]), slots=slots)
    path = DIR + "million.bnd"
    total = os.stat(path)[6]
    chunk = bytearray(1024)
    gc.collect()
    free0 = gc.mem_free()
    t0 = time.ticks_ms()
    rx = p.receiver(total)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(chunk)
            if not n:
                break
            rx.write(memoryview(chunk)[:n])
    ok = rx.finish(0)
    ms = time.ticks_diff(time.ticks_ms(), t0)
    mptest.eq(ok, (True, "activated"))
    mptest.eq(events, [7])
    mptest.eq(slots[0].writes, 1415, "the list went to slot A block by block")
    lfs_bytes = os.stat(MP + "/params/b7.bnd")[6]
    mptest.true(lfs_bytes < 8192, "littlefs holds %d bytes, not the list" % lfs_bytes)
    gc.collect()
    kept = free0 - gc.mem_free()
    # lookups against the host oracle, counting flash blocks on both devices
    worst = 0
    n = 0
    with open(DIR + "million.oracle") as o:
        for line in o:
            card, want = line.split(",")
            slots[0].touched = set()
            reads_before = dev.reads
            got = p.blacklist.contains(int(card))
            mptest.eq(got, want.strip() == "1", card)
            worst = max(worst, len(slots[0].touched) + (dev.reads - reads_before))
            n += 1
            if n == 2000:
                break
    mptest.eq(worst, 2, "flash blocks per lookup")
    mptest.log(
        "million-card install through the receiver: %d ms (unix port), littlefs file %d bytes, "
        "heap kept %d bytes; %d lookups at most %d flash blocks each"
        % (ms, lfs_bytes, kept, n, worst)
    )
    p.close()
    # and it comes back after a reboot
    ramdisk.remount(dev, MP)
    q = params.Params(MP + "/params", KEY, slots=slots)
    mptest.true(q.load(0))
    mptest.eq((q.version, q.blacklist.count), (7, 1000000))
    q.close()
    for s in slots:
        s.f.close()
