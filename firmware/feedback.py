# Green/red LEDs and the buzzer: what the passenger sees and hears within the tap.
# show() sets the LEDs at once and plays the beep pattern in the background (asyncio), so the tap
# loop never waits for a buzzer. Patterns are (frequency Hz, milliseconds) steps; 0 Hz is silence.
try:
    import asyncio
except ImportError:  # CPython tools import PATTERNS only
    asyncio = None

PATTERNS = {
    "ok": ((2700, 120),),
    "ok_low": ((2700, 100), (0, 80), (2700, 100)),
    "paid": ((2700, 60), (0, 60), (2700, 60), (0, 60), (2700, 60)),
    "again": ((2000, 80), (0, 60), (2000, 80), (0, 60), (2000, 80), (0, 60), (2000, 80)),
    "refused": ((1000, 700),),
    # A part failed to start (firmware/faults.py): three long low beeps, unlike any tap's.
    "fault": ((800, 300), (0, 150), (800, 300), (0, 150), (800, 300)),
}
SOUNDS = {
    "ok": "beep",
    "ok_low": "beep-beep",
    "paid": "beep-beep-beep (short)",
    "again": "four quick beeps",
    "refused": "long low beep",
    "fault": "three long low beeps",
}
_GREEN_TONES = ("ok", "ok_low", "paid")
_DUTY_ON = 32768


class Feedback:
    def __init__(self, green, red, buzzer, hold_ms=1500):
        self.green = green
        self.red = red
        self.buzzer = buzzer  # a machine.PWM
        self.hold_ms = hold_ms
        self.last = None
        self.played = []  # (tone) history, kept short, for the bench and tests
        self._task = None
        self._queued = False  # _task made but not started yet
        self._pattern = None
        self.idle()

    def idle(self):
        self.green.value(0)
        self.red.value(0)
        self.buzzer.duty_u16(0)

    def show(self, tone):
        """LED now, beep pattern in the background; returns the spoken description."""
        if tone not in PATTERNS:
            tone = "refused"
        green = tone in _GREEN_TONES
        self.green.value(1 if green else 0)
        self.red.value(0 if green else 1)
        self.last = tone
        self.played.append(tone)
        if len(self.played) > 32:
            self.played.pop(0)
        self._pattern = PATTERNS[tone]
        if self._task is None or not self._queued:
            # The playing pattern (if any) stops; the new one starts at the loop's next turn. A
            # task that has not started yet (no await since the last show) just plays the new
            # pattern: a new task per tone would leave the unstarted ones, about 130 B each, in
            # the loop's queue until it runs (docs/runtime.md).
            if self._task is not None:
                self._task.cancel()
            self._queued = True
            self._task = asyncio.create_task(self._play())
        return SOUNDS[tone]

    async def _play(self):
        self._queued = False
        pattern = self._pattern
        try:
            for freq, ms in pattern:
                if freq:
                    self.buzzer.freq(freq)
                    self.buzzer.duty_u16(_DUTY_ON)
                else:
                    self.buzzer.duty_u16(0)
                await asyncio.sleep_ms(ms)
            self.buzzer.duty_u16(0)
            await asyncio.sleep_ms(self.hold_ms)
            self.green.value(0)
            self.red.value(0)
        except asyncio.CancelledError:
            self.buzzer.duty_u16(0)
