"""The firmware purchase (imported under CPython) against the virtual card and PSAM in-process.

The same modules run under MicroPython in tests/mpy/test_purchase*.py; here the simulators are
called directly, so the whole tearing matrix and hypothesis runs stay fast."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for sub in ("drivers", "firmware"):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))

import log  # noqa: E402
import pending  # noqa: E402
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
    def __init__(self, **config):
        self.psam = VirtualPsam(terminal_id="000000000042")
        self.psam_link = Link(self.psam, LinkTimeout)
        self.app = PsamApp(self.psam_link)
        self.store = pending.RamPendingStore()
        self.journal = []
        config.setdefault("journal", self.journal.append)
        self.p = purchase.Purchaser(self.app, self.store, config)
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
    assert rec == b.journal[0]
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
    assert b.p.pending() == [] and b.store.load() is None


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
