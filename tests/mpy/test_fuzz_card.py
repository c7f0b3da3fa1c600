# mpy: heapsize=256k timeout=240
# Fuzz (issue 11): card answers. The T-Union parsers (FCI/TLV, files 0x15 and 0x17, history) and
# apdu.expect on mutated valid answers, then whole taps (firmware/purchase.py) against an honest
# in-process card whose answers are garbled, cut, or lost before or after the card ran the
# command; the PSAM's answers are garbled too. Invariants: only the typed errors escape a parser,
# tap() always returns a known reason, every journaled record encodes, a purchase is journaled only
# for a debit the card made (or flagged MAC2-unverified when a garbage DEBIT answer looked like
# success), no debit is booked twice, and the same card tapped honestly afterwards is sold (or its
# torn purchase settled) normally. Seeds and counts: the `fuzz ...` lines in the output.
import sys

import mptest

sys.path.append(mptest.repo_root() + "/tools")

import apdu  # noqa: E402
import fuzzgen  # noqa: E402
import log  # noqa: E402
import memlog  # noqa: E402
import purchase  # noqa: E402
import record  # noqa: E402
import tcard_fakes  # noqa: E402
import timeutil  # noqa: E402
import tunion  # noqa: E402
from linkerr import CardGone, LinkTimeout, ProtocolError  # noqa: E402
from psam_app import PsamApp  # noqa: E402
from tcard_fakes import F17, OK, Card, Psam, f15_for, fci  # noqa: E402

NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
FARE = {"debit": 100, "route": 12, "stop": 3}
TOKENS = (b"\x90\x00", b"\x61\x10", b"\x6f\x81", b"\x9f\x0c", b"\x84\x08", b"\xa5\x81\xff")


class Damaging:
    """Passes APDUs to `inner`; the answer to the `at`-th APDU is damaged in one of several ways.
    `executed` says whether the inner device ran the damaged command."""

    MODES = ("garble", "garble", "garble", "garble_run", "gone_before", "gone_after", "timeout")

    def __init__(self, inner, rng, at, mode):
        self.inner = inner
        self.rng = rng
        self.at = at
        self.mode = mode
        self.i = 0
        self.hit = None

    def transceive(self, a):
        i = self.i
        self.i += 1
        if i != self.at:
            return self.inner.transceive(a)
        self.hit = a[1]
        m = self.mode
        if m == "gone_before":
            raise CardGone("fuzz")
        if m == "timeout":
            raise LinkTimeout("fuzz")
        if m == "garble":  # the device answered garbage and did not run the command
            good = self.inner.transceive(a) if a[1] not in (0x54, 0x70, 0x72, 0x50) else OK
            return fuzzgen.garble(self.rng, good, TOKENS)
        r = self.inner.transceive(a)
        if m == "gone_after":
            raise CardGone("fuzz")
        if self.rng.below(6) == 0:
            raise ProtocolError("fuzz")
        if a[1] == 0x54 and r[-2:] == OK:
            # A card that debited and then states an error is a lying card, which no validator
            # can book right: after the debit only the body is damaged (the frame CRC held).
            return fuzzgen.garble(self.rng, r[:-2], TOKENS) + OK
        return fuzzgen.garble(self.rng, r, TOKENS)


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()


def test_parsers_only_raise_card_data_errors():
    seed = fuzzgen.seed(0x100)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(3000)
    tally = fuzzgen.Tally()
    f15 = f15_for(1)
    good = (
        ("fci", fci(f15)),
        ("fci_long", fci(f15, tunion.AID_EP + b"\x10\x00\x91\x56")),
        ("f15", f15),
        ("f17", F17),
    )
    for i in range(n):
        what, base = good[i % len(good)]
        data = fuzzgen.garble(rng, base, TOKENS)
        try:
            if what.startswith("fci"):
                name, f = tunion.parse_fci(data, tunion.AID_EP)
                mptest.true(name[:8] == tunion.AID_EP, "FCI accepted with a foreign name")
                if f is not None:
                    tunion.parse_15(f)
            elif what == "f15":
                info = tunion.parse_15(data)
                mptest.eq(len(data), tunion.LEN_15)
                mptest.eq(len(tunion.card_number(info["card_no"])), 19)
            else:
                c = tunion.parse_17(data, {})
                mptest.true(len(c["province"]) == 2 and c["card_type"] < 256)
            tally.add(what + "_ok")
        except tunion.CardDataError:
            tally.add(what + "_refused")
    mptest.log(fuzzgen.report("card_parsers", seed, n, tally))
    mptest.true(tally.get("f15_refused") > 0 and tally.get("fci_refused") > 0)


def test_status_words_and_expect_only_raise_apdu_errors():
    seed = fuzzgen.seed(0x101)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(3000)
    tally = fuzzgen.Tally()
    bases = (OK, b"\x12\x34" + OK, bytes(15) + OK, b"\x94\x01", b"\x61\x08", bytes(8) + OK)
    for i in range(n):
        data = fuzzgen.garble(rng, bases[i % len(bases)], TOKENS)
        want = rng.choice((None, 0, 2, 8, 15))
        try:
            body = apdu.expect(data, want, "fuzz", rng.choice((None, 1)))
            mptest.eq(apdu.sw_of(data), 0x9000)
            if want is not None:
                mptest.eq(len(body), want)
            tally.add("ok")
        except apdu.ApduError as e:
            mptest.true(isinstance(str(e), str))
            tally.add("refused")
        apdu.sw_name(rng.next() & 0xFFFF)
    mptest.log(fuzzgen.report("apdu_expect", seed, n, tally))


def link_hit(p, link):
    return getattr(link, "hit", None)


def check_books(journal, cards, ctx=""):
    tcard_fakes.check_books(journal, cards, FARE["debit"], mptest.true, ctx)


def test_whole_taps_with_damaged_answers_then_an_honest_tap():
    seed = fuzzgen.seed(0x102)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(250)
    tally = fuzzgen.Tally()
    journal = []
    psam = Psam()
    p = purchase.Purchaser(PsamApp(psam), memlog.make(journal, intents=False))
    mptest.true(p.boot())
    cards = [Card(k, balance=10000000) for k in range(6)]
    for i in range(n):
        card = cards[rng.below(len(cards))]
        before = card.n_debits
        at = rng.below(8)
        mode = rng.choice(Damaging.MODES)
        if rng.below(5) == 0:  # the PSAM misbehaves instead of the card
            p.psam.link = Damaging(psam, rng, at % 4, rng.choice(("garble", "garble_run")))
            link = card
        else:
            link = Damaging(card, rng, at, mode)
        res = p.tap(link, FARE, NOW + i)
        p.psam.link = psam
        mptest.true(res.reason in purchase.REASONS, "unknown reason %r" % (res.reason,))
        tally.add(res.reason)
        if res.reason == purchase.OK and card.n_debits == before:
            mptest.true(res.record["kind"] == record.PURCHASE_RECOVERED, "sold without a debit")
        # The same card, tapped again honestly: a sale, or the torn purchase settled.
        res2 = p.tap(card, FARE, NOW + i)
        mptest.eq(
            res2.reason, purchase.OK, "honest re-tap after %s at %d: %s" % (mode, at, res2.detail)
        )
        mptest.eq(p.pending(), [], "nothing left pending after an honest tap")
        ctx = "tap %d: %s at APDU %d (ins %r): %r then %r" % (
            i,
            mode,
            at,
            link_hit(p, link),
            res,
            res2,
        )
        check_books(journal, cards, ctx)
        log.clear()
    mptest.log(fuzzgen.report("whole_tap", seed, n, tally))
    mptest.log("%d debits booked once each" % sum(c.n_debits for c in cards))
    mptest.true(tally.get(purchase.CARD_ERROR) > 0 and tally.get(purchase.TAP_AGAIN) > 0)
