"""PN532 frames and the driver (drivers/pn532.py) on a fake transport.

Input: first byte picks the mode. 0: parse_frame on the rest; 1/2: parse_target_a/b; 3: the
driver (init, poll, transceive, present, release) against a chip whose every frame is steered by
the input (honest, lost, raw bytes, or a well-framed answer with fuzzed parameters), then the
same reader against an honest chip. Invariants: only linkerr types escape; a data frame has a
good checksum and lies inside the bytes received; a target has a 4/7/10-byte UID and claims
ISO-DEP only with a consistent ATS; afterwards the honest chip gives the honest target and answer.
"""

import os
import sys

from tools.fuzz import shim

shim.install()
if os.path.join(shim.ROOT, "tests/mpy") not in sys.path:
    sys.path.append(os.path.join(shim.ROOT, "tests/mpy"))

import pn532  # noqa: E402
from linkerr import LinkError, ProtocolError  # noqa: E402
from pn532_fakes import ANSWER, SELECT, TARGET_A, TARGET_B, UID, FakeChip, frame  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "pn532"


class Chip(FakeChip):
    """The fake chip of tests/mpy/pn532_fakes.py (ACK then the answer to each command frame).
    While `script` has bytes, each frame it would send is steered by one control byte: 0 honest,
    1 lost, 2 the next length-prefixed chunk raw, 3 the answer's code byte kept and its
    parameters replaced by the next chunk (well framed, so the damage reaches the driver's
    parsers)."""

    def __init__(self, script=b""):
        FakeChip.__init__(self)
        self.script = script
        self.pos = 0

    def _take(self):
        s = self.script
        if self.pos >= len(s):
            return None
        n = s[self.pos] % 64
        chunk = s[self.pos + 1 : self.pos + 1 + n]
        self.pos += 1 + n
        return chunk

    def out(self, f, code=None):
        if self.pos >= len(self.script):
            self.queue.append(f)
            return
        op = self.script[self.pos] & 3
        self.pos += 1
        if op == 0:
            self.queue.append(f)
        elif op == 2:
            self.queue.append(self._take() or b"")
        elif op == 3 and code is not None:
            self.queue.append(frame(bytes((code,)) + (self._take() or b"")))


def _frames(data):
    buf = bytearray(pn532.FRAME_BUF)
    data = data[: len(buf)]
    m = len(data)
    buf[:m] = data
    try:
        size = pn532.frame_size(buf, m)
        check(size == -1 or size > 0, "frame size %d" % size)
        kind, off, ln = pn532.parse_frame(buf, m)
    except ProtocolError:
        return
    check(kind in (1, 2, 3, 4), "frame kind %r" % kind)
    if kind == pn532.FRAME_DATA:
        check(off + ln < m, "data runs past the bytes received")
        check(sum(buf[off : off + ln + 1]) & 0xFF == 0, "checksum")
        check(buf[off] == 0xD5 and ln >= 2, "TFI/length")


def _target(t, b):
    if t is None:
        return
    if b:
        check(len(t.uid) == 4 and t.ats[0] == 0x50, "type B target %r" % (t.uid,))
    else:
        check(len(t.uid) in (4, 7, 10), "UID of %d bytes" % len(t.uid))
        if t.iso_dep:
            check(len(t.ats) >= 1 and t.ats[0] == len(t.ats), "ATS %r" % (t.ats,))


def _driver(script):
    chip = Chip(script)
    r = pn532.PN532(
        chip, kinds="AB", ack_timeout_ms=3, command_timeout_ms=5, exchange_timeout_ms=5
    )
    for op in ("init", "poll", "transceive", "present", "poll", "transceive", "release"):
        try:
            if op == "init":
                r.init()
            elif op == "poll":
                t = r.poll()
                if t is not None:
                    _target(t, t.kind == "B")
            elif op == "transceive":
                if r.target is not None:
                    check(len(r.transceive(SELECT)) >= 2, "answer shorter than a status word")
            elif op == "present":
                r.present()
            else:
                r.release()
        except LinkError:
            pass
    chip.script = b""
    r.init()
    t = r.poll()
    check(t is not None and t.kind == "A" and t.uid == UID and t.iso_dep, "honest poll")
    check(bytes(r.transceive(SELECT)) == ANSWER, "honest answer")
    check(r.present(), "honest presence")


def one_input(data):
    if not data:
        return
    mode, rest = data[0] & 3, data[1:]
    if mode == 0:
        _frames(rest)
    elif mode == 3:
        _driver(rest)
    else:
        b = mode == 2
        try:
            t = (pn532.parse_target_b if b else pn532.parse_target_a)(rest)
        except ProtocolError:
            return
        _target(t, b)


SEEDS = (
    b"\x00" + pn532.ACK,
    b"\x00" + frame(b"\x41\x00" + ANSWER),
    b"\x00" + frame(b"\x4b" + TARGET_A),
    b"\x00" + frame(b"\x41\x00" + bytes(range(256))),
    b"\x00\x00\x00" + frame(b"\x03\x32\x01\x06\x07"),
    b"\x01" + TARGET_A,
    b"\x02" + TARGET_B,
    b"\x03",
    b"\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x04\x00\x01\x00\x00",
)
