"""Clearing check: recompute each purchase's TAC where the issuer's TAC key is configured, as a
clearing centre would, and flag the record 'ok', 'bad' or 'unchecked' (no key for its issuer).

The TAC covers amount (4) | transaction type (1) | terminal number (6) | terminal transaction
serial (4) | date (4) | time (3), local time in BCD (reference fare-collection.md section 3.6),
under the card's TAC key: the issuer's TAC root key diversified by the 8-byte issuer id and the
card serial's low 8 bytes. The local date and time are the record's own: its `time` in the UTC
offset the validator recorded with the sale (`record.tz_of(reason)`), not the collector's zone;
only a record from firmware that did not record it falls back to the configured `tz`. Zero-amount
purchases (a boarding tap that marks the fare) carry a TAC like any other and are checked too.
The cryptography is the card simulator's (`tools/sim/crypto.py`), the
same formulas the simulated cards use; a real clearing centre would call its HSM here instead.
"""

import logging

import record
import timeutil

log = logging.getLogger("collector.clearing")


class IssuerKey:
    """root: the TAC root key; issuer8: the issuer id the card diversifies with (file 0x15);
    alg: '3des' or 'sm4'."""

    def __init__(self, root, issuer8, alg="3des"):
        self.root = bytes(root)
        self.issuer8 = bytes(issuer8)
        self.alg = alg
        if len(self.issuer8) != 8:
            raise ValueError("issuer id must be 8 bytes")


# The validator sells with the compound (CAPP) purchase only (docs/purchase.md), so the card's
# TAC covers transaction type 09; the record's own txn_type is the 0x1E transit type (06 single
# ride, 03/04 boarding/alighting, ...), which the TAC does not cover.
TXN_CAPP = 0x09


def local_offset(rec, default=timeutil.DEFAULT_TZ_SECONDS):
    """The UTC offset (s) the validator took the card's date and time in, from the record."""
    tz = record.tz_of(rec.get("reason") or 0)
    return default if tz is None else tz


def tac_of(key, rec, tz=timeutil.DEFAULT_TZ_SECONDS):
    """The TAC a genuine card would have returned for this decoded record (`tz`: only for a
    record that does not say its offset)."""
    from tools.sim import crypto

    s = crypto.suite(key.alg)
    card_no = bytes(rec["card_no"])
    dtk = s.card_key(key.root, key.issuer8, card_no[2:10])
    when = timeutil.bcd_datetime(rec["time"], local_offset(rec, tz))
    return crypto.tac(
        s,
        dtk,
        rec["amount"].to_bytes(4, "big"),
        TXN_CAPP,
        bytes(rec["psam_tid"]),
        rec["psam_serial"].to_bytes(4, "big"),
        when[:4],
        when[4:7],
    )


class Clearing:
    """keys: {issuer (the record's 4-byte issuer field, as bytes): IssuerKey}; tz: the offset of
    records that do not carry theirs (firmware before the offset was recorded)."""

    def __init__(self, keys=None, tz=timeutil.DEFAULT_TZ_SECONDS):
        self.keys = dict(keys or {})
        self.tz = tz

    def verdict(self, rec):
        if rec.get("kind") not in (record.PURCHASE, record.PURCHASE_RECOVERED):
            return None  # not a purchase: nothing to clear
        key = self.keys.get(bytes(rec.get("issuer") or b""))
        if key is None:
            return "unchecked"
        if not any(rec.get("tac") or b""):
            log.warning("seq %s: purchase without a TAC: flagged", rec.get("seq"))
            return "bad"
        try:
            want = tac_of(key, rec, self.tz)
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            log.warning("seq %s: TAC not computable (%s): flagged", rec.get("seq"), e)
            return "bad"
        if bytes(want) != bytes(rec["tac"]):
            log.warning(
                "seq %s: TAC %s does not verify (want %s): flagged",
                rec.get("seq"),
                bytes(rec["tac"]).hex(),
                bytes(want).hex(),
            )
            return "bad"
        return "ok"


def load_keys(obj):
    """From JSON: {"31040000": {"root": hex, "issuer8": hex, "alg": "3des"}, ...}."""
    return {
        bytes.fromhex(issuer): IssuerKey(
            bytes.fromhex(v["root"]), bytes.fromhex(v["issuer8"]), v.get("alg", "3des")
        )
        for issuer, v in obj.items()
    }
