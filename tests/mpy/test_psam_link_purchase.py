# mpy: heapsize=256k timeout=120 server=tools.sim.psam_server
# A whole purchase (firmware/purchase.py, the PN532 driver on the simulated I2C bus, a virtual
# T-Union card) with the PSAM on the T=0 link and the character-level PSAM simulator behind it.
# The firmware modules are imported first: compiling them from source needs the heap unfragmented.
import gc

try:
    import memlog
    import pn532
    import purchase
    from pn532_i2c import PN532I2C
    from psam_app import PsamApp
except ImportError as e:  # a part not there yet: the test says so instead of failing
    _missing = str(e)
else:
    _missing = None
gc.collect()

import log  # noqa: E402
import mptest  # noqa: E402
import timeutil  # noqa: E402
from psam_link import PsamLink  # noqa: E402
from sim_i2c import SimI2C  # noqa: E402
from sim_pin import PWM, Pin  # noqa: E402
from sim_uart import SimUART  # noqa: E402
from simlink import Control  # noqa: E402

CLK = 3571200


def test_whole_purchase_through_pn532_and_character_psam():
    if _missing:
        mptest.skip("purchase or PN532 driver not available: %s" % _missing)
    ctl = Control()
    log.set_level(log.INFO, echo=False)
    ctl.call("psam_clear", settings=True)
    try:
        ctl.call("psam_app", name="virtual")
        ctl.call("pn532_reset", chip_name="i2c")
    except OSError as e:
        mptest.skip("the hub lacks the virtual PSAM or the PN532 world: %s" % e)
    reader = pn532.PN532(PN532I2C(SimI2C("nfc_i2c")))
    reader.init()
    uart = SimUART("psam", baudrate=9600, parity=0, stop=2, rxbuf=512)
    lk = PsamLink(
        uart, Pin("psam_rst", Pin.OUT, value=0), PWM(Pin("psam_clk")), CLK, margin_ms=1000
    )
    lk.reset()
    journal = []
    p = purchase.Purchaser(PsamApp(lk), memlog.make(journal, intents=False, real=False))
    mptest.true(p.boot(), "PSAM boot over T=0: %r" % (log.recent(4),))
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
    mptest.eq(ctl.call("psam_stats")["config_errors"], 0)
    mptest.log(
        "purchase via PN532 + T=0 PSAM: %d chars to PSAM, %d back, %d us PSAM line time at %d"
        % (lk.chars_tx, lk.chars_rx, lk.line_us, lk.baud)
    )
    uart.deinit()


def test_purchaser_boot_recovers_the_link_after_a_fault():
    if _missing:
        mptest.skip("purchase not available: %s" % _missing)
    ctl = Control()
    log.set_level(log.INFO, echo=False)
    log.clear()
    ctl.call("psam_clear", settings=True)
    ctl.call("psam_app", name="virtual")
    uart = SimUART("psam", baudrate=9600, parity=0, stop=2, rxbuf=512)
    lk = PsamLink(
        uart, Pin("psam_rst", Pin.OUT, value=0), PWM(Pin("psam_clk")), CLK, margin_ms=1000
    )
    p = purchase.Purchaser(PsamApp(lk), memlog.make(real=False))
    mptest.false(p.boot(), "never reset: the link refuses")
    mptest.true(log.find("not reset", log.ERROR), log.recent())
    mptest.true(p.boot(), "the second boot resets the link first")
    ctl.call("psam_config", wi=1)
    ctl.call("psam_fault", kind="silence", at="header")
    lk.reset()
    mptest.false(p.boot(), "a silent PSAM fails the boot with a logged error")
    mptest.true(log.find("procedure byte", log.ERROR), log.recent())
    mptest.true(p.boot(), "and the next boot resets and works")
    mptest.eq(ctl.call("psam_stats")["resets"], 4)  # boots 2, 3, 4 and the one by hand
    uart.deinit()


def test_a_sale_refused_at_initialize_leaves_the_psam_clean():
    # 8070's header goes to the PSAM before the card's INITIALIZE (docs/psam-link.md *Header
    # ahead*); a sale refused there completes it with filler data, so the next sale's 8070 is
    # understood and the PSAM is not re-booted.
    if _missing:
        mptest.skip("purchase or PN532 driver not available: %s" % _missing)
    ctl = Control()
    log.set_level(log.INFO, echo=False)
    ctl.call("psam_clear", settings=True)
    ctl.call("psam_app", name="virtual")
    ctl.call("pn532_reset", chip_name="i2c")
    reader = pn532.PN532(PN532I2C(SimI2C("nfc_i2c")))
    reader.init()
    uart = SimUART("psam", baudrate=9600, parity=0, stop=2, rxbuf=512)
    lk = PsamLink(
        uart, Pin("psam_rst", Pin.OUT, value=0), PWM(Pin("psam_clk")), CLK, margin_ms=1000
    )
    lk.reset()
    journal = []
    psam = PsamApp(lk)
    p = purchase.Purchaser(psam, memlog.make(journal, intents=False, real=False))
    mptest.true(p.boot(), "PSAM boot")
    resets = ctl.call("psam_stats")["resets"]
    ctl.call("pn532_place", chip_name="i2c", label="t", profile="tunion_plain")
    now = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
    for fare in (
        {"debit": 9000, "must_cover": 9000},  # the card refuses INITIALIZE (9401)
        {"debit": 200, "must_cover": 9000},  # INIT answers, the balance does not cover it
    ):
        mptest.true(reader.poll() is not None, "card found")
        res = p.tap(reader, fare, now)
        mptest.eq(res.reason, purchase.INSUFFICIENT, res.detail)
        mptest.true(psam.ready and lk.ready, "the PSAM stays ready: %r" % (log.recent(4),))
        # The header went, then the filler completed it: the PSAM refused key version 0.
        mptest.eq(ctl.call("psam_stats")["commands"][-1], "8070000024")
    mptest.eq(journal, [])
    mptest.true(reader.poll() is not None, "card found")
    res = p.tap(reader, {"debit": 200, "must_cover": 200}, now)
    mptest.eq(res.reason, purchase.OK, res.detail)
    card = ctl.call("pn532_card", label="t")
    mptest.eq((card["balance"], card["violations"]), (4800, []))
    mptest.eq(ctl.call("psam_stats")["resets"], resets)  # never re-booted
    mptest.eq(ctl.call("psam_stats")["config_errors"], 0)
    uart.deinit()
