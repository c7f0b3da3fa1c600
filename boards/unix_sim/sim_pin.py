# machine.Pin and machine.PWM look-alikes for the unix-port simulation board. Outputs are reported
# to the hub (devices watch reset lines and power keys); inputs read the level a device set.
# Without a hub (SIM_PORT unset) pins keep their level locally, for pure unit tests.
import os

from simlink import SimLink

_link = None
_HISTORY = 64  # level changes kept per pin: enough for tests, bounded for chip selects


def _keep(history, item):
    # Tests may swap `history` for their own sink (anything with append()).
    if isinstance(history, list) and len(history) >= _HISTORY:
        history.pop(0)
    history.append(item)


def _hub():
    global _link
    if _link is None and os.getenv("SIM_PORT"):
        _link = SimLink("pin", "board")
    return _link


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, name, mode=-1, pull=-1, value=None):
        self.name = str(name)
        self.mode = mode
        # Messages to the hub made once: a level change then allocates nothing.
        self._msg = (("%s=0" % self.name).encode(), ("%s=1" % self.name).encode())
        self._name_b = self.name.encode()
        self._ans = bytearray(8)
        self._level = 0
        self.history = []  # (level) changes driven by firmware, for tests
        if value is not None:
            self.value(value)

    def init(self, mode=-1, pull=-1, value=None):
        if mode != -1:
            self.mode = mode
        if value is not None:
            self.value(value)

    def value(self, level=None):
        hub = _hub()
        if level is None:
            if hub is not None and self.mode != Pin.OUT:
                hub.send("G", self._name_b)
                n = hub.recv_into(self._ans)
                self._level = 1 if n and self._ans[n - 1] == 0x31 else 0
            return self._level
        self._level = 1 if level else 0
        _keep(self.history, self._level)
        if hub is not None:
            hub.send("S", self._msg[self._level])
            hub.recv_into(self._ans)  # acknowledged once the device has seen the edge
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, level=None):
        return self.value(level)

    def irq(self, handler=None, trigger=None):
        # No interrupts on the simulation board: drivers fall back to polling the level.
        return None


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0):
        self.pin = pin
        self._freq = freq
        self._duty = duty_u16
        self.history = []  # (freq, duty_u16) changes, for tests and the bench's beep log

    def freq(self, value=None):
        if value is None:
            return self._freq
        self._freq = value
        self._note()

    def _note(self):
        _keep(self.history, (self._freq, self._duty))

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        self._duty = value
        self._note()

    def deinit(self):
        self._duty = 0
