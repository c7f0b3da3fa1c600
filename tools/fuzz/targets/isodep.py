"""ISO 14443-4 (drivers/isodep.py): the ATS parser and IsoDep's block protocol (chaining, WTX,
R(NAK)/R(ACK) recovery) against an in-process card at block level (tests/mpy/test_fuzz_rc522.py's
BlockCard) whose every block is steered by the input.

Input: first byte's low bit picks the mode. 0: Ats(rest). 1: the second byte picks the APDU
(short or chained) and the card's WTX habit, then one control byte per block the card would send:
0 honest, 1 replaced by the next length-prefixed chunk, 2 timeout, 3 protocol error. Invariants:
only ProtocolError/LinkTimeout/CardGone/ChipError escape; an accepted ATS has FSC 16..4096 and
FWI/SFGI 0..14; an answer is bounded by max_answer; a fresh activation then gets the honest answer.
"""

from tools.fuzz import shim

shim.install()

import isodep  # noqa: E402
from linkerr import LinkError, LinkTimeout, ProtocolError  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "isodep"
SELECT = b"\x00\xa4\x04\x00\x08\xa0\x00\x00\x06\x32\x01\x01\x05\x00"
ANSWER = bytes(range(100)) + b"\x90\x00"
ATS = b"\x05\x78\x80\x40\x00"


class BlockCard:
    def __init__(self, script, wtx):
        self.script = script
        self.pos = 0
        self.wtx = wtx
        self.pni = 0
        self.pending = b""
        self.last = b"\xa2"

    def _take(self):
        s = self.script
        if self.pos >= len(s):
            return b""
        n = s[self.pos] % 64
        chunk = s[self.pos + 1 : self.pos + 1 + n]
        self.pos += 1 + n
        return bytes(chunk)

    def frame(self, data, timeout_us):
        out = self._honest(bytes(data))
        if self.pos < len(self.script):
            op = self.script[self.pos] & 3
            self.pos += 1
            if op == 1:
                return self._take()
            if op == 2:
                raise LinkTimeout("fuzz")
            if op == 3:
                raise ProtocolError("fuzz")
        if out is None:
            raise LinkTimeout("mute")
        return out

    def _honest(self, data):
        pcb = data[0] if data else 0
        if pcb == 0xE0:
            self.pni = 0
            return ATS
        if pcb == 0xC2:
            return b"\xc2"
        if pcb & 0xF6 == 0xB2:
            return self.last
        if pcb & 0xF6 == 0xA2:
            return self._piece()
        if pcb & 0xF7 == 0xF2:
            return self._piece()
        if pcb & 0xE2 == 0x02:
            if pcb & 0x10:
                self.last = bytes((0xA2 | (pcb & 1),))
                return self.last
            self.pending = ANSWER
            if self.wtx:
                self.wtx -= 1
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


def one_input(data):
    if len(data) < 2:
        return
    if not data[0] & 1:
        try:
            a = isodep.Ats(data[1:])
        except ProtocolError:
            return
        check(16 <= a.fsc <= 4096 and 0 <= a.fwi <= 14 and 0 <= a.sfgi <= 14, "ATS fields")
        return
    card = BlockCard(data[2:], data[1] >> 1 & 3)
    apdu = SELECT + bytes(80) if data[1] & 1 else SELECT
    dep = isodep.IsoDep(card, 64)
    try:
        dep.activate()
        resp = dep.exchange(apdu)
        check(len(resp) <= dep.max_answer + 64, "answer of %d bytes" % len(resp))
        dep.present()
        dep.deselect()
    except LinkError:
        pass
    card.script = b""
    card.wtx = 0
    dep = isodep.IsoDep(card, 64)
    dep.activate()
    check(bytes(dep.exchange(SELECT)) == ANSWER, "honest exchange")


SEEDS = (
    b"\x00" + ATS,
    b"\x00\x01",
    b"\x00\x04\x25\xb3\x68",
    b"\x00\x0d\x78\x77\xb1\x02" + bytes(8),
    b"\x01\x00",
    b"\x01\x01",
    b"\x01\x02",
    b"\x01\x07",
    b"\x01\x00\x00\x01\x03\x02\x00\x01",
    b"\x01\x00\x00\x00\x01\x00\x02\x00\x03",
)
