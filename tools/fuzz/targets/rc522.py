"""RC522 FIFO and ISO-DEP blocks (drivers/rc522.py with drivers/isodep.py): the driver runs on the
MFRC522 simulator (tools/sim/rc522.py, in-process) behind a fake SPI bus whose read-backs the
input damages, as tests/mpy/test_fuzz_rc522.py does with its seeded mutator: FIFO contents
(anticollision, SELECT, ATS, I/R/S blocks; optionally with a fresh CRC_A so the damage reaches
the parsers behind the CRC check) and the status registers read with ComIrqReg (ErrorReg,
FIFOLevelReg, ControlReg).

Input: byte 0 picks the field (4/7/10-byte UID, or two cards that collide), whether the card asks
for WTX, chains its answer in small blocks, and the APDU (SELECT, or one whose answer is 200
bytes: chained). The rest is a script read once per FIFO or status read-back: `op` with op & 3:
0 honest, 1 FIFO bytes replaced by the next (op >> 2) & 0x1F script bytes (CRC_A recomputed
when op & 0x80), 2 one status byte set to the next script byte, 3 the read-back is all zeros.
When the script ends the bus is honest.
Invariants (docs/robustness.md): poll() gives a Target or None or raises ChipError; transceive()
raises only linkerr types and never answers more than the card sent (undamaged) or the
ISO-DEP limit; present() gives a bool; release() never raises; a Target has a 4/7/10-byte
UID (one of a card in the field when no read-back was damaged) and an ATS whose length byte is
its length. Then, on an honest bus, the
same driver finds the card again (two polls at most: a damaged HLTA may leave it halted) and
gets the exact SELECT answer (and the exact chained one).
"""

from tools.fuzz import shim

shim.install()

import crc  # noqa: E402
from linkerr import ChipError, LinkError  # noqa: E402
from rc522 import RC522  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402
from tools.sim import picc as pm  # noqa: E402
from tools.sim.rc522 import RC522Sim  # noqa: E402

NAME = "rc522"
MODE0 = {"firstbit": "MSB", "polarity": 0, "phase": 0}
FIFO_READ = 0x92  # FIFODataReg read, repeated
STATUS0 = 0x80 | (0x04 << 1)  # ComIrqReg read: the driver's status transaction
SELECT = b"\x00\xa4\x04\x00\x08" + pm.TestCard.AID
SELECT_ANSWER = b"\x6f\x0a\x84\x08" + pm.TestCard.AID + b"\x90\x00"
LONG = b"\x80\xca\x00\xc8"  # TestCard: 200 counting bytes, then 9000
UIDS = (
    bytes.fromhex("04a1b2c3"),
    bytes.fromhex("04a1b2c3d4e5f6"),
    bytes.fromhex("04a1b2c3d4e5f60718a9"),
)
OTHER = bytes.fromhex("04a1b2c4")  # shares 3 bytes with UIDS[0]: the anticollision must split


class FuzzSPI:
    """SPI to the simulator whose read-backs follow the script, then are honest."""

    def __init__(self, chip, script):
        self.chip = chip
        self.script = script
        self.pos = 0
        self.damaged = 0

    def write(self, buf):
        self.chip.spi_exchange(bytes(buf), MODE0)

    def _next(self):
        s = self.script
        if self.pos >= len(s):
            return None
        self.pos += 1
        return s[self.pos - 1]

    def write_readinto(self, wbuf, rbuf):
        rbuf[:] = self.chip.spi_exchange(bytes(wbuf), MODE0)
        n = len(wbuf)
        first = wbuf[0]
        if not (first == FIFO_READ and n > 1) and not (first == STATUS0 and n >= 5):
            return
        op = self._next()
        if op is None or not op & 3:
            return
        kind = op & 3
        self.damaged += 1
        if kind == 3:
            rbuf[1:n] = bytes(n - 1)
        elif first == FIFO_READ and kind == 1:
            m = n - 1
            k = (op >> 2) & 0x1F
            bad = bytes(self.script[self.pos : self.pos + k])
            self.pos += k
            bad = (bad + bytes(m))[:m]
            if op & 0x80 and m >= 3:
                c = crc.crc_a(bad[:-2])
                bad = bad[:-2] + bytes((c & 0xFF, c >> 8))
            rbuf[1:n] = bad
        elif first == STATUS0:
            v = self._next()
            rbuf[2 + (op >> 2) % 3] = 0xFF if v is None else v


class CS:
    def __init__(self, chip):
        self.chip = chip

    def value(self, v):
        self.chip.spi_select(not v)


def _field(ctl):
    chip = RC522Sim()
    kind = ctl & 3
    knobs = {}
    if ctl & 4:
        knobs["wtx"] = (1, 3)
    if ctl & 8:
        knobs["chain_inf"] = 8
    uids = (UIDS[0], OTHER) if kind == 3 else (UIDS[kind],)
    for i, uid in enumerate(uids):
        chip.place("card%d" % i, pm.Picc(pm.TestCard(uid), **knobs))
    return chip, uids


def one_input(data):
    if not data:
        return
    ctl = data[0]
    chip, uids = _field(ctl)
    spi = FuzzSPI(chip, data[1:])
    rd = RC522(spi, CS(chip))
    apdu = LONG if ctl & 0x10 else SELECT
    for _ in range(1 + (ctl >> 5 & 1)):
        rd.wakeup = bool(ctl & 0x40)
        try:
            t = rd.poll()
        except ChipError:
            continue
        if t is None:
            continue
        check(len(t.uid) in (4, 7, 10), "UID of %d bytes" % len(t.uid))
        # A read-back damaged under a fresh CRC_A can make another UID (a SAK that says
        # "complete" one level early): nothing on the bus tells, so only an undamaged poll
        # must name a card in the field.
        check(spi.damaged or t.uid in uids, "target UID %s not in the field" % bytes(t.uid).hex())
        check(not t.iso_dep or (len(t.ats) >= 1 and t.ats[0] == len(t.ats)), "ATS length")
        if t.iso_dep:
            try:
                resp = rd.transceive(apdu)
                # a damaged block under a fresh CRC may say more: the bound is max_answer
                n = len(resp)
                check(n <= 202 or spi.damaged, "answer of %d bytes" % n)
                check(n <= rd.isodep.max_answer + 64, "answer of %d bytes" % n)
            except LinkError:
                pass
        check(rd.present() in (True, False), "present() not a bool")
    rd.release()
    spi.script = b""
    for _ in range(2):
        rd.wakeup = True
        t = rd.poll()
        if t is not None:
            break
    check(t is not None, "no card on an honest bus")
    check(t.uid in uids, "honest UID %s" % bytes(t.uid).hex())
    check(bytes(rd.transceive(SELECT)) == SELECT_ANSWER, "honest SELECT answer")
    if ctl & 0x10:
        want = bytes(i & 0xFF for i in range(200)) + b"\x90\x00"
        check(bytes(rd.transceive(LONG)) == want, "honest chained answer")
    rd.release()


SEEDS = (
    b"\x00",
    b"\x01",
    b"\x02",
    b"\x03",
    b"\x14",
    b"\x1c",
    b"\x23",
    b"\x40",
    b"\x00\x00\x00\x01",
    b"\x00\x00\x00\x02\x41",
    b"\x10\x00\x00\x00\x00\x00\x00\x00\x85\x05\x78\x80\x40\x00",
    b"\x00\x03",
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01",
)
