# The transaction log's power-cut sweep (tests/mpy/txlog_cuts.py), every cut point, counting
# instead of asserting: a deterministic run of `steps` steps (taps with intent and outcome,
# intents resolved later, refusals, acks, an uplink outage that fills the log, idle-time rolls
# and erasure or none, reboots) recorded once; each cut point in each tear mode (clean, partial
# prefix, random bits) replayed, recovered and checked; every `second`-th point also cut again at
# every operation of its recovery. argv: steps, second.
#   losses: cut points after which a record whose append had returned is missing, altered,
#   doubled or out of order, a number was issued twice, an open intent was lost or invented,
#   or the log did not recover or go on
import benchlib
import log
import txlog_cuts as C

steps = benchlib.arg(1, 1200)
second = benchlib.arg(2, 4)
log.set_level(log.ERROR, echo=False)
run = C.record_run(steps)
state = {"lossy": 0, "seen": 0}


def on_point(points, problems):
    if len(problems) > state["seen"]:
        state["lossy"] += 1
        state["seen"] = len(problems)


pts, problems, live = C.sweep(run, steps, second_every=second, live_every=500, on_point=on_point)
erases = sum(1 for a, c in run.dev.oplog if c is None)
benchlib.emit(
    steps=steps,
    ops=run.ops,
    erases=erases,
    records=len(run.recs),
    power_cut_points_tested=pts,
    power_cut_losses=state["lossy"],
    problems=len(problems),
    first_problems=problems[:5],
    live_checked=live,
    acks=sum(1 for e in run.events if e[0] == "ack"),
    reboots=sum(1 for e in run.events if e[0] == "reboot"),
)
