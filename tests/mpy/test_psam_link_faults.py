# mpy: heapsize=192k timeout=120 server=tools.sim.psam_server
# The T=0 PSAM link (drivers/psam_link.py) against the character-level PSAM simulator: injected
# faults (each a clear error, then a working link after the next reset), wiring, clock, board.
# The protocol itself is in test_psam_link.py.
import log
import mptest
from iso7816 import AtrError
from linkerr import ChipError, LinkTimeout, ProtocolError
from psam_link import PsamLink
from psam_rig import CLK, MARGIN, _links, ctl, link, setup, stats, teardown  # noqa: F401
from sim_pin import PWM, Pin
from sim_uart import SimUART


def each_case(lk):
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")  # case 1
    mptest.hex_eq(lk.transceive(b"\x00\x84\x00\x00\x03")[-2:], b"\x90\x00")  # case 2
    mptest.eq(len(lk.transceive(b"\x00\x84\x00\x00\x03")), 5)
    mptest.hex_eq(lk.transceive(b"\x80\x72\x00\x00\x04\x01\x02\x03\x04"), b"\x90\x00")  # case 3
    mptest.hex_eq(lk.transceive(b"\x80\x72\x00\x00\x04\x00\x00\x00\x00"), b"\x93\x02")
    mptest.hex_eq(lk.transceive(b"\x80\xee\x00\x00\x03abc\x00"), b"abc\x90\x00")  # case 4


def recovers(lk):
    mptest.raises(ChipError, lk.transceive, b"\x80\xe0\x00\x00")  # not until a reset
    lk.reset()
    mptest.hex_eq(lk.transceive(b"\x80\x72\x00\x00\x04\x01\x02\x03\x04"), b"\x90\x00")


def test_atr_faults_give_clear_errors_then_reset_recovers():
    lk = link()
    for kind, params, exc, words in (
        ("no_atr", {}, LinkTimeout, "no ATR"),
        ("late_atr", {"ms": MARGIN + 400}, LinkTimeout, "no ATR"),
        ("corrupt_atr", {}, AtrError, "bad TS"),
        ("short_atr", {}, AtrError, "truncated"),
    ):
        ctl.call("psam_fault", kind=kind, **params)
        e = mptest.raises(exc, lk.reset)
        mptest.true(words in str(e), "%s: %s" % (kind, e))
        mptest.true(log.find("reset failed", log.ERROR), kind)
        recovers(lk)
    ctl.call("psam_config", t1=True)
    ctl.call("psam_fault", kind="corrupt_atr")
    e = mptest.raises(AtrError, lk.reset)
    mptest.true("TCK" in str(e), str(e))
    recovers(lk)


def test_line_faults_give_clear_errors_then_reset_recovers():
    lk = link()
    cmd = b"\x80\x72\x00\x00\x04\x01\x02\x03\x04"
    for kind, params, exc, words in (
        ("garbage", {}, ProtocolError, "unexpected procedure byte 0x00"),
        ("parity", {"to": "reader"}, ProtocolError, "procedure byte 0xf2"),
        ("parity", {"to": "card"}, ProtocolError, "echo differs"),
        ("silence", {"at": "header"}, LinkTimeout, "procedure byte"),
        ("silence", {"at": "data"}, LinkTimeout, "procedure byte"),
    ):
        lk.reset()
        ctl.call("psam_fault", kind=kind, **params)
        e = mptest.raises(exc, lk.transceive, cmd)
        mptest.true(words in str(e), "%s %r: %s" % (kind, params, e))
        mptest.true(log.find("failed", log.ERROR), kind)
        recovers(lk)


def test_echo_wiring_must_match_the_board():
    ctl.call("psam_config", echo=False)
    lk = link(echo=False)
    lk.reset()
    each_case(lk)
    lk = link(echo=True)
    lk.reset()  # the card's PPS answer passes for the echo, then the real answer never comes
    mptest.eq(lk.pps_result, "failed")
    e = mptest.raises(ChipError, lk.transceive, b"\x80\x72\x00\x00\x04\x01\x02\x03\x04")
    mptest.true("1 of 5 echo" in str(e), str(e))


def test_bad_apdus_are_refused_without_dropping_the_link():
    lk = link()
    mptest.raises(ProtocolError, lk.transceive, b"\x80\xe0")  # checked before anything else
    lk.reset()
    for apdu, words in (
        (b"\x80\xe0", "too short"),
        (b"\x80\x72\x00\x00\x04\x01\x02", "does not match Lc"),
        (b"\x80\x72\x00\x00\x00\x01\x00\x01\x01", "extended"),
    ):
        e = mptest.raises(ProtocolError, lk.transceive, apdu)
        mptest.true(words in str(e), str(e))
        mptest.true(log.find(words, log.ERROR), words)
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")


def test_unexpected_status_and_invalid_ins():
    lk = link()
    lk.reset()
    mptest.hex_eq(lk.transceive(b"\x80\x60\x00\x00"), b"\x6d\x00")
    mptest.hex_eq(lk.transceive(b"\x80\x55\x00\x00\x02\x01\x02"), b"\x6d\x00")
    mptest.hex_eq(lk.transceive(b"\x00\xc0\x00\x00\x04"), b"\x69\x85")  # nothing pending


def test_a_late_atr_is_drained_at_the_next_reset():
    import time

    ctl.call("psam_fault", kind="late_atr", ms=MARGIN + 400)
    lk = link()
    mptest.raises(LinkTimeout, lk.reset)
    time.sleep_ms(1500)  # the ATR lands after the driver gave up (400 ms later; a busy machine)
    lk.reset()
    mptest.true(log.find("stale byte", log.WARNING), "stale ATR dropped and logged")
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")


def test_from_board_and_off():
    import board
    from psam_link import from_board

    teardown()
    lk = from_board(board.PSAM, SimUART, Pin, PWM)
    _links.append(lk)
    lk.margin_ms = MARGIN
    mptest.eq((lk.clk_hz, lk.echo, lk.max_baud), (board.PSAM["clk_hz"], True, None))
    lk.reset()
    mptest.eq(lk.baud, 38400)
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")
    lk.off()
    mptest.eq((lk.clk.duty_u16(), lk.rst.value()), (0, 0))
    mptest.raises(ChipError, lk.transceive, b"\x80\xe0\x00\x00")
    lk.reset()
    mptest.eq(lk.clk.duty_u16(), 32768)
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")


class RoundingPWM(PWM):
    """An LEDC-like PWM: 3 571 200 Hz asked, 3 575 419 Hz generated (divider 358/256, 4 bits)."""

    def freq(self, value=None):
        if value is None:
            return 3575419 if self._freq == 3571200 else self._freq
        return PWM.freq(self, value)


def test_bit_rate_follows_the_clock_really_generated():
    teardown()
    uart = SimUART("psam", baudrate=9600, parity=0, stop=2, rxbuf=512)
    lk = PsamLink(uart, Pin("psam_rst", Pin.OUT, value=0), RoundingPWM(Pin("psam_clk")), CLK)
    lk.margin_ms = MARGIN
    _links.append(lk)
    lk.reset()
    mptest.eq((lk.clk_req, lk.clk_hz), (3571200, 3575419))
    mptest.eq(lk.baud, 38445)  # 3 575 419 * 4 / 372, not 38 400
    mptest.true(log.find("3575419 Hz generated"))
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")  # within the card's 2 %
    lk.reset()
    mptest.eq(lk.clk.history[-2:], [(3571200, 0), (3571200, 32768)])  # still asks for the same
