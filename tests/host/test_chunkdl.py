"""Chunked, resumable download of a fleet-signed bundle (firmware/chunkdl.py) under CPython:
ranged fetches cut at seeded random points, bytes damaged in transit, power cuts that lose what
was not flushed and tear the slot block being written; the download resumes from the last
verified chunk and activates atomically. Refused bundles keep the active set."""

import asyncio
import os
import random

import blmerge
import bundle
import cardlists as cl
import chunkdl
import params
import pytest

from tests.host.test_params_host import CFG, MemSlot
from tests.host.test_params_signed import K1, LOST, SCOPE, signed, trust
from tools import params_sign

N_CARDS = 60_000
_big = {}


def big(version=4, **kw):
    key = (version, repr(sorted(kw.items())))
    if key not in _big:
        cards = [cl.card_key("31049915%011d" % i) for i in range(N_CARDS)]
        body = bundle.build_body(version, 0, CFG, cl.blacklist_bytes(cards))
        sc = kw.pop("scope", SCOPE)
        _big[key] = params_sign.sign(K1, 1, body, sc, **kw)
    return _big[key]


class PowerCut(Exception):
    pass


class Net:
    """Serves `data` by ranges; cuts, damages and powers off at seeded random points."""

    def __init__(self, data, seed, cut_p=0.0, damage_p=0.0, power_p=0.0):
        self.data = data
        self.rng = random.Random(seed)
        self.cut_p, self.damage_p, self.power_p = cut_p, damage_p, power_p
        self.cuts = self.damages = self.powercuts = 0
        self.requests = 0

    async def fetch(self, off, length, sink):
        self.requests += 1
        piece = self.data[off : off + length]
        pos = 0
        while pos < len(piece):
            n = min(len(piece) - pos, self.rng.randrange(1, 1500))
            mv = memoryview(piece[pos : pos + n])
            r = self.rng.random()
            if r < self.power_p:
                self.powercuts += 1
                sink(mv[: self.rng.randrange(n)])
                raise PowerCut()
            if r < self.power_p + self.cut_p:
                self.cuts += 1
                sink(mv[: self.rng.randrange(n)])
                raise ConnectionError("lost")
            if r < self.power_p + self.cut_p + self.damage_p:
                self.damages += 1
                bad = bytearray(mv)
                bad[self.rng.randrange(n)] ^= 0x10
                mv = memoryview(bytes(bad))
            sink(mv)
            pos += n


def make(tmp_path, slots):
    return params.Params(str(tmp_path / "params"), b"legacy-secret-16", slots=slots, trust=trust())


def base(tmp_path, slots):
    p = make(tmp_path, slots)
    assert p.install_bytes(signed(3), 1) == (True, "activated")
    return p


def power_cut(p, rx, rng):
    """What a cut leaves: the file as last flushed plus maybe a little, a torn slot block."""
    path = p._p(params.INCOMING)
    rx.f.close()  # CPython writes its buffer out here; the truncation below takes it back
    size = os.path.getsize(path)
    st = chunkdl.pending(p)
    keep = st and rx._fpos(st["pos"]) if st else 0
    cut = rng.randrange(min(keep or 0, size), size + 1) if size else 0
    with open(path, "r+b") as f:
        f.truncate(cut)
    if rx.slot is not None:
        dev = p.slots[rx.slot]
        b = rng.randrange(dev.blocks)
        dev.data[b * 4096 + rng.randrange(4096)] ^= 0xFF
    p.close()


def run_until_done(tmp_path, slots, data, net, version=4):
    rng = random.Random(7)
    p = base(tmp_path, slots)
    dl = chunkdl.Download(p, net.fetch, version, len(data), 10)
    results = []
    for _ in range(500):
        try:
            results.append(asyncio.run(dl.run(max_failures=10**6)))
            break
        except PowerCut:
            power_cut(p, dl.rx, rng)
            p = make(tmp_path, slots)
            assert p.load(10)
            dl = chunkdl.resume(p, net.fetch, 10, version) or chunkdl.Download(
                p, net.fetch, version, len(data), 10
            )
    return p, results[0], dl


@pytest.fixture(params=[False, True], ids=["file", "slot"])
def slots(request):
    return [MemSlot(128), MemSlot(128)] if request.param else None


def test_clean_download_activates_and_costs_the_list_size(tmp_path, slots):
    data = big()
    net = Net(data, 1)
    p, res, dl = run_until_done(tmp_path, slots, data, net)
    assert res == (True, "activated")
    assert p.version == 4 and p.blacklist.contains(cl.card_key("31049915%011d" % 1234))
    assert not p.blacklist.contains(LOST)
    assert dl.bytes == len(data)
    assert net.requests == -(-len(data) // chunkdl.WINDOW)
    assert sorted(os.listdir(tmp_path / "params")) == ["b4.bnd", "floor", "state"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cuts_damage_and_power_cuts_resume_from_the_last_verified_chunk(tmp_path, slots, seed):
    data = big()
    net = Net(data, seed, cut_p=0.02, damage_p=0.01, power_p=0.01)
    p, res, dl = run_until_done(tmp_path, slots, data, net)
    assert res == (True, "activated"), res
    assert net.cuts >= 3 and net.damages >= 2 and net.powercuts >= 2, vars(net)
    assert p.version == 4 and p.blacklist.contains(cl.card_key("31049915%011d" % 59999))
    assert sorted(os.listdir(tmp_path / "params")) == ["b4.bnd", "floor", "state"]
    print(
        "seed %d: %d cuts, %d damaged, %d power cuts"
        % (seed, net.cuts, net.damages, net.powercuts)
    )


@pytest.mark.parametrize(
    "what",
    [
        "tampered-chunk",
        "other-scope",
        "old-version",
        "truncated-manifest",
        "tampered-manifest",
        "legacy",
    ],
)
def test_refused_downloads_keep_the_active_set(tmp_path, slots, what):
    data = bytearray(big())
    m = bundle.Manifest(data[: bundle.MHEAD])
    total = len(data)
    if what == "tampered-chunk":
        # stored damage on the server: every fetch of that chunk fails its hash
        data[m.len + 4096 * 5 + 17] ^= 1
    elif what == "other-scope":
        data = bytearray(big(scope=dict(SCOPE, city="2483")))
    elif what == "old-version":
        data = bytearray(big(version=2))
    elif what == "truncated-manifest":
        total = m.signed_len - 100
        data = data[:total]
    elif what == "tampered-manifest":
        data[bundle.MHEAD + 5] ^= 1
    elif what == "legacy":
        data = bytearray(bundle.build(b"legacy-secret-16", 4, 0, CFG, cl.blacklist_bytes([1])))
    total = len(data)
    p = base(tmp_path, slots)
    net = Net(bytes(data), 1)
    dl = chunkdl.Download(p, net.fetch, 4, total, 10)
    ok, why = asyncio.run(dl.run())
    assert not ok and why
    assert p.version == 3 and p.blacklist.contains(LOST)
    assert sorted(os.listdir(tmp_path / "params")) == ["b3.bnd", "floor", "state"]
    if what == "tampered-manifest":
        assert dl.bytes <= 9 * (m.len + 1500), "fetched again a few times, then refused"
    elif what != "tampered-chunk":
        assert dl.bytes <= m.len + 4096, "refused at the manifest"


class CutSlot(MemSlot):
    """A slot whose power goes at its n-th block write from now (a cut during a merge)."""

    def __init__(self, blocks):
        super().__init__(blocks)
        self.cut_in = None
        self.writes = 0

    def writeblocks(self, n, buf, off=None):
        if self.cut_in is not None:
            if self.cut_in == 0:
                self.cut_in = None
                raise PowerCut()
            self.cut_in -= 1
        self.writes += 1
        super().writeblocks(n, buf, off)


D_BASE = [3104991500000000000 + 7919 * i for i in range(40_000)]
D_ADDS = [2482000000000000000 + 104729 * i for i in range(6_000)]
D_REMS = D_BASE[::10]


def merged_delta():
    if "delta" not in _big:
        result = blmerge.result_digest((set(D_BASE) - set(D_REMS)) | set(D_ADDS))
        body = bundle.build_body(4, 0, None, None, (3, D_ADDS, D_REMS, result))
        _big["delta"] = params_sign.sign(K1, 1, body, SCOPE)
    return _big["delta"]


def test_power_cut_during_a_merge_resumes_with_the_stored_delta(tmp_path):
    """A merged delta (firmware/blmerge.py) arrives by ranges; the power goes at a seeded block
    write of the merge into the free slot. The wake has the old list, whole; the download
    resumes from its checkpoint (no new download from the start) and the merge runs again from
    its first pass (docs/blacklist.md "Deltas")."""
    data = merged_delta()
    assert len(data) > chunkdl.WINDOW
    slots = [CutSlot(128), CutSlot(128)]
    p = make(tmp_path, slots)
    assert p.install_bytes(signed(3, cards=D_BASE), 1) == (True, "activated")
    p.close()
    # the merge's slot writes, counted on a clean run in another directory
    (tmp_path / "clean").mkdir()
    q = make(tmp_path / "clean", [CutSlot(128), CutSlot(128)])
    assert q.install_bytes(signed(3, cards=D_BASE), 1) == (True, "activated")
    q.slots[1].writes = 0
    assert asyncio.run(chunkdl.Download(q, Net(data, 1).fetch, 4, len(data), 10).run()) == (
        True,
        "activated",
    )
    total = q.slots[1].writes
    q.close()
    rng = random.Random(20261205)
    points = sorted({0, total - 1} | {rng.randrange(total) for _ in range(4)})
    p = make(tmp_path, slots)
    assert p.load(10) and p.version == 3
    net = Net(data, 1)
    dl = chunkdl.Download(p, net.fetch, 4, len(data), 10)
    for at in points:  # cut, wake, resume, cut again at the next point
        slots[1].cut_in = at
        with pytest.raises(PowerCut):
            asyncio.run(dl.run())
        p.close()
        p = make(tmp_path, slots)  # the wake: the old list, whole
        assert p.load(10) and p.version == 3, at
        assert p.blacklist.contains(D_REMS[5]) and not p.blacklist.contains(D_ADDS[5]), at
        assert p.blacklist.count == len(D_BASE), at
        dl = chunkdl.resume(p, net.fetch, 10, 4)
        assert dl is not None, "cut at slot write %d: the checkpoint is kept" % at
    requests = net.requests
    assert asyncio.run(dl.run()) == (True, "activated")
    assert net.requests == requests, "the stored delta is merged, not downloaded again"
    assert net.requests == -(-len(data) // chunkdl.WINDOW), "one download in all"
    assert p.version == 4 and p.blacklist.count == len(D_BASE) - len(D_REMS) + len(D_ADDS)
    for c in D_ADDS[::500]:
        assert p.blacklist.contains(c)
    for c in D_REMS[::500]:
        assert not p.blacklist.contains(c)
    # the config stays in b3.bnd, the list is the slot: the delta's file is gone
    assert sorted(os.listdir(tmp_path / "params")) == ["b3.bnd", "floor", "state"]
    p.close()
    print("merge of %d slot writes, cut at %r: one download, activated" % (total, points))


def test_a_merge_keeps_the_watchdog_fed_all_through(tmp_path):
    """The merge of a large delta runs for minutes on a board (docs/blacklist.md): without feeds
    the watchdog would reset the validator part-way, and the next boot would merge again, for
    ever. Params(feed_dog=...) is fed every blmerge.TICK_CARDS cards of each pass."""
    feeds = []
    slots = [CutSlot(128), CutSlot(128)]
    p = params.Params(
        str(tmp_path / "params"),
        b"legacy-secret-16",
        slots=slots,
        trust=trust(),
        feed_dog=lambda: feeds.append(slots[1].writes),
    )
    assert p.install_bytes(signed(3, cards=D_BASE), 1) == (True, "activated")
    fed_before = len(feeds)
    data = merged_delta()
    assert asyncio.run(chunkdl.Download(p, Net(data, 1).fetch, 4, len(data), 10).run()) == (
        True,
        "activated",
    )
    n = len(D_BASE) - len(D_REMS) + len(D_ADDS)
    per_pass = n // blmerge.TICK_CARDS
    assert len(feeds) - fed_before >= 3 * per_pass, "both passes and the read-back"
    # and while the merge writes the slot, the feeds are spread over it, not bunched at the end
    writes = [w for w in feeds[fed_before:] if w]
    assert len(set(writes)) >= per_pass // 2, writes
    p.close()
