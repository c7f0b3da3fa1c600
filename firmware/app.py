# The validator application: boot, the tap loop (which always has priority), and the background
# tasks (uplink, parameters, clock, idle screen, watchdog). Hardware comes from the board module
# (`board.make_parts(cfg)`), so the same code runs on an ESP32 and on the unix simulation board.
#
# Start-up order matters: the transaction log first (its last record bounds the clock; a littlefs
# journal of an older release is migrated into it), then parameters, then the PSAM, then the
# purchaser (the log's open intents are its unconfirmed debits), then a BOOT record.
import asyncio
import gc
import json
import time

import clock
import config
import decide
import fare
import log
import messages
import params
import purchase
import record
import timeutil
import txlog
import txlog_migrate
from linkerr import LinkError
from psam_app import PsamApp

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_log = log.get("app")

_IDLE_REFRESH_MS = const(1000)
_OUTCOME_HOLD_MS = const(2500)
_PRESENT_POLL_MS = const(100)
_POLL_IDLE_MS = const(20)
_WDT_FEED_MS = const(500)
_LOW_BALANCE = const(500)  # fen: below this an accepted tap also says "top up soon"


class Validator:
    def __init__(self, parts, cfg):
        self.parts = parts
        self.cfg = cfg
        self.emit = parts.emit or (lambda kind, data: None)
        self.taps = 0
        self.heartbeat = time.ticks_ms()
        self.last_outcome_ms = None
        self.stopped = False
        root = parts.root
        self._shown = False  # the rider has been told this tap's result (on_debited)
        self._tap_now = 0
        # `journal` keeps its name: the uplink and the maintenance view use the same interface.
        self.journal = txlog.TxLog(parts.txlog_dev, getattr(parts, "txlog_config", None))
        try:
            # Once, at the first boot of this release: the littlefs journal's unacknowledged
            # records and pending purchases move into the log (a no-op afterwards).
            txlog_migrate.run(root + "/journal", self.journal)
        except Exception as e:  # noqa: BLE001 - logged; the old files stay for the next boot
            _log.error("journal migration failed: %s %s", type(e).__name__, e)
            # The old journal may hold numbers the log would issue again: write nothing (no
            # sale, no event) until a boot migrates it.
            self.journal.hold("old journal not migrated")
        self.clock = clock.Clock(parts.rtc_seconds, floor=self._last_record_time())
        self.params = params.Params(
            root + "/params",
            cfg["secret_bytes"],
            on_event=self._param_event,
            terminal=b"\x00" * 8,
            slots=parts.param_slots,
        )
        self.params.load(self.clock.now())
        self.psam_link = parts.psam_link
        self.psam = PsamApp(self.psam_link)
        self.decider = decide.Decider(
            self.params, cfg["route"], cfg["stop"], cfg.get("lock_blacklisted", True)
        )
        self.purchaser = purchase.Purchaser(
            self.psam,
            self.journal,
            {
                "city": bytes.fromhex(cfg["city"]),
                "institution": bytes.fromhex(cfg["institution"]),
                "operator": cfg.get("operator", 0),
                "lock_enabled": cfg.get("lock_blacklisted", True),
                "on_record": self._recorded,
                "on_debited": self._debited,
                "tz": cfg.get("tz_seconds", timeutil.DEFAULT_TZ_SECONDS),
            },
        )
        self.uplink = None
        if parts.transport is not None:
            import uplink

            self.uplink = uplink.Uplink(
                parts.transport,
                self.journal,
                cfg["device_id"],
                cfg["secret_bytes"],
                cfg["collector_url"],
                clock=self.clock.now,
                on_time=self._server_time,
                on_bundle=self._bundle,
                params_version=self.params.version or 0,
                interval_s=self._setting("upload_interval_s", cfg.get("uplink_interval_s", 300)),
            )

    # ---- journal, clock and parameter callbacks ----------------------------------------------

    def _last_record_time(self):
        j = self.journal
        if j.last_seq <= j.acked_seq:
            return 0
        recs = j.records_after(j.last_seq - 1, 1)
        if not recs:
            return 0
        try:
            return record.decode(recs[0])["time"]
        except record.RecordError:
            return 0

    def _setting(self, key, default):
        s = self.params.settings if self.params else None
        if isinstance(s, dict) and key in s:
            return s[key]
        return default

    def _append(self, fields):
        if self.journal.held:
            _log.error("record kind %s not written: %s", fields.get("kind"), self.journal.held)
            return None
        seq = self.journal.append(fields)
        self._recorded(fields, seq)
        return seq

    def _recorded(self, fields, seq):
        # After every record, the app's and the purchaser's (which appends to the log itself).
        self.clock.raise_floor(fields.get("time", 0))
        if self.uplink is not None:
            self.uplink.kick()
        if self.parts.emit is not None:  # two records per tap: no dict for nobody on a board
            self.emit(
                "record", {"seq": seq, "kind": fields.get("kind"), "amount": fields.get("amount")}
            )

    def _param_event(self, kind, info):
        # docs/record-format.md: psam_serial = bundle version, balance_after = blacklist version.
        fields = {
            "kind": record.PARAM_ACTIVATION,
            "time": info.get("time") or self.clock.now(),
            "psam_serial": info.get("version", 0) & 0xFFFFFFFF,
            "balance_after": info.get("bl_version", 0) & 0xFFFFFF,
        }
        try:
            self._append(fields)
        except Exception as e:  # noqa: BLE001 - a record we cannot write must not stop activation
            _log.error("parameter activation record not written: %s", e)
        if self.uplink is not None and self.params.version:
            self.uplink.params_version = self.params.version
        self.emit("params", {"version": info.get("version")})

    def _server_time(self, t):
        before = self.clock.now()
        step = self.clock.set(t, "backoffice")
        self._note_clock(step, before)
        return step

    def _note_clock(self, step, before):
        if step is None or abs(step) < self.clock.note_step:
            return
        try:
            # docs/record-format.md: time = the new time, psam_serial = the time before.
            self._append(
                {
                    "kind": record.CLOCK_CHANGE,
                    "time": self.clock.now(),
                    "psam_serial": before & 0xFFFFFFFF,
                }
            )
        except Exception as e:  # noqa: BLE001
            _log.error("clock record not written: %s", e)
        self.emit("clock", {"step": step})

    def _bundle(self, pkind, version, base, data):
        ok, why = self.params.install_bytes(data, self.clock.now())
        if ok:
            _log.info("parameters %d: %s", version, why)
        else:
            _log.warning("parameters %d refused: %s", version, why)
        self.emit("bundle", {"version": version, "ok": ok, "why": why})
        return ok

    # ---- boot ----------------------------------------------------------------------------------

    def boot(self):
        parts = self.parts
        try:
            self.psam_link.reset()
        except LinkError as e:
            _log.error("PSAM reset failed: %s", e)
        ready = self.purchaser.boot()
        if ready:
            tid = self.psam.terminal_id
            # 0x1E records carry 00 00 + the PSAM terminal number; duplicate and transfer
            # checks compare against it, also for bundles activated later.
            self.params.terminal = b"\x00\x00" + bytes(tid)
            if self.params.fares is not None:
                self.params.fares.terminal = self.params.terminal
        # Open intents at boot are unconfirmed debits: counted here, uploaded as their own
        # DEBIT_INTENT records, settled when the card comes back or by clearing.
        pend = len(self.purchaser.pending())
        self._append(
            {
                "kind": record.BOOT,
                "time": self.clock.now(),
                "psam_tid": self.psam.terminal_id if ready else b"\x00" * 6,
                "flags": 0 if ready else 0x01,
                "amount": pend,
            }
        )
        self.emit(
            "boot",
            {
                "psam": ready,
                "params": self.params.version,
                "last_seq": self.journal.last_seq,
                "acked_seq": self.journal.acked_seq,
                "pending": pend,
                "reset_cause": parts.reset_cause,
                "heap_used": _heap_used(),
                "heap_free": gc.mem_free(),
            },
        )
        _log.info(
            "boot: psam %s, params %s, log %d/%d, %d unconfirmed debits",
            ready,
            self.params.version,
            self.journal.last_seq,
            self.journal.acked_seq,
            pend,
        )
        return ready

    # ---- the tap -------------------------------------------------------------------------------

    def handle_tap(self, target):
        """One card presented: decide, debit, book (in the purchase), then tell the rider. A sale
        is shown from on_debited, right after DEBIT; everything else when the tap is over."""
        t0 = time.ticks_ms()
        now = self.clock.now()
        self._shown = False
        self._tap_now = now
        if not target.iso_dep:
            reason = purchase.NO_ISO_DEP
            res = None
        else:
            self.decider.prepare(self.parts.reader, now, self.journal.can_accept_purchase())
            try:
                res = self.purchaser.tap(self.parts.reader, self.decider, now)
                reason = res.reason
            except Exception as e:  # noqa: BLE001 - nothing a card does may stop the tap loop
                _log.error("tap failed: %s %s", type(e).__name__, e)
                res = None
                reason = purchase.CARD_ERROR
        balance = res.balance_after if res is not None else None
        if self._shown:
            # Told right after DEBIT; a MAC2 rejected afterwards is booked as such (the card
            # did debit), the rider's screen stays.
            amount = res.amount if res is not None else None
            if reason == purchase.OK and balance is not None and balance < _LOW_BALANCE:
                reason = "OK_LOW"
        else:
            amount = res.amount if res is not None and reason == purchase.OK else None
            if reason == purchase.OK:  # a recovered purchase: this ride, no new debit
                self._paid(res, now)
                if balance is not None and balance < _LOW_BALANCE:
                    reason = "OK_LOW"
            self.show_outcome(reason, amount, balance)
        self.taps += 1
        card_no = None
        if res is not None and res.card:
            card_no = res.card.get("card_no_str")
        self.emit(
            "tap",
            {
                "n": self.taps,
                "reason": reason,
                "amount": amount,
                "balance": balance,
                "card": card_no,
                "uid": target.uid_hex(),
                "detail": res.detail if res is not None else "",
                "ms": time.ticks_diff(time.ticks_ms(), t0),
                "screen": self.parts.display.lines if self.parts.display else [],
                "sound": self.parts.feedback.last if self.parts.feedback else None,
                "time": now,
                "heap_used": gc.mem_alloc(),
            },
        )
        return reason

    def _paid(self, res, now):
        # The duplicate-tap and transfer memory: this card paid this fare now.
        engine = self.params.fares
        if engine is None or not res.card:
            return
        fr = self.decider.last
        if not isinstance(fr, fare.FareResult) and res.record:
            # A recovered purchase settled the tap before any fare was asked: its record says
            # what was paid, and a re-tap must not be charged again.
            fr = fare.FareResult(fare.OK)
            fr.txn_type = res.record["txn_type"]
            fr.route = res.record["route"]
            fr.stop = res.record["stop"]
        if isinstance(fr, fare.FareResult):
            engine.paid(fr, res.card["card_no"], now)

    def _debited(self, res):
        """Purchaser hook: DEBIT answered 9000 with TAC and MAC2. The rider is told now; the
        PSAM's MAC2 check and the outcome record follow."""
        self._shown = True
        self._paid(res, self._tap_now)
        balance = res.balance_after
        low = balance is not None and balance < _LOW_BALANCE
        self.show_outcome("OK_LOW" if low else purchase.OK, res.amount, balance)

    def show_outcome(self, reason, amount, balance):
        zh, en, tone = messages.text_for(reason)
        fb = self.parts.feedback
        if fb is not None:
            fb.show(tone)
        d = self.parts.display
        if d is not None:
            d.outcome(reason, fare=amount, balance=balance)
        self.last_outcome_ms = time.ticks_ms()

    async def tap_loop(self):
        reader = self.parts.reader
        errors = 0
        while not self.stopped:
            self.heartbeat = time.ticks_ms()
            try:
                target = reader.poll()
                errors = 0
            except LinkError as e:
                errors += 1
                _log.error("reader: %s", e)
                await asyncio.sleep_ms(min(2000, 100 * errors))
                if errors % 10 == 0 and hasattr(reader, "init"):
                    try:
                        reader.init()
                    except LinkError as e2:
                        _log.error("reader init: %s", e2)
                continue
            if target is None:
                await asyncio.sleep_ms(_POLL_IDLE_MS)
                continue
            self.handle_tap(target)
            # One tap per presentation: wait for the card to leave before polling again.
            while not self.stopped and reader.present():
                self.heartbeat = time.ticks_ms()
                await asyncio.sleep_ms(_PRESENT_POLL_MS)
            reader.release()
            self.emit("left", {})
            gc.collect()

    # ---- background ----------------------------------------------------------------------------

    async def idle_loop(self):
        while not self.stopped:
            await asyncio.sleep_ms(_IDLE_REFRESH_MS)
            now = self.clock.now()
            self.params.tick(now)
            if self.last_outcome_ms is not None:
                if time.ticks_diff(time.ticks_ms(), self.last_outcome_ms) < _OUTCOME_HOLD_MS:
                    continue
            try:
                # Idle-time flash work (erase an acknowledged sector ahead, roll to a fresh
                # one), never inside a tap: the tap loop runs no flash erase.
                self.journal.maintain()
            except Exception as e:  # noqa: BLE001 - logged; the log refuses purchases if it must
                _log.error("log maintenance: %s %s", type(e).__name__, e)
            d = self.parts.display
            if d is None:
                continue
            y, mo, da, hh, mi, _ = timeutil.from_seconds(now + self.cfg.get("tz_seconds", 28800))
            st = self.journal.status()
            warn = None if st["state"] == "ok" else st["state"].upper()
            d.idle(
                str(self.cfg["route"]),
                "%04d-%02d-%02d %02d:%02d" % (y, mo, da, hh, mi),
                self._signal_text(),
                self.journal.backlog,
                warn,
            )

    def _signal_text(self):
        tr = self.parts.transport
        if tr is None:
            return "offline"
        try:
            st = tr.status()
        except Exception:  # noqa: BLE001
            return "?"
        dbm = st.get("dbm") if isinstance(st, dict) else None
        return ("%ddBm" % dbm) if isinstance(dbm, int) else "net"

    async def watchdog_loop(self):
        wdt = self.parts.wdt
        grace = self.parts.wdt_grace_ms
        while not self.stopped:
            # Fed only while the tap loop shows signs of life: a hung tap loop resets the board.
            if time.ticks_diff(time.ticks_ms(), self.heartbeat) < grace:
                wdt.feed()
            await asyncio.sleep_ms(_WDT_FEED_MS)

    async def modem_time_loop(self):
        tr = self.parts.transport
        if tr is None or not hasattr(tr, "network_time"):
            return
        while not self.stopped:
            try:
                t = await tr.network_time()
            except Exception as e:  # noqa: BLE001
                _log.info("network time: %s", e)
                t = None
            if t:
                before = self.clock.now()
                self._note_clock(self.clock.set(t, "network"), before)
            await asyncio.sleep_ms(3600 * 1000)

    def status(self):
        """The maintenance view: what a depot technician asks first."""
        st = {
            "device": self.cfg["device_id"],
            "route": self.cfg["route"],
            "time": self.clock.now(),
            "clock_source": self.clock.source,
            "taps": self.taps,
            "journal": self.journal.status(),
            "params": self.params.version,
            "pending": len(self.purchaser.pending()),  # unconfirmed debits (open intents)
        }
        if self.uplink is not None:
            st["uplink"] = self.uplink.status()
        return st

    def last_records(self, n=10):
        j = self.journal
        start = max(j.acked_seq, j.last_seq - n)
        return [record.decode(r) for r in j.records_after(start, n)]

    async def run(self):
        self.boot()
        tasks = [asyncio.create_task(self.tap_loop()), asyncio.create_task(self.idle_loop())]
        if self.parts.wdt is not None:
            tasks.append(asyncio.create_task(self.watchdog_loop()))
        if self.uplink is not None:
            tasks.append(asyncio.create_task(self.uplink.run()))
            tasks.append(asyncio.create_task(self.modem_time_loop()))
        if self.parts.extra_task is not None:
            tasks.append(asyncio.create_task(self.parts.extra_task(self)))
        await tasks[0]


_current = None


def _heap_used():
    gc.collect()
    return gc.mem_alloc()


def current():
    """The running Validator, for the REPL maintenance view: app.current().status()."""
    return _current


def show_status():
    print(json.dumps(_current.status()) if _current else "not running")


def show_records(n=10):
    if _current is None:
        print("not running")
        return
    for r in _current.last_records(n):
        print(r)


def main(board):
    """Entry point from main.py: load the configuration, build the parts, run forever."""
    global _current
    board.start()
    try:
        cfg = config.load(board.CONFIG_PATH)
    except config.ConfigError as e:
        _log.error("%s", e)
        board.show_fatal(str(e))
        return
    parts = board.make_parts(cfg)
    _current = Validator(parts, cfg)
    try:
        asyncio.run(_current.run())
    finally:
        asyncio.new_event_loop()
