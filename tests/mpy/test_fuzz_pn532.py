# mpy: heapsize=128k timeout=240
# Fuzz (issue 11): PN532 frames. The pure parsers (frame_size, parse_frame, parse_target_a/b) on
# mutated valid frames, then the driver (init, poll, transceive, present, release) against a chip
# that answers each command with damaged, cut, doubled, stale or missing frames. Invariants: only
# linkerr types escape; a parsed data frame has a good checksum and lies inside the buffer; a
# target has a 4/7/10-byte UID and claims ISO-DEP only with a consistent ATS; every call returns
# within its timeouts; when the chip turns honest the same reader polls and exchanges normally.
# test_pn532_frames.py already damages InDataExchange answers and random transports.
import sys
import time

import mptest

sys.path.append(mptest.repo_root() + "/tools")

import fuzzgen  # noqa: E402
import log  # noqa: E402
import pn532  # noqa: E402
from linkerr import LinkError, ProtocolError  # noqa: E402
from pn532_fakes import (  # noqa: E402
    ANSWER,
    ERR,
    SELECT,
    TARGET_A,
    TARGET_B,
    UID,
    FakeChip,
    frame,
)

TOKENS = (b"\x00\x00\xff", b"\x00\xff", pn532.ACK, pn532.NACK, b"\xd5\x4b", b"\xff\xff")


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()


def test_frame_parsers_on_mutated_frames():
    seed = fuzzgen.seed(0x200)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(4000)
    tally = fuzzgen.Tally()
    good = (
        pn532.ACK,
        pn532.NACK,
        ERR,
        frame(b"\x41\x00" + ANSWER),
        frame(b"\x4b" + TARGET_A),
        frame(b"\x41\x00" + bytes(range(256))),  # extended
        frame(b"\x41\x00" + bytes(range(252))),  # LEN FF LCS 01, a normal frame (see e2d9bbd)
        b"\x00\x00" + frame(b"\x03\x32\x01\x06\x07"),  # leading junk
    )
    buf = bytearray(pn532.FRAME_BUF)
    for i in range(n):
        data = fuzzgen.garble(rng, good[i % len(good)], TOKENS)[: len(buf)]
        m = len(data)
        buf[:m] = data
        try:
            size = pn532.frame_size(buf, m)
            mptest.true(size == -1 or size > 0, "frame size %d" % size)
            kind, off, ln = pn532.parse_frame(buf, m)
        except ProtocolError:
            tally.add("refused")
            continue
        mptest.true(
            kind in (pn532.FRAME_ACK, pn532.FRAME_NACK, pn532.FRAME_DATA, pn532.FRAME_ERROR)
        )
        if kind == pn532.FRAME_DATA:
            mptest.true(off + ln < m, "data runs past the bytes received")
            mptest.eq(sum(buf[off : off + ln + 1]) & 0xFF, 0, "checksum")
            mptest.eq(buf[off], 0xD5)
            mptest.true(ln >= 2)
        tally.add("kind%d" % kind)
    mptest.log(fuzzgen.report("pn532_frames", seed, n, tally))
    mptest.true(tally.get("refused") > n // 4 and tally.get("kind3") > 0)


def test_target_parsers_on_mutated_answers():
    seed = fuzzgen.seed(0x201)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(4000)
    tally = fuzzgen.Tally()
    for i in range(n):
        b = i & 1
        data = fuzzgen.garble(rng, TARGET_B if b else TARGET_A)
        try:
            t = (pn532.parse_target_b if b else pn532.parse_target_a)(data)
        except ProtocolError:
            tally.add("refused")
            continue
        if t is None:
            tally.add("none")
            continue
        if b:
            mptest.eq(len(t.uid), 4)
            mptest.eq(t.ats[0], 0x50)
        else:
            mptest.true(len(t.uid) in (4, 7, 10), "UID of %d bytes" % len(t.uid))
            if t.iso_dep:
                mptest.true(len(t.ats) >= 1 and t.ats[0] == len(t.ats), "ATS %r" % t.ats)
        tally.add("B" if b else "A")
    mptest.log(fuzzgen.report("pn532_targets", seed, n, tally))
    mptest.true(tally.get("refused") > 0 and tally.get("A") > 0 and tally.get("B") > 0)


class FuzzChip(FakeChip):
    """The fake chip (pn532_fakes.py) with every frame it sends damaged, dropped, doubled or
    preceded by junk while `evil` is set."""

    def __init__(self, rng):
        FakeChip.__init__(self)
        self.rng = rng
        self.evil = False

    def out(self, f, code=None):
        rng = self.rng
        if not self.evil or rng.below(3) == 0:
            self.queue.append(f)
            return
        k = rng.below(6)
        if k == 0:
            return  # lost
        if k == 1:
            self.queue.append(f)
            self.queue.append(f)
        elif k == 2:
            self.queue.append(rng.bytes(1 + rng.below(12)))
            self.queue.append(f)
        elif k == 3:
            self.queue.append(frame(b"\x4b" + fuzzgen.garble(rng, TARGET_A)))
        else:
            self.queue.append(fuzzgen.garble(rng, f, TOKENS))


def honest_round(r, chip, what):
    chip.evil = False
    # The fake chip answers at once, but a busy machine can stall this process past the fuzzing
    # rounds' 5 ms deadlines: the honest round must not depend on that.
    short = (r.ack_timeout_ms, r.command_timeout_ms, r.exchange_timeout_ms)
    r.ack_timeout_ms, r.command_timeout_ms, r.exchange_timeout_ms = 1000, 2000, 2500
    try:
        _honest_round(r, what)
    finally:
        r.ack_timeout_ms, r.command_timeout_ms, r.exchange_timeout_ms = short


def _honest_round(r, what):
    t = r.poll()
    mptest.true(t is not None, "no target after the chip turned honest (%s)" % what)
    mptest.eq(t.kind, "A", what)
    mptest.hex_eq(t.uid, UID, what)
    mptest.true(t.iso_dep, what)
    mptest.hex_eq(r.transceive(SELECT), ANSWER, what)
    mptest.true(r.present(), what)


def test_driver_against_a_garbling_chip_then_an_honest_one():
    seed = fuzzgen.seed(0x202)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(300)
    tally = fuzzgen.Tally()
    chip = FuzzChip(rng)
    # Both kinds, so the type B round's parsing is fuzzed too (boards poll type A only).
    r = pn532.PN532(
        chip, kinds="AB", ack_timeout_ms=3, command_timeout_ms=5, exchange_timeout_ms=5
    )
    r.init()
    ops = ("poll", "poll", "transceive", "present", "release", "init")
    for i in range(n):
        chip.evil = True
        chip.card_here = rng.below(8) != 0
        for _ in range(1 + rng.below(4)):
            op = rng.choice(ops)
            t0 = time.ticks_ms()
            try:
                if op == "poll":
                    t = r.poll()
                    if t is not None:
                        mptest.true(len(t.uid) in (4, 7, 10))
                        mptest.true(not t.iso_dep or t.kind == "B" or t.ats[0] == len(t.ats))
                elif op == "transceive":
                    if r.target is None:
                        continue
                    resp = r.transceive(SELECT)
                    mptest.true(len(resp) >= 2, "answer shorter than a status word")
                elif op == "present":
                    r.present()
                elif op == "release":
                    r.release()
                else:
                    r.init()
                tally.add(op + "_ok")
            except LinkError as e:
                tally.add(op + "_" + type(e).__name__)
            took = time.ticks_diff(time.ticks_ms(), t0)
            mptest.true(took < 10000, "limit: %s took %d ms, over 10 s" % (op, took))
        chip.card_here = True
        honest_round(r, chip, "round %d" % i)
        log.clear()
    mptest.log(fuzzgen.report("pn532_driver", seed, n, tally))
    mptest.true(tally.get("poll_ok") > 0 and tally.get("poll_ProtocolError") > 0)
