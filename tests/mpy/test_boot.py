# mpy: server=tools.sim.esp32_bench heapsize=2m timeout=600
# The validator's start on the strict ESP32 stand-ins (tests/mpy/esp32_machine.py as `machine`):
# parts that fail to start and come back (fault screen and beeps, then selling), the tap loop
# without a modem, the watchdog fed through a long recovery of a full log, reset causes
# (brown-out included) in the BOOT record, safe mode by pin and by file (boot.py stops before
# main.py, as MicroPython's ports/esp32/main.c then skips it), maintenance (the watchdog's long
# window, the log copied) and Ctrl-C at the REPL (docs/boot.md).
import sys

import ramdisk

_flash = ramdisk.RAMBlockDev(4096, 160)  # room for a copy of the 256 KiB log

import esp32_machine  # noqa: E402
import esp32_module  # noqa: E402
import esp32_rig  # noqa: E402
import mptest  # noqa: E402

esp32_rig.install()  # machine, esp32 and time: the stand-ins, before the imports below

import asyncio  # noqa: E402
import time  # noqa: E402

import bootmode  # noqa: E402
import log  # noqa: E402
import record  # noqa: E402
from simlink import Control  # noqa: E402

BOARD = "esp32_pn532_i2c"
WIRING = esp32_rig.wiring(BOARD, {("pin", 36): "safe_mode"})
SECRET = bytes(range(1, 33))
APP_T0 = esp32_rig.APP_T0


def setup():
    log.set_level(log.INFO, echo=False)
    bootmode.reset()
    bootmode.ROOT = "/data"  # the device's root is the mounted RAM file system here


def teardown():
    import os

    log.set_level(log.INFO, echo=True)
    while _made:
        try:
            os.remove(_made.pop())
        except OSError:
            pass


def _wire(**broken):
    table = dict(WIRING)
    for key, name in broken.items():
        kind, n = key.split("_")
        table[(kind, int(n))] = name
    esp32_rig.wire(table)


def _power_on(fresh=True, **broken):
    """A power-up of the reference board; fresh=False keeps the flash (log and file system)."""
    if fresh:
        esp32_machine.use("wroom32")
        esp32_module.use_csv(mptest.repo_root() + esp32_rig.TABLE_4MB, 4 << 20)
    _wire(**broken)
    esp32_machine.RTC().datetime(APP_T0)
    return esp32_rig.load_board(BOARD)


def _cfg(base):
    import config

    return config.validate(_raw_cfg(base))


def _raw_cfg(base):
    return esp32_rig.device_config(base, SECRET)


_made = []


def _config_file(base):
    import json

    path = "/tmp/boot-test-config-%d.json" % (time.ticks_us() & 0xFFFFFF)
    with open(path, "w") as f:
        f.write(json.dumps(_raw_cfg(base)))
    _made.append(path)
    return path


def _mount(fresh=True):
    esp32_rig.mount_data(_flash, fresh)


def _validator(board, base, fresh=True):
    import app

    _mount(fresh)
    board.start()
    cfg = _cfg(base)
    parts = board.make_parts(cfg)
    v = app.Validator(parts, cfg)
    if fresh:
        esp32_rig.activate_bundle(v, cfg)
    return v, parts


def _base():
    return "http://127.0.0.1:%d" % Control().call("collector_port")


async def _run_until(v, done, limit_ms=60000, each=None):
    async def watch():
        t0 = time.ticks_ms()
        while not done(v) and time.ticks_diff(time.ticks_ms(), t0) < limit_ms:
            if each is not None:
                each(v)
            await asyncio.sleep_ms(50)
        v.stopped = True

    asyncio.create_task(watch())
    await v.run()


def _boot_record(v):
    recs = [record.decode(r) for r in v.journal.records_after(0, 64)]
    boots = [r for r in recs if r["kind"] == record.BOOT]
    return boots[-1]


def _close(v, parts):
    if parts.transport is not None:
        asyncio.run(parts.transport.close())
        asyncio.new_event_loop()
    v.journal.close()


# ---- parts that fail to start ----------------------------------------------------------------


def test_a_reader_that_fails_at_boot_shows_the_fault_then_sells_when_it_comes_back():
    ctl = Control()
    board = _power_on(i2c_1="no_reader")  # the PN532's I2C bus answers nobody
    v, parts = _validator(board, _base())
    mptest.eq(parts.reader, None)
    mptest.true("reader" in parts.failed, "the board came up without it")
    seen = {"fault_screen": False, "retries": 0}

    def each(v):
        d = parts.display
        if d is not None and "READER FAULT" in " ".join(d.lines):
            seen["fault_screen"] = True
        f = v.faults.open.get("reader")
        if f is not None:
            seen["retries"] = f.tries
            if f.tries >= 3:
                _wire()  # the technician reseats the cable: the next retry finds it
                ctl.call("bench_place", reader="pn532_i2c")

    asyncio.run(_run_until(v, lambda v: v.taps >= 1, 40000, each))
    asyncio.new_event_loop()
    mptest.true(seen["fault_screen"], "the fault screen named the reader")
    mptest.true(seen["retries"] >= 3, "retried with back-off")
    mptest.eq(parts.feedback.played.count("fault") >= 2, True, "the fault beeps, per retry")
    mptest.eq(v.faults.open, {})
    mptest.true(v.faults.recovered["reader"] >= 3)
    mptest.eq(v.taps, 1)
    card = ctl.call("bench_card", reader="pn532_i2c")
    mptest.eq(len(card["debits"]), 1, "sold once the reader was back")
    boot = _boot_record(v)
    mptest.eq(boot["balance_before"], 0x01, "BOOT: the reader failed to start")
    mptest.true(log.find("reader failed to start"))
    mptest.true(log.find("reader still down"))
    mptest.true(log.find("reader started after"))
    _close(v, parts)


def test_without_psam_and_modem_the_validator_refuses_then_sells_when_the_psam_returns():
    ctl = Control()
    board = _power_on(uart_2="no_psam", uart_1="no_modem")
    v, parts = _validator(board, _base())
    mptest.eq((parts.transport, v.uplink), (None, None), "no modem: no uplink")
    mptest.eq(sorted(parts.failed), ["modem", "psam"])
    st = v.status()
    mptest.eq(sorted(st["faults"]), ["modem", "psam"])
    ctl.call("bench_place", reader="pn532_i2c")
    phase = {"n": 0}

    def each(v):
        if v.taps == 1 and phase["n"] == 0:
            phase["n"] = 1
            mptest.eq(parts.feedback.last, "refused", "PSAM_ERROR: out of service")
            ctl.call("bench_remove", reader="pn532_i2c")
            _wire(uart_1="no_modem")  # the PSAM comes back; the modem stays away

        if phase["n"] == 1 and "psam" not in v.faults.open:
            phase["n"] = 2
            ctl.call("bench_place", reader="pn532_i2c")

    asyncio.run(_run_until(v, lambda v: v.taps >= 2, 40000, each))
    asyncio.new_event_loop()
    taps = [r for r in (record.decode(x) for x in v.journal.records_after(0, 64))]
    kinds = [r["kind"] for r in taps]
    mptest.true(record.PURCHASE in kinds, "the tap loop sold without a modem")
    mptest.eq(v.taps, 2)
    mptest.eq(list(v.faults.open), ["modem"], "the modem is still retried")
    boot = _boot_record(v)
    mptest.eq(boot["balance_before"], 0x02 | 0x04, "BOOT: PSAM and modem failed")
    mptest.eq(boot["flags"] & 0x01, 0x01, "PSAM not ready")
    v.journal.close()


def test_a_modem_that_comes_back_starts_the_uplink():
    import json

    from http_socket import SocketTransport

    base = _base()
    asyncio.run(SocketTransport().request("POST", base + "/_test/reset", b"{}"))
    asyncio.new_event_loop()
    board = _power_on(uart_1="no_modem")
    v, parts = _validator(board, base)
    mptest.eq(v.uplink, None)

    seen = []

    def each(v):
        f = v.faults.open.get("modem")
        text = " ".join(parts.display.lines)
        if f is not None and "MODEM FAULT" in text:
            seen.append(text)
        if f is not None and f.tries >= 3:
            _wire()

    asyncio.run(_run_until(v, lambda v: v.journal.backlog == 0 and v.uplink, 60000, each))
    asyncio.new_event_loop()
    mptest.true(seen, "the idle screen warned of the modem")
    mptest.true("Tap card" in seen[-1], "no fault screen: the validator sells without a modem")
    mptest.true(v.uplink is not None, "the uplink started when the modem came back")
    mptest.eq(v.journal.backlog, 0, "the BOOT record went up")
    st, body = asyncio.run(
        SocketTransport().request("POST", base + "/_test/state?device=1", b"{}")
    )
    asyncio.new_event_loop()
    mptest.true(len(json.loads(body)["seqs"]) >= 2)
    _close(v, parts)


# ---- the watchdog through a long start -------------------------------------------------------


def test_the_watchdog_is_fed_through_the_recovery_of_a_full_log():
    import txlog

    board = _power_on()
    dev = board.make_parts(_cfg(_base())).txlog_dev
    lg = txlog.TxLog(dev)
    n = 0
    try:
        while True:
            lg.append(
                {
                    "kind": record.PURCHASE if n % 2 else record.DEBIT_INTENT,
                    "time": 849300000 + n,
                    "amount": 100,
                    "card_no": b"\x31\x00\x00\x00\x12\x34\x56\x78\x90\x12",
                    "card_atc": (n // 2) & 0xFFFF,
                    "route": 12,
                }
            )
            n += 1
    except txlog.LogFull:
        pass
    lg.close()
    mptest.true(n > 3000, "%d records: the 256 KiB log is full" % n)
    # A watchdog reset mid-day: the board comes back with the full log and its flash.
    esp32_machine.restart(esp32_machine.WDT_RESET)
    board = _power_on(fresh=False)
    t0 = time.ticks_ms()
    v, parts = _validator(board, _base(), fresh=False)
    v.boot()
    ms = time.ticks_diff(time.ticks_ms(), t0)
    timeout, feeds = esp32_machine.wdt_state()
    mptest.eq(timeout, 8000)
    mptest.true(feeds >= 6, "fed between the start-up steps (%d feeds)" % feeds)
    mptest.eq(v.journal.last_seq, n, "nothing lost; no room even for the BOOT record")
    mptest.true(log.find("BOOT record not written: LogFull"), "logged, and the start went on")
    mptest.eq(v.status()["journal"]["backlog"], n)
    mptest.log("full log (%d records): start to BOOT record %d ms here" % (n, ms))
    _close(v, parts)


# ---- reset causes ----------------------------------------------------------------------------


def test_reset_causes_reach_the_boot_record_brownout_included():
    board = _power_on()
    v, parts = _validator(board, _base())
    v.boot()
    mptest.eq(_boot_record(v)["reason"], bootmode.CAUSE_POWER_ON)
    mptest.eq(parts.reset_cause, "power-on")
    _close(v, parts)
    m = esp32_machine
    for what, cause, name in (
        (m.WDT_RESET, bootmode.CAUSE_WATCHDOG, "watchdog"),
        (m.SOFT_RESET, bootmode.CAUSE_SOFT, "soft"),
        (m.HARD_RESET, bootmode.CAUSE_HARD, "hard"),
        (m.brownout, bootmode.CAUSE_BROWNOUT, "brownout"),
        (m.power_cut, bootmode.CAUSE_POWER_ON, "power-on"),
    ):
        if isinstance(what, int):
            m.restart(what)
        else:
            what()
        board = _power_on(fresh=False)
        v, parts = _validator(board, _base(), fresh=False)
        v.boot()
        mptest.eq((_boot_record(v)["reason"], parts.reset_cause), (cause, name))
        mptest.eq(v.status()["reset_cause"], name)
        _close(v, parts)


def test_reset_cause_codes_without_rtc_memory_and_for_an_unknown_cause():
    class NoRtc:
        PWRON_RESET = 1

        def reset_cause(self):
            return 1

        def RTC(self):  # noqa: N802 - machine's name
            raise OSError("no RTC memory")

    mptest.eq(bootmode.reset_cause(NoRtc()), bootmode.CAUSE_POWER_ON)

    class Odd(NoRtc):
        def reset_cause(self):
            return 0  # ESP_RST_SDIO / UNKNOWN on the port

    mptest.eq(bootmode.reset_cause(Odd()), bootmode.CAUSE_UNKNOWN)
    mptest.eq(bootmode.cause_name(99), "other")
    rtc = esp32_machine.RTC()
    esp32_machine.power_cut()
    bootmode.reset_cause(esp32_machine)
    bootmode.rtc_memory(rtc, b"clock")
    mptest.eq(bootmode.rtc_memory(rtc), b"clock")
    esp32_machine.brownout()
    mptest.eq(bootmode.reset_cause(esp32_machine), bootmode.CAUSE_BROWNOUT)
    mptest.eq(bootmode.rtc_memory(rtc), b"clock", "other users' bytes kept after the marker")


# ---- safe mode, maintenance, boot.py and main.py ---------------------------------------------


class FakeOs:
    """The device's root directory for bootmode: names in a set."""

    def __init__(self, *names):
        self.names = set(names)

    def stat(self, path):
        if path not in self.names:
            raise OSError(2)
        return (0x8000, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    def remove(self, path):
        self.names.discard(path)


def _port_start(board, os_mod):
    """What ports/esp32/main.c does after _boot.py: boot.py, then main.py only when boot.py
    ended without an exception; -> "main" or "repl: <exception>"."""
    import os

    src = open(mptest.repo_root() + "/firmware/boot.py").read()
    sys.modules["board"] = board
    real = bootmode.select

    def select(b, pin_cls=None, os_arg=None, machine_mod=None):
        return real(b, pin_cls, os_mod, machine_mod)

    bootmode.select = select
    try:
        exec(src, {"__name__": "__main__"})
    except Exception as e:  # noqa: BLE001 - the port prints it and starts the REPL
        return "repl: %s %s" % (type(e).__name__, e)
    finally:
        bootmode.select = real
    del os
    return "main"


def _level(level):
    from sim_pin import Pin

    Pin("safe_mode", Pin.OUT, value=level)  # the jumper (low) or the board's pull-up (high)


def test_safe_mode_by_pin_starts_the_repl_without_application_or_watchdog():
    board = _power_on()
    _level(0)
    got = _port_start(board, FakeOs())
    mptest.true(got.startswith("repl: SafeMode"), got)
    mptest.eq(bootmode.mode, bootmode.SAFE)
    mptest.eq(esp32_machine.wdt_state(), None, "no watchdog was started")
    import app

    app.main(board)  # an older boot.py that let main.py run: still no application
    mptest.eq(app.current(), None)
    mptest.eq(esp32_machine.wdt_state(), None)


def test_safe_mode_by_file_and_the_pin_left_high_starts_main():
    board = _power_on()
    _level(1)
    mptest.eq(_port_start(board, FakeOs()), "main")
    mptest.eq(bootmode.mode, bootmode.APP)
    bootmode.reset()
    got = _port_start(board, FakeOs(bootmode.path(bootmode.SAFE_FILE)))
    mptest.true(got.startswith("repl: SafeMode") and "safemode" in got, got)
    mptest.eq(esp32_machine.wdt_state(), None)


def test_a_board_without_a_safe_pin_or_with_a_broken_one_starts_the_application():
    class NoPin:
        pass

    mptest.eq(bootmode.select(NoPin(), None, FakeOs())[0], bootmode.APP)
    bootmode.reset()

    class BadPin:
        SAFE_PIN = {"gpio": 6, "pull": None}  # a flash pin: the stand-in refuses it

    mptest.eq(bootmode.select(BadPin(), esp32_machine.Pin, FakeOs())[0], bootmode.APP)
    bootmode.reset()
    mptest.eq(bootmode.decide(True, False, True), (bootmode.SAFE, "safe-mode pin held low"))


def test_maintenance_by_file_is_one_start_only_with_the_long_watchdog_window():
    import app
    import config

    board = _power_on()
    _level(1)
    fs = FakeOs(bootmode.path(bootmode.MAINT_FILE))
    mptest.eq(bootmode.select(board, None, fs)[0], bootmode.MAINT)
    mptest.eq(fs.names, set(), "the file is consumed: the next reset is a normal start")
    _mount()
    cfg_path = _config_file(_base())

    class Board:
        CONFIG_PATH = cfg_path
        SAFE_PIN = board.SAFE_PIN

        @staticmethod
        def start():
            board.start()

        @staticmethod
        def make_parts(cfg):
            return board.make_parts(cfg)

        @staticmethod
        def show_fatal(text):
            raise AssertionError(text)

    mptest.true(config is not None)
    app.main(Board)  # returns to the REPL in maintenance
    v = app.current()
    mptest.true(v.maintenance and v.stopped)
    mptest.eq(esp32_machine.wdt_state()[0], app.MAINT_WDT_MS, "the watchdog's long window")
    mptest.true("MAINTENANCE" in " ".join(v.parts.display.lines))
    out = "/data/txlog.img"
    n = v.copy_log(out)
    mptest.eq(n, 64 * 4096)
    import os

    mptest.eq(os.stat(out)[6], n)
    first = open(out, "rb").read(4096)
    buf = bytearray(4096)
    v.parts.txlog_dev.readblocks(0, buf)
    mptest.eq(first, bytes(buf), "the copy is the partition")
    mptest.true(v.status()["maintenance"])
    app.copy_log("/data/no/such/folder.img")  # a clear message, no partial file, no crash
    mptest.raises(OSError, os.stat, "/data/no/such/folder.img")
    _close(v, v.parts)


def test_ctrl_c_while_running_enters_maintenance_instead_of_a_reset_8_s_later():

    import app

    board = _power_on()
    _level(1)
    _mount()
    cfg_path = _config_file(_base())

    async def ctrl_c(v):
        await asyncio.sleep_ms(1500)
        v.parts.feedback.show("refused")  # mid-beep (a 700 ms tone) ...
        await asyncio.sleep_ms(50)
        raise KeyboardInterrupt  # ... the REPL's 0x03 while the loop runs

    class Board:
        CONFIG_PATH = cfg_path
        SAFE_PIN = board.SAFE_PIN

        @staticmethod
        def start():
            board.start()

        @staticmethod
        def make_parts(cfg):
            p = board.make_parts(cfg)
            p.extra_task = ctrl_c
            return p

        @staticmethod
        def show_fatal(text):
            raise AssertionError(text)

    bootmode.select(board, None, FakeOs())
    app.main(Board)
    v = app.current()
    mptest.true(v.maintenance, "Ctrl-C: maintenance")
    mptest.eq(v.parts.feedback.buzzer.duty_u16(), 0, "the cut-off beep is silenced")
    mptest.eq(esp32_machine.wdt_state()[0], app.MAINT_WDT_MS)
    time.sleep_ms(100)
    esp32_machine.check()  # well past nothing: the long window holds
    app.maintenance(1)
    mptest.eq(esp32_machine.wdt_state()[0], 60000, "app.maintenance(minutes) sets the window")
    _close(v, v.parts)
    import os

    # mpremote soft-resets the board when it connects: the new start stays in maintenance.
    esp32_machine.restart(esp32_machine.SOFT_RESET)
    mptest.eq(esp32_machine.wdt_state()[0], 60000, "a soft reset keeps the running watchdog")
    bootmode.reset()
    mptest.eq(bootmode.select(board)[0], bootmode.MAINT)
    # The window ends (watchdog reset) or the depot resets the board: back in service.
    esp32_machine.restart(esp32_machine.WDT_RESET)
    bootmode.reset()
    mptest.eq(bootmode.select(board)[0], bootmode.APP)
    mptest.raises(OSError, os.stat, bootmode.path(bootmode.MAINT_ON))


def test_every_board_has_a_safe_pin_that_is_free_and_no_strapping_pin():
    boards = {
        "esp32_pn532_i2c": "wroom32",
        "esp32_pn532_spi": "wroom32",
        "esp32_rc522_spi": "wroom32",
        "esp32s3_pn532_hsu": "s3",
        "esp32s3_pn532_i2c": "s3",
    }
    for name, module in boards.items():
        board = esp32_rig.load_board(name)
        gpio = board.SAFE_PIN["gpio"]
        used = set()
        for part in (board.READER, board.PSAM, board.MODEM, board.FEEDBACK, board.DISPLAY):
            for key, value in part.items():
                if isinstance(value, int) and key not in ("i2c_id", "spi_id", "uart_id"):
                    used.add(value)
        mptest.false(gpio in used, "%s: GPIO%d is taken" % (name, gpio))
        m = esp32_machine.MODULES[module]
        mptest.false(gpio in m.strapping, "%s: GPIO%d is a strapping pin" % (name, gpio))
        mptest.true(gpio in m.gpios and gpio not in m.flash, "%s: GPIO%d exists" % (name, gpio))
        if board.SAFE_PIN["pull"] != "up":
            mptest.true(gpio in m.input_only, "an external pull-up only where none is inside")
