# mpy: heapsize=256k timeout=120
# The fare engine under MicroPython: each mode, concessions, time-of-day, transfer windows at
# their edges, duplicate taps, no overdraft in each mode, the sanity cap and bad input.
import fare
import log
import mptest
import timeutil

log.set_level(log.DEBUG, echo=False)

TERM = bytes.fromhex("0000112233445566")
OTHER_TERM = bytes.fromhex("0000998877665544")
TZ = 8 * 3600
# Monday 2026-11-30, local times
MON_0630 = timeutil.to_seconds(2026, 11, 30, 6, 30) - TZ
MON_1200 = timeutil.to_seconds(2026, 11, 30, 12, 0) - TZ
SAT_0630 = timeutil.to_seconds(2026, 11, 28, 6, 30) - TZ

CFG = {
    "settings": {"dup_tap_s": 60, "max_fare": 2000, "tz_s": TZ},
    "fares": {
        "rail_max_fare": 700,
        "card_types": {
            "1": {"name": "regular"},
            "2": {"name": "student", "local_pct": 50, "nonlocal_pct": 100},
            "3": {"name": "elderly", "local_pct": 50, "nonlocal_pct": 50},
            "4": {"name": "elderly free", "local_pct": 0, "nonlocal_pct": 100, "dup_tap_s": 300},
            "6": {"name": "staff", "local_pct": 0, "transfer": False},
            "7": {"name": "driver", "local_pct": 0, "dup_tap_s": 0},
            "8": {"name": "test", "accept": False},
        },
        "routes": {
            "101": {"mode": "flat", "fare": 200},
            "102": {"mode": "flat", "fare": 150, "rule": 21},
            "103": {"mode": "flat", "fare": 2500},
            "301": {
                "mode": "stage",
                "stages": [0, 0, 1, 1, 2, 2, 3, 3],
                "fares": [100, 200, 300, 400],
                "max_trip_s": 7200,
            },
            "1": {"mode": "rail", "stages": [0, 1, 2, 3], "fares": [300, 400, 500, 600]},
        },
        "time_rules": [
            {"id": 91, "start": "05:00", "end": "07:00", "pct": 50, "days": [1, 2, 3, 4, 5]},
            {"id": 92, "start": "23:00", "end": "01:00", "fare": 300, "routes": [101]},
        ],
        "transfer": {
            "window_s": 5400,
            "max_count": 2,
            "first_off": 100,
            "later_off": 50,
            "industries": [1, 2],
        },
    },
}


def engine(cfg=CFG):
    return fare.from_config(cfg, TERM)


def rec(typ, when, route, stop=0, industry=2, terminal=OTHER_TERM, amount=200):
    """A 48-byte 0x1E record as the card keeps it (QT-TOOL, JTB-H)."""
    b = bytearray(48)
    b[0] = typ
    b[1:9] = terminal
    b[9] = industry
    b[10:12] = bytes((route >> 8, route & 0xFF))
    b[12:14] = bytes((stop >> 8, stop & 0xFF))
    b[17:21] = amount.to_bytes(4, "big")
    b[25:32] = timeutil.bcd_datetime(when, TZ)
    return bytes(b)


def card(card_type=1, records=(), card_no="3104991585000011383"):
    return {"card_no": card_no, "card_type": card_type, "records": list(records)}


def _ok(res, debit, must_cover=None):
    mptest.eq(res.status, fare.OK, repr(res))
    mptest.eq(res.debit, debit, "debit " + repr(res))
    mptest.eq(res.must_cover, debit if must_cover is None else must_cover, "cover " + repr(res))


# ---- flat -------------------------------------------------------------------------------


def test_flat_fare_regular_card():
    res = engine().compute(card(), 101, 3, MON_1200)
    _ok(res, 200)
    mptest.eq(res.txn_type, fare.TXN_SINGLE)
    mptest.eq((res.route, res.stop, res.fare_rule, res.discount, res.base), (101, 3, 0, 0, 200))
    res = engine().compute(card(), 102, 0, MON_1200)
    _ok(res, 150)
    mptest.eq(res.fare_rule, 21, "a route's own rule id")


def test_request_carries_the_names_the_purchase_reads():
    res = engine().compute(card(2), 301, 1, MON_1200)
    req = res.request()
    for name in ("debit", "must_cover", "txn_type", "route", "stop", "fare_rule", "discount"):
        mptest.eq(req[name], getattr(res, name), name)
    mptest.eq((req["marked"], req["board_stop"], req["board_time"]), (200, 1, MON_1200))
    mptest.eq(req["industry"], fare.IND_BUS)


def test_a_result_refilled_into_is_the_same_as_a_new_one():
    # The Decider refills one FareResult per tap (compute(into=...)): nothing of the previous
    # decision may survive in it, and a refusal is a new result that leaves it alone.
    e = engine()
    now = MON_1200
    mine = fare.FareResult(fare.OK)
    cases = (
        (card(records=[rec(6, now - 5400, 102)]), 101, 0),  # a transfer: discount, transfer 1
        (card(2), 301, 1),  # a stage boarding: marked amount, board stop and time
        (card(), 101, 3),  # a plain flat fare after them
    )
    for c, route, stop in cases:
        want = e.compute(c, route, stop, now)
        got = e.compute(c, route, stop, now, into=mine)
        mptest.true(got is mine, "refilled, not a new one")
        mptest.eq(repr(got), repr(want))
        mptest.eq(got.request(), want.request())
        mptest.eq(
            (got.transfer, got.base, got.penalty, got.card_type, got.local, got.reason),
            (want.transfer, want.base, want.penalty, want.card_type, want.local, want.reason),
        )
    refused = e.compute(card(8), 101, 3, now, into=mine)
    mptest.eq(refused.status, fare.REFUSED)
    mptest.false(refused is mine, "a refusal is a result of its own")
    mptest.eq((mine.status, mine.debit, mine.stop), (fare.OK, 200, 3))


def test_records_wanted_per_route():
    e = engine()
    mptest.eq(e.records_wanted(101), 3, "max_count 2: two earlier rides and one more to end")
    mptest.eq(e.records_wanted(301), 4, "stage: the open boarding too")
    cfg = dict(CFG)
    cfg["fares"] = dict(CFG["fares"])
    del cfg["fares"]["transfer"]
    e = engine(cfg)
    mptest.eq((e.records_wanted(101), e.records_wanted(301), e.records_wanted(9)), (0, 1, 0))


def test_concessions_local_and_non_local():
    e = engine()
    cases = (
        (2, True, 100),
        (2, False, 200),  # this city's student fare is for its own cards
        (3, True, 100),
        (3, False, 100),
        (4, True, 0),
        (4, False, 200),
        (6, True, 0),
        (99, True, 200),  # no entry and no default: refused below
    )
    for ct, local, want in cases[:-1]:
        res = e.compute(card(ct), 101, 0, MON_1200, local=local)
        _ok(res, want)
        mptest.eq(res.discount, 200 - want)
        mptest.eq(res.local, local)
    res = e.compute(card(99), 101, 0, MON_1200)
    mptest.eq((res.status, res.reason), (fare.REFUSED, "card type not accepted"))
    cfg = dict(CFG)
    cfg["fares"] = dict(CFG["fares"])
    cfg["fares"]["card_types"] = dict(CFG["fares"]["card_types"])
    cfg["fares"]["card_types"]["default"] = {"local_pct": 80}
    _ok(engine(cfg).compute(card(99), 101, 0, MON_1200), 160)


def test_refused_card_types_and_bad_type():
    e = engine()
    res = e.compute(card(8), 101, 0, MON_1200)
    mptest.eq((res.status, res.debit), (fare.REFUSED, 0))
    log.clear()
    res = e.compute(card(None), 101, 0, MON_1200)
    mptest.eq((res.status, res.reason), (fare.REFUSED, "bad card type"))
    mptest.true(log.find("card type"))


def test_unknown_route_is_refused_and_logged():
    log.clear()
    res = engine().compute(card(), 555, 0, MON_1200)
    mptest.eq((res.status, res.reason), (fare.REFUSED, "route not in fare table"))
    mptest.true(log.find("route 555", log.ERROR))


# ---- time of day ------------------------------------------------------------------------


def test_time_of_day_rule_edges():
    e = engine()
    res = e.compute(card(), 101, 0, MON_0630)
    _ok(res, 100)
    mptest.eq((res.fare_rule, res.discount), (91, 100))
    at_start = timeutil.to_seconds(2026, 11, 30, 5, 0) - TZ
    _ok(e.compute(card(), 101, 0, at_start), 100)
    _ok(e.compute(card(), 101, 0, at_start - 1), 200)
    at_end = timeutil.to_seconds(2026, 11, 30, 7, 0) - TZ
    _ok(e.compute(card(), 101, 0, at_end), 200)  # the end is exclusive
    _ok(e.compute(card(), 101, 0, SAT_0630), 200)  # weekdays only
    # the student concession applies on top of the time rule
    _ok(e.compute(card(2), 101, 0, MON_0630), 50)


def test_time_rule_across_midnight_with_fixed_fare():
    e = engine()
    late = timeutil.to_seconds(2026, 11, 30, 23, 30) - TZ
    early = timeutil.to_seconds(2026, 12, 1, 0, 59, 59) - TZ
    res = e.compute(card(), 101, 0, late)
    _ok(res, 300)
    mptest.eq(res.fare_rule, 92)
    _ok(e.compute(card(), 101, 0, early), 300)
    _ok(e.compute(card(), 101, 0, early + 1), 200)
    _ok(e.compute(card(), 102, 0, late), 150, None)  # the rule is for route 101 only


# ---- transfers ----------------------------------------------------------------------------


def test_first_transfer_window_edges():
    e = engine()
    now = MON_1200
    res = e.compute(card(records=[rec(6, now - 5400, 102)]), 101, 0, now)
    _ok(res, 100)
    mptest.eq((res.transfer, res.discount), (1, 100))
    res = e.compute(card(records=[rec(6, now - 5401, 102)]), 101, 0, now)
    _ok(res, 200)
    mptest.eq(res.transfer, 0)


def test_later_transfers_and_max_count():
    e = engine()
    now = MON_1200
    two = [rec(6, now - 600, 102), rec(6, now - 3000, 1, industry=1)]
    res = e.compute(card(records=two), 101, 0, now)
    _ok(res, 150)
    mptest.eq(res.transfer, 2)
    three = two + [rec(6, now - 6000, 101)]  # each link within 90 minutes of the previous
    res = e.compute(card(records=three), 102, 0, now)
    _ok(res, 150)
    mptest.eq(res.transfer, 0, "beyond max_count: no discount")
    # a gap above the window breaks the chain
    gap = [rec(6, now - 600, 102), rec(6, now - 600 - 5401, 1, industry=1)]
    mptest.eq(e.compute(card(records=gap), 101, 0, now).transfer, 1)


def test_no_transfer_on_same_route_other_industry_or_future_record():
    e = engine()
    now = MON_1200
    _ok(e.compute(card(records=[rec(6, now - 60 * 10, 101)]), 101, 0, now), 200)
    _ok(e.compute(card(records=[rec(6, now - 600, 102, industry=4)]), 101, 0, now), 200)
    _ok(e.compute(card(records=[rec(6, now + 600, 102)]), 101, 0, now), 200)
    # load records (0x0A) and alighting records (0x04) are not rides
    _ok(e.compute(card(records=[rec(0x0A, now - 600, 102)]), 101, 0, now), 200)


def test_transfer_from_first_ride_and_concession_rules():
    cfg = dict(CFG)
    cfg["fares"] = dict(CFG["fares"])
    tr = dict(CFG["fares"]["transfer"])
    tr["from"] = "first"
    tr["nonlocal"] = False
    cfg["fares"]["transfer"] = tr
    e = engine(cfg)
    now = MON_1200
    rides = [rec(6, now - 1000, 102), rec(6, now - 5401, 1, industry=1)]
    res = e.compute(card(records=rides), 101, 0, now)
    mptest.eq(res.transfer, 1, "the ride 5401 s ago is outside a window counted from it")
    _ok(e.compute(card(records=rides), 101, 0, now, local=False), 200)
    _ok(engine().compute(card(6, records=rides), 101, 0, now), 0)  # staff: free anyway
    res = engine().compute(card(6, records=rides), 101, 0, now)
    mptest.eq(res.transfer, 0, "staff cards take no transfer discount")
    # a discount never goes below zero
    _ok(engine().compute(card(3, records=[rec(6, now - 10, 102)]), 101, 0, now), 0)


# ---- stage (tap-on / tap-off) -----------------------------------------------------------------


def test_stage_boarding_marks_the_route_maximum():
    res = engine().compute(card(), 301, 1, MON_1200)
    _ok(res, 0, 400)
    mptest.eq(res.txn_type, fare.TXN_BOARD)
    mptest.eq((res.marked, res.board_stop, res.board_time), (400, 1, MON_1200))
    res = engine().compute(card(2), 301, 1, MON_1200)
    _ok(res, 0, 200)
    mptest.eq(res.marked, 200, "a student's marked amount carries the concession")


def test_stage_alighting_fares_by_stages_crossed():
    e = engine()
    board = MON_1200 - 1800
    on = [rec(3, board, 301, stop=1, terminal=TERM, amount=0)]
    for stop, want in ((1, 100), (2, 200), (4, 300), (6, 400), (7, 400), (0, 100)):
        res = e.compute(card(records=on), 301, stop, MON_1200)
        _ok(res, want)
        mptest.eq(res.txn_type, fare.TXN_ALIGHT)
        mptest.eq((res.board_stop, res.board_time, res.marked), (1, board, 400))


def test_stage_tap_off_time_limit_edges():
    e = engine()
    on = [rec(3, MON_1200 - 7200, 301, stop=0, amount=0)]
    res = e.compute(card(records=on), 301, 2, MON_1200)
    _ok(res, 200)
    on = [rec(3, MON_1200 - 7201, 301, stop=0, amount=0)]
    res = e.compute(card(records=on), 301, 2, MON_1200)
    _ok(res, 400)
    mptest.eq((res.txn_type, res.penalty), (fare.TXN_MAKEUP, 400))
    # the make-up closes the trip: the next tap boards without being called a duplicate
    closed = [rec(8, MON_1200, 301, stop=2, terminal=TERM, amount=400)] + on
    res = e.compute(card(records=closed), 301, 2, MON_1200 + 5)
    mptest.eq((res.status, res.txn_type), (fare.OK, fare.TXN_BOARD))


def test_unfinished_trip_charged_when_boarding_elsewhere():
    e = engine()
    on = [rec(3, MON_1200 - 600, 301, stop=0, amount=0)]
    res = e.compute(card(records=on), 101, 0, MON_1200)
    # the unpaid trip at its marked amount, plus this ride as a transfer from it
    _ok(res, 400 + 200 - 100)
    mptest.eq((res.penalty, res.txn_type, res.transfer), (400, fare.TXN_SINGLE, 1))
    on = [rec(3, MON_1200 - 6000, 301, stop=0, amount=0)]
    _ok(e.compute(card(records=on), 101, 0, MON_1200), 600)
    res = e.compute(card(records=on), 1, 0, MON_1200)
    _ok(res, 400, 400 + 700)
    mptest.eq(res.txn_type, fare.TXN_BOARD)


def test_stage_transfer_judged_at_boarding():
    e = engine()
    board = MON_1200 - 3000
    on = [rec(3, board, 301, stop=0, amount=0), rec(6, board - 5400, 102)]
    res = e.compute(card(records=on), 301, 4, MON_1200)  # 2 stages: 300
    _ok(res, 200)
    mptest.eq(res.transfer, 1)


def test_stop_not_on_route_refused():
    e = engine()
    mptest.eq(e.compute(card(), 301, 8, MON_1200).reason, "stop not on route")
    on = [rec(3, MON_1200 - 60, 301, stop=0, amount=0)]
    mptest.eq(e.compute(card(records=on), 301, 99, MON_1200).reason, "stop not on route")


# ---- rail -----------------------------------------------------------------------------------


def test_rail_entry_needs_the_highest_single_journey_fare():
    e = engine()
    res = e.compute(card(), 1, 0, MON_1200, balance=699)
    mptest.eq(
        (res.status, res.reason, res.must_cover), (fare.REFUSED, "insufficient balance", 700)
    )
    res = e.compute(card(), 1, 0, MON_1200, balance=700)
    _ok(res, 0, 700)
    mptest.eq((res.industry, res.marked), (fare.IND_METRO, 600))
    on = [rec(3, MON_1200 - 900, 1, stop=0, industry=1, amount=0)]
    res = e.compute(card(records=on), 1, 3, MON_1200, balance=600)
    _ok(res, 600)
    res = e.compute(card(records=on), 1, 3, MON_1200, balance=599)
    mptest.eq(res.status, fare.REFUSED)


# ---- no overdraft, cap ----------------------------------------------------------------------


def test_no_overdraft_in_every_mode():
    e = engine()
    on_stage = [rec(3, MON_1200 - 900, 301, stop=0, amount=0)]
    taps = (
        (card(), 101, 0),  # flat
        (card(), 301, 0),  # stage boarding: the marked amount
        (card(records=on_stage), 301, 6),  # stage alighting
        (card(records=on_stage), 101, 0),  # unfinished trip + flat
        (card(), 1, 0),  # rail entry
    )
    for c, route, stop in taps:
        need = e.compute(c, route, stop, MON_1200).must_cover
        mptest.true(need > 0)
        mptest.eq(e.compute(c, route, stop, MON_1200, balance=need).status, fare.OK)
        res = e.compute(c, route, stop, MON_1200, balance=need - 1)
        mptest.eq((res.status, res.reason), (fare.REFUSED, "insufficient balance"), repr(res))
        res = e.compute(c, route, stop, MON_1200, balance=10000, overdrawn=1)
        mptest.eq((res.status, res.reason), (fare.REFUSED, "card overdrawn"))


def test_sanity_cap_refuses_whatever_the_table_says():
    log.clear()
    res = engine().compute(card(), 103, 0, MON_1200, balance=100000)
    mptest.eq((res.status, res.reason, res.debit), (fare.REFUSED, "fare above cap", 0))
    mptest.true(log.find("above the cap", log.ERROR))


# ---- duplicate taps -------------------------------------------------------------------------


def test_duplicate_tap_within_window_per_card_type():
    e = engine()
    res = e.compute(card(), 101, 0, MON_1200)
    e.paid(res, "3104991585000011383", MON_1200)
    dup = e.compute(card(), 101, 0, MON_1200 + 59)
    mptest.eq((dup.status, dup.reason, dup.debit), (fare.DUPLICATE, "already paid", 0))
    _ok(e.compute(card(), 101, 0, MON_1200 + 60), 200)
    _ok(e.compute(card(card_no="3104991585000011384"), 101, 0, MON_1200 + 1), 200)
    # elderly-free cards: five minutes
    res = e.compute(card(4), 101, 0, MON_1200)
    e.paid(res, "3104991585000011383", MON_1200)
    mptest.eq(e.compute(card(4), 101, 0, MON_1200 + 299).status, fare.DUPLICATE)
    mptest.eq(e.compute(card(4), 101, 0, MON_1200 + 300).status, fare.OK)
    # drivers may tap again at once
    res = e.compute(card(7), 101, 0, MON_1200)
    e.paid(res, "3104991585000011383", MON_1200)
    mptest.eq(e.compute(card(7), 101, 0, MON_1200 + 1).status, fare.OK)


def test_duplicate_seen_on_the_card_after_a_reboot():
    e = engine()  # a fresh engine remembers nothing
    mine = [rec(6, MON_1200 - 10, 101, terminal=TERM)]
    mptest.eq(e.compute(card(records=mine), 101, 0, MON_1200).status, fare.DUPLICATE)
    theirs = [rec(6, MON_1200 - 10, 101, terminal=OTHER_TERM)]
    mptest.eq(e.compute(card(records=theirs), 101, 0, MON_1200).status, fare.OK)


def test_stage_duplicate_only_at_the_same_stop():
    e = engine()
    on = [rec(3, MON_1200 - 20, 301, stop=1, terminal=TERM, amount=0)]
    mptest.eq(e.compute(card(records=on), 301, 1, MON_1200).status, fare.DUPLICATE)
    res = e.compute(card(records=on), 301, 3, MON_1200)
    mptest.eq((res.status, res.txn_type), (fare.OK, fare.TXN_ALIGHT))


def test_recent_memory_is_bounded():
    e = engine()
    res = e.compute(card(), 101, 0, MON_1200)
    for i in range(100):
        e.paid(res, "%019d" % i, MON_1200 + i)
    mptest.true(len(e._recent) <= 32)
    mptest.true("%019d" % 99 in e._recent, "the newest is kept")


# ---- bad input --------------------------------------------------------------------------------


def test_malformed_records_are_skipped_not_fatal():
    e = engine()
    bad_date = bytearray(rec(6, MON_1200 - 60, 102))
    bad_date[25:32] = b"\xff" * 7
    recs = [bytes(bad_date), b"\x06\x01", None, b"\x00" * 48, b"\xff" * 48]
    res = e.compute(card(records=recs), 101, 0, MON_1200)
    _ok(res, 200)
    mptest.eq(res.transfer, 0)
    res = e.compute({"card_type": 1, "records": None}, 101, 0, MON_1200)
    _ok(res, 200)


def test_garbage_input_is_refused_never_raised():
    e = engine()
    on = [rec(3, MON_1200 - 60, 301, stop=0, amount=0)]
    cases = (
        (card(), "101", 0, MON_1200),
        (card(), 101, None, MON_1200),
        (card(), 301, -1, MON_1200),
        (card(), 101, 0, None),
        ({"card_no": "1", "card_type": 1, "records": 5}, 101, 0, MON_1200),
        (None, 101, 0, MON_1200),
        (card(records=on), 301, 2, MON_1200),  # fine: the control case
    )
    log.clear()
    for c, route, stop, now in cases[:-1]:
        res = e.compute(c, route, stop, now)
        mptest.eq(res.status, fare.REFUSED, "%r %r %r" % (route, stop, now))
        mptest.eq(res.debit, 0)
    mptest.true(log.find("", log.WARNING), "refusals are logged")
    _ok(e.compute(*cases[-1]), 200)
    # records that are not records are skipped; the tap itself is fine
    _ok(e.compute(card(records=[1, "x", object()]), 101, 0, MON_1200), 200)


def test_bad_fare_tables_are_refused_with_a_reason():
    def bad(mutate, fragment):
        import json

        cfg = json.loads(json.dumps(CFG))
        mutate(cfg["fares"], cfg)
        e = mptest.raises(fare.FareConfigError, fare.from_config, cfg)
        mptest.true(fragment in str(e), "%r not in %r" % (fragment, str(e)))

    bad(lambda f, c: f.pop("routes"), "no routes")
    bad(lambda f, c: f["routes"].update({"x": {"fare": 1}}), "not a number")
    bad(lambda f, c: f["routes"].update({"70000": {"fare": 1}}), "out of range")
    bad(lambda f, c: f["routes"]["101"].update({"mode": "zone"}), "unknown mode")
    bad(lambda f, c: f["routes"]["101"].update({"fare": -5}), "fare")
    bad(lambda f, c: f["routes"]["101"].update({"fare": "2"}), "fare")
    bad(lambda f, c: f["routes"]["301"].update({"stages": "0,1"}), "lists")
    bad(lambda f, c: f["routes"]["301"].update({"fares": []}), "lists")
    bad(lambda f, c: f["routes"]["301"]["stages"].append(-1), "stage")
    bad(lambda f, c: f["routes"]["301"].update({"stages": [0] * 257}), "256 stops")
    bad(lambda f, c: f.update({"rail_max_fare": 100}), "rail_max_fare")
    bad(lambda f, c: f.pop("card_types"), "card_types")
    bad(lambda f, c: f["card_types"]["2"].update({"local_pct": 150}), "local_pct")
    bad(lambda f, c: f["card_types"].update({"300": {}}), "out of range")
    bad(lambda f, c: f["time_rules"][0].update({"start": "5h"}), "HH:MM")
    bad(lambda f, c: f["time_rules"][0].update({"end": "25:00"}), "range")
    bad(lambda f, c: f["time_rules"][0].pop("pct"), "pct or fare")
    bad(lambda f, c: f["time_rules"][0].update({"days": 5}), "days")
    bad(lambda f, c: f["time_rules"][0].update({"id": 300}), "id")
    bad(lambda f, c: f["routes"]["101"].update({"rule": 256}), "rule")
    bad(lambda f, c: f["transfer"].update({"from": "last"}), "transfer.from")
    bad(lambda f, c: f["transfer"].pop("window_s"), "window_s")
    bad(lambda f, c: c["settings"].update({"max_fare": 0}), "max_fare")
    mptest.raises(fare.FareConfigError, fare.from_config, {"settings": {}})
    mptest.raises(fare.FareConfigError, fare.from_config, [])
