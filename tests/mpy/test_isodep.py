# mpy: heapsize=64k timeout=60
# ISO 14443-4 block protocol (drivers/isodep.py) against a scripted link: every frame the reader
# sends is checked and every answer (or failure) is chosen, so each rule and error path is pinned.
import mptest
from isodep import Ats, IsoDep, fsdi_for, fwt_us
from isodep_script import ATS, Script, activated, h  # noqa: F401
from linkerr import CardGone, ChipError, LinkTimeout, ProtocolError

# -- ATS and timing ------------------------------------------------------------------------------


def test_ats_fields_and_defaults():
    a = Ats(ATS)
    mptest.eq(
        (a.fsci, a.fsc, a.fwi, a.sfgi, a.ta1, a.cid, a.nad), (8, 256, 4, 0, 0x80, False, False)
    )
    a = Ats(b"\x01")  # TL only: every default
    mptest.eq((a.fsc, a.fwi, a.sfgi), (32, 4, 0))
    a = Ats(h("0425b368"))  # FSCI 5, TB1 only (no TA1): FWI 11, SFGI 3; one historical byte
    mptest.eq((a.fsc, a.fwi, a.sfgi, a.ta1, a.historical), (64, 11, 3, None, b"h"))
    a = Ats(h("044203f0"))  # TC1 without TB1: CID and NAD, FWI stays default
    mptest.eq((a.fsc, a.fwi, a.cid, a.nad), (32, 4, True, True))
    mptest.eq(Ats(h("0320ff")).fwi, 4)  # RFU FWI 15 falls back to 4, SFGI 15 to 0
    mptest.eq(Ats(h("0320ff")).sfgi, 0)


def test_malformed_ats_is_protocol_error():
    for bad in (b"", h("05788040"), h("0278"), h("0370aa"), h("0280")):
        mptest.raises(ProtocolError, Ats, bad)


def test_fwt_and_fsdi():
    mptest.eq(fwt_us(0), 302)
    mptest.eq(fwt_us(4), 4832)
    mptest.between(fwt_us(14), 4948000, 4950000)
    mptest.eq(fsdi_for(64), 5)
    mptest.eq(fsdi_for(256), 8)
    mptest.eq(fsdi_for(20), 0)


def test_rats_asks_fsd_64_and_is_retried_once():
    link = Script(("e050", LinkTimeout), ("e050", ATS))
    dep = IsoDep(link, 64)
    mptest.hex_eq(dep.activate(), ATS)
    link = Script(("e050", LinkTimeout), ("e050", ProtocolError))
    mptest.raises(ProtocolError, IsoDep(link, 64).activate)


def test_exchange_uses_fwt_from_ats():
    dep, link = activated(("0200a4", h("029000")), ats=h("0325b3"))  # FWI 11
    mptest.hex_eq(dep.exchange(h("00a4")), h("9000"))
    mptest.between(link.timeouts[1], fwt_us(11), fwt_us(11) + 4000)


# -- I-blocks, chaining ---------------------------------------------------------------------------


def test_block_numbers_toggle():
    dep, link = activated(("0201", h("0290")), ("0302", h("0391")), ("0203", h("0292")))
    mptest.hex_eq(dep.exchange(b"\x01"), b"\x90")
    mptest.hex_eq(dep.exchange(b"\x02"), b"\x91")
    mptest.hex_eq(dep.exchange(b"\x03"), b"\x92")
    link.done()


def test_tx_chaining_splits_at_fsc():
    # FSCI 0: 16-byte frames, so 13 bytes of INF each.
    apdu = bytes(range(30))
    dep, link = activated(
        ("12" + apdu[:13].hex(), h("a2")),
        ("13" + apdu[13:26].hex(), h("a3")),
        ("02" + apdu[26:].hex(), h("029000")),
        ats=h("0570804000"),
    )
    mptest.hex_eq(dep.exchange(apdu), h("9000"))
    link.done()


def test_rx_chaining_acks_each_block():
    dep, link = activated(("0200", h("12aaaa")), ("a3", h("13bbbb")), ("a2", h("02cc9000")))
    mptest.hex_eq(dep.exchange(b"\x00"), h("aaaabbbbcc9000"))
    link.done()
    mptest.eq(dep.pni, 1)


def test_wrong_block_number_or_type_is_protocol_error():
    dep, _ = activated(("0200", h("039000")))
    mptest.raises(ProtocolError, dep.exchange, b"\x00")
    dep, _ = activated(("12" + "00" * 13, h("a3")), ats=h("0570804000"))
    mptest.raises(ProtocolError, dep.exchange, bytes(14))  # R(ACK) with the wrong number
    dep, _ = activated(("0200", h("a2")))
    mptest.raises(ProtocolError, dep.exchange, b"\x00")  # R(ACK) to an unchained block
    dep, _ = activated(("0200", h("c2")))
    mptest.raises(ProtocolError, dep.exchange, b"\x00")  # DESELECT from the card


# -- recovery ------------------------------------------------------------------------------------


def test_timeout_then_rnak_gets_the_answer_again():
    dep, link = activated(("0200", LinkTimeout), ("b2", h("029000")))
    mptest.hex_eq(dep.exchange(b"\x00"), h("9000"))
    mptest.eq(dep.naks, 1)
    link.done()


def test_damaged_answer_then_rnak():
    dep, link = activated(("0200", ProtocolError), ("b2", h("029000")))
    mptest.hex_eq(dep.exchange(b"\x00"), h("9000"))
    link.done()


def test_card_missed_the_block_so_it_is_sent_again():
    dep, link = activated(("0200", LinkTimeout), ("b2", h("a3")), ("0200", h("029000")))
    mptest.hex_eq(dep.exchange(b"\x00"), h("9000"))
    mptest.eq(dep.resent, 1)
    link.done()


def test_lost_chained_block_asked_again_with_rack():
    dep, link = activated(("0200", h("12aa")), ("a3", LinkTimeout), ("a3", h("03bb")))
    mptest.hex_eq(dep.exchange(b"\x00"), h("aabb"))
    link.done()


def test_invalid_pcb_counts_as_a_damaged_frame():
    dep, link = activated(("0200", h("b3")), ("b2", h("ff")), ("b2", h("029000")))
    mptest.hex_eq(dep.exchange(b"\x00"), h("9000"))
    link.done()


def test_retries_are_bounded_then_card_gone():
    dep, link = activated(
        ("0200", LinkTimeout), ("b2", LinkTimeout), ("b2", LinkTimeout), ("b2", LinkTimeout)
    )
    e = mptest.raises(CardGone, dep.exchange, b"\x00")
    mptest.true("3 retries" in str(e), str(e))
    link.done()


def test_chip_error_is_not_retried():
    dep, link = activated(("0200", ChipError))
    mptest.raises(ChipError, dep.exchange, b"\x00")
    link.done()


def test_rack_with_other_number_while_receiving_chain_is_protocol_error():
    dep, _ = activated(("0200", h("12aa")), ("a3", LinkTimeout), ("a3", h("a2")))
    mptest.raises(ProtocolError, dep.exchange, b"\x00")


def test_an_empty_frame_from_the_link_is_retried_not_a_crash():
    # Found by the RC522 fuzzer: b"" from the link reached resp[0] in the retry path.
    dep, link = activated(("0200a4", b""), ("b2", h("029000")))
    mptest.hex_eq(dep.exchange(h("00a4")), h("9000"))
    mptest.eq(dep.naks, 1)
