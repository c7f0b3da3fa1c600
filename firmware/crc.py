# Checksums the validator needs: CRC-32 for journal records and bundles (C speed through
# binascii, the same polynomial as zlib so host tools check it with zlib.crc32), and CRC_A,
# the ISO/IEC 14443-3 type A frame CRC, for the RC522 path and its simulator.
import binascii

try:
    from micropython import const
except ImportError:  # CPython: host tools import this module too

    def const(x):
        return x


_CRC_A_INIT = const(0x6363)
_CRC_B_INIT = const(0xFFFF)
_CRC_POLY_REFLECTED = const(0x8408)


def crc32(data, value=0):
    """CRC-32 (IEEE 802.3, as zlib), chainable through `value`. binascii gives it unsigned on
    both runtimes; no mask, which on a 32-bit board would be one more long integer per CRC."""
    return binascii.crc32(data, value)


def _crc16_reflected(data, crc):
    for byte in data:
        crc ^= byte
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ _CRC_POLY_REFLECTED
            else:
                crc >>= 1
    return crc


def crc_a(data):
    """ISO/IEC 14443-3 CRC_A as an int; sent least significant byte first."""
    return _crc16_reflected(data, _CRC_A_INIT)


def crc_b(data):
    """ISO/IEC 14443-3 CRC_B (type B): complemented result, sent least significant byte first."""
    return _crc16_reflected(data, _CRC_B_INIT) ^ 0xFFFF


def append_crc_a(data):
    crc = crc_a(data)
    return bytes(data) + bytes((crc & 0xFF, crc >> 8))


def check_crc_a(frame):
    """True when the last two bytes of `frame` are the CRC_A of the rest."""
    if len(frame) < 3:
        return False
    crc = crc_a(memoryview(frame)[:-2])
    return frame[-2] == crc & 0xFF and frame[-1] == crc >> 8
