# The whole application (firmware/app.py Validator: journal on littlefs, parameters with the
# example bundle, decision, purchase, uplink) for `taps` flat-fare taps, uploading every `every`
# taps through an in-process back office, with zero-latency fakes for reader, card and PSAM.
# argv: taps, every, mode (1: measure the heap around every operation; 0: just run, for the
# smallest -X heapsize search; 2: time the taps with the flash in RAM), flash image path, bundle
# path.
#   heap_peak_bytes   max over operations of (live heap before it + what it allocates with the
#                     collector off): the most heap any tap or upload round can need at once
#   live_max_bytes    max live heap (after gc.collect()) between operations
#   app_tap_us        (mode 0) median time of one whole tap: decision, purchase, journal
import gc
import sys
import time

import benchlib

taps = benchlib.arg(1, 1000)
every = benchlib.arg(2, 20)
measure = benchlib.arg(3, 1)
IMG = sys.argv[4] if len(sys.argv) > 4 else "/tmp/bench_app.img"
BND = sys.argv[5] if len(sys.argv) > 5 else "bench/out/bundle.bin"

gc.collect()
heap0 = gc.mem_alloc()

import array  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402

import app  # noqa: E402
import config  # noqa: E402
import log  # noqa: E402
import purchase  # noqa: E402
import timeutil  # noqa: E402
import uplink_proto as up  # noqa: E402
import vfs  # noqa: E402
from bench_fakes import FakeCard, FakePsam  # noqa: E402

gc.collect()
modules_bytes = gc.mem_alloc() - heap0

SECRET_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
T0 = timeutil.to_seconds(2026, 11, 30, 0, 30, 0)  # 08:30 local


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
    """The transport: answers every upload as the collector would (all records held)."""

    def __init__(self, secret):
        self.secret = secret
        self.held = 0
        self.bytes = 0
        self.requests = 0

    async def request(self, method, url, body=b"", headers=None, timeout_ms=30000):
        self.requests += 1
        self.bytes += len(body)
        counter = int.from_bytes(bytes(body[8:12]), "big")
        kind = body[3]
        if kind == up.T_UPLOAD:
            first = int.from_bytes(bytes(body[20:24]), "big")
            n = int.from_bytes(bytes(body[24:26]), "big")
            if n:
                self.held = first + n - 1
        dev_id = int.from_bytes(bytes(body[4:8]), "big")
        args = (self.secret, kind, 0, dev_id, counter, counter, clock[0])
        try:  # the answer's MAC covers the request's (docs/protocol.md), where the codec has it
            ans = up.encode_answer(*args, value=self.held, bind=bytes(body[len(body) - 32 :]))
        except TypeError:
            ans = up.encode_answer(*args, value=self.held)
        return 200, ans

    def status(self):
        return {"dbm": -70}


clock = [T0]


class Parts:
    reader = None
    psam_link = None
    transport = None
    display = None
    feedback = None
    wdt = None
    wdt_grace_ms = 8000
    root = "/flash"
    emit = None
    journal_config = None
    param_slots = None
    reset_cause = "power-on"
    extra_task = None


class CountingDev:
    """Host-file flash (no heap), counting erases and programs."""

    def __init__(self, path, blocks=512, bs=4096):
        self.bs = bs
        self.n = blocks
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


log.set_level(log.INFO, echo=False)
if measure == 2:
    import ramdisk

    dev = ramdisk.RAMBlockDev(4096, 128)  # timing: flash in RAM, no host file I/O in the tap
else:
    dev = CountingDev(IMG)
vfs.VfsLfs2.mkfs(dev)
vfs.mount(vfs.VfsLfs2(dev), "/flash")

cfg = config.validate(
    {
        "device_id": 17,
        "secret": SECRET_HEX,
        "route": 101,
        "stop": 3,
        "city": "2482",
        "institution": "1200290000000000",
        "collector_url": "http://backoffice",
    }
)
parts = Parts()
card = FakeCard()
parts.reader = Reader(card)
parts.psam_link = PsamLink()
parts.transport = BackOffice(cfg["secret_bytes"])
parts.rtc_seconds = lambda: clock[0]

v = app.Validator(parts, cfg)
with open(BND, "rb") as f:
    data = f.read()
ok, why = v.params.install_bytes(data, clock[0])
assert ok, why
del data
v.params.tick(clock[0])
assert v.boot()
assert v.params.fares is not None, "no fare table active"

# Timing mode: where a tap's time goes. The journal calls and the decision are wrapped on the
# instances (the purchase calls them through these attributes), accumulating microseconds.
spent = {"journal_append": 0, "pending_save": 0, "pending_clear": 0, "decide": 0}


def _timed(name, fn):
    def wrapper(*a, **kw):
        t0 = time.ticks_us()
        try:
            return fn(*a, **kw)
        finally:
            spent[name] += time.ticks_diff(time.ticks_us(), t0)

    return wrapper


if measure == 2:
    j = v.journal
    j.append = _timed("journal_append", j.append)
    j.save_pending = _timed("pending_save", j.save_pending)
    j.clear_pending = _timed("pending_clear", j.clear_pending)


class _TimedDecider:
    def __init__(self, d):
        self.d = d

    def prepare(self, *a):
        return self.d.prepare(*a)

    def __call__(self, info):
        t0 = time.ticks_us()
        try:
            return self.d(info)
        finally:
            spent["decide"] += time.ticks_diff(time.ticks_us(), t0)

    def __getattr__(self, name):
        return getattr(self.d, name)


if measure == 2:
    v.decider = _TimedDecider(v.decider)

# Preallocated: growing lists here would show up as heap growth of the application.
tap_alloc = array.array("i", bytes(4 * taps))
tap_us = array.array("i", bytes(4 * taps))
up_alloc = array.array("i", bytes(4 * (taps // every + 1)))
stat = array.array("i", [0, 0, 0, 0, 0, 0])  # peak, live max, n tap, n up, live first, live last
reasons = {}
e0 = p0 = b0 = 0


async def upload():
    return await v.uplink.sync()


def op(fn, sink, idx):
    """Run fn once; with measuring on, the live heap before it and what it allocates."""
    if measure != 1:
        t0 = time.ticks_us()
        out = fn()
        if sink is tap_alloc:
            tap_us[idx] = time.ticks_diff(time.ticks_us(), t0)
            stat[2] = idx + 1
        return out
    gc.collect()
    base = gc.mem_alloc()
    gc.disable()
    try:
        out = fn()
        used = gc.mem_alloc() - base
    finally:
        gc.enable()
    sink[idx] = used
    if sink is tap_alloc:
        stat[2] = idx + 1
    else:
        stat[3] = idx + 1
    if base + used > stat[0]:
        stat[0] = base + used
    if base > stat[1]:
        stat[1] = base
    if not stat[4]:
        stat[4] = base
    stat[5] = base
    return out


def one_tap():
    return v.handle_tap(parts.reader.target)


uploads = 0
c0 = benchlib.cpu_us()
for i in range(taps):
    if i == 20:  # flash work counted from here (past the boot record and first segment)
        e0, p0, b0 = dev.erases, dev.programs, dev.programmed
    clock[0] += 97  # past the duplicate-tap window, through the day
    reason = op(one_tap, tap_alloc, i)
    reasons[reason] = reasons.get(reason, 0) + 1
    if measure == 0:
        gc.collect()  # as Validator.tap_loop does once the card has left
    if (i + 1) % every == 0:
        ok = op(lambda: asyncio.run(upload()), up_alloc, uploads)
        assert ok, v.uplink.last_error
        uploads += 1
c1 = benchlib.cpu_us()
gc.collect()
counted = taps - 20
benchlib.emit(
    taps=taps,
    uploads=uploads,
    reasons=reasons,
    journal_last=v.journal.last_seq,
    journal_acked=v.journal.acked_seq,
    backoffice_held=parts.transport.held,
    modules_bytes=modules_bytes,
    heap_peak_bytes=stat[0],
    live_max_bytes=stat[1],
    live_first_bytes=stat[4],
    live_last_bytes=stat[5],
    tap_alloc_median=benchlib.median(list(tap_alloc[: stat[2]])) if measure == 1 else 0,
    tap_alloc_max=max(tap_alloc) if measure == 1 else 0,
    upload_alloc_max=max(up_alloc) if measure == 1 else 0,
    flash_erases_per_tap=(dev.erases - e0) / counted,
    flash_programs_per_tap=(dev.programs - p0) / counted,
    flash_bytes_per_tap=(dev.programmed - b0) / counted,
    debits=card.debits,
    ok=reasons.get(purchase.OK, 0) + reasons.get("OK_LOW", 0),
    app_tap_us=benchlib.median(list(tap_us[: stat[2]])) if measure != 1 else 0,
    app_tap_us_min=min(tap_us[: stat[2]]) if measure != 1 else 0,
    app_cpu_us_per_tap=(c1 - c0) / taps if c0 is not None else 0,  # uploads included
    spent_us_per_tap={k: spent[k] / taps for k in spent},
)
vfs.umount("/flash")
if measure != 2:
    os.remove(IMG)
