# A PN532 without a bus, in process: chip frames built independently of the driver (a test must
# not trust pn532.build_frame) and a fake transport that answers each command frame, honestly by
# default. For test_pn532_frames.py, test_fuzz_pn532.py and the atheris target
# tools/fuzz/targets/pn532.py (CPython, through tools/fuzz/shim.py), whose chips subclass
# FakeChip and damage what it sends (out()). Plain Python: it loads on MicroPython and CPython.
# It imports nothing from the driver (a fuzz target loads it before instrumenting the driver).

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
SELECT = b"\x00\xa4\x04\x00\x08\xa0\x00\x00\x06\x32\x01\x01\x05\x00"
ANSWER = b"\x6f\x10\x84\x08\xa0\x00\x00\x06\x32\x01\x01\x05\xa5\x04\x9f\x0c\x01\x00\x90\x00"
UID = b"\x04\x11\x22\x33\x44\x55\x66"
ATS = b"\x05\x78\x80\x70\x02"
TARGET_A = b"\x01\x01\x00\x44\x20\x07" + UID + ATS
TARGET_B = b"\x01\x01\x50\x01\x02\x03\x04\x00\x00\x00\x00\x00\x81\x81\x01\x00"
ERR = b"\x00\x00\xff\x01\xff\x7f\x81\x00"  # the chip's error frame


def frame(data, tfi=0xD5):
    """A chip frame (normal, or extended above 254 bytes) around `data`."""
    body = bytes((tfi,)) + bytes(data)
    n = len(body)
    dcs = (-sum(body)) & 0xFF
    if n <= 254:
        return b"\x00\x00\xff" + bytes((n, (-n) & 0xFF)) + body + bytes((dcs, 0))
    hi, lo = n >> 8, n & 0xFF
    return b"\x00\x00\xff\xff\xff" + bytes((hi, lo, (-(hi + lo)) & 0xFF)) + body + bytes((dcs, 0))


def answer(cmd, data, card_here=True):
    """The chip's answer (response code and parameters) to command `cmd` with `data`: one ISO-DEP
    type A card (or type B when asked for it) that answers SELECT with ANSWER."""
    if cmd == 0x4A:
        if not card_here:
            return b"\x4b\x00"
        return b"\x4b" + (TARGET_B if data[1:2] == b"\x03" else TARGET_A)
    if cmd == 0x40:
        return b"\x41\x00" + ANSWER
    if cmd == 0x02:
        return b"\x03\x32\x01\x06\x07"
    if cmd == 0x00:
        return b"\x01\x00"
    return bytes((cmd + 1, 0x00))[: 1 if cmd in (0x14, 0x32, 0x12) else 2]


class FakeChip:
    """A PN532 transport answering each command frame (ACK, then the answer) through out(); a
    new command frame or the host's ACK (abort) empties its output, as the chip does, and a NACK
    has the last answer sent again. `card_here` False: no card in the field."""

    irq = None

    def __init__(self):
        self.queue = []
        self.last = None
        self.card_here = True

    def wake(self):
        pass

    def out(self, f, code=None):
        """Send frame `f` (the answer's response code `code`; None for the ACK and a resend)."""
        self.queue.append(f)

    def send(self, data):
        data = bytes(data)
        if data == NACK:
            if self.last is not None:
                self.out(self.last)
            return
        self.queue = []
        if data == ACK or len(data) < 8 or data[:3] != b"\x00\x00\xff":
            return
        off = 5 if data[3] != 0xFF else 8
        cmd = data[off + 1]
        self.out(ACK)
        a = answer(cmd, data[off + 2 : -2], self.card_here)
        self.last = frame(a)
        self.out(self.last, a[0])

    def receive(self, buf, timeout_ms, hint=0):
        if not self.queue:
            return 0
        item = self.queue.pop(0)[: len(buf)]
        buf[: len(item)] = item
        return len(item)
