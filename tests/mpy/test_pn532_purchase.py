# mpy: heapsize=256k timeout=120 server=tools.sim.nfc_server
# The whole tap at the bus level on every PN532 transport: firmware/purchase.py -> PN532 driver
# -> I2C / SPI / HSU -> PN532 simulator (ISO-DEP to the card itself) -> virtual T-Union card, with
# the virtual PSAM on its APDU link. Also tearing seen through the chip: the card pulled after
# DEBIT, and the chip losing DEBIT's answer; the re-tap settles both, one debit each.
# The firmware is imported first: compiling it from source needs the heap unfragmented.
import gc

try:
    import memlog
    import purchase
    import record
    from apdu_link import ApduLink
    from psam_app import PsamApp
except ImportError as e:  # the purchase is another part: say so rather than fail
    _missing = str(e)
else:
    _missing = None
gc.collect()

import log  # noqa: E402
import mptest  # noqa: E402
import pn532  # noqa: E402
import timeutil  # noqa: E402
from counting_uart import CountingUART  # noqa: E402
from pn532_i2c import PN532I2C  # noqa: E402
from pn532_spi import PN532SPI  # noqa: E402
from pn532_uart import PN532UART  # noqa: E402
from sim_i2c import SimI2C  # noqa: E402
from sim_pin import Pin  # noqa: E402
from sim_spi import SimSPI  # noqa: E402
from simlink import Control  # noqa: E402

NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
FLAT = {"debit": 200, "must_cover": 200, "txn_type": 0x06, "route": 0x0123, "stop": 7}
# Generous: the chip simulator is a CPython process that a busy machine can delay.
TIMEOUTS = {"ack_timeout_ms": 1000, "command_timeout_ms": 2000, "exchange_timeout_ms": 2500}


ctl = Control() if not _missing else None
_i2c = SimI2C("nfc_i2c")
_spi = SimSPI("nfc_spi")
_cs = Pin("nfc_cs", Pin.OUT, value=1)
_uart = CountingUART("nfc_hsu", baudrate=115200)
# Every board wires the chip's IRQ line (boards/*/board.py "irq"): the drivers look at it
# instead of asking the chip's status over the bus, as on the validator.
_i2c_irq = Pin("nfc_i2c_irq", Pin.IN)
_spi_irq = Pin("nfc_spi_irq", Pin.IN)
TRANSPORTS = {
    "i2c": (lambda: PN532I2C(_i2c, irq=_i2c_irq), lambda: _i2c.transactions),
    "spi": (lambda: PN532SPI(_spi, _cs, irq=_spi_irq), lambda: _spi.transactions),
    "hsu": (lambda: PN532UART(_uart), lambda: _uart.calls),
}
state = {"n": 0}


def setup():
    if _missing:
        mptest.skip("purchase not available: %s" % _missing)
    log.set_level(log.INFO, echo=False)
    ctl.call("reset", terminal_id="000000000042")
    _cs.history.clear()


def bench(chip):
    ctl.call("pn532_reset", chip_name=chip)
    make, count = TRANSPORTS[chip]
    reader = pn532.PN532(make(), **TIMEOUTS)
    reader.init()
    journal = []
    lg = memlog.make(journal, intents=False, real=False)
    p = purchase.Purchaser(PsamApp(ApduLink("psam")), lg)
    mptest.true(p.boot(), "PSAM boot")
    return reader, p, journal, count


def new_card(chip):
    state["n"] += 1
    label = "%s%d" % (chip, state["n"])
    ctl.call("pn532_place", chip_name=chip, label=label, profile="tunion_plain")
    return label


def tap(chip, reader, p, now=NOW):
    mptest.true(reader.poll() is not None, "card activated")
    return p.tap(reader, FLAT, now)


def card(label):
    return ctl.call("pn532_card", label=label)


def flat_fare_on(chip):
    reader, p, journal, count = bench(chip)
    label = new_card(chip)
    ctl.call("pn532_reset_counters", chip_name=chip)
    b0 = count()
    mptest.true(reader.poll() is not None)
    mptest.log(
        "%s poll (card present): driver %d bus transactions, hub %s"
        % (chip, count() - b0, ctl.call("pn532_bus", chip_name=chip))
    )
    ctl.call("pn532_reset_counters", chip_name=chip)
    frames0 = ctl.call("pn532_state", chip_name=chip)["stats"]["ide_frames"]
    b0 = count()
    res = p.tap(reader, FLAT, NOW)
    mptest.eq(res.reason, purchase.OK, res.detail)
    c = card(label)
    mptest.eq((c["balance"], c["violations"], len(c["debits"])), (4800, [], 1))
    mptest.eq(journal[0]["tac"].hex().upper(), c["debits"][0]["tac"])
    mptest.eq(journal[0]["kind"], record.PURCHASE)
    frames = ctl.call("pn532_state", chip_name=chip)["stats"]["ide_frames"] - frames0
    mptest.eq(frames, c["commands"], "one InDataExchange per APDU")
    mptest.log(
        "%s flat-fare purchase: %d card APDUs, driver %d bus transactions, hub %s"
        % (chip, c["commands"], count() - b0, ctl.call("pn532_bus", chip_name=chip))
    )
    return frames


def test_flat_fare_purchase_over_i2c():
    flat_fare_on("i2c")


def test_flat_fare_purchase_over_spi():
    flat_fare_on("spi")


def test_flat_fare_purchase_over_hsu():
    flat_fare_on("hsu")


def test_card_pulled_after_debit_is_settled_by_the_retap():
    reader, p, journal, _ = bench("i2c")
    label = new_card("i2c")
    ctl.call("pn532_card_fault", label=label, when="after", ins=0x54)
    res = tap("i2c", reader, p)
    mptest.eq(res.reason, purchase.TAP_AGAIN, res.detail)
    mptest.eq(len(card(label)["debits"]), 1, "the card did debit")
    mptest.eq(reader.target, None, "CardGone dropped the target")
    ctl.call("pn532_place", chip_name="i2c", label=label)  # the same card again
    res = tap("i2c", reader, p, NOW + 5)
    mptest.eq(res.reason, purchase.OK, res.detail)
    mptest.eq(res.record["kind"], record.PURCHASE_RECOVERED)
    c = card(label)
    mptest.eq((len(c["debits"]), c["balance"], c["violations"]), (1, 4800, []))
    mptest.eq(len(journal), 1)


def test_chip_losing_the_debit_answer_is_settled_by_the_retap():
    frames = flat_fare_on("spi")  # InDataExchange frames in one tap: DEBIT is the last
    reader, p, journal, _ = bench("spi")
    label = new_card("spi")
    mptest.true(reader.poll() is not None)
    # Every command response counts towards `after`: skip the first frames-1 exchanges.
    ctl.call("pn532_fault", chip_name="spi", name="drop_response", after=frames - 1)
    res = p.tap(reader, FLAT, NOW)
    mptest.eq(res.reason, purchase.TAP_AGAIN, res.detail)
    mptest.true("LinkTimeout" in res.detail, res.detail)
    mptest.eq(len(card(label)["debits"]), 1, "the card did debit; only its answer was lost")
    res = tap("spi", reader, p, NOW + 5)
    mptest.eq(res.reason, purchase.OK, res.detail)
    mptest.eq(res.record["kind"], record.PURCHASE_RECOVERED)
    c = card(label)
    mptest.eq((len(c["debits"]), c["balance"], c["violations"]), (1, 4800, []))
    mptest.eq(len(journal), 1)


def test_card_variants_through_the_pn532():
    # Slow cards (processing x3), 61xx and 6Cxx answer chaining and all the strict behaviours at
    # once (tools/sim/card.py VARIANTS), through the real driver and the chip simulator.
    reader, p, journal, count = bench("spi")
    for variant in ("slow_x3", "chain_61xx", "chain_6cxx", "all_strict"):
        state["n"] += 1
        label = "v%d" % state["n"]
        ctl.call("pn532_remove", chip_name="spi")
        ctl.call(
            "pn532_place", chip_name="spi", label=label, profile="tunion_plain", variant=variant
        )
        mptest.true(reader.poll() is not None, variant)
        res = p.tap(reader, FLAT, NOW)
        mptest.eq(res.reason, purchase.OK, "%s: %s" % (variant, res.detail))
        c = card(label)
        mptest.eq((c["balance"], c["violations"], len(c["debits"])), (4800, [], 1), variant)
        reader.release()
