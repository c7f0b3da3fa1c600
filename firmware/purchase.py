# The per-tap entry point: select and check the T-Union application, decide with the caller's fare,
# run the compound purchase with the PSAM, and settle unconfirmed debits on the re-tap.
# The order and the rules are in docs/purchase.md; the facts from TULAB, SH-AGM, BJ-BUS, MZT and
# the PBOC purchase articles (docs/sources.md).
#
#   purchaser = Purchaser(PsamApp(psam_link), log, config)   # log: txlog.TxLog (or its interface)
#   purchaser.boot()                              # once: PSAM terminal number, app, key index
#   result = purchaser.tap(card_link, fare, now)  # now: validator seconds since 2000 (UTC)
#   result.reason, result.amount, result.balance_after, result.card, result.record, result.extra
#   purchaser.log_done()                          # after the rider has gone: the tap's log line
#
# No garbage in the tap (issue 14): the Result, its card and record dicts and the command
# buffers are the Purchaser's, made once and refilled by every tap. A result is valid until the
# next tap: copy what you keep (result.copy()). card["card_no"] is a new bytes object per card.
#
# One log holds intent and outcome: a DEBIT_INTENT record is durable before DEBIT is sent, and the
# outcome (PURCHASE, PURCHASE_RECOVERED or DEBIT_VOID, same card_no and card_atc) closes it. An
# intent left open (card pulled, power cut) is an unconfirmed debit until the card comes back.
import log
import record
import timeutil
import tunion
from apdu import ApduError, hexs, sw_name, sw_of
from linkerr import LinkError, ProtocolError
from psam_app import PsamError

# Reasons: one per refusal cause (short, stable: the app maps them to screens and beeps).
OK = "OK"
NO_ISO_DEP = "NO_ISO_DEP"  # not an ISO 14443-4 card (MIFARE Classic and the like)
NOT_TUNION = "NOT_TUNION"  # no T-Union application (bank card, other scheme)
DISABLED = "DISABLED"  # application not enabled (0x15 byte 9)
NOT_YET_VALID = "NOT_YET_VALID"
EXPIRED = "EXPIRED"
LOCKED = "LOCKED"  # application blocked (temporarily or permanently) or gray-locked
BLACKLISTED = "BLACKLISTED"  # the caller said so: locked (if enabled) and recorded
INSUFFICIENT = "INSUFFICIENT"  # the real balance, without overdraft, does not cover the fare
NO_FARE = "NO_FARE"  # the fare callback gave nothing
TAP_AGAIN = "TAP_AGAIN"  # the card left too early; a debit may be pending: tap the same card again
CARD_ERROR = "CARD_ERROR"  # malformed or unexpected card answer
PSAM_ERROR = "PSAM_ERROR"  # the secure module failed: nothing can be sold until it is fixed
MAC1_FAILED = "MAC1_FAILED"  # the card rejected the PSAM's MAC1 (9302): no debit
MAC2_FAILED = "MAC2_FAILED"  # the card debited but its MAC2 did not verify: recorded, flagged
JOURNAL_FULL = "JOURNAL_FULL"  # the intent could not be written: no DEBIT was sent
REASONS = (
    OK,
    NO_ISO_DEP,
    NOT_TUNION,
    DISABLED,
    NOT_YET_VALID,
    EXPIRED,
    LOCKED,
    BLACKLISTED,
    INSUFFICIENT,
    NO_FARE,
    TAP_AGAIN,
    CARD_ERROR,
    PSAM_ERROR,
    MAC1_FAILED,
    MAC2_FAILED,
    JOURNAL_FULL,
)

FLAG_APP_LOCKED = record.FLAG_APP_LOCKED  # REFUSED record: this tap locked the application

# DEBIT_VOID `reason`: why the card did not execute the DEBIT of the intent it closes.
VOID_MAC1 = 1  # the card refused DEBIT with 9302 (MAC1)
VOID_INSUFFICIENT = 2  # the card refused DEBIT with 9401
VOID_REFUSED = 3  # the card refused DEBIT with another status word
VOID_NOT_IN_HISTORY = 4  # the card came back and its 0x18 history holds no such debit

# DEBIT status words that come before the card writes anything (MAC1, balance, syntax, no
# INITIALIZE sequence): the intent is closed void. Any other answer leaves it open.
_DEBIT_REFUSALS = (0x9302, 0x9401, 0x6700, 0x6A86, 0x6D00, 0x6E00, 0x6985)

TXN_SINGLE = 0x06  # 0x1E transaction type: EP single purchase (flat fare)
_MAX_AMOUNT = 0xFFFFFF  # the journal record keeps 3 bytes

DEFAULTS = {
    "aids": tunion.DEFAULT_AIDS,  # T-Union EP names tried in order, each by name only
    "tz": timeutil.DEFAULT_TZ_SECONDS,
    "city": b"\x00\x00",  # acceptor city code (BCD) for the 0x1E record
    "institution": b"\x00" * 8,  # acceptor institution (BCD) for the 0x1E record
    "industry": 0x02,  # 0x1E industry code: 01 metro, 02 bus
    "operator": 0,
    "balance_check": "init",  # "init": INIT balance - overdraft limit; "p103": also 805C P1=03
    "read_1a": None,  # record id (0x2702) to read before the fare callback sees the card
    "lock_enabled": True,
    "lock_permanent": False,
    "lock_key_version": 1,  # PSAM lock key version for 3DES cards
    "lock_key_version_sm4": 2,  # ... and for SM4-only cards
    "retap_window": 600,  # seconds: a torn purchase older than this was an earlier ride
    "on_record": None,  # fn(fields, seq) after each record the purchaser wrote to the log
    "on_debited": None,  # fn(result) once DEBIT answered 9000: show it now; MAC2 check follows
}

_log = log.get("purchase")


class Result:
    __slots__ = ("reason", "amount", "balance_after", "card", "record", "extra", "detail")

    def __init__(self):
        self.extra = []  # older records this tap settled (recovered or voided intents)
        self.reset()

    def reset(self):
        self.reason = CARD_ERROR
        self.amount = 0
        self.balance_after = None
        self.card = None
        self.record = None
        if self.extra:
            self.extra = []  # a list someone may still hold from the last tap is left alone
        self.detail = ""

    def copy(self):
        """A Result that the next tap does not change."""
        r = Result()
        r.reason = self.reason
        r.amount = self.amount
        r.balance_after = self.balance_after
        r.card = dict(self.card) if self.card is not None else None
        r.record = dict(self.record) if self.record is not None else None
        r.extra = list(self.extra)
        r.detail = self.detail
        return r

    def __repr__(self):
        return "<Result %s amount=%s balance=%s %s>" % (
            self.reason,
            self.amount,
            self.balance_after,
            self.detail,
        )


class _Stop(Exception):
    def __init__(self, reason, detail="", balance=None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.balance = balance  # the card's real balance when known: the rider sees it


def _yuan(fen):
    return "%d.%02d yuan" % (fen // 100, fen % 100) if fen >= 0 else "-" + _yuan(-fen)


_ZERO_1E = bytes(48)


def _bcd_num(b, n):
    v = 0
    for i in range(n):
        v = v * 100 + (b[i] >> 4) * 10 + (b[i] & 0x0F)
    return v


def _get(req, key, default=None):
    if isinstance(req, dict):
        return req.get(key, default)
    return getattr(req, key, default)


def _u(value, limit, what):
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise _Stop(NO_FARE, "%s is not a number: %r" % (what, value))
    if v < 0 or v > limit:
        raise _Stop(NO_FARE, "%s out of range: %d" % (what, v))
    return v


class Purchaser:
    def __init__(self, psam_app, txlog, config=None):
        self.psam = psam_app
        self.log = txlog
        cfg = dict(DEFAULTS)
        if config:
            cfg.update(config)
        if len(cfg["city"]) != 2 or len(cfg["institution"]) != 8:
            raise ValueError("config: city must be 2 bytes and institution 8 bytes (BCD)")
        if cfg["balance_check"] not in ("init", "p103"):
            raise ValueError("config: balance_check must be 'init' or 'p103'")
        self.cfg = cfg
        # a sale's `reason` byte records the UTC offset the card's date and time were taken in
        try:
            self._tzc = record.tz_code(cfg["tz"])
        except (record.RecordError, TypeError) as e:
            _log.error("config tz: %s; sales will not record their offset", e)
            self._tzc = 0  # clearing then assumes its own zone for them
        self._boots = 0
        # Made at the first tap (after the start-up's own allocations), refilled by every tap
        # (see the top of this file).
        self._res = None
        self._card = None  # tunion.Card, rebound to each tap's link
        self._info = None
        self._dt = None  # the sale's local date and time, BCD
        self._r1e = None
        self._rec = None  # the sale's record fields: filled by every purchase
        self._real = 0  # the card's real balance, from _init_real
        self._unlogged = False  # a sale whose log line waits for log_done()
        # Intents whose card came back with a history that no longer reaches them: they stay
        # open for clearing; asking that card again in this run would only cost time.
        self._unreachable = set()

    # -- boot and the log ----------------------------------------------------------------------

    def boot(self):
        """PSAM start-up, once. Returns True when the PSAM is ready (logged otherwise)."""
        try:
            reset = getattr(self.psam.link, "reset", None)
            if self._boots and reset is not None:
                reset()  # a later boot follows a failure: a UART PSAM link gets a cold reset
            self._boots += 1
            self.psam.boot()
        except (PsamError, LinkError, ApduError) as e:
            _log.error("PSAM boot failed: %s", e)
            return False
        _log.info(
            "PSAM terminal %s key index %d", hexs(self.psam.terminal_id), self.psam.key_index
        )
        return True

    def pending(self):
        """The unconfirmed debits (the log's open DEBIT_INTENT records as dicts, oldest first)."""
        return self.log.open_intents()

    def _has_open(self):
        n = getattr(self.log, "open_count", None)  # a log without it: ask open_intents()
        return True if n is None else n > 0

    def _book(self, fields):
        """Append one record; durable when this returns. Errors reach the caller."""
        seq = self.log.append(fields)
        fn = self.cfg["on_record"]
        if fn is not None:
            fn(fields, seq)
        return seq

    def _book_or_log(self, fields, what):
        """An outcome that fails to write leaves its intent open: the re-tap or clearing settles
        it, so the failure is logged, not raised."""
        try:
            self._book(fields)
            return True
        except Exception as e:  # noqa: BLE001 - LogFull, OSError: the intent stays open
            _log.error("%s not written (the intent stays open): %s", what, e)
            return False

    # -- the tap -------------------------------------------------------------------------------

    def tap(self, card_link, fare_request, now):
        if self._unlogged:
            self.log_done()
        card = self._card
        if card is None:
            self._res = Result()
            self._info = tunion.new_info()
            self._dt = bytearray(7)
            self._r1e = bytearray(tunion.LEN_1E)
            self._rec = {}
            card = self._card = tunion.Card(card_link)
        else:
            card.reset(card_link)
        res = self._res
        res.reset()
        try:
            self._tap(card, card_link, fare_request, now, res)
        except _Stop as s:
            res.reason = s.reason
            res.detail = s.detail
            if s.balance is not None:
                res.balance_after = s.balance  # nothing was taken: the balance as it stands
        except ProtocolError as e:  # the card answered, but not in a well-formed frame
            res.reason = CARD_ERROR
            res.detail = "card link: %s" % e
        except LinkError as e:  # the card left (or the reader failed) before any debit was sent
            res.reason = TAP_AGAIN
            res.detail = "card link: %s %s" % (type(e).__name__, e)
        except (ApduError, tunion.CardDataError, ValueError) as e:
            res.reason = CARD_ERROR
            res.detail = str(e)
        if res.reason == OK:
            self._unlogged = True  # formatted by log_done(), once the rider has gone
        else:
            _log.warning("tap refused: %s %s", res.reason, res.detail)
        return res

    def log_done(self):
        """The log line of the last tap's sale; the app calls it when the tap is over (no text
        is formatted while the rider waits). The next tap calls it too, if nobody did."""
        if self._unlogged:
            self._unlogged = False
            res = self._res
            _log.info("tap OK: %d fen, balance %s", res.amount, res.balance_after)

    def _tap(self, card, link, fare_request, now, res):
        if getattr(link, "iso_dep", True) is False:
            raise _Stop(NO_ISO_DEP, "card is not ISO 14443-4")
        if not self.psam.ready and not self.boot():
            raise _Stop(PSAM_ERROR, "PSAM not ready")
        info = self._select(card)
        res.card = info
        # Unconfirmed debits of this card are settled first: a debit stands even if the card
        # expired since, and nothing is sold before the log knows what the card did.
        if self._has_open() and self._settle(card, info["card_no"], now, res):
            return
        self._check_dates(info, now)
        tunion.parse_17(card.read_answer(tunion.SFI_17, tunion.LEN_17_USED), info)
        rid = self.cfg["read_1a"]
        info["rec1a"] = None
        if rid:
            rec1a = card.read_record(tunion.SFI_1A, rid & 0xFF, tunion.LEN_1A)
            if rec1a is not None and rec1a[5] != 0:
                raise _Stop(LOCKED, "industry record %04X locked" % rid)
            info["rec1a"] = rec1a
        req = fare_request(info) if callable(fare_request) else fare_request
        if req is None:
            raise _Stop(NO_FARE, "no fare for this card")
        if isinstance(req, str):
            raise _Stop(req, "refused by the fare rules")
        if _get(req, "lock"):
            self._lock(card, info, req, now, res)
            return
        self._purchase(card, info, req, now, res)

    def _select(self, card):
        aid = None
        resp = None
        for name in self.cfg["aids"]:
            resp = card.select_answer(name)
            sw = sw_of(resp)
            if sw == 0x9000:
                aid = name
                break
            if sw in (0x6283, 0x6284, 0x9303, 0x6A81):
                raise _Stop(LOCKED, "SELECT: %s" % sw_name(sw))
            if sw != 0x6A82:
                raise _Stop(CARD_ERROR, "SELECT: %s" % sw_name(sw))
        if aid is None:
            raise _Stop(NOT_TUNION, "no T-Union application")
        try:
            at = tunion.fci_15(resp, len(resp) - 2, aid)
        except tunion.CardDataError as e:
            raise _Stop(CARD_ERROR, "SELECT answer: %s" % e)
        if at < 0:  # only when the FCI lacks 9F0C
            resp = card.read_answer(tunion.SFI_15, tunion.LEN_15)
            at = 0
        info = tunion.parse_15(resp, self._info, at)
        info["aid"] = aid  # the DF name begins with it (fci_15 checked)
        if info["app_type"] not in (0x02, 0x03):
            raise _Stop(NOT_TUNION, "application type %02X" % info["app_type"])
        return info

    def _check_dates(self, info, now):
        if info["enabled"] != 0x01:
            raise _Stop(DISABLED, "enabled flag %02X" % info["enabled"])
        dt = timeutil.bcd_datetime_into(self._dt, now, self.cfg["tz"])
        today = _bcd_num(dt, 4)
        if today < info["start"]:
            raise _Stop(NOT_YET_VALID, "valid from %d" % info["start"])
        if today > info["expiry"]:
            raise _Stop(EXPIRED, "expired %d" % info["expiry"])

    # -- purchase ------------------------------------------------------------------------------

    def _psam(self, fn, *args):
        try:
            return fn(*args)
        except (PsamError, LinkError, ApduError) as e:
            self.psam.ready = False  # re-boot it before the next sale
            raise _Stop(PSAM_ERROR, "%s: %s" % (type(e).__name__, e))

    def _purchase(self, card, info, req, now, res):
        amount = _u(_get(req, "debit", 0), _MAX_AMOUNT, "debit")
        must = _u(_get(req, "must_cover", amount), _MAX_AMOUNT, "must_cover")
        must = max(must, amount)
        # Every request value is checked before the card or the PSAM is asked anything.
        txn_type = _u(_get(req, "txn_type", TXN_SINGLE), 0xFF, "txn_type")
        route = _u(_get(req, "route", 0), 0xFFFF, "route")
        stop = _u(_get(req, "stop", 0), 0xFFFF, "stop")
        fare_rule = _u(_get(req, "fare_rule", 0), 0xFF, "fare_rule")
        discount = _u(_get(req, "discount", 0), 0xFFFF, "discount")
        rec1a = _get(req, "record_1a")
        if rec1a is not None and (len(rec1a) != tunion.LEN_1A or rec1a[0] != 0x27):
            raise _Stop(NO_FARE, "record_1a must be 128 bytes starting 27xx")
        bus = _get(req, "bus_1a")
        if bus is not None:
            if _get(bus, "status") not in (0x01, 0x02):
                raise _Stop(NO_FARE, "bus_1a status must be 1 (boarding) or 2 (alighting)")
            marked = _u(_get(bus, "marked", 0), _MAX_AMOUNT, "marked")
            mileage = _u(_get(bus, "mileage", 0), 0xFFFF, "mileage")
        industry = _u(_get(req, "industry", self.cfg["industry"]), 0xFF, "industry")
        operator = _u(_get(req, "operator", self.cfg["operator"]), 0xFFFF, "operator")
        if not self.log.can_accept_purchase():  # room for the intent and its outcome
            raise _Stop(JOURNAL_FULL, "the log refuses purchases")
        tid = self.psam.terminal_id
        psam = self.psam
        # 8070's header goes ahead: the PSAM's procedure byte comes while the card works on
        # INITIALIZE, so only the data (which needs INIT's answer) are left to send after it.
        try:
            psam.announce_purchase()
        except (PsamError, LinkError, ApduError) as e:
            self._psam_failed(e)
        try:
            init = self._init_real(card, amount, must, tid)
        except BaseException:
            psam.abandon_purchase()  # filler data: the PSAM is not left waiting (no sale)
            raise
        real_before = self._real
        dt = self._dt  # set by _check_dates: the tap's local date and time
        # 8070 goes out now: the PSAM computes MAC1 while the card takes its first cache update.
        try:
            psam.start_purchase(
                init["random"],
                init["atc"],
                amount,
                tunion.TXN_CAPP,
                dt,
                init["key_version"],
                init["alg_id"],
                info["serial_low"],
                info["issuer8"],
                (info["card_no"], init["atc"]),
            )
        except (PsamError, LinkError, ApduError) as e:
            self._psam_failed(e)
        rec1e = self._record_1e(
            txn_type, industry, route, stop, operator, amount, real_before - amount, dt, tid
        )
        # The reference's order is 0x1A then 0x1E (a card may refuse 0x1A after 0x1E). The card
        # writes whichever comes first while the PSAM computes; a bus record waits for the
        # PSAM's serial, which it holds.
        first_1e = rec1a is None and bus is None
        try:
            if first_1e:
                card.update_capp(tunion.SFI_1E, 0x00, rec1e)
            elif rec1a is not None:
                self._update_1a(card, rec1a)
        except BaseException:
            psam.abandon_purchase()  # keep the PSAM link in step before giving up
            raise
        try:
            ans = psam.finish_raw()  # serial (0-3), MAC1 (4-7)
        except (PsamError, LinkError, ApduError) as e:
            self._psam_failed(e)
        serial = (ans[0] << 24) | (ans[1] << 16) | (ans[2] << 8) | ans[3]
        if bus is not None:
            import bus1a

            rec1a = bus1a.bus_record(
                info.get("rec1a"),
                _get(bus, "status"),
                self.cfg["city"],
                self.cfg["institution"],
                operator,
                route,
                stop,
                _get(bus, "vehicle", b""),
                tid,
                dt,
                amount,
                serial,
                marked,
                _get(bus, "direction", 0xAB),
                mileage,
            )
        if bus is not None:
            self._update_1a(card, rec1a)
        if not first_1e:
            card.update_capp(tunion.SFI_1E, 0x00, rec1e)
        before = max(real_before, 0)
        rec = self._rec
        rec["kind"] = record.DEBIT_INTENT
        rec["time"] = now
        rec["psam_tid"] = tid
        rec["psam_serial"] = serial
        rec["card_no"] = info["card_no"]
        rec["issuer"] = info["issuer"]
        rec["card_type"] = info.get("card_type", 0)
        rec["txn_type"] = txn_type
        rec["amount"] = amount
        rec["balance_before"] = before
        rec["balance_after"] = max(before - amount, 0)
        rec["card_atc"] = init["atc"]
        rec["tac"] = 0
        rec["route"] = route
        rec["stop"] = stop
        rec["fare_rule"] = fare_rule
        rec["discount"] = discount
        rec["flags"] = 0
        rec["reason"] = self._tzc
        # The intent is durable before DEBIT leaves: whatever happens next, the log knows.
        try:
            self._book(rec)
        except Exception as e:  # noqa: BLE001 - LogFull or a flash error: sell nothing
            raise _Stop(JOURNAL_FULL, "intent not written: %s" % e)
        try:
            r = card.debit_raw(ans, dt, ans, 4)  # TAC (0-3), MAC2 (4-7)
        except LinkError as e:
            # The card may have executed DEBIT: the intent stays open for the re-tap.
            raise _Stop(TAP_AGAIN, "card left during DEBIT: %s" % type(e).__name__)
        except ApduError as e:
            if e.sw == 0x9000 or e.sw not in _DEBIT_REFUSALS or card.chained:
                # A 9000 with a malformed body, a memory error (6581), 9406, anything not known
                # to come before the write, or a failure after 61xx: it may have debited. The
                # intent stays open; the re-tap reads the card's history.
                raise _Stop(TAP_AGAIN, "DEBIT answer: %s (the debit may stand)" % e)
            # A definite refusal: nothing was debited, the intent is closed as void.
            why = {0x9302: VOID_MAC1, 0x9401: VOID_INSUFFICIENT}.get(e.sw, VOID_REFUSED)
            rec["kind"] = record.DEBIT_VOID
            rec["reason"] = why
            self._book_or_log(rec, "DEBIT_VOID")
            if e.sw == 0x9302:
                raise _Stop(MAC1_FAILED, str(e))
            if e.sw == 0x9401:
                raise _Stop(INSUFFICIENT, str(e))
            raise _Stop(CARD_ERROR, str(e))
        # The card has debited: the rider is told now; MAC2 check and the outcome follow.
        rec["kind"] = record.PURCHASE
        tac = r[0:4]
        rec["tac"] = tac if isinstance(tac, bytes) else bytes(tac)  # kept: not the link's buffer
        res.reason = OK
        res.record = rec
        res.amount = amount
        res.balance_after = real_before - amount
        fn = self.cfg["on_debited"]
        if fn is not None:
            try:
                fn(res)
            except Exception as e:  # noqa: BLE001 - a display fault must not stop the booking
                _log.error("on_debited failed: %s %s", type(e).__name__, e)
        flags = 0
        try:
            if not psam.credit(r, 4):
                flags = record.FLAG_MAC2_UNVERIFIED
                res.reason = MAC2_FAILED
                res.detail = "PSAM rejected MAC2 (the card did debit)"
        except (PsamError, LinkError, ApduError) as e:
            _log.error("MAC2 not checked: %s", e)
            psam.ready = False
            flags = record.FLAG_MAC2_UNVERIFIED
        rec["flags"] = flags
        self._book_or_log(rec, "PURCHASE")

    def _psam_failed(self, e):
        self.psam.ready = False  # re-boot it before the next sale
        raise _Stop(PSAM_ERROR, "%s: %s" % (type(e).__name__, e))

    def _update_1a(self, card, rec1a):
        try:
            card.update_capp(tunion.SFI_1A, rec1a[1], rec1a)
        except ApduError as e:
            if e.sw == 0x9407:
                raise _Stop(LOCKED, "industry record locked")
            raise

    def _init_real(self, card, amount, must, tid):
        """INITIALIZE FOR CAPP PURCHASE and the real balance (without overdraft) -> init; the
        real balance in self._real.
        The card's own 9401 check counts its overdraft allowance; the validator's must not. Cards
        differ in whether INIT's balance includes the allowance (SH-AGM; UNCONFIRMED), so with
        an allowance (INIT's limit > 0) the real balance (805C P1=03) and the used overdraft
        (P1=02) are read and INIT is sent again: 3 more APDUs, only for overdraft cards, and
        only 2 for the refused ones. Without one both readings agree: INIT is enough.
        balance_check "p103" reads both before INIT on every card (2 more APDUs)."""
        real = used = None
        if self.cfg["balance_check"] == "p103":
            real, used = card.balance(0x03), card.balance(0x02)
        init = self._init(card, amount, tid)
        if real is None and init["overdraft_limit"]:
            real, used = card.balance(0x03), card.balance(0x02)
            self._check_real(real, used, must)
            init = self._init(card, amount, tid)  # the reads ended INIT's sequence
        if real is None:
            real, used = init["balance"], 0
        self._check_real(real, used, must)
        self._real = real
        return init

    def _check_real(self, real, used, must):
        if used:
            raise _Stop(INSUFFICIENT, "overdraft in use: %s" % _yuan(used), real)
        if real < must:
            raise _Stop(INSUFFICIENT, "real balance %s < %s" % (_yuan(real), _yuan(must)), real)

    def _init(self, card, amount, tid):
        try:
            return card.init_capp(self.psam.key_index, amount, tid)
        except ApduError as e:
            if e.sw == 0x9401:
                raise _Stop(INSUFFICIENT, "card: balance below %s" % _yuan(amount))
            if e.sw in (0x9408, 0x9303, 0x6A81):
                raise _Stop(LOCKED, str(e))
            raise _Stop(CARD_ERROR, str(e))

    def _record_1e(self, txn_type, industry, route, stop, operator, amount, after, dt, tid):
        r = self._r1e  # every byte is set: zeros where the record has nothing
        r[0:48] = _ZERO_1E  # slice stores of whole buffers: C copies, no allocation
        r[0] = txn_type
        r[3:9] = tid  # terminal number: 00 00 + the PSAM's 6 bytes
        r[9] = industry
        tunion._put(r, 10, 2, route)
        tunion._put(r, 12, 2, stop)
        tunion._put(r, 14, 2, operator)
        tunion._put(r, 17, 4, amount)
        tunion._put(r, 21, 4, max(after, 0))
        r[25:32] = dt
        r[32:34] = self.cfg["city"]
        r[34:42] = self.cfg["institution"]
        return r

    # -- the taps that are not a plain sale: firmware/settle.py, imported when first needed ----

    def _settle(self, card, card_no, now, res):
        import settle

        return settle.settle(self, card, card_no, now, res)

    def _lock(self, card, info, req, now, res):
        import settle

        settle.lock(self, card, info, req, now, res)
