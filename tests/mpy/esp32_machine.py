# A stand-in for the ESP32 port's `machine` module on the unix port, so the ESP32 boards' own
# code (boards/esp32_common.py and each board.py) runs in tests against the simulators: bus ids
# and GPIO numbers are mapped to the hub's device and pin names for the board under test.
import sim_pin
from sim_i2c import SimI2C
from sim_spi import SimSPI
from sim_uart import SimUART

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

# Set by the test for the board under test: ("i2c", 1) -> "nfc_i2c", ("pin", 14) -> "psam_rst"...
WIRING = {}
made = []  # (kind, id, kwargs) for every bus object the board built


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
    def __init__(self, n, mode=-1, pull=-1, value=None):
        sim_pin.Pin.__init__(self, _name("pin", n), mode, pull, value)


class PWM(sim_pin.PWM):
    def __init__(self, pin, freq=0, duty_u16=0):
        sim_pin.PWM.__init__(self, pin, freq, duty_u16)


class I2C(SimI2C):
    def __init__(self, n, sda=None, scl=None, freq=400000, timeout=50000):
        made.append(("i2c", n, {"sda": sda, "scl": scl, "freq": freq}))
        SimI2C.__init__(self, _name("i2c", n), freq)


class SPI(SimSPI):
    def __init__(self, n, baudrate=1000000, polarity=0, phase=0, bits=8, firstbit=0, **pins):
        made.append(("spi", n, dict(pins, baudrate=baudrate, firstbit=firstbit)))
        SimSPI.__init__(self, _name("spi", n), baudrate, polarity, phase, bits, firstbit)


class UART(SimUART):
    def __init__(self, n, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        made.append(("uart", n, dict(kw, baudrate=baudrate, parity=parity, stop=stop)))
        SimUART.__init__(self, _name("uart", n), baudrate, bits, parity, stop, **kw)


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def reset_cause():
    return PWRON_RESET
