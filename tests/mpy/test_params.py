# mpy: heapsize=2m timeout=120
# Parameter activation on littlefs (RAM block device with power cuts): first install, refusals
# that leave the active set alone, blacklist deltas, pending activation, and a power cut at
# every program/erase of an activation: the validator wakes with the old or the new set.
import gc
import os

import bundle
import cardlists as cl
import log
import mptest
import params
import ramdisk
import vfs

log.set_level(log.DEBUG, echo=False)

KEY = b"device-0042-secret"
MP = "/pp"
LOST = "3104991585000011383"
STOLEN = "3104895199900000003"
NEW = "2482000000000000017"


def cfg(flat_fare=200, dup=60):
    return {
        "settings": {"dup_tap_s": dup, "upload_interval_s": 120},
        "whitelist": {"local_issuers": ["05212482"], "local_city": "2482", "issuers": []},
        "fares": {
            "routes": {"101": {"mode": "flat", "fare": flat_fare}},
            "card_types": {"1": {}},
        },
    }


_lists = {}


def blist(*cards):
    if cards not in _lists:
        _lists[cards] = cl.blacklist_bytes(cards)
    return _lists[cards]


def full(version, fare=200, cards=(LOST,), activation=0, key=KEY):
    return bundle.build(key, version, activation, cfg(fare), blist(*cards))


def delta(version, base, adds=(), removes=(), config=None):
    adds = [cl.card_key(c) for c in adds]
    removes = [cl.card_key(c) for c in removes]
    return bundle.build(KEY, version, 0, config, None, (base, adds, removes))


class Events:
    def __init__(self):
        self.seen = []

    def __call__(self, name, info):
        self.seen.append((name, info["version"], info["bl_version"]))


_dev = []
_FF = b"\xff" * 4096


class FsDev(ramdisk.RAMBlockDev):
    """The littlefs device, remembering which blocks were read (littlefs binds readblocks at
    mount, so the counting has to be built in)."""

    touched = None

    def readblocks(self, num, buf, offset=0):
        if self.touched is not None:
            self.touched.add(num)
        super().readblocks(num, buf, offset)


def fresh():
    """A newly formatted file system on one reused RAM device (big allocations fragment)."""
    try:
        vfs.umount(MP)
    except OSError:
        pass
    if not _dev:
        _dev.append(FsDev(4096, 64))
    dev = _dev[0]
    dev.restore_power()
    mv = memoryview(dev.data)
    for b in range(dev.num_blocks):
        mv[b * 4096 : (b + 1) * 4096] = _FF
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), MP)
    return dev


def open_params(ev=None):
    p = params.Params(MP + "/params", KEY, ev)
    p.load(now=0)
    return p


def fare_of(p):
    return p.fares.compute({"card_no": "1", "card_type": 1, "records": []}, 101, 0, 10**8).debit


def teardown():
    try:
        vfs.umount(MP)
    except OSError:
        pass


def test_first_install_activates_and_survives_a_reboot():
    dev = fresh()
    ev = Events()
    p = params.Params(MP + "/params", KEY, ev)
    mptest.false(p.load(now=0), "nothing installed yet")
    mptest.eq(p.install_bytes(full(3), now=100), (True, "activated"))
    mptest.eq(ev.seen, [(params.PARAM_ACTIVATION, 3, 3)])
    mptest.eq(p.version, 3)
    mptest.eq(p.settings["upload_interval_s"], 120)
    mptest.true(p.blacklist.contains(LOST))
    mptest.false(p.blacklist.contains(STOLEN))
    p.close()
    ramdisk.remount(dev, MP)
    ev2 = Events()
    p = open_params(ev2)
    mptest.eq((p.version, fare_of(p)), (3, 200))
    mptest.eq(ev2.seen, [], "an announced activation is not journaled twice")
    mptest.eq(sorted(os.listdir(MP + "/params")), ["b3.bnd", "floor", "state"])
    p.close()


def _refused(p, data, fragment):
    ok, reason = p.install_bytes(data, now=100)
    mptest.false(ok, "accepted: " + fragment)
    mptest.true(fragment in reason, "%r not in %r" % (fragment, reason))
    mptest.true(log.find("bundle refused"), "refusal logged")
    mptest.eq(p.version, 3)
    mptest.true(p.blacklist.contains(LOST))
    mptest.eq(fare_of(p), 200)


def test_bad_bundles_are_refused_and_the_active_set_stays():
    fresh()
    ev = Events()
    p = params.Params(MP + "/params", KEY, ev)
    p.install_bytes(full(3), now=100)
    log.clear()
    _refused(p, full(3, fare=999), "not newer")
    _refused(p, full(2, fare=999), "not newer")
    _refused(p, full(4, fare=999, key=b"other-device"), "MAC")
    data = full(4, fare=999)
    _refused(p, data[:-1], "truncated")
    _refused(p, data[: len(data) // 2], "truncated")
    bad = bytearray(data)
    bad[200] ^= 0x10
    _refused(p, bytes(bad), "MAC")
    broken = cfg(200)
    broken["fares"]["routes"]["101"]["fare"] = "two yuan"
    _refused(p, bundle.build(KEY, 4, 0, broken, blist(LOST)), "fare")
    broken = cfg(200)
    broken["settings"]["upload_interval_s"] = 1
    _refused(p, bundle.build(KEY, 4, 0, broken, blist(LOST)), "upload_interval_s")
    broken = cfg(200)
    broken["settings"]["colour"] = 1
    _refused(p, bundle.build(KEY, 4, 0, broken, blist(LOST)), "unknown setting")
    broken = cfg(200)
    del broken["whitelist"]
    _refused(p, bundle.build(KEY, 4, 0, broken, blist(LOST)), "whitelist")
    _refused(p, b"", "truncated")
    mptest.eq(len(ev.seen), 1)
    mptest.eq(
        sorted(os.listdir(MP + "/params")), ["b3.bnd", "floor", "state"], "refused files removed"
    )
    p.close()


def test_first_bundle_must_be_complete():
    fresh()
    p = params.Params(MP + "/params", KEY)
    ok, reason = p.install_bytes(bundle.build(KEY, 1, 0, None, blist(LOST)), now=0)
    mptest.false(ok)
    mptest.true("config" in reason)
    ok, reason = p.install_bytes(bundle.build(KEY, 1, 0, cfg(), None), now=0)
    mptest.false(ok)
    mptest.true("blacklist" in reason)
    p.close()


def test_blacklist_deltas_chain_and_full_replacement_clears_them():
    dev = fresh()
    ev = Events()
    p = params.Params(MP + "/params", KEY, ev)
    p.install_bytes(full(3, cards=(LOST, STOLEN)), now=0)
    mptest.eq(p.install_bytes(delta(4, 3, adds=[NEW], removes=[LOST]), now=0), (True, "activated"))
    mptest.eq((p.version, p.blacklist.contains(NEW), p.blacklist.contains(LOST)), (4, True, False))
    mptest.true(p.blacklist.contains(STOLEN))
    mptest.eq(fare_of(p), 200, "a delta-only bundle keeps the fares")
    ok, reason = p.install_bytes(delta(5, 3, adds=[LOST]), now=0)
    mptest.false(ok)
    mptest.true("applies on blacklist 3" in reason, reason)
    mptest.eq(p.install_bytes(delta(5, 4, removes=[NEW], config=cfg(250)), now=0)[0], True)
    mptest.eq((p.blacklist.contains(NEW), fare_of(p)), (False, 250))
    p.close()
    ramdisk.remount(dev, MP)
    p = open_params()
    mptest.eq(
        (p.version, p.blacklist.contains(NEW), p.blacklist.contains(LOST)), (5, False, False)
    )
    mptest.eq(p.install_bytes(full(6, cards=(NEW,)), now=0)[0], True)
    mptest.eq((p.blacklist.contains(NEW), p.blacklist.contains(STOLEN)), (True, False))
    mptest.eq(
        sorted(os.listdir(MP + "/params")), ["b6.bnd", "floor", "state"], "old lists removed"
    )
    mptest.eq([e[1] for e in ev.seen], [3, 4, 5])
    p.close()


def test_activation_short_of_heap_lets_the_old_set_go_and_opens_the_new():
    fresh()
    ev = Events()
    p = params.Params(MP + "/params", KEY, ev)
    p.install_bytes(full(3), now=0)
    real_open = p._open
    calls = []

    def short_of_heap(entry):
        calls.append(p.fares is not None)
        if len(calls) == 1:
            raise MemoryError("memory allocation failed")  # the new set beside the old
        real_open(entry)

    p._open = short_of_heap
    mptest.eq(p.install_bytes(delta(4, 3, adds=[NEW]), now=0), (True, "activated"))
    mptest.eq(calls, [True, False], "the second try runs without the old set in RAM")
    mptest.eq((p.version, p.blacklist.contains(NEW), fare_of(p)), (4, True, 200))
    mptest.eq([e[1] for e in ev.seen], [3, 4])

    def never(entry):
        raise MemoryError("memory allocation failed")

    p._open = never
    log.clear()
    mptest.eq(p.install_bytes(delta(5, 4, adds=[STOLEN]), now=0), (True, "activated"))
    mptest.true(log.find("committed but not opened", log.ERROR), "said, not raised")
    mptest.eq((p.fares, p.blacklist), (None, None), "no half-old set left in use")
    p._open = real_open
    p.close()
    p = open_params()
    mptest.eq((p.version, p.blacklist.contains(STOLEN)), (5, True), "the next boot opens it")
    p.close()


def test_pending_bundle_activates_at_its_time():
    dev = fresh()
    ev = Events()
    p = params.Params(MP + "/params", KEY, ev)
    p.install_bytes(full(3), now=0)
    mptest.eq(p.install_bytes(full(4, fare=300, activation=5000), now=100), (True, "pending"))
    mptest.eq((p.version, fare_of(p)), (3, 200))
    mptest.false(p.tick(4999))
    ok, reason = p.install_bytes(full(4, fare=333), now=200)
    mptest.true(not ok and "not newer" in reason, "version must beat the pending one too")
    p.close()
    ramdisk.remount(dev, MP)
    p = params.Params(MP + "/params", KEY, ev)
    p.load(now=4000)
    mptest.eq(p.version, 3, "still pending after a reboot")
    mptest.true(p.tick(5000))
    mptest.eq((p.version, fare_of(p)), (4, 300))
    mptest.eq([e[1] for e in ev.seen], [3, 4])
    p.close()


def _cut_sweep(prepare, new_bundle, check_old, check_new, tear):
    """Cut power at every program/erase of an install; each wake must see old or new."""
    outcomes = {"old": 0, "new": 0}
    n = 0
    while True:
        dev = fresh()
        ev = Events()
        p = params.Params(MP + "/params", KEY, ev)
        prepare(p)
        dev.arm(n, tear=tear)
        try:
            p.install_bytes(new_bundle, now=0)
        except OSError:
            pass
        finished = not dev.dead
        p.close()
        # A write cut mid-way leaves its file object half-closed; finalise it while the power
        # is still off, or its late flush would write to the next mount (no device does that).
        p = None
        gc.collect()
        ramdisk.remount(dev, MP)
        ev2 = Events()
        q = params.Params(MP + "/params", KEY, ev2)
        mptest.true(q.load(now=0), "cut at op %d: no parameters after wake" % n)
        if check_new(q):
            outcomes["new"] += 1
            mptest.eq(len(ev.seen) + len(ev2.seen) >= 2, True, "activation journaled (op %d)" % n)
        else:
            mptest.true(check_old(q), "cut at op %d: neither old nor new" % n)
            outcomes["old"] += 1
        leftovers = [x for x in os.listdir(MP + "/params") if x.endswith(".tmp")]
        mptest.eq(leftovers, [], "temporary files cleaned at load")
        q.close()
        if finished:
            break
        n += 1
    mptest.true(outcomes["old"] > 0 and outcomes["new"] > 0, repr(outcomes))
    return n, outcomes


def test_power_cut_at_every_step_of_a_full_replacement():
    def prepare(p):
        p.install_bytes(full(3, fare=200, cards=(LOST,)), now=0)

    def old(q):
        return (q.version, fare_of(q), q.blacklist.contains(LOST), q.blacklist.contains(NEW)) == (
            3, 200, True, False,
        )  # fmt: skip

    def new(q):
        return (q.version, fare_of(q), q.blacklist.contains(LOST), q.blacklist.contains(NEW)) == (
            4, 350, False, True,
        )  # fmt: skip

    for tear in (False, True):
        n, outcomes = _cut_sweep(prepare, full(4, fare=350, cards=(NEW,)), old, new, tear)
    mptest.log("full replacement: %d cut points, %r" % (n, outcomes))


def test_power_cut_at_every_step_of_a_delta():
    def prepare(p):
        p.install_bytes(full(3, cards=(LOST,)), now=0)
        p.install_bytes(delta(4, 3, adds=[STOLEN]), now=0)

    def old(q):
        return (q.version, q.blacklist.contains(STOLEN), q.blacklist.contains(NEW)) == (
            4, True, False,
        )  # fmt: skip

    def new(q):
        return (q.version, q.blacklist.contains(STOLEN), q.blacklist.contains(NEW)) == (
            5, False, True,
        )  # fmt: skip

    n, outcomes = _cut_sweep(prepare, delta(5, 4, adds=[NEW], removes=[STOLEN]), old, new, True)
    mptest.log("delta: %d cut points, %r" % (n, outcomes))


def test_damaged_state_file_means_no_parameters_not_a_crash():
    dev = fresh()
    p = params.Params(MP + "/params", KEY)
    p.install_bytes(full(3), now=0)
    p.close()
    with open(MP + "/params/state", "r+b") as f:
        f.seek(3)
        f.write(b"#")
    ramdisk.remount(dev, MP)
    log.clear()
    q = params.Params(MP + "/params", KEY)
    mptest.false(q.load(now=0))
    mptest.true(log.find("state file damaged", log.ERROR))
    mptest.true("b3.bnd" in os.listdir(MP + "/params"), "files kept after damage")
    q.close()
    # well-formed but wrong: a list, an entry missing its fields
    import crc

    for body in (b"[]", b'{"active": {"version": 9}}', b'{"active": {"cfg": 5}}'):
        with open(MP + "/params/state", "wb") as f:
            f.write(body + b"\n" + str(crc.crc32(body)).encode())
        log.clear()
        q = params.Params(MP + "/params", KEY)
        mptest.false(q.load(now=0), body)
        mptest.true(log.find("", log.ERROR), "logged: %r" % body)
        q.close()


# ---- slot mode: the full blacklist in raw A/B partitions ------------------------------------


class SlotDev(ramdisk.RAMBlockDev):
    """A raw flash partition powered with the file system's device: one cut stops both."""

    def __init__(self, blocks):
        super().__init__(4096, blocks)
        self.power = None
        self.touched = set()

    def _op(self):
        self.tear = self.power.tear
        return self.power._op()

    def readblocks(self, num, buf, offset=0):
        self.touched.add(num)
        super().readblocks(num, buf, offset)


_slots = []


def fresh_slots(blocks=8):
    dev = fresh()
    if not _slots:
        _slots.extend([SlotDev(8), SlotDev(8)])
    for s in _slots:
        s.power = dev
        s.num_blocks = blocks
        mv = memoryview(s.data)
        for b in range(8):
            mv[b * 4096 : (b + 1) * 4096] = _FF
    return dev, _slots


class CountingDev:
    """Collects the littlefs device's distinct blocks read inside a with-block."""

    def __init__(self, dev):
        self.dev = dev
        self.touched = set()

    def __enter__(self):
        self.dev.touched = self.touched
        return self

    def __exit__(self, *a):
        self.dev.touched = None


def test_slot_mode_lookups_read_two_flash_blocks():
    dev, slots = fresh_slots()
    cards = [LOST, STOLEN] + ["%019d" % (i * 7919) for i in range(300)]
    p = params.Params(MP + "/params", KEY, None, slots=slots)
    mptest.eq(
        p.install_bytes(bundle.build(KEY, 3, 0, cfg(), cl.blacklist_bytes(cards)), 0)[0], True
    )
    mptest.eq(sorted(os.listdir(MP + "/params")), ["b3.bnd", "floor", "state"])
    # header, config and alignment padding up to the list's first block, then the MAC
    mptest.eq(os.stat(MP + "/params/b3.bnd")[6], 4096 + 32, "the list is not on littlefs")
    worst = 0
    for c in cards[:50] + [NEW, "0000000000000000001"]:
        for s in slots:
            s.touched = set()
        with CountingDev(dev) as fs:
            p.blacklist.contains(c)
        n = len(fs.touched) + len(slots[0].touched) + len(slots[1].touched)
        worst = max(worst, n)
    # (one when the list has a single data block: the index is not read for a one-entry search)
    mptest.true(1 <= worst <= 2, "%d flash blocks per lookup without a delta" % worst)
    # with a delta overlay on littlefs: one more block at most
    p.install_bytes(delta(4, 3, adds=[NEW], removes=[LOST]), 0)
    worst = 0
    for c in cards[:50] + [NEW]:
        for s in slots:
            s.touched = set()
        with CountingDev(dev) as fs:
            mptest.eq(p.blacklist.contains(c), c != LOST)
        worst = max(worst, len(fs.touched) + len(slots[0].touched) + len(slots[1].touched))
    mptest.true(worst <= 3, "%d blocks with an overlay" % worst)
    mptest.log("slot mode: at most 2 flash blocks per lookup, %d with a delta overlay" % worst)
    p.close()


def test_file_mode_lookups_cost_more_on_littlefs():
    # Why slots exist: a list read through littlefs also touches its metadata and skip-list.
    cards = [None] * 1500
    for i in range(1500):
        cards[i] = "%019d" % (i * 7919)
    data = bundle.build(KEY, 3, 0, cfg(), cl.blacklist_bytes(cards))
    dev = fresh()
    p = params.Params(MP + "/params", KEY)
    mptest.eq(p.install_bytes(data, 0)[0], True)
    worst = 0
    for c in cards[::30]:
        with CountingDev(dev) as fs:
            p.blacklist.contains(c)
        worst = max(worst, len(fs.touched))
    mptest.true(worst > 2)
    mptest.log("file mode (littlefs, 4-block list): up to %d flash blocks per lookup" % worst)
    p.close()


def test_slots_alternate_and_survive_reboots():
    dev, slots = fresh_slots()
    p = params.Params(MP + "/params", KEY, None, slots=slots)
    want = {}
    for v, fare, cards in ((3, 200, (LOST,)), (4, 250, (STOLEN,)), (5, 300, (NEW,)), (6, 350, ())):
        mptest.eq(p.install_bytes(full(v, fare=fare, cards=cards), 0), (True, "activated"))
        want[v] = cards
        mptest.eq(p.state["active"]["bl"]["slot"], (v - 3) % 2, "slots alternate")
        p.close()
        ramdisk.remount(dev, MP)
        p = params.Params(MP + "/params", KEY, None, slots=slots)
        mptest.true(p.load(0))
        mptest.eq((p.version, fare_of(p)), (v, fare))
        for c in (LOST, STOLEN, NEW):
            mptest.eq(p.blacklist.contains(c), c in cards, "v%d card %s" % (v, c))
    # a delta-only bundle keeps the slot and the config of the active set
    mptest.eq(p.install_bytes(delta(7, 6, adds=[LOST]), 0)[0], True)
    mptest.eq(
        (p.state["active"]["bl"]["slot"], fare_of(p), p.blacklist.contains(LOST)), (1, 350, True)
    )
    p.close()


def test_slot_mode_pending_superseded_and_oversize_refused():
    dev, slots = fresh_slots()
    ev = Events()
    p = params.Params(MP + "/params", KEY, ev, slots=slots)
    p.install_bytes(full(3), 0)
    mptest.eq(
        p.install_bytes(full(4, fare=300, activation=9999, cards=(NEW,)), 0), (True, "pending")
    )
    # a newer full list needs the free slot the pending one holds: the pending one goes
    mptest.eq(p.install_bytes(full(5, fare=400, cards=(STOLEN,)), 0), (True, "activated"))
    mptest.eq(p.state.get("pending"), None)
    mptest.false(p.tick(10000))
    mptest.eq((p.version, fare_of(p), p.blacklist.contains(STOLEN)), (5, 400, True))
    # a list larger than a slot is refused before anything is written
    for s in slots:
        s.num_blocks = 2
    big = bundle.build(KEY, 6, 0, cfg(), cl.blacklist_bytes(["%019d" % i for i in range(2000)]))
    ok, reason = p.install_bytes(big, 0)
    mptest.true(not ok and "exceeds" in reason, reason)
    mptest.eq(p.version, 5)
    mptest.eq([e[1] for e in ev.seen], [3, 5])
    p.close()


def test_slot_mode_install_from_a_downloaded_file_and_bad_bundles():
    dev, slots = fresh_slots()
    p = params.Params(MP + "/params", KEY, None, slots=slots)
    with open(MP + "/params/incoming.tmp", "wb") as f:
        f.write(full(3))
    mptest.eq(p.install(MP + "/params/incoming.tmp", 0), (True, "activated"))
    data = full(4, fare=999, cards=(NEW,))
    for bad, fragment in (
        (data[:-1], "truncated"),
        (data[:5000], "truncated"),
        (full(4, key=b"x"), "MAC"),
        (data[:6000] + bytes([data[6000] ^ 4]) + data[6001:], "MAC"),  # a bit in the list
        (data + b"\x00", "padded"),
    ):
        ok, reason = p.install_bytes(bad, 0)
        mptest.true(not ok and fragment in reason, "%s: %s" % (fragment, reason))
        mptest.eq((p.version, fare_of(p), p.blacklist.contains(LOST)), (3, 200, True))
    p.close()
    ramdisk.remount(dev, MP)
    p = params.Params(MP + "/params", KEY, None, slots=slots)
    mptest.true(p.load(0))
    mptest.eq((p.version, p.blacklist.contains(LOST), p.blacklist.contains(NEW)), (3, True, False))
    p.close()


def _slot_sweep(prepare, new_bundle, check_old, check_new, tear):
    outcomes = {"old": 0, "new": 0}
    n = 0
    while True:
        dev, slots = fresh_slots()
        ev = Events()
        p = params.Params(MP + "/params", KEY, ev, slots=slots)
        prepare(p)
        dev.arm(n, tear=tear)
        try:
            p.install_bytes(new_bundle, now=0)
        except OSError:
            pass
        finished = not dev.dead
        p.close()
        p = None
        gc.collect()
        ramdisk.remount(dev, MP)
        ev2 = Events()
        q = params.Params(MP + "/params", KEY, ev2, slots=slots)
        mptest.true(q.load(now=0), "cut at op %d: no parameters after wake" % n)
        if check_new(q):
            outcomes["new"] += 1
            mptest.true(len(ev.seen) + len(ev2.seen) >= 2, "activation journaled (op %d)" % n)
        else:
            mptest.true(check_old(q), "cut at op %d: neither old nor new" % n)
            outcomes["old"] += 1
        q.close()
        if finished:
            break
        n += 1
    mptest.true(outcomes["old"] > 0 and outcomes["new"] > 0, repr(outcomes))
    return n, outcomes


def test_slot_mode_power_cut_at_every_step():
    def prepare(p):
        p.install_bytes(full(3, fare=200, cards=(LOST,)), now=0)
        p.install_bytes(full(4, fare=250, cards=(STOLEN,)), now=0)  # slot 1 active, 0 free

    def old(q):
        b = q.blacklist
        return (q.version, fare_of(q), b.contains(STOLEN), b.contains(NEW)) == (
            4,
            250,
            True,
            False,
        )

    def new(q):
        b = q.blacklist
        return (q.version, fare_of(q), b.contains(STOLEN), b.contains(NEW)) == (
            5,
            350,
            False,
            True,
        )

    for tear in (False, True):
        n, outcomes = _slot_sweep(prepare, full(5, fare=350, cards=(NEW,)), old, new, tear)
    mptest.log("slot mode full replacement: %d cut points, %r" % (n, outcomes))
