# mpy: heapsize=192k timeout=120 server=tools.sim.rc522_server
# The whole path at the bus level: firmware purchase -> RC522 driver -> SPI -> MFRC522 simulator
# -> ISO 14443-3/-4 card emulation -> the virtual T-Union card, with the PSAM on its APDU link.
import log
import memlog
import mptest
import purchase
import record
import timeutil
from apdu_link import ApduLink
from psam_app import PsamApp
from rc522 import RC522
from sim_pin import Pin
from sim_spi import SimSPI
from simlink import Control

NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
FLAT = {"debit": 200, "must_cover": 200, "txn_type": 0x06, "route": 0x0123, "stop": 7}
AID = bytes.fromhex("A000000632010105")

ctl = None
rd = None
journal = []
bench = {}


class _NoHistory:
    def append(self, level):
        pass


def setup():
    global ctl, rd
    if ctl is None:
        ctl = Control()
        cs = Pin("rc522_cs", Pin.OUT, value=1)
        cs.history = _NoHistory()
        rd = RC522(SimSPI("rc522", baudrate=4000000), cs)
        bench["psam"] = ApduLink("psam")
    ctl.call("rc522_clear")
    ctl.call("psam_reset")
    rd.release()
    journal.clear()
    log.set_level(log.INFO, echo=False)
    log.clear()
    lg = memlog.make(journal, intents=False, real=False)
    bench["p"] = purchase.Purchaser(PsamApp(bench["psam"]), lg)
    mptest.true(bench["p"].boot(), "PSAM boot")


def teardown():
    found = ctl.call("rc522_violations")
    for name in found:
        mptest.eq(found[name], [], "violations on " + name)


def summary(name="card"):
    st = ctl.call("rc522_state")
    card = st["cards"].get(name) or st["removed"].get(name)
    return card["summary"]


def spi():
    return ctl.call("rc522_state")["spi"]


def test_tunion_card_activates_with_its_profile():
    ctl.call("rc522_place", name="card", profile="tunion_plain")
    t = rd.poll()
    mptest.true(t is not None and t.iso_dep)
    mptest.hex_eq(t.uid, bytes.fromhex("A1B2C3D4"))
    mptest.hex_eq(t.atqa, bytes.fromhex("0004"))  # same byte order as card.py and the PN532
    resp = rd.transceive(b"\x00\xa4\x04\x00\x08" + AID + b"\x00")
    mptest.hex_eq(resp[-2:], b"\x90\x00")
    mptest.true(AID in resp, "the FCI names the T-Union DF")
    resp = rd.transceive(b"\x00\xb0\x97\x00\x00")  # 0x17: interconnection, city, card type
    mptest.hex_eq(resp[-2:], b"\x90\x00")


def test_flat_fare_purchase_through_the_rc522():
    ctl.call("rc522_place", name="card", profile="tunion_plain")
    mptest.true(rd.poll() is not None)
    ctl.call("rc522_counters_reset")
    res = bench["p"].tap(rd, FLAT, NOW)
    mptest.eq(res.reason, purchase.OK, res.detail)
    cost = spi()
    mptest.log(
        "flat-fare purchase over RC522 SPI: %d transactions, %d bytes"
        % (cost["transactions"], cost["bytes"])
    )
    mptest.between(cost["transactions"], 5 * 8, 5 * 8 + 16, "5 APDUs, 8 per frame + timers")
    s = summary()
    mptest.eq(s["balance"], 4800)
    mptest.eq(len(s["debits"]), 1)
    mptest.eq(res.record["tac"].hex().upper(), s["debits"][0]["tac"])
    mptest.eq([r["kind"] for r in journal], [record.PURCHASE])
    mptest.hex_eq(journal[0]["tac"], res.record["tac"])


def test_purchase_survives_wtx_lost_frames_and_chaining():
    # A slow card (two WTX per answer), small frames (FSC 16: every command chained), and a lost
    # answer and a damaged one on the way: the purchase must still be exactly one debit.
    ctl.call("rc522_place", name="card", profile="tunion_plain", wtx=[2, 4], ats="0570804000")
    mptest.true(rd.poll() is not None)
    ctl.call("rc522_fault", kind="lose_resp", at=4)
    ctl.call("rc522_fault", kind="corrupt_resp", at=9)
    res = bench["p"].tap(rd, FLAT, NOW)
    mptest.eq(res.reason, purchase.OK, res.detail)
    s = summary()
    mptest.eq((s["balance"], len(s["debits"])), (4800, 1))
    mptest.true(rd.isodep.wtx >= 10, "WTX seen: %d" % rd.isodep.wtx)
    mptest.eq(rd.isodep.miu, 13)


def test_card_pulled_after_debit_then_retapped_is_charged_once():
    ctl.call("rc522_place", name="card", profile="tunion_plain")
    mptest.true(rd.poll() is not None)
    ctl.call("rc522_card_fault", name="card", when="after", ins=0x54)
    first = bench["p"].tap(rd, FLAT, NOW)
    mptest.eq(first.reason, purchase.TAP_AGAIN, first.detail)
    mptest.eq(len(bench["p"].pending()), 1)
    rd.release()
    mptest.eq(rd.poll(), None, "the card left the field")
    ctl.call("rc522_retap", name="card")
    t = rd.poll()
    mptest.true(t is not None, "the re-tapped card was not found")
    again = bench["p"].tap(rd, FLAT, NOW + 20)
    mptest.eq(again.reason, purchase.OK, again.detail)
    mptest.eq(again.record["kind"], record.PURCHASE_RECOVERED)
    s = summary()
    mptest.eq((s["balance"], len(s["debits"])), (4800, 1), "charged once")
    mptest.eq(len(journal), 1)


def test_card_variants_through_the_rc522():
    # Slow cards (processing x3), 61xx and 6Cxx answer chaining, an FCI without 9F0C and all
    # the strict behaviours at once (tools/sim/card.py VARIANTS), through the real driver.
    for variant in ("slow_x3", "chain_61xx", "chain_6cxx", "fci_without_9f0c", "all_strict"):
        rd.release()
        ctl.call("rc522_place", name="card", profile="tunion_plain", variant=variant)
        mptest.true(rd.poll() is not None, variant)
        res = bench["p"].tap(rd, FLAT, NOW)
        mptest.eq(res.reason, purchase.OK, "%s: %s" % (variant, res.detail))
        s = summary()
        mptest.eq((s["balance"], len(s["debits"]), s["violations"]), (4800, 1, []), variant)
        mptest.eq(s["variant"]["slow"], 3 if variant == "slow_x3" else 1)
