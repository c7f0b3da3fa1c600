"""Card answers: the T-Union parsers (firmware/tunion.py: FCI/TLV, files 0x15 and 0x17) and
apdu.expect. The purchase flow against a fake card is the `purchase` target.

Input: first byte picks the parser (0 FCI, 1 file 0x15, 2 file 0x17, 3 apdu.expect with the
wanted length from the second byte). Invariants: only CardDataError / ApduError escape; an
accepted FCI carries the T-Union DF name; an accepted 0x15 is 30 bytes with a 19-digit card
number; then the honest answer parses to the honest result.
"""

from tools.fuzz import shim

shim.install()

import apdu  # noqa: E402
import tunion  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "tunion"
F15 = bytes.fromhex("31040000ffffffff0201") + bytes.fromhex("03104000000000000001")
F15 += bytes.fromhex("20200101203912310000")
F17 = bytes.fromhex("0000015610001001000101")


def fci(f15, name=tunion.AID_EP):
    a5 = b"\x9f\x0c" + bytes((len(f15),)) + f15
    body = b"\x84" + bytes((len(name),)) + name + b"\xa5" + bytes((len(a5),)) + a5
    return b"\x6f" + bytes((len(body),)) + body


FCI = fci(F15)


def _honest():
    name, f = tunion.parse_fci(FCI, tunion.AID_EP)
    check(name == tunion.AID_EP and f == F15, "honest FCI")
    info = tunion.parse_15(F15)
    check(tunion.card_number(info["card_no"]) == "3104000000000000001", "honest card number")
    c = tunion.parse_17(F17, {})
    check(c["city"] == b"\x10\x01" and c["card_type"] == 1, "honest 0x17")
    check(apdu.expect(b"\x12\x34\x90\x00", 2, "fuzz") == b"\x12\x34", "honest expect")


def one_input(data):
    if not data:
        return
    mode, rest = data[0] & 3, data[1:]
    try:
        if mode == 0:
            name, f = tunion.parse_fci(rest, tunion.AID_EP)
            check(name[:8] == tunion.AID_EP, "FCI accepted with a foreign name %r" % name)
            if f is not None:
                tunion.parse_15(f)
        elif mode == 1:
            info = tunion.parse_15(rest)
            check(len(rest) == tunion.LEN_15, "0x15 of %d bytes accepted" % len(rest))
            check(len(tunion.card_number(info["card_no"])) == 19, "card number length")
            into = tunion.new_info()
            tunion.parse_15(b"\x00" + rest, into, 1)
            check(into["card_no"] == info["card_no"], "parse_15 into a buffer differs")
        elif mode == 2:
            c = tunion.parse_17(rest, {})
            check(len(c["province"]) == 2 and 0 <= c["card_type"] < 256, "0x17 fields")
            tunion.parse_17(rest, tunion.parse_15(F15))
        else:
            want = (None, 0, 2, 8, 15)[rest[0] % 5] if rest else None
            body = apdu.expect(rest[1:], want, "fuzz")
            check(want is None or len(body) == want, "expect gave %d bytes" % len(body))
            check(bytes(rest[-2:]) == b"\x90\x00", "expect accepted SW %r" % rest[-2:])
    except (tunion.CardDataError, apdu.ApduError):
        pass
    _honest()


SEEDS = (
    b"\x00" + FCI,
    b"\x00" + fci(F15, tunion.AID_EP + b"\x10\x00\x91\x56"),
    b"\x01" + F15,
    b"\x02" + F17,
    b"\x03\x02\x12\x34\x90\x00",
    b"\x03\x00\x94\x01",
    b"\x03\x01\x61\x08",
)
