# mpy: heapsize=256k timeout=120 server=tools.sim.apdu_server
# The firmware purchase under MicroPython against the CPython virtual card and PSAM over the hub.
# Every test ends by asking the simulators for violations: there must be none.
import log
import memlog
import mptest
import purchase
import record
import timeutil
import tunion
from apdu_link import ApduLink
from psam_app import PsamApp
from simlink import Control

NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
FLAT = {"debit": 200, "must_cover": 200, "txn_type": 0x06, "route": 0x0123, "stop": 7}

ctl = None
card_link = None
psam_link = None
journal = []
bench = {}
seen_reasons = set()  # every reason any test here produced; checked by the last test


def setup():
    global ctl, card_link, psam_link
    if ctl is None:
        ctl = Control()
        card_link = ApduLink("card")
        psam_link = ApduLink("psam")
    ctl.call("reset", terminal_id="000000000042")
    journal.clear()
    log.set_level(log.INFO, echo=False)
    log.clear()
    bench["log"] = memlog.make(journal)
    bench["p"] = purchase.Purchaser(PsamApp(psam_link), bench["log"])
    mptest.true(bench["p"].boot(), "PSAM boot")


def teardown():
    import gc

    gc.collect()
    found = ctl.call("violations")
    for label in found:
        mptest.eq(found[label], [], "violations on " + label)


def tap(profile=None, label=None, fare=FLAT, overrides=None, now=NOW):
    """Put a card in the field (a new one from a profile, or a known one again) and tap it."""
    if profile is not None or label is not None:
        ctl.call("place_card", profile=profile, label=label, overrides=overrides)
    c0 = card_link.count
    p0 = psam_link.count
    res = bench["p"].tap(card_link, fare, now)
    seen_reasons.add(res.reason)
    bench["card_apdus"] = card_link.count - c0
    bench["psam_apdus"] = psam_link.count - p0
    return res


def test_flat_fare_ok_within_budget_and_record():
    res = tap("tunion_plain")
    mptest.eq(res.reason, purchase.OK, res.detail)
    mptest.eq((bench["card_apdus"], bench["psam_apdus"]), (5, 2), "APDUs card, PSAM")
    mptest.log(
        "flat fare tap: %d card APDUs, %d PSAM APDUs" % (bench["card_apdus"], bench["psam_apdus"])
    )
    state = ctl.call("card")
    mptest.eq(state["balance"], 4800)
    mptest.eq(res.balance_after, 4800)
    debit = state["debits"][0]
    rec = res.record
    mptest.eq(rec["tac"].hex().upper(), debit["tac"])
    mptest.eq(rec["card_atc"], debit["counter"])
    mptest.eq(rec["kind"], record.PURCHASE)
    mptest.eq(rec["flags"], 0)
    mptest.hex_eq(rec["psam_tid"], b"\x00\x00\x00\x00\x00\x42")
    mptest.eq(rec["psam_serial"], 1)
    mptest.eq(tunion.card_number(res.card["card_no"]), "3105228000000000017")
    mptest.eq(res.card["interconnect"], 1)
    # the intent before DEBIT with every field but the TAC, then the outcome that closes it
    mptest.eq([r["kind"] for r in journal], [record.DEBIT_INTENT, record.PURCHASE])
    intent, booked = journal
    for k in ("card_no", "card_atc", "amount", "balance_before", "balance_after", "psam_serial"):
        mptest.eq(intent[k], rec[k], "intent " + k)
        mptest.eq(booked[k], rec[k], "outcome " + k)
    mptest.hex_eq(intent["tac"], b"\x00" * 4)
    mptest.hex_eq(booked["tac"], rec["tac"])
    mptest.eq(booked["seq"], intent["seq"] + 1)
    mptest.eq(bench["p"].pending(), [])
    r1e = bytes.fromhex(ctl.call("record_1e"))
    mptest.eq(r1e[0], 0x06)
    mptest.hex_eq(r1e[25:32], bytes.fromhex("20261129123000"))
    mptest.eq(len(record.encode(rec, 1)), record.SIZE)


def test_sm4_card_and_social_security_card():
    res = tap("tunion_sm4")
    mptest.eq(res.reason, purchase.OK, res.detail)
    mptest.eq(ctl.call("card")["debits"][0]["amount"], 200)
    res = tap("social_security")
    mptest.eq(res.reason, purchase.OK, res.detail)
    mptest.eq((bench["card_apdus"], bench["psam_apdus"]), (5, 2))
    apps = set(entry.get("app") for entry in ctl.call("audit") if "apdu" in entry)
    mptest.eq(apps, set([None, "A000000632010105"]), "only the T-Union application is addressed")
    res = tap("phone_tunion")
    mptest.eq(res.reason, purchase.OK, res.detail)


def test_refusals_from_card_data():
    cases = (
        ("mifare_classic", None, purchase.NO_ISO_DEP),
        ("unionpay_only", None, purchase.NOT_TUNION),
        ("tunion_plain", {"enabled": 0}, purchase.DISABLED),
        ("tunion_plain", {"start": "20270101"}, purchase.NOT_YET_VALID),
        ("tunion_plain", {"start": "20100101", "expiry": "20261128"}, purchase.EXPIRED),
        ("tunion_plain", {"lock": "temporary"}, purchase.LOCKED),
        ("tunion_plain", {"lock": "permanent"}, purchase.LOCKED),
        ("tunion_plain", {"balance": 150}, purchase.INSUFFICIENT),
        ("tunion_used_overdraft", None, purchase.INSUFFICIENT),
    )
    for i in range(len(cases)):
        profile, overrides, want = cases[i]
        res = tap(profile, label="c%d" % i, overrides=overrides or {})
        mptest.eq(res.reason, want, "%s %r: %s" % (profile, overrides, res.detail))
        if res.card is not None:
            mptest.eq(ctl.call("card")["debits"], [])
        mptest.true(log.find(want, log.WARNING), "refusal %s logged" % want)


def test_expiry_day_itself_is_valid():
    res = tap("tunion_plain", overrides={"expiry": "20261129"})
    mptest.eq(res.reason, purchase.OK, res.detail)


def test_insufficient_real_balance_with_overdraft_allowance():
    # real 150 + overdraft 1000: the card itself would accept 200 (9000 at INIT), we refuse
    res = tap("tunion_overdraft")
    mptest.eq(res.reason, purchase.INSUFFICIENT, res.detail)
    mptest.eq(res.balance_after, 150, "the real balance, for the rider's screen")
    mptest.eq(res.detail, "real balance 1.50 yuan < 2.00 yuan")
    mptest.eq(ctl.call("card")["debits"], [])
    mptest.eq(ctl.call("psam")["serial"], 1, "no PSAM session was spent")
    ok = tap(label="tunion_overdraft", fare={"debit": 100, "must_cover": 100})
    mptest.eq(ok.reason, purchase.OK)
    mptest.eq(ctl.call("card")["used_overdraft"], 0)


def test_rail_mode_requires_the_maximum_fare():
    rail = {"debit": 300, "must_cover": 900, "txn_type": 0x03}
    res = tap("tunion_plain", overrides={"balance": 800}, fare=rail)
    mptest.eq(res.reason, purchase.INSUFFICIENT, res.detail)
    mptest.eq(res.balance_after, 800)
    res = tap("tunion_plain", label="rich", overrides={"balance": 900}, fare=rail)
    mptest.eq(res.reason, purchase.OK, res.detail)
    mptest.eq(res.balance_after, 600)


def test_strict_balance_mode_reads_p1_03_and_02():
    bench["p"].cfg["balance_check"] = "p103"
    res = tap("tunion_plain")
    mptest.eq(res.reason, purchase.OK, res.detail)
    mptest.eq(bench["card_apdus"], 7, "805C P1=03 and P1=02 before INIT")
    mptest.eq(tap("tunion_used_overdraft").reason, purchase.INSUFFICIENT)


def test_fare_callback_sees_the_card_and_can_refuse():
    seen = []

    def fare(card):
        seen.append(card["card_type"])
        if card["interconnect"] != 1:
            return "NOT_WHITELISTED"
        return None

    res = tap("tunion_local_only", fare=fare)
    mptest.eq(res.reason, "NOT_WHITELISTED")
    res = tap("tunion_plain", fare=fare)
    mptest.eq(res.reason, purchase.NO_FARE)
    mptest.eq(seen, [1, 1])
    bad = tap("tunion_plain", label="p2", fare={"debit": -5})
    mptest.eq(bad.reason, purchase.NO_FARE)
    mptest.eq(ctl.call("card")["debits"], [])


def test_blacklisted_card_is_locked_and_recorded():
    res = tap("tunion_plain", fare={"lock": True, "route": 9})
    mptest.eq(res.reason, purchase.BLACKLISTED, res.detail)
    mptest.eq(res.record["kind"], record.REFUSED)
    mptest.eq(res.record["reason"], record.REASON_BLACKLIST)
    mptest.eq(res.record["flags"], purchase.FLAG_APP_LOCKED)
    mptest.eq(ctl.call("card")["lock"], "temporary")
    mptest.eq(tap(label="tunion_plain").reason, purchase.LOCKED)
    res = tap("tunion_sm4", fare={"lock": True})
    mptest.eq(res.record["flags"], purchase.FLAG_APP_LOCKED, res.detail)
    res = tap("social_security", fare={"lock": True})  # SM4 keys behind the ...0105 name
    mptest.eq(res.record["flags"], purchase.FLAG_APP_LOCKED, res.detail)
    mptest.eq(ctl.call("card")["lock"], "temporary")
    mptest.eq(ctl.call("card")["debits"], [])
    bench["p"].cfg["lock_enabled"] = False
    res = tap("phone_tunion", fare={"lock": True})
    mptest.eq(res.reason, purchase.BLACKLISTED)
    mptest.eq(res.record["flags"], 0)
    mptest.eq(ctl.call("card")["lock"], None)
    mptest.eq([r["kind"] for r in journal], [record.REFUSED] * 4)


def test_psam_failures():
    ctl.call("psam_force", ins=0x70, sw="6985")
    res = tap("tunion_plain")
    mptest.eq(res.reason, purchase.PSAM_ERROR, res.detail)
    mptest.eq(ctl.call("card")["debits"], [])
    # the next tap re-boots the PSAM first and sells
    res = tap(label="tunion_plain")
    mptest.eq(res.reason, purchase.OK, res.detail)
    ctl.call("psam_mute", n=1)
    mptest.eq(tap(label="tunion_plain").reason, purchase.PSAM_ERROR)
    mptest.eq(tap(label="tunion_plain").reason, purchase.OK)


def test_mac_failures():
    ctl.call("place_card", profile="tunion_plain")
    ctl.call("force", ins=0x54, sw="9302")
    res = tap()
    mptest.eq(res.reason, purchase.MAC1_FAILED)
    mptest.eq(bench["p"].pending(), [])
    mptest.eq([r["kind"] for r in journal], [record.DEBIT_INTENT, record.DEBIT_VOID])
    mptest.eq(journal[1]["reason"], purchase.VOID_MAC1)
    mptest.eq(journal[1]["card_atc"], journal[0]["card_atc"])
    del journal[:]
    shown = []
    bench["p"].cfg["on_debited"] = lambda r: shown.append((r.reason, r.amount, len(journal)))
    ctl.call("psam_force", ins=0x72, sw="9302")
    res = tap(label="tunion_plain")
    mptest.eq(res.reason, purchase.MAC2_FAILED)
    mptest.eq(shown, [(purchase.OK, 200, 1)], "shown once, after the intent, before 8072")
    mptest.eq(len(ctl.call("card")["debits"]), 1, "the card did debit: it is recorded")
    mptest.eq(res.record["flags"] & record.FLAG_MAC2_UNVERIFIED, record.FLAG_MAC2_UNVERIFIED)
    mptest.eq([r["kind"] for r in journal], [record.DEBIT_INTENT, record.PURCHASE])
    mptest.eq(journal[1]["flags"], record.FLAG_MAC2_UNVERIFIED)


def test_malformed_answers_are_clear_card_errors():
    cases = (
        (0xA4, "6F"),  # short
        (0xA4, "6F0584034142439000"),  # FCI naming another application
        (0xA4, "6F108408A000000632010105A5049F0C01009000"),  # 9F0C too short
        (0xA4, "6F" + "FF" * 300 + "9000"),  # long garbage
        (0xA4, "6A88"),  # unexpected status
        (0xB0, "00" * 5 + "9000"),  # short 0x17
        (0xB0, "00" * 12 + "9000"),  # long 0x17
        (0x50, "9000"),  # INIT without data
        (0x50, "6E00"),
        (0xDC, "6A84"),
    )
    for ins, data in cases:
        ctl.call("place_card", profile="tunion_plain", label="m%02x%d" % (ins, len(data)))
        ctl.call("force", ins=ins, data=data)
        log.clear()
        res = tap()
        mptest.eq(res.reason, purchase.CARD_ERROR, "%02X %s -> %s" % (ins, data[:20], res.detail))
        mptest.true(res.detail, "a clear detail")
        mptest.true(log.find("CARD_ERROR", log.WARNING), "logged")
        mptest.eq(ctl.call("card")["debits"], [])
    mptest.eq(bench["p"].pending(), [])
    # the validator keeps working
    mptest.eq(tap("tunion_plain", label="after").reason, purchase.OK)


def test_malformed_debit_answer_is_settled_by_the_retap():
    ctl.call("place_card", profile="tunion_plain")
    ctl.call("force", ins=0x54, data="0102039000")  # truncated TAC/MAC2: did it debit? ask
    res = tap()
    mptest.eq(res.reason, purchase.TAP_AGAIN)
    mptest.eq(len(bench["p"].pending()), 1)
    res = tap(label="tunion_plain")
    mptest.eq(res.reason, purchase.OK, res.detail)
    mptest.eq(len(ctl.call("card")["debits"]), 1)


def test_tap_cost_figures():
    import time

    ctl.call("place_card", profile="tunion_plain", overrides={"balance": 100000})
    n = 10
    t0 = time.ticks_ms()
    for i in range(n):
        mptest.eq(tap(now=NOW + i).reason, purchase.OK)
    ms = time.ticks_diff(time.ticks_ms(), t0)
    mptest.log(
        "%d flat-fare taps over the hub: %.1f ms each (5+2 APDUs, CPython crypto)" % (n, ms / n)
    )
    mptest.eq(ctl.call("psam")["serial"], 1 + n, "one PSAM session per sale")


def test_bus_boarding_writes_the_2702_record():
    bench["p"].cfg["read_1a"] = 0x2702
    fare = {
        "debit": 0,
        "must_cover": 600,
        "txn_type": 0x03,
        "route": 0x15,
        "stop": 3,
        "bus_1a": {"status": 1, "marked": 600, "vehicle": b"BUS00042"},
    }
    res = tap("tunion_plain", fare=fare)
    mptest.eq(res.reason, purchase.OK, res.detail)
    rec = bytes.fromhex(ctl.call("record_1a", rid=0x2702))
    mptest.eq(rec[14], 0x01)
    mptest.hex_eq(rec[53:57], b"\x00\x00\x02\x58")
    mptest.hex_eq(rec[30:38], b"BUS00042")
    mptest.eq(bench["card_apdus"], 7, "SELECT 17 1A INIT 1E 1A DEBIT")


class _Split:
    """A PSAM link with the split exchange (transceive_start/finish), noting each step."""

    def __init__(self, link, steps):
        self.link = link
        self.steps = steps
        self.sent = None

    def transceive(self, apdu):
        self.steps.append("psam %02X" % apdu[1])
        return self.link.transceive(apdu)

    def transceive_start(self, apdu):
        self.steps.append("psam %02X start" % apdu[1])
        self.sent = apdu

    def transceive_finish(self):
        self.steps.append("psam finish")
        apdu, self.sent = self.sent, None
        return self.link.transceive(apdu)


class _Noted:
    def __init__(self, link, steps):
        self.link = link
        self.steps = steps

    def transceive(self, apdu):
        self.steps.append("card %02X" % apdu[1])
        return self.link.transceive(apdu)


def test_8070_goes_out_after_init_and_is_collected_after_the_1e_update():
    steps = []
    p = purchase.Purchaser(PsamApp(_Split(psam_link, steps)), bench["log"])
    mptest.true(p.boot())
    ctl.call("place_card", profile="tunion_plain")
    del steps[:]
    res = p.tap(_Noted(card_link, steps), FLAT, NOW)
    mptest.eq(res.reason, purchase.OK, res.detail)
    want = ["card A4", "card B0", "card 50", "psam 70 start", "card DC", "psam finish"]
    mptest.eq(steps, want + ["card 54", "psam 72"])
    mptest.eq(p.psam.apdus, 5 + 2, "boot 5 + 8070 + 8072")
    # the card leaves during its 0x1E update: the PSAM's answer is still collected
    ctl.call("place_card", profile="tunion_plain", label="torn1e")
    ctl.call("fault", when="before", ins=0xDC)
    del steps[:]
    res = p.tap(_Noted(card_link, steps), FLAT, NOW)
    mptest.eq(res.reason, purchase.TAP_AGAIN)
    mptest.eq(steps[-1], "psam finish", "the link stays in step")
    mptest.eq([r["kind"] for r in journal], [record.DEBIT_INTENT, record.PURCHASE])
    ctl.call("place_card", label="torn1e")
    mptest.eq(p.tap(card_link, FLAT, NOW + 1).reason, purchase.OK)


def test_the_log_refusing_sells_nothing():
    lg = bench["log"]
    lg.refuse = True
    ctl.call("place_card", profile="tunion_plain")
    res = tap()
    mptest.eq(res.reason, purchase.JOURNAL_FULL, res.detail)
    mptest.eq(bench["card_apdus"], 2, "SELECT and 0x17 only: no INIT")
    lg.refuse = False
    lg.fail_kinds = (record.DEBIT_INTENT,)  # the intent's program fails: no DEBIT is sent
    res = tap(label="tunion_plain")
    mptest.eq(res.reason, purchase.JOURNAL_FULL, res.detail)
    mptest.eq(ctl.call("card")["debits"], [])
    mptest.eq(journal, [])
    lg.fail_kinds = ()
    mptest.eq(tap(label="tunion_plain").reason, purchase.OK)


def test_an_outcome_that_cannot_be_written_leaves_the_intent_open():
    lg = bench["log"]
    lg.fail_kinds = (record.PURCHASE,)
    shown = []
    bench["p"].cfg["on_debited"] = lambda r: shown.append(r.reason)
    res = tap("tunion_plain")
    mptest.eq(res.reason, purchase.OK, "the card debited: the rider is told so")
    mptest.eq(shown, [purchase.OK])
    mptest.true(log.find("PURCHASE not written", log.ERROR))
    mptest.eq(len(bench["p"].pending()), 1, "an unconfirmed debit")
    # the next tap of that card settles it from the card's history and sells nothing new
    lg.fail_kinds = (record.PURCHASE_RECOVERED,)
    res = tap(label="tunion_plain", now=NOW + 5)
    mptest.eq(res.reason, purchase.JOURNAL_FULL, "nothing sold while the intent stays open")
    lg.fail_kinds = ()
    res = tap(label="tunion_plain", now=NOW + 10)
    mptest.eq(res.reason, purchase.OK, res.detail)
    mptest.eq(res.record["kind"], record.PURCHASE_RECOVERED)
    mptest.eq(len(ctl.call("card")["debits"]), 1)
    mptest.eq(shown, [purchase.OK], "a recovery is shown by the caller, not on_debited")
    mptest.eq(bench["p"].pending(), [])
    mptest.eq([r["kind"] for r in journal], [record.DEBIT_INTENT, record.PURCHASE_RECOVERED])


def test_a_failing_display_hook_does_not_stop_the_booking():
    def boom(res):
        raise RuntimeError("display gone")

    bench["p"].cfg["on_debited"] = boom
    res = tap("tunion_plain")
    mptest.eq(res.reason, purchase.OK)
    mptest.true(log.find("on_debited failed", log.ERROR))
    mptest.eq([r["kind"] for r in journal], [record.DEBIT_INTENT, record.PURCHASE])


def test_every_reason_code_was_exercised():
    # TAP_AGAIN comes from test_malformed_debit_answer_is_settled_by_the_retap
    missing = [r for r in purchase.REASONS if r not in seen_reasons]
    mptest.eq(missing, [], "reasons no test produced")
