"""Firmware utilities import under CPython too (host tools share them): check against stdlib."""

import datetime
import hmac
import zlib

import bcd
import crc
import hmac256
import timeutil
from hypothesis import given
from hypothesis import strategies as st


@given(st.binary(max_size=300))
def test_crc32_is_zlibs(data):
    assert crc.crc32(data) == zlib.crc32(data)


@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_matches_stdlib(key, msg):
    assert hmac256.hmac_sha256(key, msg) == hmac.new(key, msg, "sha256").digest()


@given(st.dates(min_value=datetime.date(1990, 1, 1), max_value=datetime.date(2199, 12, 31)))
def test_days_match_datetime(day):
    days = timeutil.days_from_civil(day.year, day.month, day.day)
    assert days == (day - datetime.date(2000, 1, 1)).days
    assert timeutil.civil_from_days(days) == (day.year, day.month, day.day)


@given(st.integers(min_value=0, max_value=10**18))
def test_bcd_round_trip(value):
    assert bcd.to_int(bcd.from_int(value, 10)) == value
