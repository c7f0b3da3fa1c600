# The T-Union (JT/T 978) card application layer: the validator's only business with a card.
# Rules (docs/purchase.md): select the T-Union application by name only, never PPSE, never another
# application, never read SFI 0x16. The SELECT answer's 9F0C is the 0x15 file, so 0x15 is read only
# when a card omits it. Facts: TULAB, Metrodroid, SH-AGM, BJ-BUS, MZT, QT-TOOL (docs/sources.md).
from apdu import build, expect, hexs, sw_of

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


AID_EP = b"\xa0\x00\x00\x06\x32\x01\x01\x05"  # EP, 3DES or dual; phone AIDs begin with it
AID_EP_SM4 = b"\xa0\x00\x00\x06\x32\x01\x01\x07"  # EP, SM4 only
DEFAULT_AIDS = (AID_EP, AID_EP_SM4)

SFI_15 = const(0x15)
SFI_17 = const(0x17)
SFI_18 = const(0x18)
SFI_1A = const(0x1A)
SFI_1E = const(0x1E)
LEN_15 = const(30)
LEN_17_USED = const(11)  # country..card type; the rest is reserved
LEN_18 = const(23)
LEN_1E = const(48)
LEN_1A = const(128)
TXN_CAPP = const(0x09)  # card transaction type of a compound purchase


class CardDataError(ValueError):
    """Card data that cannot be parsed (bad TLV, length, BCD)."""


def parse_fci(resp_data, aid):
    """-> (df_name, f15 or None) from a SELECT answer; CardDataError when not a T-Union FCI."""
    at = fci_15(resp_data, len(resp_data), aid)
    df_name = bytes(resp_data[_NAME[0] : _NAME[1]])
    return df_name, (bytes(resp_data[at : at + LEN_15]) if at >= 0 else None)


_END = [0]  # _tlv_scan()'s value end: no tuple per lookup
_NAME = [0, 0]  # fci_15()'s DF name: start, end


def _tlv_scan(data, tag, start, end):
    i = start
    while i < end:
        t = data[i]
        i += 1
        if t == 0x00 or t == 0xFF:
            continue
        if t & 0x1F == 0x1F:
            if i >= end:
                raise CardDataError("truncated tag")
            t = (t << 8) | data[i]
            i += 1
        if i >= end:
            raise CardDataError("truncated length")
        n = data[i]
        i += 1
        if n == 0x81:
            if i >= end:
                raise CardDataError("truncated length")
            n = data[i]
            i += 1
        elif n > 0x80:
            raise CardDataError("unsupported length form %02X" % n)
        if i + n > end:
            raise CardDataError("value of tag %X runs past the end" % t)
        if t == tag:
            _END[0] = i + n
            return i
        i += n
    return -1


def fci_15(resp, n, aid):
    """Where the 0x15 file (9F0C) starts in a SELECT answer's first n bytes, -1 when the FCI
    has none; CardDataError when it is not a T-Union FCI (as parse_fci). No allocation."""
    s = _tlv_scan(resp, 0x6F, 0, n)
    if s < 0:
        raise CardDataError("no FCI template")
    e = _END[0]
    name = _tlv_scan(resp, 0x84, s, e)
    if name < 0:
        raise CardDataError("FCI without DF name")
    name_end = _END[0]
    _NAME[0] = name
    _NAME[1] = name_end
    ok = name_end - name >= len(aid)
    if ok:
        for i in range(len(aid)):
            if resp[name + i] != aid[i]:
                ok = False
                break
    if not ok:
        raise CardDataError(
            "FCI names %s, not the T-Union application" % hexs(resp[name:name_end])
        )
    prop = _tlv_scan(resp, 0xA5, s, e)
    if prop < 0:
        return -1
    pos = _tlv_scan(resp, 0x9F0C, prop, _END[0])
    if pos >= 0 and _END[0] - pos != LEN_15:
        raise CardDataError("0x15 file of %d bytes" % (_END[0] - pos))
    return pos


def _bcd_check(data, start=0, end=None):
    """CardDataError unless data[start:end] is all BCD digits (no allocation)."""
    if end is None:
        end = len(data)
    for i in range(start, end):
        b = data[i]
        if b >> 4 > 9 or b & 0x0F > 9:
            raise CardDataError("not BCD: %s" % hexs(data[start:end]))


def _bcd_date(data, start=0):
    """4-byte YYYYMMDD BCD -> int YYYYMMDD; CardDataError when not a date."""
    _bcd_check(data, start, start + 4)
    v = 0
    for i in range(start, start + 4):
        v = v * 100 + (data[i] >> 4) * 10 + (data[i] & 0x0F)
    m = (v // 100) % 100
    d = v % 100
    if not (1 <= m <= 12 and 1 <= d <= 31):
        raise CardDataError("bad date %s" % hexs(data[start : start + 4]))
    return v


def card_number(card_no):
    """The 19-digit card number of the 10-byte BCD card_no (for screens and logs: made after
    the tap, not in it)."""
    _bcd_check(card_no)
    return "".join("%02X" % b for b in card_no)[1:]


def new_info():
    """A card dict for parse_15(into=): its byte buffers are made once and refilled per card."""
    return {
        "issuer8": bytearray(8),
        "issuer": bytearray(4),
        "app_type": 0,
        "enabled": 0,
        "card_no": None,
        "serial_low": bytearray(8),
        "start": 0,
        "expiry": 0,
        "aid": None,
        "city": bytearray(2),
        "interconnect": 0,
        "card_type": 0,
        "rec1a": None,
    }


def _fill(buf, src, start):
    for i in range(len(buf)):
        buf[i] = src[start + i]


def parse_15(f15, into=None, off=0):
    """The 30-byte public application file at f15[off:] -> card dict (QT-TOOL, JTB-H),
    refilling `into` (a new_info() dict: the purchase keeps one) or a new one. card_no is a new
    bytes object (callers keep it: blacklist, fare memory); the other byte values are the
    dict's own buffers."""
    if f15 is None or len(f15) - off < LEN_15 or (into is None and len(f15) != LEN_15):
        raise CardDataError("0x15 file of %s bytes" % (len(f15) if f15 is not None else None))
    _bcd_check(f15, off + 10, off + 20)
    if f15[off + 10] >> 4:
        raise CardDataError("card number pad nibble is not 0")
    start = _bcd_date(f15, off + 20)
    expiry = _bcd_date(f15, off + 24)
    if into is None:
        into = new_info()
    _fill(into["issuer8"], f15, off)
    _fill(into["issuer"], f15, off)
    _fill(into["serial_low"], f15, off + 12)  # level-2 key diversification factor
    into["app_type"] = f15[off + 8]
    into["enabled"] = f15[off + 9]
    no = f15[off + 10 : off + 20]  # 10 bytes BCD, as the blacklist and the journal key it
    into["card_no"] = no if isinstance(no, bytes) else bytes(no)
    into["start"] = start
    into["expiry"] = expiry
    b = into["city"]  # until parse_17 reads this card's 0x17
    b[0] = b[1] = 0
    into["interconnect"] = 0
    into["card_type"] = 0
    return into


def parse_17(data, card):
    """The management file's first 11 bytes into `card` (QT-TOOL, JTB-H); a new_info() dict
    gets its buffers refilled."""
    if len(data) < LEN_17_USED:
        raise CardDataError("0x17 file of %d bytes" % len(data))
    _bcd_check(data, 4, 8)  # province and city must be BCD
    if isinstance(card.get("city"), bytearray):  # a new_info() dict: no country, province
        _fill(card["city"], data, 6)
    else:
        card["country"] = bytes(data[0:4])
        card["province"] = bytes(data[4:6])
        card["city"] = bytes(data[6:8])
    card["interconnect"] = (data[8] << 8) | data[9]
    card["card_type"] = data[10]
    return card


def _put(buf, off, width, value):
    i = off + width - 1
    while i >= off:
        buf[i] = value & 0xFF
        value >>= 8
        i -= 1


def _check(resp, length, what, arg=-1):
    """ApduError unless resp is 9000 with `length` data bytes (None: any); no allocation when
    it is. `what` % arg names the command in the error only."""
    sw = sw_of(resp)
    if sw == 0x9000 and (length is None or len(resp) - 2 == length):
        return
    if arg >= 0:
        what = what % arg
    expect(resp, length, what)  # raises with the same message as before


class Card:
    """The T-Union application on one card in the field; every method is one APDU. The purchase
    keeps one Card and rebinds it per tap (reset()): its command buffers and the dict
    init_capp() returns are reused, valid until the next call of the same method."""

    def __init__(self, link):
        self._rb = bytearray(5)  # case-2 commands: READ BINARY
        self._init = bytearray(b"\x80\x50\x03\x02\x0b" + bytes(11) + b"\x0f")
        self._upd = bytearray(5 + LEN_1E)  # UPDATE CAPP DATA CACHE of a 48-byte record
        self._upd[0] = 0x80
        self._upd[1] = 0xDC
        self._upd[4] = LEN_1E
        self._deb = bytearray(b"\x80\x54\x01\x00\x0f" + bytes(15) + b"\x08")
        self._random = bytearray(4)
        self._sel = {}
        self.init = {
            "balance": 0,
            "atc": 0,
            "overdraft_limit": 0,
            "key_version": 0,
            "alg_id": 0,
            "random": self._random,
        }
        self.reset(link)

    def reset(self, link):
        self.link = link
        self.apdus = 0
        self.chained = False  # the last answer came through GET RESPONSE (61xx)
        self.resent_le = 0  # the Le the last command was sent again with after 6Cxx, else 0

    def _x(self, apdu, resend=True):
        """One command, with the answer chaining cards may use (TULAB, SH-AGM, nfcard):
        61xx fetches the data with GET RESPONSE; 6Cxx (wrong Le) sends the command again with
        Le = xx, unless `resend` is False (DEBIT: a second one must never leave)."""
        self.apdus += 1
        resp = self.link.transceive(apdu)
        n = len(resp)
        self.resent_le = 0
        if n == 2 and resp[0] == 0x6C and resend and len(apdu) > 4:
            self.resent_le = resp[1] or 256
            again = bytearray(apdu)
            again[-1] = resp[1]  # every command here with data to answer ends with its Le
            self.apdus += 1
            resp = self.link.transceive(again)
            n = len(resp)
        self.chained = n == 2 and resp[0] == 0x61
        if self.chained:
            self.apdus += 1
            resp = self.link.transceive(build(0x00, 0xC0, 0x00, 0x00, None, resp[1]))
        return resp

    def select_answer(self, aid):
        """SELECT by name -> the whole answer (status word last), no tuple."""
        cmd = self._sel.get(aid)
        if cmd is None:  # the AIDs are a few constants: each command is built once
            cmd = self._sel[aid] = build(0x00, 0xA4, 0x04, 0x00, aid, 0x00)
        return self._x(cmd)

    def read_answer(self, sfi, length):
        """READ BINARY -> the card's whole answer (data, then 9000): no copy of the data."""
        c = self._rb
        c[0] = 0x00
        c[1] = 0xB0
        c[2] = 0x80 | sfi
        c[3] = 0
        c[4] = length & 0xFF
        resp = self._x(c)
        n = self.resent_le if self.resent_le > length else length
        _check(resp, n, "READ BINARY %02X", sfi)
        return resp

    def read_record(self, sfi, number, length):
        """Record data, or None when the card has no such record (6A83)."""
        resp = self._x(build(0x00, 0xB2, number, (sfi << 3) | 4, None, length))
        if sw_of(resp) == 0x6A83:
            return None
        return expect(resp, length, "READ RECORD %02X/%d" % (sfi, number))

    def balance(self, p1):
        """GET BALANCE: P1 00 incl. overdraft, 01 overdraft limit, 02 used, 03 real balance."""
        data = expect(self._x(build(0x80, 0x5C, p1, 0x02, None, 4)), 4, "GET BALANCE")
        return int.from_bytes(data, "big")

    def init_capp(self, key_index, amount, terminal):
        """INITIALIZE FOR CAPP PURCHASE -> dict (the Card's own, refilled by the next call);
        ApduError (with .sw 9401 etc.) when refused."""
        c = self._init
        c[5] = key_index
        _put(c, 6, 4, amount)
        c[10:16] = terminal
        r = self._x(c)
        _check(r, 15, "INITIALIZE CAPP")
        d = self.init
        d["balance"] = (r[0] << 24) | (r[1] << 16) | (r[2] << 8) | r[3]
        d["atc"] = (r[4] << 8) | r[5]
        d["overdraft_limit"] = (r[6] << 16) | (r[7] << 8) | r[8]
        d["key_version"] = r[9]
        d["alg_id"] = r[10]
        rnd = self._random
        for i in range(4):
            rnd[i] = r[11 + i]
        return d

    def update_capp(self, sfi, p1, record):
        if len(record) == LEN_1E:
            c = self._upd
            c[2] = p1
            c[3] = sfi << 3
            c[5:] = record
        else:
            c = build(0x80, 0xDC, p1, sfi << 3, record)
        resp = self._x(c, False)
        _check(resp, 0, "UPDATE CAPP %02X", sfi)

    def debit_raw(self, serial4, datetime7, mac1, mac1_at=0):
        """DEBIT FOR CAPP PURCHASE -> the card's answer: TAC (bytes 0-3), MAC2 (4-7), 9000.
        MAC1 is mac1[mac1_at:mac1_at + 4] (the PSAM's 8070 answer holds serial and MAC1)."""
        c = self._deb
        for i in range(4):
            c[5 + i] = serial4[i]
            c[16 + i] = mac1[mac1_at + i]
        c[9:16] = datetime7
        r = self._x(c, False)
        _check(r, 8, "DEBIT")
        return r
