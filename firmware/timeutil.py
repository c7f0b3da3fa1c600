# Calendar arithmetic the validator needs, independent of the port's epoch (the ESP32 counts from
# 2000-01-01, the unix port from 1970). Validator time is seconds since 2000-01-01 00:00:00 UTC;
# card dates are local time (China, UTC+8 by default) in packed BCD.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_DAYS_1970_TO_2000 = const(10957)
EPOCH_OFFSET_UNIX = _DAYS_1970_TO_2000 * 86400
DEFAULT_TZ_SECONDS = 8 * 3600


def days_from_civil(y, m, d):
    """Days since 2000-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468 - _DAYS_1970_TO_2000


def civil_from_days(days):
    """Inverse of days_from_civil: (y, m, d)."""
    z = days + _DAYS_1970_TO_2000 + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return (y + (m <= 2), m, d)


def to_seconds(y, m, d, hh=0, mi=0, ss=0):
    return days_from_civil(y, m, d) * 86400 + hh * 3600 + mi * 60 + ss


def from_seconds(secs):
    """Seconds since 2000 -> (y, m, d, hh, mi, ss)."""
    days, rem = divmod(secs, 86400)
    y, m, d = civil_from_days(days)
    return (y, m, d, rem // 3600, (rem // 60) % 60, rem % 60)


def _b(v):
    return ((v // 10) << 4) | (v % 10)


def _u(b):
    hi = b >> 4
    lo = b & 0x0F
    if hi > 9 or lo > 9:
        raise ValueError("not BCD")
    return hi * 10 + lo


def bcd_datetime(secs, tz=DEFAULT_TZ_SECONDS):
    """UTC seconds since 2000 -> 7-byte local YYYYMMDDhhmmss BCD."""
    return bytes(bcd_datetime_into(bytearray(7), secs, tz))


def bcd_datetime_into(buf, secs, tz=DEFAULT_TZ_SECONDS):
    """bcd_datetime() into buf[0:7] without allocating (the purchase's hot path)."""
    secs += tz
    days = secs // 86400
    rem = secs - days * 86400
    z = days + _DAYS_1970_TO_2000 + 719468  # civil_from_days, inline: no tuple
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (m <= 2)
    buf[0] = _b(y // 100)
    buf[1] = _b(y % 100)
    buf[2] = _b(m)
    buf[3] = _b(d)
    buf[4] = _b(rem // 3600)
    buf[5] = _b((rem // 60) % 60)
    buf[6] = _b(rem % 60)
    return buf


def bcd_date(secs, tz=DEFAULT_TZ_SECONDS):
    return bcd_datetime(secs, tz)[:4]


def parse_bcd_date(data):
    """4-byte YYYYMMDD BCD -> (y, m, d); ValueError when not a valid date."""
    y = _u(data[0]) * 100 + _u(data[1])
    m = _u(data[2])
    d = _u(data[3])
    if not (1 <= m <= 12 and 1 <= d <= 31):
        raise ValueError("bad date")
    return (y, m, d)


def parse_bcd_datetime(data, tz=DEFAULT_TZ_SECONDS):
    """7-byte local YYYYMMDDhhmmss BCD -> UTC seconds since 2000; ValueError when invalid."""
    y, m, d = parse_bcd_date(data)
    hh = _u(data[4])
    mi = _u(data[5])
    ss = _u(data[6])
    if hh > 23 or mi > 59 or ss > 59:
        raise ValueError("bad time")
    return to_seconds(y, m, d, hh, mi, ss) - tz


def date_number(secs, tz=DEFAULT_TZ_SECONDS):
    """Local date as the integer YYYYMMDD (handy for card start/expiry comparisons)."""
    y, m, d, _, _, _ = from_seconds(secs + tz)
    return y * 10000 + m * 100 + d
