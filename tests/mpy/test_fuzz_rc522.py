# mpy: heapsize=192k timeout=300 server=tools.sim.rc522_server
# Fuzz (issue 11): RC522 FIFO contents and ISO-DEP blocks. The RC522 driver runs against the
# MFRC522 simulator through an SPI wrapper that damages what the driver reads back: FIFO bytes
# (half the time with a freshly computed CRC_A, so the damage reaches the anticollision, SELECT,
# ATS and block parsers), FIFO level, error and last-bits registers. Then drivers/isodep.py
# alone: the ATS parser and IsoDep against an in-process card whose blocks are mutated.
# Invariants: poll() returns a target or None or raises ChipError; transceive() raises only linkerr
# types; release() never raises; a returned target is consistent; once the bus is honest the
# same driver activates the card and exchanges an APDU normally.
# (test_rc522.py already uses the simulator's own garbage/noise faults; this adds mutations.)
import sys

import mptest

sys.path.append(mptest.repo_root() + "/tools")

import crc  # noqa: E402
import fuzzgen  # noqa: E402
import isodep  # noqa: E402
import log  # noqa: E402
from linkerr import CardGone, ChipError, LinkError, LinkTimeout, ProtocolError  # noqa: E402
from rc522 import RC522  # noqa: E402
from sim_pin import Pin  # noqa: E402
from sim_spi import SimSPI  # noqa: E402
from simlink import Control  # noqa: E402

AID = bytes.fromhex("A000000632010105")
SELECT = b"\x00\xa4\x04\x00\x08" + AID
UID = bytes.fromhex("04a1b2c3")
STATUS0 = 0x80 | (0x04 << 1)  # ComIrqReg read: the driver's status transaction
FIFO_READ = 0x92

ctl = None


class FuzzSPI(SimSPI):
    """SimSPI whose read-backs are damaged while `rate` > 0 (one read in `rate`)."""

    def __init__(self, rng):
        SimSPI.__init__(self, "rc522", baudrate=4000000, polarity=0, phase=0)
        self.rng = rng
        self.rate = 0
        self.hits = 0

    def write_readinto(self, write_buf, read_buf):
        SimSPI.write_readinto(self, write_buf, read_buf)
        if not self.rate or self.rng.below(self.rate):
            return
        rng = self.rng
        n = len(write_buf)
        first = write_buf[0]
        if first == FIFO_READ and n > 1:
            m = n - 1  # bytes of FIFO data in read_buf[1:n]
            data = bytes(read_buf[1:n])
            bad = fuzzgen.mutate(rng, data)[:m]
            bad = bad + bytes(m - len(bad))
            if m >= 3 and rng.below(2):
                c = crc.crc_a(bad[:-2])
                bad = bad[:-2] + bytes((c & 0xFF, c >> 8))
            read_buf[1:n] = bad
            self.hits += 1
        elif first == STATUS0 and n >= 5:
            i = 2 + rng.below(3)  # ErrorReg, FIFOLevelReg or ControlReg
            read_buf[i] = rng.choice((0, 1, 2, 3, 7, 0x40, 0x41, 0x80, 0xFF, rng.next() & 0xFF))
            self.hits += 1


def setup():
    global ctl
    if ctl is None:
        ctl = Control()
    log.set_level(log.INFO, echo=False)
    log.clear()


def test_rc522_with_damaged_fifo_and_status_reads():
    seed = fuzzgen.seed(0x300)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(40)
    tally = fuzzgen.Tally()
    spi = FuzzSPI(rng)
    cs = Pin("rc522_cs", Pin.OUT, value=1)
    rd = RC522(spi, cs)
    ctl.call("rc522_clear")
    ctl.call("rc522_place", name="card")
    for i in range(n):
        spi.rate = 2 + rng.below(6)
        rd.wakeup = True  # a released card is HALTed: wake it each round
        for _ in range(1 + rng.below(3)):
            try:
                t = rd.poll()
            except ChipError:
                tally.add("poll_ChipError")
                continue
            if t is None:
                tally.add("poll_none")
                continue
            tally.add("poll_target")
            mptest.true(len(t.uid) in (4, 7, 10), "UID %r" % t.uid)
            mptest.true(not t.iso_dep or (len(t.ats) >= 1 and t.ats[0] == len(t.ats)), "ATS")
            try:
                if t.iso_dep:
                    resp = rd.transceive(SELECT)
                    mptest.true(len(resp) >= 0)
                tally.add("apdu_ok")
            except LinkError as e:
                tally.add("apdu_" + type(e).__name__)
            rd.present()
        rd.release()
        spi.rate = 0
        rd.wakeup = True
        t = rd.poll()
        if t is None:  # a damaged HLTA/DESELECT may leave the card halted or active: once more
            t = rd.poll()
        mptest.true(t is not None, "round %d: no card once the bus is honest" % i)
        mptest.hex_eq(t.uid, UID)
        mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00", "round %d" % i)
        rd.release()
        log.clear()
    rd.wakeup = False
    mptest.log(fuzzgen.report("rc522_fifo", seed, n, tally) + " damaged_reads=%d" % spi.hits)
    mptest.true(tally.get("poll_target") > 0 and spi.hits > n)


# -- drivers/isodep.py alone ---------------------------------------------------------------------


def test_ats_parser_on_mutated_ats():
    seed = fuzzgen.seed(0x301)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(4000)
    tally = fuzzgen.Tally()
    good = (
        b"\x05\x78\x80\x40\x00",
        b"\x01",
        b"\x04\x25\xb3\x68",
        b"\x0d\x78\x77\xb1\x02" + bytes(8),
    )
    for i in range(n):
        raw = fuzzgen.garble(rng, good[i % len(good)])
        try:
            a = isodep.Ats(raw)
        except ProtocolError:
            tally.add("refused")
            continue
        mptest.true(16 <= a.fsc <= 4096 and 0 <= a.fwi <= 14 and 0 <= a.sfgi <= 14, raw)
        tally.add("ok")
    mptest.log(fuzzgen.report("isodep_ats", seed, n, tally))
    mptest.true(tally.get("refused") > 0 and tally.get("ok") > 0)


class BlockCard:
    """An ISO-DEP card at block level: echoes APDUs as `answer`, chains long answers, sends a
    WTX now and then; `damage` blocks come back mutated (then it is honest again)."""

    def __init__(self, rng, answer):
        self.rng = rng
        self.answer = answer
        self.damage = 0
        self.pni = 0
        self.pending = b""
        self.mode = None

    def frame(self, data, timeout_us):
        data = bytes(data)
        out = self._honest(data)
        if self.damage and out is not None:
            self.damage -= 1
            k = self.rng.below(10)
            if k == 0:
                raise LinkTimeout("fuzz")
            if k == 1:
                raise ProtocolError("fuzz")
            return fuzzgen.garble(self.rng, out)  # empty frames too (see e2d9bbd)
        if out is None:
            raise LinkTimeout("mute")
        return out

    def _honest(self, data):
        pcb = data[0]
        if pcb == 0xE0:
            self.pni = 0
            return b"\x05\x78\x80\x40\x00"
        if pcb == 0xC2:
            return b"\xc2"
        if pcb & 0xF6 == 0xB2:  # R(NAK): repeat the last block
            return self.last if hasattr(self, "last") else b"\xa2"
        if pcb & 0xF6 == 0xA2:  # R(ACK) during our chained answer
            return self._piece()
        if pcb & 0xF7 == 0xF2:  # S(WTX) response
            return self._piece()
        if pcb & 0xE2 == 0x02:
            if pcb & 0x10:
                self.last = bytes((0xA2 | (pcb & 1),))
                return self.last
            self.pending = self.answer
            if self.rng.below(4) == 0:
                self.last = b"\xf2\x01"
                return self.last
            return self._piece()
        return None

    def _piece(self):
        chunk, self.pending = self.pending[:40], self.pending[40:]
        pcb = 0x02 | self.pni | (0x10 if self.pending else 0)
        self.pni ^= 1
        self.last = bytes((pcb,)) + chunk
        return self.last


def test_isodep_against_mutated_blocks():
    seed = fuzzgen.seed(0x302)
    rng = fuzzgen.Rng(seed)
    n = fuzzgen.count(600)
    tally = fuzzgen.Tally()
    answer = bytes(range(100)) + b"\x90\x00"
    card = BlockCard(rng, answer)
    dep = isodep.IsoDep(card, 64)
    dep.activate()
    for i in range(n):
        card.damage = 1 + rng.below(3)
        apdu = SELECT if rng.below(2) else SELECT + bytes(80)  # chained command too
        try:
            resp = dep.exchange(apdu)
            mptest.true(len(resp) <= dep.max_answer + 64, "answer of %d bytes" % len(resp))
            tally.add("ok" if resp == answer else "ok_other")
        except (CardGone, LinkTimeout, ProtocolError, ChipError) as e:
            tally.add(type(e).__name__)
        # Recovery as the readers do it: a fresh activation, then an honest exchange.
        card.damage = 0
        dep = isodep.IsoDep(card, 64)
        dep.activate()
        mptest.hex_eq(dep.exchange(SELECT), answer, "honest exchange after round %d" % i)
    mptest.log(fuzzgen.report("isodep_blocks", seed, n, tally))
    mptest.true(tally.get("ProtocolError") + tally.get("CardGone") > 0)
