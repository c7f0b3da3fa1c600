# A strict stand-in for the ESP32 port's `machine` module (MicroPython v1.27) on the unix port, so
# the ESP32 boards' own code (boards/esp32_common.py and each board.py) runs in tests against the
# simulators, and fails where a board would. Bus ids and GPIO numbers map to the hub's device and
# pin names through WIRING; the rules come from the port (ports/esp32/machine_uart.c,
# machine_pin.c/.h, machine_i2c.c, machine_wdt.c, machine_rtc.c, modmachine.c) and from the
# modules' data sheets where the port accepts something the module cannot do (flash pins).
#
# What it enforces, per module (use("wroom32" | "wrover" | "s3" | "s3_stock")):
# - GPIOs that exist on the chip and module ("invalid pin"), flash pins 6-11 on an ESP32, 34-39
#   input only, 16/17 gone on WROVER (PSRAM), S3 19/20 (USB), 26-32 (flash/PSRAM), 33-37 (octal
#   PSRAM); strapping pins: a use that pulls one to the wrong level at reset is refused, every
#   other use is noted in `strapping_used` for the board test to check against the board's list;
# - UART ids, the REPL on UART0 (fixed buffers, no IRQ, its input goes to the REPL: 0x03 is a
#   KeyboardInterrupt), rxbuf > 128, txbuf 0 or > 128, v1.27 read/readinto/readline timeouts,
#   input discarded by init(), write() blocking at the line rate until all but txbuf bytes (the
#   128-byte FIFO when txbuf=0) are sent, in real time, which is the simulation's time here;
# - I2C ids and the hardware timeout cap (clock stretching past it is ETIMEDOUT), SPI ids;
# - a WDT that resets the board when not fed (WatchdogReset, seen by the harness), the RTC at
#   2000-01-01 after a power cut but kept across soft and watchdog resets, reset_cause(), freq();
# - `time` as the port has it (TIME, for sys.modules["time"]): time(), gmtime(), localtime() and
#   mktime() count from 2000-01-01 on that RTC; the rest is the unix port's own.
import errno
import select
import time

import sim_pin
from ringbuf import RingBuffer
from sim_i2c import SimI2C
from sim_spi import SimSPI
from sim_uart import SimUART
from simlink import SimLink

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_FIFO = 128  # SOC_UART_FIFO_LEN: the hardware FIFO, and the IDF's floor for rxbuf and txbuf


class BoardReset(BaseException):
    """The board restarted (machine.reset(), deepsleep, watchdog). Not an Exception, so the
    firmware's own `except Exception` cannot swallow it, as no code survives a real reset."""

    cause = HARD_RESET


class WatchdogReset(BoardReset):
    cause = WDT_RESET


class Module:
    def __init__(self, name, chip, gpios, **kw):
        self.name = name
        self.chip = chip
        self.gpios = gpios
        self.input_only = kw.get("input_only", ())
        self.flash = kw.get("flash", ())  # in the port's table, but the module's flash bus
        # pin -> (why, level it must have at reset: 0 = must not be pulled up, 1 = not down)
        self.strapping = kw.get("strapping", {})
        self.uarts = kw.get("uarts", 3)
        self.uart_repl = kw.get("uart_repl", 0)  # the UART the REPL owns, or None
        self.i2c_max_timeout_us = kw.get("i2c_max_timeout_us", 0)  # 0: no hardware cap known
        self.mhz = kw.get("mhz", 160)


def _r(a, b):
    return set(range(a, b + 1))


_ESP32_GPIOS = _r(0, 19) | _r(21, 23) | _r(25, 27) | _r(32, 39)
_ESP32_STRAP = {
    0: ("boot mode: low at reset enters the ROM download mode", 1),
    2: ("boot mode: must be low or floating for the download mode", 0),
    5: ("SDIO timing (pulled up inside)", 1),
    12: ("MTDI selects the flash voltage: high at reset means 1.8 V and no boot", 0),
    15: ("MTDO: boot log on UART0 when high", 1),
}
_S3_GPIOS = _r(0, 18) | {21} | _r(38, 46)  # + 19/20 (USB) and 26, 33-37 per flavour below
_S3_STRAP = {
    0: ("boot mode: low at reset enters the ROM download mode", 1),
    3: ("JTAG signal source", 1),
    45: ("VDD_SPI voltage: high at reset means 1.8 V flash", 0),
    46: ("boot mode / ROM messages: must be low for the download mode", 0),
}
MODULES = {
    # ESP32-WROOM-32 (ESP32_GENERIC): 4 MB flash on GPIO6-11, no PSRAM.
    "wroom32": Module(
        "ESP32-WROOM-32",
        "esp32",
        _ESP32_GPIOS,
        input_only=_r(34, 39),
        flash=_r(6, 11),
        strapping=_ESP32_STRAP,
        i2c_max_timeout_us=13107,  # 20-bit APB-cycle counter at 80 MHz
    ),
    # ESP32-WROVER (ESP32_GENERIC-SPIRAM): the PSRAM takes GPIO16/17, which the port then omits.
    "wrover": Module(
        "ESP32-WROVER",
        "esp32",
        _ESP32_GPIOS - {16, 17},
        input_only=_r(34, 39),
        flash=_r(6, 11),
        strapping=_ESP32_STRAP,
        i2c_max_timeout_us=13107,
    ),
    # ESP32-S3-WROOM-1 (any variant: octal PSRAM takes 33-37) with the validator's S3 build
    # (boards/micropython/VALIDATOR_ESP32_S3): REPL on the native USB (GPIO19/20), so all three
    # UARTs are free; 240 MHz.
    "s3": Module(
        "ESP32-S3-WROOM-1",
        "esp32s3",
        _S3_GPIOS,
        strapping=_S3_STRAP,
        uart_repl=None,
        mhz=240,
    ),
    # The same module with stock ESP32_GENERIC_S3, which keeps a REPL on UART0 as well.
    "s3_stock": Module(
        "ESP32-S3-WROOM-1 (stock firmware)",
        "esp32s3",
        _S3_GPIOS,
        strapping=_S3_STRAP,
        uart_repl=0,
    ),
}

# ---- the state a board keeps, and what survives which reset ----
module = MODULES["wroom32"]
WIRING = {}  # set by the test: ("i2c", 1) -> "nfc_i2c", ("pin", 14) -> "psam_rst"...
made = []  # (kind, id, kwargs) for every bus object the board built
strapping_used = []  # (gpio, use) for every strapping pin the board touched
_cause = PWRON_RESET
_mhz = 160
_rtc = [0, 0]  # seconds since 2000 at ticks_ms _rtc[1]
_rtc_mem = [b""]
_wdt = []  # [timeout ms, last feed ticks_ms, feeds] once started: it cannot be stopped
_uarts = {}


def use(name):
    """Select the module the next board runs on; a power-on reset of it."""
    global module
    module = MODULES[name]
    power_cut()


def _forget_peripherals():
    for u in list(_uarts.values()):
        try:
            u.deinit()
        except OSError:
            pass
    _uarts.clear()
    del _wdt[:]
    del made[:]
    del strapping_used[:]


def power_cut():
    """Power off and on: the RTC restarts at 2000-01-01 00:00:00, RTC memory is lost."""
    global _cause, _mhz
    _forget_peripherals()
    _cause = PWRON_RESET
    _mhz = module.mhz
    _rtc[0] = 0
    _rtc[1] = time.ticks_ms()
    _rtc_mem[0] = b""


def restart(cause):
    """The board comes back after a reset that keeps power (SOFT_RESET, WDT_RESET, HARD_RESET,
    DEEPSLEEP_RESET): the RTC and its memory run on. A soft reset (Ctrl-D, machine.soft_reset())
    restarts only the interpreter: the port's task watchdog, once started, keeps running with
    its timeout (ports/esp32/machine_wdt.c keeps its user handle), so it is not forgotten."""
    global _cause, _mhz
    wdt = list(_wdt)
    _forget_peripherals()
    if cause == SOFT_RESET and wdt:
        _wdt.extend((wdt[0], time.ticks_ms(), wdt[2]))
    _cause = cause
    _mhz = module.mhz


def brownout():
    """The supply sagged below the brown-out threshold (a modem's current burst) and the chip
    reset itself: ESP-IDF says ESP_RST_BROWNOUT, which MicroPython v1.27 reports as PWRON_RESET
    (ports/esp32/modmachine.c, mp_machine_reset_cause); the ESP32 counts it a system reset, so
    RTC slow memory (RTC.memory(), RTC_NOINIT) keeps its bytes while the chip stayed powered,
    and the RTC's time base is lost as on a power-up (the conservative reading)."""
    global _cause, _mhz
    _forget_peripherals()
    _cause = PWRON_RESET
    _mhz = module.mhz
    _rtc[0] = 0
    _rtc[1] = time.ticks_ms()


def check():
    """Raise WatchdogReset if the watchdog ran out; every stand-in operation calls it."""
    if _wdt and time.ticks_diff(time.ticks_ms(), _wdt[1]) > _wdt[0]:
        raise WatchdogReset("watchdog not fed for %d ms" % _wdt[0])


# ---- pins ----
def _gpio(p):
    return p.gpio if isinstance(p, Pin) else p


def _check_gpio(n, use, output=False, pulled_up=False):
    if not isinstance(n, int) or n not in module.gpios:
        raise ValueError("invalid pin")
    if n in module.flash:
        raise ValueError("GPIO%d is wired to the flash of the %s" % (n, module.name))
    if output and n in module.input_only:
        raise ValueError("pin can only be input")
    strap = module.strapping.get(n)
    if strap is not None:
        why, level = strap
        if pulled_up and level == 0:
            raise ValueError("GPIO%d is a strapping pin (%s): %s pulls it up" % (n, why, use))
        strapping_used.append((n, use))
    return n


def _name(kind, n):
    try:
        return WIRING[(kind, n)]
    except KeyError:
        if kind == "pin":
            # Bus pins (SDA, SCK, TX...) only route a peripheral; a device line the simulators
            # watch (chip select, reset) left unmapped shows up as a device that never answers.
            return "gpio%d" % n
        raise ValueError("board used %s %r, which this test board does not wire" % (kind, n))


class Pin(sim_pin.Pin):
    def __init__(self, n, mode=-1, pull=-1, value=None, **kw):
        if isinstance(n, Pin):
            n = n.gpio
        check()
        output = mode in (Pin.OUT, Pin.OPEN_DRAIN)
        _check_gpio(n, "Pin", output, pull == Pin.PULL_UP)
        self.gpio = n
        sim_pin.Pin.__init__(self, _name("pin", n), mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, **kw):
        if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self.gpio in module.input_only:
            raise ValueError("pin can only be input")
        sim_pin.Pin.init(self, mode, pull, value)

    def value(self, level=None):
        check()
        return sim_pin.Pin.value(self, level)


class PWM(sim_pin.PWM):
    def __init__(self, pin, freq=0, duty_u16=0, **kw):
        _check_gpio(_gpio(pin), "PWM", output=True)
        if freq and not 1 <= freq <= 40000000:
            raise ValueError("frequency must be from 1Hz to 40MHz")
        sim_pin.PWM.__init__(self, pin, freq, duty_u16)


# ---- buses ----
class I2C(SimI2C):
    # Clock stretching the simulated devices do, per hub bus name, in µs (tests set it).
    STRETCH_US = {}

    def __init__(self, n=0, scl=None, sda=None, freq=400000, timeout=50000):
        check()
        if not 0 <= n < 2:
            raise ValueError("I2C(%d) doesn't exist" % n)
        if module.chip == "esp32":
            dscl, dsda = (18, 19) if n == 0 else (25, 26)  # the port's default pins
        else:
            dscl, dsda = 9, 8
        scl = dscl if scl is None else scl
        sda = dsda if sda is None else sda
        # I2C lines are open drain with pull-ups: high at reset.
        _check_gpio(_gpio(scl), "I2C SCL", output=True, pulled_up=True)
        _check_gpio(_gpio(sda), "I2C SDA", output=True, pulled_up=True)
        made.append(("i2c", n, {"sda": sda, "scl": scl, "freq": freq, "timeout": timeout}))
        cap = module.i2c_max_timeout_us
        # The port programs min(timeout, the counter's maximum) into the hardware.
        self.timeout_us = min(timeout, cap) if cap else timeout
        self.bus = _name("i2c", n)
        SimI2C.__init__(self, self.bus, freq)

    def _stretch(self):
        check()
        if I2C.STRETCH_US.get(self.bus, 0) > self.timeout_us:
            raise OSError(errno.ETIMEDOUT)

    def _write(self, addr, data):
        self._stretch()
        SimI2C._write(self, addr, data)

    def readfrom(self, addr, nbytes, stop=True):
        self._stretch()
        return SimI2C.readfrom(self, addr, nbytes, stop)


class SPI(SimSPI):
    def __init__(self, n, baudrate=1000000, polarity=0, phase=0, bits=8, firstbit=0, **pins):
        check()
        if n not in (1, 2):
            raise ValueError("SPI(%d) doesn't exist" % n)
        for key in ("sck", "mosi"):
            if key in pins:
                _check_gpio(_gpio(pins[key]), "SPI " + key, output=True)
        if "miso" in pins:
            _check_gpio(_gpio(pins["miso"]), "SPI miso")
        made.append(("spi", n, dict(pins, baudrate=baudrate, firstbit=firstbit)))
        SimSPI.__init__(self, _name("spi", n), baudrate, polarity, phase, bits, firstbit)

    def write(self, buf):
        check()
        SimSPI.write(self, buf)

    def read(self, nbytes, write=0x00):
        check()
        return SimSPI.read(self, nbytes, write)

    def readinto(self, buf, write=0x00):
        check()
        SimSPI.readinto(self, buf, write)

    def write_readinto(self, wbuf, rbuf):
        check()
        SimSPI.write_readinto(self, wbuf, rbuf)


class UART(SimUART):
    INV_TX = 1
    INV_RX = 4
    INV_RTS = 2
    INV_CTS = 8
    RTS = 1
    CTS = 2
    IRQ_RX = 1
    IRQ_BREAK = 4
    IRQ_RXIDLE = 0x1000
    _UNSET = object()

    def __init__(self, n, baudrate=0, bits=0, parity=_UNSET, stop=0, **kw):
        check()
        if not isinstance(n, int) or not 0 <= n < module.uarts:
            raise ValueError("UART(%s) does not exist" % (n,))
        self.id = n
        self.repl = n == module.uart_repl
        old = _uarts.pop(n, None)
        if old is not None:
            old.deinit()  # the port keeps one object per UART: the new one takes it over
        # Fresh initialisation defaults (the port's mp_machine_uart_init_helper).
        self.txbuf = 256
        self.rxbuf = 256
        tx, rx = {0: (1, 3), 1: (10, 9), 2: (17, 16)}[n]
        txbuf = kw.get("txbuf", -1)
        rxbuf = kw.get("rxbuf", -1)
        if (txbuf >= 0 and txbuf != self.txbuf) or (rxbuf >= 0 and rxbuf != self.rxbuf):
            if self.repl:
                raise ValueError("REPL UART buffer size is fixed")
            self.txbuf = txbuf if txbuf >= 0 else self.txbuf
            self.rxbuf = rxbuf if rxbuf >= 0 else self.rxbuf
        # uart_driver_install refuses these with ESP_FAIL
        if self.rxbuf <= _FIFO:
            raise OSError(-1, "ESP_FAIL: rxbuf must be more than %d" % _FIFO)
        if self.txbuf and self.txbuf <= _FIFO:
            raise OSError(-1, "ESP_FAIL: txbuf must be 0 or more than %d" % _FIFO)
        tx = _gpio(kw.get("tx", tx))
        rx = _gpio(kw.get("rx", rx))
        _check_gpio(tx, "UART%d TX" % n, output=True)
        # An idle UART line is high: a device's TX on a pin that must be low at reset
        _check_gpio(rx, "UART%d RX" % n, pulled_up=True)
        self.tx = tx
        self.rx = rx
        made.append(("uart", n, dict(kw, baudrate=baudrate or 115200, parity=parity, stop=stop)))
        self._tx_end = time.ticks_us()  # when the last byte handed over leaves the line
        self.blocked_us = 0  # time write() held the caller
        self.writes_blocked = 0
        self.baudrate = 115200
        self.bits = 8
        self.parity = None
        self.stop = 1
        self.timeout = 0
        self.timeout_char = 0
        opts = {}
        for key in ("timeout", "timeout_char"):
            if key in kw:
                opts[key] = kw[key]
        # SimUART's own constructor, without its init() (ours refuses buffer sizes there)
        self.device = _name("uart", n)
        self.link = SimLink("uart", self.device)
        self._poll = select.poll()
        self._poll.register(self.link.sock, select.POLLIN)
        self._rx = RingBuffer(self.rxbuf)  # the port's rxbuf ring, in full (tests read it)
        self._left = 0
        self._chunk = bytearray(32)
        self.overruns = 0
        self.init(baudrate, bits, parity, stop, **opts)
        _uarts[n] = self

    def init(self, baudrate=0, bits=0, parity=_UNSET, stop=0, **kw):
        check()
        for key in ("tx", "rx", "txbuf", "rxbuf"):
            if key in kw:
                raise ValueError("the stand-in takes %s only at construction" % key)
        self._drain_tx()  # the port waits for the TX to finish before changing settings
        if bits not in (0, 5, 6, 7, 8):
            raise ValueError("invalid data bits")
        if stop not in (0, 1, 2):
            raise ValueError("invalid stop bits")
        if baudrate > 0:
            self.baudrate = baudrate
        if bits:
            self.bits = bits
        if parity is not UART._UNSET:
            self.parity = parity
        if stop:
            self.stop = stop
        if kw.get("timeout", -1) != -1:
            self.timeout = kw["timeout"]
        if kw.get("timeout_char", -1) != -1:
            self.timeout_char = kw["timeout_char"]
        bits_per_char = 1 + self.bits + (0 if self.parity is None else 1) + self.stop
        self.char_us = (bits_per_char * 1000000 + self.baudrate - 1) // self.baudrate
        SimUART.init(self, self.baudrate, self.bits, self.parity, self.stop)
        # ... and discards any input from the previous configuration.
        self._pump(0)
        self._rx.clear()

    def deinit(self):
        if _uarts.get(self.id) is self:
            del _uarts[self.id]
        SimUART.deinit(self)

    def irq(self, handler=None, trigger=0, hard=False):
        if self.repl:
            raise ValueError("REPL UART does not support IRQs")
        if hard:
            raise ValueError("hard IRQ is not supported")
        if trigger & ~(UART.IRQ_RX | UART.IRQ_BREAK | UART.IRQ_RXIDLE):
            raise ValueError("trigger 0x%04x unsupported" % trigger)
        raise NotImplementedError("UART IRQs are not simulated")

    # -- receive: the REPL owns UART0's input --
    def _pump(self, wait_ms):
        got = SimUART._pump(self, wait_ms)
        if self.repl and len(self._rx):
            data = bytearray(len(self._rx))
            self._rx.readinto(data)
            if b"\x03" in data:
                raise KeyboardInterrupt  # Ctrl-C from whatever is wired to the REPL's RX
            return False
        return got

    def any(self):
        check()
        return SimUART.any(self)

    def _wait(self, n, ms):
        """Up to ms for at least n bytes in the ring (less if the ring cannot hold them)."""
        deadline = time.ticks_add(time.ticks_ms(), ms)
        self._pump(0)
        while len(self._rx) < n:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                break
            self._pump(left)

    def _read_once(self, mv):
        """The port's read: the first byte within `timeout`, the rest within `timeout_char`."""
        self._wait(1, self.timeout)
        if not len(self._rx):
            return 0  # EAGAIN
        if len(mv) > 1:
            self._wait(len(mv), self.timeout_char)
        return self._rx.readinto(mv, len(mv))

    def _read_all(self, mv):
        # The stream layer repeats the read until the buffer is full or a read finds nothing.
        check()
        got = 0
        while got < len(mv):
            k = self._read_once(mv[got:])
            if not k:
                break
            got += k
        return got

    def read(self, n=-1):
        if n is None or n < 0:
            out = bytearray()
            chunk = bytearray(256)
            while True:
                k = self._read_all(memoryview(chunk))
                out += chunk[:k]
                if k < len(chunk):
                    break
            return bytes(out) if out else None
        if n == 0:
            return b""
        buf = bytearray(n)
        k = self._read_all(memoryview(buf))
        return bytes(buf[:k]) if k else None

    def readinto(self, buf, n=None):
        mv = memoryview(buf)
        if n is not None:
            mv = mv[:n]
        if not len(mv):
            return 0
        return self._read_all(mv) or None

    def readline(self):
        out = bytearray()
        one = bytearray(1)
        while True:
            check()
            if not self._read_once(memoryview(one)):
                return bytes(out) if out else None
            out += one
            if one[0] == 10:
                return bytes(out)

    # -- transmit: blocks at the line rate once the TX buffer is full --
    def _pending(self, now):
        left = time.ticks_diff(self._tx_end, now)
        return (left + self.char_us - 1) // self.char_us if left > 0 else 0

    def write(self, buf):
        check()
        n = len(buf)
        if not n:
            return 0
        now = time.ticks_us()
        if time.ticks_diff(self._tx_end, now) < 0:
            self._tx_end = now
        self._tx_end = time.ticks_add(self._tx_end, n * self.char_us)
        for i in range(0, n, 0xFFF0):
            self.link.send("D", bytes(buf[i : i + 0xFFF0]))
        # uart_write_bytes returns once all but the TX ring's worth (the FIFO's without a ring)
        # has gone out on the wire.
        room = self.txbuf or _FIFO
        wait = time.ticks_diff(self._tx_end, now) - room * self.char_us
        if wait > 0:
            self.writes_blocked += 1
            self.blocked_us += wait
            time.sleep_us(wait)
        return n

    def pending_tx(self):
        """Bytes handed to write() that have not left the line yet (tests)."""
        return self._pending(time.ticks_us())

    def _drain_tx(self):
        left = time.ticks_diff(self._tx_end, time.ticks_us())
        if left > 0:
            time.sleep_us(left)

    def txdone(self):
        check()
        return time.ticks_diff(self._tx_end, time.ticks_us()) <= 0

    def flush(self):
        check()
        self._drain_tx()

    def sendbreak(self):
        check()
        self._drain_tx()
        SimUART.sendbreak(self)


# ---- system ----
class WDT:
    """The task watchdog: started once, never stopped; a later WDT() changes only its timeout.
    Its state lives in the module (the board has one watchdog, whichever object feeds it)."""

    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        check()
        if not _wdt:
            _wdt.extend((0, 0, 0))
        _wdt[0] = timeout
        _wdt[1] = time.ticks_ms()

    def feed(self):
        check()  # too late: the board has already reset
        _wdt[1] = time.ticks_ms()
        _wdt[2] += 1


def wdt_state():
    """(timeout ms, feeds) of the running watchdog, or None (tests)."""
    return (_wdt[0], _wdt[2]) if _wdt else None


def reset_cause():
    return _cause


def reset():
    raise BoardReset("machine.reset()")


def soft_reset():
    e = BoardReset("soft reset")
    e.cause = SOFT_RESET
    raise e


def deepsleep(ms=0):
    e = BoardReset("deepsleep")
    e.cause = DEEPSLEEP_RESET
    raise e


def freq(hz=None):
    global _mhz
    if hz is None:
        return _mhz * 1000000
    mhz = hz // 1000000
    if mhz not in (20, 40, 80, 160, 240):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _mhz = mhz


def unique_id():
    return b"\x24\x0a\xc4\x00\x00\x01"


def idle():
    check()


def _days_2000(y, m, d):
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 730425


def _civil(days):
    z = days + 730425
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


class RTC:
    """The RTC of an ESP32: counts on through soft and watchdog resets, restarts at 2000-01-01
    after a power cut (power_cut()). datetime() is (y, m, d, weekday, h, mi, s, µs)."""

    def _now(self):
        return _rtc[0] + time.ticks_diff(time.ticks_ms(), _rtc[1]) // 1000

    def datetime(self, dt=None):
        if dt is None:
            secs = self._now()
            days, rem = divmod(secs, 86400)
            y, m, d = _civil(days)
            return (y, m, d, (days + 5) % 7, rem // 3600, rem // 60 % 60, rem % 60, 0)
        y, m, d, _wd, hh, mi, ss = dt[:7]
        _rtc[0] = _days_2000(y, m, d) * 86400 + hh * 3600 + mi * 60 + ss
        _rtc[1] = time.ticks_ms()
        return None

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        if data is None:
            return _rtc_mem[0]
        if len(data) > 2048:
            raise ValueError("buffer too long")
        _rtc_mem[0] = bytes(data)
        return None


class _Time:
    """The ESP32 port's `time`: the calendar functions run on the RTC, from 2000-01-01."""

    def __getattr__(self, name):
        return getattr(time, name)

    def time(self):
        return RTC()._now()

    def time_ns(self):
        return self.time() * 1000000000

    def gmtime(self, secs=None):
        if secs is None:
            secs = self.time()
        days, rem = divmod(int(secs), 86400)
        y, m, d = _civil(days)
        yday = days - _days_2000(y, 1, 1) + 1
        return (y, m, d, rem // 3600, rem // 60 % 60, rem % 60, (days + 5) % 7, yday)

    def localtime(self, secs=None):
        return self.gmtime(secs)

    def mktime(self, t):
        return _days_2000(t[0], t[1], t[2]) * 86400 + t[3] * 3600 + t[4] * 60 + t[5]


TIME = _Time()

power_cut()
