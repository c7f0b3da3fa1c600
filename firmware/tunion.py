# The T-Union (JT/T 978) card application layer: the validator's only business with a card.
# Rules (docs/purchase.md): select the T-Union application by name only, never PPSE, never another
# application, never read SFI 0x16. The SELECT answer's 9F0C is the 0x15 file, so 0x15 is read only
# when a card omits it. Facts: reference tunion-card.md sections 1-3.
from apdu import ApduError, build, expect, hexs, sw_of

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


def tlv_find(data, tag, start=0, end=None):
    """Value of the first `tag` (1 or 2 byte tag as int) at this level, or None.
    CardDataError on a malformed structure; constructed values are searched by the caller."""
    if end is None:
        end = len(data)
    i = start
    while i < end:
        t = data[i]
        i += 1
        if t == 0x00 or t == 0xFF:  # padding between objects
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
            return (i, i + n)
        i += n
    return None


def parse_fci(resp_data, aid):
    """-> (df_name, f15 or None) from a SELECT answer; CardDataError when not a T-Union FCI."""
    outer = tlv_find(resp_data, 0x6F)
    if outer is None:
        raise CardDataError("no FCI template")
    s, e = outer
    name = tlv_find(resp_data, 0x84, s, e)
    if name is None:
        raise CardDataError("FCI without DF name")
    df_name = bytes(resp_data[name[0] : name[1]])
    # ISO 7816 partial selection: the card may answer with a longer name (phone AIDs)
    if df_name[: len(aid)] != aid:
        raise CardDataError("FCI names %s, not the T-Union application" % hexs(df_name))
    prop = tlv_find(resp_data, 0xA5, s, e)
    f15 = None
    if prop is not None:
        pos = tlv_find(resp_data, 0x9F0C, prop[0], prop[1])
        if pos is not None:
            f15 = bytes(resp_data[pos[0] : pos[1]])
    return df_name, f15


def _bcd_digits(data):
    out = ""
    for b in data:
        hi = b >> 4
        lo = b & 0x0F
        if hi > 9 or lo > 9:
            raise CardDataError("not BCD: %s" % hexs(data))
        out += "%d%d" % (hi, lo)
    return out


def _bcd_date(data):
    """4-byte YYYYMMDD BCD -> int YYYYMMDD; CardDataError when not a date."""
    v = int(_bcd_digits(data))
    m = (v // 100) % 100
    d = v % 100
    if not (1 <= m <= 12 and 1 <= d <= 31):
        raise CardDataError("bad date %s" % hexs(data))
    return v


def parse_15(f15):
    """The 30-byte public application file -> card dict (tunion-card.md 2.1)."""
    if f15 is None or len(f15) != LEN_15:
        raise CardDataError("0x15 file of %s bytes" % (len(f15) if f15 is not None else None))
    serial = bytes(f15[10:20])
    digits = _bcd_digits(serial)
    if digits[0] != "0":
        raise CardDataError("card number pad nibble is not 0")
    return {
        "issuer8": bytes(f15[0:8]),
        "issuer": bytes(f15[0:4]),
        "issuer_city": bytes(f15[2:4]),
        "app_type": f15[8],
        "enabled": f15[9],
        "card_no": serial,  # 10 bytes BCD, as the blacklist and the journal key it
        "card_no_str": digits[1:],  # the 19-digit number
        "serial_low": bytes(f15[12:20]),  # level-2 key diversification factor
        "start": _bcd_date(f15[20:24]),
        "expiry": _bcd_date(f15[24:28]),
    }


def parse_17(data, card):
    """The management file's first 11 bytes into `card` (tunion-card.md 2.3)."""
    if len(data) < LEN_17_USED:
        raise CardDataError("0x17 file of %d bytes" % len(data))
    _bcd_digits(data[4:8])  # province and city must be BCD
    card["country"] = bytes(data[0:4])
    card["province"] = bytes(data[4:6])
    card["city"] = bytes(data[6:8])
    card["interconnect"] = (data[8] << 8) | data[9]
    card["card_type"] = data[10]
    return card


class Card:
    """The T-Union application on one card in the field; every method is one APDU."""

    def __init__(self, link):
        self.link = link
        self.apdus = 0
        self.chained = False  # the last answer came through GET RESPONSE (61xx)
        self.resent_le = 0  # the Le the last command was sent again with after 6Cxx, else 0

    def _x(self, apdu, resend=True):
        """One command, with the answer chaining cards may use (reference 3, status words):
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

    def select(self, aid):
        """-> (sw, response). Status words are interpreted by the caller."""
        resp = self._x(build(0x00, 0xA4, 0x04, 0x00, aid, 0x00))
        return sw_of(resp), resp

    def read_binary(self, sfi, length, offset=0):
        resp = self._x(build(0x00, 0xB0, 0x80 | sfi, offset, None, length))
        # a card that wants the whole file read (6Cxx) gives what it named: the head is used
        n = self.resent_le if self.resent_le > length else length
        return expect(resp, n, "READ BINARY %02X" % sfi)[:length]

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
        """INITIALIZE FOR CAPP PURCHASE -> dict; ApduError (with .sw 9401 etc.) when refused."""
        data = bytearray(11)
        data[0] = key_index
        data[1:5] = amount.to_bytes(4, "big")
        data[5:11] = terminal
        r = expect(self._x(build(0x80, 0x50, 0x03, 0x02, data, 0x0F)), 15, "INITIALIZE CAPP")
        return {
            "balance": int.from_bytes(r[0:4], "big"),
            "atc": (r[4] << 8) | r[5],
            "overdraft_limit": int.from_bytes(r[6:9], "big"),
            "key_version": r[9],
            "alg_id": r[10],
            "random": bytes(r[11:15]),
        }

    def update_capp(self, sfi, p1, record):
        resp = self._x(build(0x80, 0xDC, p1, sfi << 3, record), False)
        expect(resp, 0, "UPDATE CAPP %02X" % sfi)

    def debit(self, serial4, datetime7, mac1):
        """DEBIT FOR CAPP PURCHASE -> (tac, mac2)."""
        data = bytes(serial4) + bytes(datetime7) + bytes(mac1)
        r = expect(self._x(build(0x80, 0x54, 0x01, 0x00, data, 0x08), False), 8, "DEBIT")
        return bytes(r[0:4]), bytes(r[4:8])

    def prove(self, atc_after, txn_type=TXN_CAPP):
        """GET TRANSACTION PROVE -> (mac2, tac), or None when the card denies that transaction."""
        resp = self._x(build(0x80, 0x5A, 0x00, txn_type, atc_after.to_bytes(2, "big"), 0x08))
        sw = sw_of(resp)
        if sw != 0x9000:
            return None
        if len(resp) != 10:
            raise ApduError("GET TRANSACTION PROVE: %d data bytes" % (len(resp) - 2), sw)
        return bytes(resp[0:4]), bytes(resp[4:8])

    def challenge(self):
        return bytes(expect(self._x(build(0x00, 0x84, 0x00, 0x00, None, 4)), 4, "GET CHALLENGE"))

    def block(self, p1, p2, mac):
        expect(self._x(build(0x84, 0x1E, p1, p2, mac), False), 0, "APPLICATION BLOCK")


def find_history(card, counter, terminal, datetime7, amount):
    """Where the card's own 0x18 history holds a purchase with this counter, terminal, time and
    amount: 1 = its newest transaction, 2.. = older; None when the card never made it; 0 when
    the history no longer reaches back that far (unknown). The reference does not say whether
    a record keeps the counter INIT returned or the one after the debit, so either matches
    (terminal, time and amount single the record out). Newest first, so the search stops at
    the first counter older than both."""
    nxt = (counter + 1) & 0xFFFF
    amount4 = amount.to_bytes(4, "big")
    for n in range(1, 11):
        rec = card.read_record(SFI_18, n, LEN_18)
        if rec is None:
            return None
        c = (rec[0] << 8) | rec[1]
        if (
            (c == counter or c == nxt)
            and rec[9] in (0x06, 0x09)
            and rec[5:9] == amount4
            and rec[10:16] == terminal
            and rec[16:23] == datetime7
        ):
            return n
        if c < counter:
            return None
    return 0


def bus_record(
    base,
    status,
    city,
    institution,
    operator,
    route,
    stop,
    vehicle,
    terminal,
    datetime7,
    amount,
    serial,
    marked=0,
    direction=0xAB,
    mileage=0,
):
    """The 0x2702 bus record (tunion-card.md 2.6) for a boarding (status 1) or an alighting
    (status 2) tap, built on the card's current record `base` (None: a blank one). Boarding
    fills the boarding half and the marked amount (charged if no alighting tap comes);
    alighting keeps the boarding half and fills the alighting half with the amount charged."""
    r = bytearray(base if base is not None and len(base) == LEN_1A else LEN_1A)
    r[0:4] = b"\x27\x02\x7d\x01"
    r[4] = 0x01  # interconnection transaction flag: time/segment (compound) purchase
    r[6:14] = _bcd8(serial)
    r[14] = status
    term8 = b"\x00\x00" + bytes(terminal)
    veh = (bytes(vehicle) + b"\x00" * 8)[:8]
    if status == 0x01:
        r[15:17] = city
        r[17:25] = institution
        r[25:27] = operator.to_bytes(2, "big")
        r[27:29] = route.to_bytes(2, "big")
        r[29] = stop & 0xFF
        r[30:38] = veh
        r[38:46] = term8
        r[46:53] = datetime7
        r[53:57] = marked.to_bytes(4, "big")
        r[57] = direction
    else:
        r[58:60] = city
        r[60:68] = institution
        r[68:70] = operator.to_bytes(2, "big")
        r[70:72] = route.to_bytes(2, "big")
        r[72] = stop & 0xFF
        r[73:81] = veh
        r[81:89] = term8
        r[89:96] = datetime7
        r[96:100] = amount.to_bytes(4, "big")
        r[100:102] = mileage.to_bytes(2, "big")
    return bytes(r)


def _bcd8(value):
    out = bytearray(8)
    for i in range(7, -1, -1):
        value, low = divmod(value, 100)
        out[i] = ((low // 10) << 4) | (low % 10)
    return out
