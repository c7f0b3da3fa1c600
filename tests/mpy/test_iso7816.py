# mpy: heapsize=64k timeout=60
# ATR parsing, the F/D tables, the inverse convention and the line-time model (drivers/iso7816.py).
import random

import iso7816
import mptest
from iso7816 import AtrError, parse_atr
from linkerr import ProtocolError

# Real-world ATR shapes (public ATR lists), each with what the parser must find:
# (hex, inverse, ta1 or None, protocols, historical bytes, tck or None)
SHAPES = (
    # Schlumberger Multiflex style: T0 only, no interface bytes.
    ("3B021450", False, None, [0], "1450", None),
    # Old French inverse-convention card: TB1, TC1, no TD, no TCK.
    ("3F6525002C09699000", True, None, [0], "2C09699000", None),
    # TA1 = 0x94 (Fi 512, Di 8), TB1, TC1, T=0 only, no TCK.
    ("3B7D94000080318065B08311C0A983009000", False, 0x94, [0], "80318065B08311C0A983009000", None),
    # Plain T=0 with TB1/TC1 and eight historical bytes.
    ("3B6800000073C84010009000", False, None, [0], "0073C84010009000", None),
    # PC/SC storage-card ATR: TD1 T=0, TD2 T=1, so TCK is present.
    (
        "3B8F8001804F0CA000000306030001000000006A",
        False,
        None,
        [0, 1],
        "804F0CA00000030603000100000000",
        0x6A,
    ),
    # TA1 = 0x96, TD1 T=0, TD2 T=15 (global bytes): TCK present.
    ("3BDB9600801F030031C064B0F3100007900080", False, 0x96, [0], "0031C064B0F31000079000", 0x80),
    # JCOP: TA1 = 0x13, T=1 only.
    ("3BF81300008131FE454A434F5076323431B7", False, 0x13, [1], "4A434F5076323431", 0xB7),
)


def test_real_world_shapes_parse():
    for hx, inverse, ta1, protocols, hist, tck in SHAPES:
        atr = parse_atr(bytes.fromhex(hx))
        mptest.eq(atr.inverse, inverse, hx)
        mptest.eq(atr.ta.get(1), ta1, hx)
        mptest.eq(atr.protocols, protocols, hx)
        mptest.hex_eq(atr.hist, bytes.fromhex(hist), hx)
        mptest.eq(atr.tck, tck, hx)
        mptest.false(atr.specific, hx)


def test_interface_bytes_and_defaults():
    atr = parse_atr(bytes.fromhex("3F6525002C09699000"))
    mptest.eq(atr.tb, {1: 0x25})
    mptest.eq(atr.tc, {1: 0x00})
    mptest.eq((atr.fi, atr.di, atr.fmax_hz), (372, 1, 5000000))  # TA1 absent reads as 0x11
    mptest.eq(atr.wi, 10)
    mptest.eq(atr.wwt_etu(), 9600)
    atr = parse_atr(bytes.fromhex("3B7D94000080318065B08311C0A983009000"))
    mptest.eq((atr.fi, atr.di, atr.fmax_hz), (512, 8, 5000000))
    # A PSAM-like ATR with TA1 0x13, TD1 T=0 announcing TC2 (WI = 2): WWT 1920 etu at D = 1.
    atr = parse_atr(bytes.fromhex("3B9313400202") + b"AB")
    mptest.eq((atr.ta1, atr.tc[2], atr.wi, atr.wwt_etu()), (0x13, 2, 2, 1920))
    mptest.eq(atr.wwt_etu(4), 7680)
    # TA2 present: specific mode.
    atr = parse_atr(bytes.fromhex("3B90181000"))
    mptest.true(atr.specific)
    mptest.eq(atr.protocols, [0])


def test_inverse_convention_table():
    inv = iso7816.inverse_table()
    mptest.eq(inv[0x3F], iso7816.TS_INVERSE_RAW)  # what a direct UART sees of inverse TS
    mptest.eq(inv[0x03], 0x3F)
    for b in range(256):
        mptest.eq(inv[inv[b]], b, "involution at %02x" % b)
    mptest.eq(inv[0x80], 0xFE)  # bit 7 -> bit 0, then inverted


def test_expected_length_grows_to_the_exact_length():
    for shape in SHAPES:
        data = bytes.fromhex(shape[0])
        for n in range(2, len(data) + 1):
            need, known = iso7816.expected_length(data, n)
            mptest.true(need <= len(data), "%s prefix %d: %d" % (shape[0], n, need))
            if known:
                mptest.eq(need, len(data), shape[0])
        mptest.eq(iso7816.expected_length(data), (len(data), True))
    mptest.eq(iso7816.expected_length(b"\x3b", 1), (2, False))


def test_malformed_atrs_give_clear_errors():
    cases = (
        (b"", "too short"),
        (b"\x3b", "too short"),
        (b"\x3a\x00", "bad TS 0x3a"),
        (bytes.fromhex("3B6800000073C840100090"), "truncated"),
        (bytes.fromhex("3B80"), "truncated"),  # TD1 announced, missing
        (bytes.fromhex("3B02145000"), "after its end"),
        (bytes.fromhex("3B8F8001804F0CA000000306030001000000006B"), "TCK mismatch"),
        (bytes.fromhex("3B8F8001804F0CA00000030603000100000000"), "truncated"),  # no TCK
        (b"\x3b\x0f" + bytes(15) + bytes(17), "too long"),
    )
    for data, words in cases:
        e = mptest.raises(AtrError, parse_atr, data)
        mptest.true(words in str(e), "%s: %s" % (bytes(data).hex(), e))
        mptest.true(isinstance(e, ProtocolError))


def test_random_bytes_never_crash_the_parser():
    random.seed(7)
    ok = 0
    for _ in range(400):
        n = random.getrandbits(5) + 1
        data = bytearray(random.getrandbits(8) for _ in range(n))
        data[0] = (0x3B, 0x3F, data[0])[random.getrandbits(8) % 3]
        try:
            atr = parse_atr(data)
            ok += 1
            mptest.eq(atr.raw, bytes(data))
        except AtrError:
            pass
    mptest.log("random ATRs accepted: %d/400" % ok)


def test_fd_tables_and_rates():
    clk = 3571200
    mptest.eq(iso7816.baud_for(clk), 9600)
    mptest.eq(iso7816.baud_for(clk, 372, 4), 38400)  # TA1 0x13
    mptest.eq(iso7816.baud_for(clk, 372, 12), 115200)  # TA1 0x18
    mptest.eq(iso7816.baud_for(clk, 512, 32), 223200)  # TA1 0x96
    mptest.eq(iso7816.baud_for(4000000), 10753)  # LEDC 80 MHz / 20
    mptest.eq(iso7816.FI[0x0], 372)
    mptest.eq(iso7816.FI[0x7], 0)  # RFU
    mptest.eq(iso7816.DI[0x8], 12)
    mptest.eq(iso7816.wwt_ms(10, 1, 9600, 0), 1000)
    mptest.eq(iso7816.wwt_ms(1, 4, 38400, 5), 105)


def test_line_time_model():
    mptest.eq(iso7816.line_time_us(1, 9600), 1250)  # 12 etu of 104.17 us
    mptest.eq(iso7816.line_time_us(800, 9600), 1000000)
    mptest.eq(iso7816.t0_chars(), (5, 2))  # case 1
    mptest.eq(iso7816.t0_chars(le=8), (5, 11))  # case 2
    mptest.eq(iso7816.t0_chars(lc=4), (9, 3))  # case 3: CREDIT SAM FOR PURCHASE
    mptest.eq(iso7816.t0_chars(lc=36, le=8), (46, 14))  # case 4: INIT SAM FOR PURCHASE


def test_esp32_uart_rate_error():
    # The ESP32 UART divides 80 MHz in 1/16 steps, truncating: 16 * 80 MHz / 43 011 = 29 759.8
    # -> 29 759, so 4 MHz with TA1 0x13 (43 010.75 baud exactly) runs 34 ppm fast.
    mptest.eq(iso7816.uart_clk_div(43011), 29759)
    mptest.eq(iso7816.rate_error_ppm(4000000, 372, 4), 34)
    mptest.eq(iso7816.rate_error_ppm(4000000, 512, 32), 0)  # 250 000: divider 5 120 exactly
    mptest.eq(iso7816.rate_error_ppm(3571200, 372, 12), 10)
    mptest.eq(iso7816.rate_error_ppm(20000000, 372, 64), 0)  # 3.44 Mbaud: divider 372.0
    # Beyond the UART's fastest rate, sclk / 16: 5 Mbaud from 80 MHz, 75 000 baud from 1.2 MHz.
    mptest.eq(iso7816.rate_error_ppm(20000000, 372, 64, 40000000), None)
    mptest.eq(iso7816.rate_error_ppm(3571200, 372, 8, 1200000), None)
    # The worst truncation just under the limit: 1/256 of the rate.
    err = iso7816.rate_error_ppm(3571200, 372, 12, 1850300)  # 16 * sclk / baud = 256.99
    mptest.true(3800 < err <= 3906 < iso7816.RATE_TOLERANCE_PPM, err)
