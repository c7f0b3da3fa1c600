# One flat-fare tap, firmware alone: firmware/purchase.py's Purchaser against the zero-latency
# in-process fakes of bench_fakes.py. argv: taps per rep, reps (0 taps: set-up only, for the
# callgrind instruction-count difference; 2: the marks for the count up to the result).
#   tap_cpu_us       median over reps of (process CPU time of `taps` taps) / taps, GC included
#   tap_wall_us_min  the fastest rep in wall time; tap_vs_busy: that / the fastest baseline loop
#   tap_alloc_bytes  gc.mem_alloc() delta of one tap with the collector off, steady state
#   tap_log_alloc_bytes  the same of purchaser.log_done(), the sale's log line, which the app
#                    formats once the tap is over (firmware/app.py handle_tap): not in the tap
import gc
import time

import benchlib
import log
import memlog
import purchase
import timeutil
from bench_fakes import FakeCard, FakePsam
from psam_app import PsamApp

NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
BUSY_N = 20000
FLAT = {"debit": 200, "must_cover": 200, "route": 12, "stop": 3}

taps = benchlib.arg(1, 200)
reps = benchlib.arg(2, 7)
instr_only = benchlib.arg(3, 0)

log.set_level(log.INFO, echo=False)  # the ring is kept, nothing printed
psam = FakePsam()
lg = memlog.plain()  # the transaction log on a RAM flash device (two programs per tap)
p = purchase.Purchaser(PsamApp(psam), lg)


def idle():
    """What the back office and the idle loop do between bursts: acknowledge, erase ahead."""
    if hasattr(lg, "ack"):
        lg.ack(lg.last_seq)
        while lg.maintain():
            pass


assert p.boot()
card = FakeCard()

if instr_only == 2:
    # callgrind mode for the rider's wait alone: each tap calls gc.isenabled() first and shows
    # its result through on_debited (micropython.opt_level()), two C functions nothing else
    # calls; tools/benchmarks.py runs callgrind with --zero-before and --dump-before on them,
    # so every dump holds one tap from its start to the result (the PSAM's MAC2 check, the
    # outcome record and the deferred log line come after it, docs/tap-model.md)
    import micropython

    def _result(res):
        micropython.opt_level()

    p.cfg["on_debited"] = _result
    p.tap(card, FLAT, NOW)  # warm-up (its dump holds the set-up too: the bench skips it)
    p.log_done()
    for _ in range(taps):
        gc.isenabled()
        p.tap(card, FLAT, NOW)
        p.log_done()
    raise SystemExit(0)

if instr_only:
    # callgrind mode: exactly `taps` taps after one warm-up, nothing else timed or printed
    p.tap(card, FLAT, NOW)
    for _ in range(taps):
        p.tap(card, FLAT, NOW)
        p.log_done()
    raise SystemExit(0)

res = p.tap(card, FLAT, NOW)  # warm-up: first-use allocations, log ring filled
assert res.reason == purchase.OK, res.detail
for _ in range(70):
    p.tap(card, FLAT, NOW)
idle()

# exchange counts of one tap
c0, p0 = (card.apdus, card.bytes_out, card.bytes_in), (psam.apdus, psam.bytes_out, psam.bytes_in)
res = p.tap(card, FLAT, NOW)
assert res.reason == purchase.OK, res.detail
card_apdus = card.apdus - c0[0]
psam_apdus = psam.apdus - p0[0]
card_bytes = [card.bytes_out - c0[1], card.bytes_in - c0[2]]
psam_bytes = [psam.bytes_out - p0[1], psam.bytes_in - p0[2]]

alloc = []
log_alloc = []
for _ in range(max(reps, 5)):
    gc.collect()
    a0 = gc.mem_alloc()
    gc.disable()
    try:
        p.tap(card, FLAT, NOW)
        a1 = gc.mem_alloc()
        alloc.append(a1 - a0)
        p.log_done()  # as the app, once the rider has gone
        log_alloc.append(gc.mem_alloc() - a1)
    finally:
        gc.enable()

# Each rep times the baseline loop right before the taps: the ratio of the two drifts less than
# either time on a shared machine. CPU time (from /proc) is the figure; wall time is kept too.
per_tap = []
cpu = []
ratios = []
bases = []
for _ in range(reps):
    idle()
    b = benchlib.busy_us(BUSY_N, 3)
    gc.collect()
    d0 = card.debits
    idle_us = 0
    c0 = benchlib.cpu_us()
    t0 = time.ticks_us()
    for i in range(taps):
        p.tap(card, FLAT, NOW)
        p.log_done()
        if i % 20 == 19:
            # the log would fill and refuse every sale (a cheap refusal is not a tap); its idle
            # work is taken out again by wall time, which is at least its CPU time, so the
            # tap's figure can only come out high, never low
            i0 = time.ticks_us()
            idle()
            idle_us += time.ticks_diff(time.ticks_us(), i0)
    t = (time.ticks_diff(time.ticks_us(), t0) - idle_us) / taps
    c1 = benchlib.cpu_us()
    assert card.debits - d0 == taps, "only %d of %d timed taps sold" % (card.debits - d0, taps)
    per_tap.append(t)
    cpu.append((c1 - c0 - idle_us) / taps if c0 is not None else t)
    bases.append(b)
    ratios.append(t / b)

benchlib.emit(
    tap_cpu_us=benchlib.median(cpu),
    tap_cpu_us_runs=cpu,
    tap_wall_us=benchlib.median(per_tap),
    tap_wall_us_runs=per_tap,
    tap_alloc_bytes=benchlib.median(alloc),
    tap_alloc_runs=alloc,
    tap_log_alloc_bytes=benchlib.median(log_alloc),
    card_apdus_per_tap=card_apdus,
    psam_apdus_per_tap=psam_apdus,
    card_bytes_per_tap=card_bytes,
    psam_bytes_per_tap=psam_bytes,
    busy_us=benchlib.median(bases),
    busy_n=BUSY_N,
    tap_vs_busy=min(per_tap) / min(bases),
    tap_wall_us_min=min(per_tap),
    debits=card.debits,
)
