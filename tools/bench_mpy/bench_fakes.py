# In-process stand-ins for a T-Union card and a PSAM with zero link latency, for timing the
# firmware alone (modelled on tests/mpy/test_tunion.py's fakes). Every answer is a constant made
# at start-up, so the heap a tap allocates is the firmware's own; counters are small ints.
import tunion

F15 = bytes.fromhex("09981001FFFFFFFF0201031052280000000000172020010120391231" + "0000")
F17 = bytes.fromhex("00000156100010010001010000")[:11]
OK = b"\x90\x00"


def _fci(f15=F15, name=tunion.AID_EP):
    a5 = b"\x9f\x0c" + bytes((len(f15),)) + f15
    body = b"\x84" + bytes((len(name),)) + name + b"\xa5" + bytes((len(a5),)) + a5
    return b"\x6f" + bytes((len(body),)) + body + OK


class FakeCard:
    """A card with a large balance that accepts any MAC1; answers are preallocated."""

    def __init__(self, balance=10000000):
        self.r_select = _fci()
        self.r_17 = F17 + OK
        self.r_init = balance.to_bytes(4, "big") + b"\x00\x07" + bytes(3) + b"\x01\x00RAND" + OK
        self.r_ok = OK
        self.r_debit = b"TACXMAC2" + OK
        self.r_nf = b"\x6a\x83"
        self.r_ins = b"\x6d\x00"
        self.apdus = 0
        self.bytes_out = 0  # APDU bytes to the card
        self.bytes_in = 0  # answer bytes (data + SW) from the card
        self.debits = 0

    def transceive(self, a):
        ins = a[1]
        if ins == 0xA4:
            r = self.r_select
        elif ins == 0xB0:
            r = self.r_17
        elif ins == 0x50:
            r = self.r_init
        elif ins == 0xDC:
            r = self.r_ok
        elif ins == 0x54:
            self.debits += 1
            r = self.r_debit
        elif ins == 0xB2:
            r = self.r_nf
        else:
            r = self.r_ins
        self.apdus += 1
        self.bytes_out += len(a)
        self.bytes_in += len(r)
        return r


class FakePsam:
    def __init__(self):
        self.r_tid = b"\x00\x00\x00\x00\x00\x07" + OK
        self.r_17 = b"\x01" + bytes(24) + OK
        self.r_ok = OK
        self.r_init = (101).to_bytes(4, "big") + b"MAC1" + OK
        self.r_bad = b"\x93\x02"
        self.r_ins = b"\x6d\x00"
        self.apdus = 0
        self.bytes_out = 0
        self.bytes_in = 0

    def transceive(self, a):
        ins = a[1]
        if ins == 0xB0:
            r = self.r_tid if a[2] == 0x96 else self.r_17
        elif ins == 0xA4:
            r = self.r_ok
        elif ins == 0x70:
            r = self.r_init
        elif ins == 0x72:
            r = self.r_ok
        else:
            r = self.r_ins
        self.apdus += 1
        self.bytes_out += len(a)
        self.bytes_in += len(r)
        return r


class Recording:
    """Wraps any APDU link and keeps (apdu hex, answer hex) pairs (for the exchange figures)."""

    def __init__(self, link):
        self.link = link
        self.log = []

    @property
    def iso_dep(self):
        return getattr(self.link, "iso_dep", True)

    def transceive(self, a):
        try:
            r = self.link.transceive(a)
        except Exception as e:
            self.log.append((bytes(a).hex(), None, type(e).__name__))
            raise
        self.log.append((bytes(a).hex(), bytes(r).hex(), None))
        return r
