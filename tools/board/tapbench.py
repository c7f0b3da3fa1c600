# On-board tap bench (issue 21 point 2): `make board-bench PORT=...` runs this on the board
# (tools/board_bench.py). With a TEST card on the reader and a TEST PSAM, it sells a test fare
# (default 1 fen) N times through the firmware's own purchase (firmware/purchase.py) and times
# with time.ticks_us: the activation (poll with the card present), every card APDU and every PSAM
# APDU (by instruction byte, through timing proxies around the reader and the PSAM link:
# purchase.py is not changed), the decision with the board's own parameters when the validator
# application is loaded (decide.py: blacklist, whitelist, fare, the card history it reads; its
# verdict is recorded, the sale is always the test fare), each log append on the board's flash
# (firmware/txlog.py over erased sectors of the txlog partition, tools/board/flashwin.py; a RAM
# log when there are none), the whole tap, and the result shown on the display. One line:
# '@@BENCH {json}'.
#
# This DEBITS the card: use test cards only.
import json
import time

import selftest


class Timed:
    """A link whose commands are timed by instruction byte into rec[INS hex]."""

    def __init__(self, inner, rec):
        self._i = inner
        self._rec = rec
        self._t0 = 0
        self._ins = ""

    def _put(self, ins, us):
        self._rec.setdefault(ins, []).append(us)

    def transceive(self, apdu):
        t0 = time.ticks_us()
        r = self._i.transceive(apdu)
        self._put("%02X" % apdu[1], time.ticks_diff(time.ticks_us(), t0))
        return r

    def transceive_start(self, apdu):
        # The PSAM's split exchange: timed from the command to its collected answer (the
        # purchase works with the card in between: this is the PSAM's wall time, not its share).
        self._t0 = time.ticks_us()
        self._ins = "%02X" % apdu[1]
        return self._i.transceive_start(apdu)

    def transceive_finish(self):
        r = self._i.transceive_finish()
        self._put(self._ins, time.ticks_diff(time.ticks_us(), self._t0))
        return r

    def __getattr__(self, name):
        return getattr(self._i, name)


class RamLog:
    """The transaction log's interface in RAM (intents closed by their outcome), appends timed."""

    def __init__(self, times):
        self.opens = []
        self.seq = 0
        self.times = times

    def append(self, fields):
        import record

        t0 = time.ticks_us()
        self.seq += 1
        r = record.decode(record.encode(fields, self.seq))
        if r["kind"] == record.DEBIT_INTENT:
            self.opens.append(r)
        elif r["kind"] in record.OUTCOME_KINDS:
            key = (r["card_no"], r["card_atc"])
            self.opens = [o for o in self.opens if (o["card_no"], o["card_atc"]) != key]
        self.times.append(time.ticks_diff(time.ticks_us(), t0))
        return self.seq

    def can_accept_purchase(self):
        return True

    def open_intents(self):
        return list(self.opens)


class TimedLog:
    """The transaction log itself (firmware/txlog.py) on scratch flash, each append timed."""

    def __init__(self, txlog, times):
        self._log = txlog
        self.times = times

    def append(self, fields):
        t0 = time.ticks_us()
        seq = self._log.append(fields)
        self.times.append(time.ticks_diff(time.ticks_us(), t0))
        return seq

    def __getattr__(self, name):
        return getattr(self._log, name)


class TimedDecision:
    """The application's decision (decide.Decider with the board's parameters), timed and its
    verdict kept; what the purchase gets is always the test fare."""

    def __init__(self, decider, request, times, verdicts):
        self._d = decider
        self._req = request
        self._times = times
        self._verdicts = verdicts

    def __call__(self, info):
        t0 = time.ticks_us()
        got = self._d(info)
        self._times.append(time.ticks_diff(time.ticks_us(), t0))
        debit = getattr(got, "debit", None)
        self._verdicts.append("fare %d" % debit if debit is not None else str(got))
        return self._req


def _flash_log(out):
    """A TxLog over erased txlog sectors, or None (the reason in out["log_flash"])."""
    import flashwin

    win, why = flashwin.find()
    if win is None:
        out["log_flash"] = {"skipped": why}
        return None, None
    import txlog

    win.erase_us = out["flash_erase_us"]
    out["log_flash"] = {"partition": "txlog", "first_sector": win.first, "sectors": win.count}
    # A small reserve: three sectors hold the bench's records with room to spare.
    return win, txlog.TxLog(win, {"purchase_reserve": 4})


def run(board, cfg, n=10, fare=1, now=None, app=None):
    """-> the figures dict (also printed as '@@BENCH {json}'), or an 'error' entry."""
    chk = selftest.Run(board, cfg, app)
    r = getattr(board, "READER", {})
    bus = r.get("bus", "i2c")
    kind = (
        "rc522_spi" if r.get("chip") == "rc522" else "pn532_" + ("hsu" if bus == "uart" else bus)
    )
    out = {"n": n, "fare": fare, "card_us": {}, "psam_us": {}, "log_append_us": []}
    out["decide_us"] = []
    out["decide_verdicts"] = []
    out["flash_erase_us"] = []
    out["board"] = getattr(board, "NAME", "?")
    out["cpu_mhz"] = _mhz()
    out["reader"] = kind  # the tap model's name for the set-up (tools/bench_model.py)
    for k in ("activation_us", "tap_us", "result_shown_us", "reasons"):
        out[k] = []
    reader, e = chk.part("reader", chk._make("reader"))
    link, e2 = chk.part("psam_link", chk._make("psam"))
    if reader is None or link is None:
        out["error"] = "reader: %s; psam: %s" % (e, e2)
        return _emit(out)
    if getattr(reader, "version", 0) is None:
        reader.init()
    display, _e = chk.part("display", chk._make("display"))
    link.reset()
    win, flash_log = _flash_log(out)
    try:
        times = out["log_append_us"]
        log = TimedLog(flash_log, times) if flash_log else RamLog(times)
        _taps(out, chk, reader, link, display, log, n, fare, now, app)
    finally:
        if win is not None:
            win.erase_all()  # the sectors go back erased, as found
    return _emit(out)


def _taps(out, chk, reader, link, display, log, n, fare, now, app):
    import purchase
    from psam_app import PsamApp

    p = purchase.Purchaser(PsamApp(Timed(link, out["psam_us"])), log)
    if not p.boot():
        out["error"] = "PSAM did not start"
        return
    card_link = Timed(reader, out["card_us"])
    req = {"debit": fare, "must_cover": fare, "route": 1}
    decider = getattr(app, "decider", None)
    if decider is None:
        out["decide_skipped"] = "the validator application is not loaded on the board"
        request = req
    else:
        request = TimedDecision(decider, req, out["decide_us"], out["decide_verdicts"])
    if now is None:  # the host gives its clock (tools/board_bench.py): the board's may be unset
        now = int(time.time())
    for i in range(n):
        chk.feed()
        t0 = time.ticks_us()
        target = reader.poll()
        t1 = time.ticks_us()
        if target is None:
            out["error"] = "no card on the reader at tap %d" % (i + 1)
            break
        out["activation_us"].append(time.ticks_diff(t1, t0))
        if decider is not None:
            decider.prepare(card_link, now + i)
        res = p.tap(card_link, request, now + i)
        t2 = time.ticks_us()
        out["tap_us"].append(time.ticks_diff(t2, t1))
        out["reasons"].append(res.reason)
        if display is not None:
            display.outcome(res.reason, fare, res.balance_after)
            out["result_shown_us"].append(time.ticks_diff(time.ticks_us(), t2))
        p.log_done()
        reader.release()


def _mhz():
    try:
        import machine

        return machine.freq() // 1000000
    except (ImportError, AttributeError):
        return None


def _emit(out):
    print("@@BENCH " + json.dumps(out))
    return out


def main(n=10, fare=1, now=None):
    import board

    running = None
    try:
        import app

        running = app.current()
    except Exception:  # noqa: BLE001, S110 - no application on this board yet
        pass
    return run(board, selftest._config(board), n, fare, now, app=running)
