# mpy: heapsize=256k timeout=120
# Card and PSAM application layers and the purchase against small in-process fakes (no hub):
# parsers, status words, PSAM boot variants, garbage answers, memory per tap.
import gc
import random

import apdu
import log
import memlog
import mptest
import purchase
import record
import timeutil
import tunion
from linkerr import CardGone
from psam_app import PsamApp, PsamError

NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
F15 = bytes.fromhex("09981001FFFFFFFF0201031052280000000000172020010120391231" + "0000")
F17 = bytes.fromhex("00000156100010010001010000")[:11]
OK = b"\x90\x00"


def fci(f15=F15, name=tunion.AID_EP):
    a5 = b"\x9f\x0c" + bytes((len(f15),)) + f15
    body = b"\x84" + bytes((len(name),)) + name + b"\xa5" + bytes((len(a5),)) + a5
    return b"\x6f" + bytes((len(body),)) + body + OK


class FakeCard:
    """Scripted T-Union card: accepts any MAC1, fixed TAC/MAC2; `script[ins]` overrides."""

    def __init__(self, balance=5000, limit=0):
        self.balance = balance
        self.limit = limit
        self.atc = 7
        self.debits = []
        self.script = {}
        self.sent = []
        self.history = []

    def transceive(self, a):
        self.sent.append(bytes(a))
        ins = a[1]
        if ins in self.script:
            r = self.script[ins]
            if isinstance(r, Exception):
                raise r
            return r
        if ins == 0xA4:
            return fci()
        if ins == 0xB0:
            return F17 + OK
        if ins == 0x50:
            amount = int.from_bytes(a[6:10], "big")
            if amount > self.balance + self.limit:
                return b"\x94\x01"
            out = (self.balance + self.limit).to_bytes(4, "big") + self.atc.to_bytes(2, "big")
            return out + self.limit.to_bytes(3, "big") + b"\x01\x00" + b"RAND" + OK
        if ins == 0xDC:
            return OK
        if ins == 0x54:
            self.debits.append(self.atc)
            self.atc += 1
            return b"TACX" + b"MAC2" + OK
        if ins == 0xB2:
            return b"\x6a\x83"
        return b"\x6d\x00"


class FakePsam:
    def __init__(self):
        self.script = {}
        self.serial = 100
        self.sent = []
        self.in_app = False

    def transceive(self, a):
        self.sent.append(bytes(a))
        key = (a[1], a[2]) if a[1] in (0xA4, 0xB0) else a[1]
        if key in self.script:
            r = self.script[key]
            if isinstance(r, list):
                r = r.pop(0) if r else OK
            return r
        if a[1] == 0xB0 and a[2] == 0x96:
            return b"\x00\x00\x00\x00\x00\x07" + OK
        if a[1] == 0xB0 and a[2] == 0x97:
            return b"\x01" + bytes(24) + OK
        if a[1] == 0xA4:
            return OK
        if a[1] == 0x70:
            self.serial += 1
            return self.serial.to_bytes(4, "big") + b"MAC1" + OK
        if a[1] == 0x72:
            return OK if a[5:9] == b"MAC2" else b"\x93\x02"
        return b"\x6d\x00"


def make(card=None, psam=None, **cfg):
    psam = psam or FakePsam()
    p = purchase.Purchaser(PsamApp(psam), memlog.make(), cfg)
    mptest.true(p.boot())
    return p, card or FakeCard(), psam


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()


def test_apdu_build_cases_and_status_words():
    mptest.hex_eq(apdu.build(0, 0xA4, 4, 0, b"\x01\x02", 0), b"\x00\xa4\x04\x00\x02\x01\x02\x00")
    mptest.hex_eq(apdu.build(0x80, 0x5C, 3, 2, None, 4), b"\x80\x5c\x03\x02\x04")
    mptest.hex_eq(apdu.build(0x84, 0x1E, 0, 0), b"\x84\x1e\x00\x00")
    mptest.raises(ValueError, apdu.build, 0, 0, 0, 0, bytes(256))
    mptest.eq(apdu.sw_of(b"\x12\x90\x00"), 0x9000)
    mptest.raises(apdu.ApduError, apdu.sw_of, b"\x90")
    mptest.raises(apdu.ApduError, apdu.sw_of, None)
    e = mptest.raises(apdu.ApduError, apdu.expect, b"\x94\x01", 15, "INIT")
    mptest.eq(e.sw, 0x9401)
    mptest.true("insufficient" in str(e))
    e = mptest.raises(apdu.ApduError, apdu.expect, b"\x01\x90\x00", 2, "X")
    mptest.eq(e.sw, 0x9000)
    mptest.eq(apdu.sw_name(0x1234), "1234")


def test_tlv_and_fci_parsing():
    name, f15 = tunion.parse_fci(fci()[:-2], tunion.AID_EP)
    mptest.hex_eq(f15, F15)
    long_name = tunion.AID_EP + b"\x10\x00\x91\x56\x00\x00\x14\xa1"
    name, f15 = tunion.parse_fci(fci(name=long_name)[:-2], tunion.AID_EP)
    mptest.hex_eq(name, long_name)
    for bad in (b"", b"\x6f", b"\x6f\x05\x84\x08", b"\x6f\x82\x00\x01", b"\x9f", b"\x70\x00"):
        mptest.raises(tunion.CardDataError, tunion.parse_fci, bad, tunion.AID_EP)
    no_name = b"\x6f\x03\xa5\x01\x00"
    mptest.raises(tunion.CardDataError, tunion.parse_fci, no_name, tunion.AID_EP)
    other = fci(name=b"\xa0\x00\x00\x03\x33\x01\x01\x01")[:-2]
    mptest.raises(tunion.CardDataError, tunion.parse_fci, other, tunion.AID_EP)
    without_9f0c = b"\x6f\x0a\x84\x08" + tunion.AID_EP
    mptest.eq(tunion.parse_fci(without_9f0c, tunion.AID_EP)[1], None)


def test_file_15_and_17_parsing():
    card = tunion.parse_15(F15)
    mptest.eq(tunion.card_number(card["card_no"]), "3105228000000000017")
    mptest.hex_eq(card["issuer"], b"\x09\x98\x10\x01")
    mptest.eq((card["start"], card["expiry"], card["enabled"]), (20200101, 20391231, 1))
    mptest.hex_eq(card["serial_low"], F15[12:20])
    for bad in (
        F15[:29],
        F15[:10] + b"\x13" + F15[11:],
        F15[:20] + b"\x20\x20\x13\x01" + F15[24:],
    ):
        mptest.raises(tunion.CardDataError, tunion.parse_15, bad)
    mptest.raises(tunion.CardDataError, tunion.parse_15, None)
    tunion.parse_17(F17, card)
    mptest.eq((card["interconnect"], card["card_type"]), (1, 1))
    mptest.raises(tunion.CardDataError, tunion.parse_17, F17[:10], card)
    mptest.raises(tunion.CardDataError, tunion.parse_17, F17[:4] + b"\xaa" + F17[5:], card)


def test_psam_boot_variants():
    psam = FakePsam()
    app = PsamApp(psam)
    mptest.hex_eq(app.boot(), b"\x00\x00\x00\x00\x00\x07")
    mptest.eq((app.key_index, app.ready, len(psam.sent)), (1, True, 3))
    # not at the MF (warm start), AID unknown (select by FID 8011), data through GET RESPONSE
    psam = FakePsam()
    psam.script[(0xB0, 0x96)] = [b"\x6a\x82", b"\x00\x00\x00\x00\x00\x09" + OK]
    psam.script[(0xA4, 0x04)] = b"\x6a\x82"
    psam.script[(0xB0, 0x97)] = b"\x61\x19"
    psam.script[0xC0] = b"\x02" + bytes(24) + OK
    app = PsamApp(psam)
    mptest.hex_eq(app.boot(), b"\x00\x00\x00\x00\x00\x09")
    mptest.eq(app.key_index, 2)
    mptest.hex_eq(psam.sent[-1], b"\x00\xc0\x00\x00\x19")
    mptest.true(b"\x00\xa4\x00\x00\x02\x80\x11" in psam.sent)
    bad = FakePsam()
    bad.script[(0xB0, 0x97)] = b"\x01" + OK
    mptest.raises(PsamError, PsamApp(bad).boot)
    resets = []
    bad.reset = lambda: resets.append(1)
    p = purchase.Purchaser(PsamApp(bad), memlog.make())
    mptest.false(p.boot())
    mptest.eq(resets, [], "the first boot does not reset")
    mptest.eq(p.tap(FakeCard(), {"debit": 1}, NOW).reason, purchase.PSAM_ERROR)
    mptest.eq(resets, [1], "a re-boot after a failure resets the PSAM link first")


def test_flat_fare_with_fakes_sends_exactly_the_expected_apdus():
    p, card, psam = make()
    n = len(psam.sent)
    res = p.tap(card, {"debit": 200}, NOW)
    mptest.eq(res.reason, purchase.OK, res.detail)
    mptest.eq([a[1] for a in card.sent], [0xA4, 0xB0, 0x50, 0xDC, 0x54])
    mptest.eq([a[1] for a in psam.sent[n:]], [0x70, 0x72])
    mptest.hex_eq(card.sent[0], b"\x00\xa4\x04\x00\x08" + tunion.AID_EP + b"\x00")
    mptest.hex_eq(card.sent[1], b"\x00\xb0\x97\x00\x0b")
    mptest.hex_eq(card.sent[2][:5], b"\x80\x50\x03\x02\x0b")
    mptest.hex_eq(card.sent[3][:5], b"\x80\xdc\x00\xf0\x30")
    mptest.hex_eq(
        card.sent[4],
        b"\x80\x54\x01\x00\x0f"
        + (101).to_bytes(4, "big")
        + b"\x20\x26\x11\x29\x12\x30\x00"
        + b"MAC1\x08",
    )
    init = psam.sent[n]
    mptest.hex_eq(init[5:9], b"RAND")
    mptest.hex_eq(init[25:33], F15[12:20])
    mptest.hex_eq(init[33:41], F15[0:8])
    mptest.eq(res.record["psam_serial"], 101)
    mptest.hex_eq(res.record["tac"], b"TACX")
    for key in (
        "kind",
        "time",
        "psam_tid",
        "psam_serial",
        "card_no",
        "issuer",
        "card_type",
        "txn_type",
        "amount",
        "balance_before",
        "balance_after",
        "card_atc",
        "tac",
        "route",
        "stop",
        "fare_rule",
        "discount",
        "flags",
        "reason",
    ):
        mptest.true(key in res.record, key)
    mptest.eq(len(res.record), 19)


def test_card_status_words_map_to_reasons():
    cases = (
        (0xA4, b"\x6a\x82", purchase.NOT_TUNION),
        (0xA4, b"\x62\x83", purchase.LOCKED),
        (0xA4, b"\x93\x03", purchase.LOCKED),
        (0xA4, b"\x6a\x81", purchase.LOCKED),
        (0x50, b"\x94\x01", purchase.INSUFFICIENT),
        (0x50, b"\x94\x08", purchase.LOCKED),
        (0x50, b"\x94\x03", purchase.CARD_ERROR),
        (0xDC, b"\x94\x07", purchase.CARD_ERROR),
        (0x54, b"\x93\x02", purchase.MAC1_FAILED),
        (0x54, b"\x94\x01", purchase.INSUFFICIENT),
        (0x54, b"\x69\x85", purchase.CARD_ERROR),
        (0xB0, CardGone("gone"), purchase.TAP_AGAIN),
    )
    for ins, answer, want in cases:
        p, card, psam = make()
        card.script[ins] = answer
        res = p.tap(card, {"debit": 100}, NOW)
        mptest.eq(res.reason, want, "%02X %r: %s" % (ins, answer, res.detail))
        mptest.eq(card.debits, [])
        mptest.eq(p.pending(), [], "a definite refusal leaves nothing pending")


def test_9f0c_missing_reads_file_15():
    p, card, psam = make()
    card.script[0xA4] = b"\x6f\x0a\x84\x08" + tunion.AID_EP + OK
    card.script[0xB0] = F15 + OK  # the only READ BINARY then answers 0x15 ...
    res = p.tap(card, {"debit": 100}, NOW)
    mptest.eq(card.sent[1][2], 0x95)
    mptest.eq(res.reason, purchase.CARD_ERROR)  # ... and 0x17's read gets 30 bytes: refused


def test_sm4_only_card_is_found_by_its_own_name():
    p, card, psam = make()
    card.script[0xA4] = b"\x6a\x82"
    res = p.tap(card, {"debit": 100}, NOW)
    mptest.eq(res.reason, purchase.NOT_TUNION)
    mptest.eq([a[5:13] for a in card.sent], [tunion.AID_EP, tunion.AID_EP_SM4])


def test_random_garbage_never_crashes_and_never_claims_a_sale():
    rng = random.Random(1) if hasattr(random, "Random") else None
    if rng is None:
        random.seed(1)
        rng = random
    for i in range(300):
        p, card, psam = make()
        ins = (0xA4, 0xB0, 0x50, 0xDC, 0x54, 0xB2, 0x5A)[i % 7]
        n = rng.getrandbits(5)
        card.script[ins] = bytes(rng.getrandbits(8) for _ in range(n))
        res = p.tap(card, {"debit": 100}, NOW)
        mptest.true(res.reason in purchase.REASONS, res.reason)
        if res.reason == purchase.OK:
            mptest.eq(len(card.debits), 1)
            mptest.true(ins in (0xB2, 0x5A), "only unused commands may be garbled on a sale")
        elif res.reason not in (purchase.TAP_AGAIN, purchase.MAC2_FAILED):
            mptest.eq(len(p.pending()), 0)


def test_memory_per_tap():
    p, card, psam = make()
    p.tap(card, {"debit": 1}, NOW)
    gc.collect()
    before = gc.mem_free()
    card = FakeCard()
    p.tap(card, {"debit": 1}, NOW)
    used = before - gc.mem_free()
    mptest.log("heap allocated by one flat-fare tap (fakes, logs off): %d bytes" % used)
    mptest.between(used, 0, 20000)  # garbage, collected; a regression guard, not a budget
    mptest.eq(
        record.decode(record.encode(p.tap(FakeCard(), {"debit": 1}, NOW).record, 1))["amount"], 1
    )
