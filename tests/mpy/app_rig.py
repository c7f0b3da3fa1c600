# The whole application (firmware/app.py Validator: journal on littlefs, parameters, decision,
# purchase, uplink) on in-process parts, shared by the micropython32 tests
# (tests/mpy/test_runtime32.py) and the heap bench (tools/bench_mpy/app_heap.py):
#   rig = app_rig.Rig(bundle_bytes)   # formats a flash image, installs the bundle, boots
#   rig.tap() -> reason               # one flat-fare tap of the in-process card
#   rig.upload() -> bool              # one uplink round through the in-process back office
#   rig.office.offer(version, data)   # the back office then offers this bundle
# The card and PSAM answer with constants made at start-up (tools/bench_mpy/bench_fakes.py), so
# what a tap allocates is the firmware's own; the flash images are host files (no heap).
# With drivers=True the parts are the simulation board's own (boards/unix_sim/board.py: PN532 on
# I2C, PSAM link on its UART, SIM7600 modem driver, SSD1306 display, feedback pins) against the
# world of tools/bench_app_world.py on the hub (SIM_PORT): a virtual card, PSAM and modem, a
# real collector behind the modem. What the simulated buses themselves allocate (a board does
# that in C, outside the heap) is counted in SIM_ALLOC while the collector is off.
import asyncio
import gc
import os
import sys
import time
from array import array

import app
import config
import log
import timeutil
import uplink_proto as up
import vfs

SECRET_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
SECRET = bytes(range(32))
T0 = timeutil.to_seconds(2026, 11, 30, 0, 30, 0)  # 08:30 local
MOUNT = "/flash"

clock = [T0]


def bundle_config(fare=200):
    """The smallest parameter set that sells a flat fare on route 101 to the fake card."""
    return {
        "settings": {"dup_tap_s": 60, "upload_interval_s": 120},
        "whitelist": {
            "local_issuers": ["05212482"],
            "local_city": "2482",
            "issuers": ["09981001"],
        },
        "fares": {"routes": {"101": {"mode": "flat", "fare": fare}}, "card_types": {"1": {}}},
    }


_INPROC = []


def inproc():
    """The in-process card, PSAM and back office: (FakeCard, Reader, PsamLink, BackOffice).
    Defined at the first call, not at import: with the real drivers they are not used, and their
    classes (and bench_fakes') would be harness heap in the heap figures (docs/runtime.md)."""
    if _INPROC:
        return _INPROC
    try:
        from bench_fakes import FakeCard, FakePsam
    except ImportError:
        sys.path.append((os.getenv("REPO_ROOT") or ".") + "/tools/bench_mpy")
        from bench_fakes import FakeCard, FakePsam

    class Target:
        kind = "A"
        uid = b"\x01\x02\x03\x04"
        iso_dep = True

        def uid_hex(self):
            return "01020304"

    class Reader:
        """Reader interface over the in-process card; one card always present."""

        def __init__(self, card):
            self.card = card
            self.target = Target()
            self.iso_dep = True

        def poll(self):
            return self.target

        def transceive(self, apdu):
            return self.card.transceive(apdu)

        def present(self):
            return False

        def release(self):
            pass

    class PsamLink(FakePsam):
        def reset(self):
            return None

    class BackOffice:
        """The transport: answers as the collector would (holds every record it is sent), and
        offers a parameter bundle once one is set with offer()."""

        def __init__(self, secret):
            self.secret = secret
            self.held = 0
            self.bytes = 0
            self.requests = 0
            self.version = 0
            self.bundle = None
            self.pkind = up.P_FULL
            self.base = 0

        def offer(self, version, data, pkind=up.P_FULL, base=0):
            self.version = version
            self.bundle = data
            self.pkind = pkind
            self.base = base

        def offer_chunked(self, version, data):
            """A big fleet-signed bundle: announced by its length, fetched by ranged GETs."""
            self.offer(version, len(data).to_bytes(4, "big"), up.P_CHUNKED)
            self.chunked = data
            self.range_bytes = 0

        async def request(self, method, url, body=b"", headers=None, timeout_ms=30000, sink=None):
            self.requests += 1
            if method == "GET":  # GET /v1/bundle/<v>?d=&t= with "Range: bytes=a-b" -> 206
                a, b = (int(x) for x in headers["Range"][6:].split("-"))
                piece = memoryview(self.chunked)[a : b + 1]
                for i in range(0, len(piece), 512):
                    sink(piece[i : i + 512])
                self.range_bytes += len(piece)
                return 206, len(piece)
            self.bytes += len(body)
            counter = int.from_bytes(bytes(body[8:12]), "big")
            kind = body[3]
            dev_id = int.from_bytes(bytes(body[4:8]), "big")
            args = (self.secret, kind, 0, dev_id, counter, counter, clock[0])
            bind = bytes(body[len(body) - 32 :])
            # Protocol version 2 (the validator's default): a 4-byte boot epoch after the 16 bytes.
            v2 = body[2] == up.VERSION_EPOCH
            hl = 20 if v2 else 16
            ep = {"server_epoch": up.peek_epoch(body) if v2 else None}
            if kind == up.T_UPLOAD:
                first = int.from_bytes(bytes(body[hl + 4 : hl + 8]), "big")
                n = int.from_bytes(bytes(body[hl + 8 : hl + 10]), "big")
                if n:
                    self.held = first + n - 1
                return 200, up.encode_answer(
                    *args, value=self.held, extra=self.version, bind=bind, **ep
                )
            have = int.from_bytes(bytes(body[hl : hl + 4]), "big")
            if self.bundle is None or have >= self.version:
                return 200, up.encode_answer(*args, value=self.version, bind=bind, **ep)
            ans = up.encode_answer(
                *args,
                value=self.version,
                extra=self.base,
                pkind=self.pkind,
                payload=self.bundle,
                bind=bind,
                **ep,
            )
            return 200, ans

        def status(self):
            return {"dbm": -70}

    _INPROC.extend((FakeCard, Reader, PsamLink, BackOffice))
    return _INPROC


class Parts:
    reader = None
    psam_link = None
    transport = None
    display = None
    feedback = None
    wdt = None
    wdt_grace_ms = 8000
    root = MOUNT
    emit = None
    journal_config = None
    param_slots = None
    reset_cause = "power-on"
    extra_task = None
    txlog_dev = None


class FileDev:
    """Flash on a host file (no heap), esp32.Partition's interface: writeblocks without an
    offset erases first, with one it programs; counts erases, programs and programmed bytes."""

    def __init__(self, path, blocks, bs=4096):
        self.bs = bs
        self.n = blocks
        self.path = path
        with open(path, "wb") as f:
            blank = b"\xff" * 256
            for _ in range(blocks * bs // 256):
                f.write(blank)
        self.f = open(path, "r+b")
        self.erases = 0
        self.programs = 0
        self.programmed = 0

    def readblocks(self, num, buf, offset=0):
        self.f.seek(num * self.bs + offset)
        self.f.readinto(buf)

    def writeblocks(self, num, buf, offset=None):
        if offset is None:
            for i in range(len(buf) // self.bs):
                self.ioctl(6, num + i)
            offset = 0
        self.f.seek(num * self.bs + offset)
        self.f.write(buf)
        self.programs += 1
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:
            self.f.seek(arg * self.bs)
            blank = b"\xff" * 256
            for _ in range(self.bs // 256):
                self.f.write(blank)
            self.erases += 1
        return 0

    def close(self):
        self.f.close()
        os.remove(self.path)


SIM_ALLOC = array("i", [0, 0])  # bytes the simulated buses allocated; nesting depth
SIM_HELD = array("i", [0])  # heap the simulated bus objects keep (their rings, sockets)


def _counting(fn):
    def counted(*a, **kw):
        depth = SIM_ALLOC[1]
        SIM_ALLOC[1] = depth + 1
        a0 = gc.mem_alloc()
        try:
            return fn(*a, **kw)
        finally:
            if not depth:
                SIM_ALLOC[0] += gc.mem_alloc() - a0
            SIM_ALLOC[1] = depth

    return counted


# The methods drivers call on machine-like objects: the simulation's cost, not the firmware's.
_SIM_METHODS = (
    (
        "sim_i2c",
        "SimI2C",
        ("writeto", "writevto", "readfrom", "readfrom_into", "writeto_mem", "readfrom_mem"),
    ),
    (
        "sim_uart",
        "SimUART",
        (
            "read",
            "readinto",
            "readline",
            "write",
            "any",
            "ioctl",
            "init",
            "sendbreak",
            "flush",
            "txdone",
        ),
    ),
    ("sim_spi", "SimSPI", ("write", "read", "readinto", "write_readinto")),
    ("sim_pin", "Pin", ("value", "on", "off", "__call__", "init")),
    ("sim_pin", "PWM", ("freq", "duty_u16")),
)


def _held(cls):
    init = cls.__init__

    def counted_init(self, *a, **kw):
        gc.collect()
        a0 = gc.mem_alloc()
        init(self, *a, **kw)
        gc.collect()
        SIM_HELD[0] += gc.mem_alloc() - a0

    cls.__init__ = counted_init


def _count_sim_objects():
    """What the simulated UART, I2C, SPI, pin and PWM objects keep once built (a board's are C
    objects with driver buffers outside the heap); the driver objects around them not counted."""
    for mod_name, cls_name, _m in _SIM_METHODS:
        cls = getattr(__import__(mod_name), cls_name)
        if not getattr(cls, "_held_counted", False):
            _held(cls)
            cls._held_counted = True


def count_sim_allocations():
    for mod_name, cls_name, methods in _SIM_METHODS:
        cls = getattr(__import__(mod_name), cls_name)
        # One flag per class: an attribute name made per method ("_counted_" + m) would be a
        # qstr interned in the heap, 23 of them, counted in the heap figures as the firmware's.
        if getattr(cls, "_sim_counted", False):
            continue
        cls._sim_counted = True
        for m in methods:
            fn = getattr(cls, m, None)
            if fn is not None:
                setattr(cls, m, _counting(fn))


class World:
    """The hub's control link (tools/bench_app_world.py)."""

    def __init__(self):
        from simlink import Control

        self.ctl = Control()
        self.info = self.ctl.call("bench_info")

    def call(self, cmd, **args):
        return self.ctl.call(cmd, **args)


def driver_parts(cfg):
    """The simulation board's real drivers, built as boards/unix_sim/board.py builds them."""
    import board

    count_sim_allocations()
    _count_sim_objects()
    p = Parts()
    p.display = board.make_display()
    p.feedback = board.make_feedback()
    p.reader = board.make_reader("pn532_i2c")
    p.psam_link = board.make_psam_link()
    p.transport = board.make_transport(cfg)
    return p


def store(v):
    """The validator's record store, whichever the application holds (journal or txlog)."""
    for name in ("txlog", "log", "journal"):
        s = getattr(v, name, None)
        if s is not None and hasattr(s, "last_seq"):
            return s
    raise AttributeError("the validator holds no record store")


class Rig:
    def __init__(self, bundle, img=None, fs_dev=None, parts=None, drivers=False):
        if img is None:
            # A name of its own: two test runs (or a test and the bench) share one /tmp.
            img = "/tmp/app_rig-%d" % (time.ticks_us() & 0xFFFFFF)
        self.dev = fs_dev or FileDev(img + ".img", 512)
        vfs.VfsLfs2.mkfs(self.dev)
        vfs.mount(vfs.VfsLfs2(self.dev), MOUNT)
        self.txdev = FileDev(img + ".txlog", 64)  # 256 KiB, the 4 MB boards' txlog partition
        self.world = World() if drivers else None
        raw = {
            "device_id": 17,
            "secret": SECRET_HEX,
            "route": 101,
            "stop": 3,
            "city": "2482",
            "institution": "1200290000000000",
            "collector_url": "http://backoffice",
        }
        if drivers:
            raw["collector_url"] = self.world.info["url"]
            raw["modem"] = "sim7600"
            raw["apn"] = "cmnet"
        self.cfg = config.validate(raw)
        p = parts or (driver_parts(self.cfg) if drivers else Parts())
        # The in-process card and back office only where they stand in for a part (with the
        # real drivers they would be harness memory in the heap figures).
        self.card = self.office = None
        if p.reader is None or p.psam_link is None or p.transport is None:
            FakeCard, Reader, PsamLink, BackOffice = inproc()
        if p.reader is None:
            self.card = FakeCard()
            p.reader = Reader(self.card)
        if p.psam_link is None:
            p.psam_link = PsamLink()
        if p.transport is None:
            self.office = BackOffice(self.cfg["secret_bytes"])
            p.transport = self.office
        p.txlog_dev = self.txdev
        p.rtc_seconds = lambda: clock[0]
        self.parts = p
        self.v = v = app.Validator(p, self.cfg)
        if isinstance(bundle, str):
            ok, why = self.install_file(bundle)
            assert ok, why
        elif bundle is not None:
            ok, why = v.params.install_bytes(bundle, clock[0])
            assert ok, why
        v.params.tick(clock[0])
        self.booted = v.boot()

    def install_file(self, path, chunk=1024):
        """A bundle from a host file, streamed through the parameters' receiver in 1 KB chunks
        as a download arrives: no block of the bundle's size in the heap."""
        buf = bytearray(chunk)
        with open(path, "rb") as f:
            f.seek(0, 2)
            rx = self.v.params.receiver(f.tell())
            f.seek(0)
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                rx.write(memoryview(buf)[:n])
        return rx.finish(clock[0])

    @property
    def store(self):
        return store(self.v)

    def tap(self):
        """One presentation: poll the reader, then the application's whole tap."""
        clock[0] += 97  # past the duplicate-tap window, through the day
        target = self.parts.reader.poll()
        if target is None:
            return "NO_CARD"
        return self.v.handle_tap(target)

    def between_taps(self):
        """What happens outside a measured tap: the rider leaves, the next one comes."""
        if self.world is not None:
            self.parts.reader.release()
            self.world.call("bench_card", present=False)
            self.world.call("bench_card", present=True)

    def before_upload(self):
        if self.world is not None:
            self.world.call("bench_time", t=clock[0])

    def upload(self):
        return asyncio.run(self.v.uplink.sync())

    def close(self):
        try:
            vfs.umount(MOUNT)
        except OSError:
            pass
        if isinstance(self.dev, FileDev):
            self.dev.close()
        self.txdev.close()


log.set_level(log.INFO, echo=False)
