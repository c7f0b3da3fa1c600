# mpy: heapsize=192k timeout=120 server=tools.sim.psam_server
# The PSAM application layer (firmware/psam_app.py) and a whole purchase (firmware/purchase.py
# with the PN532 driver on the simulated I2C bus) over the T=0 link and the character-level PSAM
# with the virtual PSAM (tools/sim/psam.py) behind it.
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
    lk = PsamLink(_uart, Pin("psam_rst", Pin.OUT, value=0), PWM(Pin("psam_clk")), CLK)
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


def test_whole_purchase_through_pn532_and_character_psam():
    PsamApp = app_or_skip()
    try:
        import pending
        import pn532
        import purchase
        import timeutil
        from pn532_i2c import PN532I2C
        from sim_i2c import SimI2C
    except ImportError as e:
        mptest.skip("purchase or PN532 driver not available: %s" % e)
    try:
        ctl.call("pn532_reset", chip_name="i2c")
    except OSError as e:
        mptest.skip("the hub has no PN532 world: %s" % e)
    reader = pn532.PN532(PN532I2C(SimI2C("nfc_i2c")))
    reader.init()
    lk = link()
    lk.reset()
    journal = []
    p = purchase.Purchaser(PsamApp(lk), pending.RamPendingStore(), {"journal": journal.append})
    mptest.true(p.boot(), "PSAM boot over T=0")
    ctl.call("pn532_place", chip_name="i2c", label="t", profile="tunion_plain")
    mptest.true(reader.poll() is not None, "card found")
    lk.reset_stats()
    now = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
    fare = {"debit": 200, "must_cover": 200, "txn_type": 0x06, "route": 0x0123, "stop": 7}
    res = p.tap(reader, fare, now)
    mptest.eq(res.reason, purchase.OK, res.detail)
    card = ctl.call("pn532_card", label="t")
    mptest.eq((card["balance"], card["violations"]), (4800, []))
    mptest.eq(journal[0]["tac"].hex().upper(), card["debits"][0]["tac"])
    mptest.hex_eq(journal[0]["psam_tid"], bytes.fromhex("000000000001"))
    mptest.eq((lk.chars_tx, lk.chars_rx), (55, 17))  # 8070 + 8072, MAC2 verified
    mptest.log(
        "purchase via PN532 + T=0 PSAM: %d chars to PSAM, %d back, %d us PSAM line time at %d"
        % (lk.chars_tx, lk.chars_rx, lk.line_us, lk.baud)
    )
