# The validator's clock: seconds since 2000-01-01 UTC, from the board's RTC plus a correction.
# Updates come from the modem's network time or the back office. A correction is refused when it
# would put the clock before the journal's last record (records must stay in time order) or when
# it is implausible; accepted changes larger than `note_step` are reported so the app can journal
# a CLOCK_CHANGE record.
import log

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MIN_VALID = const(788918400)  # 2025-01-01: a clock before this was never set
_log = log.get("clock")


class Clock:
    def __init__(self, rtc_seconds, floor=0, note_step=5, max_step=None):
        """rtc_seconds(): the board's RTC in seconds since 2000 (boards adapt their epoch)."""
        self._rtc = rtc_seconds
        self._offset = 0
        self.floor = floor  # the time of the last journaled record
        self.note_step = note_step
        self.max_step = max_step  # None: any forward step accepted from a trusted source
        self.source = "rtc"
        self.changes = 0

    def now(self):
        t = self._rtc() + self._offset
        # Never report a time before the last record, even if the RTC lost power.
        return t if t >= self.floor else self.floor

    def is_set(self):
        return self.now() >= _MIN_VALID

    def raise_floor(self, t):
        if t > self.floor:
            self.floor = t

    def set(self, t, source):
        """Adopt t from `source`; returns the step in seconds, or None when refused."""
        if t < _MIN_VALID:
            _log.warning("%s time %d refused: before 2025", source, t)
            return None
        if t < self.floor:
            _log.warning("%s time %d refused: before the last record %d", source, t, self.floor)
            return None
        step = t - self.now()
        if self.max_step is not None and self.is_set() and abs(step) > self.max_step:
            _log.warning("%s time refused: step %d s exceeds %d s", source, step, self.max_step)
            return None
        self._offset = t - self._rtc()
        self.source = source
        if abs(step) >= self.note_step:
            self.changes += 1
            _log.info("clock stepped %d s from %s", step, source)
        return step
