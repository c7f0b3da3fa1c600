# ISO 7816-4 short APDUs: building commands, splitting answers, naming status words.
# Used by the card application layer (tunion.py) and the PSAM layer (psam_app.py) over any link
# with transceive(apdu) -> data || SW1 SW2.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


SW_OK = const(0x9000)
SW_WARN_INVALIDATED = const(0x6283)  # selected file invalidated: a (temporarily) blocked app
SW_WARN_BLOCKED = const(0x6284)
SW_WRONG_LENGTH = const(0x6700)
SW_SECURITY = const(0x6982)
SW_CONDITIONS = const(0x6985)
SW_FUNC_NOT_SUPPORTED = const(0x6A81)
SW_NOT_FOUND = const(0x6A82)
SW_RECORD_NOT_FOUND = const(0x6A83)
SW_WRONG_P1P2 = const(0x6A86)
SW_INS = const(0x6D00)
SW_CLA = const(0x6E00)
SW_MAC_INVALID = const(0x9302)
SW_APP_LOCKED = const(0x9303)
SW_INSUFFICIENT = const(0x9401)
SW_KEY_INDEX = const(0x9403)
SW_GRAY_LOCKED = const(0x9408)
SW_1A_LOCKED = const(0x9407)

_NAMES = {
    SW_OK: "OK",
    SW_WARN_INVALIDATED: "application invalidated",
    SW_WARN_BLOCKED: "application blocked",
    SW_WRONG_LENGTH: "wrong length",
    SW_SECURITY: "security status",
    SW_CONDITIONS: "conditions not satisfied",
    SW_FUNC_NOT_SUPPORTED: "function not supported",
    SW_NOT_FOUND: "not found",
    SW_RECORD_NOT_FOUND: "record not found",
    SW_WRONG_P1P2: "wrong P1 P2",
    SW_INS: "INS not supported",
    SW_CLA: "CLA not supported",
    SW_MAC_INVALID: "MAC invalid",
    SW_APP_LOCKED: "application locked",
    SW_INSUFFICIENT: "insufficient balance",
    SW_KEY_INDEX: "key index not supported",
    SW_GRAY_LOCKED: "purse gray-locked",
    SW_1A_LOCKED: "industry record locked",
}


class ApduError(ValueError):
    """A card or PSAM answer that is malformed or carries an unexpected status word."""

    def __init__(self, what, sw=None):
        super().__init__(what)
        self.sw = sw


def build(cla, ins, p1, p2, data=None, le=None):
    """One short APDU; `le` 0..256 (256 written as 00), None for no Le."""
    n = len(data) if data else 0
    if n > 255:
        raise ValueError("data too long for a short APDU")
    out = bytearray(4 + (1 + n if n else 0) + (1 if le is not None else 0))
    out[0] = cla
    out[1] = ins
    out[2] = p1
    out[3] = p2
    i = 4
    if n:
        out[4] = n
        out[5 : 5 + n] = data
        i = 5 + n
    if le is not None:
        out[i] = le & 0xFF
    return bytes(out)


def sw_of(resp):
    """Status word of an answer; ApduError when the answer is shorter than two bytes."""
    if resp is None or len(resp) < 2:
        raise ApduError("answer too short: %r" % (resp,))
    return (resp[-2] << 8) | resp[-1]


def sw_name(sw):
    name = _NAMES.get(sw)
    return "%04X %s" % (sw, name) if name else "%04X" % sw


def expect(resp, length=None, what="command", min_length=None):
    """The data of a 9000 answer, checked for length; ApduError otherwise (with .sw)."""
    sw = sw_of(resp)
    if sw != SW_OK:
        raise ApduError("%s: %s" % (what, sw_name(sw)), sw)
    n = len(resp) - 2
    if length is not None and n != length:
        raise ApduError("%s: %d data bytes, want %d" % (what, n, length), sw)
    if min_length is not None and n < min_length:
        raise ApduError("%s: %d data bytes, want at least %d" % (what, n, min_length), sw)
    return resp[:-2]


def hexs(data):
    """Bytes as upper-case hex for logs (short and allocation-light enough for a refusal)."""
    return "".join("%02X" % b for b in data) if data is not None else "None"
