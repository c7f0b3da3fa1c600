# mpy: heapsize=128k timeout=120 server=tools.sim.psam_server
# The PSAM application layer (firmware/psam_app.py) over the T=0 link and the character-level
# PSAM with the virtual PSAM (tools/sim/psam.py) behind it. The whole purchase through the PN532
# is in test_psam_link_purchase.py.
import log
import mptest
from psam_link import PsamLink
from sim_pin import PWM, Pin
from sim_uart import SimUART
from simlink import Control

CLK = 3571200
ctl = None
_uart = None


def setup():
    global ctl
    if ctl is None:
        ctl = Control()
    ctl.call("psam_clear", settings=True)
    log.set_level(log.INFO, echo=False)
    log.clear()


def teardown():
    global _uart
    if _uart is not None:
        _uart.deinit()
        _uart = None


def link():
    global _uart
    _uart = SimUART("psam", baudrate=9600, parity=0, stop=2, rxbuf=512)
    lk = PsamLink(
        _uart, Pin("psam_rst", Pin.OUT, value=0), PWM(Pin("psam_clk")), CLK, margin_ms=1000
    )
    return lk


def app_or_skip():
    try:
        from psam_app import PsamApp
    except ImportError as e:
        mptest.skip("firmware/psam_app.py not available: %s" % e)
    try:
        ctl.call("psam_app", name="virtual")
    except OSError as e:
        mptest.skip("tools/sim/psam.py not available: %s" % e)
    return PsamApp


def init_args():
    return (
        b"\x11\x22\x33\x44",  # card random
        5,  # offline ATC
        200,  # amount
        0x06,
        b"\x20\x26\x11\x29\x12\x30\x00",
        1,  # key version: 3DES test keys
        0x00,  # algorithm id
        bytes(8),
        bytes.fromhex("3105228000000000"),
    )


def test_psam_app_boots_and_runs_a_purchase_over_the_link():
    PsamApp = app_or_skip()
    lk = link()
    lk.reset()
    mptest.eq(lk.baud, 38400)
    app = PsamApp(lk)
    mptest.hex_eq(app.boot(), bytes.fromhex("000000000001"))
    mptest.eq(app.key_index, 1)
    lk.reset_stats()
    serial, serial4, mac1 = app.init_purchase(*init_args())
    mptest.eq((serial, len(mac1)), (1, 4))
    mptest.false(app.credit(b"\x00\x00\x00\x00"))  # a wrong MAC2 is 9302, not a link error
    mptest.eq((lk.chars_tx, lk.chars_rx), (55, 17))  # as iso7816.t0_chars models it
    serial2 = app.init_purchase(*init_args())[0]
    mptest.eq(serial2, 2)
    cmds = ctl.call("psam_stats")["commands"]
    mptest.true("00c0000008" in cmds, "MAC1 fetched with GET RESPONSE: %r" % cmds)


def test_psam_app_with_the_virtual_psams_own_atr():
    PsamApp = app_or_skip()
    ctl.call("psam_app", name="virtual", own_atr=True)  # no TA1: stays at 9600
    lk = link()
    atr = lk.reset()
    mptest.hex_eq(atr.hist[4:10], b"TUPSAM")
    mptest.eq((lk.pps_result, lk.baud), (None, 9600))
    app = PsamApp(lk)
    app.boot()
    mptest.eq(app.init_purchase(*init_args())[0], 1)
