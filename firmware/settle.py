# The taps that are not a plain sale, out of purchase.py so that its module stays small in a
# board's heap (imported at the first such tap): settling the unconfirmed debits of a card that
# comes back, and locking a blacklisted card. The rules are in docs/purchase.md.
import log
import record
import timeutil
import tunion
from apdu import ApduError, build, expect, hexs, sw_of
from linkerr import LinkError
from psam_app import USAGE_LOCK, PsamError
from purchase import (
    BLACKLISTED,
    FLAG_APP_LOCKED,
    JOURNAL_FULL,
    MAC2_FAILED,
    OK,
    VOID_NOT_IN_HISTORY,
    _get,
    _Stop,
    _u,
)

_log = log.get("purchase")


def lock_mac(app, serial_low8, issuer8, key_version, challenge4, header5, sm4=False):
    """The 4-byte MAC for APPLICATION BLOCK: IV = challenge || zeros, data = header, 80-pad."""
    size = 16 if sm4 else 8
    app._expect(
        app._x(build(0x80, 0x1A, USAGE_LOCK, key_version, bytes(serial_low8) + issuer8)),
        0,
        "DES INIT (lock key)",
    )
    data = bytearray(2 * size)
    data[0:4] = challenge4
    data[size : size + 5] = header5
    data[size + 5] = 0x80
    return bytes(app._expect(app._x(build(0x80, 0xFA, 0x05, 0x00, data)), 4, "DES MAC"))


def prove(card, atc_after, txn_type=tunion.TXN_CAPP):
    """GET TRANSACTION PROVE -> (mac2, tac), or None when the card denies that transaction."""
    resp = card._x(build(0x80, 0x5A, 0x00, txn_type, atc_after.to_bytes(2, "big"), 0x08))
    sw = sw_of(resp)
    if sw != 0x9000:
        return None
    if len(resp) != 10:
        raise ApduError("GET TRANSACTION PROVE: %d data bytes" % (len(resp) - 2), sw)
    return bytes(resp[0:4]), bytes(resp[4:8])


def challenge(card):
    return bytes(expect(card._x(build(0x00, 0x84, 0x00, 0x00, None, 4)), 4, "GET CHALLENGE"))


def block(card, p1, p2, mac):
    expect(card._x(build(0x84, 0x1E, p1, p2, mac), False), 0, "APPLICATION BLOCK")


def find_history(card, counter, terminal, datetime7, amount):
    """Where the card's own 0x18 history holds a purchase with this counter, terminal, time and
    amount: 1 = its newest transaction, 2.. = older; None when the card never made it; 0 when
    the history no longer reaches back that far (unknown). The reference does not say whether
    a record keeps the counter INIT returned or the one after the debit, so either matches
    (terminal, time and amount single the record out). Newest first, so the search stops at
    the first counter older than both."""
    nxt = (counter + 1) & 0xFFFF
    amount4 = amount.to_bytes(4, "big")
    for n in range(1, 11):
        rec = card.read_record(tunion.SFI_18, n, tunion.LEN_18)
        if rec is None:
            return None
        c = (rec[0] << 8) | rec[1]
        if (
            (c == counter or c == nxt)
            and rec[9] in (0x06, 0x09)
            and rec[5:9] == amount4
            and rec[10:16] == terminal
            and rec[16:23] == datetime7
        ):
            return n
        if c < counter:
            return None
    return 0


def settle(p, card, card_no, now, res):
    """The card of one or more open intents is back: did it debit? Each open intent of this
    card (oldest first) is looked up in the card's 0x18 history (counter, terminal and time
    must all match: a proof alone could belong to another validator's later purchase) and
    closed by PURCHASE_RECOVERED (805A gives the TAC) or DEBIT_VOID. True when a recovered
    debit is this tap's ride (the newest on the card, within retap_window): no new sale."""
    settled = False
    for o in p.log.open_intents():
        if o["card_no"] != card_no or o["seq"] in p._unreachable:
            continue
        e = dict(o)  # the log's own view stays as it is
        for k in ("seq", "version", "crc32"):
            e.pop(k, None)
        dt = timeutil.bcd_datetime(e["time"], p.cfg["tz"])
        n = find_history(card, e["card_atc"], e["psam_tid"], dt, e["amount"])
        if n == 0:
            # Used more than 10 times since: the card cannot tell. The intent stays open,
            # uploaded as an unconfirmed debit, for clearing to settle by the card's counters.
            p._unreachable.add(o["seq"])
            _log.error(
                "unconfirmed debit stays open: card %s counter %d beyond its history",
                hexs(card_no),
                e["card_atc"],
            )
            continue
        if n is None:  # never debited: close it, then sell afresh
            e["kind"] = record.DEBIT_VOID
            e["reason"] = VOID_NOT_IN_HISTORY
            _close(p, e)
            res.extra.append(e)
            _log.info("torn purchase not executed by the card, counter %d", e["card_atc"])
            continue
        if _recover(p, card, e, n, now, res):
            settled = True
    return settled


def _close(p, rec):
    """Write the outcome of an open intent. If it cannot be written, nothing is sold on
    this tap (a new INIT could reuse the counter of a still-open intent); the intent stays
    open and the next tap of this card tries again."""
    try:
        p._book(rec)
    except Exception as e:  # noqa: BLE001 - LogFull, OSError
        raise _Stop(JOURNAL_FULL, "outcome not written: %s" % e)


def _recover(p, card, e, n, now, res):
    proof = prove(card, (e["card_atc"] + 1) & 0xFFFF) if n == 1 else None
    flags = record.FLAG_MAC2_UNVERIFIED
    reason = OK
    if proof is None:
        tac = 0
        flags |= record.FLAG_TAC_MISSING
    else:
        mac2, tac = proof
        # The PSAM can check MAC2 only while its last 8070 session is this purchase's.
        if p.psam.session == (e["card_no"], e["card_atc"]):
            try:
                if p.psam.credit(mac2):
                    flags = 0
                else:
                    reason = MAC2_FAILED
            except (PsamError, LinkError, ApduError) as err:
                _log.error("recovered MAC2 not checked: %s", err)
                p.psam.ready = False
    e["kind"] = record.PURCHASE_RECOVERED
    e["tac"] = tac
    e["flags"] = flags  # `reason` stays the intent's: the UTC offset it was sold in
    _close(p, e)
    _log.info("torn purchase completed on re-tap, counter %d", e["card_atc"])
    if n != 1 or now - e["time"] > p.cfg["retap_window"]:
        res.extra.append(e)  # an earlier ride: book it, then sell this one
        return False
    res.reason = reason
    if reason != OK:
        res.detail = "PSAM rejected the recovered MAC2"
    res.record = e
    res.amount = e["amount"]
    res.balance_after = e["balance_after"]
    return True


def _block(p, card, info, sm4):
    """GET CHALLENGE, the PSAM's lock MAC, APPLICATION BLOCK with P1 01 (SM4) or 00 (DES)."""
    challenge4 = challenge(card)
    p1 = 0x01 if sm4 else 0x00
    p2 = 0x01 if p.cfg["lock_permanent"] else 0x00
    header = bytes((0x84, 0x1E, p1, p2, 0x04))
    mac = p._psam(
        lock_mac,
        p.psam,
        info["serial_low"],
        info["issuer8"],
        p.cfg["lock_key_version_sm4" if sm4 else "lock_key_version"],
        challenge4,
        header,
        sm4,
    )
    block(card, p1, p2, mac)


def lock(p, card, info, req, now, res):
    res.reason = BLACKLISTED
    flags = 0
    if p.cfg["lock_enabled"]:
        # The lock's algorithm: the request's, SM4 for the SM4-only application, else DES
        # first and SM4 when the card refuses it (a dual card locked with SM4 keys). No
        # INITIALIZE: the identifier cards name there is not settled (SM4 details UNCONFIRMED
        # in public sources).
        sm4 = _get(req, "sm4")
        if sm4 is not None:
            tries = (bool(sm4),)
        elif info["aid"][: len(tunion.AID_EP_SM4)] == tunion.AID_EP_SM4:
            tries = (True,)
        else:
            tries = (False, True)
        for sm4 in tries:
            try:
                _block(p, card, info, sm4)
                flags = FLAG_APP_LOCKED
                res.detail = ""
                break
            except _Stop as s:
                res.detail = "lock failed: " + s.detail
                break  # the PSAM failed: another try would fail too
            except ApduError as e:
                res.detail = "lock failed: %s" % e
            except LinkError as e:
                res.detail = "lock failed: %s" % e
                break
    rec = {
        "kind": record.REFUSED,
        "time": now,
        "psam_tid": p.psam.terminal_id,
        "card_no": info["card_no"],
        "issuer": info["issuer"],
        "card_type": info.get("card_type", 0),
        "txn_type": 0,
        "amount": 0,
        "balance_before": 0,
        "balance_after": 0,
        "card_atc": 0,
        "psam_serial": 0,
        "tac": 0,
        "fare_rule": 0,
        "discount": 0,
        "route": _u(_get(req, "route", 0), 0xFFFF, "route"),
        "stop": _u(_get(req, "stop", 0), 0xFFFF, "stop"),
        "flags": flags,
        "reason": record.REASON_BLACKLIST,
    }
    res.record = rec
    try:
        p._book(rec)
    except Exception as e:  # noqa: BLE001 - a refusal record is not money: log and go on
        _log.error("blacklist record not written: %s", e)
