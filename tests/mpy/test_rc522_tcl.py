# mpy: heapsize=96k timeout=120 server=tools.sim.rc522_server
# The RC522 driver against the MFRC522 simulator at the SPI level: activation of 4/7/10-byte
# UIDs, two cards at once, T=CL edge cases, faults from the chip and the card.
# This file: ISO 14443-4 exchanges (chaining, WTX, R(NAK) recovery, lost cards).
import log
import mptest
from linkerr import CardGone, LinkError, ProtocolError
from rc522 import RC522
from sim_pin import Pin
from sim_spi import SimSPI
from simlink import Control

AID = bytes.fromhex("A000000632010105")
SELECT = b"\x00\xa4\x04\x00\x08" + AID
ctl = None
rd = None


class _NoHistory:
    # sim_pin keeps every level change; chip select toggles thousands of times here.
    def append(self, level):
        pass


def _cs():
    pin = Pin("rc522_cs", Pin.OUT, value=1)
    pin.history = _NoHistory()
    return pin


def _reader():
    spi = SimSPI("rc522", baudrate=4000000, polarity=0, phase=0)
    return RC522(spi, _cs())


def setup():
    global ctl, rd
    if ctl is None:
        ctl = Control()
        rd = _reader()
    ctl.call("rc522_clear")
    rd.release()
    log.clear()


def place(name="card", **kw):
    ctl.call("rc522_place", name=name, **kw)


def state(**kw):
    return ctl.call("rc522_state", **kw)


def card_apdus(name="card"):
    st = state()
    card = st["cards"].get(name) or st["removed"].get(name)
    return card["apdus"]


def active_card(**kw):
    place(**kw)
    t = rd.poll()
    mptest.true(t is not None, "no card found")
    return t


# -- ISO 14443-4 exchanges ----------------------------------------------------------------------


def test_select_and_reads():
    active_card()
    resp = rd.transceive(SELECT)
    mptest.hex_eq(resp, b"\x6f\x0a\x84\x08" + AID + b"\x90\x00")
    resp = rd.transceive(b"\x80\xca\x00\x20")
    mptest.hex_eq(resp, bytes(range(32)) + b"\x90\x00")
    mptest.true(rd.present())
    mptest.eq(len(card_apdus()), 2)


def test_chained_256_byte_answer():
    active_card()
    resp = rd.transceive(b"\x80\xca\x01\x00")
    mptest.eq(len(resp), 258)
    mptest.hex_eq(resp[:256], bytes(i & 0xFF for i in range(256)))
    mptest.hex_eq(resp[-2:], b"\x90\x00")
    blocks = state(blocks=True)["cards"]["card"]["blocks"]
    sent = [b for d, b in blocks if d == "picc"]
    mptest.true(len(sent) >= 5, "a 258-byte answer in 61-byte blocks needs 5 blocks")
    mptest.true(all(len(b) // 2 <= 62 for b in sent), "card sent a block above FSD")


def test_chained_command_to_small_fsc_card():
    # FSCI 0: the card takes 16-byte frames, so a 200-byte APDU goes in 13-byte pieces.
    active_card(ats="0570804000")
    data = bytes((i * 7) & 0xFF for i in range(200))
    apdu = b"\x00\xd6\x00\x00\xc8" + data
    resp = rd.transceive(apdu)
    mptest.hex_eq(resp, data + b"\x90\x00")
    mptest.hex_eq(bytes.fromhex(card_apdus()[0]), apdu)


def test_wtx_extends_the_timer_for_that_exchange_only():
    t = active_card(wtx=[3, 5])
    mptest.true(t.iso_dep)
    ctl.call("rc522_counters_reset")
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
    ctl.call("rc522_knobs", name="card", wtx=[])
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
    timers = state()["timers"]
    # FWI 4 (ATS TB1 0x40): FWT 4.83 ms; WTXM 3 and 5 scale it for the S(WTX) answers only.
    fwt = 4832
    mptest.eq(len(timers), 4, str(timers))
    mptest.between(timers[0], fwt, fwt + 4000)
    mptest.between(timers[1], 3 * fwt, 3 * fwt + 4000)
    mptest.between(timers[2], 5 * fwt, 5 * fwt + 4000)
    mptest.between(timers[3], fwt, fwt + 4000)
    mptest.eq(rd.isodep.wtx, 2)
    mptest.eq(len(card_apdus()), 2)


def test_lost_answer_recovered_by_rnak_without_running_twice():
    active_card()
    ctl.call("rc522_fault", kind="lose_resp", at=0)
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
    mptest.eq(len(card_apdus()), 1, "the card ran the command twice")
    mptest.eq(rd.isodep.naks, 1)


def test_lost_command_is_sent_again():
    active_card()
    ctl.call("rc522_fault", kind="lose_cmd", at=0)
    mptest.hex_eq(rd.transceive(b"\x80\xca\x00\x10")[-2:], b"\x90\x00")
    mptest.eq(len(card_apdus()), 1)
    mptest.eq(rd.isodep.resent, 1)


def test_damaged_frames_in_a_chain_are_recovered():
    active_card()
    # Second block of the chained answer: corrupted (CRC), then a parity error, then lost.
    ctl.call("rc522_fault", kind="corrupt_resp", at=1)
    ctl.call("rc522_fault", kind="parity_resp", at=2)
    ctl.call("rc522_fault", kind="lose_resp", at=4)
    resp = rd.transceive(b"\x80\xca\x01\x00")
    mptest.hex_eq(resp[:256], bytes(i & 0xFF for i in range(256)))
    mptest.eq(len(card_apdus()), 1)


def test_lost_frames_in_a_chained_command():
    active_card(ats="0570804000")
    ctl.call("rc522_fault", kind="lose_cmd", at=1)
    ctl.call("rc522_fault", kind="lose_resp", at=3)
    data = bytes(range(60))
    resp = rd.transceive(b"\x00\xd6\x00\x00\x3c" + data)
    mptest.hex_eq(resp, data + b"\x90\x00")
    mptest.eq(len(card_apdus()), 1)


def test_card_that_stops_answering_mid_chain_is_card_gone():
    active_card(mute_after=3)
    e = mptest.raises(CardGone, rd.transceive, b"\x80\xca\x01\x00")
    mptest.true("retries" in str(e), str(e))
    mptest.eq(rd.target, None, "a gone card stays the target")
    mptest.true(log.find("exchange failed", log.WARNING))
    # The next poll recovers: field reset, the card (still there, now answering) comes back.
    ctl.call("rc522_knobs", name="card", mute_after=None)
    t = rd.poll()
    mptest.true(t is not None and t.iso_dep, "no recovery after a mid-chain loss")
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")


def test_card_removed_during_exchange():
    active_card()
    ctl.call("rc522_fault", kind="remove", at=0)
    mptest.raises(CardGone, rd.transceive, SELECT)
    mptest.false(rd.present())
    mptest.eq(rd.target, None)
    mptest.eq(rd.poll(), None)


def test_second_card_appearing_does_not_disturb_the_first():
    active_card(name="a", uid="01020304")
    place("b", uid="0a0b0c0d")
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
    mptest.hex_eq(rd.transceive(b"\x80\xca\x01\x00")[-2:], b"\x90\x00")
    mptest.eq(len(card_apdus("b")), 0)
    rd.release()
    t = rd.poll()
    mptest.hex_eq(t.uid, bytes.fromhex("0a0b0c0d"))


def test_oversized_answer_is_a_protocol_error_then_recovers():
    active_card(ignore_fsd=True)
    e = mptest.raises(LinkError, rd.transceive, b"\x80\xca\x00\x80")
    mptest.true(isinstance(e, (CardGone, ProtocolError)), repr(e))
    ctl.call("rc522_knobs", name="card", ignore_fsd=False)
    mptest.true(rd.poll() is not None)
    mptest.eq(len(rd.transceive(b"\x80\xca\x00\x80")), 130)


def test_long_fwt_uses_the_coarse_timer():
    # FWI 14: FWT 4.95 s, beyond the 25 us tick's 1.64 s, so the 604 us tick is used.
    active_card(ats="0320e0")
    ctl.call("rc522_counters_reset")
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
    timers = state()["timers"]
    mptest.eq(len(timers), 1)
    mptest.between(timers[0], 4948951 + 3625, 4948951 + 3625 + 700)


def test_lost_ats_fails_the_poll_and_the_next_poll_recovers():
    place()
    ctl.call("rc522_fault", kind="lose_resp", at=3)  # REQA, anticollision, SELECT, RATS
    mptest.eq(rd.poll(), None)
    mptest.true(log.find("activation failed", log.WARNING))
    t = rd.poll()
    mptest.true(t is not None and t.iso_dep, "no recovery after a lost ATS")
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")


def test_card_silent_during_a_chained_command_never_runs_it():
    active_card(ats="0570804000", mute_after=3)  # FSC 16: 200 bytes need 16 blocks
    mptest.raises(CardGone, rd.transceive, b"\x00\xd6\x00\x00\xc8" + bytes(200))
    mptest.eq(card_apdus(), [], "a half-received command must not run")
