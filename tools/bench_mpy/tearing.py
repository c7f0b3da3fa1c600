# The purchase tearing sweep, counted: the virtual cards and PSAM of tools/sim/apdu_server.py
# (through the hub, SIM_PORT), firmware/purchase.py with its transaction log in RAM
# (tests/mpy/memlog.py). Each point pulls a card before or after one command (the 5 of a
# flat-fare tap, and the recovery's READ RECORD / GET TRANSACTION PROVE), then re-taps it, with
# another card, a reboot (same log, new Purchaser) or nothing in between; a seeded random part
# chains faults. Then the variant sweep: every card variant (tools/sim/card.py VARIANTS) on every
# profile with the transit application, pulled before and after each command of its tap and
# EEPROM-torn at DEBIT (6581, 9406 or power lost, the write applied or not), with nothing,
# another card or a reboot in between. (Power cuts at each flash operation: cross.py.)
# The proof is the cards' own debit lists:
#   double charges: debits by our terminal beyond the one ride each card took
#   lost debits: a debit with no purchase record, or with more than one
#   phantom records: a purchase record with no debit behind it
# First, one clean tap with every APDU recorded (the exchange figures).
# argv: random cases, seed, debug, variant sweep (1 full, 0 a quick share).
import gc
import random

import benchlib
import log
import memlog
import purchase
import record
import timeutil
from apdu_link import ApduLink
from bench_fakes import Recording
from psam_app import PsamApp
from simlink import Control

cases = benchlib.arg(1, 20)
seed = benchlib.arg(2, 20261129)
NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
FLAT = {"debit": 200, "must_cover": 200}
PURCHASE_INS = (0xA4, 0xB0, 0x50, 0xDC, 0x54)
RECOVERY_INS = (0xB2, 0x5A)
TERMINAL = "000000000042"
DEBUG = benchlib.arg(3, 0)
FULL_VARIANTS = benchlib.arg(4, 1)
PROFILES = (
    "tunion_plain",
    "social_security",
    "phone_tunion",
    "tunion_sm4",
    "tunion_overdraft",
    "tunion_local_only",
)

log.set_level(log.ERROR, echo=False)
ctl = Control()
card_link = ApduLink("card")
psam_link = ApduLink("psam")
ctl.call("reset", terminal_id=TERMINAL)
book = []
txlog = memlog.make(book)
state = {"n": 0, "t": NOW}
sold = {}  # label -> taps our validator reported OK (each is one ride, charged once)
booked_earlier = {}  # label -> torn rides a later tap booked as earlier rides


def validator():
    p = purchase.Purchaser(PsamApp(psam_link), txlog)  # a reboot keeps the log
    assert p.boot()
    return p


def number(n):
    return "3105228000000%06d" % n


def new_card(profile="tunion_plain", variant=None):
    state["n"] += 1
    label = "c%d" % state["n"]
    over = {"card_no": number(state["n"])}
    if profile == "tunion_overdraft":
        over["balance"] = 450  # real 4.50 under a 10.00 allowance: room for a point's rides
    ctl.call("place_card", profile=profile, label=label, overrides=over, variant=variant)
    ctl.call("remove_card")
    return label


def tap(p, label, fault=None):
    ctl.call("place_card", label=label)
    if fault and fault[0] == "write":
        ctl.call("write_fault", ins=0x54, sw=fault[1], applied=fault[2])
    elif fault and fault[0] == "index":
        ctl.call("fault", when=fault[1], index=fault[2])
    elif fault:
        ctl.call("fault", when=fault[0], ins=fault[1])
    state["t"] += 7
    r = p.tap(card_link, FLAT, state["t"])
    if r.reason == purchase.OK:
        sold[label] = sold.get(label, 0) + 1
    for e in r.extra:  # a torn ride booked as an earlier one (the card was used since)
        if e["kind"] == record.PURCHASE_RECOVERED:
            booked_earlier[label] = booked_earlier.get(label, 0) + 1
    return r


def audit(labels):
    """(double charges, lost debits, phantom records, free rides) over these cards."""
    double = lost = phantom = free = 0
    for label in labels:
        no = bytes.fromhex("0" + number(int(label[1:])))
        debits = ctl.call("card", label=label)["debits"]
        kinds = (record.PURCHASE, record.PURCHASE_RECOVERED)
        mine = [r for r in book if r["card_no"] == no and r["kind"] in kinds]
        ours = [d for d in debits if d["terminal"].lower().endswith(TERMINAL)]
        rides = sold.get(label, 0) + booked_earlier.get(label, 0)
        if len(ours) > rides:
            double += len(ours) - rides
        elif len(ours) < rides:
            free += rides - len(ours)
        for d in debits:
            hits = [r for r in mine if r["card_atc"] == d["counter"]]
            if len(hits) != 1:
                lost += 1
        counters = [d["counter"] for d in debits]
        phantom += sum(1 for r in mine if r["card_atc"] not in counters)
    return double, lost, phantom, free


# --- one clean flat-fare tap, every APDU recorded ---------------------------------------------
p = validator()
rc, rp = Recording(card_link), Recording(psam_link)
pc = purchase.Purchaser(PsamApp(rp), memlog.make())
assert pc.boot()
boot_psam = len(rp.log)
first = new_card()
ctl.call("place_card", label=first)
info = card_link.info()
res = pc.tap(rc, FLAT, NOW)
assert res.reason == purchase.OK, res.detail
benchlib.emit(
    exchange_card=rc.log,
    exchange_psam=rp.log[boot_psam:],
    card_info=info,
)

# --- the matrix -------------------------------------------------------------------------------
points = 0
tot = [0, 0, 0, 0]
unresolved = 0
p = validator()
for when in ("before", "after"):
    for ins in PURCHASE_INS:
        for between in ("none", "other", "reboot"):
            torn = new_card()
            labels = [torn]
            r1 = tap(p, torn, (when, ins))
            if between == "other":
                other = new_card("phone_tunion")
                labels.append(other)
                tap(p, other)
            elif between == "reboot":
                p = validator()
            r2 = tap(p, torn)
            if r2.reason != purchase.OK:
                unresolved += 1
            points += 1
            a = audit(labels)
            if DEBUG and any(a):
                print("matrix", when, hex(ins), between, a, r1.reason, r2.reason, r2.record)
            for i, x in enumerate(a):
                tot[i] += x
# tears during the recovery itself (after a tear after DEBIT)
for when in ("before", "after"):
    for ins in RECOVERY_INS:
        torn = new_card()
        tap(p, torn, ("after", 0x54))
        tap(p, torn, (when, ins))
        r = tap(p, torn)
        if r.reason != purchase.OK:
            unresolved += 1
        points += 1
        for i, x in enumerate(audit([torn])):
            tot[i] += x

# --- seeded random chains: up to 3 faults in a row on one card, others and reboots between ----
random.seed(seed)
for _ in range(cases):
    torn = new_card(random.choice(("tunion_plain", "tunion_sm4", "phone_tunion")))
    labels = [torn]
    for _k in range(random.randint(1, 3)):
        kind = random.choice(PURCHASE_INS + RECOVERY_INS)
        tap(p, torn, (random.choice(("before", "after")), kind))
        step = random.randint(0, 2)
        if step == 1:
            o = new_card()
            labels.append(o)
            tap(p, o)
        elif step == 2:
            p = validator()
    for _k in range(3):
        r = tap(p, torn)
        if r.reason == purchase.OK:
            break
    if r.reason != purchase.OK:
        unresolved += 1
    points += 1
    for i, x in enumerate(audit(labels)):
        tot[i] += x

# --- every card variant on every profile ------------------------------------------------
variants = ctl.call("variants")
combos = 0
variant_points = 0
WRITES = [("write", sw, applied) for sw in ("6581", "9406", None) for applied in (True, False)]
for vi in range(len(variants)):
    variant = variants[vi]
    for pi in range(len(PROFILES)):
        profile = PROFILES[pi]
        if not FULL_VARIANTS and (vi + pi) % 4:
            continue
        combos += 1
        probe = new_card(profile, variant)
        r = tap(p, probe)
        if r.reason != purchase.OK:
            unresolved += 1
        n = ctl.call("card", label=probe)["commands"]
        faults = [("index", w, k) for k in range(n) for w in ("before", "after")] + WRITES
        betweens = ("none", "other", "reboot") if FULL_VARIANTS else ("other",)
        for f in faults:
            for between in betweens:
                torn = new_card(profile, variant)
                labels = [torn]
                r1 = tap(p, torn, f)
                if between == "other":
                    other = new_card("phone_tunion")
                    labels.append(other)
                    tap(p, other)
                elif between == "reboot":
                    p = validator()
                for _k in range(3):
                    r2 = tap(p, torn)
                    if r2.reason == purchase.OK:
                        break
                if r2.reason != purchase.OK:
                    unresolved += 1
                points += 1
                variant_points += 1
                a = audit(labels)
                if DEBUG and any(a):
                    print("variant", variant, profile, f, between, a, r1.reason, r2.reason)
                for i, x in enumerate(a):
                    tot[i] += x
                # these cards are done: their records leave the tests' copy (not the log)
                done = [bytes.fromhex("0" + number(int(x[1:]))) for x in labels]
                book[:] = [r for r in book if r["card_no"] not in done]
                for x in labels:
                    sold.pop(x, None)
                    booked_earlier.pop(x, None)
                gc.collect()

viol = ctl.call("violation_count")  # every card's audit (the texts would not fit the heap)
benchlib.emit(
    tearing_points_tested=points,
    tearing_double_charges=tot[0],
    tearing_lost_debits=tot[1],
    tearing_phantom_records=tot[2],
    tearing_free_rides=tot[3],
    tearing_unresolved_retaps=unresolved,
    tearing_variant_points=variant_points,
    card_variants_tested=combos,
    card_variant_names=variants,
    pending_left=len(p.pending()),
    violations=viol,
    cards=state["n"],
)
