# mpy: heapsize=2m timeout=300
# Fuzz (issue 11): the whole tap loop (firmware/app.py Validator.tap_loop: decision, purchase,
# journal on littlefs, feedback) with a reader whose polls fail with every link error, find no
# card or a non-ISO one, and whose cards' answers are damaged as in test_fuzz_card.py (garbled,
# cut, lost before or after the card ran the command; the PSAM's too). Invariants: no exception
# leaves the tap loop; the journal on flash holds only records that decode, and each debit a card
# made is booked exactly once after the cards are tapped again honestly (which must sell or
# settle, "OK"); the clock moves two minutes per tap so the duplicate-tap rule stays out of it.
import asyncio
import sys

import mptest

sys.path.append(mptest.repo_root() + "/tools")

import app  # noqa: E402
import bundle  # noqa: E402
import cardlists as cl  # noqa: E402
import config  # noqa: E402
import fuzzgen  # noqa: E402
import log  # noqa: E402
import ramdisk  # noqa: E402
import rawflash  # noqa: E402
import record  # noqa: E402
import timeutil  # noqa: E402
import vfs  # noqa: E402
from linkerr import CardGone, ChipError, LinkTimeout, ProtocolError  # noqa: E402
from tcard_fakes import Card, Psam  # noqa: E402
from test_fuzz_card import FARE, Damaging, check_books  # noqa: E402

SECRET_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
T0 = timeutil.to_seconds(2026, 11, 30, 0, 30, 0)
clock = [T0]


class Target:
    kind = "A"

    def __init__(self, iso_dep=True):
        self.uid = b"\x04\x11\x22\x33"
        self.iso_dep = iso_dep
        self.ats = b"\x01"

    def uid_hex(self):
        return "04112233"


class FuzzReader:
    """Reader interface: each poll either fails, finds nothing, or presents one of the cards
    behind a damaging link (or an honest one); the validator is stopped after `limit` polls."""

    def __init__(self, rng, cards, limit):
        self.rng = rng
        self.cards = cards
        self.limit = limit
        self.polls = 0
        self.v = None
        self.link = None
        self.psam = None
        self.tally = fuzzgen.Tally()

    def poll(self):
        rng = self.rng
        self.polls += 1
        self.v.psam_link.damage = None
        if self.polls > self.limit:
            self.v.stopped = True
            return None
        k = rng.below(12)
        if k == 0:
            self.tally.add("poll_error")
            raise rng.choice((LinkTimeout, ProtocolError, ChipError, CardGone))("fuzz")
        if k == 1:
            return None
        clock[0] += 120
        if k == 2:
            self.tally.add("not_iso")
            return Target(False)
        card = rng.choice(self.cards)
        if k == 3:
            self.link = card
        elif k == 4:
            self.link = card
            self.v.psam_link.damage = Damaging(self.v.psam_link.inner, rng, rng.below(4), "garble")
        else:
            self.link = Damaging(card, rng, rng.below(8), rng.choice(Damaging.MODES))
        self.tally.add("tap")
        return Target()

    def transceive(self, apdu):
        return self.link.transceive(apdu)

    def present(self):
        return False

    def release(self):
        self.link = None


class PsamLink:
    """The PSAM for the application: reset() plus transceive, optionally through a damager."""

    def __init__(self):
        self.inner = Psam()
        self.damage = None

    def reset(self):
        return None

    def transceive(self, apdu):
        return (self.damage or self.inner).transceive(apdu)


class Parts:
    reader = None
    psam_link = None
    transport = None
    display = None
    feedback = None
    wdt = None
    wdt_grace_ms = 8000
    root = "/fa"
    emit = None
    journal_config = None
    param_slots = None
    reset_cause = "power-on"
    extra_task = None


def bundle_config():
    return {
        "settings": {"dup_tap_s": 60, "upload_interval_s": 120},
        "whitelist": {"local_issuers": ["31040000"], "local_city": "1001", "issuers": []},
        "fares": {
            "routes": {"101": {"mode": "flat", "fare": FARE["debit"]}},
            "card_types": {"1": {}},
        },
    }


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()


def teardown():
    try:
        vfs.umount("/fa")
    except OSError:
        pass


async def test_tap_loop_with_failing_readers_and_damaged_cards():
    seed = fuzzgen.seed(0xA00)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(120)
    ramdisk.fresh_fs(4096, 128, "/fa", mtime=False)
    cfg = config.validate(
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
    cards = [Card(k, balance=10000000) for k in range(4)]
    parts = Parts()
    parts.txlog_dev = rawflash.RawFlash(16)  # the transaction log's partition, in RAM
    parts.reader = FuzzReader(rng, cards, n)
    parts.psam_link = PsamLink()
    parts.rtc_seconds = lambda: clock[0]
    v = app.Validator(parts, cfg)
    parts.reader.v = v
    data = bundle.build(cfg["secret_bytes"], 1, 0, bundle_config(), cl.blacklist_bytes(()))
    mptest.eq(v.params.install_bytes(data, clock[0]), (True, "activated"))
    mptest.true(v.boot())
    reasons = fuzzgen.Tally()
    handle = v.handle_tap

    def counting(target):
        r = handle(target)
        reasons.add(r)
        return r

    v.handle_tap = counting
    try:
        await v.tap_loop()  # returns only when the reader stops it: nothing may escape
    except Exception as e:  # noqa: BLE001 - the invariant under test
        raise AssertionError("the tap loop died: %r" % (e,))
    mptest.eq(parts.reader.polls, n + 1, "the loop stopped early")
    # Every card tapped again honestly: sold, or its torn purchase settled.
    for card in cards:
        clock[0] += 120
        parts.reader.link = card
        got = v.handle_tap(Target())
        mptest.true(got in ("OK", "OK_LOW"), "honest tap after the fuzz: %s" % got)
    recs = []
    for b in v.journal.records_after(0, 100000):
        recs.append(record.decode(b))  # everything on flash decodes
    check_books([r for r in recs if r["kind"] != record.REFUSED], cards, "app journal")
    v.journal.close()
    mptest.log(
        fuzzgen.report("app_tap_loop", seed, n, parts.reader.tally)
        + " | reasons "
        + reasons.summary()
        + " | records=%d debits=%d" % (len(recs), sum(c.n_debits for c in cards))
    )
    mptest.true(reasons.get("OK") > 0 and reasons.total() > n // 2)
    await asyncio.sleep_ms(0)
