# mpy: heapsize=2m timeout=300
# Fuzz (issue 11): parameter bundles into firmware/params.py on littlefs (RAM block device).
# Two kinds of hostile bundle: byte-mutated ones (unsigned damage, which the MAC must stop, and
# damage *signed with the device key*, which reaches the header, section table, JSON and delta
# parsers), and structurally mutated configs (values of the wrong type or range, keys removed or
# added) built into correctly signed bundles. Invariants: install_bytes() returns (ok, reason) and
# never raises; a refused bundle leaves the active version, its fares, its blacklist and the
# files on flash as they were; an accepted one can be used (fare computed, blacklist looked up)
# without an exception and survives a remount; the next valid bundle installs and activates.
# (test_params.py has hand-picked refusals; tests/host/test_fuzz_bundle.py fuzzes bundle.py.)
import os
import sys

import mptest

sys.path.append(mptest.repo_root() + "/tools")

import bundle  # noqa: E402
import cardlists as cl  # noqa: E402
import fuzzgen  # noqa: E402
import log  # noqa: E402
import params  # noqa: E402
import ramdisk  # noqa: E402
import vfs  # noqa: E402

KEY = b"device-0042-secret"
MP = "/fz"
LOST = "3104991585000011383"
NEW = "2482000000000000017"
_FF = b"\xff" * 4096
_dev = []
_bl = {}


def cfg(fare=200):
    return {
        "settings": {"dup_tap_s": 60, "upload_interval_s": 120},
        "whitelist": {"local_issuers": ["05212482"], "local_city": "2482", "issuers": []},
        "fares": {
            "routes": {
                "101": {"mode": "flat", "fare": fare},
                "102": {"mode": "stage", "stages": [0, 5], "fares": [100, 200]},
            },
            "card_types": {"1": {}, "2": {"pct": 50}},
        },
    }


def blist(*cards):
    if cards not in _bl:
        _bl[cards] = cl.blacklist_bytes(cards)
    return _bl[cards]


def fresh():
    try:
        vfs.umount(MP)
    except OSError:
        pass
    if not _dev:
        _dev.append(ramdisk.RAMBlockDev(4096, 64))
    dev = _dev[0]
    mv = memoryview(dev.data)
    for b in range(dev.num_blocks):
        mv[b * 4096 : (b + 1) * 4096] = _FF
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), MP)
    return dev


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()


def teardown():
    try:
        vfs.umount(MP)
    except OSError:
        pass


def use(p):
    """Everything a tap asks of the active parameters; must not raise."""
    card = {"card_no": "1", "card_type": 1, "records": []}
    r = p.fares.compute(card, 101, 0, 10**8)
    p.fares.compute(card, 102, 1, 10**8)
    p.blacklist.contains(LOST)
    p.blacklist.contains(NEW)
    return r.debit


def state(p):
    return (p.version, use(p), p.blacklist.contains(LOST), sorted(os.listdir(MP + "/params")))


VALUES = (None, -1, 0, 1, 255, 256, 70000, 10**12, "", "x", "200", [], [1, "a"], {}, 1.5, True)


def mutate_tree(rng, node, depth=0):
    """A copy of a JSON tree with one value replaced, a key removed or an unknown key added."""
    if isinstance(node, dict) and node:
        keys = sorted(node)
        k = keys[rng.below(len(keys))]
        out = dict(node)
        what = rng.below(6)
        if what == 0:
            del out[k]
        elif what == 1:
            out["zz%d" % rng.below(9)] = rng.choice(VALUES)
        elif what == 2 or depth > 4:
            out[k] = rng.choice(VALUES)
        else:
            out[k] = mutate_tree(rng, node[k], depth + 1)
        return out
    if isinstance(node, list) and node:
        out = list(node)
        i = rng.below(len(out))
        out[i] = mutate_tree(rng, out[i], depth + 1) if rng.below(2) else rng.choice(VALUES)
        if rng.below(4) == 0:
            out.append(rng.choice(VALUES))
        return out
    return rng.choice(VALUES)


def test_whitelist_numbers_are_refused_not_a_crash():
    # Found by this fuzzer: a signed bundle whose whitelist held a number (local_city -1, or
    # 10**12) raised out of install_bytes (bytes(-1), or a huge allocation) instead of refusing.
    # Fixed in a91fbb6; the fuzz loop below no longer tolerates it.
    fresh()
    p = params.Params(MP + "/params", KEY)
    p.install_bytes(bundle.build(KEY, 1, 0, cfg(), blist(LOST)), 0)
    for bad in (-1, 10**12):
        c = cfg(300)
        c["whitelist"]["local_city"] = bad
        ok, reason = p.install_bytes(bundle.build(KEY, 2, 0, c, blist(LOST)), 0)
        mptest.false(ok, "a whitelist with city code %r was accepted" % bad)
        mptest.eq(p.version, 1)
    p.close()


def test_hostile_bundles_never_change_the_active_set():
    seed = fuzzgen.seed(0x700)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(60)
    tally = fuzzgen.Tally()
    dev = fresh()
    p = params.Params(MP + "/params", KEY)
    mptest.eq(p.install_bytes(bundle.build(KEY, 1, 0, cfg(), blist(LOST)), 0), (True, "activated"))
    version = 1
    for i in range(n):
        before = state(p)
        way = rng.below(4)
        if way == 0:  # damage without the key: the MAC must refuse it
            good = bundle.build(KEY, version + 1, 0, cfg(300), None, (version, [7], []))
            data = fuzzgen.mutate(rng, good)
        elif way == 1:  # damage signed with the key: header, table, JSON, delta parsers
            good = bundle.build(KEY, version + 1, 0, cfg(300), None, (version, [7, 9], [1]))
            data = fuzzgen.mutate(rng, good[: -bundle.MAC_LEN])
            if len(data) >= bundle.HEADER + bundle.MAC_LEN:
                data = bundle.resign(data + bytes(bundle.MAC_LEN), KEY)
        else:  # a well-signed bundle whose config is structurally hostile
            c = cfg(300)
            for _ in range(1 + rng.below(3)):
                c = mutate_tree(rng, c)
            if way == 2:
                data = bundle.build(KEY, version + 1, 0, c, None, (version, [], []))
            else:
                data = bundle.build(KEY, version + 1, 0, c, blist(LOST, NEW))
        try:
            ok, reason = p.install_bytes(data, now=100 + i)
        except Exception as e:  # noqa: BLE001 - the invariant under test
            raise AssertionError("install raised %r; way %d round %d" % (e, way, i))
        if not ok:
            tally.add("refused_%d" % way)
            mptest.eq(state(p), before, "a refused bundle changed something: " + reason)
        else:
            mptest.true(way > 0 or data == good, "an unsigned change was accepted")
            tally.add("accepted_%d_%s" % (way, reason))
            if reason == "activated":
                mptest.true(p.version > version)
                version = p.version
            use(p)  # an accepted set must be usable
            p.close()
            ramdisk.remount(dev, MP)
            p = params.Params(MP + "/params", KEY)
            mptest.true(p.load(now=10**6), "accepted set lost at remount")
            version = p.version
        # The next honest bundle goes in and is used.
        version += 1
        res = p.install_bytes(bundle.build(KEY, version, 0, cfg(200 + i), blist(LOST)), 10**6)
        mptest.eq(res, (True, "activated"), "round %d" % i)
        mptest.eq(use(p), 200 + i)
        log.clear()
    p.close()
    mptest.log(fuzzgen.report("params_install", seed, n, tally))
    mptest.true(tally.get("refused_0") > 0 and tally.get("refused_2") + tally.get("refused_3") > 0)
