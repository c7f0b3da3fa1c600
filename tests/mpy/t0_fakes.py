# An honest T=0 PSAM on a fake UART, in process, for drivers/psam_link.py without a simulator:
# tests/mpy/test_fuzz_psam.py and the atheris target tools/fuzz/targets/psam.py (CPython, through
# tools/fuzz/shim.py) subclass it to damage what it says (damage(), atr()). Plain Python: it loads
# on MicroPython and on CPython. The driver is imported only by new_link() (a fuzz target loads
# this module before instrumenting the driver).

# ATR shapes to mutate (direct and inverse convention, TA1/TC1/TD1, T=1 offered, TCK)
ATRS = (
    bytes.fromhex("3b17135053414d53494d"),
    bytes.fromhex("3b8740015053414d53494d"),
    bytes.fromhex("3b97115001025053414d53494d"),
    bytes.fromhex("3b971380015053414d53494d5d"),
    bytes.fromhex("3B8F8001804F0CA000000306030001000000006A"),
)
HONEST_ATR = bytes.fromhex("3b8740015053414d53494d")  # no TA1 (no PPS), WI 1
CLK = 3571200 * 100  # 960 kbaud: a work waiting time of ~10 ms instead of 1 s
INCOMING = (0x70, 0x72, 0xA4, 0x1A, 0xFA, 0xDC)  # P3 is Lc for these INS
APDUS = (
    b"\x00\xb0\x96\x00\x06",
    b"\x80\x70\x00\x00\x24" + bytes(36) + b"\x08",
    b"\x80\x72\x00\x00\x04MAC2",
    b"\x80\xe0\x00\x00",
)


class Pin:
    """machine.Pin enough for the reset line: a rising edge calls `on_rise`."""

    def __init__(self, on_rise):
        self.level = 0
        self.on_rise = on_rise

    def value(self, v=None):
        if v is None:
            return self.level
        if v and not self.level:
            self.on_rise()
        self.level = 1 if v else 0


class T0Card:
    """A T=0 PSAM on a fake UART (no echo): ATR on reset, then headers, procedure bytes, data
    and status words. What it says passes through damage() and its ATR comes from atr(): a
    subclass damages them."""

    def __init__(self):
        self.out = b""
        self.cmd = b""
        self.expect_data = 0
        self.header = None
        self.pending = b""

    def damage(self, data):
        return data

    def atr(self):
        return HONEST_ATR

    # machine.UART
    def init(self, **kw):
        pass

    def any(self):
        return len(self.out)

    def readinto(self, view):
        n = min(len(view), len(self.out))
        if not n:
            return None
        view[:n] = self.out[:n]
        self.out = self.out[n:]
        return n

    def _say(self, data):
        self.out += self.damage(data)

    def reset(self):
        self.out = b""
        self.cmd = b""
        self.expect_data = 0
        self.out = self.atr()

    def write(self, data):
        for b in bytes(data):
            if self.expect_data:
                self.cmd += bytes((b,))
                self.expect_data -= 1
                if not self.expect_data:
                    body, self.cmd = self.cmd, b""
                    self._answer(self.header, body)
                continue
            self.cmd += bytes((b,))
            if len(self.cmd) == 5:
                h = self.cmd
                self.header = h
                self.cmd = b""
                if h[1] in INCOMING and h[4]:
                    self.expect_data = h[4]
                    self._say(bytes((h[1],)))
                else:
                    self._answer(h, None)
        return len(data)

    def _answer(self, h, data):
        ins = h[1]
        if ins == 0x70:
            self.pending = b"\x00\x00\x00\x2a" + b"MAC1"
            self._say(b"\x61\x08")
        elif ins == 0xC0:
            body, self.pending = self.pending[: h[4]], b""
            self._say(bytes((ins,)) + body + b"\x90\x00")
        elif ins == 0xB0:
            body = (b"\x00\x00\x00\x00\x00\x07" if h[2] == 0x96 else b"\x01" + bytes(24))[: h[4]]
            self._say(bytes((ins,)) + body + b"\x90\x00")
        elif ins in INCOMING or h[4] == 0:
            self._say(b"\x90\x00")
        else:
            self._say(b"\x6d\x00")


def new_link(card):
    from psam_link import PsamLink

    return PsamLink(card, Pin(card.reset), None, CLK, echo=False, margin_ms=2, busy_ms=30)
