"""The PN532 chip simulator on its own (CPython): frames, commands, transports, faults."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.sim import nfc_server
from tools.sim.field import Field, SimpleApduCard
from tools.sim.pn532 import (
    ACK,
    ERROR_FRAME,
    NACK,
    build_frame,
    parse_host_frames,
)
from tools.sim.pn532 import PN532HSUSim as TimedPN532HSUSim
from tools.sim.pn532 import PN532I2CSim as TimedPN532I2CSim
from tools.sim.pn532 import PN532SPISim as TimedPN532SPISim

SELECT = bytes.fromhex("00a4040008a000000632010105")


class PN532I2CSim(TimedPN532I2CSim):
    """Frames ready at once, so these tests can read right after writing (the chip's handling
    time is tested in test_i2c_not_ready_until_the_chip_has_handled_the_frame)."""

    ack_ms = 0
    resp_ms = 0


class PN532SPISim(TimedPN532SPISim):
    ack_ms = 0
    resp_ms = 0


class PN532HSUSim(TimedPN532HSUSim):
    ack_ms = 0
    resp_ms = 0


def host(data):
    return build_frame(bytes(data), tfi=0xD4)


def chip_frame(data):
    return build_frame(bytes(data), tfi=0xD5)


class I2CHost:
    """Drives a PN532I2CSim as the driver would, without the bus."""

    def __init__(self, chip):
        self.chip = chip

    def command(self, data):
        assert self.chip.i2c_write(host(data))
        assert self.chip.i2c_read(7) == b"\x01" + ACK
        return self.response()

    def response(self):
        assert self.chip.i2c_read(1) == b"\x01"
        raw = self.chip.i2c_read(300)
        assert raw[0] == 1
        return raw[1:]


def params(frame):
    """Response parameters of a chip frame (after D5 and the response code)."""
    assert frame[:3] == b"\x00\x00\xff"
    if frame[3:5] == b"\xff\xff":
        n = (frame[5] << 8) | frame[6]
        body = frame[8 : 8 + n]
    else:
        n = frame[3]
        body = frame[5 : 5 + n]
    assert body[0] == 0xD5
    return bytes(body[2:])


@pytest.fixture
def i2c():
    chip = PN532I2CSim(field=Field())
    h = I2CHost(chip)
    h.command(b"\x14\x01\x14\x00")
    h.command(b"\x32\x05\xff\x01\x02")
    return chip, h


def test_i2c_not_ready_until_the_chip_has_handled_the_frame():
    chip = TimedPN532I2CSim(field=Field())
    chip.ack_ms, chip.resp_ms = 500, 1000  # long enough for a busy test machine
    assert chip.i2c_write(host(b"\x02"))
    assert chip.i2c_read(1) == b"\x00"  # still handling the command
    assert chip.i2c_read(7) == b"\x00" * 7  # a frame read while busy gets nothing either
    assert chip.stats["not_ready"] == 2
    time.sleep(chip.ack_ms / 1000 + 0.002)
    assert chip.i2c_read(7) == b"\x01" + ACK
    time.sleep(chip.resp_ms / 1000 + 0.002)
    raw = chip.i2c_read(20)
    assert raw[0] == 1 and params(raw[1:]) == b"\x32\x01\x06\x07"


def test_frames_match_the_published_examples():
    assert host(b"\x02") == bytes.fromhex("0000ff02fed4022a00")
    chip = PN532I2CSim()
    h = I2CHost(chip)
    assert h.command(b"\x14\x01\x00\x00")[:9] == bytes.fromhex("0000ff02fed5151600")
    assert params(h.command(b"\x02")) == b"\x32\x01\x06\x07"


def test_parse_host_frames_drops_damage_and_keeps_partial_frames():
    good = host(b"\x02")
    bad_dcs = bytearray(good)
    bad_dcs[-2] ^= 1
    bad_lcs = bytearray(good)
    bad_lcs[4] ^= 1
    chip_tfi = chip_frame(b"\x02")
    buf = bytearray(b"\x12" + ACK + bytes(bad_dcs) + bytes(bad_lcs) + chip_tfi + NACK + good[:6])
    events = parse_host_frames(buf)
    kinds = [k for k, _ in events]
    assert kinds == ["ack", "bad", "bad", "bad", "nack"]
    assert buf == good[1:6]  # from the start code on, waiting for the rest
    buf += good[6:]
    assert parse_host_frames(buf) == [("cmd", b"\x02")]
    ext = host(b"\x40\x01" + bytes(300))
    assert ext[3:5] == b"\xff\xff"
    assert parse_host_frames(bytearray(ext)) == [("cmd", b"\x40\x01" + bytes(300))]


def test_i2c_status_byte_and_reads(i2c):
    chip, h = i2c
    assert chip.i2c_read(4) == b"\x00\x00\x00\x00"  # nothing pending: status 0
    assert chip.i2c_write(host(b"\x02"))
    assert chip.i2c_read(1) == b"\x01"
    assert chip.i2c_read(1) == b"\x01"  # a status poll does not consume
    assert chip.i2c_read(7) == b"\x01" + ACK
    raw = chip.i2c_read(20)
    assert raw[1:10] == chip_frame(b"\x03\x32\x01\x06\x07")[:9] and raw[-1] == 0
    assert chip.i2c_read(1) == b"\x00"


def test_bad_checksum_gets_no_ack_and_unknown_command_an_error_frame(i2c):
    chip, h = i2c
    bad = bytearray(host(b"\x02"))
    bad[-2] ^= 1
    assert chip.i2c_write(bytes(bad))
    assert chip.i2c_read(1) == b"\x00"
    assert chip.state()["stats"]["bad_frames"] == 1
    assert h.command(b"\x7e")[:8] == ERROR_FRAME
    assert h.command(b"\x14\x09")[:8] == ERROR_FRAME  # bad SAM mode
    assert h.command(b"\x32\x05\xff")[:8] == ERROR_FRAME  # short RF item


def test_nack_makes_the_chip_resend_its_last_response(i2c):
    chip, h = i2c
    first = h.command(b"\x02")
    assert chip.i2c_write(NACK)
    assert h.response()[: len(first.rstrip(b"\0"))] == first.rstrip(b"\0")


def test_poll_without_card_answers_none_or_blocks_until_a_card_or_an_ack(i2c):
    chip, h = i2c
    assert params(h.command(b"\x4a\x01\x00")) == b"\x00"
    h.command(b"\x32\x05\xff\x01\xff")  # retry forever
    assert chip.i2c_write(host(b"\x4a\x01\x00"))
    assert chip.i2c_read(7) == b"\x01" + ACK
    assert chip.i2c_read(1) == b"\x00"
    chip.field.add(SimpleApduCard())
    answer = params(h.response())
    assert answer[:2] == b"\x01\x01" and answer[5:10] == b"\x04\x04\x11\x22\x33"
    chip.field.clear()
    assert chip.i2c_write(host(b"\x4a\x01\x00"))
    assert chip.i2c_read(7) == b"\x01" + ACK
    assert chip.i2c_write(ACK)  # host gives up: cancel
    assert not chip.state()["pending_poll"]
    chip.field.add(SimpleApduCard())
    assert chip.i2c_read(1) == b"\x00"


def test_type_a_activation_with_auto_rats_and_two_cards(i2c):
    chip, h = i2c
    a = SimpleApduCard(uid=bytes.fromhex("04a1a2a3a4a5a6"), atqa=b"\x00\x44")
    b = SimpleApduCard(uid=b"\x01\x02\x03\x04", sak=0x08, iso_dep=False)
    chip.field.add(a)
    chip.field.add(b)
    one = params(h.command(b"\x4a\x01\x00"))
    assert one[:6] == b"\x01\x01\x00\x44\x20\x07"
    assert one[6:13] == a.uid and one[13:] == a.ats
    two = params(h.command(b"\x4a\x02\x00"))
    assert two[0] == 2
    assert two.endswith(b"\x02\x00\x04\x08\x04\x01\x02\x03\x04")  # no ATS for a MIFARE card
    h.command(b"\x12\x04")  # auto-RATS off: no ATS even for the CPU card
    assert params(h.command(b"\x4a\x01\x00"))[13:] == b""


def test_type_b_follows_the_support_byte(i2c):
    chip, h = i2c
    card = SimpleApduCard(kind="B", uid=b"\xaa\xbb\xcc\xdd")
    chip.field.add(card)
    answer = params(h.command(b"\x4a\x01\x03\x00"))
    assert answer[:3] == b"\x01\x01\x50" and answer[3:7] == card.uid
    assert params(h.command(b"\x4a\x01\x00")) == b"\x00"  # no type A card there
    chip.support = 0x05
    assert h.command(b"\x4a\x01\x03\x00")[:8] == ERROR_FRAME


def activate(chip, h, card=None):
    card = card or SimpleApduCard()
    chip.field.add(card)
    assert params(h.command(b"\x4a\x01\x00"))[0] == 1
    return card


def test_in_data_exchange_and_chaining_both_ways(i2c):
    chip, h = i2c
    card = activate(chip, h)
    assert params(h.command(b"\x40\x01" + SELECT)) == b"\x00" + card.fci + b"\x90\x00"
    # Host chaining: MI set on all but the last piece; the card sees one APDU.
    assert params(h.command(b"\x40\x41\x80\xee\x00\x00\x06abc")) == b"\x00"
    assert params(h.command(b"\x40\x01def")) == b"\x00fedcba\x90\x00"
    assert card.apdus[-1] == b"\x80\xee\x00\x00\x06abcdef"
    # Response chaining: 258 bytes in pieces of max_resp.
    chip.max_resp = 100
    got, status = b"", 0x40
    first = True
    while status & 0x40:
        p = params(h.command(b"\x40\x01" + (b"\x00\xb0\x00\x00\x00" if first else b"")))
        first = False
        status, got = p[0], got + p[1:]
    assert len(got) == 258 and got[-2:] == b"\x90\x00"
    chip.max_resp = 261
    p = params(h.command(b"\x40\x01\x00\xb0\x00\x00\x00"))  # an extended frame this time
    assert p[0] == 0 and len(p) == 259
    assert params(h.command(b"\x40\x02" + SELECT)) == b"\x27"  # no such target


def test_card_leaving_before_during_and_after(i2c):
    chip, h = i2c
    card = activate(chip, h)
    chip.fault("card_leave", when="before")
    assert params(h.command(b"\x40\x01" + SELECT)) == b"\x01"
    assert SELECT not in card.apdus and not card.present
    assert params(h.command(b"\x00\x06")) == b"\x01"  # Diagnose: not there
    card = activate(chip, h)
    chip.fault("card_leave", when="after")
    assert params(h.command(b"\x40\x01" + SELECT)) == b"\x01"
    assert card.apdus == [SELECT]  # it ran the command, the answer was lost
    card = activate(chip, h)
    chip.max_resp = 50
    chip.fault("card_leave", after=1)  # during the second piece of a chained answer
    assert params(h.command(b"\x40\x01\x00\xb0\x00\x00\x00"))[0] == 0x40
    assert params(h.command(b"\x40\x01")) == b"\x01"
    assert params(h.command(b"\x00\x06")) == b"\x01"


def test_i2c_faults(i2c):
    chip, h = i2c
    chip.fault("nack_bus", count=2)
    assert chip.i2c_write(host(b"\x02")) is False
    assert chip.i2c_read(1) is None
    chip.fault("ignore")
    assert chip.i2c_write(host(b"\x02"))
    assert chip.i2c_read(1) == b"\x00"
    chip.fault("drop_ack")
    assert chip.i2c_write(host(b"\x02"))
    assert params(h.response()[:15]) == b"\x32\x01\x06\x07"
    chip.fault("drop_response")
    assert chip.i2c_write(host(b"\x02"))
    assert chip.i2c_read(7) == b"\x01" + ACK
    assert chip.i2c_read(1) == b"\x00"
    chip.fault("corrupt")
    bad = h.command(b"\x02")
    assert bad[:13] != chip_frame(b"\x03\x32\x01\x06\x07")
    assert chip.i2c_write(NACK)
    assert params(h.response()[:13]) == b"\x32\x01\x06\x07"
    chip.fault("error_frame")
    assert h.command(b"\x02")[:8] == ERROR_FRAME
    chip.fault("slow", ms=150)
    assert chip.i2c_write(host(b"\x02"))
    assert chip.i2c_read(7) == b"\x01" + ACK
    assert chip.i2c_read(1) == b"\x00"
    time.sleep(0.2)
    assert params(h.response()[:13]) == b"\x32\x01\x06\x07"


def spi_x(chip, data, lsb=True):
    chip.spi_select(True)
    out = chip.spi_exchange(bytes(data), {"firstbit": "LSB" if lsb else "MSB"})
    chip.spi_select(False)
    return out


def awake_spi():
    chip = PN532SPISim()
    chip.spi_select(True)  # the chip-select edge wakes it from LowVbat; this window is lost
    chip.spi_select(False)
    return chip


def test_spi_dw_sr_dr_and_resumed_reads():
    chip = awake_spi()
    assert spi_x(chip, b"\x02\x00")[1] == 0
    spi_x(chip, b"\x01" + host(b"\x02"))
    assert spi_x(chip, b"\x02\x00")[1] == 1
    assert spi_x(chip, b"\x03" + bytes(6))[1:] == ACK
    want = chip_frame(b"\x03\x32\x01\x06\x07")
    head = spi_x(chip, b"\x03" + bytes(5))[1:]
    # A second window: the next byte comes out while the DR byte goes in.
    rest = spi_x(chip, b"\x03" + bytes(len(want) - 6))
    assert head + rest == want
    assert spi_x(chip, b"\x02\x00")[1] == 0
    assert chip.spi_exchange(b"\x02\x00", {"firstbit": "LSB"}) == b"\xff\xff"  # not selected


def test_spi_msb_first_host_sees_bit_reversed_bytes():
    chip = awake_spi()
    spi_x(chip, b"\x01" + host(b"\x02"), lsb=False)  # the chip reads garbage: no frame
    assert spi_x(chip, b"\x02\x00")[1] == 0
    assert chip.state()["stats"]["commands"] == {}
    spi_x(chip, b"\x01" + host(b"\x02"))
    assert spi_x(chip, b"\x40\x00", lsb=False)[1] == 0x80  # SR reversed both ways: 01 -> 80


class HSUHost:
    def __init__(self, chip):
        self.chip = chip
        self.got = bytearray()
        chip.send = self.got.extend
        chip.config = {"baudrate": 115200}

    def write(self, data):
        self.chip.on_data(bytes(data))


def test_hsu_sleeps_until_the_wake_up_preamble_and_follows_the_baud_rate():
    chip = PN532HSUSim()
    h = HSUHost(chip)
    h.write(host(b"\x14\x01\x14\x00"))
    assert h.got == b"" and chip.lost_bytes
    h.write(b"\x55\x55" + bytes(14) + host(b"\x14\x01\x14\x00"))
    assert h.got == ACK + chip_frame(b"\x15")
    h.got.clear()
    h.write(host(b"\x10\x07"))  # 921600
    assert h.got == ACK + chip_frame(b"\x11")
    assert chip.baud == 115200  # not before the host's ACK
    h.write(ACK)
    assert chip.baud == 921600
    h.got.clear()
    h.write(host(b"\x02"))
    assert h.got == b""  # host still at 115200: lost
    chip.config = {"baudrate": 921600}
    h.write(host(b"\x02"))
    assert h.got == ACK + chip_frame(b"\x03\x32\x01\x06\x07")


def test_hsu_reassembles_frames_split_anywhere():
    chip = PN532HSUSim()
    h = HSUHost(chip)
    stream = b"\x55" + bytes(10) + host(b"\x14\x01\x14\x00") + host(b"\x02")
    for b in stream:
        h.write(bytes((b,)))
    assert h.got.endswith(ACK + chip_frame(b"\x03\x32\x01\x06\x07"))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_garbage_never_crashes_the_chip_and_it_still_answers(chunks):
    for chip in (PN532I2CSim(), PN532HSUSim()):
        if isinstance(chip, PN532HSUSim):
            h = HSUHost(chip)
            h.write(b"\x55")
            for c in chunks:
                h.write(c)
            h.write(bytes(10) + ACK)
            h.got.clear()
            h.write(host(b"\x02"))
            assert h.got.endswith(chip_frame(b"\x03\x32\x01\x06\x07"))
        else:
            for c in chunks:
                chip.i2c_write(c)
                chip.i2c_read(3)
            chip.i2c_write(ACK)
            assert params(I2CHost(chip).command(b"\x02")[:13]) == b"\x32\x01\x06\x07"


def test_server_controls():
    hub = nfc_server.build()
    hub.call("pn532_place", {"chip_name": "i2c", "label": "c", "uid": "01020304"})
    assert len(hub.call("pn532_state", {"chip_name": "i2c"})["targets"]) == 0
    hub.call("pn532_fault", {"chip_name": "spi", "name": "slow", "ms": 5})
    with pytest.raises(KeyError):
        hub.call("pn532_state", {"chip_name": "usb"})
    with pytest.raises(ValueError):
        hub.call("pn532_place", {"chip_name": "i2c", "label": "d", "colour": "red"})
    assert hub.call("pn532_card", {"label": "c"}) == {"present": True, "apdus": []}
    assert hub.call("pn532_remove", {"chip_name": "i2c", "label": "c"}) is True
    hub.call("pn532_place", {"chip_name": "hsu", "label": "t", "profile": "tunion_plain"})
    assert hub.call("pn532_card", {"label": "t"})["balance"] == 5000
    hub.call("pn532_reset", {"chip_name": "hsu"})
    assert hub.call("pn532_bus", {"chip_name": "hsu"})["bytes"] == 0


def test_field_and_simple_card():
    field = Field()
    seen = []
    field.listeners.append(lambda: seen.append(len(field.cards)))
    a, b = SimpleApduCard(), SimpleApduCard(uid=b"\x05\x06\x07\x08")
    field.add(a)
    field.add(b)
    assert field.cards == [a, b] and seen == [1, 2]
    a.remove()  # a card that tore itself away is no longer in the field
    assert field.cards == [b]
    field.add(a)  # placed again: powered afresh, last in line
    assert a.present and field.cards == [b, a]
    assert field.remove(b) and not b.present and not field.remove(b)
    field.clear()
    assert field.cards == [] and seen[-1] == 0
    assert a.process_apdu(SELECT) == a.fci + b"\x90\x00"
    assert a.process_apdu(SELECT[:-1] + b"\x06") == b"\x6a\x82"
    assert a.process_apdu(b"\x00\xb0\x00\x10\x03") == b"\x10\x11\x12\x90\x00"
    assert a.process_apdu(b"\x80\xee\x00\x00\x02ab") == b"ba\x90\x00"
    assert a.process_apdu(b"\x00") == b"\x67\x00"
    assert a.process_apdu(b"\x80\x00\x00\x00") == b"\x6d\x00"
    mifare = SimpleApduCard(iso_dep=False, sak=0x08)
    assert mifare.ats == b""
    b_card = SimpleApduCard(kind="B", uid=b"\x01\x02\x03\x04")
    assert b_card.atqb[:5] == b"\x50\x01\x02\x03\x04" and len(b_card.atqb) == 12


def test_baud_change_waits_for_the_very_next_ack_only():
    chip = PN532HSUSim()
    h = HSUHost(chip)
    h.write(b"\x55" + bytes(8) + host(b"\x14\x01\x14\x00"))
    h.write(host(b"\x10\x06"))
    h.write(host(b"\x02"))  # another command first: the change is off
    h.write(ACK)
    assert chip.baud == 115200


# -- UM0701 behaviour other hosts rely on --------------------------------------------------------


def test_rf_configuration_items_take_their_um0701_lengths(i2c):
    chip, h = i2c
    analog_f = bytes.fromhex("69ff3f114185616f")  # item 0B: 8 bytes
    assert params(h.command(b"\x32\x0b" + analog_f)) == b""
    assert h.command(b"\x32\x0b" + analog_f[:3])[:8] == ERROR_FRAME
    assert params(h.command(b"\x32\x0c\xff\x04\x85")) == b""  # item 0C: 3 bytes
    assert h.command(b"\x32\x0c\xff")[:8] == ERROR_FRAME
    assert params(h.command(b"\x32\x0a" + bytes(11))) == b""
    assert params(h.command(b"\x32\x0d" + bytes(9))) == b""
    assert h.command(b"\x32\x03\x00")[:8] == ERROR_FRAME  # no such item


def test_polling_switches_the_field_on_after_rf_configuration_turned_it_off(i2c):
    chip, h = i2c
    card = activate(chip, h)
    assert params(h.command(b"\x32\x01\x02")) == b""  # field off (AutoRFCA on)
    assert not chip.rf_on and chip.targets == {}
    assert params(h.command(b"\x06\x63\x04"))[0] & 0x03 == 0  # CIU_TxControl: drivers off
    assert params(h.command(b"\x40\x01" + SELECT)) == b"\x27"  # nothing activated any more
    answer = params(h.command(b"\x4a\x01\x00"))
    assert answer[0] == 1 and answer[6:10] == card.uid
    assert chip.rf_on and params(h.command(b"\x06\x63\x04"))[0] & 0x03 == 0x03


def test_without_auto_rats_the_card_answers_nothing_but_rats(i2c):
    chip, h = i2c
    card = SimpleApduCard()
    chip.field.add(card)
    h.command(b"\x12\x00")  # SetParameters: no auto-RATS
    answer = params(h.command(b"\x4a\x01\x00"))
    assert answer == b"\x01\x01\x00\x04\x20\x04" + card.uid  # no ATS
    before = chip.clock_us
    assert params(h.command(b"\x40\x01" + SELECT)) == b"\x01"  # the card waits for RATS
    assert card.apdus == [] and chip.clock_us - before == 51_200  # RF timeout index 0A
    # That frame threw the card back to IDLE (ISO/IEC 14443-3): RATS now gets nothing either.
    assert params(h.command(b"\x42\xe0\x80")) == b"\x01"
    # Activated again, the host runs ISO-DEP itself through InCommunicateThru, as nfcpy does.
    assert params(h.command(b"\x4a\x01\x00"))[0] == 1
    assert params(h.command(b"\x42\xe0\x80")) == b"\x00" + card.ats
    assert params(h.command(b"\x42\x02" + SELECT)) == b"\x00\x02" + card.fci + b"\x90\x00"
    assert card.apdus == [SELECT]
    # CRC checking off in the CIU: the host gets the card's CRC_A too.
    h.command(b"\x08\x63\x03\x00")
    got = params(h.command(b"\x42\x03" + SELECT))
    assert got[0] == 0 and got[1:-2] == b"\x03" + card.fci + b"\x90\x00"
    # With auto-RATS the chip activates the card itself and InDataExchange carries APDUs.
    h.command(b"\x12\x14")
    assert params(h.command(b"\x4a\x01\x00")).endswith(card.ats)
    assert params(h.command(b"\x40\x01" + SELECT)) == b"\x00" + card.fci + b"\x90\x00"
    assert chip.state()["iso_dep_targets"] == [1]


def test_registers_status_and_diagnose(i2c):
    chip, h = i2c
    assert params(h.command(b"\x06\x63\x02\x63\x03")) == b"\x80\x80"  # TxMode, RxMode: CRC on
    assert params(h.command(b"\x08\x63\x01\x3d\x63\x02\x00")) == b""
    assert params(h.command(b"\x06\x63\x01\x63\x02")) == b"\x3d\x00"
    assert h.command(b"\x06\x63")[:8] == ERROR_FRAME  # half an address
    assert h.command(b"\x08\x63\x01")[:8] == ERROR_FRAME
    h.command(b"\x08\x63\x02\x80")
    assert params(h.command(b"\x4a\x01\x00")) == b"\x00"
    assert params(h.command(b"\x06\x63\x39")) == b"\x26"  # REQA still in the FIFO: no card
    assert params(h.command(b"\x04")) == b"\x00\x00\x00\x00"  # Err, Field, NbTg, SAM
    card = activate(chip, h)
    assert params(h.command(b"\x04")) == b"\x00\x00\x01\x01\x00\x00\x00\x00"
    chip.field.remove(card)
    assert params(h.command(b"\x40\x01" + SELECT)) == b"\x01"
    assert params(h.command(b"\x04"))[:3] == b"\x01\x00\x00"  # last error: timeout
    assert params(h.command(b"\x00\x01")) == b"\x00"  # ROM test
    assert params(h.command(b"\x00\x02")) == b"\x00"  # RAM test
    assert params(h.command(b"\x00\x07\x00")) == b"\x00"  # antenna test
    line = b"\x00\x00" + bytes(range(256)) + bytes(6)  # nfcpy's line test: extended frames
    assert params(h.command(line)) == line[1:]  # NumTst and the data, echoed
    assert h.command(b"\x00\x05")[:8] == ERROR_FRAME  # not simulated: said so


def test_power_down_and_the_wake_up_of_each_transport():
    hsu = PN532HSUSim()
    h = HSUHost(hsu)
    h.write(bytes(10) + host(b"\x02"))  # nfcpy's preamble: ten zeros
    assert h.got == ACK + chip_frame(b"\x03\x32\x01\x06\x07")
    h.got.clear()
    h.write(host(b"\x16\x10"))  # PowerDown, HSU may wake it
    assert h.got == ACK + chip_frame(b"\x17\x00") and hsu.asleep and not hsu.rf_on
    h.got.clear()
    h.write(bytes(3) + host(b"\x02"))  # too short a preamble: the frame's head is lost
    assert h.got == b"" and not hsu.asleep
    h.write(host(b"\x02"))
    assert h.got == ACK + chip_frame(b"\x03\x32\x01\x06\x07")
    h.got.clear()
    h.write(host(b"\x16\x20"))  # only SPI may wake it now
    h.got.clear()
    h.write(b"\x55\x55" + bytes(14) + host(b"\x02"))
    assert h.got == b"" and hsu.asleep

    i2c = PN532I2CSim()
    assert i2c.asleep and i2c.i2c_write(host(b"\x16\x20"))  # address match wakes it
    assert i2c.stats["i2c_wakes"] == 1
    assert i2c.i2c_read(7) == b"\x01" + ACK and not i2c.asleep
    I2CHost(i2c).response()  # the answer is read: now it sleeps
    assert i2c.asleep and i2c.i2c_write(host(b"\x02")) is False  # I2C not a wake-up source

    spi = PN532SPISim()
    frame = b"\x01" + host(b"\x02")
    assert spi_x(spi, frame) == b"\xff" * len(frame)  # the waking window is lost
    assert spi_x(spi, b"\x02\x00")[1] == 0 and not spi.asleep
    spi_x(spi, b"\x01" + host(b"\x16\x80"))
    assert spi_x(spi, b"\x03" + bytes(6))[1:] == ACK
    assert spi_x(spi, b"\x03" + bytes(10))[1:] == chip_frame(b"\x17\x00")
    assert spi.asleep
    spi_x(spi, b"\x01" + host(b"\x02"))
    assert spi.asleep and spi_x(spi, b"\x02\x00") == b"\xff\xff"  # SPI cannot wake it


def test_timed_hsu_answers_later_and_in_order():
    chip = TimedPN532HSUSim()
    h = HSUHost(chip)
    with chip.lock:  # the sender thread needs the lock: nothing can leave meanwhile
        h.write(bytes(10) + host(b"\x02"))
        assert h.got == b"" and [f for _, f in chip._outq] == [
            ACK,
            chip_frame(b"\x03\x32\x01\x06\x07"),
        ]
    deadline = time.monotonic() + 10
    while len(h.got) < 19 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert h.got == ACK + chip_frame(b"\x03\x32\x01\x06\x07")
    with chip.lock:
        h.write(host(b"\x02"))
        h.write(ACK)  # the host cancels: the queued answer never leaves
        assert chip._outq == []
