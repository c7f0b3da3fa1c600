# The per-tap entry point: select and check the T-Union application, decide with the caller's fare,
# run the compound purchase with the PSAM, and recover torn purchases on the re-tap.
# The order and the rules are in docs/purchase.md; the facts in reference tunion-card.md 3, 4, 8.
#
#   purchaser = Purchaser(PsamApp(psam_link), RamPendingStore(), config)
#   purchaser.boot()                              # once: PSAM terminal number, app, key index
#   result = purchaser.tap(card_link, fare, now)  # now: validator seconds since 2000 (UTC)
#   result.reason, result.amount, result.balance_after, result.card, result.record, result.extra
import log
import pending
import record
import timeutil
import tunion
from apdu import ApduError, hexs, sw_name
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
)

FLAG_APP_LOCKED = record.FLAG_APP_LOCKED  # REFUSED record: this tap locked the application

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
    "journal": None,  # fn(record) called before a pending purchase is forgotten
}

_log = log.get("purchase")


class Result:
    __slots__ = ("reason", "amount", "balance_after", "card", "record", "extra", "detail")

    def __init__(self):
        self.reason = CARD_ERROR
        self.amount = 0
        self.balance_after = None
        self.card = None
        self.record = None
        self.extra = []  # further records to journal (a recovered or unresolved older purchase)
        self.detail = ""

    def __repr__(self):
        return "<Result %s amount=%s balance=%s %s>" % (
            self.reason,
            self.amount,
            self.balance_after,
            self.detail,
        )


class _Stop(Exception):
    def __init__(self, reason, detail=""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


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
    def __init__(self, psam_app, pending_store, config=None):
        self.psam = psam_app
        self.store = pending_store
        cfg = dict(DEFAULTS)
        if config:
            cfg.update(config)
        if len(cfg["city"]) != 2 or len(cfg["institution"]) != 8:
            raise ValueError("config: city must be 2 bytes and institution 8 bytes (BCD)")
        if cfg["balance_check"] not in ("init", "p103"):
            raise ValueError("config: balance_check must be 'init' or 'p103'")
        self.cfg = cfg
        self._boots = 0
        self.entries = self._load()

    # -- boot and pending store ----------------------------------------------------------------

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

    def _load(self):
        try:
            return pending.decode(self.store.load())
        except pending.PendingError as e:
            # The blob is damaged: nothing in it can be trusted; say so loudly and go on.
            _log.error("pending purchases lost: %s", e)
            return []

    def _save(self):
        if self.entries:
            self.store.save(pending.encode(self.entries))
        else:
            self.store.clear()

    def pending(self):
        """The pending purchases (dicts), oldest first; for the status view and tests."""
        return list(self.entries)

    def _journal(self, rec):
        fn = self.cfg["journal"]
        if fn is not None:
            fn(rec)

    # -- the tap -------------------------------------------------------------------------------

    def tap(self, card_link, fare_request, now):
        res = Result()
        card = tunion.Card(card_link)
        try:
            self._tap(card, card_link, fare_request, now, res)
        except _Stop as s:
            res.reason = s.reason
            res.detail = s.detail
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
            _log.info("tap OK: %d fen, balance %s", res.amount, res.balance_after)
        else:
            _log.warning("tap refused: %s %s", res.reason, res.detail)
        return res

    def _tap(self, card, link, fare_request, now, res):
        if getattr(link, "iso_dep", True) is False:
            raise _Stop(NO_ISO_DEP, "card is not ISO 14443-4")
        if not self.psam.ready and not self.boot():
            raise _Stop(PSAM_ERROR, "PSAM not ready")
        info = self._select(card)
        res.card = info
        # A torn purchase is settled first: its debit stands even if the card expired since.
        entry = self._entry_for(info["card_no"])
        if entry is not None and self._recover(card, entry, now, res):
            return
        self._check_dates(info, now)
        tunion.parse_17(card.read_binary(tunion.SFI_17, tunion.LEN_17_USED), info)
        rid = self.cfg["read_1a"]
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
            sw, resp = card.select(name)
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
            df_name, f15 = tunion.parse_fci(resp[:-2], aid)
        except tunion.CardDataError as e:
            raise _Stop(CARD_ERROR, "SELECT answer: %s" % e)
        if f15 is None:  # only when the FCI lacks 9F0C
            f15 = card.read_binary(tunion.SFI_15, tunion.LEN_15)
        info = tunion.parse_15(f15)
        info["aid"] = df_name
        if info["app_type"] not in (0x02, 0x03):
            raise _Stop(NOT_TUNION, "application type %02X" % info["app_type"])
        return info

    def _check_dates(self, info, now):
        if info["enabled"] != 0x01:
            raise _Stop(DISABLED, "enabled flag %02X" % info["enabled"])
        today = timeutil.date_number(now, self.cfg["tz"])
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
        tid = self.psam.terminal_id
        real = None
        if self.cfg["balance_check"] == "p103":
            real = card.balance(0x03)
        try:
            init = card.init_capp(self.psam.key_index, amount, tid)
        except ApduError as e:
            if e.sw == 0x9401:
                raise _Stop(INSUFFICIENT, "card: balance below %d" % amount)
            if e.sw in (0x9408, 0x9303, 0x6A81):
                raise _Stop(LOCKED, str(e))
            raise _Stop(CARD_ERROR, str(e))
        # The card's own check counts its overdraft allowance; the validator's must not.
        real_before = init["balance"] - init["overdraft_limit"]
        if real is not None and real != real_before:
            raise _Stop(INSUFFICIENT, "overdraft in use: %d" % (real - real_before))
        if real_before < must:
            raise _Stop(INSUFFICIENT, "real balance %d < %d" % (real_before, must))
        dt = timeutil.bcd_datetime(now, self.cfg["tz"])
        token = (info["card_no"], init["atc"])
        serial, serial4, mac1 = self._psam(
            self.psam.init_purchase,
            init["random"],
            init["atc"],
            amount,
            tunion.TXN_CAPP,
            dt,
            init["key_version"],
            init["alg_id"],
            info["serial_low"],
            info["issuer8"],
            token,
        )
        rec1e = self._record_1e(
            txn_type, industry, route, stop, operator, amount, real_before - amount, dt, tid
        )
        card.update_capp(tunion.SFI_1E, 0x00, rec1e)
        if bus is not None:
            rec1a = tunion.bus_record(
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
        if rec1a is not None:
            try:
                card.update_capp(tunion.SFI_1A, rec1a[1], rec1a)
            except ApduError as e:
                if e.sw == 0x9407:
                    raise _Stop(LOCKED, "industry record locked")
                raise
        entry = {
            "card_no": info["card_no"],
            "issuer": info["issuer"],
            "card_type": info.get("card_type", 0),
            "txn_type": txn_type,
            "atc": init["atc"],
            "amount": amount,
            "balance_before": max(real_before, 0),
            "psam_serial": serial,
            "time": now,
            "route": route,
            "stop": stop,
            "fare_rule": fare_rule,
            "discount": discount,
            "psam_tid": tid,
            "datetime": dt,
        }
        self._add(entry, res)
        try:
            tac, mac2 = card.debit(serial4, dt, mac1)
        except LinkError as e:
            # The card may have executed DEBIT: keep the pending purchase for the re-tap.
            raise _Stop(TAP_AGAIN, "card left during DEBIT: %s" % type(e).__name__)
        except ApduError as e:
            if e.sw == 0x9000:  # a 9000 with a malformed body: it may well have debited
                raise _Stop(TAP_AGAIN, "malformed DEBIT answer: %s" % e)
            self._drop(entry)  # a definite refusal: nothing was debited
            if e.sw == 0x9302:
                raise _Stop(MAC1_FAILED, str(e))
            if e.sw == 0x9401:
                raise _Stop(INSUFFICIENT, str(e))
            raise _Stop(CARD_ERROR, str(e))
        flags = 0
        res.reason = OK
        try:
            if not self.psam.credit(mac2):
                flags = record.FLAG_MAC2_UNVERIFIED
                res.reason = MAC2_FAILED
        except (PsamError, LinkError, ApduError) as e:
            _log.error("MAC2 not checked: %s", e)
            self.psam.ready = False
            flags = record.FLAG_MAC2_UNVERIFIED
        res.record = self._record(record.PURCHASE, entry, tac, flags)
        res.amount = amount
        res.balance_after = real_before - amount
        if res.reason != OK:
            res.detail = "PSAM rejected MAC2 (the card did debit)"
        self._journal(res.record)
        self._drop(entry)

    def _record_1e(self, txn_type, industry, route, stop, operator, amount, after, dt, tid):
        r = bytearray(tunion.LEN_1E)
        r[0] = txn_type
        r[3:9] = tid  # terminal number: 00 00 + the PSAM's 6 bytes
        r[9] = industry
        r[10:12] = route.to_bytes(2, "big")
        r[12:14] = stop.to_bytes(2, "big")
        r[14:16] = operator.to_bytes(2, "big")
        r[17:21] = amount.to_bytes(4, "big")
        r[21:25] = max(after, 0).to_bytes(4, "big")
        r[25:32] = dt
        r[32:34] = self.cfg["city"]
        r[34:42] = self.cfg["institution"]
        return r

    def _record(self, kind, e, tac, flags):
        return {
            "kind": kind,
            "time": e["time"],
            "psam_tid": e["psam_tid"],
            "psam_serial": e["psam_serial"],
            "card_no": e["card_no"],
            "issuer": e["issuer"],
            "card_type": e["card_type"],
            "txn_type": e["txn_type"],
            "amount": e["amount"],
            "balance_before": e["balance_before"],
            "balance_after": max(e["balance_before"] - e["amount"], 0),
            "card_atc": e["atc"],
            "tac": tac,
            "route": e["route"],
            "stop": e["stop"],
            "fare_rule": e["fare_rule"],
            "discount": e["discount"],
            "flags": flags,
        }

    # -- tearing -------------------------------------------------------------------------------

    def _entry_for(self, card_no):
        for e in self.entries:
            if e["card_no"] == card_no:
                return e
        return None

    def _add(self, entry, res):
        if len(self.entries) >= pending.MAX_ENTRIES:
            self._unresolved(self.entries[0], res)
        self.entries.append(entry)
        self._save()

    def _unresolved(self, entry, res):
        """A torn purchase whose outcome cannot be learnt: journal it as such (REFUSED, reason
        OTHER, TAC missing) for the back office to settle from the card's counters."""
        rec = self._record(record.REFUSED, entry, 0, record.FLAG_TAC_MISSING)
        rec["reason"] = record.REASON_OTHER
        res.extra.append(rec)
        self._journal(rec)
        self._drop(entry)
        _log.error(
            "torn purchase unresolved: card %s counter %d", hexs(entry["card_no"]), entry["atc"]
        )

    def _drop(self, entry):
        if entry in self.entries:
            self.entries.remove(entry)
            self._save()

    def _recover(self, card, entry, now, res):
        """The card of a torn purchase is back: did it debit? True when that settles this tap.
        The card's 0x18 history decides (counter, terminal and time must all match: a proof
        alone could belong to another validator's later purchase); 805A then gives the TAC."""
        n = tunion.find_history(card, entry["atc"], entry["psam_tid"], entry["datetime"])
        if n == 0:  # used more than 10 times since: the card cannot tell any more
            self._unresolved(entry, res)
            return False
        if n is None:
            self._drop(entry)  # never debited: sell afresh
            _log.info("torn purchase not executed by the card, counter %d", entry["atc"])
            return False
        proof = card.prove((entry["atc"] + 1) & 0xFFFF) if n == 1 else None
        flags = record.FLAG_MAC2_UNVERIFIED
        reason = OK
        if proof is None:
            tac = 0
            flags |= record.FLAG_TAC_MISSING
        else:
            mac2, tac = proof
            # The PSAM can check MAC2 only while its last 8070 session is this purchase's.
            if self.psam.session == (entry["card_no"], entry["atc"]):
                try:
                    if self.psam.credit(mac2):
                        flags = 0
                    else:
                        reason = MAC2_FAILED
                except (PsamError, LinkError, ApduError) as e:
                    _log.error("recovered MAC2 not checked: %s", e)
                    self.psam.ready = False
        rec = self._record(record.PURCHASE_RECOVERED, entry, tac, flags)
        self._journal(rec)
        self._drop(entry)
        _log.info("torn purchase completed on re-tap, counter %d", entry["atc"])
        if n != 1 or now - entry["time"] > self.cfg["retap_window"]:
            res.extra.append(rec)  # an earlier ride: book it, then sell this one
            return False
        res.reason = reason
        if reason != OK:
            res.detail = "PSAM rejected the recovered MAC2"
        res.record = rec
        res.amount = entry["amount"]
        res.balance_after = rec["balance_after"]
        return True

    # -- blacklist -----------------------------------------------------------------------------

    def _lock(self, card, info, req, now, res):
        res.reason = BLACKLISTED
        flags = 0
        if self.cfg["lock_enabled"]:
            try:
                sm4 = _get(req, "sm4")
                if sm4 is None:
                    # The card names its algorithm in an INITIALIZE answer; amount 0 changes
                    # nothing on the card (only DEBIT does), and only blacklisted cards pay it.
                    alg = card.init_capp(self.psam.key_index, 0, self.psam.terminal_id)["alg_id"]
                    sm4 = alg == 0x04
                challenge = card.challenge()
                p1 = 0x01 if sm4 else 0x00
                p2 = 0x01 if self.cfg["lock_permanent"] else 0x00
                header = bytes((0x84, 0x1E, p1, p2, 0x04))
                mac = self._psam(
                    self.psam.lock_mac,
                    info["serial_low"],
                    info["issuer8"],
                    self.cfg["lock_key_version_sm4" if sm4 else "lock_key_version"],
                    challenge,
                    header,
                    sm4,
                )
                card.block(p1, p2, mac)
                flags = FLAG_APP_LOCKED
            except _Stop as s:
                res.detail = "lock failed: " + s.detail
            except (ApduError, LinkError) as e:
                res.detail = "lock failed: %s" % e
        entry = {
            "card_no": info["card_no"],
            "issuer": info["issuer"],
            "card_type": info.get("card_type", 0),
            "txn_type": 0,
            "atc": 0,
            "amount": 0,
            "balance_before": 0,
            "psam_serial": 0,
            "time": now,
            "route": _u(_get(req, "route", 0), 0xFFFF, "route"),
            "stop": _u(_get(req, "stop", 0), 0xFFFF, "stop"),
            "fare_rule": 0,
            "discount": 0,
            "psam_tid": self.psam.terminal_id,
        }
        rec = self._record(record.REFUSED, entry, 0, flags)
        rec["reason"] = record.REASON_BLACKLIST
        res.record = rec
        self._journal(rec)
