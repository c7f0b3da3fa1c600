# An honest T-Union card and PSAM in process, for what drives firmware/purchase.py without a
# simulator: tests/mpy/crosslib.py (the cross suite; test_app_tap.py), test_fuzz_card.py, and the
# atheris target tools/fuzz/targets/purchase.py (CPython, through tools/fuzz/shim.py). Plain
# Python: it loads on MicroPython and on CPython. The MACs and TAC are CRC-32s (the PSAM's keys are
# not what these exercise); the card's data and counters are checked as a card would.
import crc
import tunion
from linkerr import CardGone

OK = b"\x90\x00"
F17 = bytes.fromhex("0000015610001001000101")


def f15_for(n):
    """File 0x15 of card number 3104000000000000000 + n."""
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


class Card:
    """T-Union card number `n`: checks MAC1 against its own data (a garbled card number or counter
    cannot buy anything), keeps its 0x18 history (newest first, 23 bytes each) and answers GET
    TRANSACTION PROVE. A 0x18 record carries INIT's counter, or with atc18="next" the one after
    the debit (both card variants of tools/sim/card.py).
    `fault` = (when, ins) pulls the card before or after that command once; ("write", ins,
    applied) tears its EEPROM write there (answer 6581), the write kept or lost.
    `debits`: the counters of the debits it made (a caller's books may take them off as they
    find them); `n_debits` counts them; `booked` is for a caller's books."""

    def __init__(self, n, atc18="init", balance=1000000):
        self.atc18 = atc18
        self.f15 = f15_for(n)
        self.info = tunion.parse_15(self.f15)
        self.card_no = self.info["card_no"]
        self.balance = balance
        self.atc = 10 + n
        self.history = []
        self.debits = []
        self.booked = []
        self.n_debits = 0
        self.init = None
        self.last = None  # (atc after, mac2, tac)
        self.fault = None

    def transceive(self, a):
        a = bytes(a)
        f = self.fault
        if f is not None and f[1] == a[1]:
            self.fault = None
            if f[0] == "before":
                raise CardGone("pulled before %02X" % a[1])
            if f[0] == "write":
                saved = (self.balance, self.atc, list(self.history), list(self.debits), self.last)
                self.answer(a)
                if not f[2]:
                    self.balance, self.atc, self.history, self.debits, self.last = saved
                self.init = None
                return b"\x65\x81"
            self.answer(a)
            raise CardGone("pulled after %02X" % a[1])
        return self.answer(a)

    def answer(self, a):
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
        data[20:28] = self.info["serial_low"]
        data[28:36] = self.info["issuer8"]
        mac1 = a[16:20]
        if mac1 != mac1_of(data):
            return b"\x93\x02"
        c18 = self.atc if self.atc18 == "init" else self.atc + 1
        h = c18.to_bytes(2, "big") + bytes(3) + amount.to_bytes(4, "big") + b"\x09"
        self.history.insert(0, h + terminal + dt)
        del self.history[10:]
        self.debits.append(self.atc)
        self.n_debits += 1
        self.balance -= amount
        self.atc += 1
        tac = crc.crc32(b"TAC" + mac1).to_bytes(4, "big")
        self.last = (self.atc, mac2_of(mac1), tac)
        return tac + self.last[1] + OK


def check_books(journal, cards, fare, check, ctx=""):
    """Exactly once: each card debit (of `fare`) gets one purchase record; any other purchase
    record is a garbage DEBIT 'success' and must carry the MAC2-unverified flag. `journal` (the
    records written since the last call) is consumed, and so are the cards' lists of unbooked
    debits. `check(ok, message)` raises when ok is false (mptest.true, or a fuzz target's)."""
    import record

    for rec in journal:
        record.encode(rec, 1)  # everything journaled fits the record format
        if rec["kind"] not in (record.PURCHASE, record.PURCHASE_RECOVERED):
            continue
        check(rec["amount"] == fare, "amount %r; %s" % (rec["amount"], ctx))
        card = None
        for c in cards:
            # Matched on the 8 bytes that MAC1 binds (the diversification factor): the first
            # two of the card number are the card's own word, as a damaged SELECT may change it.
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
        check(c.debits == [], "debits not booked: %r; %s" % (c.debits, ctx))


class Psam:
    """The PSAM chip: MAC1 over INIT's data, MAC2 checked; its serial survives the validator's
    reboots (keep the object)."""

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
