"""The purchase on every card variant (tools/sim/card.py VARIANTS) and every T-Union profile:
clean sales, the tearing matrix (pulled before and after every command, EEPROM tearing with the
write applied or not, then a re-tap with nothing, another card or another validator in between),
the real-balance rule and the blacklist lock. The firmware modules run under CPython here against
the simulators in-process (tests/mpy/test_purchase_tearing.py runs a share of it under
MicroPython through the hub; `make bench` counts the MicroPython sweep).

The proof is the cards' own debit lists: every debit booked exactly once (with its TAC), no
booking without a debit, no ride charged twice, no intent left open once the card came back, and
refused cards' balances untouched. The conftest fails any test whose cards saw an APDU to another
application or a read of SFI 0x16."""

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

from tools.sim.card import VARIANTS, VirtualCard  # noqa: E402
from tools.sim.psam import VirtualPsam  # noqa: E402

log.set_level(log.ERROR + 10, echo=False)
NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
FLAT = {"debit": 100, "must_cover": 100}
# every profile with the transit application; the overdraft one sells 1.00 (real balance 1.50)
PROFILES = (
    "tunion_plain",
    "social_security",
    "phone_tunion",
    "tunion_sm4",
    "tunion_overdraft",
    "tunion_local_only",
)
# EEPROM tearing during DEBIT: memory failure, 9406, or power lost; the write applied or not
WRITE_FAULTS = [(sw, applied) for sw in (0x6581, 0x9406, None) for applied in (True, False)]
BETWEEN = ("none", "other", "elsewhere")


class Link:
    def __init__(self, dev, gone=CardGone):
        self.dev = dev
        self.gone = gone
        self.count = 0

    def transceive(self, apdu):
        self.count += 1
        resp = self.dev.exchange(apdu)
        if resp is None:
            raise self.gone("no answer")
        return resp


class Validator:
    def __init__(self, tid, **config):
        self.tid = bytes.fromhex(tid)
        self.psam = VirtualPsam(terminal_id=tid)
        self.book = []
        self.log = memlog.make(self.book, inner=memlog.ram())
        self.p = purchase.Purchaser(PsamApp(Link(self.psam, LinkTimeout)), self.log, config)
        assert self.p.boot()
        self.sold = {}  # card label -> rides this validator said OK to

    def tap(self, card, fare=FLAT, now=NOW):
        card.place()
        link = Link(card)
        res = self.p.tap(link, fare, now)
        self.apdus = link.count
        # rides: this tap's, and torn ones booked as earlier rides (the card was used elsewhere
        # since, or came back late: docs/purchase.md, settling step 3)
        rides = sum(1 for e in res.extra if e["kind"] == record.PURCHASE_RECOVERED)
        if res.reason == purchase.OK:
            rides += 1
        self.sold[card.label] = self.sold.get(card.label, 0) + rides
        return res


class World:
    def __init__(self, **config):
        self.here = Validator("000000000042", **config)
        self.there = Validator("000000000077")
        self.cards = []
        self.t = NOW

    def card(self, profile, variant, matrix=False, **overrides):
        n = len(self.cards) + 1
        overrides.setdefault("card_no", "31052280000%08d" % n)
        if matrix and profile == "tunion_overdraft":
            overrides.setdefault("balance", 450)  # room for the rides of a matrix point
        c = VirtualCard.from_profile(profile, variant=variant, **overrides)
        c.label = "%s/%s/%d" % (profile, variant, n)
        c.remove()
        self.cards.append(c)
        return c

    def tap(self, v, card, fare=FLAT):
        self.t += 11
        return v.tap(card, fare, self.t)

    def audit(self):
        """-> (double charges, lost debits, phantom bookings, open intents) over every card."""
        double = lost = phantom = 0
        books = self.here.book + self.there.book
        money = [r for r in books if r["kind"] in (record.PURCHASE, record.PURCHASE_RECOVERED)]
        for c in self.cards:
            no = bytes.fromhex("0" + c.tu["serial"].hex()[1:])
            mine = [r for r in money if r["card_no"] == no]
            for d in c.debits:
                hits = [r for r in mine if r["card_atc"] == d["counter"]]
                if len(hits) != 1:
                    lost += 1
                elif not hits[0]["flags"] & record.FLAG_TAC_MISSING:
                    assert hits[0]["tac"] == d["tac"], c.label
                    assert hits[0]["amount"] == d["amount"], c.label
            counters = [d["counter"] for d in c.debits]
            phantom += sum(1 for r in mine if r["card_atc"] not in counters)
            for v in (self.here, self.there):
                ours = [d for d in c.debits if d["terminal"] == v.tid]
                double += max(0, len(ours) - v.sold.get(c.label, 0))
        opened = len(self.here.p.pending()) + len(self.there.p.pending())
        return double, lost, phantom, opened


def clean_tap_commands(profile, variant, fare=FLAT, **config):
    """The INS of every card command of a clean tap (so the matrix pulls at each of them)."""
    w = World(**config)
    c = w.card(profile, variant)
    res = w.tap(w.here, c, fare)
    assert res.reason == purchase.OK, (profile, variant, res)
    return [a["apdu"][1] for a in c.audit if "apdu" in a]


def run_point(profile, variant, fault, between, fare=FLAT, **config):
    """One matrix point: a tap torn by `fault`, something in between, re-taps until OK."""
    w = World(**config)
    torn = w.card(profile, variant, matrix=True)
    kind = fault[0]
    if kind == "write":
        torn.fail_write(ins=fault[1], status=fault[2], applied=fault[3])
    else:
        getattr(torn, "fail_" + kind)(ins=fault[1], index=fault[2])
    balance0 = torn.balance
    first = w.tap(w.here, torn, fare)
    if between == "other":
        assert w.tap(w.here, w.card("phone_tunion", "default")).reason == purchase.OK
    elif between == "elsewhere":
        got = w.tap(w.there, torn, fare)
        assert got.reason == purchase.OK, (profile, variant, fault, got)
    for _ in range(3):
        res = w.tap(w.here, torn, fare)
        if res.reason == purchase.OK:
            break
    assert res.reason == purchase.OK, (profile, variant, fault, between, first, res)
    double, lost, phantom, opened = w.audit()
    what = (profile, variant, fault, between, first.reason, res.reason)
    assert (double, lost, phantom, opened) == (0, 0, 0, 0), what
    # what the validators said they sold is what the card paid, no more, no less
    rides = sum(v.sold.get(torn.label, 0) for v in (w.here, w.there))
    assert len(torn.debits) == rides, what
    assert balance0 - torn.balance == sum(d["amount"] for d in torn.debits), what
    return 1


def faults_for(commands):
    """Pull before and after each command of the tap (by its index: the same INS may come
    twice), and EEPROM tearing at DEBIT."""
    out = []
    for i, _ins in enumerate(commands):
        out.append(("before", None, i))
        out.append(("after", None, i))
    out += [("write", 0x54, sw, applied) for sw, applied in WRITE_FAULTS]
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_clean_sale_on_every_profile(variant):
    for profile in PROFILES:
        w = World()
        c = w.card(profile, variant)
        res = w.tap(w.here, c)
        assert res.reason == purchase.OK, (profile, variant, res)
        assert len(c.debits) == 1 and res.record["flags"] == 0
        assert res.balance_after == c.balance, (profile, variant)
        # INIT, 1E, DEBIT, SELECT, 0x17 (+0x15 without 9F0C, +3 with an overdraft allowance,
        # +1 GET RESPONSE per answer with data under 61xx, +1 resent command under 6Cxx)
        assert 5 <= w.here.apdus <= 17, (profile, variant, w.here.apdus)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tearing_matrix_on_every_variant(variant):
    points = 0
    for profile in PROFILES:
        commands = clean_tap_commands(profile, variant)
        for fault in faults_for(commands):
            for between in BETWEEN:
                points += run_point(profile, variant, fault, between)
    assert points >= 100


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bus_fare_with_the_1a_record_on_every_variant(variant):
    """The 2702 record (0x1A then 0x1E, TULAB's order) torn at each command."""
    fare = {
        "debit": 150,
        "must_cover": 150,
        "txn_type": 0x03,
        "bus_1a": {"status": 1, "marked": 300, "vehicle": b"B1234", "direction": 0xAB},
    }
    cfg = {"read_1a": 0x2702}
    for profile in ("tunion_plain", "social_security"):
        commands = clean_tap_commands(profile, variant, fare, **cfg)
        assert commands.count(0xDC) == 2
        for fault in faults_for(commands)[:: 3 if variant != "cache_1a_then_1e" else 1]:
            run_point(profile, variant, fault, "none", fare, **cfg)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_recovery_torn_again_on_every_variant(variant):
    """After a tear after DEBIT, the recovery itself is torn at each of its commands."""
    for profile in ("tunion_plain", "tunion_sm4"):
        w = World()
        probe = w.card(profile, variant)
        probe.fail_after(ins=0x54)
        assert w.tap(w.here, probe).reason == purchase.TAP_AGAIN
        n0 = len([a for a in probe.audit if "apdu" in a])
        assert w.tap(w.here, probe).reason == purchase.OK
        steps = len([a for a in probe.audit if "apdu" in a]) - n0
        for k in range(steps):
            for when in ("before", "after"):
                w = World()
                c = w.card(profile, variant)
                c.fail_after(ins=0x54)
                assert w.tap(w.here, c).reason == purchase.TAP_AGAIN
                getattr(c, "fail_" + when)(index=k)
                w.tap(w.here, c)
                res = w.tap(w.here, c)
                assert res.reason == purchase.OK, (profile, variant, k, when, res)
                assert w.audit() == (0, 0, 0, 0), (profile, variant, k, when)
                assert len(c.debits) == w.here.sold[c.label]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_real_balance_rule_with_and_without_the_allowance_in_init(variant):
    # real 1.50 with a 10.00 allowance: 2.00 is refused though the card would take it
    w = World()
    c = w.card("tunion_overdraft", variant)
    assert w.tap(w.here, c, {"debit": 200, "must_cover": 200}).reason == purchase.INSUFFICIENT
    assert c.debits == [] and c.balance == 150
    res = w.tap(w.here, c, {"debit": 150, "must_cover": 150})
    assert res.reason == purchase.OK, res
    assert c.balance == 0 and c.tu["used_overdraft"] == 0 and res.balance_after == 0
    # overdraft in use: refused whatever the INIT balance shows
    u = w.card("tunion_used_overdraft", variant)
    res = w.tap(w.here, u, {"debit": 1, "must_cover": 1})
    assert res.reason == purchase.INSUFFICIENT and u.debits == [] and u.balance == 0
    # no allowance: INIT alone decides, no extra APDU
    p = w.card("tunion_plain", variant, balance=99)
    assert w.tap(w.here, p).reason == purchase.INSUFFICIENT and p.debits == []
    assert p.balance == 99
    assert not any(a["apdu"][1] == 0x5C for a in p.audit if "apdu" in a)


def test_real_balance_costs_three_apdus_only_with_an_allowance():
    for init_balance in ("available", "real"):
        variant = {"init_balance": init_balance}
        w = World()
        plain = w.card("tunion_plain", variant)
        assert w.tap(w.here, plain).reason == purchase.OK
        assert w.here.apdus == 5
        od = w.card("tunion_overdraft", variant)
        assert w.tap(w.here, od).reason == purchase.OK
        sent = [a["apdu"][:3].hex() for a in od.audit if "apdu" in a]
        assert sent == [
            "00a404",
            "00b097",
            "805003",
            "805c03",
            "805c02",
            "805003",
            "80dc00",
            "805401",
        ]
        refused = w.card("tunion_used_overdraft", variant)
        assert w.tap(w.here, refused).reason == purchase.INSUFFICIENT
        assert w.here.apdus == 5  # SELECT, 0x17, INIT, 805C 03, 805C 02: no second INIT


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lock_on_every_variant_and_profile_without_init(variant):
    for profile in PROFILES:
        w = World()
        c = w.card(profile, variant)
        balance = c.balance
        res = w.tap(w.here, c, {"lock": True})
        assert res.reason == purchase.BLACKLISTED
        assert res.record["flags"] == purchase.FLAG_APP_LOCKED, (profile, variant, res.detail)
        assert c.tu["lock"] == "temporary" and c.debits == [] and c.balance == balance
        assert not any(a["apdu"][1] == 0x50 for a in c.audit if "apdu" in a), "no INIT"
        assert w.tap(w.here, c).reason == purchase.LOCKED
        assert c.balance == balance


def test_lock_torn_leaves_the_balance_untouched_and_locks_on_the_next_tap():
    for variant in ("default", "all_strict"):
        for profile in ("tunion_plain", "social_security", "tunion_sm4"):
            commands = None
            w = World()
            probe = w.card(profile, variant)
            w.tap(w.here, probe, {"lock": True})
            commands = [a for a in probe.audit if "apdu" in a]
            for k in range(len(commands)):
                for when in ("before", "after"):
                    w = World()
                    c = w.card(profile, variant)
                    balance = c.balance
                    getattr(c, "fail_" + when)(index=k)
                    w.tap(w.here, c, {"lock": True})
                    res = w.tap(w.here, c, {"lock": True})
                    assert res.reason in (purchase.BLACKLISTED, purchase.LOCKED), res
                    assert c.tu["lock"] == "temporary", (profile, variant, k, when, res)
                    assert c.debits == [] and c.balance == balance


def test_the_0x18_counter_convention_is_what_the_variant_says():
    for atc18, want in (("init", 10), ("next", 11)):
        w = World()
        c = w.card("tunion_plain", {"atc18": atc18})
        assert w.tap(w.here, c).reason == purchase.OK
        assert int.from_bytes(c.tu["rec18"][0][0:2], "big") == want
        assert c.debits[0]["counter"] == 10


def test_strict_cache_order_refuses_1a_after_1e():
    c = VirtualCard.from_profile("tunion_plain", variant="cache_1a_then_1e")
    c.exchange(bytes.fromhex("00A4040008A00000063201010500"))
    init = bytes.fromhex("805003020B0100000064000000000042") + b"\x0f"
    assert c.exchange(init)[-2:] == b"\x90\x00"
    assert c.exchange(bytes.fromhex("80DC00F030") + bytes(48)) == b"\x90\x00"
    rec = c.record_1a(0x2702)
    assert c.exchange(bytes.fromhex("80DC02D080") + rec) == b"\x69\x85"


def test_chaining_variants_answer_61xx_and_6cxx():
    c = VirtualCard.from_profile("tunion_plain", variant="chain_61xx")
    r = c.exchange(bytes.fromhex("00A4040008A00000063201010500"))
    assert r[0] == 0x61
    fci = c.exchange(bytes([0x00, 0xC0, 0x00, 0x00, r[1]]))
    assert fci[-2:] == b"\x90\x00" and len(fci) == r[1] + 2
    assert c.exchange(bytes.fromhex("00C0000010")) == b"\x69\x85"  # nothing waiting any more
    c = VirtualCard.from_profile("tunion_plain", variant="chain_6cxx")
    r = c.exchange(bytes.fromhex("00A4040008A00000063201010500"))
    assert r[0] == 0x6C
    again = c.exchange(bytes.fromhex("00A4040008A000000632010105") + bytes([r[1]]))
    assert again[-2:] == b"\x90\x00"
    c.exchange(bytes.fromhex("00A4040008A00000063201010500"))
    assert c.exchange(bytes.fromhex("00B097000B"))[0] == 0x6C  # 11 of a 60-byte file


def test_fci_without_9f0c_costs_one_read_of_0x15():
    w = World()
    c = w.card("tunion_plain", "fci_without_9f0c")
    assert w.tap(w.here, c).reason == purchase.OK
    reads = [a["apdu"][2] for a in c.audit if "apdu" in a and a["apdu"][1] == 0xB0]
    assert reads == [0x95, 0x97]


def test_eeprom_tearing_applied_or_not():
    for applied in (True, False):
        c = VirtualCard.from_profile("tunion_plain")
        c.fail_write(ins=0x54, status=0x6581, applied=applied)
        w = World()
        w.cards.append(c)
        c.label = "x"
        res = w.tap(w.here, c)
        assert res.reason == purchase.TAP_AGAIN and len(w.here.p.pending()) == 1
        assert len(c.debits) == (1 if applied else 0)
        res = w.tap(w.here, c)
        assert res.reason == purchase.OK
        kinds = [r["kind"] for r in w.here.book]
        if applied:
            assert kinds == [record.DEBIT_INTENT, record.PURCHASE_RECOVERED]
        else:
            assert kinds == [
                record.DEBIT_INTENT,
                record.DEBIT_VOID,
                record.DEBIT_INTENT,
                record.PURCHASE,
            ]
        assert len(c.debits) == 1 and w.audit() == (0, 0, 0, 0)


def test_slow_variant_slows_the_picc():
    from tools.sim.picc import Picc

    fast = Picc(VirtualCard.from_profile("tunion_plain"))
    slow = Picc(VirtualCard.from_profile("tunion_plain", variant="slow_x3"))
    assert slow.processing_us == 3 * fast.processing_us


def test_unknown_variant_values_are_refused():
    with pytest.raises(ValueError):
        VirtualCard.from_profile("tunion_plain", variant={"atc18": "sometimes"})
    with pytest.raises(ValueError):
        VirtualCard.from_profile("tunion_plain", variant="no_such_variant")
