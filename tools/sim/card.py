"""A virtual contactless CPU card carrying the T-Union (JT/T 978) application, byte for byte.

Facts: TULAB, SH-AGM, BJ-BUS, MZT and the PBOC purchase articles (docs/sources.md, T-Union card
and PBOC crypto). The card answers APDUs as a real
card does, keeps its own balance, counters and cyclic files, computes TAC and MAC2 with real
cryptography (tools/sim/crypto.py), and records:

* ``audit``: every APDU it received (and removals/placements) as dicts;
* ``debits``: every debit it made: counter (the ATC the INIT returned), amount, tac, ...;
* ``violations``: anything a fare validator must never do: a SELECT of anything other than a
  T-Union application by name (PPSE included, other AIDs, by file id), any command while another
  application (or none) is selected, any read of SFI 0x16 (cardholder name and ID number).

Link simulators (NFC chips, the APDU hub) call ``exchange(apdu) -> bytes | None``: None means no
answer reached the reader (the card left the field, or it is not ISO 14443-4). ``process_apdu``
is the card alone, without field faults; it never raises.
"""

import copy
import json
import os
from pathlib import Path

from tools.sim import crypto

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
TUNION_RID = bytes.fromhex("A000000632")
PPSE_NAMES = (b"2PAY.SYS.DDF01", b"1PAY.SYS.DDF01")
SFI_15, SFI_16, SFI_17, SFI_18, SFI_1A, SFI_1E = 0x15, 0x16, 0x17, 0x18, 0x1A, 0x1E

SW_OK = b"\x90\x00"

# The transit account: the only applications a validator may address, by exactly these names
# (docs/card-simulator.md "Which AIDs are the transit account"). Phones answer a SELECT of the
# 8-byte EP name with their longer instance AID (ISO 7816-4 partial name), which is allowed.
TRANSIT_AIDS = (
    bytes.fromhex("A000000632010105"),  # EP, 3DES or dual (TULAB K1, every firmware)
    bytes.fromhex("A000000632010107"),  # EP, SM4 only (TULAB K2, lab document)
)

# Card behaviours the public sources leave open. A profile (or place_card overrides) carries them
# as "variant": {option: value}; the first value of each is the default. Source or "assumed":
VARIANT_OPTIONS = {
    # 0x18 record counter: the ATC that INIT returned ("init") or the one after the debit
    # ("next"). Assumed both ways: QT-TOOL and TUM give the layout, not which value is stored.
    "atc18": ("init", "next"),
    # UPDATE CAPP DATA CACHE: "any" order, or "1a_then_1e": 0x1A after 0x1E is refused (6985),
    # the order of the lab's state machine (TULAB statemachine.rst); strictness
    # itself assumed.
    "cache_order": ("any", "1a_then_1e"),
    # INIT balance: "available" includes the overdraft allowance (SH-AGM, observed once), "real"
    # is the real balance without it (assumed).
    "init_balance": ("available", "real"),
    # The algorithm identifier an SM4 card names in its INIT answer: 04 assumed (SM4 UNCONFIRMED),
    # 01 assumed (the APPLICATION BLOCK P1 value for SM4).
    "sm4_alg_id": (0x04, 0x01),
    # Answers with data: in one ("none"), as 61xx + GET RESPONSE ("61xx"), or 6Cxx for any Le
    # other than the exact length ("6cxx"); status words as SH-AGM and nfcard handle them.
    "chaining": ("none", "61xx", "6cxx"),
    # The SELECT answer carries 9F0C (FCI-SAMPLE, HCE-SAMPLE) or not (assumed).
    "fci_9f0c": (True, False),
    # Processing time factor for the reader simulators (1, or 3: a slow card; assumed).
    "slow": (1, 3),
}

# Named variants, the tearing matrix runs each on every profile (write faults are injected per
# point with fail_write(), as they strike one command, not every one).
VARIANTS = {
    "default": {},
    "atc18_next": {"atc18": "next"},
    "cache_1a_then_1e": {"cache_order": "1a_then_1e"},
    "init_real_balance": {"init_balance": "real"},
    "sm4_alg_01": {"sm4_alg_id": 0x01},
    "chain_61xx": {"chaining": "61xx"},
    "chain_6cxx": {"chaining": "6cxx"},
    "fci_without_9f0c": {"fci_9f0c": False},
    "slow_x3": {"slow": 3},
    "all_strict": {
        "atc18": "next",
        "cache_order": "1a_then_1e",
        "init_balance": "real",
        "sm4_alg_id": 0x01,
        "chaining": "61xx",
        "fci_9f0c": False,
    },
}


def variant_options(variant):
    """A full option dict from a variant name or a partial dict; ValueError on unknown values."""
    if variant is None:
        variant = {}
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise ValueError("unknown card variant %r" % variant)
        variant = VARIANTS[variant]
    out = {k: v[0] for k, v in VARIANT_OPTIONS.items()}
    for k, v in variant.items():
        if k not in VARIANT_OPTIONS or v not in VARIANT_OPTIONS[k]:
            raise ValueError(
                "card variant option %s=%r not one of %r" % (k, v, VARIANT_OPTIONS.get(k))
            )
        out[k] = v
    return out


def sw(value):
    return bytes(((value >> 8) & 0xFF, value & 0xFF))


def load_profile(name_or_path):
    """A profile dict by name (tools/sim/profiles/<name>.json) or by path to a JSON file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / (str(name_or_path) + ".json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def profile_names():
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def _b(hexstr, n=None):
    out = bytes.fromhex(hexstr or "")
    if n is not None and len(out) != n:
        raise ValueError("expected %d bytes, got %r" % (n, hexstr))
    return out


class VirtualCard:
    def __init__(self, profile, keys=None, variant=None):
        self.profile = copy.deepcopy(profile)
        p = self.profile
        self.name = p.get("name", "card")
        self.variant = variant_options(variant if variant is not None else p.get("variant"))
        self.slowness = self.variant["slow"]
        self.uid = _b(p["uid"])
        if len(self.uid) not in (4, 7, 10):
            raise ValueError("uid must be 4, 7 or 10 bytes")
        self.atqa = _b(p.get("atqa", "0004"), 2)
        self.iso_dep = bool(p.get("iso_dep", True))
        sak = int(p.get("sak", 0x20 if self.iso_dep else 0x08))
        self.sak = (sak | 0x20) if self.iso_dep else (sak & ~0x20)
        self.ats = _b(p.get("ats", "")) if self.iso_dep else b""
        self.apps = [dict(a, aid_bytes=_b(a["aid"])) for a in p.get("apps", [])]
        self.has_ppse = bool(p.get("ppse", False))
        t = p.get("tunion")
        self.tu = None
        if t:
            self.tu = self._load_tunion(t, keys or crypto.TEST_ROOT_KEYS)
        self.audit = []
        self.debits = []
        self.violations = []
        self.present = True
        self.faults = []  # dicts: when, ins, index, times
        self.forced = []  # dicts: ins, response, times
        self.write_faults = []  # dicts: ins, sw (None: power lost), applied, times
        self.pending_response = None  # data waiting for GET RESPONSE (61xx chaining)
        self._rng = int.from_bytes(self.uid[:4], "big") or 1
        self._reset_volatile()

    @classmethod
    def from_profile(cls, name_or_path, keys=None, variant=None, **tunion_overrides):
        profile = load_profile(name_or_path)
        if tunion_overrides:
            profile["tunion"] = dict(profile.get("tunion") or {}, **tunion_overrides)
        return cls(profile, keys, variant)

    # -- state -------------------------------------------------------------------------------

    def _load_tunion(self, t, keys):
        s = crypto.suite(t.get("algorithm", "3des"))
        issuer = _b(t["issuer"], 8)
        card_no = t["card_no"]
        if len(card_no) != 19 or not card_no.isdigit():
            raise ValueError("card_no must be 19 digits")
        serial = bytes.fromhex("0" + card_no)
        f15 = (
            issuer
            + bytes((t.get("app_type", 2), t.get("enabled", 1)))
            + serial
            + _b(t["start"], 4)
            + _b(t["expiry"], 4)
            + _b(t.get("fci_custom", "0000"), 2)
        )
        f17 = (
            _b(t.get("country", "00000156"), 4)
            + _b(t.get("province", "0000"), 2)
            + _b(t.get("city", "0000"), 2)
            + _b(t.get("interconnect", "0001"), 2)
            + bytes((t.get("card_type", 1),))
        ).ljust(60, b"\x00")
        f16 = bytes((1, 0)) + "TEST HOLDER".encode().ljust(20, b"\x00")
        f16 = (f16 + b"110101200001010000".ljust(32, b"\x00") + b"\x00")[:55]
        recs_1a = {}
        locked = {int(x, 16) for x in t.get("locked_1a", [])}
        for rid in t.get("records_1a", []):
            rid = int(rid, 16)
            rec = bytearray(128)
            rec[0:3] = bytes((rid >> 8, rid & 0xFF, 0x7D))
            rec[3] = 0x01
            rec[5] = 1 if rid in locked else 0
            recs_1a[rid & 0xFF] = rec
        low = serial[2:10]
        return {
            "suite": s,
            "issuer": issuer,
            "serial": serial,
            "f15": f15,
            "f16": f16,
            "f17": f17,
            "balance": int(t.get("balance", 0)),
            "overdraft_limit": int(t.get("overdraft_limit", 0)),
            "used_overdraft": int(t.get("used_overdraft", 0)),
            "balance_cap": int(t.get("balance_cap", 100000)),
            "key_version": int(t.get("key_version", 1)),
            "key_indexes": list(t.get("key_indexes", [1])),
            "lock": t.get("lock"),
            "atc": int(t.get("atc", 0)),
            "rec18": [],  # newest first, 23 bytes each, at most 10
            "rec1e": [],  # newest first, 48 bytes each, at most 30
            "rec1a": recs_1a,
            "dpk": s.card_key(keys["purchase"], issuer, low),
            "dtk": s.card_key(keys["tac"], issuer, low),
            "dlk": s.card_key(keys["lock"], issuer, low),
            "last_proof": None,
        }

    def _reset_volatile(self):
        self.selected = None  # the selected application dict, or None (MF)
        self.purchase = None  # state between INITIALIZE and DEBIT
        self.challenge = None
        self.pending_response = None
        self.index = 0  # commands since the card entered the field

    def remove(self):
        """The card leaves the field: every volatile state is lost."""
        self.present = False
        self._reset_volatile()
        self.audit.append({"event": "removed"})

    def place(self):
        """The card (re-)enters the field, powered afresh."""
        self.present = True
        self._reset_volatile()
        self.audit.append({"event": "placed"})

    @property
    def balance(self):
        return self.tu["balance"] if self.tu else None

    @property
    def atc(self):
        return self.tu["atc"] if self.tu else None

    def summary(self):
        t = self.tu or {}
        return {
            "name": self.name,
            "uid": self.uid.hex().upper(),
            "present": self.present,
            "balance": t.get("balance"),
            "used_overdraft": t.get("used_overdraft"),
            "overdraft_limit": t.get("overdraft_limit"),
            "atc": t.get("atc"),
            "lock": t.get("lock"),
            "debits": [_jsonable(d) for d in self.debits],
            "violations": list(self.violations),
            "commands": sum(1 for a in self.audit if "apdu" in a),
            "variant": dict(self.variant),
        }

    def record_1e(self, n=1):
        """The n-th newest 0x1E record (bytes) or None; for tests."""
        recs = self.tu["rec1e"] if self.tu else []
        return bytes(recs[n - 1]) if 0 < n <= len(recs) else None

    def record_1a(self, rid):
        return bytes(self.tu["rec1a"][rid & 0xFF]) if self.tu else None

    # -- fault injection ---------------------------------------------------------------------

    def fail_before(self, ins=None, index=None, times=1):
        """Leave the field before the matching command reaches the card (it does not execute)."""
        self.faults.append({"when": "before", "ins": ins, "index": index, "times": times})

    def fail_after(self, ins=None, index=None, times=1):
        """Execute the matching command, then leave before the answer reaches the reader."""
        self.faults.append({"when": "after", "ins": ins, "index": index, "times": times})

    def force_sw(self, ins, status, times=1):
        """Answer the next `times` commands with INS `ins` with `status` (int), unexecuted."""
        self.force_response(ins, sw(status), times)

    def force_response(self, ins, response, times=1):
        """Answer with raw bytes (garbage, short or long answers) instead of executing."""
        self.forced.append({"ins": ins, "response": bytes(response), "times": times})

    def fail_write(self, ins=0x54, status=0x6581, applied=True, times=1):
        """EEPROM tearing on the next matching command that writes: the card either applies the
        update (`applied`) or not, then answers `status` (6581 memory failure, 9406, ...) or,
        with status None, loses power before answering (it leaves the field)."""
        self.write_faults.append(
            {"ins": ins, "status": status, "applied": bool(applied), "times": times}
        )

    def clear_faults(self):
        self.faults.clear()
        self.forced.clear()
        self.write_faults.clear()

    def _match(self, items, apdu, extra=None):
        ins = apdu[1] if len(apdu) > 1 else None
        for item in items:
            if extra is not None and item["when"] != extra:
                continue
            if item["ins"] is not None and item["ins"] != ins:
                continue
            if item.get("index") is not None and item["index"] != self.index:
                continue
            item["times"] -= 1
            if item["times"] <= 0:
                items.remove(item)
            return item
        return None

    def exchange(self, apdu):
        """What a reader gets: the answer, or None when the card is gone / not ISO 14443-4."""
        apdu = bytes(apdu)
        if not self.present or not self.iso_dep:
            return None
        if self._match(self.faults, apdu, "before"):
            self.audit.append({"event": "gone before", "apdu": apdu, "resp": None, "lost": True})
            self.remove()
            return None
        forced = self._match(self.forced, apdu)
        if forced is not None:
            self.audit.append({"apdu": apdu, "resp": forced["response"], "forced": True})
            self.index += 1
            return forced["response"]
        after = self._match(self.faults, apdu, "after")
        wf = self._match_write(apdu)
        if wf is not None:
            return self._torn_write(apdu, wf)
        resp = self.process_apdu(apdu)
        if after:
            self.audit.append({"event": "gone after"})
            self.remove()
            return None
        return resp

    def _match_write(self, apdu):
        ins = apdu[1] if len(apdu) > 1 else None
        for item in self.write_faults:
            if item["ins"] is None or item["ins"] == ins:
                item["times"] -= 1
                if item["times"] <= 0:
                    self.write_faults.remove(item)
                return item
        return None

    def _torn_write(self, apdu, wf):
        """Run the command; if it wrote, keep or undo the write as the fault says, then answer
        with the fault's status word, or nothing (power lost)."""
        snap = self._snapshot()
        resp = self.process_apdu(apdu)
        wrote = resp[-2:] == SW_OK or resp[-2] == 0x61
        if wrote and not wf["applied"]:
            self._restore(snap)
        self.purchase = None
        self.pending_response = None
        self.audit.append(
            {
                "event": "write torn (%s, %s)"
                % (
                    "applied" if wf["applied"] else "not applied",
                    "power lost" if wf["status"] is None else "%04X" % wf["status"],
                )
            }
        )
        if not wrote:
            return resp
        if wf["status"] is None:
            self.remove()
            return None
        return sw(wf["status"])

    def _snapshot(self):
        t = self.tu or {}
        keep = (
            "balance",
            "used_overdraft",
            "atc",
            "rec18",
            "rec1e",
            "rec1a",
            "lock",
            "last_proof",
        )
        return ({k: copy.deepcopy(t.get(k)) for k in keep}, len(self.debits))

    def _restore(self, snap):
        state, ndebits = snap
        if self.tu:
            self.tu.update(state)
        del self.debits[ndebits:]

    # -- the card ----------------------------------------------------------------------------

    def process_apdu(self, apdu):
        apdu = bytes(apdu)
        entry = {"apdu": apdu, "app": self.selected["aid"] if self.selected else None}
        self.audit.append(entry)
        try:
            resp = self._chained(apdu)
        except Exception as exc:  # never let a card bug look like a card answer: record it
            self.violations.append("simulator error on %s: %r" % (apdu.hex(), exc))
            resp = sw(0x6F00)
        self.index += 1
        entry["resp"] = resp
        return resp

    def _violation(self, text):
        self.violations.append(text)

    def _chained(self, apdu):
        """The variant's answer chaining around _dispatch: GET RESPONSE after 61xx, and 6Cxx for
        a wrong Le (the command is then re-sent; DEBIT checks its Le before executing)."""
        mode = self.variant["chaining"]
        if len(apdu) >= 4 and apdu[0] == 0x00 and apdu[1] == 0xC0:
            pending, self.pending_response = self.pending_response, None
            if mode != "61xx" or pending is None:
                return sw(0x6985)
            le = apdu[4] if len(apdu) == 5 else None
            if le not in (0, len(pending) & 0xFF):
                self.pending_response = pending
                return sw(0x6C00 | len(pending))
            return pending + SW_OK
        self.pending_response = None
        resp = self._dispatch(apdu)
        if len(resp) <= 2 or resp[-2:] != SW_OK:
            return resp
        data = resp[:-2]
        if mode == "61xx":
            self.pending_response = data
            return sw(0x6100 | (len(data) & 0xFF))
        if mode == "6cxx" and _le_of(apdu) != len(data):
            return sw(0x6C00 | (len(data) & 0xFF))
        return resp

    def _dispatch(self, apdu):
        if len(apdu) < 4:
            return sw(0x6700)
        cla, ins, p1, p2 = apdu[0], apdu[1], apdu[2], apdu[3]
        body = apdu[4:]
        lc, data, le = 0, b"", None
        if len(body) == 1:
            le = body[0] or 256
        elif len(body) > 1:
            lc = body[0]
            if lc == 0 or len(body) not in (1 + lc, 2 + lc):
                return sw(0x6700)
            data = body[1 : 1 + lc]
            if len(body) == 2 + lc:
                le = body[-1] or 256
        if cla & 0x0C and cla not in (0x84, 0x04):
            return sw(0x6E00)
        if ins == 0xA4:
            if cla != 0x00:
                return sw(0x6E00)
            return self._select(p1, p2, data)
        app = self.selected
        if app is None:
            self._violation("command %s with no application selected" % apdu[:5].hex())
            return sw(0x6985)
        if app["kind"] != "tunion_ep":
            self._violation(
                "command %s sent to non-transit application %s" % (apdu[:5].hex(), app["aid"])
            )
            return sw(0x6D00)  # other applications (the EC one too): not modelled
        in_purchase = self._in_purchase = self.purchase
        if not (ins == 0xDC and cla == 0x80):
            self.purchase = None  # any other command ends an INITIALIZE...DEBIT sequence
        t = self.tu
        if t["lock"] and ins not in (0x84, 0xB0, 0xB2):
            return sw(0x6A81)
        handler = {
            (0x00, 0xB0): self._read_binary,
            (0x00, 0xB2): self._read_record,
            (0x80, 0x5C): self._get_balance,
            (0x80, 0x50): self._initialize,
            (0x80, 0x54): self._debit,
            (0x80, 0x5A): self._prove,
            (0x00, 0x84): self._challenge,
            (0x84, 0x1E): self._block,
        }.get((cla, ins))
        if (cla, ins) == (0x80, 0xDC):
            return self._update_capp(p1, p2, data, le, in_purchase)
        if handler is None:
            known = {0xB0, 0xB2, 0x5C, 0x50, 0x54, 0x5A, 0x84, 0x1E, 0xDC}
            return sw(0x6E00 if ins in known else 0x6D00)
        return handler(p1, p2, data, le)

    # SELECT

    def _select(self, p1, p2, name):
        if p1 != 0x04:
            self._violation("SELECT by file id/path (P1=%02x) %s" % (p1, name.hex()))
            self.selected = None
            return sw(0x6A82)
        if p2 not in (0x00, 0x02):
            return sw(0x6A86)
        if not 5 <= len(name) <= 16:
            return sw(0x6700)
        if name in PPSE_NAMES:
            self._violation("PPSE/PSE selected (%s): select T-Union by name only" % name.decode())
            self.selected = None
            if not self.has_ppse:
                return sw(0x6A82)
            return self._ppse_fci(name)
        if name not in TRANSIT_AIDS:
            self._violation("SELECT of %s: not a transit account AID" % name.hex().upper())
        matches = [a for a in self.apps if a["aid_bytes"].startswith(name)]
        if p2 == 0x02 and self.selected in matches:
            # "next occurrence": the one after the current selection
            matches = matches[matches.index(self.selected) + 1 :]
        self.selected = None
        if not matches:
            return sw(0x6A82)
        app = matches[0]
        if app["kind"] != "tunion_ep":
            # partial names can reach other applications: still never allowed
            if name in TRANSIT_AIDS:
                self._violation("SELECT reached non-transit application %s" % app["aid"])
            self.selected = app
            return self._generic_fci(app) + SW_OK
        t = self.tu
        if t["lock"] == "permanent":
            return sw(0x9303)
        self.selected = app
        fci = self._tunion_fci(app)
        return fci + (sw(0x6283) if t["lock"] else SW_OK)

    def _tunion_fci(self, app):
        a5 = (
            _tlv(b"\x50", app.get("label", "MOT_T_EP").encode())
            + _tlv(b"\x87", bytes((app.get("priority", 2),)))
            + _tlv(b"\x9f\x08", b"\x02")
            + (_tlv(b"\x9f\x0c", self.tu["f15"]) if self.variant["fci_9f0c"] else b"")
        )
        return _tlv(b"\x6f", _tlv(b"\x84", app["aid_bytes"]) + _tlv(b"\xa5", a5))

    def _generic_fci(self, app):
        a5 = _tlv(b"\x50", app.get("label", "APP").encode())
        return _tlv(b"\x6f", _tlv(b"\x84", app["aid_bytes"]) + _tlv(b"\xa5", a5))

    def _ppse_fci(self, name):
        entries = b""
        for a in self.apps:
            if a["kind"] == "medical":
                continue  # not a payment application
            entry = _tlv(b"\x4f", a["aid_bytes"]) + _tlv(b"\x50", a.get("label", "").encode())
            entries += _tlv(b"\x61", entry + _tlv(b"\x87", bytes((a.get("priority", 1),))))
        return (
            _tlv(b"\x6f", _tlv(b"\x84", name) + _tlv(b"\xa5", _tlv(b"\xbf\x0c", entries))) + SW_OK
        )

    # READ BINARY / READ RECORD

    def _read_binary(self, p1, p2, data, le):
        if data:
            return sw(0x6700)
        if not p1 & 0x80:
            return sw(0x6986)  # no current EF: the validator reads by SFI only
        sfi = p1 & 0x1F
        if sfi == SFI_16:
            self._violation("READ BINARY of SFI 0x16 (cardholder identity)")
        content = {SFI_15: self.tu["f15"], SFI_16: self.tu["f16"], SFI_17: self.tu["f17"]}.get(sfi)
        if content is None:
            return sw(0x6A82)
        if p2 > len(content):
            return sw(0x6B00)
        rest = content[p2:]
        if le is None or le == 256:
            return rest + SW_OK
        if le > len(rest) or (le != len(rest) and self.variant["chaining"] == "6cxx"):
            return sw(0x6C00 | len(rest))
        return rest[:le] + SW_OK

    def _read_record(self, p1, p2, data, le):
        if data:
            return sw(0x6700)
        if p2 & 0x07 != 0x04:
            return sw(0x6A86)
        sfi = p2 >> 3
        t = self.tu
        if sfi == SFI_18:
            recs = t["rec18"]
            rec = bytes(recs[p1 - 1]) if 0 < p1 <= len(recs) else None
        elif sfi == SFI_1E:
            recs = t["rec1e"]
            rec = bytes(recs[p1 - 1]) if 0 < p1 <= len(recs) else None
        elif sfi == SFI_1A:
            rec = t["rec1a"].get(p1)
            rec = bytes(rec) if rec is not None else None
        elif sfi == SFI_16:
            self._violation("READ RECORD of SFI 0x16")
            return sw(0x6981)
        else:
            return sw(0x6A82)
        if p1 == 0:
            return sw(0x6A86)
        if rec is None:
            return sw(0x6A83)
        if le is None or le == 256:
            return rec + SW_OK
        if le != len(rec):
            return sw(0x6C00 | len(rec))
        return rec + SW_OK

    # Balance and purchase

    def available(self):
        t = self.tu
        return t["balance"] + t["overdraft_limit"] - t["used_overdraft"]

    def _get_balance(self, p1, p2, data, le):
        if data or p2 != 0x02:
            return sw(0x6A86 if not data else 0x6700)
        if le != 4:
            return sw(0x6C04)
        t = self.tu
        values = {
            0x00: self.available(),
            0x01: t["overdraft_limit"],
            0x02: t["used_overdraft"],
            0x03: t["balance"],
            0x04: t["balance_cap"],
        }
        if p1 not in values:
            return sw(0x6A86)
        return values[p1].to_bytes(4, "big") + SW_OK

    def _initialize(self, p1, p2, data, le):
        if p1 not in (0x01, 0x03) or p2 != 0x02:
            return sw(0x6A86)
        if len(data) != 11:
            return sw(0x6700)
        if le not in (None, 0x0F, 256):
            return sw(0x6C0F)
        t = self.tu
        key_index = data[0]
        amount = int.from_bytes(data[1:5], "big")
        terminal = data[5:11]
        if key_index not in t["key_indexes"]:
            return sw(0x9403)
        if amount > self.available():
            return sw(0x9401)
        shown = self.available() if self.variant["init_balance"] == "available" else t["balance"]
        alg_id = t["suite"].alg_id
        if alg_id == crypto.ALG_SM4:
            alg_id = self.variant["sm4_alg_id"]
        self._rng = (self._rng * 1103515245 + 12345) & 0xFFFFFFFF
        rnd = self._rng.to_bytes(4, "big")
        atc = t["atc"].to_bytes(2, "big")
        self.purchase = {
            "capp": p1 == 0x03,
            "amount": amount,
            "terminal": bytes(terminal),
            "random": rnd,
            "atc": t["atc"],
            "cache_1e": None,
            "cache_1a": {},
        }
        return (
            shown.to_bytes(4, "big")
            + atc
            + t["overdraft_limit"].to_bytes(3, "big")
            + bytes((t["key_version"], alg_id))
            + rnd
            + SW_OK
        )

    def _update_capp(self, p1, p2, data, le, purchase):
        self.purchase = purchase
        if purchase is None or not purchase["capp"]:
            return sw(0x6985)
        sfi = p2 >> 3
        if p2 & 0x07:
            return sw(0x6A86)
        if sfi == SFI_1E:
            if len(data) > 48:
                return sw(0x6A84)
            if len(data) != 48:
                return sw(0x6700)
            purchase["cache_1e"] = bytes(data)
            return SW_OK
        if sfi == SFI_1A:
            if self.variant["cache_order"] == "1a_then_1e" and purchase["cache_1e"] is not None:
                return sw(0x6985)  # the 0x1E record closes the cache updates on this card
            if len(data) > 128:
                return sw(0x6A84)
            if len(data) < 3:
                return sw(0x6700)
            rid = (data[0] << 8) | data[1]
            rec = self.tu["rec1a"].get(rid & 0xFF)
            if rec is None or rec[0:2] != data[0:2] or p1 not in (0x00, rid & 0xFF):
                return sw(0x6A83)
            if rec[5]:
                return sw(0x9407)
            new = bytearray(rec)
            new[: len(data)] = data
            purchase["cache_1a"][rid & 0xFF] = new
            return SW_OK
        return sw(0x6A82)

    def _session(self, purchase, serial4):
        t = self.tu
        return t["suite"].session_key(
            t["dpk"], purchase["random"], purchase["atc"].to_bytes(2, "big"), serial4
        )

    def _debit(self, p1, p2, data, le):
        purchase = self._in_purchase
        if p1 not in (0x01, 0x02) or p2 != 0x00:
            return sw(0x6A86)
        if len(data) != 15:
            return sw(0x6700)
        if purchase is None:
            return sw(0x6985)
        if self.variant["chaining"] == "6cxx" and le != 8:
            return sw(0x6C08)
        t = self.tu
        s = t["suite"]
        serial4, date4, time3, mac1 = data[0:4], data[4:8], data[8:11], data[11:15]
        amount4 = purchase["amount"].to_bytes(4, "big")
        txn_type = 0x09 if purchase["capp"] else 0x06
        session = self._session(purchase, serial4)
        want = crypto.mac1(s, session, amount4, txn_type, purchase["terminal"], date4, time3)
        if want != mac1:
            return sw(0x9302)
        amount = purchase["amount"]
        if amount > self.available():
            return sw(0x9401)
        before = t["balance"]
        from_real = min(amount, t["balance"])
        t["balance"] -= from_real
        t["used_overdraft"] += amount - from_real
        t["atc"] = (t["atc"] + 1) & 0xFFFF
        tac = crypto.tac(
            s, t["dtk"], amount4, txn_type, purchase["terminal"], serial4, date4, time3
        )
        mac2 = crypto.mac2(s, session, amount4)
        counter18 = purchase["atc"] if self.variant["atc18"] == "init" else t["atc"]
        rec18 = (
            counter18.to_bytes(2, "big")
            + t["overdraft_limit"].to_bytes(3, "big")
            + amount4
            + bytes((txn_type,))
            + purchase["terminal"]
            + date4
            + time3
        )
        t["rec18"] = ([rec18] + t["rec18"])[:10]
        if purchase["cache_1e"] is not None:
            t["rec1e"] = ([purchase["cache_1e"]] + t["rec1e"])[:30]
        for low, rec in purchase["cache_1a"].items():
            t["rec1a"][low] = rec
        t["last_proof"] = {"atc": t["atc"], "type": txn_type, "mac2": mac2, "tac": tac}
        self.debits.append(
            {
                "counter": purchase["atc"],
                "amount": amount,
                "tac": tac,
                "mac2": mac2,
                "terminal": purchase["terminal"],
                "serial": bytes(serial4),
                "balance_before": before,
                "balance_after": t["balance"],
                "txn_type": txn_type,
            }
        )
        return tac + mac2 + SW_OK

    def _prove(self, p1, p2, data, le):
        if p1 != 0x00:
            return sw(0x6A86)
        if len(data) != 2:
            return sw(0x6700)
        proof = self.tu["last_proof"]
        atc = int.from_bytes(data, "big")
        if proof is None or proof["atc"] != atc or proof["type"] != p2:
            return sw(0x6985)
        return proof["mac2"] + proof["tac"] + SW_OK

    def _challenge(self, p1, p2, data, le):
        if p1 or p2 or data:
            return sw(0x6A86)
        if le not in (4, 8):
            return sw(0x6700)
        self._rng = (self._rng * 1103515245 + 12345) & 0xFFFFFFFF
        rnd = (self._rng.to_bytes(4, "big") + os.urandom(4))[:le]
        self.challenge = rnd[:4]
        return rnd + SW_OK

    def _block(self, p1, p2, data, le):
        challenge = self.challenge
        self.challenge = None
        if p1 not in (0x00, 0x01) or p2 not in (0x00, 0x01):
            return sw(0x6A86)
        if len(data) != 4:
            return sw(0x6700)
        if challenge is None:
            return sw(0x6985)
        t = self.tu
        s = t["suite"]
        if (p1 == 0x01) != (s.alg_id == crypto.ALG_SM4):
            return sw(0x6A86)
        header = bytes((0x84, 0x1E, p1, p2, 0x04))
        if crypto.lock_mac(s, t["dlk"], challenge, header) != data:
            return sw(0x9302)
        t["lock"] = "permanent" if p2 == 0x01 else "temporary"
        self.audit.append({"event": "locked " + t["lock"]})
        return SW_OK


def _tlv(tag, value):
    value = bytes(value)
    n = len(value)
    length = bytes((n,)) if n < 0x80 else bytes((0x81, n))
    return tag + length + value


def _le_of(apdu):
    """The Le of a short APDU (256 for 00), None when it has none."""
    body = apdu[4:]
    if len(body) == 1:
        return body[0] or 256
    if len(body) > 1 and len(body) == 2 + body[0]:
        return body[-1] or 256
    return None


def _jsonable(value):
    if isinstance(value, bytes):
        return value.hex().upper()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
