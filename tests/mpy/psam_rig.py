# The PSAM link's test rig, shared by the test_psam_link*.py files: the driver on a simulated UART,
# reset pin and clock, against the character-level PSAM simulator of tools.sim.psam_server.
import log
from psam_link import PsamLink
from sim_pin import PWM, Pin
from sim_uart import SimUART
from simlink import Control

CLK = 3571200
# Host slack on every ISO deadline: the hub, a loaded machine and two sockets sit between the
# driver and the card (a board needs about 50 ms, the default). 150 ms failed a PPS at load 8;
# the tests of a deadline make the card later than this on purpose.
MARGIN = 1000
_links = []


class _Ctl:
    """The simulator's control channel, opened at the first call (the server starts per file)."""

    def __init__(self):
        self._c = None

    def call(self, *a, **kw):
        if self._c is None:
            self._c = Control()
        return self._c.call(*a, **kw)


ctl = _Ctl()


def setup():
    ctl.call("psam_clear", settings=True)
    ctl.call("psam_app", name="standin")
    log.set_level(log.INFO, echo=False)
    log.clear()


def teardown():
    while _links:
        _links.pop().uart.deinit()


def link(**kw):
    teardown()  # one UART connection at a time, as on the board
    uart = SimUART("psam", baudrate=9600, parity=0, stop=2, rxbuf=512)
    rst = Pin("psam_rst", Pin.OUT, value=0)
    clk = PWM(Pin("psam_clk"))
    kw.setdefault("margin_ms", MARGIN)
    lk = PsamLink(uart, rst, clk, CLK, **kw)
    _links.append(lk)
    return lk


def stats():
    return ctl.call("psam_stats")
