# mpy: server=tools.sim.esp32_bench heapsize=2m timeout=600
# Time on the strict ESP32 stand-in (tests/mpy/esp32_machine.py as `machine`: its RTC restarts at
# 2000-01-01 after a power cut and runs on through soft and watchdog resets, RTC memory too) with
# the board's DS3231 on the display's I2C bus (tools/sim/rtc_chip.py): power-up with a good chip,
# a watchdog and a soft reset mid-day (time kept), a power cut with a flat chip battery (the last
# known time, records flagged), a chip missing at start-up that comes back, and the back office's
# correction written back to the chip (docs/time.md).
import ramdisk

_flash = ramdisk.RAMBlockDev(4096, 160)

import esp32_machine  # noqa: E402
import esp32_module  # noqa: E402
import esp32_rig  # noqa: E402
import mptest  # noqa: E402

esp32_rig.install()  # machine, esp32 and time: the stand-ins, before the imports below

import bootmode  # noqa: E402
import log  # noqa: E402
import record  # noqa: E402
import timeutil  # noqa: E402
from simlink import Control  # noqa: E402

BOARD = "esp32_pn532_i2c"
# the uplink is not what these tests are about: no modem on UART 1
WIRING = esp32_rig.wiring(BOARD, {("pin", 36): "safe_mode", ("uart", 1): "no_modem"})
T = timeutil.to_seconds(2026, 12, 4, 6, 30, 0)
ctl = Control()


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()
    bootmode.reset()
    ctl.call("rtc_present", chip="ds3231", on=True)
    ctl.call("rtc_set", chip="ds3231", secs=T)


def _validator(fresh):
    import app
    import config

    esp32_rig.wire(WIRING)
    esp32_rig.mount_data(_flash, fresh)
    board = esp32_rig.load_board(BOARD)
    board.start()
    cfg = config.validate(
        {
            "device_id": 1,
            "secret": bytes(range(1, 33)).hex(),
            "route": 12,
            "city": "1001",
            "institution": "1200290000000000",
            "collector_url": "http://127.0.0.1:9",
        }
    )
    parts = board.make_parts(cfg)
    v = app.Validator(parts, cfg)
    v.boot()
    return v, parts


def _records(v, kind=None):
    recs = [record.decode(r) for r in v.journal.records_after(0, 64)]
    return [r for r in recs if kind is None or r["kind"] == kind]


def _power_up():
    """A power-on of the reference board with a fresh flash: machine.RTC at 2000-01-01."""
    esp32_machine.use("wroom32")
    esp32_module.use_csv(mptest.repo_root() + esp32_rig.TABLE_4MB, 4 << 20)


def _machine_rtc():
    y, mo, d, _wd, hh, mi, ss, _ = esp32_machine.RTC().datetime()
    return timeutil.to_seconds(y, mo, d, hh, mi, ss)


def test_power_up_with_a_good_chip_sets_the_board_rtc_and_sells_on_trusted_time():
    _power_up()
    mptest.true(_machine_rtc() < 86400)
    v, parts = _validator(fresh=True)
    st = v.status()["clock"]
    mptest.eq((st["source"], st["trusted"], st["chip"]), ("rtc", True, "ok"))
    mptest.between(_machine_rtc(), T, T + 2, "machine.RTC in step with the chip")
    mptest.between(v.clock.now(), T, T + 2)
    boot = _records(v, record.BOOT)[-1]
    mptest.eq(boot["flags"] & record.FLAG_CLOCK_UNSET, 0)
    mptest.eq(boot["balance_before"] & 0x08, 0, "no RTC fault")
    v.journal.close()


def test_watchdog_and_soft_resets_keep_the_time_even_with_a_flat_chip():
    _power_up()
    v, parts = _validator(fresh=True)
    v.journal.close()
    ctl.call("rtc_power_loss", chip="ds3231")  # the chip's time is gone from now on
    for cause in (esp32_machine.WDT_RESET, esp32_machine.SOFT_RESET):
        esp32_machine.restart(cause)
        bootmode.reset()
        v, parts = _validator(fresh=False)
        st = v.status()["clock"]
        mptest.eq((st["source"], st["trusted"], st["chip"]), ("kept", True, "lost power"))
        mptest.between(v.clock.now(), T, T + 5)
        mptest.eq(_records(v, record.BOOT)[-1]["flags"] & record.FLAG_CLOCK_UNSET, 0)
        v.journal.close()


def test_power_cut_with_a_flat_chip_runs_on_the_last_known_time_flagged_then_corrected():
    _power_up()
    v, parts = _validator(fresh=True)
    v.journal.close()
    ctl.call("rtc_power_loss", chip="ds3231")
    esp32_machine.power_cut()
    bootmode.reset()
    v, parts = _validator(fresh=False)
    st = v.status()["clock"]
    mptest.eq((st["source"], st["trusted"], st["chip"]), ("last_known", False, "lost power"))
    mptest.between(v.clock.now(), T, T + 5, "the last known time, not 2000")
    boot = _records(v, record.BOOT)[-1]
    mptest.eq(boot["flags"] & record.FLAG_CLOCK_UNSET, record.FLAG_CLOCK_UNSET)
    # A network ten years off is held, journaled once, and moves nothing.
    before = v.clock.now()
    mptest.eq(v._offer_time(T + 10 * 365 * 86400, "network"), None)
    mptest.eq(v._offer_time(T + 10 * 365 * 86400 + 60, "network"), None)
    held = [r for r in _records(v, record.CLOCK_CHANGE) if r["reason"] & 0x80]
    mptest.eq(len(held), 1, "journaled once")
    mptest.eq(held[0]["reason"], 0x80 | 4)
    mptest.between(v.clock.now(), before, before + 2)
    # The back office an hour later: adopted, machine.RTC and the chip written, flag cleared.
    step = v._server_time(T + 3600)
    mptest.true(step is not None and step > 3500)
    mptest.true(v.clock.trusted)
    chip = ctl.call("rtc_state", chip="ds3231")
    mptest.eq(chip["lost"], False, "OSF cleared by the write-back")
    mptest.between(chip["time"], T + 3600, T + 3602)
    mptest.between(_machine_rtc(), T + 3600, T + 3602)
    change = _records(v, record.CLOCK_CHANGE)[-1]
    mptest.eq((change["reason"], change["flags"] & record.FLAG_CLOCK_UNSET), (5, 0))
    v.journal.close()


def test_a_missing_chip_is_a_fault_retried_until_it_answers():
    _power_up()
    ctl.call("rtc_present", chip="ds3231", on=False)
    v, parts = _validator(fresh=True)
    mptest.true("rtc" in parts.failed)
    st = v.status()
    mptest.eq(st["clock"]["chip"], "missing")
    mptest.false(st["clock"]["trusted"])
    mptest.eq(_records(v, record.BOOT)[-1]["balance_before"] & 0x08, 0x08)
    f = v.faults.open["rtc"]
    mptest.false(v.retry(f), "still missing")
    ctl.call("rtc_present", chip="ds3231", on=True)
    mptest.true(v.retry(f))
    st = v.status()["clock"]
    mptest.eq((st["source"], st["trusted"], st["chip"]), ("rtc", True, "ok"))
    mptest.between(v.clock.now(), T, T + 2)
    v.journal.close()
