"""Hub with both RTC chips on I2C bus "i2c0" (the display's bus): a DS3231 at 0x68 and a PCF8563
at 0x51, counting a virtual clock the tests move (no wall clock: results do not depend on load).

Control commands: ``now`` -> the virtual time (seconds since 2000); ``rtc_advance(s)`` moves it;
``rtc_reset(start)`` both chips fresh (present, no drift, flags clear) at ``start``; and the
chip commands of tools/sim/rtc_chip.py (``rtc_state(chip)``, ``rtc_set``, ``rtc_power_loss``,
``rtc_present``, ``rtc_drift``, ``rtc_nack``), ``chip`` being "ds3231" or "pcf8563".
"""

from tools.sim.buses import I2CBus
from tools.sim.hub import Hub, main_for
from tools.sim.rtc_chip import CHIPS, add_rtc_commands

START = 849312000  # 2026-11-30T00:00:00Z


def add_rtc(bus, chip, clock):
    """An RTC chip (`chip`: "ds3231" at 0x68 or "pcf8563" at 0x51) on I2C `bus` (the display's
    "i2c0" on the boards), counting the virtual `clock`; -> the chip."""
    cls = CHIPS[chip]
    rtc = cls(clock)
    bus.attach(cls.ADDRESS, rtc)
    return rtc


def build():
    hub = Hub()
    world = {"t": START}
    bus = I2CBus(hub)
    hub.register("i2c", "i2c0", bus.serve)
    chips = {}

    def clock():
        return world["t"]

    def reset(start=START):
        world["t"] = int(start)
        for name in CHIPS:
            chips[name] = add_rtc(bus, name, clock)
        return True

    def advance(s):
        world["t"] += int(s)
        return world["t"]

    reset()
    hub.command("now")(clock)
    hub.command("rtc_reset")(reset)
    hub.command("rtc_advance")(advance)
    add_rtc_commands(hub, chips)
    return hub


if __name__ == "__main__":
    main_for(build)
