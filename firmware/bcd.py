# BCD and hex helpers for card data: card numbers, dates and terminal numbers are packed BCD.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_NIBBLE_MAX = const(9)


class BCDError(ValueError):
    pass


def to_int(data):
    """Packed BCD bytes -> int; raises BCDError on a nibble above 9."""
    value = 0
    for byte in data:
        hi = byte >> 4
        lo = byte & 0x0F
        if hi > _NIBBLE_MAX or lo > _NIBBLE_MAX:
            raise BCDError("not BCD: %02x" % byte)
        value = value * 100 + hi * 10 + lo
    return value


def from_int(value, length):
    """int -> packed BCD of exactly `length` bytes; raises BCDError when it does not fit."""
    if value < 0:
        raise BCDError("negative")
    out = bytearray(length)
    for i in range(length - 1, -1, -1):
        value, low = divmod(value, 100)
        out[i] = ((low // 10) << 4) | (low % 10)
    if value:
        raise BCDError("does not fit in %d bytes" % length)
    return bytes(out)


def digits(data):
    """Packed BCD -> string of digits (keeps leading zeros); BCDError if not BCD."""
    s = bytes(data).hex()
    for ch in s:
        if ch > "9":
            raise BCDError("not BCD: " + s)
    return s


def from_digits(text):
    """String of an even number of digits -> packed BCD."""
    if len(text) % 2 or not text.isdigit():
        raise BCDError("need an even number of digits: %r" % text)
    return bytes.fromhex(text)


def is_bcd(data):
    for byte in data:
        if byte >> 4 > _NIBBLE_MAX or byte & 0x0F > _NIBBLE_MAX:
            return False
    return True


def u16(data, offset=0):
    return (data[offset] << 8) | data[offset + 1]


def u24(data, offset=0):
    return (data[offset] << 16) | (data[offset + 1] << 8) | data[offset + 2]


def u32(data, offset=0):
    return (
        (data[offset] << 24)
        | (data[offset + 1] << 16)
        | (data[offset + 2] << 8)
        | data[offset + 3]
    )


def put_u16(buf, offset, value):
    buf[offset] = (value >> 8) & 0xFF
    buf[offset + 1] = value & 0xFF


def put_u32(buf, offset, value):
    buf[offset] = (value >> 24) & 0xFF
    buf[offset + 1] = (value >> 16) & 0xFF
    buf[offset + 2] = (value >> 8) & 0xFF
    buf[offset + 3] = value & 0xFF
