# The validator's clock: seconds since 2000-01-01 UTC, kept by the board's own RTC
# (machine.RTC(), written whenever the time is set, so soft and watchdog resets keep it), set at
# start-up from the battery-backed RTC chip and corrected by the network or the back office under
# the rules of firmware/timetrust.py (docs/time.md). Without a trusted time the clock runs on the
# last known time plus what the board's RTC counted since the start (`trusted` False: records
# then carry FLAG_CLOCK_UNSET). It never reads before the journal's last record (`floor`).
import log
import timetrust

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MIN_VALID = timetrust.MIN_VALID
_MEM_TAG = const(0x54)  # "T": RTC memory holds a trusted setting (after bootmode's marker)
_log = log.get("clock")


class Clock:
    def __init__(self, rtc_seconds, floor=0, note_step=5, set_rtc=None, rules=None):
        """rtc_seconds(): the board's RTC in seconds since 2000; set_rtc(secs) writes it (None:
        the clock keeps an offset instead, as the simulation board's host clock needs)."""
        self._rtc = rtc_seconds
        self._set_rtc = set_rtc
        self._offset = 0
        self._adjust = 0  # what the clock wrote into the RTC: mono() = RTC minus this
        self.floor = floor  # the time of the last journaled record
        self.note_step = note_step
        self.trust = timetrust.Trust(rules)
        self.chip = None  # the RTC chip driver, once it answers
        self.chip_state = "none"  # none | ok | lost power | missing | error
        self.mem = None  # fn(data=None): RTC memory after bootmode's marker (the board's)
        self.last = None  # the last decision: {source, t, verdict, why, step}
        self.changes = 0

    # ---- reading ----------------------------------------------------------------------------
    def now(self):
        t = self._rtc() + self._offset
        # Never report a time before the last record, even if the RTC lost power.
        return t if t >= self.floor else self.floor

    def raw(self):
        """The clock's own reading, not held at the floor: what a proposed time is compared
        with (a correction that leaves now() at the floor is not proposed again and again)."""
        return self._rtc() + self._offset

    def mono(self):
        """Seconds the board's RTC counted, whatever the clock wrote into it."""
        return self._rtc() - self._adjust

    @property
    def trusted(self):
        return self.trust.trusted

    @property
    def source(self):
        return self.trust.source

    def is_set(self):
        return self.trusted

    def raise_floor(self, t):
        if t > self.floor:
            self.floor = t

    # ---- start-up ---------------------------------------------------------------------------
    def start(self, last_known=0, chip=None, kept=False):
        """Where the time comes from at start-up (docs/time.md): the board's RTC when RTC memory
        vouches for it (`kept`: a soft, watchdog or brown-out reset after a trusted setting),
        else the RTC chip when its flag is clear, else the last known time, untrusted."""
        if kept and self.read_mem() and self._rtc() >= max(last_known, self.floor) - 60:
            self.trust.adopt("kept", self.mono())
            self._decided("kept", self.now(), timetrust.ACCEPT, "RTC kept across the reset", 0)
            if chip is not None:
                self.chip_up(chip)  # its state, for the status view
            return "kept"
        est = max(last_known, self.floor)
        if est >= _MIN_VALID:
            self._apply(est)
            self.trust.adopt("last_known", self.mono(), trusted=False)
        if chip is not None:
            self.chip_up(chip)
        if not self.trusted:
            _log.warning("no trusted time at start-up: running on %s", self.source)
        return self.source

    def chip_up(self, chip):
        """The RTC chip answers (at start-up or when a retry brings it back): read it, and
        adopt its time under the rules when the clock is not trusted yet."""
        self.chip = chip
        try:
            t, lost = chip.read()
        except ValueError as e:  # registers without a valid time: as good as lost power
            self.chip_state = "error"
            _log.warning("RTC chip: %s", e)
            return None
        if lost:
            self.chip_state = "lost power"
            _log.warning("RTC chip lost power: its time %d is not used", t)
            return None
        self.chip_state = "ok"
        if self.trusted:
            return None
        return self.set(t, "rtc")

    def chip_down(self, error):
        self.chip = None
        self.chip_state = "missing"
        _log.error("RTC chip: %s", error)

    # ---- setting ----------------------------------------------------------------------------
    def set(self, t, source):
        """Offer `t` from `source` (timetrust.SOURCES); returns the step in seconds when it was
        adopted, None when it was refused, held for agreement, or only agreed."""
        before = self.raw()
        mono = self.mono()
        verdict, why, as_source = self.trust.judge(before, t, source, mono)
        step = t - before
        if verdict == timetrust.ACCEPT and step == 0 and as_source == self.source:
            self.trust.set_at = mono  # confirmed: nothing to write
            return 0
        if verdict != timetrust.ACCEPT:
            if verdict == timetrust.AGREE:
                self.last = {
                    "source": source,
                    "t": t,
                    "verdict": verdict,
                    "why": why,
                    "step": step,
                }
            else:
                self._decided(source, t, verdict, why, step)
            return None
        if as_source == "agreed" and t < self.floor:
            # Two sources say the clock ran ahead: later records may be dated after this one.
            _log.warning("agreed time %d is before the last record %d: floor reset", t, self.floor)
            self.floor = t
        self._apply(t)
        trusted = self.trust.trusted or self.trust.confirms(as_source, why == "first known time")
        self.trust.adopt(as_source, self.mono(), trusted)
        self._decided(as_source, t, verdict, why, step)
        if abs(step) >= self.note_step:
            self.changes += 1
        if trusted:
            self._write_back(t, as_source)
        return step

    def _apply(self, t):
        if self._set_rtc is None:
            self._offset = t - self._rtc()
            return
        r = self._rtc()  # read just before the write (the simulation board sets a shift from it)
        try:
            self._set_rtc(t)
        except Exception as e:  # noqa: BLE001 - the offset does the job then
            _log.error("board RTC not written: %s", e)
            self._offset = t - r
            return
        self._adjust += t - r
        self._offset = 0

    def _write_back(self, t, source):
        """A trusted source set the clock: the RTC chip and RTC memory follow (not the chip's
        own reading, which would write back what was just read)."""
        self.write_mem(t)
        if source == "rtc" or self.chip is None:
            return
        try:
            self.chip.write(t)
            self.chip_state = "ok"
        except (OSError, ValueError) as e:
            _log.error("RTC chip not written: %s", e)

    def _decided(self, source, t, verdict, why, step):
        self.last = {"source": source, "t": t, "verdict": verdict, "why": why, "step": step}
        if verdict == timetrust.ACCEPT:
            if abs(step) >= self.note_step:
                _log.info("clock stepped %d s from %s: %s", step, source, why)
        else:
            _log.warning("%s time %d %s: %s", source, t, verdict, why)

    # ---- RTC memory: a trusted setting survives soft and watchdog resets ---------------------
    def write_mem(self, t):
        if self.mem is None:
            return
        try:
            self.mem(bytes((_MEM_TAG, timetrust.code(self.source))) + t.to_bytes(4, "little"))
        except Exception as e:  # noqa: BLE001
            _log.error("RTC memory not written: %s", e)

    def read_mem(self):
        """True when RTC memory holds a trusted setting no later than the board's RTC."""
        if self.mem is None:
            return False
        try:
            m = self.mem()
        except Exception:  # noqa: BLE001
            return False
        if len(m) < 6 or m[0] != _MEM_TAG:
            return False
        return int.from_bytes(m[2:6], "little") <= self._rtc()

    def status(self):
        st = {
            "time": self.now(),
            "source": self.source,
            "trusted": self.trusted,
            "chip": self.chip_state,
        }
        if self.last is not None:
            st["last"] = self.last
        if self.trust.held:
            st["held"] = sorted(self.trust.held)
        return st


def load_last_known(path):
    """The last known time saved in `path` (0 when none or unreadable)."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def save_last_known(path, t):
    try:
        with open(path, "w") as f:
            f.write("%d\n" % t)
    except OSError as e:
        _log.error("last known time not saved: %s", e)
