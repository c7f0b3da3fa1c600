# mpy: heapsize=2m timeout=300
# The application's tap with the one-log purchase (firmware/app.py over firmware/txlog.py on a
# RAM flash device): the rider is told right after DEBIT, once, before the PSAM's MAC2 check and
# the outcome record; a MAC2 the PSAM rejects afterwards is booked as such and not shown again;
# the duplicate-tap memory is kept; an unconfirmed debit is counted at boot and settled on the
# re-tap; the idle loop does the log's flash erases.
import asyncio
import sys

import mptest

sys.path.append(mptest.repo_root() + "/tools")

import app  # noqa: E402
import bundle  # noqa: E402
import cardlists as cl  # noqa: E402
import config  # noqa: E402
import crosslib  # noqa: E402
import log  # noqa: E402
import ramdisk  # noqa: E402
import rawflash  # noqa: E402
import record  # noqa: E402
import timeutil  # noqa: E402
from linkerr import CardGone  # noqa: E402

SECRET_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
T0 = timeutil.to_seconds(2026, 11, 30, 0, 30, 0)
clock = [T0]
FARE = 100


class Target:
    kind = "A"
    iso_dep = True
    uid = b"\x04\x11\x22\x33"
    ats = b"\x01"

    def uid_hex(self):
        return "04112233"


class Reader:
    def __init__(self):
        self.card = None
        self.pull_after = None  # INS: the card leaves after running it

    def transceive(self, apdu):
        if self.pull_after is not None and apdu[1] == self.pull_after:
            self.pull_after = None
            self.card.transceive(apdu)
            raise CardGone("pulled")
        return self.card.transceive(apdu)

    def present(self):
        return False

    def release(self):
        pass


class Psam:
    """crosslib's PSAM; notes what the rider had been shown when 8072 arrived."""

    def __init__(self, shown):
        self.inner = crosslib.Psam()
        self.shown = shown
        self.at_8072 = []
        self.reject_mac2 = False

    def reset(self):
        return None

    def transceive(self, apdu):
        if apdu[1] == 0x72:
            self.at_8072.append(list(self.shown))
            if self.reject_mac2:
                self.reject_mac2 = False
                self.inner.mac1 = None
                return b"\x93\x02"
        return self.inner.transceive(apdu)


class Feedback:
    def __init__(self, shown):
        self.shown = shown
        self.last = None

    def show(self, tone):
        self.shown.append(tone)
        self.last = tone


class Parts:
    reader = None
    psam_link = None
    transport = None
    display = None
    feedback = None
    wdt = None
    wdt_grace_ms = 8000
    root = "/ta"
    emit = None
    journal_config = None
    param_slots = None
    reset_cause = "power-on"
    extra_task = None
    txlog_dev = None


CFG = None
state = {}


def setup():
    # One validator for the whole file (a RAM file system is 512 KB): each test uses its own card.
    global CFG
    log.set_level(log.WARNING, echo=False)
    if CFG is not None:
        return
    if CFG is None:
        CFG = config.validate(
            {
                "device_id": 17,
                "secret": SECRET_HEX,
                "route": 101,
                "stop": 3,
                "city": "1001",
                "institution": "1200290000000000",
                "collector_url": "http://backoffice",
            }
        )
    ramdisk.fresh_fs(4096, 128, "/ta", mtime=False)
    shown = []
    parts = Parts()
    parts.txlog_dev = rawflash.RawFlash(16)
    parts.reader = Reader()
    parts.psam_link = Psam(shown)
    parts.feedback = Feedback(shown)
    parts.rtc_seconds = lambda: clock[0]
    state.update(parts=parts, shown=shown)
    state["v"] = boot(parts)


def boot(parts):
    events = []
    parts.emit = lambda kind, data: events.append((kind, data))
    v = app.Validator(parts, CFG)
    state["events"] = events
    if not v.params.version:
        cfg = {
            "settings": {"dup_tap_s": 60},
            "whitelist": {"local_issuers": ["31040000"], "local_city": "1001", "issuers": []},
            "fares": {"routes": {"101": {"mode": "flat", "fare": FARE}}, "card_types": {"1": {}}},
        }
        data = bundle.build(CFG["secret_bytes"], 1, 0, cfg, cl.blacklist_bytes(()))
        mptest.eq(v.params.install_bytes(data, clock[0]), (True, "activated"))
    mptest.true(v.boot())
    return v


def tap(card, pull_after=None):
    parts = state["parts"]
    parts.reader.card = card
    parts.reader.pull_after = pull_after
    del state["shown"][:]
    clock[0] += 7
    return state["v"].handle_tap(Target())


def records(v):
    return [record.decode(r) for r in v.journal.records_after(0, 1000)]


def test_result_shown_once_right_after_debit_then_mac2_and_outcome():
    card = crosslib.Card(1)
    psam = state["parts"].psam_link
    n0 = state["v"].journal.last_seq
    mptest.eq(tap(card), "OK")
    mptest.eq(state["shown"], ["ok"], "shown once")
    mptest.eq(psam.at_8072, [["ok"]], "shown before the PSAM checked MAC2")
    kinds = [r["kind"] for r in records(state["v"]) if r["seq"] > n0]
    mptest.eq(kinds, [record.DEBIT_INTENT, record.PURCHASE])
    mptest.eq(len(card.debits), 1)
    # the duplicate-tap memory was kept on_debited: the same card again is not charged
    mptest.eq(tap(card), "ALREADY_PAID")
    mptest.eq(len(card.debits), 1)


def test_mac2_rejected_afterwards_is_booked_as_such_and_not_shown_again():
    card = crosslib.Card(2)
    state["parts"].psam_link.reject_mac2 = True
    got = tap(card)
    mptest.eq(got, "MAC2_FAILED", "the tap's final reason")
    mptest.eq(state["shown"], ["ok"], "the rider saw the sale once; nothing more")
    last = records(state["v"])[-1]
    mptest.eq(last["kind"], record.PURCHASE)
    mptest.eq(last["flags"] & record.FLAG_MAC2_UNVERIFIED, record.FLAG_MAC2_UNVERIFIED)
    mptest.eq(len(card.debits), 1, "the card was debited regardless")
    taps = [d for k, d in state["events"] if k == "tap"]
    mptest.eq(taps[-1]["reason"], "MAC2_FAILED")
    mptest.eq(taps[-1]["amount"], FARE)


def test_unconfirmed_debit_counted_at_boot_and_settled_on_the_retap():
    card = crosslib.Card(3)
    mptest.eq(tap(card, pull_after=0x54), "TAP_AGAIN")
    mptest.eq(state["shown"], ["again"], "nothing shown as sold: the answer never came")
    v = boot(state["parts"])  # power cycle: the log comes back from flash
    state["v"] = v
    mptest.eq(records(v)[-1]["kind"], record.BOOT)
    mptest.eq(records(v)[-1]["amount"], 1, "one unconfirmed debit at boot")
    mptest.eq(v.status()["pending"], 1)
    import versions  # noqa: E402 - the depot's status names the firmware and its formats

    st = v.status()["versions"]
    mptest.eq((st["firmware"], st["record"]), (versions.FIRMWARE, record.VERSION))
    mptest.eq(tap(card), "OK")
    mptest.eq(records(v)[-1]["kind"], record.PURCHASE_RECOVERED)
    mptest.eq(state["shown"], ["ok"])
    mptest.eq(len(card.debits), 1, "charged once")
    mptest.eq(v.status()["pending"], 0)
    mptest.eq(tap(card), "ALREADY_PAID", "the recovered ride counts for the duplicate rule")


async def test_idle_loop_runs_the_log_maintenance():
    v = state["v"]
    calls = []
    real = v.journal.maintain

    def counting():
        calls.append(1)
        v.stopped = True
        return real()

    v.journal.maintain = counting
    await asyncio.wait_for(v.idle_loop(), 10)
    mptest.eq(len(calls), 1)


def test_failed_migration_holds_the_log_and_sells_nothing():
    # The old journal may hold numbers the new log would issue: no record at all until a boot
    # migrates it, and no sale (a debit with no record would be money nobody can book).
    import txlog_migrate

    def broken(journal_dir, log_):
        raise OSError(5, "old journal unreadable")

    real = txlog_migrate.run
    txlog_migrate.run = broken
    parts = state["parts"]
    dev = parts.txlog_dev
    parts.txlog_dev = rawflash.RawFlash(16)
    try:
        v = app.Validator(parts, CFG)
        mptest.eq(v.journal.held, "old journal not migrated")
        v.boot()
        mptest.eq(v.journal.last_seq, 0, "not even the BOOT record")
        mptest.eq(v.journal.status()["state"], "held")
        mptest.false(v.journal.can_accept_purchase())
        mptest.raises(Exception, v.journal.append, {"kind": record.BOOT})
        state["v"], saved = v, state["v"]
        card = crosslib.Card(9)
        mptest.eq(tap(card), "JOURNAL_FULL")
        mptest.eq(len(card.debits), 0, "no debit without a record")
        mptest.eq(v.journal.last_seq, 0)
        state["v"] = saved
    finally:
        txlog_migrate.run = real
        parts.txlog_dev = dev


def test_low_balance_threshold_comes_from_the_config():
    v = state["v"]
    mptest.eq(v._low_balance, CFG["low_balance_fen"], "config.json low_balance_fen")
    mptest.eq(v._low_balance, 500, "its default: 5.00 yuan")
    try:
        v._low_balance = 2000000  # above the test card's balance: every sale is a low one
        mptest.eq(tap(crosslib.Card(41)), "OK_LOW")
        mptest.eq(state["shown"], ["ok_low"])
        v._low_balance = 0  # never "top up soon"
        mptest.eq(tap(crosslib.Card(42)), "OK")
        mptest.eq(state["shown"], ["ok"])
    finally:
        v._low_balance = 500
