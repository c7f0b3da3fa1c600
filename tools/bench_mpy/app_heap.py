# The whole application (tests/mpy/app_rig.py: firmware/app.py's Validator with its record store,
# parameters with the example bundle, decision, purchase, uplink) for `taps` flat-fare taps,
# uploading every `every` taps through an in-process back office, which offers a parameter
# update (a blacklist delta, fetched and activated through the uplink) half-way. Run by
# tools/benchmarks.py on micropython32 (the firmware frozen, 32-bit objects: a board's heap).
# argv: taps, every, mode, flash image path prefix, bundle path
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
WARM = 20  # taps before the steady state (boot record, first segment, first upload's buffers)

gc.collect()
heap0 = gc.mem_alloc()

import array  # noqa: E402

import app_rig  # noqa: E402
import bundle  # noqa: E402
import cardlists  # noqa: E402
import purchase  # noqa: E402

gc.collect()
modules_bytes = gc.mem_alloc() - heap0

with open(BND, "rb") as f:
    data = f.read()
fs_dev = None
if measure == 2:
    import ramdisk

    fs_dev = ramdisk.RAMBlockDev(4096, 128)  # timing: flash in RAM, no host file I/O in the tap
rig = app_rig.Rig(data, img=IMG, fs_dev=fs_dev)
del data
gc.collect()
v = rig.v
assert rig.booted
assert v.params.fares is not None, "no fare table active"
base_version = v.params.version
# The update offered half-way: two more blacklisted cards, as the back office sends a delta.
DELTA = bundle.build(
    app_rig.SECRET,
    base_version + 1,
    0,
    None,
    None,
    (
        base_version,
        [cardlists.card_key("3104895199900000003"), cardlists.card_key("2482000000000000017")],
        [],
    ),
)
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

# Preallocated: growing lists here would show up as heap growth of the application.
tap_alloc = array.array("i", bytes(4 * taps))
tap_us = array.array("i", bytes(4 * taps))
up_alloc = array.array("i", bytes(4 * (taps // every + 1)))
stat = array.array("i", [0, 0, 0, 0, 0, 0])  # peak, live max, n tap, n up, live first, live last
reasons = {}
e0 = p0 = b0 = 0


def op(fn, sink, idx, mapped):
    """Run fn once; with measuring on, the live heap before it and what it allocates, and with
    `mapped` the heap maps around it."""
    if measure != 1:
        t0 = time.ticks_us()
        out = fn()
        if sink is tap_alloc:
            tap_us[idx] = time.ticks_diff(time.ticks_us(), t0)
            stat[2] = idx + 1
        return out
    gc.collect()
    base = gc.mem_alloc()
    if mapped:
        print("@@MAP0 tap" if sink is tap_alloc else "@@MAP0 upload")
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


dev = rig.dev
uploads = 0
offered_at = taps // 2
c0 = benchlib.cpu_us()
for i in range(taps):
    if i == WARM:  # flash work counted from here (past the boot record and first segment)
        e0, p0, b0 = dev.erases, dev.programs, dev.programmed
    if i == offered_at:
        rig.office.offer(base_version + 1, DELTA, pkind=2, base=base_version)
    reason = op(rig.tap, tap_alloc, i, i >= WARM)
    reasons[reason] = reasons.get(reason, 0) + 1
    if measure == 0:
        gc.collect()  # as Validator.tap_loop does once the card has left
    if (i + 1) % every == 0:
        ok = op(rig.upload, up_alloc, uploads, i >= WARM)
        assert ok, v.uplink.last_error
        uploads += 1
c1 = benchlib.cpu_us()
gc.collect()
counted = taps - WARM
st = rig.store
assert v.params.version == base_version + 1, "the parameter update was not activated"
benchlib.emit(
    taps=taps,
    uploads=uploads,
    reasons=reasons,
    journal_last=st.last_seq,
    journal_acked=st.acked_seq,
    backoffice_held=rig.office.held,
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
    flash_erases_per_tap=(dev.erases - e0) / counted,
    flash_programs_per_tap=(dev.programs - p0) / counted,
    flash_bytes_per_tap=(dev.programmed - b0) / counted,
    debits=rig.card.debits,
    ok=reasons.get(purchase.OK, 0) + reasons.get("OK_LOW", 0),
    app_tap_us=benchlib.median(list(tap_us[: stat[2]])) if measure != 1 else 0,
    app_tap_us_min=min(tap_us[: stat[2]]) if measure != 1 else 0,
    app_cpu_us_per_tap=(c1 - c0) / taps if c0 is not None else 0,  # uploads included
    spent_us_per_tap={k: spent[k] / taps for k in spent},
)
rig.close()
