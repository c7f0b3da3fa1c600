# Parts that failed to start (reader, PSAM, modem, RTC chip, display), retried with back-off
# while the validator shows a fault screen, beeps the fault pattern and reports (docs/boot.md).
# A board puts what failed in parts.failed = {name: (retry, error, attr)}: retry() builds the
# part again (returns it, raises on failure), attr is the Parts attribute it goes to (or None).
import time

import bootmode

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# Bits of the BOOT record's fault mask (docs/record-format.md).
BITS = {name: bit for bit, name in bootmode.FAULT_PARTS}
BLOCKING = ("reader", "psam")  # without these nobody rides: the fault screen replaces idle
FIRST_MS = const(1000)  # the first retry, then doubling
MAX_MS = const(60000)  # a part that stays away is tried once a minute


class Fault:
    def __init__(self, name, retry, error, attr):
        self.name = name
        self.retry = retry
        self.attr = attr
        self.error = error
        self.tries = 1  # the start itself
        self.wait_ms = FIRST_MS
        self.next_ms = time.ticks_add(time.ticks_ms(), FIRST_MS)


class Faults:
    def __init__(self):
        self.open = {}  # name -> Fault, parts still down
        self.recovered = {}  # name -> tries it took, parts that came back

    def add(self, name, retry, error, attr=None):
        if name in self.open:
            return self.open[name]
        f = Fault(name, retry, error, attr)
        self.open[name] = f
        return f

    def mask(self):
        m = 0
        for name in self.open:
            m |= BITS.get(name, 0x80)
        return m

    def due(self, now_ms):
        return [f for f in self.open.values() if time.ticks_diff(now_ms, f.next_ms) >= 0]

    def failed(self, f, error):
        """Another try failed: wait twice as long (up to MAX_MS)."""
        f.error = error
        f.tries += 1
        f.wait_ms = min(f.wait_ms * 2, MAX_MS)
        f.next_ms = time.ticks_add(time.ticks_ms(), f.wait_ms)

    def up(self, f):
        self.open.pop(f.name, None)
        self.recovered[f.name] = f.tries

    def first(self, among=None):
        """The part a screen names (reader first), among `among` if given; None if none."""
        for name in ("reader", "psam", "rtc", "modem", "display"):
            if name in self.open and (among is None or name in among):
                return name
        if among is None:
            for name in self.open:
                return name
        return None

    def status(self):
        return {
            n: {"tries": f.tries, "error": "%s %s" % (type(f.error).__name__, f.error)}
            for n, f in self.open.items()
        }
