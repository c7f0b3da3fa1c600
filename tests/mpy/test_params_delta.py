# mpy: heapsize=4m timeout=600
# Merged blacklist deltas (docs/blacklist.md "Deltas"): a delta larger than the overlay merged with
# the active list into a new list (file mode: a littlefs file; slot mode: the free raw slot),
# verified against the digest the signed delta carries, activated atomically; an overlay in force
# is merged too; every refusal keeps the active set; power cuts at seeded random flash operations
# of the install leave the old or the new set, and installing again after the cut activates.
# The million-card case is test_params_million_delta.py.
import gc
import os

import blmerge
import bundle
import cardlists as cl
import log
import mptest
import params
import ramdisk
import vfs

log.set_level(log.INFO, echo=False)

KEY = b"device-0042-secret"
MP = "/pd"
CFG = {
    "settings": {"upload_interval_s": 120},
    "whitelist": {"local_issuers": ["05212482"], "local_city": "2482", "issuers": []},
    "fares": {"routes": {"101": {"mode": "flat", "fare": 200}}, "card_types": {"1": {}}},
}
_FF = b"\xff" * 4096


class Rng:
    def __init__(self, seed):
        self.x = seed

    def below(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return self.x % n


def cards(n, seed):
    r = Rng(seed)
    out = set()
    while len(out) < n:
        out.add(3104 * 10**15 + r.below(10**9) * 10**6 + r.below(10**6))
    return sorted(out)


BASE = cards(2500, 1)
REMOVES = BASE[::8]  # 313
ADDS = [c for c in cards(900, 2) if c not in set(BASE)]
RESULT = sorted((set(BASE) - set(REMOVES)) | set(ADDS))
_cache = {}


def full(version, cs=None):
    key = ("full", version)
    if key not in _cache:
        _cache[key] = bundle.build(KEY, version, 0, CFG, cl.blacklist_bytes(cs or BASE))
    return _cache[key]


def merged(version, base, adds=ADDS, removes=REMOVES, result=None, start=None):
    start = set(start if start is not None else BASE)
    if result is None:
        result = blmerge.result_digest((start - set(removes)) | set(adds))
    return bundle.build(KEY, version, 0, None, None, (base, adds, removes, result))


def fresh(slots=False):
    try:
        vfs.umount(MP)
    except OSError:
        pass
    if "dev" not in _cache:
        _cache["dev"] = ramdisk.RAMBlockDev(4096, 48)
        _cache["slots"] = [SlotDev(), SlotDev()]
    dev = _cache["dev"]
    dev.restore_power()
    for d in [dev] + _cache["slots"]:
        mv = memoryview(d.data)
        for b in range(d.num_blocks):
            mv[b * 4096 : (b + 1) * 4096] = _FF
        d.power = dev
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), MP)
    return dev, (_cache["slots"] if slots else None)


class SlotDev(ramdisk.RAMBlockDev):
    """A raw partition powered with the file system's device: one cut stops both."""

    def __init__(self):
        super().__init__(4096, 8)
        self.power = None

    def _op(self):
        if self.power is self:
            return super()._op()
        self.tear = self.power.tear
        return self.power._op()


def check(p, version, members, absent):
    mptest.eq(p.version, version)
    b = p.blacklist
    for c in members:
        if not b.contains(c):
            return False
    for c in absent:
        if b.contains(c):
            return False
    return True


def sample(xs, n=40):
    step = max(1, len(xs) // n)
    return xs[::step]


NEW_IN = sample(ADDS) + sample([c for c in BASE if c not in set(REMOVES)])
NEW_OUT = sample(REMOVES)


def test_merged_delta_in_file_mode_activates_and_survives_a_reboot():
    dev, _ = fresh()
    p = params.Params(MP + "/params", KEY)
    mptest.eq(p.install_bytes(full(3), 0), (True, "activated"))
    mptest.true(len(ADDS) + len(REMOVES) > cl.OVERLAY_MAX, "bigger than an overlay")
    mptest.eq(p.install_bytes(merged(4, 3), 0), (True, "activated"))
    mptest.true(check(p, 4, NEW_IN, NEW_OUT))
    mptest.eq(p.blacklist.count, len(RESULT))
    mptest.eq(sorted(os.listdir(MP + "/params")), ["b3.bnd", "floor", "l4.bl", "state"])
    p.close()
    ramdisk.remount(dev, MP)
    q = params.Params(MP + "/params", KEY)
    mptest.true(q.load(0))
    mptest.true(check(q, 4, NEW_IN, NEW_OUT))
    # the merged list is byte for byte what the host builder makes of the result
    with open(MP + "/params/l4.bl", "rb") as f:
        mptest.true(f.read() == cl.blacklist_bytes(RESULT), "same bytes as build_blacklist")
    q.close()


def test_overlay_in_force_is_merged_too():
    fresh()
    p = params.Params(MP + "/params", KEY)
    p.install_bytes(full(3), 0)
    extra = [2482000000000000017]
    gone = [BASE[1]]
    small = bundle.build(KEY, 4, 0, None, None, (3, extra, gone))
    mptest.eq(p.install_bytes(small, 0), (True, "activated"))
    start = (set(BASE) - set(gone)) | set(extra)
    removes = [c for c in REMOVES if c not in gone]
    mptest.eq(p.install_bytes(merged(5, 4, removes=removes, start=start), 0), (True, "activated"))
    mptest.true(check(p, 5, [c for c in NEW_IN if c not in gone] + extra, NEW_OUT + gone))
    mptest.eq(p.state["active"]["ov"], None, "the overlay is in the list now")
    p.close()


def test_refused_deltas_keep_the_active_set():
    fresh()
    p = params.Params(MP + "/params", KEY)
    p.install_bytes(full(3), 0)
    tampered = bytearray(merged(4, 3))
    for bad, why in (
        (merged(4, 3, result=(len(RESULT), b"\x00" * 32)), "digest"),
        (merged(4, 3, result=(len(RESULT) + 1, b"\x00" * 32)), "delta says"),
        (merged(4, 2), "applies on"),
        (merged(4, 3, removes=REMOVES + [1234567890123456789]), "does not hold"),
        (merged(4, 3, adds=ADDS + [BASE[3]]), "holds already"),
        (bundle.build(KEY, 4, 0, None, None, (3, ADDS, REMOVES)), "merge digest"),
        (bytes(tampered[:-40]) + b"\x01" + bytes(tampered[-39:]), "MAC"),
    ):
        ok, reason = p.install_bytes(bad, 0)
        mptest.false(ok, why)
        mptest.true(why in reason, "%r not in %r" % (why, reason))
        mptest.true(check(p, 3, sample(BASE), sample(ADDS)), why)
        mptest.eq(sorted(os.listdir(MP + "/params")), ["b3.bnd", "floor", "state"], why)
    p.close()


def test_slot_mode_power_cuts_at_seeded_points():
    seed = 20261205
    r = Rng(seed)
    # how many flash operations a whole install takes
    dev, slots = fresh(True)
    p = params.Params(MP + "/params", KEY, slots=slots)
    p.install_bytes(full(3), 0)
    ops0 = dev.ops
    mptest.eq(p.install_bytes(merged(4, 3), 0), (True, "activated"))
    total = dev.ops - ops0
    mptest.eq(p.state["active"]["bl"]["slot"], 1, "merged into the free slot")
    p.close()
    points = sorted(set(r.below(total) for _ in range(40)))
    outcomes = {"old": 0, "new": 0}
    for n in points:
        tear = bool(r.below(2))
        dev, slots = fresh(True)
        p = params.Params(MP + "/params", KEY, slots=slots)
        p.install_bytes(full(3), 0)
        dev.arm(n, tear=tear)
        try:
            p.install_bytes(merged(4, 3), 0)
        except OSError:
            pass
        mptest.true(dev.dead, "cut at op %d happened" % n)
        p.close()
        p = None
        gc.collect()
        ramdisk.remount(dev, MP)
        q = params.Params(MP + "/params", KEY, slots=slots)
        mptest.true(q.load(0), "cut at op %d: no parameters" % n)
        if q.version == 4:
            mptest.true(check(q, 4, NEW_IN, NEW_OUT), "cut at op %d: new set wrong" % n)
            outcomes["new"] += 1
        else:
            mptest.true(check(q, 3, sample(BASE), sample(ADDS)), "cut at op %d: old set" % n)
            outcomes["old"] += 1
            # installing again (the download resumes with the stored bundle) activates
            mptest.eq(q.install_bytes(merged(4, 3), 0), (True, "activated"), "op %d" % n)
            mptest.true(check(q, 4, NEW_IN, NEW_OUT), "after the cut at op %d" % n)
        q.close()
    mptest.true(outcomes["old"] > 0, repr(outcomes))
    mptest.log(
        "merged delta (%d adds, %d removes on %d cards): %d flash operations, cut at %d seeded "
        "points (seed %d): %r"
        % (len(ADDS), len(REMOVES), len(BASE), total, len(points), seed, outcomes)
    )


def teardown():
    try:
        vfs.umount(MP)
    except OSError:
        pass
