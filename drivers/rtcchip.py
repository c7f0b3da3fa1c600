# What the two RTC chip drivers share (drivers/ds3231.py, drivers/pcf8563.py): BCD, the weekday,
# and the error a chip reports when its registers hold no valid time. The chips keep UTC, 24-hour,
# years 2000-2099; validator time is seconds since 2000-01-01 UTC (firmware/timeutil.py).
import timeutil


class RtcChipError(ValueError):
    """The chip answered, but its registers hold no valid date and time."""


def bcd(v):
    return ((v // 10) << 4) | (v % 10)


def unbcd(b, mask=0xFF):
    b &= mask
    hi = b >> 4
    lo = b & 0x0F
    if hi > 9 or lo > 9:
        raise RtcChipError("not BCD: %02x" % b)
    return hi * 10 + lo


def weekday(secs):
    """0 = Sunday ... 6 = Saturday (2000-01-01 was a Saturday)."""
    return (secs // 86400 + 6) % 7


def to_seconds(y, mo, d, hh, mi, ss):
    """Checked fields (y in 2000-2099) -> seconds since 2000; RtcChipError when out of range."""
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh <= 23 and mi <= 59 and ss <= 59):
        raise RtcChipError("bad time %d-%d-%d %d:%d:%d" % (y, mo, d, hh, mi, ss))
    return timeutil.to_seconds(y, mo, d, hh, mi, ss)


def fields(secs):
    """Seconds since 2000 -> (y, mo, d, hh, mi, ss); ValueError outside 2000-2099."""
    if secs < 0:
        raise ValueError("before 2000")
    t = timeutil.from_seconds(secs)
    if t[0] > 2099:
        raise ValueError("after 2099")
    return t


def make(i2c, chip):
    """The driver for a board's RTC entry: "ds3231" or "pcf8563"; ValueError otherwise."""
    if chip == "ds3231":
        from ds3231 import DS3231

        return DS3231(i2c)
    if chip == "pcf8563":
        from pcf8563 import PCF8563

        return PCF8563(i2c)
    raise ValueError("unknown RTC chip %r" % (chip,))
