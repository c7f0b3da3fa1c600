"""The bench's time steps (docs/time.md): the RTC chip, the network's time, the reader at a start,
and the check of the validator's clock decision. Registered in the step table of
tools/simbench_load.py when tools/simbench imports this module; kept apart from the bench itself.

    rtc = "lost_power" | "missing" | "present"     the RTC chip's cell went flat / it stops or
                                                    starts answering on the bus
    rtc_drift_ppm = 500                             the chip runs that much fast from now on
    network_time_offset = 315360000                 the network's time (NITZ, AT+CCLK) is off
    nitz = false                                    the network sends no time
    reader = "dead" | "back"                        the reader chip stops / starts answering
    power_on = true                                 after `power_cut = true, restart = false`
    expect_clock = {trusted, source, chip, within_s}  the validator's last clock decision
"""

from tools.simbench_load import ScenarioError, step

RTC_STATES = ("lost_power", "missing", "present")
CLOCK_KEYS = {"trusted", "source", "chip", "within_s"}


def _clock(t):
    from tools.simbench import local_clock

    return local_clock(t)


def _check_rtc(ev, sc):
    if ev["rtc"] not in RTC_STATES:
        raise ScenarioError("rtc = %r: one of %s" % (ev["rtc"], ", ".join(RTC_STATES)))


@step("rtc", check=_check_rtc)
def rtc_event(bench, unit, ev):
    chip = unit.world.rtc
    if chip is None:
        raise ScenarioError("rtc: this validator has no RTC chip (rtc_chip)")
    what = ev["rtc"]
    if what == "lost_power":
        chip.power_loss()
    else:
        chip.present = what == "present"
    bench.say("%s  %sthe RTC chip: %s" % (_clock(bench.now), unit.label, what))


@step("rtc_drift_ppm")
def rtc_drift_event(bench, unit, ev):
    unit.world.rtc.set_drift(float(ev["rtc_drift_ppm"]))
    bench.say(
        "%s  %sthe RTC chip drifts %+g ppm" % (_clock(bench.now), unit.label, ev["rtc_drift_ppm"])
    )


@step("network_time_offset")
def network_time_event(bench, unit, ev):
    unit.world.modem.time_offset = int(ev["network_time_offset"])
    bench.say(
        "%s  %sthe network's time is %+d s off"
        % (_clock(bench.now), unit.label, unit.world.modem.time_offset)
    )


@step("nitz")
def nitz_event(bench, unit, ev):
    unit.world.modem.nitz = bool(ev["nitz"])
    said = "sends" if ev["nitz"] else "does not send"
    bench.say("%s  %sthe network %s its time" % (_clock(bench.now), unit.label, said))


def _check_reader(ev, sc):
    if ev["reader"] not in ("dead", "back"):
        raise ScenarioError("reader = dead | back")


@step("reader", check=_check_reader)
def reader_event(bench, unit, ev):
    """The reader chip NACKs every transaction ("dead") or answers again ("back"): at a start
    it is a part that failed, retried with back-off (docs/boot.md)."""
    if unit.reader != "pn532_i2c":
        raise ScenarioError("reader = dead | back: on a pn532_i2c validator")
    if ev["reader"] == "dead":
        unit.world.chip.fault("nack_bus", count=10**9)
    else:
        unit.world.chip.clear_faults()
    bench.say("%s  %sthe reader chip is %s" % (_clock(bench.now), unit.label, ev["reader"]))


@step("power_on")
def power_on_event(bench, unit, ev):
    """The ignition comes on again after `power_cut = true, restart = false` (the bus was
    parked meanwhile)."""
    unit.boot("power on")


def _check_expect_clock(ev, sc):
    want = ev["expect_clock"]
    if not isinstance(want, dict) or not set(want) <= CLOCK_KEYS:
        raise ScenarioError("expect_clock: a table of %s" % ", ".join(sorted(CLOCK_KEYS)))


@step("expect_clock", check=_check_expect_clock)
def expect_clock_event(bench, unit, ev):
    """The validator's last clock decision (its last boot or clock event) is as written;
    within_s: the clock's own reading then was that close to the scenario's time."""
    want = ev["expect_clock"]
    unit.pump(0.2)
    got = getattr(unit, "clock", None) or {}
    for key in ("trusted", "source", "chip"):
        if key in want and got.get(key) != want[key]:
            bench.fail(
                "%sclock %s is %r, expected %r (%s)"
                % (unit.label, key, got.get(key), want[key], got.get("why", ""))
            )
    if "within_s" in want:
        off = got.get("time", 0) - (getattr(unit, "clock_at", None) or 0)
        if abs(off) > int(want["within_s"]):
            bench.fail("%sclock is %+d s off the scenario's time" % (unit.label, off))
    bench.say(
        "%s  %sclock: %s%s"
        % (
            _clock(bench.now),
            unit.label,
            got.get("source"),
            "" if got.get("trusted") else " (untrusted)",
        )
    )


def note(unit, ev):
    """From Unit.note: keep the validator's last clock decision (boot and clock events)."""
    if ev["ev"] in ("boot", "clock") and "trusted" in ev:
        unit.clock = ev
        unit.clock_at = unit.world.time
