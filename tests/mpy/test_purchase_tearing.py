# mpy: heapsize=288k timeout=120 server=tools.sim.apdu_server
# Tearing: cards pulled before and after each command, re-tapped; other cards in between. The
# proof is the virtual cards' own debit lists: each debit is booked exactly once, and no ride
# is charged twice. (Power cuts at each flash operation: test_purchase_cross.py.)
import gc

import log
import memlog
import mptest
import purchase
import record
import timeutil
from apdu_link import ApduLink
from psam_app import PsamApp
from simlink import Control

NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
FLAT = {"debit": 200, "must_cover": 200}
# SELECT, READ 0x17, INITIALIZE, UPDATE CAPP 0x1E, DEBIT: every card command of a flat-fare tap
PURCHASE_INS = (0xA4, 0xB0, 0x50, 0xDC, 0x54)

ctl = None
links = {}
journal = []
state = {"n": 0}


def setup():
    global ctl
    if ctl is None:
        ctl = Control()
        links["card"] = ApduLink("card")
        links["psam"] = ApduLink("psam")
    ctl.call("reset", terminal_id="000000000042")
    journal.clear()
    log.set_level(log.INFO, echo=False)
    state["log"] = memlog.make(journal)
    state["p"] = validator(state["log"])


def teardown():
    found = ctl.call("violations")
    for label in found:
        mptest.eq(found[label], [], "violations on " + label)


def validator(txlog):
    p = purchase.Purchaser(PsamApp(links["psam"]), txlog)
    mptest.true(p.boot())
    return p


def new_card(profile="tunion_plain", variant=None):
    """A fresh card with its own number; returns its label."""
    state["n"] += 1
    label = "card%d" % state["n"]
    number = "3105228000000000%03d" % state["n"]
    over = {"card_no": number}
    ctl.call("place_card", profile=profile, label=label, overrides=over, variant=variant)
    ctl.call("remove_card")
    return label


def tap(label, p=None, now=NOW, fare=FLAT):
    ctl.call("place_card", label=label)
    return (p or state["p"]).tap(links["card"], fare, now)


def card_no(label):
    return bytes.fromhex("0" + "3105228000000000%03d" % int(label[4:]))


def exactly_once(labels, books):
    """Every debit of every card appears in exactly one booked purchase record, with its TAC;
    no intent is left open."""
    kinds = (record.PURCHASE, record.PURCHASE_RECOVERED)
    records = [r for book in books for r in book if r["kind"] in kinds]
    total = 0
    for label in labels:
        debits = ctl.call("card", label=label)["debits"]
        total += len(debits)
        mine = [r for r in records if r["card_no"] == card_no(label)]
        for d in debits:
            hits = [r for r in mine if r["card_atc"] == d["counter"]]
            mptest.eq(len(hits), 1, "%s debit %r booked once" % (label, d["counter"]))
            if not hits[0]["flags"] & record.FLAG_TAC_MISSING:
                mptest.eq(hits[0]["tac"].hex().upper(), d["tac"])
            mptest.eq(hits[0]["amount"], d["amount"])
        mptest.eq(len(mine), len(debits), "%s: no record without a debit" % label)
    mptest.eq(len(records), total, "records == debits")
    return total


def test_pulled_before_and_after_each_command_then_retap():
    cases = 0
    labels = []
    for when in ("before", "after"):
        for ins in PURCHASE_INS:
            torn = new_card()
            other = new_card("phone_tunion")
            labels += [torn, other]
            ctl.call("place_card", label=torn)
            ctl.call("fault", when=when, ins=ins)
            first = state["p"].tap(links["card"], FLAT, NOW)
            mptest.eq(first.reason, purchase.TAP_AGAIN, "%s %02X: %s" % (when, ins, first.detail))
            mptest.eq(tap(other).reason, purchase.OK, "a different card in between")
            again = tap(torn, now=NOW + 20)
            mptest.eq(again.reason, purchase.OK, "%s %02X retap: %s" % (when, ins, again.detail))
            mptest.eq(len(ctl.call("card", label=torn)["debits"]), 1, "charged once")
            recovered = again.record["kind"] == record.PURCHASE_RECOVERED
            mptest.eq(recovered, when == "after" and ins == 0x54, "recovered only if it debited")
            if recovered:
                # the card in between replaced the PSAM session: MAC2 can no longer be checked
                mptest.eq(again.record["flags"], record.FLAG_MAC2_UNVERIFIED)
            mptest.eq(state["p"].pending(), [])
            exactly_once(labels, [journal])
            cases += 1
    mptest.log("tearing matrix: %d cases, every debit booked once" % cases)


def test_pulled_during_recovery_itself():
    torn = new_card()
    ctl.call("place_card", label=torn)
    ctl.call("fault", when="after", ins=0x54)
    mptest.eq(state["p"].tap(links["card"], FLAT, NOW).reason, purchase.TAP_AGAIN)
    for when, ins in (("before", 0xB2), ("after", 0xB2), ("before", 0x5A), ("after", 0x5A)):
        ctl.call("place_card", label=torn)
        ctl.call("fault", when=when, ins=ins)
        res = state["p"].tap(links["card"], FLAT, NOW + 5)
        mptest.eq(res.reason, purchase.TAP_AGAIN, "%s %02X" % (when, ins))
        mptest.eq(len(state["p"].pending()), 1)
    res = tap(torn, now=NOW + 10)
    mptest.eq(res.reason, purchase.OK)
    mptest.eq(res.record["kind"], record.PURCHASE_RECOVERED)
    mptest.eq(res.record["flags"], 0, "no other sale in between: the PSAM verified MAC2")
    mptest.eq(exactly_once([torn], [journal]), 1)


def test_two_torn_cards_retapped_in_reverse_order():
    a = new_card()
    b = new_card("tunion_sm4")
    for label in (a, b):
        ctl.call("place_card", label=label)
        ctl.call("fault", when="after", ins=0x54)
        mptest.eq(state["p"].tap(links["card"], FLAT, NOW).reason, purchase.TAP_AGAIN)
    mptest.eq(len(state["p"].pending()), 2)
    rb = tap(b, now=NOW + 30)
    ra = tap(a, now=NOW + 40)
    mptest.eq((rb.reason, ra.reason), (purchase.OK, purchase.OK))
    # a's PSAM session was replaced by b's: its MAC2 cannot be checked any more, and says so
    mptest.eq(ra.record["flags"], record.FLAG_MAC2_UNVERIFIED)
    mptest.eq(exactly_once([a, b], [journal]), 2)


def test_torn_card_used_at_another_validator_before_returning():
    other_book = []
    elsewhere = validator(memlog.make(other_book))
    # 1: torn before DEBIT reached the card, then used elsewhere: nothing of ours happened
    c1 = new_card()
    ctl.call("place_card", label=c1)
    ctl.call("fault", when="before", ins=0x54)
    mptest.eq(state["p"].tap(links["card"], FLAT, NOW).reason, purchase.TAP_AGAIN)
    mptest.eq(tap(c1, p=elsewhere, now=NOW + 60).reason, purchase.OK)
    back = tap(c1, now=NOW + 120)
    mptest.eq(back.reason, purchase.OK)
    mptest.eq(back.record["kind"], record.PURCHASE, "the other validator's proof is not ours")
    mptest.eq([r["kind"] for r in back.extra], [record.DEBIT_VOID], "our intent: never debited")
    # 2: torn after DEBIT, used elsewhere, back: our debit is booked (TAC gone), new ride sold
    c2 = new_card()
    ctl.call("place_card", label=c2)
    ctl.call("fault", when="after", ins=0x54)
    mptest.eq(state["p"].tap(links["card"], FLAT, NOW).reason, purchase.TAP_AGAIN)
    mptest.eq(tap(c2, p=elsewhere, now=NOW + 60).reason, purchase.OK)
    back = tap(c2, now=NOW + 120)
    mptest.eq(back.reason, purchase.OK)
    mptest.eq(len(back.extra), 1)
    mptest.eq(back.extra[0]["flags"] & record.FLAG_TAC_MISSING, record.FLAG_TAC_MISSING)
    mptest.eq(exactly_once([c1, c2], [journal, other_book]), 5)


def test_late_retap_books_the_old_ride_and_sells_a_new_one():
    c = new_card()
    ctl.call("place_card", label=c)
    ctl.call("fault", when="after", ins=0x54)
    mptest.eq(state["p"].tap(links["card"], FLAT, NOW).reason, purchase.TAP_AGAIN)
    res = tap(c, now=NOW + 3600)
    mptest.eq(res.reason, purchase.OK)
    mptest.eq(res.record["kind"], record.PURCHASE)
    mptest.eq(res.extra[0]["kind"], record.PURCHASE_RECOVERED)
    mptest.eq(exactly_once([c], [journal]), 2)


def test_unconfirmed_debit_survives_a_restart_and_psam_silence_sells_nothing():
    c = new_card()
    ctl.call("place_card", label=c)
    ctl.call("fault", when="after", ins=0x54)
    mptest.eq(state["p"].tap(links["card"], FLAT, NOW).reason, purchase.TAP_AGAIN)
    mptest.eq([r["kind"] for r in journal], [record.DEBIT_INTENT], "intent before DEBIT")
    rebooted = validator(state["log"])  # same log, new process state
    mptest.eq(len(rebooted.pending()), 1)
    res = tap(c, p=rebooted, now=NOW + 30)
    mptest.eq(res.reason, purchase.OK)
    mptest.eq(res.record["flags"], record.FLAG_MAC2_UNVERIFIED, "the rebooted PSAM lost it")
    mptest.eq(rebooted.pending(), [])
    # PSAM silent at 8070: nothing is sold, nothing is pending, the next tap works
    ctl.call("psam_mute", n=1)
    c2 = new_card()
    res = tap(c2)
    mptest.eq(res.reason, purchase.PSAM_ERROR, "muted at 8070: nothing sold")
    mptest.eq(rebooted.pending(), [])
    res = tap(c2, p=rebooted)
    mptest.eq(res.reason, purchase.OK)
    mptest.eq(exactly_once([c, c2], [journal]), 2)


def test_never_debited_intent_is_closed_void_and_the_ride_sold():
    c = new_card()
    ctl.call("place_card", label=c)
    ctl.call("fault", when="before", ins=0x54)
    mptest.eq(state["p"].tap(links["card"], FLAT, NOW).reason, purchase.TAP_AGAIN)
    res = tap(c, now=NOW + 20)
    mptest.eq(res.reason, purchase.OK)
    kinds = [r["kind"] for r in journal]
    want = [record.DEBIT_INTENT, record.DEBIT_VOID, record.DEBIT_INTENT, record.PURCHASE]
    mptest.eq(kinds, want)
    mptest.eq(journal[1]["reason"], purchase.VOID_NOT_IN_HISTORY)
    # the card never executed the first DEBIT: the new sale reuses its counter
    mptest.eq(journal[0]["card_atc"], journal[3]["card_atc"])
    mptest.eq(res.extra[0]["kind"], record.DEBIT_VOID)
    mptest.eq(exactly_once([c], [journal]), 1)


def test_history_out_of_reach_keeps_the_intent_open_and_sells():
    c = new_card()
    ctl.call("place_card", label=c)
    ctl.call("fault", when="after", ins=0x54)
    mptest.eq(state["p"].tap(links["card"], FLAT, NOW).reason, purchase.TAP_AGAIN)
    elsewhere = validator(memlog.make([]))
    for i in range(10):  # ten rides elsewhere push our debit out of the card's 0x18 history
        mptest.eq(tap(c, p=elsewhere, now=NOW + 60 + i).reason, purchase.OK)
    log.clear()
    res = tap(c, now=NOW + 600)
    mptest.eq(res.reason, purchase.OK, "a new ride is sold")
    mptest.true(log.find("unconfirmed debit stays open", log.ERROR))
    open_ = state["p"].pending()
    mptest.eq(len(open_), 1, "nothing deletes an unconfirmed debit")
    mptest.eq(open_[0]["card_atc"], journal[0]["card_atc"])
    n0 = links["card"].count
    res = tap(c, now=NOW + 700)
    mptest.eq(res.reason, purchase.OK)
    mptest.eq(links["card"].count - n0, 5, "the history is not read again in this run")
    mptest.eq(len(state["p"].pending()), 1)
    debits = ctl.call("card", label=c)["debits"]
    mptest.eq(len(debits), 13, "ours, ten elsewhere, two new rides")


def test_every_card_variant_torn_at_every_command():
    # Each card variant (tools/sim/card.py VARIANTS: 0x18 counter convention, strict cache order,
    # INIT balance without the allowance, SM4 identifier, 61xx/6Cxx chaining, FCI without 9F0C,
    # slow) pulled before and after each command of its tap, and EEPROM-torn at DEBIT with the
    # write applied or not; a different card in between every other time. The whole matrix on
    # every profile: tests/host/test_card_variants.py and `make bench`.
    points = 0
    variants = ctl.call("variants")
    for i in range(len(variants)):
        variant = variants[i]
        profile = ("tunion_plain", "social_security", "tunion_sm4")[i % 3]
        # the tests' copy of the records holds one variant's at a time (a small heap); the
        # log itself makes room as a back office would acknowledge (memlog)
        journal.clear()
        gc.collect()
        mine = []
        probe = new_card(profile, variant)
        mptest.eq(tap(probe).reason, purchase.OK, variant)
        n = ctl.call("card", label=probe)["commands"]
        mine.append(probe)
        faults = [("before", k) for k in range(n)] + [("after", k) for k in range(n)]
        faults += [("write", sw, applied) for sw in ("6581", "9406") for applied in (1, 0)]
        for f in faults:
            torn = new_card(profile, variant)
            mine.append(torn)
            ctl.call("place_card", label=torn)
            if f[0] == "write":
                ctl.call("write_fault", ins=0x54, sw=f[1], applied=bool(f[2]))
            else:
                ctl.call("fault", when=f[0], index=f[1])
            first = state["p"].tap(links["card"], FLAT, NOW)
            mptest.eq(first.reason, purchase.TAP_AGAIN, "%s %r: %s" % (variant, f, first.detail))
            if points % 2:
                other = new_card("phone_tunion")
                mine.append(other)
                mptest.eq(tap(other).reason, purchase.OK, "a different card in between")
            again = tap(torn, now=NOW + 20)
            mptest.eq(again.reason, purchase.OK, "%s %r retap: %s" % (variant, f, again.detail))
            mptest.eq(len(ctl.call("card", label=torn)["debits"]), 1, "charged once")
            mptest.eq(state["p"].pending(), [])
            points += 1
        exactly_once(mine, [journal])
        # the blacklist lock on this variant: no INIT, the card locked, its balance untouched
        black = new_card(profile, variant)
        mine.append(black)
        before = ctl.call("place_card", label=black)["balance"]
        res = state["p"].tap(links["card"], {"lock": True}, NOW)
        mptest.eq(
            res.record["flags"], purchase.FLAG_APP_LOCKED, "%s lock: %s" % (variant, res.detail)
        )
        c = ctl.call("card", label=black)
        mptest.eq((c["lock"], c["balance"], c["debits"]), ("temporary", before, []), variant)
        sent = [a["apdu"][2:4] for a in ctl.call("audit", label=black) if "apdu" in a]
        mptest.false("50" in sent, "no INITIALIZE before the lock")
        for label in mine:  # the audit, card by card (the whole world's answer is too big here)
            mptest.eq(ctl.call("card", label=label)["violations"], [], "violations on " + label)
    ctl.call("reset", terminal_id="000000000042")
    journal.clear()
    gc.collect()
    mptest.log("%d variants, %d torn taps: every debit booked once" % (len(variants), points))
