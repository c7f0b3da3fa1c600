"""Clearing checks each TAC with the date and time the card signed: the record's own `time` in
the UTC offset the validator recorded with the sale, whatever the collector's zone; zero-amount
purchases are checked too. The sales here are real: the firmware purchase (CPython, in-process)
against the virtual card and PSAM, in validators configured for other time zones."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for sub in ("drivers", "firmware", "tests/mpy"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))

import log  # noqa: E402
import memlog  # noqa: E402
import purchase  # noqa: E402
import record  # noqa: E402
import timeutil  # noqa: E402
from linkerr import CardGone, LinkTimeout  # noqa: E402
from psam_app import PsamApp  # noqa: E402

from tools.collector.clearing import Clearing, IssuerKey, tac_of  # noqa: E402
from tools.sim import crypto  # noqa: E402
from tools.sim.card import VirtualCard  # noqa: E402
from tools.sim.psam import VirtualPsam  # noqa: E402

log.set_level(log.ERROR + 10, echo=False)
# 23:50 UTC: the local date differs from UTC's on either side of the world
NOW = timeutil.to_seconds(2026, 11, 29, 23, 50, 0)


class Link:
    def __init__(self, dev, gone=CardGone):
        self.dev = dev
        self.gone = gone

    def transceive(self, apdu):
        resp = self.dev.exchange(apdu)
        if resp is None:
            raise self.gone("no answer")
        return resp


def sell(tz, fare, card=None, torn=False, **config):
    """Records (decoded, as uploaded) of one sale at a validator at UTC offset `tz` seconds."""
    psam = VirtualPsam(terminal_id="000000000042")
    book = []
    p = purchase.Purchaser(
        PsamApp(Link(psam, LinkTimeout)),
        memlog.make(book, inner=memlog.ram()),
        dict(config, tz=tz),
    )
    assert p.boot()
    card = card or VirtualCard.from_profile("tunion_plain")
    if torn:
        card.fail_after(ins=0x54)
        card.place()
        assert p.tap(Link(card), fare, NOW).reason == purchase.TAP_AGAIN
    card.place()
    res = p.tap(Link(card), fare, NOW + 30)
    assert res.reason == purchase.OK, res
    assert len(card.debits) == 1
    sales = [r for r in book if r["kind"] in (record.PURCHASE, record.PURCHASE_RECOVERED)]
    assert len(sales) == 1
    return sales[0], card


def clearing(tz=timeutil.DEFAULT_TZ_SECONDS):
    key = IssuerKey(crypto.TEST_ROOT_KEYS["tac"], bytes.fromhex("09981001FFFFFFFF"))
    return Clearing({bytes.fromhex("09981001"): key}, tz=tz)


@pytest.mark.parametrize("tz", [8 * 3600, -5 * 3600, 0, 9 * 3600 + 1800, 14 * 3600, -12 * 3600])
def test_a_validator_in_another_time_zone_clears_clean(tz):
    rec, card = sell(tz, {"debit": 200})
    assert rec["tac"] == card.debits[0]["tac"]
    assert record.tz_of(rec["reason"]) == tz
    # the collector runs in UTC+8 (its default) or anywhere else: the record says its zone
    assert clearing().verdict(rec) == "ok"
    assert clearing(tz=-3 * 3600).verdict(rec) == "ok"
    assert clearing().verdict(dict(rec, amount=201)) == "bad"
    assert clearing().verdict(dict(rec, time=rec["time"] + 1)) == "bad"


def test_a_recovered_purchase_keeps_the_intents_zone():
    rec, card = sell(-7 * 3600, {"debit": 150}, torn=True)
    assert rec["kind"] == record.PURCHASE_RECOVERED and rec["time"] == NOW
    assert clearing().verdict(rec) == "ok"


def test_zero_amount_purchases_are_checked_too():
    boarding = {
        "debit": 0,
        "must_cover": 300,
        "txn_type": 0x03,
        "bus_1a": {"status": 1, "marked": 300, "vehicle": b"B1", "direction": 0xAB},
    }
    rec, card = sell(3 * 3600, boarding, read_1a=0x2702)
    assert rec["amount"] == 0 and card.debits[0]["amount"] == 0
    assert clearing().verdict(rec) == "ok"
    assert clearing().verdict(dict(rec, tac=bytes.fromhex("01020304"))) == "bad"
    assert clearing().verdict(dict(rec, tac=bytes(4))) == "bad"


def test_records_without_their_zone_fall_back_to_the_configured_one():
    rec, _card = sell(8 * 3600, {"debit": 200})
    old = dict(rec, reason=0)  # as firmware before the offset was recorded wrote it
    assert clearing().verdict(old) == "ok"
    assert clearing(tz=0).verdict(old) == "bad"
    assert tac_of(clearing().keys[bytes.fromhex("09981001")][0], old) == rec["tac"]


def test_tz_code_round_trip_and_refusals():
    for q in range(-48, 57):
        assert record.tz_of(record.tz_code(q * 900)) == q * 900
    assert record.tz_of(0) is None and record.tz_of(255) is None
    for bad in (100, 15 * 3600, -13 * 3600):
        with pytest.raises(record.RecordError):
            record.tz_code(bad)
    # a validator configured with an offset that is not one sells, and says so
    log.set_level(log.ERROR, echo=False)
    log.clear()
    p = purchase.Purchaser(None, memlog.make(inner=memlog.ram()), {"tz": 1234})
    assert p._tzc == 0 and log.find("config tz", log.ERROR)
    log.set_level(log.ERROR + 10, echo=False)
