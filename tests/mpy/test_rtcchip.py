# mpy: server=tools.sim.rtc_server heapsize=64k timeout=120
# The DS3231 and PCF8563 drivers against their bus-level simulators on the display's I2C bus:
# time read and written in BCD, the lost-power flag (OSF / VL) and its clearing, drift, a
# missing chip (NACK: OSError) and registers that hold no time.
import errno

import mptest
import rtcchip
import timeutil
from ds3231 import DS3231
from pcf8563 import PCF8563
from sim_i2c import SimI2C
from simlink import Control

START = 849312000  # 2026-11-30 00:00:00 UTC, the server's virtual clock at reset
_bus = SimI2C("i2c0")
ctl = Control()
CHIPS = (("ds3231", DS3231), ("pcf8563", PCF8563))


def setup():
    ctl.call("rtc_reset", start=START)


def test_a_chip_set_at_the_factory_reads_the_world_time_and_follows_it():
    for name, cls in CHIPS:
        chip = cls(_bus)
        mptest.eq(chip.read(), (START, False), name)
        ctl.call("rtc_advance", s=3661)
        mptest.eq(chip.read(), (START + 3661, False), name)
        ctl.call("rtc_reset", start=START)


def test_write_then_read_across_calendar_edges():
    edges = (
        timeutil.to_seconds(2028, 2, 29, 23, 59, 59),  # leap day
        timeutil.to_seconds(2026, 12, 31, 23, 59, 58),  # year end
        timeutil.to_seconds(2099, 12, 31, 12, 0, 0),
        timeutil.to_seconds(2025, 1, 1, 0, 0, 0),
    )
    for name, cls in CHIPS:
        chip = cls(_bus)
        for t in edges:
            chip.write(t)
            mptest.eq(chip.read(), (t, False), "%s %d" % (name, t))
            mptest.eq(ctl.call("rtc_state", chip=name)["time"], t)
        ctl.call("rtc_advance", s=2)
        mptest.eq(chip.read()[0], edges[-1] + 2, name + " counts on after a write")


def test_weekday_written_as_each_datasheet_numbers_it():
    # 2026-11-30 is a Monday: the DS3231's day register 1-7 (Sunday = 1 here), the PCF8563's 0-6.
    DS3231(_bus).write(START)
    _bus.writeto(0x68, b"\x03")
    mptest.eq(_bus.readfrom(0x68, 1), b"\x02")
    PCF8563(_bus).write(START)
    mptest.eq(_bus.readfrom_mem(0x51, 0x06, 1), b"\x01")


def test_lost_power_sets_the_flag_until_a_good_time_is_written():
    for name, cls in CHIPS:
        chip = cls(_bus)
        ctl.call("rtc_power_loss", chip=name)
        t, lost = chip.read()
        mptest.true(lost, name + ": flag after the power loss")
        mptest.eq(t, 0, name + ": restarts at 2000-01-01")
        mptest.true(chip.lost_power())
        chip.write(START + 100)
        mptest.eq(chip.read(), (START + 100, False), name + ": flag cleared by the write")


def test_ds3231_osf_is_cleared_only_by_writing_zero():
    ctl.call("rtc_power_loss", chip="ds3231")
    _bus.writeto_mem(0x68, 0x0F, b"\xff")  # writing 1 does not set or keep anything else
    mptest.true(DS3231(_bus).lost_power())
    _bus.writeto_mem(0x68, 0x0F, b"\x00")
    mptest.false(DS3231(_bus).lost_power())


def test_ds3231_stopped_oscillator_is_restarted_by_a_write():
    _bus.writeto_mem(0x68, 0x0E, b"\x9c")  # EOSC set: no oscillator on battery
    DS3231(_bus).write(START)
    mptest.eq(_bus.readfrom_mem(0x68, 0x0E, 1)[0] & 0x80, 0)


def test_ds3231_twelve_hour_mode_is_read():
    # Another firmware left the chip in 12-hour mode: 0x72 = 12-hour, PM, 12 -> 12:xx (noon).
    _bus.writeto_mem(0x68, 0x00, bytes((0x30, 0x15, 0x72, 0x02, 0x30, 0x11, 0x26)))
    mptest.eq(DS3231(_bus).read()[0], timeutil.to_seconds(2026, 11, 30, 12, 15, 30))
    _bus.writeto_mem(0x68, 0x02, bytes((0x52,)))  # 12-hour, AM, 12 -> 00:xx
    mptest.eq(DS3231(_bus).read()[0], timeutil.to_seconds(2026, 11, 30, 0, 15, 30))


def test_pcf8563_stop_bit_reads_as_lost():
    _bus.writeto_mem(0x51, 0x00, b"\x20")
    mptest.true(PCF8563(_bus).read()[1])
    PCF8563(_bus).write(START)
    mptest.eq(_bus.readfrom_mem(0x51, 0x00, 1), b"\x00")
    mptest.false(PCF8563(_bus).read()[1])


def test_drift_accumulates_with_the_world_time():
    for name, cls in CHIPS:
        chip = cls(_bus)
        ctl.call("rtc_drift", chip=name, ppm=20)
        ctl.call("rtc_advance", s=7 * 86400)
        t, lost = chip.read()
        mptest.false(lost)
        mptest.eq(t - ctl.call("now"), 12, name + ": 20 ppm over a week is 12 s fast")
        ctl.call("rtc_reset", start=START)


def test_missing_chip_is_a_nack_oserror():
    for name, cls in CHIPS:
        ctl.call("rtc_present", chip=name, on=False)
        chip = cls(_bus)
        e = mptest.raises(OSError, chip.read)
        mptest.eq(e.errno, errno.ENODEV)
        mptest.raises(OSError, chip.write, START)


def test_a_bus_glitch_fails_one_read_and_the_next_works():
    chip = DS3231(_bus)
    ctl.call("rtc_nack", chip="ds3231", n=1)
    mptest.raises(OSError, chip.read)
    mptest.eq(chip.read(), (START, False))


def test_registers_without_a_valid_time_are_an_error_not_a_date():
    _bus.writeto_mem(0x68, 0x00, bytes((0x5A, 0x00, 0x00, 0x01, 0x01, 0x01, 0x26)))  # 5A s
    mptest.raises(rtcchip.RtcChipError, DS3231(_bus).read)
    ctl.call("rtc_reset", start=START)
    _bus.writeto_mem(0x51, 0x07, b"\x13")  # month 13
    mptest.raises(rtcchip.RtcChipError, PCF8563(_bus).read)
    PCF8563(_bus).write(START)
    mptest.eq(PCF8563(_bus).read(), (START, False), "a good write replaces the bad registers")


def test_times_outside_the_chips_range_are_refused_before_the_bus():
    chip = DS3231(_bus)
    mptest.raises(ValueError, chip.write, -1)
    mptest.raises(ValueError, chip.write, timeutil.to_seconds(2100, 1, 1))
    mptest.eq(ctl.call("rtc_state", chip="ds3231")["writes"], 0)


def test_make_names_the_chip():
    mptest.eq(rtcchip.make(_bus, "ds3231").NAME, "ds3231")
    mptest.eq(rtcchip.make(_bus, "pcf8563").NAME, "pcf8563")
    mptest.raises(ValueError, rtcchip.make, _bus, "ds1307")
