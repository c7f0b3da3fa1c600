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

TOKENS = (b"\x00\x00\xff", b"\x00\xff", pn532.ACK, pn532.NACK, b"\xd5\x4b", b"\xff\xff")
SELECT = b"\x00\xa4\x04\x00\x08\xa0\x00\x00\x06\x32\x01\x01\x05\x00"
ANSWER = b"\x6f\x10\x84\x08\xa0\x00\x00\x06\x32\x01\x01\x05\xa5\x04\x9f\x0c\x01\x00\x90\x00"
UID = b"\x04\x11\x22\x33\x44\x55\x66"
ATS = b"\x05\x78\x80\x70\x02"
TARGET_A = b"\x01\x01\x00\x44\x20\x07" + UID + ATS
TARGET_B = b"\x01\x01\x50\x01\x02\x03\x04\x00\x00\x00\x00\x00\x81\x81\x01\x00"


def frame(data, tfi=0xD5):
    body = bytes((tfi,)) + bytes(data)
    n = len(body)
    dcs = (-sum(body)) & 0xFF
    if n <= 254:
        return b"\x00\x00\xff" + bytes((n, (-n) & 0xFF)) + body + bytes((dcs, 0))
    hi, lo = n >> 8, n & 0xFF
    return b"\x00\x00\xff\xff\xff" + bytes((hi, lo, (-(hi + lo)) & 0xFF)) + body + bytes((dcs, 0))


ERR = b"\x00\x00\xff\x01\xff\x7f\x81\x00"


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


class FuzzChip:
    """A PN532 transport answering each command frame by its code (ACK, then the answer), with
    every frame it sends damaged, dropped, doubled or preceded by junk while `evil` is set.
    A new command frame or the host's ACK (abort) empties its output, as the chip does."""

    irq = None

    def __init__(self, rng):
        self.rng = rng
        self.evil = False
        self.queue = []
        self.last = None
        self.card_here = True

    def wake(self):
        pass

    def answer(self, cmd, data):
        if cmd == 0x4A:
            if not self.card_here:
                return b"\x4b\x00"
            return b"\x4b" + (TARGET_B if data[1:2] == b"\x03" else TARGET_A)
        if cmd == 0x40:
            return b"\x41\x00" + ANSWER
        if cmd == 0x02:
            return b"\x03\x32\x01\x06\x07"
        if cmd == 0x00:
            return b"\x01\x00"
        return bytes((cmd + 1, 0x00))[: 1 if cmd in (0x14, 0x32, 0x12) else 2]

    def out(self, f):
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

    def send(self, data):
        data = bytes(data)
        if data == pn532.NACK:
            if self.last is not None:
                self.out(self.last)
            return
        self.queue = []
        if data == pn532.ACK:
            return
        if len(data) < 8 or data[:3] != b"\x00\x00\xff":
            return
        off = 5 if data[3] != 0xFF else 8
        cmd = data[off + 1]
        self.out(pn532.ACK)
        self.last = frame(self.answer(cmd, data[off + 2 : -2]))
        self.out(self.last)

    def receive(self, buf, timeout_ms, hint=0):
        if not self.queue:
            return 0
        item = self.queue.pop(0)[: len(buf)]
        buf[: len(item)] = item
        return len(item)


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
