# MicroPython-side tests of the firmware utilities: crc, bcd, ringbuf, hmac256, timeutil, log.
import bcd
import crc
import hmac256
import log
import mptest
import timeutil
from ringbuf import RingBuffer


def test_crc32_matches_the_zlib_check_value():
    mptest.eq(crc.crc32(b"123456789"), 0xCBF43926)


def test_crc32_chains():
    mptest.eq(crc.crc32(b"6789", crc.crc32(b"12345")), crc.crc32(b"123456789"))


def test_crc_a_of_a_halt_command():
    # HLTA is 50 00 with CRC_A 57 CD (ISO/IEC 14443-3 annex example).
    mptest.hex_eq(crc.append_crc_a(b"\x50\x00"), b"\x50\x00\x57\xcd")
    mptest.true(crc.check_crc_a(b"\x50\x00\x57\xcd"))
    mptest.false(crc.check_crc_a(b"\x50\x00\x57\xce"))
    mptest.false(crc.check_crc_a(b"\x50"))


def test_crc_b_check_value():
    mptest.eq(crc.crc_b(b"123456789"), 0x906E)


def test_bcd_round_trip_and_errors():
    mptest.hex_eq(bcd.from_int(20250930, 4), b"\x20\x25\x09\x30")
    mptest.eq(bcd.to_int(b"\x20\x25\x09\x30"), 20250930)
    mptest.raises(bcd.BCDError, bcd.to_int, b"\x1a")
    mptest.raises(bcd.BCDError, bcd.from_int, 12345, 2)
    mptest.eq(bcd.digits(b"\x03\x10\x49"), "031049")
    mptest.raises(bcd.BCDError, bcd.from_digits, "123")
    mptest.true(bcd.is_bcd(b"\x99\x00"))
    mptest.false(bcd.is_bcd(b"\x9f"))


def test_big_endian_helpers():
    buf = bytearray(6)
    bcd.put_u32(buf, 1, 0x01020304)
    mptest.eq(bcd.u32(buf, 1), 0x01020304)
    bcd.put_u16(buf, 4, 0xBEEF)
    mptest.eq(bcd.u16(buf, 4), 0xBEEF)
    mptest.eq(bcd.u24(b"\x00\x01\x02\x03", 1), 0x010203)


def test_ringbuffer_wraps_and_never_overwrites():
    rb = RingBuffer(4)
    mptest.eq(rb.put(b"abc"), 3)
    out = bytearray(2)
    mptest.eq(rb.readinto(out), 2)
    mptest.hex_eq(out, b"ab")
    mptest.eq(rb.put(b"defg"), 3)  # one byte does not fit
    mptest.eq(len(rb), 4)
    mptest.eq(rb.find(ord("e")), 2)
    mptest.eq(rb.peek(0), ord("c"))
    got = bytes(rb.get_byte() for _ in range(4))
    mptest.hex_eq(got, b"cdef")
    mptest.eq(rb.get_byte(), -1)
    mptest.raises(IndexError, rb.peek, 0)


def test_hmac_sha256_rfc4231_case_2():
    mac = hmac256.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    mptest.eq(mac.hex(), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


def test_hmac_long_key_and_compare():
    key = bytes(range(131))
    h = hmac256.HMAC256(key)
    h.update(b"part one ")
    h.update(b"part two")
    whole = hmac256.hmac_sha256(key, b"part one part two")
    mine = h.digest()
    mptest.true(hmac256.equal(mine, whole))
    mptest.false(hmac256.equal(mine, whole[:-1] + b"\x00"))
    mptest.false(hmac256.equal(mine, whole[:5]))


def test_timeutil_round_trips_across_leap_years():
    for y, m, d in ((2000, 1, 1), (2000, 2, 29), (2024, 12, 31), (2099, 3, 1), (1999, 12, 31)):
        days = timeutil.days_from_civil(y, m, d)
        mptest.eq(timeutil.civil_from_days(days), (y, m, d))
    mptest.eq(timeutil.days_from_civil(2000, 1, 1), 0)
    secs = timeutil.to_seconds(2026, 11, 29, 12, 30, 5)
    mptest.eq(timeutil.from_seconds(secs), (2026, 11, 29, 12, 30, 5))


def test_timeutil_bcd_is_local_time():
    secs = timeutil.to_seconds(2026, 11, 29, 20, 0, 0)  # 20:00 UTC is 04:00 next day in China
    mptest.hex_eq(timeutil.bcd_datetime(secs), b"\x20\x26\x11\x30\x04\x00\x00")
    mptest.eq(timeutil.parse_bcd_datetime(b"\x20\x26\x11\x30\x04\x00\x00"), secs)
    mptest.eq(timeutil.date_number(secs), 20261130)
    mptest.raises(ValueError, timeutil.parse_bcd_date, b"\x20\x26\x13\x01")
    mptest.raises(ValueError, timeutil.parse_bcd_datetime, b"\x20\x26\x11\x30\x24\x00\x00")


def test_log_ring_keeps_the_newest_lines_in_a_fixed_buffer():
    import gc

    log.clear()
    log.set_level(log.INFO, echo=False)
    lg = log.get("t")
    for i in range(200):
        lg.info("line %d %s", i, "x" * (i % 90))
    gc.collect()
    held = gc.mem_alloc()
    for i in range(200, 400):
        lg.info("line %d %s", i, "x" * (i % 90))
    gc.collect()
    grown = gc.mem_alloc() - held
    mptest.true(grown <= 64, "200 more lines grew the heap by %d bytes" % grown)
    lines = [text for _lvl, text in log.recent(1000)]
    mptest.true(20 < len(lines) < 100, "%d lines kept" % len(lines))
    kept = sum(len(text) + 2 for text in lines)
    mptest.true(kept <= 3072, "the kept lines take %d bytes, more than the 3 KB ring" % kept)
    mptest.eq(lines[-1], "INFO t: line 399 " + "x" * (399 % 90), "the newest is last")
    nums = [int(text.split()[3]) for text in lines]
    mptest.eq(nums, list(range(400 - len(lines), 400)), "oldest first, none missing")
    lg.error("y" * 400)
    mptest.eq(log.recent(1)[0], (log.ERROR, ("ERROR t: " + "y" * 400)[:255]), "cut at 255 bytes")
    mptest.eq(log.recent(2)[0][1], lines[-1])
    log.clear()
    mptest.eq(log.recent(), [])
    mptest.eq(log.find("line"), [])
    log.set_level(log.INFO, echo=True)


def test_log_keeps_recent_lines_and_calls_sinks():
    seen = []
    log.clear()
    log.set_level(log.INFO, echo=False)
    log.add_sink(lambda lvl, name, text: seen.append((lvl, name, text)))
    lg = log.get("journal")
    lg.debug("hidden %d", 1)
    lg.warning("cut torn tail at %d", 128)
    lg.info("bad args %d", "x")
    mptest.eq(len(log.find("torn tail")), 1)
    mptest.eq(seen[0], (log.WARNING, "journal", "cut torn tail at 128"))
    mptest.eq(len(log.find("hidden")), 0)
    mptest.eq(len(log.find("bad args")), 1)
    log._sinks.clear()
    log.set_level(log.INFO, echo=True)
