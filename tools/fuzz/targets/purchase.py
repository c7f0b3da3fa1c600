"""Card answers in the purchase flow: firmware/purchase.py (with tunion, apdu, psam_app and the
real firmware/txlog.py on a RAM flash device, tests/mpy/memlog.py) against an honest in-process
card and PSAM (the ones of tests/mpy/test_fuzz_card.py) whose answer to one APDU per tap is
replaced by bytes from the input, or lost before/after the command ran, or timed out.

Input: up to four taps, each `ctl at len answer...`: ctl picks the card (of three), the damage
(replace, run-then-replace, gone before, gone after, timeout, protocol error after running) and
whether the PSAM is damaged instead; `at` the APDU; the answer is the next `len` bytes (a DEBIT
that ran and said 9000 keeps its 9000: a card that debits and then lies is not bookable).
Invariants (docs/robustness.md): tap() returns a known reason and nothing escapes; every
journaled record encodes; a purchase is booked only for a debit the card made (or flagged
MAC2-unverified) and each debit exactly once; the same card tapped honestly afterwards is sold
(or its torn purchase settled) and nothing stays pending.
"""

import os
import sys

from tools.fuzz import shim

shim.install()
for _d in ("tests/mpy", "boards/unix_sim"):
    if os.path.join(shim.ROOT, _d) not in sys.path:
        sys.path.append(os.path.join(shim.ROOT, _d))

import crc  # noqa: E402
import memlog  # noqa: E402
import purchase  # noqa: E402
import record  # noqa: E402
import timeutil  # noqa: E402
import tunion  # noqa: E402
from linkerr import CardGone, LinkTimeout, ProtocolError  # noqa: E402
from psam_app import PsamApp  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "purchase"
NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
OK = b"\x90\x00"
F17 = bytes.fromhex("0000015610001001000101")
FARE = {"debit": 100, "route": 12, "stop": 3}
MODES = ("replace", "replace_run", "gone_before", "gone_after", "timeout", "proto_run")


def f15_for(n):
    no = ("%020d" % (3104000000000000000 + n)).encode()
    serial = bytes(int(no[i : i + 2], 16) for i in range(0, 20, 2))
    return (
        b"\x31\x04\x00\x00\xff\xff\xff\xff\x02\x01"
        + serial
        + b"\x20\x20\x01\x01\x20\x39\x12\x31\x00\x00"
    )


def fci(f15, name=tunion.AID_EP):
    a5 = b"\x9f\x0c" + bytes((len(f15),)) + f15
    body = b"\x84" + bytes((len(name),)) + name + b"\xa5" + bytes((len(a5),)) + a5
    return b"\x6f" + bytes((len(body),)) + body


def mac1_of(data36):
    return crc.crc32(data36).to_bytes(4, "big")


def mac2_of(mac1):
    return crc.crc32(b"M2" + mac1).to_bytes(4, "big")


class HonestCard:
    """A T-Union card that checks MAC1 against its own data, keeps a 0x18 history and answers
    GET TRANSACTION PROVE (as tests/mpy/test_fuzz_card.py's)."""

    def __init__(self, n, balance=10000000):
        self.f15 = f15_for(n)
        self.info = tunion.parse_15(self.f15)
        self.balance = balance
        self.atc = 10 + n
        self.history = []
        self.debits = []
        self.booked = []
        self.n_debits = 0
        self.init = None
        self.last = None

    def transceive(self, a):
        a = bytes(a)
        ins = a[1]
        if ins == 0xA4:
            return fci(self.f15) + OK if a[5 : 5 + a[4]] == tunion.AID_EP else b"\x6a\x82"
        if ins == 0xB0:
            sfi = a[2] & 0x1F
            if sfi == 0x15:
                return self.f15 + OK
            if sfi == 0x17:
                return F17 + OK
            return b"\x6a\x82"
        if ins == 0xB2:
            n, sfi = a[2], a[3] >> 3
            if sfi == 0x18 and 1 <= n <= len(self.history):
                return self.history[n - 1] + OK
            return b"\x6a\x83"
        if ins == 0x50:
            amount = int.from_bytes(a[6:10], "big")
            if amount > self.balance:
                return b"\x94\x01"
            rnd = crc.crc32(bytes((self.atc & 0xFF, len(self.history)))).to_bytes(4, "big")
            self.init = (amount, bytes(a[10:16]), rnd)
            out = self.balance.to_bytes(4, "big") + self.atc.to_bytes(2, "big") + bytes(3)
            return out + b"\x01\x00" + rnd + OK
        if ins == 0xDC:
            return OK if self.init else b"\x69\x85"
        if ins == 0x54:
            return self._debit(a)
        if ins == 0x5A:
            after = int.from_bytes(a[5:7], "big")
            if self.last and self.last[0] == after:
                return self.last[1] + self.last[2] + OK
            return b"\x94\x03"
        return b"\x6d\x00"

    def _debit(self, a):
        if self.init is None:
            return b"\x69\x85"
        amount, terminal, rnd = self.init
        self.init = None
        dt = a[9:16]
        data = bytearray(36)
        data[0:4] = rnd
        data[4:6] = self.atc.to_bytes(2, "big")
        data[6:10] = amount.to_bytes(4, "big")
        data[10] = tunion.TXN_CAPP
        data[11:18] = dt
        data[18] = 1
        data[19] = 0
        data[20:28] = self.info["serial_low"]
        data[28:36] = self.info["issuer8"]
        mac1 = a[16:20]
        if mac1 != mac1_of(data):
            return b"\x93\x02"
        h = self.atc.to_bytes(2, "big") + bytes(3) + amount.to_bytes(4, "big") + b"\x09"
        self.history.insert(0, h + terminal + dt)
        del self.history[10:]
        self.debits.append(self.atc)
        self.n_debits += 1
        self.balance -= amount
        self.atc += 1
        tac = crc.crc32(b"TAC" + mac1).to_bytes(4, "big")
        self.last = (self.atc, mac2_of(mac1), tac)
        return tac + self.last[1] + OK


class HonestPsam:
    def __init__(self):
        self.serial = 100
        self.mac1 = None

    def transceive(self, a):
        a = bytes(a)
        ins = a[1]
        if ins == 0xB0 and a[2] == 0x96:
            return b"\x00\x00\x00\x00\x00\x07" + OK
        if ins == 0xB0 and a[2] == 0x97:
            return b"\x01" + bytes(24) + OK
        if ins == 0xA4:
            return OK
        if ins == 0x70:
            self.serial += 1
            self.mac1 = mac1_of(a[5:41])
            return self.serial.to_bytes(4, "big") + self.mac1 + OK
        if ins == 0x72:
            ok = self.mac1 is not None and a[5:9] == mac2_of(self.mac1)
            self.mac1 = None
            return OK if ok else b"\x93\x02"
        return b"\x6d\x00"


class Damaging:
    """Passes APDUs to `inner`; the `at`-th one is damaged by `mode`, its answer (when one is
    given) being `answer` from the input."""

    def __init__(self, inner, at, mode, answer):
        self.inner = inner
        self.at = at
        self.mode = mode
        self.answer = answer
        self.i = 0

    def transceive(self, a):
        i = self.i
        self.i += 1
        if i != self.at:
            return self.inner.transceive(a)
        m = self.mode
        if m == "gone_before":
            raise CardGone("fuzz")
        if m == "timeout":
            raise LinkTimeout("fuzz")
        if m == "replace":  # the device did not run the command; this came back instead
            return self.answer
        r = self.inner.transceive(a)
        if m == "gone_after":
            raise CardGone("fuzz")
        if m == "proto_run":
            raise ProtocolError("fuzz")
        if a[1] == 0x54 and r[-2:] == OK:
            return self.answer + OK  # a debit made: only the body is damaged
        return self.answer


def check_books(journal, cards, ctx):
    for rec in journal:
        record.encode(rec, 1)
        if rec["kind"] not in (record.PURCHASE, record.PURCHASE_RECOVERED):
            continue
        check(rec["amount"] == FARE["debit"], "amount %r; %s" % (rec["amount"], ctx))
        card = None
        for c in cards:
            if c.info["serial_low"] == rec["card_no"][2:]:
                card = c
        atc = rec["card_atc"]
        if card is not None and atc in card.debits:
            card.debits.remove(atc)
            card.booked = (card.booked + [atc])[-16:]
        else:
            check(not (card is not None and atc in card.booked), "booked twice; " + ctx)
            check(
                rec["flags"] & record.FLAG_MAC2_UNVERIFIED,
                "purchase journaled without a debit: %r; %s" % (rec, ctx),
            )
    del journal[:]
    for c in cards:
        check(c.debits == [], "debits not booked; " + ctx)


def one_input(data):
    journal = []
    psam = HonestPsam()
    p = purchase.Purchaser(PsamApp(psam), memlog.make(journal, intents=False))
    check(p.boot(), "boot")
    cards = [HonestCard(k) for k in range(3)]
    pos = 0
    for i in range(4):
        if pos + 3 > len(data):
            break
        ctl, at, n = data[pos], data[pos + 1], data[pos + 2] % 64
        answer = bytes(data[pos + 3 : pos + 3 + n])
        pos += 3 + n
        card = cards[ctl % 3]
        mode = MODES[(ctl >> 2) % len(MODES)]
        before = card.n_debits
        if ctl & 0x80:
            how = "replace_run" if ctl & 0x40 else "replace"
            p.psam.link = Damaging(psam, at % 4, how, answer)
            link = card
        else:
            link = Damaging(card, at % 10, mode, answer)
        res = p.tap(link, FARE, NOW + i)
        p.psam.link = psam
        check(res.reason in purchase.REASONS, "unknown reason %r" % (res.reason,))
        if res.reason == purchase.OK and card.n_debits == before:
            check(res.record["kind"] == record.PURCHASE_RECOVERED, "sold without a debit")
        res2 = p.tap(card, FARE, NOW + i)
        ctx = "tap %d: %s at %d answer %s: %r then %r" % (i, mode, at, answer.hex(), res, res2)
        check(res2.reason == purchase.OK, "honest re-tap: %s; %s" % (res2.detail, ctx))
        check(p.pending() == [], "left pending; " + ctx)
        check_books(journal, cards, ctx)


# One tap each of every damage mode at a few APDUs, and a two-tap input.
SEEDS = (
    b"",
    b"\x00\x00\x00",
    b"\x04\x06\x02\x90\x00",
    b"\x08\x06\x00",
    b"\x0c\x06\x00",
    b"\x10\x05\x00",
    b"\x14\x07\x00",
    b"\x80\x02\x02\x93\x02",
    b"\xc0\x03\x02\x90\x00\x05\x01\x04\x12\x34\x56\x78",
    b"\x00\x01\x0a" + bytes(range(10)) + b"\x01\x06\x00",
)
