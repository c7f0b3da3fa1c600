# The validator application: boot, the tap loop (which always has priority), and the background
# tasks (uplink, parameters, clock, idle screen, watchdog). Hardware comes from the board module
# (`board.make_parts(cfg)`), so the same code runs on an ESP32 and on the unix simulation board.
#
# Start-up order matters: the transaction log first (its last record bounds the clock; a littlefs
# journal of an older release is migrated into it), then parameters, then the PSAM, then the
# purchaser (the log's open intents are its unconfirmed debits), then a BOOT record. The board
# arms the watchdog before building anything; every start-up step is bounded and the watchdog is
# fed between them. A part that failed to start is retried with back-off (firmware/faults.py)
# while the rest runs: the tap loop needs neither the modem nor the RTC chip (docs/boot.md).
import asyncio
import gc
import json
import sys
import time

import bootmode
import bundle
import clock
import config
import decide
import fare
import faults
import log
import messages
import params
import purchase
import record
import timetrust
import timeutil
import tunion
import txlog
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
_LOW_BALANCE = const(500)  # fen: the default of config "low_balance_fen" (docs/operators.md)
_FAULT_POLL_MS = const(200)
_SAVE_TIME_S = const(600)  # the last known time is saved this often (docs/time.md)
_NITZ_POLL_S = const(1)  # how soon a new network time report is read (a check, no AT)
MAINT_WDT_MS = 30 * 60 * 1000  # the maintenance window: the watchdog's timeout while in it


class _NoLink:
    """The PSAM link of a board whose PSAM UART failed to start: every exchange is a link
    error, so the purchase refuses with PSAM_ERROR until the retry brings the real one."""

    def reset(self):
        raise LinkError("PSAM link not started")

    def transceive(self, apdu):
        raise LinkError("PSAM link not started")


class _Flagging:
    """The log as the purchaser sees it: records written while the clock has no trusted time
    carry FLAG_CLOCK_UNSET (docs/time.md); everything else goes to the log itself."""

    def __init__(self, log_, clk):
        self._log = log_
        self._clock = clk

    def append(self, fields):
        if not self._clock.trusted:
            fields["flags"] = fields.get("flags", 0) | record.FLAG_CLOCK_UNSET
        return self._log.append(fields)

    def __getattr__(self, name):
        return getattr(self._log, name)


class Validator:
    def __init__(self, parts, cfg):
        self.parts = parts
        self.cfg = cfg
        # below this (fen) an accepted tap also says "top up soon" (OK_LOW); the company's texts
        self._low_balance = cfg.get("low_balance_fen", _LOW_BALANCE)
        messages.customise(cfg.get("messages"))
        self.emit = parts.emit or (lambda kind, data: None)
        self.taps = 0
        self.heartbeat = time.ticks_ms()
        self.last_outcome_ms = None
        self.stopped = False
        root = parts.root
        self._shown = False  # the rider has been told this tap's result (on_debited)
        self._tap_now = 0
        self.maintenance = False
        wdt = parts.wdt
        self._feed = wdt.feed if wdt is not None else (lambda: None)
        self._feed()
        # Parts the board could not start: retried from fault_loop, reported in BOOT and status.
        self.faults = faults.Faults()
        self.on_part_up = {}  # name -> fn(part): what the app does when a part comes back
        for name, (retry, error, attr) in (getattr(parts, "failed", None) or {}).items():
            self.faults.add(name, retry, error, attr)
            _log.error("%s failed to start: %s %s", name, type(error).__name__, error)
        # `journal` keeps its name: the uplink and the maintenance view use the same interface.
        self.journal = txlog.TxLog(parts.txlog_dev, getattr(parts, "txlog_config", None))
        try:
            # Once, at the first boot of this release: the littlefs journal's unacknowledged
            # records and pending purchases move into the log (a no-op afterwards). Needed only
            # here: its module leaves the heap again after the boot (docs/runtime.md).
            import txlog_migrate

            txlog_migrate.run(root + "/journal", self.journal)
        except Exception as e:  # noqa: BLE001 - logged; the old files stay for the next boot
            _log.error("journal migration failed: %s %s", type(e).__name__, e)
            # The old journal may hold numbers the log would issue again: write nothing (no
            # sale, no event) until a boot migrates it.
            self.journal.hold("old journal not migrated")
        sys.modules.pop("txlog_migrate", None)
        self._feed()
        self._start_clock(parts, cfg, root)
        # Built after the parameters: a bundle activated while they load (one stored before a
        # power cut) writes its record without an uplink to tell.
        self.uplink = None
        self.params = params.Params(
            root + "/params",
            cfg["secret_bytes"],
            on_event=self._param_event,
            terminal=b"\x00" * 8,
            slots=parts.param_slots,
            trust=bundle.Trust(
                cfg.get("param_keys"),
                cfg.get("operator", 0),
                cfg["city"],
                cfg["route"],
                cfg.get("groups", ()),
            ),
            floor_log=self.journal,  # the version floor's third copy (docs/parameters.md)
            feed_dog=self._feed,  # a merged blacklist delta takes minutes on a board
        )
        self.params.load(self.clock.now())
        self._feed()
        if parts.psam_link is None:
            parts.psam_link = _NoLink()
        self.psam_link = parts.psam_link
        self.psam = PsamApp(self.psam_link)
        self.decider = decide.Decider(
            self.params, cfg["route"], cfg["stop"], cfg.get("lock_blacklisted", True)
        )
        self.purchaser = purchase.Purchaser(
            self.psam,
            _Flagging(self.journal, self.clock),
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
        self._tasks = []
        self.on_part_up["psam_link"] = self._psam_link_up
        self.on_part_up["transport"] = self._modem_up
        self.on_part_up["rtc_chip"] = self._rtc_up
        self._make_uplink()

    def _make_uplink(self):
        if self.parts.transport is not None and self.uplink is None:
            import uplink

            cfg = self.cfg
            self.uplink = uplink.Uplink(
                self.parts.transport,
                self.journal,
                cfg["device_id"],
                cfg["secret_bytes"],
                cfg["collector_url"],
                clock=self.clock.now,
                on_time=self._server_time,
                on_bundle=self._bundle,
                on_chunked=self._chunked,
                params_version=self.params.version or 0,
                interval_s=self._setting("upload_interval_s", cfg.get("uplink_interval_s", 300)),
                sleep_ms=getattr(self.parts, "sleep_ms", None),
                on_ack=lambda seq: self.emit("acked", {"seq": seq}),
            )
        return self.uplink

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

    # ---- time (docs/time.md) -------------------------------------------------------------------

    def _start_clock(self, parts, cfg, root):
        self._time_path = root + "/clock"
        c = clock.Clock(
            parts.rtc_seconds,
            floor=self._last_record_time(),
            set_rtc=getattr(parts, "set_rtc", None),
            rules=timetrust.rules_from(cfg),
        )
        c.mem = getattr(parts, "rtc_mem", None)
        self.clock = c
        self._noted = set()  # (source, verdict) journaled since the last adopted time
        chip = getattr(parts, "rtc_chip", None)
        if "rtc" in self.faults.open:
            c.chip_down(self.faults.open["rtc"].error)
        last = clock.load_last_known(self._time_path)
        # RTC memory says whether the board's RTC was kept (it is lost with the power).
        c.start(last_known=last, chip=chip, kept=True)
        self._saved_time = c.now()
        if c.trusted:
            clock.save_last_known(self._time_path, self._saved_time)
        _log.info("time from %s (%s), chip %s", c.source, c.trusted, c.chip_state)

    def _rtc_up(self, chip):
        before = self.clock.now()
        self._note_clock(self.clock.chip_up(chip), before)

    def _offer_time(self, t, source):
        before = self.clock.now()
        step = self.clock.set(t, source)
        self._note_clock(step, before)
        return step

    def _append(self, fields):
        if self.journal.held:
            _log.error("record kind %s not written: %s", fields.get("kind"), self.journal.held)
            return None
        if not self.clock.trusted:
            fields["flags"] = fields.get("flags", 0) | record.FLAG_CLOCK_UNSET
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
        return self._offer_time(t, "backoffice")

    def _note_clock(self, step, before):
        """Journal the clock's last decision: an adopted step of note_step or more, and the
        first refusal or hold of each source since the last adopted time (docs/time.md)."""
        c = self.clock
        last = c.last
        if last is None:
            return
        if step is not None:
            self._noted = set()
            if abs(step) < c.note_step:
                return
            # docs/record-format.md: time = the new time, psam_serial = the time before,
            # reason = the source (timetrust.SOURCES).
            fields = {"kind": record.CLOCK_CHANGE, "time": c.now(), "psam_serial": before}
            src = c.source
        else:
            key = (last["source"], last["verdict"])
            if last["verdict"] == timetrust.AGREE or key in self._noted:
                return
            self._noted.add(key)
            # Not adopted: time = the clock's (unchanged), psam_serial = the time proposed,
            # reason = the source + 0x80.
            fields = {"kind": record.CLOCK_CHANGE, "time": c.now(), "psam_serial": last["t"]}
            src = last["source"]
        fields["psam_serial"] &= 0xFFFFFFFF
        fields["reason"] = timetrust.code(src) | (0 if step is not None else 0x80)
        try:
            self._append(fields)
        except Exception as e:  # noqa: BLE001
            _log.error("clock record not written: %s", e)
        if step is not None and c.trusted:
            self._saved_time = c.now()
            clock.save_last_known(self._time_path, self._saved_time)
        self.emit(
            "clock",
            {
                "step": step,
                "source": c.source,  # the clock's, after the decision
                "from": src,  # who proposed the time
                "verdict": last["verdict"],
                "why": last["why"],
                "trusted": c.trusted,
                "chip": c.chip_state,  # the RTC chip as last read: a decision does not change it
                "time": c.raw(),  # its own reading (now() may be held at the last record)
            },
        )

    def _bundle(self, pkind, version, base, data):
        ok, why = self.params.install_bytes(data, self.clock.now())
        if ok:
            _log.info("parameters %d: %s", version, why)
        else:
            _log.warning("parameters %d refused: %s", version, why)
        self.emit("bundle", {"version": version, "ok": ok, "why": why})
        return ok

    async def _chunked(self, version, total, fetch):
        # A big fleet-signed bundle by ranges (firmware/chunkdl.py): resumes a download the
        # power or the network cut, streams into the free slot, activates atomically.
        import chunkdl

        now = self.clock.now()
        dl = chunkdl.resume(self.params, fetch, now, version)
        if dl is None:
            dl = chunkdl.Download(self.params, fetch, version, total, now)
        ok, why = await dl.run()
        if ok:
            _log.info("parameters %d: %s (%d bytes fetched)", version, why, dl.bytes)
        else:
            _log.warning("parameters %d refused: %s", version, why)
        self.emit("bundle", {"version": version, "ok": ok, "why": why})
        return ok

    # ---- boot ----------------------------------------------------------------------------------

    def _psam_terminal(self):
        tid = self.psam.terminal_id
        # 0x1E records carry 00 00 + the PSAM terminal number; duplicate and transfer
        # checks compare against it, also for bundles activated later.
        self.params.terminal = b"\x00\x00" + bytes(tid)
        if self.params.fares is not None:
            self.params.fares.terminal = self.params.terminal

    def _psam_retry(self):
        if self.psam.ready:
            return None  # a tap's own boot of the PSAM got there first
        if not self.purchaser.boot():
            raise LinkError("PSAM not ready")
        return None

    def _psam_link_up(self, link):
        self.psam_link = link
        self.psam.link = link
        self.psam.ready = False
        self.faults.add("psam", self._psam_retry, LinkError("PSAM not booted"), None)

    def _modem_up(self, transport):
        u = self._make_uplink()
        if u is not None and self._tasks:
            # The application is running: the uplink and network time start now.
            self._tasks.append(asyncio.create_task(u.run()))
            self._tasks.append(asyncio.create_task(self.modem_time_loop()))

    def boot(self):
        parts = self.parts
        self._feed()
        ready = False
        if not isinstance(self.psam_link, _NoLink):
            try:
                self.psam_link.reset()
            except LinkError as e:
                _log.error("PSAM reset failed: %s", e)
            self._feed()
            ready = self.purchaser.boot()
            if ready:
                self._psam_terminal()
            else:
                self.faults.add("psam", self._psam_retry, LinkError("PSAM boot failed"))
        self._feed()
        # Open intents at boot are unconfirmed debits: counted here, uploaded as their own
        # DEBIT_INTENT records, settled when the card comes back or by clearing.
        pend = len(self.purchaser.pending())
        code = getattr(parts, "reset_code", None)
        if code is None:
            name = parts.reset_cause
            code = bootmode.CAUSE_NAMES.index(name) if name in bootmode.CAUSE_NAMES else 0
        # docs/record-format.md: reason = reset cause, balance_before = parts that failed to
        # start (faults.BITS), flags 0x01 = PSAM not ready (kept from the first format).
        try:
            self._append(
                {
                    "kind": record.BOOT,
                    "time": self.clock.now(),
                    "psam_tid": self.psam.terminal_id if ready else b"\x00" * 6,
                    "flags": 0 if ready else 0x01,
                    "amount": pend,
                    "reason": code,
                    "balance_before": self.faults.mask(),
                }
            )
        except Exception as e:  # noqa: BLE001 - a full log must not stop the start
            _log.error("BOOT record not written: %s %s", type(e).__name__, e)
        self.emit(
            "boot",
            {
                "psam": ready,
                "params": self.params.version,
                "last_seq": self.journal.last_seq,
                "acked_seq": self.journal.acked_seq,
                "pending": pend,
                "reset_cause": parts.reset_cause,
                "faults": self.faults.mask(),
                "source": self.clock.source,
                "trusted": self.clock.trusted,
                "chip": self.clock.chip_state,
                "time": self.clock.raw(),
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
        elif not self.clock.trusted and self.cfg.get("clock_policy") == "refuse":
            reason = "NO_TIME"  # docs/time.md: this operator sells nothing on an unset clock
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
            if reason == purchase.OK and balance is not None and balance < self._low_balance:
                reason = "OK_LOW"
        else:
            amount = res.amount if res is not None and reason == purchase.OK else None
            if reason == purchase.OK:  # a recovered purchase: this ride, no new debit
                self._paid(res, now)
                if balance is not None and balance < self._low_balance:
                    reason = "OK_LOW"
            self.show_outcome(reason, amount, balance)
        self.taps += 1
        card_no = None
        if res is not None and res.card and res.card.get("card_no"):
            card_no = tunion.card_number(res.card["card_no"])  # the rider has gone: text now
        self.purchaser.log_done()
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
        low = balance is not None and balance < self._low_balance
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
        errors = 0
        while not self.stopped:
            self.heartbeat = time.ticks_ms()
            reader = self.parts.reader
            if reader is None:  # failed to start: fault_loop retries it
                await asyncio.sleep_ms(_FAULT_POLL_MS)
                continue
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

    async def fault_loop(self):
        """Retries what failed to start, each part on its own back-off (faults.py). Each try
        is one bounded start-up of that part, so the loop never holds the others for long."""
        while not self.stopped:
            for f in self.faults.due(time.ticks_ms()):
                self.retry(f)
            await asyncio.sleep_ms(_FAULT_POLL_MS)

    def retry(self, f):
        try:
            part = f.retry()
        except Exception as e:  # noqa: BLE001 - a part that stays down must not stop the rest
            self.faults.failed(f, e)
            _log.error(
                "%s still down (try %d, next in %d s): %s %s",
                f.name,
                f.tries,
                f.wait_ms // 1000,
                type(e).__name__,
                e,
            )
            fb = self.parts.feedback
            if fb is not None:
                fb.show("fault")
            self.emit("fault", {"part": f.name, "tries": f.tries, "error": str(e)})
            self._show_fault()
            return False
        self.faults.up(f)
        if f.attr:
            setattr(self.parts, f.attr, part)
            hook = self.on_part_up.get(f.attr)
            if hook is not None:
                hook(part)
        hook = self.on_part_up.get(f.name) if f.name != f.attr else None
        if hook is not None:
            hook(part)
        if f.name == "psam" and self.psam.ready:
            self._psam_terminal()
        _log.info("%s started after %d tries", f.name, f.tries)
        self.emit("fault_cleared", {"part": f.name, "tries": f.tries})
        if not self.faults.open:
            self.last_outcome_ms = None  # the idle screen comes back at the next refresh
        return True

    def _show_fault(self):
        """The fault screen, for a part without which nobody can ride (reader, PSAM); True if
        shown. A modem or RTC chip that is down only adds a warning to the idle screen."""
        name = self.faults.first(faults.BLOCKING)
        d = self.parts.display
        if name is None or d is None:
            return False
        d.notice(messages.FAULT_ZH, (name + " fault").upper())
        return True

    async def idle_loop(self):
        while not self.stopped:
            await asyncio.sleep_ms(_IDLE_REFRESH_MS)
            now = self.clock.now()
            self.params.tick(now)
            if now - self._saved_time >= _SAVE_TIME_S:
                # The next cold start without trusted time begins here, not further back.
                self._saved_time = now
                clock.save_last_known(self._time_path, now)
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
            if self._show_fault():
                continue  # until the part is back: the rider sees why nothing sells
            y, mo, da, hh, mi, _ = timeutil.from_seconds(now + self.cfg.get("tz_seconds", 28800))
            st = self.journal.status()
            warn = None if st["state"] == "ok" else st["state"].upper()
            if warn is None and self.faults.open:
                warn = (self.faults.first() + " fault").upper()
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
        seen = -1
        waited = 0
        while not self.stopped:
            # Hourly, and soon after the network sent a new time (NITZ, docs/time.md).
            n = getattr(tr, "nitz_count", 0)
            if n != seen or waited >= 3600:
                seen = n
                waited = 0
                c0 = self.clock.raw()
                t0 = time.ticks_ms()
                try:
                    t = await tr.network_time()
                except Exception as e:  # noqa: BLE001
                    _log.info("network time: %s", e)
                    t = None
                moved = self.clock.raw() - c0 - time.ticks_diff(time.ticks_ms(), t0) // 1000
                if t and abs(moved) > 2:
                    # The clock was set while the modem answered: its time is from before that.
                    _log.info("network time ignored: the clock moved %d s meanwhile", moved)
                elif t:
                    self._offer_time(t, "network")
            await asyncio.sleep_ms(_NITZ_POLL_S * 1000)
            waited += _NITZ_POLL_S

    def status(self):
        """The maintenance view: what a depot technician asks first."""
        st = {
            "device": self.cfg["device_id"],
            "route": self.cfg["route"],
            "time": self.clock.now(),
            "clock_source": self.clock.source,
            "clock": self.clock.status(),
            "taps": self.taps,
            "journal": self.journal.status(),
            "params": self.params.version,
            "pending": len(self.purchaser.pending()),  # unconfirmed debits (open intents)
            "reset_cause": self.parts.reset_cause,
            "faults": self.faults.status(),
            "maintenance": self.maintenance,
        }
        if self.uplink is not None:
            st["uplink"] = self.uplink.status()
        import versions  # here: only the depot's status reads it (firmware/versions.py)

        st["versions"] = versions.current(self.params.version)
        return st

    def last_records(self, n=10):
        j = self.journal
        start = max(j.acked_seq, j.last_seq - n)
        return [record.decode(r) for r in j.records_after(start, n)]

    async def run(self):
        self.boot()
        if self.faults.open:
            self._show_fault()
            if self.parts.feedback is not None:
                self.parts.feedback.show("fault")
        tasks = self._tasks
        tasks.append(asyncio.create_task(self.tap_loop()))
        tasks.append(asyncio.create_task(self.idle_loop()))
        tasks.append(asyncio.create_task(self.fault_loop()))
        if self.parts.wdt is not None:
            tasks.append(asyncio.create_task(self.watchdog_loop()))
        if self.uplink is not None:
            tasks.append(asyncio.create_task(self.uplink.run()))
            tasks.append(asyncio.create_task(self.modem_time_loop()))
        if self.parts.extra_task is not None:
            tasks.append(asyncio.create_task(self.parts.extra_task(self)))
        await tasks[0]

    # ---- maintenance (the depot) ---------------------------------------------------------------

    def enter_maintenance(self, window_ms=MAINT_WDT_MS):
        """Sell nothing, keep the log and parameters readable, and give the watchdog the long
        maintenance window: an ESP32's watchdog cannot be stopped once started, but its timeout
        can be changed (ports/esp32/machine_wdt.c reconfigures it), so the depot's copy is not
        cut off after 8 s, and a validator left in maintenance still comes back to service."""
        self.stopped = True
        self.maintenance = True
        set_timeout = getattr(self.parts, "wdt_timeout", None)
        if set_timeout is not None:
            set_timeout(window_ms)
        self._feed()
        bootmode.mark_maintenance()  # mpremote's soft reset comes back here, not to service
        fb = self.parts.feedback
        if fb is not None:
            fb.idle()  # a beep cut off by Ctrl-C would otherwise sound on through maintenance
        d = self.parts.display
        if d is not None:
            d.notice(messages.MAINT_ZH, "MAINTENANCE")
        _log.info("maintenance: watchdog window %d s", window_ms // 1000)
        self.emit("maintenance", {"window_ms": window_ms})

    def copy_log(self, path, block=None):
        """The raw transaction log partition into a file (for `mpremote fs cp`), the watchdog
        fed between blocks. Returns the bytes written."""
        dev = self.parts.txlog_dev
        n = dev.ioctl(4, 0)
        size = dev.ioctl(5, 0)
        buf = bytearray(size)
        done = 0
        with open(path, "wb") as f:
            for b in range(n):
                dev.readblocks(b, buf)
                f.write(buf)
                done += size
                self._feed()
        return done


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


_MAINT_HELP = (
    "maintenance: nothing is sold; the watchdog resets the board after %d min "
    "(app.maintenance(minutes) for more, machine.reset() to return to service); "
    "app.show_status(), app.copy_log('/data/txlog.img')"
)


def maintenance(minutes=MAINT_WDT_MS // 60000):
    """From the REPL: stop selling and (re)start the maintenance window of `minutes`."""
    if _current is None:
        print("not running")
        return
    _current.enter_maintenance(minutes * 60000)
    print(_MAINT_HELP % minutes)


def copy_log(path="/data/txlog.img"):
    """From the REPL: the raw transaction log into `path`, then `mpremote fs cp :path .`."""
    if _current is None:
        print("not running")
        return
    try:
        n = _current.copy_log(path)
    except OSError as e:  # ENOSPC, a missing folder: say so, leave no partial copy behind
        print("copy failed: %s (the log itself is untouched)" % e)
        try:
            import os

            os.remove(path)
        except OSError:
            pass
        return
    print("%d bytes written to %s" % (n, path))


def main(board):
    """Entry point from main.py: load the configuration, build the parts, run forever."""
    global _current
    mode, why = bootmode.select(board)
    if mode == bootmode.SAFE:  # an older boot.py let main.py run: stop here all the same
        print("safe mode (%s): the application does not start" % why)
        return
    board.start()
    try:
        cfg = config.load(board.CONFIG_PATH)
    except config.ConfigError as e:
        _log.error("%s", e)
        board.show_fatal(str(e))
        return
    parts = None
    try:
        parts = board.make_parts(cfg)
        _current = Validator(parts, cfg)
    except KeyboardInterrupt:
        # Ctrl-C during the start: nothing runs yet; give the armed watchdog the window.
        set_timeout = getattr(parts, "wdt_timeout", None)
        if set_timeout is not None:
            set_timeout(MAINT_WDT_MS)
        print("interrupted during the start: REPL; machine.reset() to start again")
        return
    if mode == bootmode.MAINT:
        _log.info("start in maintenance: %s", why)
        maintenance()
        return
    try:
        asyncio.run(_current.run())
    except KeyboardInterrupt:
        # Ctrl-C at the REPL (the depot): the board must not reset under the technician, and
        # the log must not be cut mid-copy: maintenance until reset or the window ends.
        maintenance()
    finally:
        asyncio.new_event_loop()
