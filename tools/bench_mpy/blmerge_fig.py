# A merged blacklist delta of 100,000 cards (60,000 added, 40,000 removed) on the million-card
# list (firmware/blmerge.py, docs/blacklist.md "Deltas"), installed as a board does it: the list
# first (params.receiver() into raw slot A, host files standing in for the partitions), then the
# delta streamed onto littlefs and merged with slot A into slot B. Timed around blmerge.apply
# (the merge alone: its three passes, split at the first and last block write of pass 2) and
# around the whole install (receiving and checking the delta's MAC too). With argv[3] = 1 the
# live heap is sampled after a collection at every block read and write of the slots instead
# (the timing of that run means nothing). Then oracle lookups on the new list. Callgrind marks:
# gc.isenabled() just before the merge, micropython.opt_level() just after it (nothing else in
# the firmware calls them), so --zero-before/--dump-before count the merge alone.
# argv: list bundle, delta bundle, delta oracle (tools/params_compile.py build_delta_fixture),
# work directory, sample heap (0/1)
import gc
import os
import sys
import time

import benchlib
import blmerge
import log
import micropython
import params
import vfs
from flashdev import FileBlockDev

LIST, DELTA, ORACLE = sys.argv[1:4]
WORK = sys.argv[4] + "/"
SAMPLE = benchlib.arg(5, 0)
KEY = b"fixture-device-secret"
MP = "/bm"
log.set_level(log.WARNING, echo=False)

st = {"reads": 0, "writes": 0, "peak": 0, "idle": 0, "first_w": None, "last_w": None}


def _sample():
    gc.collect()
    used = gc.mem_alloc() - st["idle"]
    if used > st["peak"]:
        st["peak"] = used


class FileSlot:
    """A raw partition in a host file (esp32.Partition's block interface)."""

    def __init__(self, path, blocks):
        self.blocks = blocks
        self.f = open(path, "w+b")
        self.on = False

    def readblocks(self, n, buf, off=0):
        if self.on:
            st["reads"] += 1
            if SAMPLE:
                _sample()
        self.f.seek(n * 4096 + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=0):
        if self.on:
            st["writes"] += 1
            now = time.ticks_ms()
            if st["first_w"] is None:
                st["first_w"] = now
            st["last_w"] = now
            if SAMPLE:
                _sample()
        self.f.seek(n * 4096 + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        return self.blocks if op == 4 else 4096 if op == 5 else 0


def feed(p, path):
    total = os.stat(path)[6]
    chunk = bytearray(1024)
    rx = p.receiver(total)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(chunk)
            if not n:
                break
            rx.write(memoryview(chunk)[:n])
    chunk = None
    return rx.finish(0)


_apply = blmerge.apply
timing = {}


def timed_apply(*a):
    gc.collect()
    st["idle_merge"] = gc.mem_alloc()
    t0 = time.ticks_ms()
    c0 = benchlib.cpu_us()
    gc.isenabled()  # callgrind: zero here
    out = _apply(*a)
    micropython.opt_level()  # callgrind: dump here
    timing["merge_ms"] = time.ticks_diff(time.ticks_ms(), t0)
    c1 = benchlib.cpu_us()
    timing["merge_cpu_ms"] = None if c0 is None else (c1 - c0) // 1000
    t1 = time.ticks_ms()
    timing["pass1_ms"] = time.ticks_diff(st["first_w"], t0)
    timing["pass2_ms"] = time.ticks_diff(st["last_w"], st["first_w"])
    timing["pass3_ms"] = time.ticks_diff(t1, st["last_w"])
    return out


blmerge.apply = timed_apply

dev = FileBlockDev(WORK + "fs.img", 4096, 320, fresh=True)
vfs.VfsLfs2.mkfs(dev)
vfs.mount(vfs.VfsLfs2(dev), MP)
slots = [FileSlot(WORK + "slot_a.bin", 1472), FileSlot(WORK + "slot_b.bin", 1472)]
p = params.Params(MP + "/params", KEY, slots=slots)
got = feed(p, LIST)
assert got == (True, "activated"), got
p.close()
p = None
gc.collect()
p = params.Params(MP + "/params", KEY, slots=slots)  # as after a reboot
assert p.load(0)
gc.collect()
st["idle"] = gc.mem_alloc()
for s in slots:
    s.on = True
t0 = time.ticks_ms()
got = feed(p, DELTA)
install_ms = time.ticks_diff(time.ticks_ms(), t0)
for s in slots:
    s.on = False
wrong = 0
checked = 0
if got == (True, "activated"):
    with open(ORACLE) as o:
        for line in o:
            card, want = line.split(",")
            checked += 1
            if p.blacklist.contains(int(card)) != (want.strip() == "1"):
                wrong += 1
benchlib.emit(
    ok=got == (True, "activated"),
    why=got[1],
    cards=p.blacklist.count if p.blacklist else 0,
    version=p.version,
    slot=p.state["active"]["bl"].get("slot"),
    install_ms=install_ms,
    block_writes=st["writes"],
    block_reads=st["reads"],
    heap_peak=st["peak"] if SAMPLE else None,
    heap_idle=st["idle"],
    heap_at_merge=st.get("idle_merge", 0) - st["idle"],
    lookups=checked,
    lookups_wrong=wrong,
    **timing,
)
p.close()
vfs.umount(MP)
for s in slots:
    s.f.close()
dev.f.close()
for name in ("fs.img", "slot_a.bin", "slot_b.bin"):
    try:
        os.remove(WORK + name)
    except OSError:
        pass
