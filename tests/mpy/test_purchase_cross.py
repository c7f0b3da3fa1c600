# mpy: heapsize=512k timeout=600
# The cross suite (tests/mpy/crosslib.py): power cut at flash operations of a purchase and of its
# recovery, with a card pulled before or after DEBIT or not at all, then a re-tap, another card
# first, no return, or two reboots first. No debit may be booked twice or lost. This run takes a
# sample (every operation, one tear mode per point in turn); `make bench` sweeps every tear mode
# and a second cut after every first one.
import crosslib
import log
import mptest


def setup():
    log.set_level(log.ERROR + 10, echo=False)  # quiet: cuts make errors on purpose


def test_uncut_cases_book_every_debit_once():
    for atc18 in crosslib.ATC18:
        for fault in crosslib.CARD_FAULTS:
            for then in crosslib.THEN:
                got = crosslib.run_case(fault, then, atc18=atc18)
                what = "%s %r then %s: %r" % (atc18, fault, then, got)
                mptest.eq((got["double"], got["lost"], got["unresolved"]), (0, 0, 0), what)
                mptest.true(got["ops"] >= 1, "the intent is a flash program: " + what)


def test_power_cut_sample():
    bad = []

    def note(what, got):
        if got["double"] or got["lost"] or got["unresolved"]:
            bad.append((what, got))

    points = cuts = 0
    i = 0
    for fault in crosslib.CARD_FAULTS:
        for then in crosslib.THEN:
            # the card variants take turns: each (fault, continuation) runs on one of them
            atc18 = crosslib.ATC18[i % len(crosslib.ATC18)]
            base = crosslib.run_case(fault, then, atc18=atc18)
            for k in range(base["ops"]):
                tear = crosslib.TEARS[(i + k) % len(crosslib.TEARS)]
                got = crosslib.run_case(fault, then, (k,), (tear,), k + 1, 0, atc18)
                note((atc18, fault, then, k, tear), got)
                points += 1
                cuts += got["cuts"]
            i += 1
    mptest.eq(bad[:3], [], "double bookings or lost debits")
    mptest.true(cuts >= points, "every sampled point cut the power at least once")
    mptest.log("cross sample: %d cut points, 0 double bookings, 0 lost debits" % points)


def test_a_second_cut_during_the_recovery():
    fault = ("after", 0x54)
    base = crosslib.run_case(fault, "retap", atc18="next")
    for k in range(base["ops"]):
        ops = crosslib.run_case(fault, "retap", (k,), ("clean",), atc18="next")["ops"]
        for j in range(k, ops, 2):
            got = crosslib.run_case(
                fault, "retap", (k, j), ("bits", "prefix"), k + j, atc18="next"
            )
            what = "cuts %d, %d: %r" % (k, j, got)
            mptest.eq((got["double"], got["lost"], got["unresolved"]), (0, 0, 0), what)
            mptest.true(got["cuts"] >= 1, what)


def test_a_sector_boundary_inside_the_purchase():
    # The log nearly filled a sector: the intent or the outcome opens the next one.
    for prefill in (60, 61, 62, 63):
        for fault in (None, ("after", 0x54)):
            base = crosslib.run_case(fault, "retap", prefill=prefill)
            for k in range(base["ops"]):
                got = crosslib.run_case(fault, "retap", (k,), ("prefix",), k + 7, prefill)
                what = "prefill %d %r cut %d: %r" % (prefill, fault, k, got)
                mptest.eq((got["double"], got["lost"], got["unresolved"]), (0, 0, 0), what)
