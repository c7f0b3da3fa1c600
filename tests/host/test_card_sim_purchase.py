"""The firmware purchase (imported under CPython) against the virtual card and PSAM in-process.

The same modules run under MicroPython in tests/mpy/test_purchase*.py; here the simulators are
called directly, so the whole tearing matrix and hypothesis runs stay fast."""

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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

from tools.sim.card import VirtualCard  # noqa: E402
from tools.sim.psam import VirtualPsam  # noqa: E402

log.set_level(log.WARNING, echo=False)
NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)  # 12:30 in Beijing
FLAT = {"debit": 200, "must_cover": 200, "txn_type": 0x06, "route": 0x0123, "stop": 7}


class Link:
    """In-process link: what a reader driver does with a card that may leave."""

    def __init__(self, dev, gone=CardGone):
        self.dev = dev
        self.gone = gone
        self.count = 0

    @property
    def iso_dep(self):
        return getattr(self.dev, "iso_dep", True)

    def transceive(self, apdu):
        self.count += 1
        resp = self.dev.exchange(apdu)
        if resp is None:
            raise self.gone("no answer")
        return resp


class Bench:
    def __init__(self, tid="000000000042", **config):
        self.psam = VirtualPsam(terminal_id=tid)
        self.psam_link = Link(self.psam, LinkTimeout)
        self.app = PsamApp(self.psam_link)
        self.journal = []  # what was booked (intents left out)
        self.log = memlog.make(self.journal, inner=memlog.ram(), intents=False)
        self.p = purchase.Purchaser(self.app, self.log, config)
        assert self.p.boot()

    def tap(self, card, fare=FLAT, now=NOW):
        card.place()
        link = Link(card)
        before = self.psam_link.count
        res = self.p.tap(link, fare, now)
        self.card_apdus = link.count
        self.psam_apdus = self.psam_link.count - before
        return res


def purchases(journal):
    return [r for r in journal if r["kind"] in (record.PURCHASE, record.PURCHASE_RECOVERED)]


def test_flat_fare_purchase_and_budget():
    b = Bench()
    card = VirtualCard.from_profile("tunion_plain")
    res = b.tap(card)
    assert res.reason == purchase.OK, res
    assert (b.card_apdus, b.psam_apdus) == (5, 2)
    assert res.amount == 200 and res.balance_after == 4800 and card.balance == 4800
    rec = res.record
    assert {k: b.journal[0][k] for k in rec} == rec
    assert rec["tac"] == card.debits[0]["tac"] and rec["card_atc"] == card.debits[0]["counter"]
    assert rec["psam_tid"] == bytes.fromhex("000000000042") and rec["flags"] == 0
    assert rec["card_no"] == bytes.fromhex("03105228000000000017")
    assert rec["issuer"] == bytes.fromhex("09981001") and rec["card_type"] == 1
    assert record.decode(record.encode(rec, 1))["tac"] == rec["tac"]
    r1e = card.record_1e(1)
    assert r1e[0] == 0x06 and r1e[3:9] == bytes.fromhex("000000000042") and r1e[9] == 0x02
    assert r1e[10:12] == b"\x01\x23" and r1e[17:21] == (200).to_bytes(4, "big")
    assert r1e[21:25] == (4800).to_bytes(4, "big")
    assert r1e[25:32] == bytes.fromhex("20261129123000")
    assert b.p.pending() == []


@pytest.mark.parametrize("profile", ["tunion_sm4", "social_security", "phone_tunion"])
def test_other_cards_purchase(profile):
    b = Bench()
    card = VirtualCard.from_profile(profile)
    res = b.tap(card)
    assert res.reason == purchase.OK, res
    assert len(card.debits) == 1 and res.record["flags"] == 0


def test_tearing_matrix_every_command_before_and_after():
    commands = [0xA4, 0xB0, 0x50, 0xDC, 0x54]
    for when in ("before", "after"):
        for ins in commands:
            b = Bench()
            card = VirtualCard.from_profile("tunion_plain")
            other = VirtualCard.from_profile("phone_tunion")
            getattr(card, "fail_" + when)(ins=ins)
            first = b.tap(card)
            assert first.reason == purchase.TAP_AGAIN, (when, ins, first)
            # a different card in between does not disturb the pending one
            assert b.tap(other).reason == purchase.OK
            second = b.tap(card)
            assert second.reason == purchase.OK, (when, ins, second)
            assert len(card.debits) == 1, (when, ins)
            booked = [r for r in purchases(b.journal) if r["card_no"] == second.record["card_no"]]
            assert len(booked) == 1
            assert booked[0]["tac"] == card.debits[0]["tac"]
            assert booked[0]["card_atc"] == card.debits[0]["counter"]
            torn_debit = when == "after" and ins == 0x54
            assert (booked[0]["kind"] == record.PURCHASE_RECOVERED) == torn_debit
            assert b.p.pending() == []


def test_psam_session_lost_leaves_mac2_unverified_flag():
    b = Bench()
    card = VirtualCard.from_profile("tunion_plain")
    other = VirtualCard.from_profile("tunion_sm4")
    card.fail_after(ins=0x54)
    assert b.tap(card).reason == purchase.TAP_AGAIN
    assert b.tap(other).reason == purchase.OK  # its 8070 replaces the PSAM session
    res = b.tap(card)
    assert res.reason == purchase.OK
    assert res.record["kind"] == record.PURCHASE_RECOVERED
    assert res.record["flags"] & record.FLAG_MAC2_UNVERIFIED
    assert len(card.debits) == 1


class MuteAt:
    """Wrap the PSAM so it stays silent at one INS (e.g. 8072 after a good debit)."""

    def __init__(self, psam, ins):
        self.psam = psam
        self.ins = ins

    def exchange(self, apdu):
        if apdu[1] == self.ins:
            self.ins = None
            return None
        return self.psam.exchange(apdu)


def test_psam_silent_at_mac2_keeps_the_sale_flagged():
    b = Bench()
    b.psam_link.dev = MuteAt(b.psam, 0x72)
    card = VirtualCard.from_profile("tunion_plain")
    res = b.tap(card)
    assert res.reason == purchase.OK
    assert res.record["flags"] == record.FLAG_MAC2_UNVERIFIED
    assert b.p.pending() == [] and len(card.debits) == 1
    assert b.tap(card).reason == purchase.OK  # re-booted the PSAM and sold again
    assert len(card.debits) == 2


def test_intent_is_durable_before_debit_and_closed_after():
    seen = []
    b = Bench()
    card = VirtualCard.from_profile("tunion_plain")
    b.p.cfg["on_record"] = lambda rec, seq: seen.append((rec["kind"], len(card.debits), seq))
    assert b.tap(card).reason == purchase.OK
    assert seen == [(record.DEBIT_INTENT, 0, 1), (record.PURCHASE, 1, 2)]


def test_torn_cards_all_stay_unconfirmed_nothing_is_pushed_out():
    b = Bench()
    for i in range(6):
        c = VirtualCard.from_profile("tunion_plain", card_no="31052280000000001%02d" % i)
        c.fail_after(ins=0x54)
        res = b.tap(c)
        assert res.reason == purchase.TAP_AGAIN
        assert res.extra == []
    assert len(b.p.pending()) == 6
    assert [r for r in b.journal if r["kind"] == record.REFUSED] == []


def test_industry_record_lock_and_1a_update():
    b = Bench(read_1a=0x2702)
    card = VirtualCard.from_profile("tunion_plain", locked_1a=["2702"])
    res = b.tap(card)
    assert res.reason == purchase.LOCKED and "2702" in res.detail
    card = VirtualCard.from_profile("tunion_plain", card_no="3105228000000000099")
    rec = bytearray(card.record_1a(0x2702))
    rec[14] = 0x01  # boarding
    rec[53:57] = (500).to_bytes(4, "big")  # marked amount
    fare = dict(FLAT, record_1a=bytes(rec), txn_type=0x03)
    res = b.tap(card, fare)
    assert res.reason == purchase.OK, res
    assert res.card["rec1a"][:3] == b"\x27\x02\x7d"
    assert card.record_1a(0x2702) == bytes(rec)
    bad = b.tap(card, dict(FLAT, record_1a=b"\x27\x02"))
    assert bad.reason == purchase.NO_FARE and len(card.debits) == 1


def test_config_is_checked():
    with pytest.raises(ValueError):
        Bench(city=b"\x10")
    with pytest.raises(ValueError):
        Bench(balance_check="maybe")


@settings(max_examples=60, deadline=None)
@given(
    balance=st.integers(0, 20000),
    limit=st.integers(0, 5000),
    debit=st.integers(0, 3000),
    extra=st.integers(0, 3000),
)
def test_no_overdraft_property(balance, limit, debit, extra):
    b = Bench()
    card = VirtualCard.from_profile("tunion_plain", balance=balance, overdraft_limit=limit)
    must = debit + extra
    res = b.tap(card, {"debit": debit, "must_cover": must})
    if balance >= must:
        assert res.reason == purchase.OK, res
        assert card.balance == balance - debit and card.tu["used_overdraft"] == 0
        assert res.balance_after == card.balance == res.record["balance_after"]
        assert [d["amount"] for d in card.debits] == [debit]
    else:
        assert res.reason == purchase.INSUFFICIENT, res
        assert card.debits == [] and b.psam.serial == 1  # no PSAM session spent either


def test_bus_record_2702_boarding_then_alighting():
    b = Bench(read_1a=0x2702, city=b"\x10\x01", institution=bytes.fromhex("0998100100000000"))
    card = VirtualCard.from_profile("tunion_plain")
    board = {
        "debit": 0,
        "must_cover": 600,
        "txn_type": 0x03,
        "route": 0x0015,
        "stop": 3,
        "operator": 7,
        "bus_1a": {"status": 1, "marked": 600, "vehicle": b"BUS00042", "direction": 0xBA},
    }
    res = b.tap(card, board)
    assert res.reason == purchase.OK, res
    r = card.record_1a(0x2702)
    assert r[0:5] == b"\x27\x02\x7d\x01\x01" and r[5] == 0 and r[14] == 0x01
    assert r[15:17] == b"\x10\x01" and r[17:25] == bytes.fromhex("0998100100000000")
    assert r[25:27] == b"\x00\x07" and r[27:29] == b"\x00\x15" and r[29] == 3
    assert r[30:38] == b"BUS00042" and r[38:46] == bytes.fromhex("0000000000000042")
    assert r[46:53] == bytes.fromhex("20261129123000")
    assert r[53:57] == (600).to_bytes(4, "big") and r[57] == 0xBA
    assert r[6:14] == bytes.fromhex("0000000000000001")  # PSAM serial of the sale, BCD
    alight = {
        "debit": 350,
        "must_cover": 350,
        "txn_type": 0x04,
        "route": 0x0015,
        "stop": 9,
        "bus_1a": {"status": 2, "mileage": 12, "vehicle": b"BUS00042"},
    }
    res = b.tap(card, alight, now=NOW + 1800)
    assert res.reason == purchase.OK, res
    assert res.card["rec1a"] == r  # the fare callback could see the boarding half
    r2 = card.record_1a(0x2702)
    assert r2[14] == 0x02 and r2[15:58] == r[15:58]  # boarding half kept
    assert r2[70:72] == b"\x00\x15" and r2[72] == 9 and r2[81:89] == r[38:46]
    assert r2[89:96] == bytes.fromhex("20261129130000")
    assert r2[96:100] == (350).to_bytes(4, "big") and r2[100:102] == b"\x00\x0c"
    assert [d["amount"] for d in card.debits] == [0, 350]
    bad = b.tap(card, dict(alight, bus_1a={"status": 5}))
    assert bad.reason == purchase.NO_FARE and len(card.debits) == 2


def test_torn_purchase_is_settled_even_after_the_card_expired():
    b = Bench()
    card = VirtualCard.from_profile("tunion_plain", expiry="20261129")
    card.fail_after(ins=0x54)
    late = NOW + 11 * 3600 + 29 * 60  # 23:59 in Beijing
    assert b.tap(card, now=late).reason == purchase.TAP_AGAIN
    res = b.tap(card, now=late + 120)  # 00:01 the next day: expired now
    assert res.reason == purchase.OK and res.record["kind"] == record.PURCHASE_RECOVERED
    assert b.tap(card, now=late + 180).reason == purchase.EXPIRED
    assert len(card.debits) == 1 and len(purchases(b.journal)) == 1


def test_history_too_short_keeps_the_intent_open():
    b = Bench()
    elsewhere = Bench()
    card = VirtualCard.from_profile("tunion_plain")
    card.fail_after(ins=0x54)
    assert b.tap(card).reason == purchase.TAP_AGAIN
    for i in range(10):  # ten sales elsewhere push ours out of the card's 0x18 history
        assert elsewhere.tap(card, now=NOW + 60 + i).reason == purchase.OK
    res = b.tap(card, now=NOW + 120)
    assert res.reason == purchase.OK and res.record["kind"] == record.PURCHASE
    assert res.extra == []  # nothing is booked for it, nothing deletes it: clearing settles it
    assert [o["card_atc"] for o in b.p.pending()] == [card.debits[0]["counter"]]
    assert len(card.debits) == 12


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),  # which card
            st.integers(0, 1),  # which validator
            st.sampled_from([None, "before", "after"]),
            st.sampled_from([0xA4, 0xB0, 0x50, 0xDC, 0x54, 0xB2, 0x5A]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_random_tearing_every_debit_booked_exactly_once(steps):
    validators = [Bench(), Bench(tid="000000000043")]
    cards = [
        VirtualCard.from_profile(
            "tunion_plain", card_no="31052280000000002%02d" % i, balance=10**5
        )
        for i in range(3)
    ]
    now = NOW
    for who, where, when, ins in steps:
        card = cards[who]
        if when:
            getattr(card, "fail_" + when)(ins=ins)
        now += 7
        validators[where].tap(card, now=now)
        card.clear_faults()
    for b in validators:  # every owner comes back to every validator that still waits for them
        for card in cards:
            now += 7
            b.tap(card, now=now)
        assert b.p.pending() == []
    booked = {}
    for b in validators:
        for r in b.journal:
            if r["kind"] in (record.PURCHASE, record.PURCHASE_RECOVERED):
                key = (r["card_no"], r["card_atc"])
                assert key not in booked, "booked twice"
                booked[key] = r
    debits = {
        (bytes.fromhex("0" + "31052280000000002%02d" % i), d["counter"]): d
        for i, c in enumerate(cards)
        for d in c.debits
    }
    assert set(booked) == set(debits)
    for key, d in debits.items():
        if not booked[key]["flags"] & record.FLAG_TAC_MISSING:
            assert booked[key]["tac"] == d["tac"]
