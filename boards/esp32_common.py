# Parts of an ESP32 validator built from a board's pin dicts (boards/<name>/board.py), with the
# machine module. The unix simulation board builds the same parts from simulators instead.
import machine

CONFIG_PATH = "/config.json"
ROOT = "/data"
WDT_MS = 8000

# ---- the pin map every ESP32 (WROOM-32 or WROVER) validator board shares ---------------------
# Valid on both modules: GPIO6-11 carry the flash, 16/17 the WROVER's PSRAM, 34-39 are inputs only,
# UART0 is the REPL's. Strapping pins are used only where the level at reset is the one the chip
# wants; each board lists them in STRAPPING (tests/mpy/test_esp32_boards.py checks the list).
# PSAM slot (ISO 7816): I/O on a UART joined TX/RX through a resistor, so TX is echoed on RX; RX
# may be an input-only pin. 4 MHz: the LEDC divides 80 MHz exactly with a 50 % duty (3.5712 MHz
# comes out 3,575,419 Hz).
PSAM = {
    "uart_id": 2,
    "tx": 32,
    "rx": 35,
    "clk": 4,
    "clk_hz": 4000000,
    "reset": 14,
    "echo": True,
    # No "max_baud": PPS goes to the fastest rate the PSAM offers that UART 2 generates within
    # ISO 7816-3's tolerance (drivers/psam_link.py; at 4 MHz every TA1 rate is within 0.02 %).
}
# Cellular modem (SIM7600 / EC2x / EC200) on its own UART, with the power key and status pins.
# txbuf: the driver's TX ring (IDF heap, not the Python heap); the modem driver writes in chunks
# that fit it, so an upload never blocks the loop (docs/modem.md, "Writes").
MODEM = {
    "uart_id": 1,
    "tx": 25,
    "rx": 26,
    "baudrate": 115200,
    "txbuf": 2048,
    "pwrkey": 13,
    "status": 39,
}
# Passenger feedback and the SSD1306 128x64 display on I2C0. The green LED sits on GPIO2 (a
# strapping pin that must be low or floating at reset: an LED to ground keeps it low).
FEEDBACK = {"led_green": 2, "led_red": 33, "buzzer": 27}
DISPLAY = {"i2c_id": 0, "sda": 21, "scl": 22, "addr": 0x3C, "width": 128, "height": 64}
# The battery-backed RTC chip on the display's I2C bus (docs/time.md): "ds3231" (0x68) or
# "pcf8563" (0x51). A board without one says RTC = None; the clock then starts on the last known
# time, untrusted, after every power cut.
RTC = {"chip": "ds3231"}
# Strapping pins every ESP32 board uses, and why their level at reset is right.
STRAPPING = {2: "green LED to ground: low at reset, as the download mode needs"}
# Safe mode (firmware/bootmode.py): this input held low at power-up starts the REPL without the
# application. GPIO36 is input only and no strapping pin (GPIO0 would enter the ROM's download
# mode); it has no internal pull-up, so the board carries a 10k pull-up and a jumper to GND.
SAFE_PIN = {"gpio": 36, "pull": None}

# ---- the ESP32-S3 boards (ESP32-S3-WROOM-1, any flash/PSRAM variant) ---------------------------
# The validator's S3 firmware keeps the REPL on the native USB (GPIO19/20), so all three UARTs are
# free: reader (HSU), PSAM and modem. Avoided: 19/20 (USB), 26-37 (flash and octal PSRAM),
# 0/3/45/46 (strapping), 43/44 (the ROM's console), 47/48 (absent on some variants).
PSAM_S3 = dict(PSAM, tx=4, rx=5, clk=6, reset=7)
MODEM_S3 = dict(MODEM, uart_id=0, tx=15, rx=16, pwrkey=21, status=38)
FEEDBACK_S3 = {"led_green": 39, "led_red": 40, "buzzer": 41}
DISPLAY_S3 = dict(DISPLAY, sda=8, scl=9)
SAFE_PIN_S3 = {"gpio": 14, "pull": "up"}  # free on every S3 pin set, internal pull-up


class Parts:
    reader = None
    psam_link = None
    transport = None
    display = None
    feedback = None
    wdt = None
    wdt_grace_ms = WDT_MS
    root = ROOT
    emit = None
    journal_config = None
    txlog_dev = None  # the raw "txlog" partition (firmware/txlog.py)
    param_slots = None
    reset_cause = "power-on"
    reset_code = None  # bootmode.CAUSE_*, for the BOOT record
    extra_task = None
    failed = None  # {name: (retry, error, attr)}: parts that failed to start (firmware/faults.py)
    wdt_timeout = None  # fn(ms): a new timeout for the running watchdog (maintenance)
    rtc_chip = None  # the RTC chip's driver (drivers/ds3231.py, pcf8563.py), None when down
    set_rtc = None  # fn(secs): machine.RTC() set to validator time
    rtc_mem = None  # fn(data=None): RTC memory after bootmode's marker


def _start(p, name, attr, make):
    """Build one part; a failure is kept for the application to retry with back-off (the
    board must still come up: the tap loop needs no modem, the fault screen needs no reader)."""
    try:
        obj = make()
    except Exception as e:  # noqa: BLE001 - every driver's start-up error, ValueError included
        print("%s failed to start: %s" % (name, e))
        p.failed[name] = (make, e, attr)
        obj = None
    setattr(p, attr, obj)
    if p.wdt is not None:
        p.wdt.feed()
    return obj


def start():
    import os

    try:
        os.mkdir(ROOT)
    except OSError:
        pass  # exists: littlefs was mounted at / by _boot.py


def _pin(n, mode=machine.Pin.OUT, value=None):
    if value is None:
        return machine.Pin(n, mode)
    return machine.Pin(n, mode, value=value)


def make_reader(r):
    irq = _pin(r["irq"], machine.Pin.IN) if "irq" in r else None
    # Type A only unless the board (or a depot's board file) turns type B on: T-Union cards are
    # type A, and each type B round costs the poll time.
    kinds = "AB" if r.get("type_b") else "A"
    if "reset" in r:
        _pin(r["reset"], value=1)  # out of power-down
    if r["chip"] == "rc522":
        from rc522 import RC522

        spi = machine.SPI(
            r["spi_id"],
            baudrate=r["baudrate"],
            sck=machine.Pin(r["sck"]),
            mosi=machine.Pin(r["mosi"]),
            miso=machine.Pin(r["miso"]),
        )
        return RC522(spi, _pin(r["cs"], value=1), irq=irq, kinds=kinds)
    import pn532

    if r["bus"] == "i2c":
        from pn532_i2c import PN532I2C

        i2c = machine.I2C(
            r["i2c_id"], sda=machine.Pin(r["sda"]), scl=machine.Pin(r["scl"]), freq=r["freq"]
        )
        transport = PN532I2C(i2c, irq=irq)
    elif r["bus"] == "spi":
        from pn532_spi import PN532SPI

        spi = machine.SPI(
            r["spi_id"],
            baudrate=r["baudrate"],
            firstbit=machine.SPI.LSB,
            sck=machine.Pin(r["sck"]),
            mosi=machine.Pin(r["mosi"]),
            miso=machine.Pin(r["miso"]),
        )
        transport = PN532SPI(spi, _pin(r["cs"], value=1), irq=irq)
    else:
        from pn532_uart import PN532UART

        uart = machine.UART(
            r["uart_id"], baudrate=r["baudrate"], tx=r["tx"], rx=r["rx"], rxbuf=1024, timeout=0
        )
        transport = PN532UART(uart, irq=irq, baudrate=r["baudrate"])
    reader = pn532.PN532(transport, kinds=kinds)
    fast = r.get("fast_baud")
    if not fast:
        reader.init()
        return reader
    # HSU starts at 115 200; 921 600 cuts the bytes' line time of a tap from ~34 ms to ~4. A soft
    # or watchdog reset of the ESP32 leaves the PN532 at the fast rate: try that one second.
    from linkerr import LinkError

    try:
        reader.init()
    except LinkError:
        transport.set_baudrate(fast)
        reader.init()
        return reader
    # If the chip does not follow, the reader stays at the old speed (logged).
    reader.set_serial_baudrate(fast)
    return reader


def make_transport(m, cfg):
    kind = cfg.get("modem", "sim7600")
    if kind == "socket":
        from http_socket import SocketTransport

        return SocketTransport()
    from modem import ModemTransport

    txbuf = m.get("txbuf", 256)
    if kind == "quectel":
        from modem_quectel import QuectelDialect

        dialect = QuectelDialect()
    else:
        from modem_simcom import SimcomDialect

        dialect = SimcomDialect()
    uart = machine.UART(
        m["uart_id"],
        baudrate=m["baudrate"],
        tx=m["tx"],
        rx=m["rx"],
        rxbuf=8192,
        txbuf=txbuf,
        timeout=0,
    )
    return ModemTransport(
        uart,
        _pin(m["pwrkey"], value=0),
        dialect,
        apn=cfg["apn"],
        baudrate=m["baudrate"],
        txbuf=txbuf,
    )


def _display_i2c(d):
    return machine.I2C(d["i2c_id"], sda=machine.Pin(d["sda"]), scl=machine.Pin(d["scl"]))


def make_rtc(r, d):
    """The RTC chip of the board's RTC entry on the display's bus; OSError when it does not
    answer (no chip, a broken bus): the application retries it (firmware/faults.py)."""
    import rtcchip

    chip = rtcchip.make(_display_i2c(d), r["chip"])
    chip.lost_power()  # one read: a missing chip is a start-up failure, not a silent one
    return chip


def _set_rtc(secs):
    """Validator time (seconds since 2000 UTC) into machine.RTC(): time.time() follows, and it
    survives soft and watchdog resets (a power cut takes it back to 2000-01-01)."""
    import timeutil

    y, mo, d, hh, mi, ss = timeutil.from_seconds(secs)
    machine.RTC().datetime((y, mo, d, (secs // 86400 + 5) % 7, hh, mi, ss, 0))


def _rtc_mem(data=None):
    import bootmode

    return bootmode.rtc_memory(machine.RTC(), data)


def make_display(d):
    try:
        import ssd1306
        from display import Display

        i2c = _display_i2c(d)
        return Display(ssd1306.SSD1306_I2C(d["width"], d["height"], i2c, d["addr"]))
    except (OSError, ImportError) as e:
        # A broken display must not stop fare collection: LEDs and buzzer still work.
        print("display unavailable:", e)
        return None


def make_feedback(f):
    from feedback import Feedback

    buzzer = machine.PWM(machine.Pin(f["buzzer"]), freq=2700, duty_u16=0)
    return Feedback(_pin(f["led_green"], value=0), _pin(f["led_red"], value=0), buzzer)


def make_parts(board, cfg):
    import bootmode
    from psam_link import from_board

    p = Parts()
    p.failed = {}
    # The watchdog first: every step below is bounded and followed by a feed, so a start-up
    # that hangs resets the board instead of leaving it dark (docs/boot.md).
    p.wdt = machine.WDT(timeout=WDT_MS)
    p.wdt_timeout = _wdt_timeout
    p.reset_code = bootmode.reset_cause(machine)
    p.reset_cause = bootmode.cause_name(p.reset_code)
    p.rtc_seconds = _rtc_seconds
    p.set_rtc = _set_rtc
    p.rtc_mem = _rtc_mem
    p.display = make_display(board.DISPLAY)
    p.feedback = make_feedback(board.FEEDBACK)
    p.wdt.feed()
    _start(p, "reader", "reader", lambda: make_reader(board.READER))
    _start(
        p,
        "psam",
        "psam_link",
        lambda: from_board(board.PSAM, machine.UART, machine.Pin, machine.PWM),
    )
    _start(p, "modem", "transport", lambda: make_transport(board.MODEM, cfg))
    rtc = getattr(board, "RTC", None)
    if rtc:
        _start(p, "rtc", "rtc_chip", lambda: make_rtc(rtc, board.DISPLAY))
    p.param_slots = blacklist_slots()
    p.txlog_dev = txlog_partition()
    p.wdt.feed()
    return p


def _wdt_timeout(ms):
    # The port reconfigures the running task watchdog (it cannot be stopped once started).
    return machine.WDT(timeout=ms)


def blacklist_slots():
    """The two raw blacklist partitions of boards/partitions-16MiB-validator.csv, or None: then
    the list stays inside the bundle file on littlefs (smaller lists, or a stock firmware)."""
    try:
        import esp32

        found = [
            esp32.Partition.find(esp32.Partition.TYPE_DATA, label=n)
            for n in ("blist_a", "blist_b")
        ]
    except (ImportError, AttributeError, OSError):
        return None
    if not all(found):
        return None
    return [f[0] for f in found]


def txlog_partition():
    """The raw data partition "txlog" of the boards' partition tables, or None (a table
    without it: the app then says so)."""
    try:
        import esp32

        found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="txlog")
    except (ImportError, AttributeError, OSError):
        return None
    return found[0] if found else None


def _rtc_seconds():
    import time

    return int(time.time())  # the ESP32 port counts from 2000-01-01, as validator time does


def board_parts(cfg):
    """make_parts for the running board (the `board` module on the device)."""
    return make_parts(__import__("board"), cfg)


def show_fatal(text):
    d = make_display(__import__("board").DISPLAY)
    if d is not None:
        d.notice("设备故障", text[:16])
    print("FATAL:", text)
