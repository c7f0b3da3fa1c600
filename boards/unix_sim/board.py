# The unix-port simulation board: the same parts as an ESP32 validator, each backed by a CPython
# simulator through the hub (tools/sim/hub.py, SIM_PORT). Which reader and modem it carries, and
# where its flash image and configuration live, come from the environment the bench sets:
#   VALIDATOR_READER  pn532_i2c (default) | pn532_spi | pn532_hsu | rc522_spi
#   VALIDATOR_FLASH   host file holding the littlefs flash image (default /tmp/validator.img)
#   VALIDATOR_TXLOG   host file holding the raw txlog partition (default: the flash image's path
#                     + ".txlog"), 256 KiB as on a 4 MB ESP32
#   VALIDATOR_CONFIG  host path of config.json (default /flash/config.json inside the image)
#   VALIDATOR_EVENTS  1: print '@@EV {json}' lines for each tap/boot/record (the bench reads them)
#   VALIDATOR_WDT_MS  watchdog timeout in ms (default 8000, as on the ESP32 boards)
#   VALIDATOR_RESET_CAUSE  what the bench says woke the board (power-on, watchdog, ...)
#   VALIDATOR_TXLOG_BLOCKS  sectors of the txlog partition (default 64; the bench uses fewer to
#                     reach the reuse of acknowledged sectors in a short scenario)
#   VALIDATOR_VIRTUAL_WAIT  1: the uplink back-off waits on the hub virtual clock ("world_time")
#   VALIDATOR_RTC     the RTC chip on i2c0: ds3231 (default) | pcf8563 | none (docs/time.md)
#   VALIDATOR_TEST_HOOKS  1: the reader hangs (spins) while the hub's pin "test_hang" is high,
#                     so tests can prove the watchdog resets a hung tap loop
import json
import os

NAME = "unix_sim"

READER = {"chip": "pn532", "bus": "i2c", "type_b": False}  # type_b: poll type B cards too
# margin_ms: the simulated line crosses a socket and a hub thread on a shared host, not a wire:
# deadlines get a second of slack where a board has 50 ms (a loaded CI machine missed 50 ms).
PSAM = {
    "uart_id": "psam",
    "reset": "psam_rst",
    "clk": "psam_clk",
    "clk_hz": 3571200,
    "margin_ms": 1000,
}
MODEM = {"uart_id": "modem", "pwrkey": "modem_pwrkey", "baudrate": 115200}
FEEDBACK = {"led_green": "led_green", "led_red": "led_red", "buzzer": "buzzer"}
DISPLAY = {"bus": "i2c0", "addr": 0x3C, "width": 128, "height": 64}
_rtc_chip = os.getenv("VALIDATOR_RTC") or "ds3231"
RTC = None if _rtc_chip == "none" else {"chip": _rtc_chip, "bus": "i2c0"}  # the display's bus

CONFIG_PATH = os.getenv("VALIDATOR_CONFIG") or "/flash/config.json"
FLASH_PATH = os.getenv("VALIDATOR_FLASH") or "/tmp/validator.img"
FLASH_BLOCKS = 512  # 2 MB of 4 KB blocks, like the vfs partition of a 4 MB ESP32
TXLOG_PATH = os.getenv("VALIDATOR_TXLOG") or FLASH_PATH + ".txlog"
TXLOG_BLOCKS = int(os.getenv("VALIDATOR_TXLOG_BLOCKS") or "64")  # 256 KiB as on a 4 MB ESP32


class Parts:
    """What the application needs from a board (see firmware/app.py)."""

    reader = None
    psam_link = None
    transport = None
    display = None
    feedback = None
    wdt = None
    wdt_grace_ms = 8000
    root = "/flash"
    emit = None
    sleep_ms = None  # the uplink's back-off wait (None: asyncio.sleep_ms)
    journal_config = None
    txlog_dev = None  # the raw transaction-log partition (boards/unix_sim/rawflash.py)
    param_slots = None
    reset_cause = "power-on"
    reset_code = None  # from reset_cause's name (firmware/bootmode.py)
    extra_task = None
    failed = None  # {name: (retry, error, attr)}: parts that failed to start
    wdt_timeout = None
    rtc_chip = None
    set_rtc = None
    rtc_mem = None


class SimWDT:
    """The watchdog as a line the hub watches (pin "wdt"): each feed toggles it; the bench
    resets (kills and restarts) the firmware when it stops toggling for `timeout` ms."""

    def __init__(self, timeout=8000):
        from sim_pin import Pin

        self.timeout = timeout
        self.pin = Pin("wdt", Pin.OUT, value=0)
        self.level = 0

    def feed(self):
        self.level ^= 1
        self.pin.value(self.level)

    def set_timeout(self, ms):
        self.timeout = ms  # the bench's watchdog keeps its own; recorded for the status view


def _emit(kind, data):
    out = dict(data)
    out["ev"] = kind
    print("@@EV " + json.dumps(out))


def _port_seconds():
    import time

    import timeutil

    return int(time.time()) - timeutil.EPOCH_OFFSET_UNIX


def _make_rtc(p):
    """The ESP32's own RTC: the bench's model of it when the hub has one ("esp_rtc": restarts at
    2000-01-01 after a power cut, counts the scenario's time, keeps RTC memory across other
    resets); else the hub's virtual clock, or the host clock, read-only."""
    from simlink import Control, SimLinkError

    ctl = Control()
    try:
        ctl.call("esp_rtc")
    except SimLinkError:
        try:
            ctl.call("now")
        except SimLinkError:
            p.rtc_seconds = _port_seconds
            return
        p.rtc_seconds = lambda: int(ctl.call("now"))
        return
    last = [0]

    def rtc_seconds():
        last[0] = int(ctl.call("esp_rtc"))
        return last[0]

    def set_rtc(t):
        # As a shift from the reading the clock took just before (firmware/clock.py _apply):
        # the bench's virtual time may jump between the two calls, a board's RTC never does.
        ctl.call("esp_rtc", shift=int(t) - last[0])

    p.rtc_seconds = rtc_seconds
    p.set_rtc = set_rtc

    def mem(data=None):
        if data is None:
            return bytes.fromhex(ctl.call("esp_rtc_mem"))
        ctl.call("esp_rtc_mem", data=bytes(data).hex())
        return None

    p.rtc_mem = mem


def make_rtc_chip():
    """The RTC chip on the display's bus; OSError when it does not answer (then retried)."""
    import rtcchip
    from sim_i2c import SimI2C

    chip = rtcchip.make(SimI2C(RTC["bus"]), RTC["chip"])
    chip.lost_power()
    return chip


def _make_virtual_sleep():
    """A sleep_ms that waits until the hub's virtual clock ("world_time", seconds) has moved on
    by ms. It tells the hub when it wants to wake ("sleep_until"): the bench moves its time there
    when nothing else is going on, so a 10-minute back-off takes no 10 real minutes."""
    import asyncio

    from simlink import Control, SimLinkError

    ctl = Control()

    async def sleep_ms(ms):
        try:
            end = ctl.call("world_time") + (ms + 999) // 1000
            ctl.call("sleep_until", t=end)
        except SimLinkError:  # a hub without the bench's clock: wait in real time
            await asyncio.sleep_ms(ms)
            return
        try:
            while ctl.call("world_time") < end:
                await asyncio.sleep_ms(50)
        finally:  # run out or cancelled (a kick ends the uplink's interval): not waiting now
            ctl.call("sleep_until", t=end, done=True)

    return sleep_ms


def make_reader(kind=None, type_b=None):
    kind = kind or os.getenv("VALIDATOR_READER") or "pn532_i2c"
    if type_b is None:
        type_b = READER["type_b"] or os.getenv("VALIDATOR_TYPE_B") == "1"
    kinds = "AB" if type_b else "A"
    from sim_pin import Pin

    if kind == "rc522_spi":
        from rc522 import RC522
        from sim_spi import SimSPI

        return RC522(SimSPI("rc522"), Pin("rc522_cs", Pin.OUT, value=1), kinds=kinds)
    import pn532

    if kind == "pn532_spi":
        from pn532_spi import PN532SPI
        from sim_spi import SimSPI

        transport = PN532SPI(
            SimSPI("nfc_spi", firstbit=SimSPI.LSB), Pin("nfc_cs", Pin.OUT, value=1)
        )
    elif kind == "pn532_hsu":
        from pn532_uart import PN532UART
        from sim_uart import SimUART

        transport = PN532UART(SimUART("nfc_hsu", baudrate=115200, timeout=0, rxbuf=1024))
    else:
        from pn532_i2c import PN532I2C
        from sim_i2c import SimI2C

        transport = PN532I2C(SimI2C("nfc_i2c"))
    reader = pn532.PN532(transport, kinds=kinds)
    reader.init()
    return reader


def make_transport(cfg):
    kind = cfg.get("modem", "sim7600")
    if kind == "socket":
        from http_socket import SocketTransport

        return SocketTransport()
    from modem import ModemTransport
    from sim_pin import Pin
    from sim_uart import SimUART

    if kind == "quectel":
        from modem_quectel import QuectelDialect

        dialect = QuectelDialect()
    else:
        from modem_simcom import SimcomDialect

        dialect = SimcomDialect()
    uart = SimUART("modem", baudrate=MODEM["baudrate"], timeout=0, rxbuf=12288)
    return ModemTransport(uart, Pin("modem_pwrkey", Pin.OUT, value=0), dialect, apn=cfg["apn"])


def make_display():
    import ssd1306
    from display import Display
    from sim_i2c import SimI2C

    oled = ssd1306.SSD1306_I2C(DISPLAY["width"], DISPLAY["height"], SimI2C("i2c0"), 0x3C)
    return Display(oled)


def make_feedback():
    from feedback import Feedback
    from sim_pin import PWM, Pin

    return Feedback(
        Pin("led_green", Pin.OUT), Pin("led_red", Pin.OUT), PWM(Pin("buzzer", Pin.OUT))
    )


def make_psam_link():
    from psam_link import from_board
    from sim_pin import PWM, Pin
    from sim_uart import SimUART

    def uart(name, **kw):
        return SimUART(name, **kw)

    return from_board(PSAM, uart, Pin, PWM)


def mount_flash():
    import flashdev

    return flashdev.mount(FLASH_PATH, "/flash", num_blocks=FLASH_BLOCKS)


def start():
    """Before the configuration is read: the flash holds it."""
    return mount_flash()


class _HangingReader:
    """Test hook: delegates to the real reader, but spins forever in poll() while the hub holds
    pin "test_hang" high, as a driver bug or a wedged bus would."""

    def __init__(self, reader):
        from sim_pin import Pin

        self._r = reader
        self._hang = Pin("test_hang", Pin.IN)

    def poll(self):
        if self._hang.value():
            while True:
                pass
        return self._r.poll()

    def __getattr__(self, name):
        return getattr(self._r, name)


def _start(p, name, attr, make):
    """As boards/esp32_common.py: a part that fails to start is retried by the application."""
    try:
        obj = make()
    except Exception as e:  # noqa: BLE001
        print("%s failed to start: %s" % (name, e))
        p.failed[name] = (make, e, attr)
        obj = None
    setattr(p, attr, obj)
    p.wdt.feed()
    return obj


def _reader():
    r = make_reader()
    if os.getenv("VALIDATOR_TEST_HOOKS"):
        r = _HangingReader(r)
    return r


def make_parts(cfg):
    p = Parts()
    p.failed = {}
    p.reset_cause = os.getenv("VALIDATOR_RESET_CAUSE") or "power-on"
    p.wdt_grace_ms = int(os.getenv("VALIDATOR_WDT_MS") or "8000")
    p.wdt = SimWDT(p.wdt_grace_ms)  # first, as on a board: fed after every part
    p.wdt_timeout = p.wdt.set_timeout
    p.emit = _emit if os.getenv("VALIDATOR_EVENTS") else None
    _make_rtc(p)
    if os.getenv("VALIDATOR_VIRTUAL_WAIT"):
        p.sleep_ms = _make_virtual_sleep()
    p.display = make_display()
    p.feedback = make_feedback()
    _start(p, "reader", "reader", _reader)
    _start(p, "psam", "psam_link", make_psam_link)
    _start(p, "modem", "transport", lambda: make_transport(cfg))
    if RTC:
        _start(p, "rtc", "rtc_chip", make_rtc_chip)
    from rawflash import FileFlash

    p.txlog_dev = FileFlash(TXLOG_PATH, TXLOG_BLOCKS)
    return p


def show_fatal(text):
    print("FATAL: " + text)
