# mpy: heapsize=96k runtime=micropython32 timeout=3000 server=tools.params_delta_fixture
# A merged delta of 100,000 cards (60,000 added, 40,000 removed; built on the host by
# tools/params_delta_fixture.py) on the million-card list, installed as a board does: the delta
# streamed through params.receiver() onto littlefs (a host-file device: no heap), then merged with
# the active slot into the free one without holding either list (firmware/blmerge.py), verified
# against the signed digest, activated. Power is cut at seeded random block writes of the merge;
# each wake has the old list, and installing again completes. Then lookups against the host's
# oracle. Run on micropython32 (the firmware frozen, 32-bit objects, as on a board) at a 96 KB
# heap: this file's own code, its lists and two interrupted merges fragment the heap (at 80 KB no
# 4 KB hole is left for the merge's buffers); the bench's lean harness merges the same list at
# 48-64 KB (`make bench STAGE=params`: blacklist_merge_heap_bytes, the live heap).
import gc
import os
import time

import blmerge  # noqa: F401
import bundle  # noqa: F401 - compiled before the heap is measured
import log
import mptest
import params
import vfs
from flashdev import FileBlockDev

log.set_level(log.INFO, echo=False)

KEY = b"fixture-device-secret"
DIR = mptest.repo_root() + "/build/params-fixture/"
MP = "/pq"
SEED = 20261205


class Cut(OSError):
    pass


class FileSlot:
    """A raw partition in a host file; cut: raise at the n-th block write from now (power)."""

    def __init__(self, path, blocks):
        self.blocks = blocks
        self.f = open(path, "w+b")
        self.writes = 0
        self.cut_at = None

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * 4096 + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf):
        if self.cut_at is not None and self.writes >= self.cut_at:
            raise Cut(5)
        self.writes += 1
        self.f.seek(n * 4096)
        self.f.write(buf)

    def ioctl(self, op, arg):
        return self.blocks if op == 4 else 4096 if op == 5 else 0


class Rng:
    def __init__(self, seed):
        self.x = seed

    def below(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return self.x % n


def mount(dev):
    try:
        vfs.umount(MP)
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(dev), MP)


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
    return rx.finish(0)


def oracle():
    """(card, listed after the merge) pairs, read as needed (the heap is small)."""
    with open(DIR + "million-delta.oracle") as o:
        for line in o:
            card, want = line.split(",")
            yield int(card), want.strip() == "1"


def teardown():
    try:
        vfs.umount(MP)
    except OSError:
        pass


def test_delta_of_100k_cards_merges_into_the_free_slot_with_power_cuts():
    dev = FileBlockDev(DIR + "delta-fs.img", 4096, 320, fresh=True)
    vfs.VfsLfs2.mkfs(dev)
    mount(dev)
    slots = [FileSlot(DIR + "dslot_a.bin", 1472), FileSlot(DIR + "dslot_b.bin", 1472)]
    p = params.Params(MP + "/params", KEY, slots=slots)
    mptest.eq(feed(p, DIR + "million.bnd"), (True, "activated"))
    mptest.eq((p.version, p.blacklist.count), (7, 1000000))
    added = []
    removed = []
    for card, want in oracle():  # the oracle also has cards the delta leaves listed
        if want and not p.blacklist.contains(card):
            added.append(card)
        elif not want:
            mptest.true(p.blacklist.contains(card), "a removed card is listed before")
            removed.append(card)
        if len(added) >= 3 and len(removed) >= 3:
            break
    added = added[:3]
    removed = removed[:3]
    p.close()
    rng = Rng(SEED)
    cuts = [rng.below(1400) for _ in range(2)]
    for at in cuts:
        mount(dev)
        q = params.Params(MP + "/params", KEY, slots=slots)
        mptest.true(q.load(0))
        slots[1].writes = 0
        slots[1].cut_at = at
        try:
            ok, why = feed(q, DIR + "million-delta.bnd")
            # the cut reaches params as an OSError: refused, and nothing more is written
            mptest.true(not ok and "merge failed" in why, "cut at block write %d: %s" % (at, why))
        except Cut:
            pass
        mptest.eq(slots[1].writes, at, "the cut came at block write %d" % at)
        slots[1].cut_at = None
        q.close()
        q = None
        gc.collect()
        mount(dev)  # the wake
        q = params.Params(MP + "/params", KEY, slots=slots)
        mptest.true(q.load(0))
        mptest.eq(q.version, 7, "cut at block write %d: the old list stays" % at)
        for c in removed:
            mptest.true(q.blacklist.contains(c), "cut at %d: old list intact" % at)
        for c in added:
            mptest.false(q.blacklist.contains(c), "cut at %d: nothing of the new" % at)
        q.close()
    mount(dev)
    q = params.Params(MP + "/params", KEY, slots=slots)
    mptest.true(q.load(0))
    gc.collect()
    slots[1].writes = 0
    t0 = time.ticks_ms()
    ok = feed(q, DIR + "million-delta.bnd")
    ms = time.ticks_diff(time.ticks_ms(), t0)
    mptest.eq(ok, (True, "activated"))
    mptest.eq((q.version, q.blacklist.count), (8, 1020000))
    mptest.eq(q.state["active"]["bl"]["slot"], 1)
    writes = slots[1].writes
    lfs = os.stat(MP + "/params/b8.bnd")[6] if "b8.bnd" in os.listdir(MP + "/params") else 0
    checked = 0
    for card, want in oracle():
        mptest.eq(q.blacklist.contains(card), want, card)
        checked += 1
    q.close()
    mount(dev)
    r = params.Params(MP + "/params", KEY, slots=slots)
    mptest.true(r.load(0))
    mptest.eq((r.version, r.blacklist.count), (8, 1020000))
    r.close()
    mptest.log(
        "100,000-card delta on 1,000,000 cards: cut at block writes %r (seed %d), each wake "
        "kept list 7; merge + verify %d ms (micropython32, wall), %d slot block writes, "
        "%d oracle lookups right, delta file kept %d bytes"
        % (cuts, SEED, ms, writes, checked, lfs)
    )
    for s in slots:
        s.f.close()
    dev.close()
    for name in ("delta-fs.img", "dslot_a.bin", "dslot_b.bin"):
        try:
            os.remove(DIR + name)
        except OSError:
            pass
