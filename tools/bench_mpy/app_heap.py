# The whole application (tests/mpy/app_rig.py: firmware/app.py's Validator with its record store,
# parameters with the example bundle, decision, purchase, uplink) for `taps` flat-fare taps,
# uploading every `every` taps through an in-process back office, which offers a parameter
# update (a blacklist delta, fetched and activated through the uplink) half-way. Run by
# tools/benchmarks.py on micropython32 (the firmware frozen, 32-bit objects: a board's heap).
# argv: taps, every, mode, flash image path prefix, bundle path, drivers (0: in-process card, PSAM
# and back office; 1: the simulation board's real drivers against tools/bench_app_world.py on
# the hub, SIM_PORT: reader, PSAM link, modem driver and uplink over the simulated modem to a
# real collector, display, feedback; the simulated buses' own allocations are counted apart)
#   mode 1: measure around every operation (tap, upload round):
#     heap_peak_bytes   max over operations of (live heap before it + what it allocates with the
#                       collector off): the most heap any tap or upload round can need at once
#     live_max_bytes    max live heap (after gc.collect()) between operations
#     and, from the tap `warm` on, a heap map (micropython.mem_info(1)) before and after each
#     operation, which the host compares for the largest single allocation ("@@MAP" lines)
#   mode 0: just run, as Validator.tap_loop does (gc.collect() after each tap): the smallest
#           -X heapsize search
#   mode 2: time the taps
import gc
import sys
import time

import benchlib
import micropython

taps = benchlib.arg(1, 1000)
every = benchlib.arg(2, 20)
measure = benchlib.arg(3, 1)
IMG = sys.argv[4] if len(sys.argv) > 4 else "/tmp/bench_app"
BND = sys.argv[5] if len(sys.argv) > 5 else "bench/out/bundle.bin"
drivers = benchlib.arg(6, 0)
WARM = 20  # taps before the steady state (boot record, first segment, first upload's buffers)

gc.collect()
heap0 = gc.mem_alloc()

import array  # noqa: E402

# The firmware's modules first, then the simulated buses' (machine's C code on a board), then
# the harness's: each part's own module heap measured apart.
import app  # noqa: E402, F401
import bundle  # noqa: E402
import cardlists  # noqa: E402
import purchase  # noqa: E402
import ringbuf  # noqa: E402, F401
import uplink_proto  # noqa: E402, F401
import vfs  # noqa: E402, F401

gc.collect()
h1 = gc.mem_alloc()
if drivers:
    import sim_i2c  # noqa: E402, F401
    import sim_pin  # noqa: E402, F401
    import sim_spi  # noqa: E402, F401
    import sim_uart  # noqa: E402, F401
    import simlink  # noqa: E402, F401
gc.collect()
h2 = gc.mem_alloc()
sim_modules_bytes = h2 - h1

import app_rig  # noqa: E402

gc.collect()
harness_bytes = gc.mem_alloc() - h2  # grows below by the harness's own arrays
modules_bytes = gc.mem_alloc() - heap0 - sim_modules_bytes - harness_bytes

fs_dev = None
if measure == 2:
    import ramdisk

    fs_dev = ramdisk.RAMBlockDev(4096, 128)  # timing: flash in RAM, no host file I/O in the tap
# The example bundle streamed in 1 KB chunks, as a download arrives (no 16 KB block at boot).
rig = app_rig.Rig(BND, img=IMG, fs_dev=fs_dev, drivers=bool(drivers))
gc.collect()
v = rig.v
assert rig.booted
assert v.params.fares is not None, "no fare table active"
base_version = v.params.version
# The update offered half-way: two more blacklisted cards, as the back office sends a delta.
NEW_CARDS = ("3104895199900000003", "2482000000000000017")
DELTA = None
if not drivers:
    adds = [cardlists.card_key(c) for c in NEW_CARDS]
    DELTA = bundle.build(app_rig.SECRET, base_version + 1, 0, None, None, (base_version, adds, []))
    del adds
sim = app_rig.SIM_ALLOC
boot_bytes = gc.mem_alloc() - heap0

# Timing mode: where a tap's time goes, the decision wrapped on the instance.
spent = {"decide": 0}


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

# Preallocated: growing lists here would show up as heap growth of the application. Only the
# mode that reads an array has it: in mode 0 (the heap search) the harness holds nothing per tap.
gc.collect()
h3 = gc.mem_alloc()
_per_tap = taps if measure == 1 else 1
tap_alloc = array.array("i", bytes(4 * _per_tap))
tap_sim = array.array("i", bytes(4 * _per_tap))  # of tap_alloc: the simulated buses' part
tap_us = array.array("i", bytes(4 * (taps if measure == 2 else 1)))
up_alloc = array.array("i", bytes(4 * (taps // every + 1 if measure == 1 else 1)))
up_sim = array.array("i", bytes(4 * len(up_alloc)))
stat = array.array("i", [0, 0, 0, 0, 0, 0])  # peak, live max, n tap, n up, live first, live last
TAP = 1
UPLOAD = 2
gc.collect()
harness_bytes += gc.mem_alloc() - h3
reasons = {}
e0 = p0 = b0 = 0


def op(fn, kind, idx, mapped):
    """Run fn once; with measuring on, the live heap before it and what it allocates, and with
    `mapped` the heap maps around it."""
    if measure != 1:
        t0 = time.ticks_us()
        out = fn()
        if kind == TAP:
            if measure == 2:
                tap_us[idx] = time.ticks_diff(time.ticks_us(), t0)
            stat[2] = idx + 1
        return out
    sink = tap_alloc if kind == TAP else up_alloc
    gc.collect()
    base = gc.mem_alloc()
    s0 = sim[0]
    if mapped:
        print("@@MAP0 tap" if kind == TAP else "@@MAP0 upload")
        micropython.mem_info(1)
        print("\n@@MAPEND")
    gc.disable()
    try:
        out = fn()
        used = gc.mem_alloc() - base
        if mapped:
            print("@@MAP1")
            micropython.mem_info(1)
            print("\n@@MAPEND")
    finally:
        gc.enable()
    sink[idx] = used
    (tap_sim if kind == TAP else up_sim)[idx] = sim[0] - s0
    if kind == TAP:
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


dev = rig.dev
uploads = 0
offered_at = taps // 2
c0 = benchlib.cpu_us()
for i in range(taps):
    if i == WARM:  # flash work counted from here (past the boot record and first segment)
        e0, p0, b0 = dev.erases, dev.programs, dev.programmed
    if i == offered_at:
        if drivers:
            rig.world.call(
                "bench_publish_delta", version=base_version + 1, base=base_version, cards=NEW_CARDS
            )
        else:
            rig.office.offer(base_version + 1, DELTA, pkind=2, base=base_version)
    if drivers and i % 300 == 0:
        rig.world.call("bench_topup", balance=90000)
    reason = op(rig.tap, TAP, i, i >= WARM)
    rig.between_taps()
    reasons[reason] = reasons.get(reason, 0) + 1
    if measure == 0:
        gc.collect()  # as Validator.tap_loop does once the card has left
    if (i + 1) % every == 0:
        rig.before_upload()
        ok = op(rig.upload, UPLOAD, uploads, i >= WARM)
        assert ok, v.uplink.last_error
        uploads += 1
        if i >= offered_at and v.params.version == base_version:
            import log  # the round that should have activated the update: say why not

            for line in log.recent(8):
                print(line)
            raise AssertionError("the parameter update was not activated")
c1 = benchlib.cpu_us()
gc.collect()
counted = max(1, taps - WARM)
st = rig.store
assert v.params.version == base_version + 1, "the parameter update was not activated"
benchlib.emit(
    taps=taps,
    uploads=uploads,
    reasons=reasons,
    journal_last=st.last_seq,
    journal_acked=st.acked_seq,
    backoffice_held=rig.store.acked_seq if drivers else rig.office.held,
    drivers=drivers,
    tap_sim_alloc_median=benchlib.median(list(tap_sim[WARM : stat[2]])) if measure == 1 else 0,
    # (the statistics above and below allocate only in modes 1 and 2, whose heap is large)
    tap_firmware_alloc_median=benchlib.median(
        [tap_alloc[k] - tap_sim[k] for k in range(WARM, stat[2])]
    )
    if measure == 1
    else 0,
    params_version=v.params.version,
    modules_bytes=modules_bytes,
    boot_bytes=boot_bytes,
    heap_peak_bytes=stat[0],
    live_max_bytes=stat[1],
    live_first_bytes=stat[4],
    live_last_bytes=stat[5],
    tap_alloc_median=benchlib.median(list(tap_alloc[WARM : stat[2]])) if measure == 1 else 0,
    tap_alloc_max=max(tap_alloc[WARM:]) if measure == 1 else 0,
    upload_alloc_max=max(up_alloc) if measure == 1 else 0,
    upload_firmware_alloc_max=max(up_alloc[k] - up_sim[k] for k in range(stat[3]))
    if measure == 1 and stat[3]
    else 0,
    sim_held_bytes=app_rig.SIM_HELD[0],
    sim_modules_bytes=sim_modules_bytes,
    harness_bytes=harness_bytes,
    flash_erases_per_tap=(dev.erases - e0) / counted,
    flash_programs_per_tap=(dev.programs - p0) / counted,
    flash_bytes_per_tap=(dev.programmed - b0) / counted,
    debits=0 if drivers else rig.card.debits,
    ok=reasons.get(purchase.OK, 0) + reasons.get("OK_LOW", 0),
    app_tap_us=benchlib.median(list(tap_us[: stat[2]])) if measure == 2 else 0,
    app_tap_us_min=min(tap_us[: stat[2]]) if measure == 2 else 0,
    app_cpu_us_per_tap=(c1 - c0) / taps if c0 is not None else 0,  # uploads included
    spent_us_per_tap={k: spent[k] / taps for k in spent},
)

# What the live heap holds, by part: each of the Validator's attributes, then the board parts,
# then the asyncio loop (with the tasks and what they reference) dropped in turn; the rest is
# the modules, the file systems and the harness. Order matters where parts share objects.
live_parts = {}
if measure == 1:

    def _freed(obj, name=None):
        gc.collect()
        a = gc.mem_alloc()
        if name is None:
            obj()
        else:
            setattr(obj, name, None)
        gc.collect()
        return a - gc.mem_alloc()

    gc.collect()
    live_total = gc.mem_alloc()
    for name in sorted(v.__dict__):
        if not isinstance(getattr(v, name), (int, str, bool, float, type(None))):
            live_parts["v." + name] = _freed(v, name)
    for name in ("transport", "psam_link", "reader", "display", "feedback"):
        live_parts["parts." + name] = _freed(rig.parts, name)
    import asyncio

    live_parts["asyncio loop"] = _freed(asyncio.new_event_loop)
    gc.collect()
    live_parts["rest (modules, file systems, harness)"] = gc.mem_alloc()
    live_parts["total"] = live_total
    benchlib.emit(live_parts=live_parts)
rig.close()
