# mpy: heapsize=128k timeout=120
# PN532 frame layer and command flow without a bus: checksums, extended frames, target parsing,
# every error path of command() and transceive() against a scripted chip.
import random
import time

import log
import mptest
import pn532
from linkerr import CardGone, ChipError, LinkError, LinkTimeout, ProtocolError
from pn532_fakes import ERR, frame  # chip frames built independently of the driver


class ScriptChip:
    """A transport whose chip answers from a script: plan[i] is the list of frames (bytes, or
    None for a receive timeout) answering the i-th command sent; NACKs pop `resend`."""

    irq = None

    def __init__(self, plan, resend=()):
        self.plan = list(plan)
        self.resend = list(resend)
        self.queue = []
        self.sent = []
        self.fail_send = 0

    def wake(self):
        pass

    def send(self, data):
        data = bytes(data)
        if self.fail_send:
            self.fail_send -= 1
            raise OSError(5)
        self.sent.append(data)
        if data == pn532.NACK:
            if self.resend:
                self.queue.append(self.resend.pop(0))
        elif data != pn532.ACK:
            self.queue.extend(self.plan.pop(0) if self.plan else [None])

    def receive(self, buf, timeout_ms, hint=0):
        if not self.queue:
            return 0
        item = self.queue.pop(0)
        if item is None:
            return 0
        if isinstance(item, Exception):
            raise item
        buf[: len(item)] = item
        return len(item)

    def commands(self):
        return [s for s in self.sent if s not in (pn532.ACK, pn532.NACK)]


def ok(data):
    return [pn532.ACK, frame(data)]


def reader(plan, resend=(), **kw):
    chip = ScriptChip(plan, resend)
    kw.setdefault("ack_timeout_ms", 5)
    kw.setdefault("command_timeout_ms", 20)
    kw.setdefault("exchange_timeout_ms", 20)
    return pn532.PN532(chip, **kw), chip


def with_target(r, tg=1):
    r.target = pn532.Target("A", b"\x01\x02\x03\x04", b"\x00\x04", 0x20, b"\x01", True, tg)


def setup():
    log.set_level(log.DEBUG, echo=False)
    log.clear()


def test_build_frame_matches_the_published_examples():
    buf = bytearray(pn532.FRAME_BUF)
    n = pn532.build_frame(buf, 0x02)
    mptest.hex_eq(buf[:n], bytes.fromhex("0000ff02fed4022a00"))
    n = pn532.build_frame(buf, 0x14, b"\x01\x00\x00")
    mptest.hex_eq(buf[:n], bytes.fromhex("0000ff05fbd414010000" + "1700"))


def test_extended_frame_round_trip():
    buf = bytearray(pn532.FRAME_BUF)
    body = bytes(range(256))
    n = pn532.build_frame(buf, 0x40, b"\x01", body)
    mptest.hex_eq(buf[:5], b"\x00\x00\xff\xff\xff")
    mptest.eq((buf[5] + buf[6] + buf[7]) & 0xFF, 0)
    mptest.eq((buf[5] << 8) | buf[6], 2 + 1 + 256)
    mptest.eq(n, 8 + 259 + 2)
    # The same bytes as a chip frame parse back (flip the TFI and fix the checksum).
    chipframe = frame(b"\x41\x00" + body)
    kind, off, ln = pn532.parse_frame(chipframe, len(chipframe))
    mptest.eq(kind, pn532.FRAME_DATA)
    mptest.hex_eq(chipframe[off + 3 : off + ln], body)
    mptest.raises(ValueError, pn532.build_frame, buf, 0x40, b"\x01", bytes(262))


def test_parse_frame_kinds_and_leading_junk():
    mptest.eq(pn532.parse_frame(pn532.ACK, 6)[0], pn532.FRAME_ACK)
    mptest.eq(pn532.parse_frame(pn532.NACK, 6)[0], pn532.FRAME_NACK)
    mptest.eq(pn532.parse_frame(ERR, len(ERR))[0], pn532.FRAME_ERROR)
    f = b"\x00\x00\x00" + frame(b"\x03\x32\x01\x06\x07")
    kind, off, ln = pn532.parse_frame(f, len(f))
    mptest.eq((kind, ln), (pn532.FRAME_DATA, 6))
    mptest.hex_eq(f[off : off + ln], b"\xd5\x03\x32\x01\x06\x07")


def test_parse_frame_rejects_every_damage():
    good = frame(b"\x03\x32\x01\x06\x07")
    bad_lcs = bytearray(good)
    bad_lcs[4] ^= 1
    bad_dcs = bytearray(good)
    bad_dcs[-2] ^= 1
    bad_data = bytearray(good)
    bad_data[7] ^= 0x10
    host = frame(b"\x03\x32\x01\x06\x07", tfi=0xD4)
    for f, why in (
        (bad_lcs, "length checksum"),
        (bad_dcs, "data checksum"),
        (bad_data, "data checksum"),
        (host, "frame identifier"),
        (good[:-3], "truncated"),
        (b"\x12\x34\x56", "truncated"),
        (frame(b""), "response code"),
    ):
        e = mptest.raises(ProtocolError, pn532.parse_frame, f, len(f))
        mptest.true(why in str(e), "%s: %s" % (why, e))
    ext = bytearray(frame(bytes(260)))
    ext[7] ^= 1
    mptest.raises(ProtocolError, pn532.frame_size, ext, len(ext))


def test_frame_size_waits_for_a_complete_header():
    f = frame(b"\x03\x32\x01\x06\x07")
    mptest.eq(pn532.frame_size(f, 2), -1)
    mptest.eq(pn532.frame_size(f, 4), -1)
    mptest.eq(pn532.frame_size(f, 5), len(f))
    ext = frame(bytes(260))
    mptest.eq(pn532.frame_size(ext, 6), -1)
    mptest.eq(pn532.frame_size(ext, 8), len(ext))


def test_status_codes_map_to_link_errors():
    mptest.true(isinstance(pn532.status_error(0x01, "x"), CardGone))
    mptest.true(isinstance(pn532.status_error(0x2B, "x"), CardGone))
    mptest.true(isinstance(pn532.status_error(0x02, "x"), ProtocolError))
    mptest.true(isinstance(pn532.status_error(0x13, "x"), ProtocolError))
    mptest.true(isinstance(pn532.status_error(0x0D, "x"), ChipError))
    mptest.true(isinstance(pn532.status_error(0xC1, "x"), CardGone))  # MI/NAD bits ignored


def test_parse_target_a_uid_sizes_and_ats():
    ats = b"\x05\x78\x80\x70\x02"
    for uid in (b"\x01\x02\x03\x04", bytes(range(7)), bytes(range(10))):
        data = b"\x01\x01\x00\x44\x20" + bytes((len(uid),)) + uid + ats
        t = pn532.parse_target_a(data)
        mptest.eq((t.kind, t.uid, t.sak, t.ats, t.iso_dep), ("A", uid, 0x20, ats, True))
        mptest.hex_eq(t.atqa, b"\x00\x44")
    mifare = pn532.parse_target_a(b"\x01\x01\x00\x04\x08\x04\x01\x02\x03\x04")
    mptest.false(mifare.iso_dep)
    mptest.eq(pn532.parse_target_a(b"\x00"), None)


def test_parse_target_a_refuses_malformed_answers():
    mptest.raises(ProtocolError, pn532.parse_target_a, b"")
    mptest.raises(ProtocolError, pn532.parse_target_a, b"\x01\x01\x00\x04")
    mptest.raises(ProtocolError, pn532.parse_target_a, b"\x01\x01\x00\x04\x20\x05" + bytes(5))
    mptest.raises(ProtocolError, pn532.parse_target_a, b"\x01\x01\x00\x04\x20\x07\x01\x02")
    # SAK says ISO 14443-4 but the ATS length byte lies: usable UID, no ISO-DEP, logged.
    t = pn532.parse_target_a(b"\x01\x01\x00\x04\x20\x04\x01\x02\x03\x04\x09\x78")
    mptest.false(t.iso_dep)
    mptest.true(log.find("ATS", log.WARNING))


def test_parse_target_b():
    atqb = b"\x50\xaa\xbb\xcc\xdd\x00\x00\x00\x00\x00\x81\x71"
    t = pn532.parse_target_b(b"\x01\x01" + atqb + b"\x01\x00")
    mptest.eq((t.kind, t.uid, t.ats, t.atqb, t.iso_dep), ("B", atqb[1:5], atqb, atqb, True))
    mptest.eq(t.sak, None)
    mptest.raises(ProtocolError, pn532.parse_target_b, b"\x01\x01" + atqb[:8])
    mptest.raises(ProtocolError, pn532.parse_target_b, b"\x01\x01\x51" + atqb[1:] + b"\x00")
    mptest.raises(ProtocolError, pn532.parse_target_b, b"\x01\x01" + atqb + b"\x03\x00")


def test_command_returns_parameters():
    r, chip = reader([ok(b"\x03\x32\x01\x06\x07")])
    mptest.hex_eq(r.command(0x02), b"\x32\x01\x06\x07")
    mptest.eq(len(chip.sent), 1)


def test_missing_ack_resends_then_times_out_with_a_cancel_each_time():
    r, chip = reader([[None], [None], [None]])
    mptest.raises(LinkTimeout, r.command, 0x02)
    mptest.eq(len(chip.commands()), 3)
    mptest.eq(chip.sent.count(pn532.ACK), 3)


def test_missing_ack_then_success_on_resend():
    r, chip = reader([[None], ok(b"\x03\x32\x01\x06\x07")])
    mptest.hex_eq(r.command(0x02), b"\x32\x01\x06\x07")
    mptest.true(log.find("sending it again", log.WARNING))


def test_in_data_exchange_is_never_sent_twice():
    r, chip = reader([[None]])
    with_target(r)
    mptest.raises(LinkTimeout, r.transceive, b"\x00\xa4\x04\x00")
    mptest.eq(len(chip.commands()), 1)
    mptest.eq(chip.sent[-1], pn532.ACK)


def test_damaged_response_is_fetched_again_with_nack():
    good = frame(b"\x03\x32\x01\x06\x07")
    bad = bytearray(good)
    bad[-2] ^= 0xFF
    r, chip = reader([[pn532.ACK, bytes(bad)]], resend=[good])
    mptest.hex_eq(r.command(0x02), b"\x32\x01\x06\x07")
    mptest.eq(chip.sent.count(pn532.NACK), 1)
    mptest.eq(len(chip.commands()), 1)


def test_response_damaged_every_time_gives_protocol_error():
    bad = bytearray(frame(b"\x03\x32\x01\x06\x07"))
    bad[6] ^= 1
    r, chip = reader([[pn532.ACK, bytes(bad)]], resend=[bytes(bad)] * 5)
    mptest.raises(ProtocolError, r.command, 0x02)
    mptest.eq(chip.sent.count(pn532.NACK), 2)
    mptest.eq(chip.sent[-1], pn532.ACK)


def test_error_frame_is_a_chip_error():
    r, chip = reader([[pn532.ACK, ERR]])
    e = mptest.raises(ChipError, r.command, 0x02)
    mptest.true("syntax" in str(e))
    r, chip = reader([[ERR]])
    mptest.raises(ChipError, r.command, 0x02)


def test_stale_response_is_skipped():
    r, chip = reader([[frame(b"\x4b\x00"), pn532.ACK, frame(b"\x4b\x00"), frame(b"\x03\x32")]])
    mptest.hex_eq(r.command(0x02), b"\x32")
    mptest.true(log.find("skipped", log.WARNING))


def test_response_timeout_cancels_the_command():
    r, chip = reader([[pn532.ACK, None]])
    mptest.raises(LinkTimeout, r.command, 0x4A, b"\x01\x00")
    mptest.eq(chip.sent[-1], pn532.ACK)


def test_lost_ack_with_response_is_accepted():
    r, chip = reader([[frame(b"\x03\x32\x01\x06\x07")]])
    mptest.hex_eq(r.command(0x02), b"\x32\x01\x06\x07")
    mptest.eq(len(chip.commands()), 1)


def test_bus_failure_is_a_chip_error():
    r, chip = reader([])
    chip.fail_send = 1
    mptest.raises(ChipError, r.command, 0x02)


def test_init_refuses_a_chip_that_is_not_a_pn532():
    r, chip = reader([ok(b"\x15"), ok(b"\x03\x33\x01\x06\x07")])
    mptest.raises(ChipError, r.init)
    r, chip = reader([ok(b"\x15"), ok(b"\x03\x32")])
    mptest.raises(ChipError, r.init)


def test_host_chaining_splits_long_commands_with_mi():
    r, chip = reader([ok(b"\x41\x00"), ok(b"\x41\x00"), ok(b"\x41\x00\x90\x00")], chunk=10)
    with_target(r)
    apdu = bytes(range(25))
    mptest.hex_eq(r.transceive(apdu), b"\x90\x00")
    cmds = chip.commands()
    mptest.eq(len(cmds), 3)
    mptest.eq([c[6:8] for c in cmds], [b"\x40\x41", b"\x40\x41", b"\x40\x01"])
    mptest.hex_eq(b"".join(c[8:-2] for c in cmds), apdu)


def test_card_answering_mid_chain_is_a_protocol_error():
    r, chip = reader([ok(b"\x41\x00\x90\x00")], chunk=10)
    with_target(r)
    mptest.raises(ProtocolError, r.transceive, bytes(25))


def test_response_chaining_collects_until_mi_clears():
    r, chip = reader(
        [ok(b"\x41\x40" + b"a" * 10), ok(b"\x41\x40" + b"b" * 10), ok(b"\x41\x00c\x90\x00")]
    )
    with_target(r, tg=2)
    mptest.hex_eq(r.transceive(b"\x00\xb0\x00\x00\x00"), b"a" * 10 + b"b" * 10 + b"c\x90\x00")
    cmds = chip.commands()
    mptest.eq([c[5:-2] for c in cmds[1:]], [b"\xd4\x40\x02", b"\xd4\x40\x02"])


def test_response_longer_than_the_limit_is_refused():
    r, chip = reader([ok(b"\x41\x40" + bytes(40))] * 3, max_response=64)
    with_target(r)
    mptest.raises(ProtocolError, r.transceive, b"\x00\xb0\x00\x00\x00")


def test_card_gone_status_drops_the_target():
    r, chip = reader([ok(b"\x41\x01")])
    with_target(r)
    mptest.raises(CardGone, r.transceive, b"\x00\xb0\x00\x00\x00")
    mptest.eq(r.target, None)
    mptest.raises(CardGone, r.transceive, b"\x00\xb0\x00\x00\x00")  # until the next poll


def test_card_gone_in_the_middle_of_a_chained_answer():
    r, chip = reader([ok(b"\x41\x40" + bytes(10)), ok(b"\x41\x01")])
    with_target(r)
    mptest.raises(CardGone, r.transceive, b"\x00\xb0\x00\x00\x00")
    mptest.eq(r.target, None)


def test_answers_without_status_or_sw_are_refused():
    for answer in (b"\x41", b"\x41\x00", b"\x41\x00\x90"):
        r, chip = reader([ok(answer)])
        with_target(r)
        mptest.raises(ProtocolError, r.transceive, b"\x00\xb0\x00\x00\x00")


def test_transceive_without_a_card():
    r, chip = reader([])
    mptest.raises(CardGone, r.transceive, b"\x00\xa4")
    r.target = pn532.Target("A", b"\x01\x02\x03\x04", sak=0x08)
    mptest.raises(CardGone, r.transceive, b"\x00\xa4")
    mptest.eq(chip.sent, [])


def test_poll_refuses_a_garbled_target_and_releases_it():
    r, chip = reader([ok(b"\x4b\x01\x01\x00\x04\x20\x09\x01"), ok(b"\x53\x00")], kinds="A")
    mptest.eq(r.poll(), None)
    mptest.eq(chip.commands()[-1][5:8], b"\xd4\x52\x00")


def test_present_and_release_never_raise():
    r, chip = reader([[None], [None], [None], [None]])
    with_target(r)
    mptest.false(r.present())
    mptest.eq(r.target, None)
    with_target(r)
    r.release()
    mptest.eq(r.target, None)


def test_garbage_and_truncation_only_raise_link_errors():
    # Random damage to every answer: the driver must fail only with linkerr types.
    random.seed(5)
    rnd = random.getrandbits
    good = [
        frame(b"\x41\x00\x6f\x03\x84\x01\x00\x90\x00"),
        frame(b"\x41\x40" + bytes(30)),
        frame(b"\x41\x00" + bytes(300)),
        pn532.ACK,
        ERR,
    ]
    outcomes = {}
    for i in range(400):
        base = bytearray(good[i % len(good)])
        how = rnd(2)
        if how == 0 and len(base) > 1:
            base = base[: rnd(8) % len(base)]
        elif how == 1:
            for _ in range(1 + rnd(2)):
                base[rnd(16) % len(base)] ^= 1 + rnd(7)
        else:
            base = bytearray(rnd(8) for _ in range(rnd(5)))
        plan = [[pn532.ACK, bytes(base)], [pn532.ACK, bytes(base)], [bytes(base)]]
        r, chip = reader(plan, resend=[bytes(base)] * 3)
        with_target(r)
        try:
            r.transceive(b"\x00\xa4\x04\x00\x00")
            what = "ok"
        except LinkError as e:
            what = type(e).__name__
        outcomes[what] = outcomes.get(what, 0) + 1
    mptest.log("damage outcomes", sorted(outcomes.items()))
    mptest.true(outcomes.get("ProtocolError", 0) > 50)


def test_short_apdu_and_empty_chained_pieces_are_refused():
    r, chip = reader([])
    with_target(r)
    mptest.raises(ProtocolError, r.transceive, b"\x00\xa4")
    mptest.eq(chip.sent, [])
    r, chip = reader([ok(b"\x41\x40")] * 5)
    with_target(r)
    mptest.raises(ProtocolError, r.transceive, b"\x00\xb0\x00\x00\x00")
    mptest.eq(len(chip.commands()), 1)


class RandomI2C:
    """An I2C bus whose chip answers random bytes (status byte included) or NACKs."""

    def __init__(self):
        self.reads = 0

    def writeto(self, addr, buf):
        if random.getrandbits(3) == 0:
            raise OSError(19)

    def readfrom_into(self, addr, buf):
        self.reads += 1
        k = random.getrandbits(2)
        if k == 0:
            raise OSError(19)
        for i in range(len(buf)):
            buf[i] = (
                random.getrandbits(8) if k == 1 else (0x00, 0xFF, 0x01)[random.getrandbits(8) % 3]
            )
        if k == 3 and len(buf) > 8:
            buf[1:7] = b"\x00\x00\xff" + bytes((len(buf) // 2, (-(len(buf) // 2)) & 0xFF, 0xD5))


class RandomSPI:
    LSB = 1

    def init(self, **kw):
        pass

    def write(self, buf):
        pass

    def write_readinto(self, out, buf):
        for i in range(len(buf)):
            buf[i] = random.getrandbits(8)
        if len(buf) > 6 and random.getrandbits(1):
            buf[1:4] = b"\x00\x00\xff"

    def readinto(self, buf):
        self.write_readinto(buf, buf)


class Level:
    def __init__(self):
        self.level = 1

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = v


class RandomUART:
    def __init__(self):
        self.pending = b""

    def any(self):
        if not self.pending and random.getrandbits(1):
            n = random.getrandbits(5)
            self.pending = bytes(random.getrandbits(8) for _ in range(n))
            if random.getrandbits(1):
                self.pending = b"\x00\x00\xff" + self.pending
        return len(self.pending)

    def readinto(self, buf):
        n = min(len(buf), len(self.pending))
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def write(self, data):
        return len(data)

    def read(self):
        return None


def test_transports_survive_random_chips():
    # Garbage, truncation and NACKs from the bus end in a typed error or a timeout, never a
    # crash nor a hang: each receive is bounded by its timeout.
    from pn532_i2c import PN532I2C
    from pn532_spi import PN532SPI
    from pn532_uart import PN532UART

    random.seed(11)
    for t in (
        PN532I2C(RandomI2C(), poll_us=0),
        PN532SPI(RandomSPI(), Level()),
        PN532UART(RandomUART()),
    ):
        r = pn532.PN532(t, ack_timeout_ms=3, command_timeout_ms=5, exchange_timeout_ms=5)
        outcomes = {}
        for _ in range(60):
            with_target(r)
            t0 = time.ticks_ms()
            try:
                r.transceive(b"\x00\xa4\x04\x00\x00")
                what = "ok"
            except LinkError as e:
                what = type(e).__name__
            took = time.ticks_diff(time.ticks_ms(), t0)
            mptest.true(took < 10000, "limit: an exchange took %d ms, over 10 s" % took)
            outcomes[what] = outcomes.get(what, 0) + 1
        mptest.log(type(t).__name__, sorted(outcomes.items()))
        mptest.false("ok" in outcomes, "random bytes taken for an answer")


def test_reader_and_transport_ram_stays_small():
    # Buffers are preallocated once: a reader with its transport must stay within a few KB of an
    # ESP32 heap (measured 2.6 KB), and a whole exchange must not leave garbage behind it.
    import gc

    from pn532_i2c import PN532I2C

    gc.collect()
    m0 = gc.mem_alloc()
    chip = ScriptChip([ok(b"\x41\x00" + bytes(40) + b"\x90\x00")] * 3)
    t = PN532I2C(RandomI2C())
    r = pn532.PN532(chip)
    gc.collect()
    used = gc.mem_alloc() - m0
    mptest.log("reader + I2C transport: %d bytes" % used)
    mptest.between(used, 500, 4096)
    with_target(r)
    r.transceive(b"\x00\xb0\x00\x00\x00")
    gc.collect()
    m1 = gc.mem_alloc()
    for _ in range(2):
        r.transceive(b"\x00\xb0\x00\x00\x00")
    gc.collect()
    mptest.between(gc.mem_alloc() - m1, -64, 256, "memory kept after two exchanges")
    del t


def test_normal_frame_of_255_bytes_is_not_mistaken_for_an_extended_one():
    # LEN FF with LCS 01 is a valid normal frame (found by the frame fuzzer: it used to be read
    # as the extended-frame marker and an IndexError escaped poll()).
    f = b"\x00\x00\xff\xff\x01\xd5\x41" + bytes(255)
    buf = bytearray(pn532.FRAME_BUF)
    buf[: len(f)] = f
    try:
        pn532.parse_frame(buf, len(f))
    except ProtocolError:
        pass  # its data checksum is wrong: a clear protocol error is the right answer
    body = b"\xd5\x41\x00" + bytes(252)  # 255 bytes with the TFI: LEN FF, LCS 01
    good = b"\x00\x00\xff\xff\x01" + body + bytes(((-sum(body)) & 0xFF, 0))
    buf[: len(good)] = good
    kind, off, ln = pn532.parse_frame(buf, len(good))
    mptest.eq((kind, ln), (pn532.FRAME_DATA, 255))
