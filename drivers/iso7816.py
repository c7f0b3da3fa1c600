# ISO/IEC 7816-3 character-level facts for the PSAM link: ATR parsing, the F/D tables, the inverse
# convention and a line-time model. Pure functions, no I/O: drivers/psam_link.py drives the UART.
# Also imports under CPython (bench tools reuse line_time_us / t0_chars).
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from linkerr import ProtocolError

TS_DIRECT = const(0x3B)
TS_INVERSE = const(0x3F)
# An inverse-convention TS (0x3F) read by a UART set for direct convention.
TS_INVERSE_RAW = const(0x03)
ATR_MAX = const(33)  # TS + 32 characters
CHAR_ETU = const(12)  # 8E2: start + 8 data + parity + 2 stop/guard = minimum start-to-start
F_DEFAULT = const(372)

# Indexed by the high (Fi) and low (Di) nibbles of TA1; 0 marks an RFU value.
FI = (372, 372, 558, 744, 1116, 1488, 1860, 0, 0, 512, 768, 1024, 1536, 2048, 0, 0)
FMAX_KHZ = (
    4000,
    5000,
    6000,
    8000,
    12000,
    16000,
    20000,
    0,
    0,
    5000,
    7500,
    10000,
    15000,
    20000,
    0,
    0,
)
DI = (0, 1, 2, 4, 8, 16, 32, 64, 12, 20, 0, 0, 0, 0, 0, 0)


class AtrError(ProtocolError):
    """A malformed, truncated or inconsistent Answer-To-Reset."""


_inv = None


def inverse_table():
    """256-byte table mapping wire bytes to logical bytes in the inverse convention (and back:
    inverting and reversing the bits is its own inverse)."""
    global _inv
    if _inv is None:
        t = bytearray(256)
        for b in range(256):
            x = ~b & 0xFF
            r = 0
            for _ in range(8):
                r = (r << 1) | (x & 1)
                x >>= 1
            t[b] = r
        _inv = bytes(t)
    return _inv


def expected_length(data, n=None):
    """From the first n bytes of an ATR -> (length, known). `known` is False while a TDi that
    announces more interface bytes has not arrived yet; `length` is then a lower bound."""
    if n is None:
        n = len(data)
    if n < 2:
        return 2, False
    t0 = data[1]
    k = t0 & 0x0F
    y = t0 >> 4
    pos = 2
    tck = False
    while True:
        count = 0
        for bit in (1, 2, 4):
            if y & bit:
                count += 1
        pos += count
        if not y & 8:
            break
        # TDi is the byte after TAi..TCi.
        if pos >= n:
            return pos + 1 + k, False
        td = data[pos]
        pos += 1
        if td & 0x0F:
            tck = True
        y = td >> 4
    return pos + k + (1 if tck else 0), True


class Atr:
    """A parsed ATR. Interface bytes are in dicts keyed by i (ta[1] is TA1)."""

    def __init__(self):
        self.raw = b""
        self.inverse = False
        self.t0 = 0
        self.ta = {}
        self.tb = {}
        self.tc = {}
        self.td = {}
        self.hist = b""
        self.tck = None
        self.protocols = []

    @property
    def ta1(self):
        return self.ta.get(1, 0x11)

    @property
    def fi(self):
        return FI[self.ta1 >> 4]

    @property
    def di(self):
        return DI[self.ta1 & 0x0F]

    @property
    def fmax_hz(self):
        return FMAX_KHZ[self.ta1 >> 4] * 1000

    @property
    def specific(self):
        """TA2 present: the card works in specific mode and takes no PPS."""
        return 2 in self.ta

    @property
    def wi(self):
        """Waiting integer for T=0 (TC2, default 10; 0 is reserved and read as the default)."""
        return self.tc.get(2) or 10

    @property
    def guard_n(self):
        return self.tc.get(1, 0)

    def wwt_etu(self, d=1):
        return 960 * d * self.wi

    def __repr__(self):
        return "Atr(%s)" % self.raw.hex()


def parse_atr(data):
    """Parse a whole ATR in logical bytes (TS 0x3B or 0x3F); AtrError says what is wrong."""
    data = bytes(data)
    n = len(data)
    if n < 2:
        raise AtrError("ATR too short: %d byte(s)" % n)
    if n > ATR_MAX:
        raise AtrError("ATR too long: %d bytes (max %d)" % (n, ATR_MAX))
    ts = data[0]
    if ts != TS_DIRECT and ts != TS_INVERSE:
        raise AtrError("bad TS 0x%02x" % ts)
    need, known = expected_length(data)
    if not known or need > n:
        raise AtrError("ATR truncated: %d bytes, at least %d expected" % (n, need))
    if need < n:
        raise AtrError("ATR has %d byte(s) after its end" % (n - need))
    atr = Atr()
    atr.raw = data
    atr.inverse = ts == TS_INVERSE
    atr.t0 = data[1]
    y = data[1] >> 4
    pos = 2
    i = 1
    tck = False
    while True:
        if y & 1:
            atr.ta[i] = data[pos]
            pos += 1
        if y & 2:
            atr.tb[i] = data[pos]
            pos += 1
        if y & 4:
            atr.tc[i] = data[pos]
            pos += 1
        if not y & 8:
            break
        td = data[pos]
        pos += 1
        atr.td[i] = td
        t = td & 0x0F
        if t:
            tck = True
        if t != 15 and t not in atr.protocols:
            atr.protocols.append(t)
        y = td >> 4
        i += 1
    if not atr.protocols:
        atr.protocols.append(0)
    k = data[1] & 0x0F
    atr.hist = data[pos : pos + k]
    if tck:
        x = 0
        for b in data[1:]:
            x ^= b
        if x:
            raise AtrError("TCK mismatch (check xor 0x%02x)" % x)
        atr.tck = data[-1]
    return atr


def baud_for(clk_hz, f=F_DEFAULT, d=1):
    """UART bit rate for a card clock and F/D (1 etu = F / (D * f))."""
    return (clk_hz * d + f // 2) // f


# The ESP32 UART's clock (APB, 80 MHz) and its divider: esp-idf hal/esp32 uart_ll_set_baudrate
# computes clk_div = (sclk << 4) // baud (truncated) and runs at sclk * 16 / clk_div, so a rate is
# exact only when 16 * sclk / baud is an integer. Its fastest rate is sclk / 16 (esp-idf
# SOC_UART_BITRATE_MAX, 5 Mbaud): the divider is then at least 256 sixteenths and the truncation
# costs at most 1/256 = 0.39 %, well inside the tolerance below.
UART_SCLK_HZ = const(80000000)
# ISO/IEC 7816-3 character timing: each edge within (n +/- 0.2) etu of the start bit's, over the
# 10 moments of a character that is 2 % of rate error end to end (docs/psam-link.md, "PPS").
RATE_TOLERANCE_PPM = const(20000)


def uart_clk_div(baud, sclk_hz=UART_SCLK_HZ):
    """The divider (in 1/16 steps) an ESP32 UART uses for `baud`; < 16 means out of reach."""
    return (sclk_hz << 4) // baud


def rate_error_ppm(clk_hz, f, d, sclk_hz=UART_SCLK_HZ):
    """Error, in ppm, of the rate an ESP32 UART really produces when asked for baud_for(clk_hz,
    f, d), against the card's exact rate clk_hz * d / f. None beyond the UART's fastest rate."""
    asked = baud_for(clk_hz, f, d)
    if asked <= 0 or asked * 16 > sclk_hz:
        return None
    div = uart_clk_div(asked, sclk_hz)
    # uart = sclk * 16 / div; exact = clk * d / f; error = uart / exact - 1
    num = sclk_hz * 16 * f * 1000000
    den = div * clk_hz * d
    return (num + den // 2) // den - 1000000


def wwt_ms(wi, d, baud, margin_ms=10):
    """Work waiting time 960 * D * WI etu in ms at `baud` (rounded up), plus a host margin."""
    etu = 960 * d * wi
    return (etu * 1000 + baud - 1) // baud + margin_ms


def line_time_us(chars, baud, etu_per_char=CHAR_ETU):
    """Modelled time on the I/O line for `chars` characters at `baud` (12 etu each at 8E2)."""
    return (chars * etu_per_char * 1000000 + baud // 2) // baud


def t0_chars(lc=0, le=None):
    """(to_card, from_card) characters of one T=0 command with one ACK per transfer and no NULLs.
    lc data bytes in; le bytes expected back (None: none). Case 4 goes as case 3 + 61xx +
    GET RESPONSE, so it costs a second header, ACK and status word."""
    if lc and le is not None:
        return 5 + lc + 5, 1 + 2 + 1 + le + 2
    if lc:
        return 5 + lc, 1 + 2
    if le is not None:
        return 5, 1 + le + 2
    return 5, 2
