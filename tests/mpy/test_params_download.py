# mpy: heapsize=2m timeout=1500 server=tools.params_dl_fixture
# Big fleet-signed bundles over the air: validator uplink -> simulated modem (both AT dialects,
# HTTP and HTTPS) -> real collector, by ranged GETs (firmware/chunkdl.py). The million-card list
# goes through the SIMCom dialect with connections dropped at 100+ seeded byte points and power
# cuts (littlefs remounted with what was not flushed lost) and is activated and looked up; bundles
# for another scope, an old version, a tampered chunk or a truncated manifest are refused with the
# active set kept. The simulated modem runs faster than 115,200 baud (`make bench STAGE=params`
# models the line time).
from sim_uart import SimUART

_uart = [SimUART("modem", timeout=0, rxbuf=12288)]

import os  # noqa: E402
import time  # noqa: E402

import bundle  # noqa: E402
import chunkdl  # noqa: E402
import log  # noqa: E402
import modem_rig  # noqa: E402
import mptest  # noqa: E402
import params  # noqa: E402
import ramdisk  # noqa: E402
import vfs  # noqa: E402
from sim_pin import Pin  # noqa: E402
from simlink import Control  # noqa: E402
from uplink import Uplink  # noqa: E402

MP = "/pd"
T0 = 848000000
TIMING = modem_rig.timing(sim_ready_ms=300, urc_ms=2)
SEED = 20261205


class PowerCut(BaseException):
    """The board lost power: nothing below the test catches it."""


class Journal:
    """Nothing to upload: the uplink only fetches parameters here."""

    backlog = 0
    acked_seq = 0
    last_seq = 0

    def records_after(self, seq, n):
        return []


# Made once, early: big blocks on a fragmented heap fail.
_ram_slots = [ramdisk.RAMBlockDev(4096, 40), ramdisk.RAMBlockDev(4096, 40)]
_fs_dev = ramdisk.RAMBlockDev(4096, 64)
_FF = b"\xff" * 4096


def _erase(dev):
    mv = memoryview(dev.data)
    for i in range(0, len(dev.data), 4096):
        mv[i : i + 4096] = _FF


def ram_slots():
    for s in _ram_slots:
        _erase(s)
    return _ram_slots


def fresh_fs():
    try:
        vfs.umount(MP)
    except OSError:
        pass
    _erase(_fs_dev)
    _fs_dev.restore_power()
    vfs.VfsLfs2.mkfs(_fs_dev)
    vfs.mount(vfs.VfsLfs2(_fs_dev), MP)
    return _fs_dev


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()
    uart = _uart[0]
    while uart.any():
        uart.read(uart.any())


def teardown():
    try:
        vfs.umount(MP)
    except OSError:
        pass


def transport(ctl, dialect):
    ctl.call("modem_dialect", dialect=dialect)
    ctl.call("modem_timing", **TIMING)
    ctl.call("modem_clear")
    ctl.call("modem_cut_bodies_at", points=[])
    return modem_rig.transport(_uart[0], Pin("modem_pwrkey", Pin.OUT), dialect)


def device(info, slots):
    trust = bundle.Trust({1: info["pubkey"]}, operator=1, city="2482", route=101)
    return params.Params(MP + "/params", b"unused-legacy-key", slots=slots, trust=trust)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Rig:
    def __init__(self, dialect, scheme="http", slots=None):
        self.ctl = Control()
        self.ctl.call("pdl_reset")
        self.dev = fresh_fs()
        self.slots = slots or ram_slots()
        base = self.ctl.call("pdl_publish", name="base", cards=5, version=3, publish=False)
        self.info = base
        self.p = device(base, self.slots)
        mptest.eq(self.p.install_bytes(read(base["path"]), 1), (True, "activated"))
        self.t = transport(self.ctl, dialect)
        port = self.ctl.call("pdl_collector")
        self.url = "%s://127.0.0.1:%d" % (scheme, port)
        self.secret = bytes.fromhex(self.ctl.call("pdl_secret", device=1))
        self.powercut_at = []  # fetch numbers where the power goes
        self.fetches = 0
        self.dl = None
        self.results = []

    def uplink(self):
        return Uplink(
            self.t,
            Journal(),
            1,
            self.secret,
            self.url,
            clock=lambda: T0,
            on_bundle=lambda *a: False,
            on_chunked=self.on_chunked,
            params_version=self.p.version,
            timeout_ms=4000,
            backoff_min_ms=20,
        )

    async def on_chunked(self, version, total, fetch):
        async def cutting_fetch(off, length, sink):
            self.fetches += 1
            if self.powercut_at and self.fetches == self.powercut_at[0]:
                self.powercut_at.pop(0)
                # power goes mid-range: half of it arrives, then nothing more
                try:
                    await fetch(off, length, _Half(sink, length))
                except Exception:  # noqa: BLE001 - the power is gone anyway
                    pass
                raise PowerCut()
            await fetch(off, length, sink)

        dl = chunkdl.resume(self.p, cutting_fetch, T0, version)
        if dl is None:
            dl = chunkdl.Download(self.p, cutting_fetch, version, total, T0)
        self.dl = dl
        ok, why = await dl.run(max_failures=20)
        self.results.append((ok, why))
        return ok

    def power_cut(self):
        """Files as littlefs last committed them; the slots keep what was written."""
        ramdisk.remount(self.dev, MP)
        self.p = device(self.info, self.slots)
        mptest.true(self.p.load(T0))

    async def until_done(self, tries=400):
        for _ in range(tries):
            up = self.uplink()
            try:
                ok = await up.sync()
            except PowerCut:
                self.power_cut()
                continue
            if ok and up.params_version == up.offer:
                return up
            if self.results and not self.results[-1][0]:
                return up
        raise AssertionError("download did not finish")


class _Half:
    def __init__(self, sink, length):
        self.sink = sink
        self.left = length // 2

    def __call__(self, mv):
        if self.left > 0:
            take = mv[: self.left]
            self.left -= len(take)
            self.sink(take)


async def small(dialect, scheme):
    r = Rig(dialect, scheme)
    info = r.ctl.call("pdl_publish", name="small", cards=20000, version=4)
    mptest.true(info["total"] > 3 * 16384, "goes by ranges")
    r.info = info
    up = await r.until_done()
    mptest.eq(r.results[-1], (True, "activated"))
    mptest.eq((r.p.version, up.params_version), (4, 4))
    mptest.eq(r.dl.bytes, info["total"], "every byte once")
    mptest.eq(sorted(os.listdir(MP + "/params")), ["b4.bnd", "floor", "state"])
    mptest.log("%s %s: %d bytes by %d ranged GETs" % (dialect, scheme, info["total"], r.fetches))
    r.p.close()


async def test_ranged_download_simcom_http():
    await small("simcom", "http")


async def test_ranged_download_simcom_https():
    await small("simcom", "https")


async def test_ranged_download_quectel_http():
    await small("quectel", "http")


async def test_ranged_download_quectel_https():
    await small("quectel", "https")


async def test_quectel_resumes_after_dropped_connections():
    r = Rig("quectel")
    info = r.ctl.call("pdl_publish", name="small", cards=20000, version=4)
    r.info = info
    points = r.ctl.call("pdl_cuts", n=4, total=info["total"], seed=SEED)
    await r.until_done()
    mptest.eq(r.results[-1], (True, "activated"))
    mptest.eq(r.ctl.call("modem_cuts_done"), 4)
    mptest.log(
        "quectel: cuts at %s, %d bytes fetched for %d" % (points, r.dl.bytes, info["total"])
    )
    r.p.close()


async def refused(name, cards=20000, version=4, **kw):
    r = Rig("simcom")
    info = r.ctl.call("pdl_publish", name=name, cards=cards, version=version, **kw)
    up = await r.until_done()
    ok, why = r.results[-1]
    mptest.false(ok)
    mptest.eq(r.p.version, 3, "active set kept")
    mptest.eq(sorted(os.listdir(MP + "/params")), ["b3.bnd", "floor", "state"])
    mptest.eq(up._refused_version, info["version"], "not fetched again")
    mptest.log("%s refused after %d bytes: %s" % (name, r.dl.bytes if r.dl else 0, why))
    r.p.close()
    return why, r


async def test_other_scope_refused_at_the_manifest():
    why, r = await refused("otherscope", scope={"city": "2483"})
    mptest.true("out of scope" in why, why)


async def test_old_version_refused_at_the_manifest():
    # published above what the device holds (3) but the device's floor says 5
    r = Rig("simcom")
    r.p._raise_floor(dict(r.p.state), {"version": 5, "key": 1})
    r.p._write_floor()
    r.p.close()
    r.power_cut()
    r.ctl.call("pdl_publish", name="old", cards=20000, version=4)
    await r.until_done()
    ok, why = r.results[-1]
    mptest.false(ok)
    mptest.true("rollback" in why, why)
    mptest.eq(r.p.version, 3)
    r.p.close()


async def test_tampered_chunk_refused():
    why, r = await refused("tampered", tamper=4096 * 9 + 3000)
    mptest.true("keeps failing" in why, why)


async def test_truncated_manifest_refused():
    # the million-card bundle (its manifest is 45 KB) stored cut inside its manifest
    why, r = await refused("million", cards=1000000, version=4, truncate=30000)
    mptest.true("truncated" in why, why)


def test_the_app_fetches_a_big_signed_bundle_by_ranges():
    # firmware/app.py's on_chunked: the uplink's P_CHUNKED answer, ranged GETs, chunkdl, then
    # the new set is active and the uplink reports it
    import app_rig
    import cardlists

    info = Control().call("pdl_publish", name="app", cards=5000, version=4, publish=False)
    data = read(info["path"])
    full3 = bundle.build(
        app_rig.SECRET, 3, 0, app_rig.bundle_config(), cardlists.blacklist_bytes([17])
    )
    rig = app_rig.Rig(full3)
    try:
        v = rig.v
        v.params.trust.add_key(1, info["pubkey"])  # as /config.json's param_keys provide it
        rig.office.offer_chunked(4, data)
        mptest.true(rig.upload(), v.uplink.last_error)
        mptest.eq((v.params.version, v.uplink.params_version), (4, 4))
        mptest.eq(rig.office.range_bytes, len(data), "every byte once")
        mptest.false(v.params.blacklist.contains(17), "the new list replaced the old one")
    finally:
        rig.close()


class FileSlot:
    """A raw partition in a host file (a million-card list does not fit a test heap)."""

    def __init__(self, path, blocks):
        self.blocks = blocks
        self.f = open(path, "w+b")
        self.writes = 0

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * 4096 + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=0):
        self.f.seek(n * 4096 + off)
        self.f.write(buf)
        self.f.flush()

    def ioctl(self, op, arg):
        if op == 6:  # erase: the bytes read 0xFF until programmed
            self.f.seek(arg * 4096)
            self.f.write(_FF)
            return 0
        return self.blocks if op == 4 else 4096 if op == 5 else 0


async def test_million_cards_with_cuts_and_power_cuts_simcom():
    root = mptest.repo_root() + "/build/params-dl/"
    slots = [FileSlot(root + "slot_a.bin", 1472), FileSlot(root + "slot_b.bin", 1472)]
    r = Rig("simcom", slots=slots)
    info = r.ctl.call("pdl_publish", name="million", cards=1000000, version=5)
    r.info = info
    r.ctl.call("pdl_cuts", n=110, total=info["total"], seed=SEED)
    r.powercut_at = [7, 41, 88]  # fetch numbers (each about 64 KB)
    cuts_planned = list(r.powercut_at)
    t0 = time.ticks_ms()
    await r.until_done(tries=2000)
    ms = time.ticks_diff(time.ticks_ms(), t0)
    mptest.eq(r.results[-1], (True, "activated"))
    cuts = r.ctl.call("modem_cuts_done")
    mptest.true(cuts >= 100, "%d dropped connections" % cuts)
    mptest.eq((r.p.version, r.p.blacklist.count), (5, 1000000))
    # look cards up: the fixture's seeded numbers are in, others not
    for card in r.ctl.call("pdl_sample", n=300):
        mptest.true(r.p.blacklist.contains(int(card)), card)
        mptest.false(r.p.blacklist.contains(int(card) + 1), "neighbour of %s" % card)
    mptest.log(
        "million cards (%d bytes): %d dropped connections at seeded points (seed %d), power cuts "
        "at fetches %s, %d bytes fetched, %d ms on the unix port"
        % (info["total"], cuts, SEED, cuts_planned, r.dl.bytes, ms)
    )
    r.p.close()
    for s in slots:
        s.f.close()
        os.remove(root + ("slot_a.bin" if s is slots[0] else "slot_b.bin"))
