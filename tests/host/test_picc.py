"""Card-side ISO 14443-3A/-4 emulation (tools/sim/picc.py): states, anticollision, blocks."""

import crc
from hypothesis import given
from hypothesis import strategies as st

from tools.sim import picc as pm
from tools.sim.card import VirtualCard


def card(uid="04a1b2c3", **kw):
    return pm.TestCard(bytes.fromhex(uid), **kw)


def powered(c=None, **knobs):
    p = pm.Picc(c or card(), **knobs)
    p.power(True)
    return p


def tx(p, data, crc_on=True):
    """Send whole bytes; -> answer bytes (CRC checked and removed when crc_on) or None."""
    data = bytes(data)
    if crc_on:
        data = crc.append_crc_a(data)
    got = p.receive(pm.to_bits(data))
    if got is None:
        return None
    raw, last = pm.from_bits(got[0])
    if crc_on:
        assert crc.check_crc_a(raw), raw.hex()
        return raw[:-2]
    return raw


def short(p, cmd):
    got = p.receive(pm.to_bits(bytes((cmd,)), 7))
    return None if got is None else pm.from_bits(got[0])[0]


def activate(p, levels=None):
    assert short(p, pm.REQA) is not None
    for i, cl in enumerate(levels or p.levels):
        sel = pm.SEL_CODES[i]
        assert tx(p, bytes((sel, 0x20)), crc_on=False) == cl
        sak = tx(p, bytes((sel, 0x70)) + cl)
    return sak


def protocol(p, fsdi=5):
    activate(p)
    return tx(p, bytes((0xE0, fsdi << 4)))


@given(st.binary(max_size=40), st.integers(0, 7))
def test_bits_round_trip(data, last):
    bits = pm.to_bits(data, last)
    assert len(bits) == (len(data) * 8 - (8 - last) % 8 if data and last else len(data) * 8)
    back, back_last = pm.from_bits(bits)
    if not last or not data:
        assert back == data
    else:
        assert back[:-1] == data[:-1]
        assert back[-1] == data[-1] & ((1 << last) - 1)
        assert back_last == last


def test_request_states():
    p = pm.Picc(card())
    assert short(p, pm.REQA) is None  # field off
    p.power(True)
    assert short(p, pm.REQA) == b"\x04\x00"
    assert p.state == pm.STATE_READY
    assert short(p, pm.REQA) is None  # REQA in READY: back to IDLE, no answer
    assert p.state == pm.STATE_IDLE
    activate(p)
    assert tx(p, b"\x50\x00") is None  # HLTA
    assert p.state == pm.STATE_HALT
    assert short(p, pm.REQA) is None
    assert short(p, pm.WUPA) == b"\x04\x00"
    p.power(False)
    assert p.state == pm.STATE_OFF


def test_cascade_levels_and_sak():
    p = powered(card("04112233445566"))
    assert short(p, pm.REQA) == b"\x44\x00"
    assert p.levels[0] == bytes.fromhex("88041122") + bytes((0x88 ^ 0x04 ^ 0x11 ^ 0x22,))
    assert tx(p, b"\x93\x20", crc_on=False) == p.levels[0]
    assert tx(p, b"\x93\x70" + p.levels[0]) == b"\x04"  # cascade bit: not complete
    assert tx(p, b"\x95\x20", crc_on=False) == p.levels[1]
    assert tx(p, b"\x95\x70" + p.levels[1]) == b"\x20"
    assert p.state == pm.STATE_ACTIVE
    p10 = powered(card("0811223344556677889a"))
    assert len(p10.levels) == 3
    assert activate(p10) == b"\x20"


def test_partial_anticollision_answers_the_rest_of_the_bits():
    p = powered()
    short(p, pm.REQA)
    cl = p.levels[0]
    known = pm.to_bits(cl)[:11]  # 1 byte + 3 bits
    frame = pm.to_bits(bytes((0x93, 0x33))) + known
    bits, _ = p.receive(frame)
    assert bits == pm.to_bits(cl)[11:]
    wrong = list(known)
    wrong[10] ^= 1
    assert p.receive(pm.to_bits(bytes((0x93, 0x33))) + wrong) is None  # other prefix: silent
    assert p.state == pm.STATE_READY
    assert p.receive(pm.to_bits(bytes((0x93, 0x34))) + known) is None  # NVB disagrees: error
    assert p.state == pm.STATE_IDLE


def test_select_of_another_uid_sends_the_card_back():
    p = powered()
    short(p, pm.REQA)
    assert tx(p, b"\x93\x70" + bytes.fromhex("0102030404")) is None
    assert p.state == pm.STATE_IDLE


def test_rats_gives_ats_and_fsd():
    p = powered()
    assert protocol(p, fsdi=5) == bytes.fromhex("0578804000")
    assert p.fsd == 64 and p.state == pm.STATE_PROTOCOL
    q = powered(card(iso_dep=False, sak=0x08, ats=b""))
    activate(q)
    assert tx(q, b"\xe0\x50") is None
    assert q.state == pm.STATE_IDLE


def test_i_block_rules_and_retransmission():
    p = powered()
    protocol(p)
    assert tx(p, b"\x02\x00\xa4\x04\x00\x08" + pm.TestCard.AID)[-2:] == b"\x90\x00"
    assert p.bn == 0
    # R(NAK) with the card's number: the last block again, not a second execution
    again = tx(p, b"\xb2")
    assert again[0] == 0x02 and again[-2:] == b"\x90\x00"
    assert len(p.card.apdus) == 1
    # R(NAK) with the other number: R(ACK) with the card's number (presence check)
    assert tx(p, b"\xb3") == b"\xa2"
    assert tx(p, b"\x03\x00\x00") == b"\x03\x90\x00"


def test_chained_answer_and_lost_block():
    p = powered(chain_inf=10)
    protocol(p)
    first = tx(p, b"\x02\x80\xca\x00\x19")  # 25 bytes + SW = 27: three blocks
    assert first == b"\x12" + bytes(range(10))
    assert tx(p, b"\xa3") == b"\x13" + bytes(range(10, 20))
    assert tx(p, b"\xa3") == b"\x13" + bytes(range(10, 20))  # same number: sent again
    assert tx(p, b"\xa2") == b"\x02" + bytes(range(20, 25)) + b"\x90\x00"
    assert tx(p, b"\xa2") == b"\x02" + bytes(range(20, 25)) + b"\x90\x00"


def test_chained_command_is_acknowledged_and_assembled():
    p = powered()
    protocol(p)
    assert tx(p, b"\x12\x00\xd6\x00\x00\x04\x01") == b"\xa2"
    assert tx(p, b"\x13\x02\x03") == b"\xa3"
    assert tx(p, b"\x02\x04") == b"\x02\x01\x02\x03\x04\x90\x00"
    assert p.card.apdus == [b"\x00\xd6\x00\x00\x04\x01\x02\x03\x04"]


def test_block_longer_than_fsc_is_ignored():
    p = powered(card(ats=bytes.fromhex("0570804000")))  # FSC 16
    protocol(p)
    assert tx(p, b"\x02" + bytes(14)) is None
    assert tx(p, b"\x02" + bytes(13)) is not None


def test_wtx_then_answer_with_longer_delay():
    p = powered(wtx=[3])
    protocol(p)
    bits, delay = p.receive(pm.to_bits(crc.append_crc_a(b"\x02\x00\xb0\x00\x00")))
    assert pm.from_bits(bits)[0][:2] == b"\xf2\x03"
    assert delay < pm.fwt_us(4)
    bits, delay = p.receive(pm.to_bits(crc.append_crc_a(b"\xf2\x03")))
    assert pm.from_bits(bits)[0][:1] == b"\x02"
    assert pm.fwt_us(4) < delay < 3 * pm.fwt_us(4)
    assert tx(p, b"\xf2\x03") is None  # no answer pending: a stray S(WTX) is ignored


def test_deselect_halts_and_garbage_is_ignored():
    p = powered()
    protocol(p)
    assert p.receive(pm.to_bits(b"\x02\x00\x00\x00")) is None  # bad CRC
    assert p.state == pm.STATE_PROTOCOL
    assert tx(p, b"\xc2") == b"\xc2"
    assert p.state == pm.STATE_HALT


def test_cid_handling():
    p = powered()
    activate(p)
    tx(p, b"\xe0\x53")  # CID 3
    assert tx(p, b"\x02\x00\x00") is None  # no CID: not for this card
    assert tx(p, b"\x0a\x03\x00\x00") == b"\x02\x90\x00"
    assert tx(p, b"\x0b\x04\x00\x00") is None  # someone else's CID


def test_mute_after_and_removed_virtual_card():
    p = powered(mute_after=1)
    protocol(p)
    assert tx(p, b"\x02\x00\x00") is not None
    assert tx(p, b"\x03\x00\x00") is None
    vc = VirtualCard.from_profile("tunion_plain")
    q = powered(vc)
    protocol(q)
    vc.fail_after(ins=0xA4)
    assert tx(q, b"\x02\x00\xa4\x04\x00\x08" + pm.TestCard.AID) is None
    assert not q.present
    assert short(q, pm.WUPA) is None


def tx_at(p, data, kbps):
    got = p.receive(pm.to_bits(crc.append_crc_a(bytes(data))), kbps)
    return None if got is None else pm.from_bits(got[0])[0][:-2]


def test_pps_right_after_the_ats_switches_both_ways():
    p = powered(card(ats=bytes.fromhex("0578b34000")))  # 212 and 424, same D both ways
    assert protocol(p) == bytes.fromhex("0578b34000")
    assert tx(p, b"\xd0\x11\x0a") == b"\xd0"  # DSI 2, DRI 2: answered at 106
    assert p.tx_kbps_used == 106 and (p.rx_kbps, p.tx_kbps) == (424, 424)
    assert tx(p, b"\x02\x00\xb0\x00\x00") is None  # a frame at 106 is noise now
    assert p.rate_errors == 1
    assert tx_at(p, b"\x02\x00\xb0\x00\x00", 424)[:1] == b"\x02"
    assert p.tx_kbps_used == 424
    assert tx_at(p, b"\xc2", 424) == b"\xc2"  # DESELECT answered at 424, then back to 106
    assert (p.rx_kbps, p.tx_kbps) == (106, 106)


def test_pps_refused_when_not_offered_or_not_first():
    for ats, pps1 in (
        ("0578804000", 0x05),  # 106 only
        ("0578b34000", 0x0F),  # 848 not offered
        ("0578b34000", 0x06),  # DS 4, DR 2: TA(1) b8 wants the same D
        ("0205", 0x05),  # no TA(1)
    ):
        p = powered(card(ats=bytes.fromhex(ats)))
        protocol(p)
        assert tx(p, bytes((0xD0, 0x11, pps1))) is None, (ats, pps1)
        assert (p.rx_kbps, p.tx_kbps) == (106, 106)
        assert tx(p, b"\x02\x00\xb0\x00\x00")[:1] == b"\x02"  # still at 106, in protocol
    p = powered(card(ats=bytes.fromhex("0578b34000")))
    protocol(p)
    assert tx(p, b"\x02\x00\xb0\x00\x00")[:1] == b"\x02"
    assert tx(p, b"\xd0\x11\x05") is None  # only as the first block after the ATS
    assert tx(p, b"\xd0\x01") is None
