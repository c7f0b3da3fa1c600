"""Clearing check: recompute each purchase's TAC where the issuer's TAC key is configured, as a
clearing centre would, and flag the record 'ok', 'bad' or 'unchecked' (no key for its issuer).

The TAC covers amount (4) | transaction type (1) | terminal number (6) | terminal transaction
serial (4) | date (4) | time (3), local time in BCD (CSDN TAC article, back-office code),
under the card's TAC key: the issuer's TAC root key diversified by the 8-byte issuer id and the
card serial's low 8 bytes. The local date and time are the record's own: its `time` in the UTC
offset the validator recorded with the sale (`record.tz_of(reason)`), not the collector's zone;
only a record from firmware that did not record it falls back to the configured `tz`. Zero-amount
purchases (a boarding tap that marks the fare) carry a TAC like any other and are checked too.
The cryptography is the card simulator's (`tools/sim/crypto.py`), the
same formulas the simulated cards use; a real clearing centre would call its HSM here instead.
"""

import functools
import logging
import time

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


@functools.lru_cache(maxsize=65536)
def _tac_key(alg, root, issuer8, low8):
    """The card's TAC key (after the halves XOR for 3DES), per card: diversifying costs four
    block encryptions, and a card taps many times."""
    from tools.sim import crypto

    s = crypto.suite(alg)
    return s.tac_key(s.card_key(root, issuer8, low8))


@functools.lru_cache(maxsize=65536)
def _cbc(alg, key):
    """A CBC cipher (zero IV) under a card's TAC key, kept with the key: building one costs
    more than the MAC it computes."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if alg == "3des":
        return Cipher(TripleDES(key * 3), modes.CBC(bytes(8))), 8
    return Cipher(algorithms.SM4(key), modes.CBC(bytes(16))), 16


def _mac_fast(alg, key, data):
    """The PBOC MAC of tools/sim/crypto.py in one CBC pass (an 8-byte DES key, or SM4): the same
    value as crypto.suite(alg).mac(key, data), about ten times cheaper."""
    if alg == "3des" and len(key) != 8:
        from tools.sim import crypto

        return crypto.suite(alg).mac(key, data)
    cipher, block = _cbc(alg, bytes(key))
    msg = bytes(data) + b"\x80"
    msg += bytes(-len(msg) % block)
    enc = cipher.encryptor()
    out = enc.update(msg) + enc.finalize()
    return out[-block:][:4]


def tac_of(key, rec, tz=timeutil.DEFAULT_TZ_SECONDS):
    """The TAC a genuine card would have returned for this decoded record (`tz`: only for a
    record that does not say its offset)."""
    card_no = bytes(rec["card_no"])
    tk = _tac_key(key.alg, key.root, key.issuer8, card_no[2:10])
    when = timeutil.bcd_datetime(rec["time"], local_offset(rec, tz))
    data = (
        rec["amount"].to_bytes(4, "big")
        + bytes((TXN_CAPP,))
        + bytes(rec["psam_tid"])
        + rec["psam_serial"].to_bytes(4, "big")
        + bytes(when[:7])
    )
    return _mac_fast(key.alg, tk, data)


# Exceptions a record can carry (records.exceptions, a comma list). Each keeps the record out of
# settlement (it is stored for audit and listed by `python -m tools.collector exceptions`) except
# those in REPORT_ONLY, which are listed but settle.
EXC_TAC_BAD = "tac_bad"  # the TAC does not verify: the amount, date or terminal was altered
EXC_TAC_NOKEY = "tac_nokey"  # no TAC key for the card's issuer: the money cannot be checked
EXC_TAC_MISSING = "tac_missing"  # no TAC (a recovered purchase whose proof the card did not give)
EXC_AMOUNT = "amount"  # above the fare tables' maximum
EXC_BALANCE = "balance"  # balance_after is not balance_before - amount
EXC_DATE = "date"  # outside the device's plausible window (before provisioning, in the future)
EXC_TEST = "test"  # FLAG_TEST: a bench or simulation record, never money
EXC_TSN_DUP = "tsn_dup"  # the (PSAM terminal, serial) of another held purchase
EXC_ATC_DUP = "atc_dup"  # the (card number, card counter) of another held purchase
EXC_PSAM = "psam"  # the PSAM is not registered to the device that sent the record
EXC_CLOCK = "clock_unset"  # FLAG_CLOCK_UNSET: sold on an untrusted clock (reported, settles)
REPORT_ONLY = frozenset((EXC_CLOCK,))

# Validator time (s since 2000) of 2025-01-01: no validator sold before it.
EARLIEST = 788918400
# A record may be this far ahead of the collector's clock (a validator's clock a little fast).
FUTURE_SLACK = 86400
# Fare tables cap a single fare (firmware/params.py `max_fare`, 5000 fen by default; rail fares
# `rail_max_fare`); the collector refuses to settle more than this for one tap.
DEFAULT_MAX_AMOUNT = 5000


class Clearing:
    """keys: {issuer (the record's 4-byte issuer field, as bytes): IssuerKey or [IssuerKey, ...]
    (one per algorithm)}; tz: the offset of records that do not carry theirs (firmware before the
    offset was recorded); max_amount: the highest fare the fare tables allow (fen)."""

    def __init__(self, keys=None, tz=timeutil.DEFAULT_TZ_SECONDS, max_amount=DEFAULT_MAX_AMOUNT):
        self.keys = {}
        for issuer, k in dict(keys or {}).items():
            self.keys[bytes(issuer)] = list(k) if isinstance(k, (list, tuple)) else [k]
        self.tz = tz
        self.max_amount = max_amount

    def verdict(self, rec):
        """'ok', 'bad', 'nokey' (no key for its issuer), 'missing' (no TAC), None (not money)."""
        if rec.get("kind") not in (record.PURCHASE, record.PURCHASE_RECOVERED):
            return None  # not a purchase: nothing to clear
        keys = self.keys.get(bytes(rec.get("issuer") or b""))
        if not keys:
            return "nokey"
        if not any(rec.get("tac") or b""):
            return "missing" if rec.get("flags", 0) & record.FLAG_TAC_MISSING else "bad"
        for key in keys:
            try:
                want = tac_of(key, rec, self.tz)
            except (KeyError, ValueError, TypeError, AttributeError) as e:
                log.warning("seq %s: TAC not computable (%s)", rec.get("seq"), e)
                continue
            if bytes(want) == bytes(rec["tac"]):
                return "ok"
        return "bad"

    def check(self, rec, not_before=EARLIEST, now=None):
        """-> (tac verdict, [exceptions]) of one decoded record. not_before: the start of the
        device's plausible window (validator time; its provisioning date); now: validator time
        (default the clock)."""
        tac = self.verdict(rec)
        exc = []
        if tac is None:
            return None, exc
        if tac == "bad":
            exc.append(EXC_TAC_BAD)
        elif tac == "nokey":
            exc.append(EXC_TAC_NOKEY)
        elif tac == "missing":
            exc.append(EXC_TAC_MISSING)
        amount = rec.get("amount") or 0
        if amount > self.max_amount:
            exc.append(EXC_AMOUNT)
        if rec.get("balance_after") != (rec.get("balance_before") or 0) - amount:
            exc.append(EXC_BALANCE)
        if now is None:
            now = int(time.time()) - timeutil_epoch()
        t = rec.get("time") or 0
        if t < max(not_before, EARLIEST) or t > now + FUTURE_SLACK:
            exc.append(EXC_DATE)
        flags = rec.get("flags") or 0
        if flags & record.FLAG_TEST:
            exc.append(EXC_TEST)
        if flags & record.FLAG_CLOCK_UNSET:
            exc.append(EXC_CLOCK)
        return tac, exc


def timeutil_epoch():
    return 946684800  # 2000-01-01 UTC in Unix time: validator time = Unix time - this


def load_keys(obj):
    """From JSON, per issuer (the record's 4-byte issuer field, hex) and algorithm:
    {"31040000": {"3des": {"root": hex, "issuer8": hex}, "sm4": {"root": hex, "issuer8": hex}}}
    The older one-key form {"31040000": {"root": hex, "issuer8": hex, "alg": "3des"}} is read too.
    ValueError on anything else."""
    if not isinstance(obj, dict):
        raise ValueError("TAC key file: a JSON object by issuer expected")
    out = {}
    for issuer, v in obj.items():
        try:
            iss = bytes.fromhex(issuer)
            if len(iss) != 4:
                raise ValueError("issuer %r is not 4 bytes of hex" % issuer)
            if "root" in v:
                v = {v.get("alg", "3des"): v}
            keys = []
            for alg, k in v.items():
                if alg not in ("3des", "sm4"):
                    raise ValueError("unknown algorithm %r" % alg)
                keys.append(IssuerKey(bytes.fromhex(k["root"]), bytes.fromhex(k["issuer8"]), alg))
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError("TAC key file, issuer %s: %s" % (issuer, e))
        out[iss] = keys
    return out


def load_key_file(path):
    """The operator's TAC key file. It holds issuer root keys: refused unless only its owner can
    read it (mode 0600 or 0400)."""
    import json
    import os
    import stat

    st = os.stat(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            "TAC key file %s is readable by others (mode %o): chmod 600 it"
            % (path, stat.S_IMODE(st.st_mode))
        )
    with open(path, encoding="utf-8") as f:
        return load_keys(json.load(f))


def simulator_keys():
    """The documented test-key set: the T-Union lab's published TAC test root key
    (tools/sim/crypto.py TEST_ROOT_KEYS) under both algorithms, for every issuer of the card
    simulator's profiles (tools/sim/profiles/*.json) and the synthetic records'
    (tools/collector/synth.py). Simulated cards only: real cards never use these keys."""
    import json
    from pathlib import Path

    from tools.sim import crypto

    root = crypto.TEST_ROOT_KEYS["tac"]
    issuers = {bytes.fromhex("3104000000000000")}  # synth.py's cards
    for p in sorted((Path(__file__).resolve().parents[1] / "sim" / "profiles").glob("*.json")):
        t = (json.loads(p.read_text(encoding="utf-8")) or {}).get("tunion") or {}
        if t.get("issuer"):
            issuers.add(bytes.fromhex(t["issuer"]))
    return {i8[:4]: [IssuerKey(root, i8, "3des"), IssuerKey(root, i8, "sm4")] for i8 in issuers}
