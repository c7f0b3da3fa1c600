# The power-cut method for firmware/txlog.py, shared by tests/mpy/test_txlog_powercut.py (a
# sampled subset, asserting) and tools/bench_mpy/txlog_powercut.py (every point, counting):
#
# A deterministic run (taps writing an intent then its outcome, intents left open and resolved
# later, refusals, events, acknowledgements lagging behind, idle-time maintenance or none, so
# rolls happen both ways, reboots, a wipe, several laps of the ring with sector erasure) is
# recorded once on a RAM raw flash with every program/erase logged. The image a cut during
# operation N leaves is the log replayed up to N plus op N torn ("clean": not at all,
# "prefix": a random-length prefix, "bits": random bits of its range). Each image is recovered
# and checked: every record whose append returned is there, once, intact, in order, unless
# acknowledged; no number is issued twice; the open intents are exactly those the run had open
# (the one in flight either way); the log goes on. A second cut at every operation of that
# recovery is checked the same way.
import rawflash
import record
import txlog

SECTORS = 4
CFG = {"open_max": 16, "release_age": 1000000, "purchase_reserve": 8}
TEARS = ("clean", "prefix", "bits")


def card(i):
    return bytes((0x31, 0, 0, 0, (i >> 8) & 0xFF, i & 0xFF, 0x56, 0x78, 0x90, 0x12))


def fields(kind, i, extra=0):
    return {
        "kind": kind,
        "time": 800000000 + i * 7 + extra,
        "amount": 200 + i % 50,
        "balance_before": 5000,
        "balance_after": 4800 - i % 50,
        "card_no": card(i),
        "card_atc": i & 0xFFFF,
        "route": 12,
        "stop": i % 30,
        "reason": extra,
    }


class Run:
    """The recorded run: events (what, value, ops done when it returned) and the records."""

    def __init__(self):
        self.events = []
        self.recs = {}  # seq -> bytes of every record appended
        self.intent_of = {}  # seq of an intent -> the step that opened it
        self.closes = {}  # seq of an outcome -> seq of the intent it closed


def workload(dev, steps, run):
    ev = run.events
    lg = txlog.TxLog(dev, CFG)
    ev.append(("open", 0, dev.ops))
    open_by_step = {}  # step -> intent seq, for the intents left open
    later = {}  # step to resolve at -> step of the intent

    def put(kind, i, extra=0):
        f = fields(kind, i, extra)
        seq = lg.append(f)
        run.recs[seq] = record.encode(f, seq)
        closes = 0
        if kind == record.DEBIT_INTENT:
            run.intent_of[seq] = i
            open_by_step[i] = seq
        elif kind in record.OUTCOME_KINDS and i in open_by_step:
            closes = open_by_step.pop(i)
            run.closes[seq] = closes
        ev.append(("append", seq, dev.ops, kind, closes))
        return seq

    for i in range(1, steps + 1):
        r = i % 10
        if i in later:
            put(record.PURCHASE_RECOVERED, later.pop(i))  # the reserve takes it when full
        if not lg.can_accept_purchase():
            pass  # full (the uplink is down): taps refused, nothing written
        elif r <= 7:
            put(record.DEBIT_INTENT, i)
            if r <= 5:
                put(record.PURCHASE, i)
            elif r == 6:
                put(record.DEBIT_VOID, i, 1)
            else:
                later[i + 13] = i  # the rider comes back 13 steps later
        elif r == 8:
            put(record.REFUSED, i, record.REASON_BLACKLIST)
        else:
            put(record.BOOT, i)
        outage = 120 <= i % 400 < 260  # the uplink down for a while: the log fills up
        if i % 9 == 0 and not outage and lg.last_seq - 4 > lg.acked_seq:
            v = lg.last_seq - 4
            lg.ack(v)
            ev.append(("ack", v, dev.ops))
        if i % 4 != 3:  # idle time after most taps, none after some
            k = 0
            while k < 2 and lg.maintain():
                k += 1
            ev.append(("maintain", 0, dev.ops))
        if i % 500 == 450:  # maintenance wipe: cursor to the end (open intents kept), erasure
            lg.wipe()
            ev.append(("ack", lg.acked_seq, dev.ops))
        if i % 97 == 0:
            lg = txlog.TxLog(dev, CFG)
            ev.append(("reboot", 0, dev.ops))
    return lg


def record_run(steps):
    dev = rawflash.RawFlash(SECTORS)
    dev.record_ops()
    run = Run()
    workload(dev, steps, run)
    run.ops = len(dev.oplog)
    run.dev = dev
    return run


def expected_at(run, n):
    """State when a cut hit op n: (last seq returned, highest ack returned, open intent seqs,
    the event in flight or None)."""
    last = 0
    acked = 0
    opened = []
    inflight = None
    for e in run.events:
        if e[2] > n:
            inflight = e
            break
        if e[0] == "append":
            last = e[1]
            if e[3] == record.DEBIT_INTENT:
                opened.append(e[1])
            elif e[4]:
                opened.remove(e[4])
        elif e[0] == "ack":
            acked = e[1]
    return last, acked, opened, inflight


def check_log(lg, run, n, problems, where):
    last, acked, opened, inflight = expected_at(run, n)
    fly = inflight[0] if inflight else None
    ok_last = [last]
    if fly == "append":
        ok_last.append(inflight[1])
    if lg.last_seq not in ok_last:
        problems.append("%s: last seq %d, want %r" % (where, lg.last_seq, ok_last))
    ok_acked = acked
    if fly == "ack":
        ok_acked = inflight[1]
    if lg.acked_seq > ok_acked:
        problems.append("%s: acked %d beyond %d" % (where, lg.acked_seq, ok_acked))
    # every record above the back office's cursor: present once, intact, in order
    got = lg.records_after(lg.acked_seq, 100000)
    prev = lg.acked_seq
    seen = 0
    for b in got:
        s = record.seq_of(b)
        if s <= prev:
            problems.append("%s: record %d out of order or doubled" % (where, s))
        elif run.recs.get(s) != b:
            problems.append("%s: record %d altered" % (where, s))
        prev = s
        seen += 1
    want = lg.last_seq - lg.acked_seq
    lo = acked if acked > lg.acked_seq else lg.acked_seq
    # records the back office had not acknowledged must all be there
    need = lg.last_seq - lo
    present = sum(1 for b in got if record.seq_of(b) > lo)
    if present != need:
        problems.append("%s: %d of %d unacknowledged records" % (where, present, need))
    if seen > want:
        problems.append("%s: %d records for a backlog of %d" % (where, seen, want))
    # the open intents
    op = [d["seq"] for d in lg.open_intents()]
    ok = [opened]
    if fly == "append" and inflight[3] == record.DEBIT_INTENT:
        ok.append(opened + [inflight[1]])
    elif fly == "append" and inflight[4]:
        ok.append([x for x in opened if x != inflight[4]])
    if op not in ok:
        problems.append("%s: open intents %r, want one of %r" % (where, op, ok))


def check_image(run, image, n, where, second=True):
    """Problems (strings) after a cut that left `image`; with second=True also after a second
    cut at every program/erase of the recovery."""
    problems = []
    dev = rawflash.RawFlash(SECTORS, data=bytearray(image))
    dev.record_ops()
    try:
        lg = txlog.TxLog(dev, CFG)
    except Exception as e:  # noqa: BLE001 - any failure to recover is a loss
        return ["%s: recovery failed: %r" % (where, e)]
    rec_ops = len(dev.oplog)
    check_log(lg, run, n, problems, where)
    try:
        before = lg.last_seq
        f = fields(record.BOOT, 99999)
        s = lg.append(f)
        if s != before + 1:
            problems.append("%s: next number %d after %d" % (where, s, before))
        lg2 = txlog.TxLog(dev, CFG)
        if lg2.record(s) != record.encode(f, s) or lg2.last_seq != s:
            problems.append("%s: record after recovery lost" % where)
    except Exception as e:  # noqa: BLE001
        problems.append("%s: append after recovery failed: %r" % (where, e))
    if second:
        for j in range(rec_ops):
            for tear in TEARS[1:]:
                d2 = rawflash.RawFlash(SECTORS, data=bytearray(image))
                d2.arm(j, tear, n * 7 + j)
                try:
                    txlog.TxLog(d2, CFG)
                    problems.append("%s: recovery cut %d did not cut" % (where, j))
                    continue
                except rawflash.PowerCut:
                    pass
                d2.restore_power()
                try:
                    lg3 = txlog.TxLog(d2, CFG)
                except Exception as e:  # noqa: BLE001
                    problems.append("%s: recovery after a cut recovery: %r" % (where, e))
                    continue
                check_log(lg3, run, n, problems, "%s, recovery cut %d %s" % (where, j, tear))
    return problems


def image_at(run, n, tear, base=None):
    """The image a cut during op n leaves (base: the image after ops 0..n-1, if known)."""
    if base is None:
        base = bytearray(b"\xff" * (SECTORS * 4096))
        for i in range(n):
            run.dev.apply_op(base, i)
    img = bytearray(base)
    if n < run.ops and tear != "clean":
        run.dev.apply_op(img, n, tear, n + 1)
    return img


def live_image(steps, n, tear):
    """The image a real cut at op n leaves (to check the replay against)."""
    dev = rawflash.RawFlash(SECTORS)
    dev.arm(n, tear, n + 1)
    try:
        workload(dev, steps, Run())
    except rawflash.PowerCut:
        return dev.data
    return None


def sweep(run, steps, stride=1, offset=0, live_every=0, second_every=1, on_point=None):
    """Check cut points offset, offset+stride, ... of every tear mode; returns (points, problems
    list, live comparisons)."""
    problems = []
    points = 0
    live = 0
    image = bytearray(b"\xff" * (SECTORS * 4096))
    for n in range(run.ops + 1):
        if n % stride == offset % stride:
            for tear in TEARS:
                if n == run.ops and tear != "clean":
                    continue
                img = image_at(run, n, tear, image)
                where = "cut at op %d (%s)" % (n, tear)
                if live_every and (points % live_every) == 0 and n < run.ops:
                    li = live_image(steps, n, tear)
                    live += 1
                    if li is None or bytes(li) != bytes(img):
                        problems.append(where + ": replayed image differs from a live cut")
                problems.extend(check_image(run, img, n, where, (points % second_every) == 0))
                points += 1
                if on_point:
                    on_point(points, problems)
        if n < run.ops:
            run.dev.apply_op(image, n)
    return points, problems, live
