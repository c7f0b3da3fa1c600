# mpy: heapsize=2m timeout=240
# The parameter version floor in its three homes (docs/parameters.md "Rollback"): params/state and
# params/floor on littlefs, and the transaction log on raw flash (firmware/txlog.py floor notes and
# sector headers). Damage to any one of them, or to both littlefs files together, still refuses an
# older bundle; the log keeps the floor across rolls and erased sectors; a power cut at every
# program/erase of an activation (littlefs and log on one power supply) never lowers it.
import gc

import bundle
import cardlists as cl
import log
import mptest
import params
import ramdisk
import txlog
import vfs

log.set_level(log.DEBUG, echo=False)

KEY = b"device-0042-secret"
MP = "/pf"
LOST = "3104991585000011383"
NEW = "2482000000000000017"
CFG = {
    "settings": {"upload_interval_s": 120},
    "whitelist": {"local_issuers": ["05212482"], "local_city": "2482", "issuers": []},
    "fares": {"routes": {"101": {"mode": "flat", "fare": 200}}, "card_types": {"1": {}}},
}
_FF = b"\xff" * 4096
_BL = {}


def full(version, cards=(LOST,)):
    if cards not in _BL:
        _BL[cards] = cl.blacklist_bytes(cards)
    return bundle.build(KEY, version, 0, CFG, _BL[cards])


class LogDev(ramdisk.RAMBlockDev):
    """The txlog partition, powered with the file system's device: one cut stops both."""

    def __init__(self):
        super().__init__(4096, 6)
        self.power = None

    def _op(self):
        self.tear = self.power.tear
        return self.power._op()


_dev = []


def fresh():
    try:
        vfs.umount(MP)
    except OSError:
        pass
    if not _dev:
        _dev.extend([ramdisk.RAMBlockDev(4096, 48), LogDev()])
    dev, lg = _dev
    dev.restore_power()
    lg.power = dev
    for d in (dev, lg):
        mv = memoryview(d.data)
        for b in range(d.num_blocks):
            mv[b * 4096 : (b + 1) * 4096] = _FF
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), MP)
    return dev, lg


def wake(dev, lg):
    """Power back, remount, reopen the log and the parameters as a boot does."""
    gc.collect()
    ramdisk.remount(dev, MP)
    j = txlog.TxLog(lg)
    p = params.Params(MP + "/params", KEY, floor_log=j)
    p.load(now=0)
    return p, j


def damage(path):
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    raw[2] ^= 0x55
    with open(path, "wb") as f:
        f.write(raw)


def wipe_log(lg):
    mv = memoryview(lg.data)
    for b in range(lg.num_blocks):
        mv[b * 4096 : (b + 1) * 4096] = _FF


def installed():
    dev, lg = fresh()
    j = txlog.TxLog(lg)
    p = params.Params(MP + "/params", KEY, floor_log=j)
    p.load(now=0)
    mptest.eq(p.install_bytes(full(3), 10), (True, "activated"))
    mptest.eq(p.install_bytes(full(5, (NEW,)), 20), (True, "activated"))
    mptest.eq(j.param_floor, (0, 5), "the log holds the floor after the activation")
    p.close()
    return dev, lg


def test_floor_survives_damage_to_any_one_home_and_to_both_files():
    for what in ("state", "floor", "log", "state+floor", "state+log", "floor+log"):
        dev, lg = installed()
        if "state" in what:
            damage(MP + "/params/state")
        if "floor" in what:
            damage(MP + "/params/floor")
        if "log" in what:
            wipe_log(lg)
        q, j = wake(dev, lg)
        mptest.eq(q.floor["version"], 5, what)
        ok, why = q.install_bytes(full(4), 30)
        mptest.false(ok, "%s: bundle 4 accepted below the floor" % what)
        mptest.true("rollback" in why or "not newer" in why, "%s: %s" % (what, why))
        mptest.eq(j.param_floor, (0, 5), "%s: the log is brought up to the floor" % what)
        if "state" in what:
            mptest.eq(q.version, 0, what)
            mptest.eq(q.install_bytes(full(5, (NEW,)), 40), (True, "activated"), what)
        else:
            mptest.eq(q.version, 5, what)
        q.close()
        # the next boot reads the repaired homes: all three agree again
        q, j = wake(dev, lg)
        mptest.eq((q.floor["version"], j.param_floor), (5, (0, 5)), what)
        q.close()


def test_all_three_damaged_falls_back_to_the_active_entry():
    # Not a promise of the design (two homes may go), but no crash and no lower floor than the
    # active set itself.
    dev, lg = installed()
    damage(MP + "/params/floor")
    wipe_log(lg)
    q, j = wake(dev, lg)
    mptest.eq((q.version, q.floor["version"], j.param_floor), (5, 5, (0, 5)))
    q.close()


def test_log_keeps_the_floor_across_rolls_erasures_and_reboots():
    dev, lg = fresh()
    j = txlog.TxLog(lg)
    mptest.false(j.note_param_floor(0, 0), "nothing to raise")
    mptest.true(j.note_param_floor(2, 7))
    mptest.false(j.note_param_floor(1, 6), "never lowered")
    mptest.eq(j.param_floor, (2, 7))
    sale = {
        "kind": 1,
        "time": 800000000,
        "amount": 200,
        "card_no": b"\x31\x00\x00\x00\x12\x34\x56\x78\x90\x12",
        "card_atc": 1,
        "route": 12,
    }
    # many laps of the 6-sector ring, everything acknowledged: the sector with the note is erased
    for i in range(6 * 64 * 3):
        sale["card_atc"] = i & 0xFFFF
        seq = j.append(sale)
        j.ack(seq)
        j.maintain()
        if i == 500:
            mptest.true(j.note_param_floor(2, 8))
    mptest.true(j.erases > 6, "the ring lapped")
    j2 = txlog.TxLog(lg)
    mptest.eq(j2.param_floor, (2, 8))
    mptest.eq(j2.last_seq, j.last_seq, "numbering unchanged by the notes")
    mptest.eq(len(j2.records_after(j2.last_seq - 5)), 5, "notes are not records")


def test_floor_note_with_no_spare_slot_rolls_and_the_header_carries_it():
    dev, lg = fresh()
    j = txlog.TxLog(lg)
    sale = {"kind": 1, "time": 800000000, "amount": 1, "card_no": b"\x31" * 10, "route": 1}
    while j._slots - j._next > 2:
        sale["card_atc"] = j.last_seq & 0xFFFF
        j.append(sale)
    before = j.status()["segments"]
    mptest.true(j.note_param_floor(0, 9))
    mptest.eq(j.status()["segments"], before + 1, "a roll, not a note in the slack")
    mptest.eq(txlog.TxLog(lg).param_floor, (0, 9))


def test_torn_floor_note_is_sealed_and_the_older_floor_stands():
    dev, lg = fresh()
    j = txlog.TxLog(lg)
    j.note_param_floor(0, 4)
    dev.arm(0, tear=True)
    try:
        j.note_param_floor(0, 6)
        mptest.true(False, "the cut did not happen")
    except OSError:
        pass
    dev.restore_power()
    j2 = txlog.TxLog(lg)
    mptest.eq(j2.param_floor, (0, 4))
    mptest.true(j2.note_param_floor(0, 6))
    mptest.eq(txlog.TxLog(lg).param_floor, (0, 6))


def test_power_cut_at_every_operation_of_an_activation_keeps_the_floor_monotonic():
    for tear in (False, True):
        n = 0
        seen = {4: 0, 5: 0}
        while True:
            dev, lg = fresh()
            j = txlog.TxLog(lg)
            p = params.Params(MP + "/params", KEY, floor_log=j)
            p.load(now=0)
            p.install_bytes(full(4), 0)
            dev.arm(n, tear=tear)
            try:
                p.install_bytes(full(5, (NEW,)), 0)
            except OSError:
                pass
            finished = not dev.dead
            p.close()
            p = None
            q, j2 = wake(dev, lg)
            f = q.floor["version"]
            mptest.true(f in (4, 5), "cut at op %d (tear %s): floor %d" % (n, tear, f))
            mptest.true(q.version in (4, 5), "cut at op %d: version %d" % (n, q.version))
            mptest.true(f >= q.version, "cut at op %d: floor below the active set" % n)
            seen[f] += 1
            ok, why = q.install_bytes(full(3), 0)
            mptest.false(ok, "cut at op %d: bundle 3 accepted (%s)" % (n, why))
            if finished:
                mptest.eq((f, j2.param_floor), (5, (0, 5)))
            q.close()
            # after the wake every home says at least what the wake said: a second boot agrees
            q, j3 = wake(dev, lg)
            mptest.eq(q.floor["version"], f, "cut at op %d: floor changed at the next boot" % n)
            mptest.eq(j3.param_floor[1], f, "cut at op %d: the log was brought up" % n)
            q.close()
            if finished:
                break
            n += 1
        mptest.true(seen[4] > 0 and seen[5] > 0, repr(seen))
        mptest.log("activation cut points (tear %s): %d, floors after wake %r" % (tear, n, seen))


def teardown():
    try:
        vfs.umount(MP)
    except OSError:
        pass
