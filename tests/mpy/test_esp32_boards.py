# mpy: server=tools.sim.esp32_bench heapsize=2m timeout=600
# Each ESP32 board's own factory code (boards/esp32_common.py + board.py) builds the validator's
# parts on the strict stand-ins of the ESP32 port (tests/mpy/esp32_machine.py as `machine`,
# esp32_module.py as `esp32`), on every module the board names, and the parts then sell a fare
# and upload a batch to the collector over the board's modem; then the whole application
# (firmware/app.py, as main.py starts it) runs on each board, sells to a tapped card and uploads,
# and a hung tap loop lets the stand-in's watchdog reset the board, which comes back told why:
# the code an operator flashes, run where a board would refuse it before it meets hardware.
import ramdisk

# The application's flash first, before the imports below fragment the heap.
_flash = ramdisk.RAMBlockDev(4096, 64)

import esp32_machine  # noqa: E402
import esp32_module  # noqa: E402
import esp32_rig  # noqa: E402
import mptest  # noqa: E402

esp32_rig.install()  # machine, esp32 and time (from the RTC, counted from 2000 as on a board)

import esp32_common  # noqa: E402
from psam_app import PsamApp  # noqa: E402
from simlink import Control  # noqa: E402

# board -> (modules it must run on, reader on the hub); the wiring: esp32_rig.wiring(board)
BOARDS = {
    "esp32_pn532_i2c": (("wroom32", "wrover"), "pn532_i2c"),
    "esp32_pn532_spi": (("wroom32", "wrover"), "pn532_spi"),
    "esp32_rc522_spi": (("wroom32", "wrover"), "rc522_spi"),
    "esp32s3_pn532_hsu": (("s3",), "pn532_hsu"),
    "esp32s3_pn532_i2c": (("s3",), "pn532_i2c"),
}
CFG = {"modem": "sim7600", "apn": "cmnet"}
SECRET = bytes(range(1, 33))  # device 1 at the test collector (tools/collector/testserver.py)
T0 = 849300000


_last_parts = []
_made = []  # journal folders in /tmp, removed after each test (a crowded /tmp starves others)


def teardown():
    while _made:
        root = _made.pop()
        _rmtree(root)
        _rmtree(root + ".hwm")


def _sell(parts, reader_kind):
    import memlog
    import purchase

    mptest.eq(parts.reader.kinds, "A", "type B off as the board says")
    _last_parts[:] = [parts]
    ctl = Control()
    ctl.call("bench_place", reader=reader_kind)
    target = parts.reader.poll()
    mptest.true(target is not None and target.iso_dep, "card activated on %s" % reader_kind)
    parts.psam_link.reset()
    journal = []
    lg = memlog.make(journal, intents=False, real=False)
    p = purchase.Purchaser(PsamApp(parts.psam_link), lg)
    mptest.true(p.boot(), "PSAM over the board's UART 2")
    res = p.tap(parts.reader, {"debit": 150, "must_cover": 150, "route": 1}, T0)
    mptest.eq(res.reason, purchase.OK, res.detail)
    card = ctl.call("bench_card", reader=reader_kind)
    mptest.eq((len(card["debits"]), card["violations"]), (1, []))
    parts.reader.release()
    return journal


def _rmtree(path):
    import os

    try:
        names = os.listdir(path)
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for name in names:
        _rmtree(path + "/" + name)
    os.rmdir(path)


def _journal(tag, n):
    import time

    from journal import Journal

    root = "/tmp/esp32-boards-%s-%d" % (tag, time.ticks_us() & 0xFFFFFF)
    _made.append(root)
    j = Journal(root, {"seg_records": 64})
    for i in range(n):
        j.append(
            {
                "kind": 1,
                "time": T0 + i,
                "psam_tid": b"\x00\x00\x12\x34\x56\x78",
                "psam_serial": 7000 + j.last_seq + 1,
                "amount": 150,
                "route": 52,
            }
        )
    return j


async def _upload(parts, tag):
    """A batch through the board's modem on its strict UART to the collector."""
    import json

    from http_socket import SocketTransport
    from uplink import Uplink

    ctl = Control()
    base = "http://127.0.0.1:%d" % ctl.call("collector_port")
    sock = SocketTransport()
    status, _ = await sock.request("POST", base + "/_test/reset", b"{}")
    mptest.eq(status, 200)
    j = _journal(tag, 100)
    u = Uplink(parts.transport, j, 1, SECRET, base, clock=lambda: T0)
    mptest.true(await u.sync(), u.last_error)
    status, body = await sock.request("POST", base + "/_test/state?device=1", b"{}")
    mptest.eq(json.loads(body)["seqs"], list(range(1, 101)))
    mptest.eq(j.acked_seq, 100)
    # The driver handed the UART only what its TX buffer had room for: write() never held the
    # loop (the pacer's estimate of the line never runs ahead of the port's), in several chunks.
    at = parts.transport.at
    mptest.eq(at.stream.writes_blocked, 0, "a modem write waited for the line")
    mptest.true(at.pacer.chunks > u.sent_bytes // at.pacer.chunk)
    await parts.transport.close()
    return u


async def _board(name):
    modules, reader_kind = BOARDS[name]
    for module in modules:
        board = esp32_rig.power_on(name, module)
        mptest.eq(board.NAME, name)
        parts = board.make_parts(CFG)
        mptest.eq(parts.reset_cause, "power-on")
        mptest.true(parts.display is not None, "display built on I2C0")
        mptest.eq(parts.root, "/data")
        mptest.eq(parts.txlog_dev.info()[4], "txlog")
        mptest.eq(parts.txlog_dev.ioctl(4, 0), 64, "256 KiB of 4 KiB blocks")
        used = sorted(set(n for n, _ in esp32_machine.strapping_used))
        mptest.eq(used, sorted(board.STRAPPING), "strapping pins used = the board's list")
        mptest.eq(esp32_machine.wdt_state()[0], esp32_common.WDT_MS)
        _sell(parts, reader_kind)
        u = await _upload(parts, name + module)
        mptest.log("%s on %s: sold, %d bytes uploaded" % (name, module, u.sent_bytes))
    return esp32_machine.made


async def test_pn532_i2c_board():
    made = await _board("esp32_pn532_i2c")
    i2c1 = [kw for kind, n, kw in made if kind == "i2c" and n == 1]
    mptest.eq(len(i2c1), 1)
    mptest.eq(
        (i2c1[0]["sda"].name, i2c1[0]["scl"].name, i2c1[0]["freq"]), ("gpio18", "gpio19", 400000)
    )


async def test_pn532_spi_board_uses_lsb_first():
    made = await _board("esp32_pn532_spi")
    spi = [kw for kind, n, kw in made if kind == "spi"]
    mptest.eq(spi[0]["firstbit"], esp32_machine.SPI.LSB)


async def test_rc522_board():
    await _board("esp32_rc522_spi")


async def test_s3_hsu_board_gives_the_three_uarts_to_reader_psam_and_modem():
    made = await _board("esp32s3_pn532_hsu")
    uarts = sorted((n, kw["tx"], kw["rx"]) for kind, n, kw in made if kind == "uart")
    mptest.eq(uarts, [(0, 15, 16), (1, 17, 18), (2, 4, 5)])
    reader_uart = [kw for kind, n, kw in made if kind == "uart" and n == 1]
    mptest.eq(reader_uart[0]["baudrate"], 115200)  # opened at the chip's power-up speed,
    mptest.eq(_last_parts[0].reader.t.baudrate, 1288000)  # moved up after init: the sale ran so


async def test_s3_i2c_board_puts_the_pn532_on_the_hsu_boards_uart_pins():
    made = await _board("esp32s3_pn532_i2c")
    i2c1 = [kw for kind, n, kw in made if kind == "i2c" and n == 1]
    mptest.eq((i2c1[0]["sda"].gpio, i2c1[0]["scl"].gpio), (17, 18))


def test_s3_hsu_board_finds_the_pn532_still_at_its_fast_rate_after_a_soft_reset():
    # The ESP32 restarts, the PN532 does not: the second start opens UART1 at 115 200 while the
    # chip listens at 1 288 000 since the first; the board tries the fast rate and goes on.
    for _ in range(2):
        board = esp32_rig.power_on("esp32s3_pn532_hsu", "s3")
        parts = board.make_parts(CFG)
        mptest.eq(parts.reader.t.baudrate, 1288000)
        mptest.true(parts.reader.firmware is not None)


def test_the_hsu_set_up_does_not_fit_a_classic_esp32_or_stock_s3_firmware():
    # Three UARTs besides the REPL: the S3 board on the stock S3 firmware (REPL on UART0) fails
    # where the modem takes UART0 with its large buffers; so would any classic ESP32 plan. The
    # board still comes up (the application retries the modem and sells without it).
    board = esp32_rig.power_on("esp32s3_pn532_hsu", "s3_stock")
    parts = board.make_parts(CFG)
    mptest.eq(parts.transport, None)
    retry, e, attr = parts.failed["modem"]
    mptest.true(isinstance(e, ValueError) and "REPL" in str(e), str(e))
    mptest.eq(attr, "transport")
    mptest.raises(ValueError, retry)
    mptest.true(parts.reader is not None and parts.psam_link is not None)


def test_the_classic_boards_fail_on_a_module_where_a_pin_is_taken():
    # The old plan (PSAM I/O on 16/17) on a WROVER: the port has no GPIO16/17 there.
    board = esp32_rig.power_on("esp32_pn532_i2c", "wrover")
    old = dict(board.PSAM, tx=17, rx=16)
    from psam_link import from_board

    machine = esp32_machine
    e = mptest.raises(ValueError, from_board, old, machine.UART, machine.Pin, machine.PWM)
    mptest.eq(str(e), "invalid pin")


def test_a_board_wired_differently_is_a_clear_error():
    esp32_machine.use("wroom32")
    esp32_machine.WIRING.clear()
    e = mptest.raises(
        ValueError,
        esp32_common.make_reader,
        {
            "chip": "rc522",
            "spi_id": 1,
            "baudrate": 1,
            "sck": 18,
            "mosi": 23,
            "miso": 19,
            "cs": 5,
            "irq": 34,
        },
    )
    mptest.true("does not wire" in str(e))


def test_blacklist_slots_come_from_the_partition_table():
    esp32_machine.use("wroom32")
    esp32_module.use_csv(mptest.repo_root() + esp32_rig.TABLE_4MB, 4 << 20)
    mptest.eq(esp32_common.blacklist_slots(), None, "no slots on the 4 MB table")
    txlog = esp32_module.Partition.find(esp32_module.Partition.TYPE_DATA, label="txlog")
    mptest.eq([(p.info()[1], p.info()[3]) for p in txlog], [(0x40, 0x40000)])
    esp32_module.use_csv(mptest.repo_root() + esp32_rig.TABLE_16MB, 16 << 20)
    slots = esp32_common.blacklist_slots()
    mptest.eq([s.info()[4] for s in slots], ["blist_a", "blist_b"])


def test_the_rtc_gives_validator_seconds_and_restarts_at_2000_after_a_power_cut():
    esp32_machine.use("wroom32")
    mptest.between(esp32_common._rtc_seconds(), 0, 5)
    esp32_machine.RTC().datetime((2026, 12, 4, 4, 16, 30, 0, 0))
    import timeutil

    want = timeutil.to_seconds(2026, 12, 4, 16, 30, 0)
    mptest.between(esp32_common._rtc_seconds(), want, want + 5)
    esp32_machine.restart(esp32_machine.WDT_RESET)
    mptest.between(esp32_common._rtc_seconds(), want, want + 5)
    esp32_machine.power_cut()
    mptest.between(esp32_common._rtc_seconds(), 0, 5)


# ---- the whole application on each board ----------------------------------------------------
APP_T0 = esp32_rig.APP_T0  # the RTC set once; a power cut would take it to 2000


def _app(name, module, base):
    """Power the board on, mount a fresh file system at /data, build the Validator as main.py
    does (with the board's parts), activate a parameter bundle; -> (validator, parts)."""
    import app
    import config

    board = esp32_rig.power_on(name, module)
    esp32_machine.RTC().datetime(APP_T0)
    esp32_rig.mount_data(_flash)  # one device, reformatted for each run
    board.start()
    cfg = config.validate(esp32_rig.device_config(base, SECRET))
    parts = board.make_parts(cfg)
    v = app.Validator(parts, cfg)
    esp32_rig.activate_bundle(v, cfg)
    return v, parts


def _sold_and_uploaded(v):
    return v.taps >= 1 and v.journal.backlog == 0 and v.journal.acked_seq >= 2


async def _run_until(v, done, limit_ms=60000):
    """Run the application until done(v) or limit_ms; then stop its tap loop."""
    import asyncio
    import time

    async def watch():
        t0 = time.ticks_ms()
        while not done(v) and time.ticks_diff(time.ticks_ms(), t0) < limit_ms:
            await asyncio.sleep_ms(50)
        v.stopped = True

    asyncio.create_task(watch())
    await v.run()


def test_every_board_runs_the_application_sells_and_uploads():
    import asyncio
    import json

    from http_socket import SocketTransport

    ctl = Control()
    base = "http://127.0.0.1:%d" % ctl.call("collector_port")

    async def state():
        st, body = await SocketTransport().request("POST", base + "/_test/state?device=1", b"{}")
        return json.loads(body)

    for name, (modules, reader_kind) in BOARDS.items():
        asyncio.run(SocketTransport().request("POST", base + "/_test/reset", b"{}"))
        v, parts = _app(name, modules[0], base)
        v.uplink.linger_ms = 100
        ctl.call("bench_place", reader=reader_kind)
        asyncio.run(_run_until(v, _sold_and_uploaded))
        asyncio.new_event_loop()
        mptest.eq(v.taps, 1)
        card = ctl.call("bench_card", reader=reader_kind)
        mptest.eq(len(card["debits"]), 1, "%s sold one ride" % name)
        st = asyncio.run(state())
        mptest.eq(st["seqs"], list(range(1, v.journal.last_seq + 1)), "%s uploaded" % name)
        mptest.eq(v.status()["journal"]["backlog"], 0)
        mptest.true(esp32_machine.wdt_state()[1] > 0, "the application fed the watchdog")
        asyncio.run(parts.transport.close())
        v.journal.close()
        mptest.log(
            "%s on %s: boot, 1 sale, %d records uploaded" % (name, modules[0], len(st["seqs"]))
        )


def test_a_hung_tap_loop_resets_the_board_and_the_application_comes_back():
    import asyncio

    ctl = Control()
    base = "http://127.0.0.1:%d" % ctl.call("collector_port")
    v, parts = _app("esp32_pn532_i2c", "wroom32", base)
    # A short watchdog for the test (a later WDT() changes the running one's timeout).
    esp32_machine.WDT(timeout=600)
    parts.wdt_grace_ms = 300
    line = esp32_machine.Pin(34, esp32_machine.Pin.IN)

    def hang():
        while True:  # a wedged driver spinning on a bus line
            line.value()

    parts.reader.poll = hang
    e = None
    try:
        asyncio.run(_run_until(v, lambda v: False, 20000))
    except esp32_machine.BoardReset as reset:
        e = reset
    asyncio.new_event_loop()
    mptest.true(isinstance(e, esp32_machine.WatchdogReset), "the watchdog reset the board")
    v.journal.close()
    # The board comes back: the application starts again, told why, with the RTC running on.
    esp32_machine.restart(e.cause)
    board = esp32_rig.load_board("esp32_pn532_i2c")
    parts = board.make_parts({"modem": "sim7600", "apn": "cmnet"})
    mptest.eq(parts.reset_cause, "watchdog")
    mptest.true(parts.rtc_seconds() > 849000000, "the RTC kept the time through the reset")
    asyncio.run(parts.transport.close())
