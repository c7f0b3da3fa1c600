# mpy: heapsize=128k timeout=240
# Fuzz (issue 11): ATRs and T=0 procedure bytes. iso7816.parse_atr/expected_length on mutated
# real ATRs (half with the TCK fixed up, so the damage reaches the field decoding), then
# drivers/psam_link.py against an in-process T=0 card on a fake UART whose ATR and answers
# (procedure bytes, data, status words) are damaged, extended with NULLs, cut or doubled; then the
# PSAM application boot (firmware/psam_app.py) over that link. Invariants: only AtrError and the
# linkerr types escape the link (PsamError/ApduError above it), every call ends within its
# deadlines, an answer has at least SW1 SW2, and after the card turns honest a cold reset and the
# same APDUs work. The card runs at a fast clock so that waiting times are milliseconds.
# (test_iso7816.py feeds pure random bytes; test_psam_link.py uses the simulator's faults.)
import sys
import time

import mptest

sys.path.append(mptest.repo_root() + "/tools")

import fuzzgen  # noqa: E402
import iso7816  # noqa: E402
import log  # noqa: E402
from apdu import ApduError  # noqa: E402
from iso7816 import AtrError  # noqa: E402
from linkerr import LinkError  # noqa: E402
from psam_app import PsamApp, PsamError  # noqa: E402
from t0_fakes import APDUS, ATRS, HONEST_ATR, T0Card, new_link  # noqa: E402


def fix_tck(atr):
    need, known = iso7816.expected_length(atr)
    if known and len(atr) == need and need > 2:
        x = 0
        for b in atr[1:-1]:
            x ^= b
        return atr[:-1] + bytes((x,))
    return atr


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()


def test_atr_parser_on_mutated_atrs():
    seed = fuzzgen.seed(0x400)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(5000)
    tally = fuzzgen.Tally()
    for i in range(n):
        data = fuzzgen.mutate(rng, ATRS[i % len(ATRS)])
        if rng.below(2):
            data = fix_tck(data)
        for k in range(len(data) + 1):
            need, known = iso7816.expected_length(data, k)
            mptest.true(need >= 2, "expected length %d" % need)
        try:
            atr = iso7816.parse_atr(data)
        except AtrError:
            tally.add("refused")
            continue
        mptest.hex_eq(atr.raw, data)
        mptest.true(atr.wi >= 0 and atr.guard_n >= 0 and len(atr.protocols) >= 1)
        atr.fi, atr.di, atr.fmax_hz, atr.specific, atr.wwt_etu(2), repr(atr)
        tally.add("ok")
    mptest.log(fuzzgen.report("atr", seed, n, tally))
    mptest.true(tally.get("ok") > n // 20 and tally.get("refused") > n // 20)


class EvilT0Card(T0Card):
    """The honest T=0 card (t0_fakes.py); while `evil` is set each thing it says may be damaged."""

    def __init__(self, rng):
        T0Card.__init__(self)
        self.rng = rng
        self.evil = False

    def damage(self, data):
        rng = self.rng
        if self.evil and rng.below(3) == 0:
            k = rng.below(5)
            if k == 0:
                data = b"\x60" * (1 + rng.below(3)) + data  # busy NULLs first
            elif k == 1:
                data = data + data
            elif k == 2:
                data = data[: rng.below(len(data) + 1)]
            else:
                data = fuzzgen.garble(rng, data, (b"\x61\x08", b"\x6c\x04", b"\x90\x00"))
        return data

    def atr(self):
        atr = HONEST_ATR
        if self.evil and self.rng.below(3) == 0:
            atr = fuzzgen.mutate(self.rng, atr)
            if self.rng.below(2):
                atr = fix_tck(atr)
        return atr


def honest(lk, card, what):
    card.evil = False
    atr = lk.reset()
    mptest.hex_eq(atr.raw, HONEST_ATR, what)
    mptest.hex_eq(lk.transceive(APDUS[0]), b"\x00\x00\x00\x00\x00\x07\x90\x00", what)
    mptest.hex_eq(lk.transceive(APDUS[1]), b"\x00\x00\x00\x2aMAC1\x90\x00", what)


def test_t0_link_against_a_garbling_card():
    seed = fuzzgen.seed(0x401)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(300)
    tally = fuzzgen.Tally()
    card = EvilT0Card(rng)
    lk = new_link(card)
    for i in range(n):
        card.evil = True
        t0 = time.ticks_ms()
        try:
            lk.reset()
            tally.add("reset_ok")
            for _ in range(1 + rng.below(4)):
                resp = lk.transceive(rng.choice(APDUS))
                mptest.true(len(resp) >= 2, "answer without a status word")
                tally.add("apdu_ok")
        except AtrError:
            tally.add("AtrError")
        except LinkError as e:
            tally.add(type(e).__name__)
        took = time.ticks_diff(time.ticks_ms(), t0)
        mptest.true(took < 20000, "limit: round %d took %d ms, over 20 s" % (i, took))
        honest(lk, card, "round %d" % i)
        log.clear()
    mptest.log(fuzzgen.report("t0_link", seed, n, tally))
    mptest.true(tally.get("ProtocolError") > 0 and tally.get("apdu_ok") > 0)


def test_psam_boot_over_a_garbling_link():
    seed = fuzzgen.seed(0x402)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(200)
    tally = fuzzgen.Tally()
    card = EvilT0Card(rng)
    lk = new_link(card)
    for i in range(n):
        card.evil = False
        lk.reset()
        card.evil = True
        app = PsamApp(lk)
        try:
            tid = app.boot()
            mptest.eq(len(tid), 6)
            mptest.true(app.ready)
            serial, s4, mac1 = app.init_purchase(
                b"RAND", 7, 100, 9, bytes(7), 1, 0, bytes(8), bytes(8)
            )
            mptest.eq((len(s4), len(mac1)), (4, 4))
            tally.add("ok")
        except (PsamError, ApduError) as e:
            tally.add(type(e).__name__)
        except LinkError as e:
            tally.add(type(e).__name__)
        card.evil = False
        lk.reset()
        app = PsamApp(lk)
        mptest.hex_eq(app.boot(), b"\x00\x00\x00\x00\x00\x07", "honest boot after round %d" % i)
        mptest.eq(
            app.init_purchase(b"RAND", 7, 100, 9, bytes(7), 1, 0, bytes(8), bytes(8))[2], b"MAC1"
        )
        log.clear()
    mptest.log(fuzzgen.report("psam_boot", seed, n, tally))
    mptest.true(tally.get("ok") > 0 and tally.total() - tally.get("ok") > 0)
