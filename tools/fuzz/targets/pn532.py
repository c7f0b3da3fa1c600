"""PN532 frames and the driver (drivers/pn532.py) on a fake transport.

Input: first byte picks the mode. 0: parse_frame on the rest; 1/2: parse_target_a/b; 3: the
driver (init, poll, transceive, present, release) against a chip whose every frame is steered by
the input (honest, lost, raw bytes, or a well-framed answer with fuzzed parameters), then the
same reader against an honest chip. Invariants: only linkerr types escape; a data frame has a
good checksum and lies inside the bytes received; a target has a 4/7/10-byte UID and claims
ISO-DEP only with a consistent ATS; afterwards the honest chip gives the honest target and answer.
"""

from tools.fuzz import shim

shim.install()

import pn532  # noqa: E402
from linkerr import LinkError, ProtocolError  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "pn532"
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


def answer(cmd, data):
    if cmd == 0x4A:
        return b"\x4b" + (TARGET_B if data[1:2] == b"\x03" else TARGET_A)
    if cmd == 0x40:
        return b"\x41\x00" + ANSWER
    if cmd == 0x02:
        return b"\x03\x32\x01\x06\x07"
    if cmd == 0x00:
        return b"\x01\x00"
    return bytes((cmd + 1, 0x00))[: 1 if cmd in (0x14, 0x32, 0x12) else 2]


class Chip:
    """Answers each command frame (ACK then the answer). While `script` has bytes, each frame
    it would send is steered by one control byte: 0 honest, 1 lost, 2 the next length-prefixed
    chunk raw, 3 the answer's code byte kept and its parameters replaced by the next chunk
    (well framed, so the damage reaches the driver's parsers)."""

    irq = None

    def __init__(self, script=b""):
        self.script = script
        self.pos = 0
        self.queue = []
        self.last = None

    def wake(self):
        pass

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

    def send(self, data):
        data = bytes(data)
        if data == pn532.NACK:
            if self.last is not None:
                self.out(self.last)
            return
        self.queue = []
        if data == pn532.ACK or len(data) < 8 or data[:3] != b"\x00\x00\xff":
            return
        off = 5 if data[3] != 0xFF else 8
        cmd = data[off + 1]
        self.out(pn532.ACK)
        a = answer(cmd, data[off + 2 : -2])
        self.last = frame(a)
        self.out(self.last, a[0])

    def receive(self, buf, timeout_ms, hint=0):
        if not self.queue:
            return 0
        item = self.queue.pop(0)[: len(buf)]
        buf[: len(item)] = item
        return len(item)


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
