# mpy: heapsize=192k timeout=120 server=tools.sim.psam_server
# The T=0 PSAM link (drivers/psam_link.py) against the character-level PSAM simulator
# (tools/sim/psam_uart.py) through the hub: real driver code on a simulated UART and reset pin.
# The protocol first, then injected faults (each a clear error, then a working link after the next
# reset), wiring, clock, board.
import iso7816
import log
import mptest
from iso7816 import AtrError
from linkerr import ChipError, LinkTimeout, ProtocolError
from psam_link import PsamLink
from psam_rig import CLK, MARGIN, _links, ctl, link, setup, stats, teardown  # noqa: F401
from sim_pin import PWM, Pin
from sim_uart import SimUART


def test_cold_reset_reads_atr_and_negotiates_ta1():
    lk = link()
    atr = lk.reset()
    mptest.eq(atr.ta1, 0x13)
    mptest.hex_eq(atr.hist, b"PSAMSIM")
    mptest.eq((lk.pps_result, lk.baud, lk.d), ("ok", 38400, 4))
    mptest.eq(lk.clk.freq(), CLK)
    mptest.eq(lk.clk.duty_u16(), 32768)
    mptest.eq(lk.rst.history[-2:], [0, 1])
    st = stats()
    mptest.eq((st["pps_ok"], st["baud"], st["config_errors"]), (1, 38400.0, 0))
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")
    mptest.eq(stats()["config_errors"], 0)  # every character sent at the card's settings


def test_pps_picks_the_fastest_rate_the_board_allows():
    ctl.call("psam_config", ta1=0x18)  # D up to 12: 115200 baud at 3.5712 MHz
    lk = link(max_baud=115200)
    lk.reset()
    mptest.eq((lk.baud, lk.d), (115200, 12))
    lk = link(max_baud=57600)
    lk.reset()
    mptest.eq((lk.baud, lk.d), (38400, 4))  # D 8 would be 76800
    lk = link(max_baud=9600)
    lk.reset()
    mptest.eq((lk.pps_result, lk.baud), (None, 9600))
    lk = link(pps=False)
    lk.reset()
    mptest.eq((lk.pps_result, lk.baud), (None, 9600))
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")
    ctl.call("psam_config", ta1=None)
    lk = link()
    lk.reset()
    mptest.eq((lk.pps_result, lk.baud), (None, 9600))
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")


def test_pps_takes_the_fastest_rate_the_uart_generates_within_tolerance():
    # TA1 0x18 offers D 1, 2, 4, 8 and 12. A UART clocked at 1.2 MHz reaches at most 75 000
    # baud (sclk / 16): D 8 and 12 are out of its reach, D 4 (38 400) is exact.
    ctl.call("psam_config", ta1=0x18)
    lk = link(uart_clk_hz=1200000)
    lk.reset()
    mptest.eq((lk.pps_result, lk.baud, lk.d, lk.rate_error_ppm), ("ok", 38400, 4, 0))
    mptest.true(log.find("D 12 (115200 baud) out of the UART's reach", log.INFO), "logged")
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")
    lk = link(uart_clk_hz=2000000)  # 115 200: 16 * 2 MHz / 115 200 = 277.8 -> 277, +0.28 %
    lk.reset()
    mptest.eq((lk.baud, lk.d, lk.rate_error_ppm), (115200, 12, 2808))
    mptest.eq(stats()["config_errors"], 0)
    # The ESP32's 80 MHz APB clock reaches every rate a card offers (docs/psam-link.md, "PPS").
    ctl.call("psam_config", ta1=0x96)  # F 512, D 32: 223 200 baud at 3.5712 MHz
    lk = link()
    lk.reset()
    mptest.eq((lk.baud, lk.d, lk.rate_error_ppm), (223200, 32, 134))
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")


def test_pps_failures_fall_back_to_the_default_rate():
    ctl.call("psam_config", wi=1)  # WWT 960 etu (100 ms) keeps the silent case short
    for how, result, resets in (("silent", "failed", 2), ("mismatch", "failed", 2)):
        ctl.call("psam_clear")
        ctl.call("psam_app", name="standin")
        ctl.call("psam_fault", kind="pps_refuse", how=how)
        lk = link()
        lk.reset()
        mptest.eq((lk.pps_result, lk.baud), (result, 9600), how)
        mptest.eq(stats()["resets"], resets, how)
        mptest.hex_eq(lk.transceive(b"\x00\x84\x00\x00\x04"), b"\x01\x02\x03\x04\x90\x00")
        mptest.true(log.find("cold reset at the default rate", log.WARNING), how)
        mptest.eq(lk.clk.history[-2:], [(CLK, 0), (CLK, 32768)], "clock restarted: " + how)
    ctl.call("psam_clear")
    ctl.call("psam_fault", kind="pps_refuse", how="default")
    lk = link()
    lk.reset()
    mptest.eq((lk.pps_result, lk.baud, stats()["resets"]), ("default", 9600, 1))
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")


def each_case(lk):
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")  # case 1
    mptest.hex_eq(lk.transceive(b"\x00\x84\x00\x00\x03")[-2:], b"\x90\x00")  # case 2
    mptest.eq(len(lk.transceive(b"\x00\x84\x00\x00\x03")), 5)
    mptest.hex_eq(lk.transceive(b"\x80\x72\x00\x00\x04\x01\x02\x03\x04"), b"\x90\x00")  # case 3
    mptest.hex_eq(lk.transceive(b"\x80\x72\x00\x00\x04\x00\x00\x00\x00"), b"\x93\x02")
    mptest.hex_eq(lk.transceive(b"\x80\xee\x00\x00\x03abc\x00"), b"abc\x90\x00")  # case 4


def test_each_t0_case_with_each_procedure_style():
    for how in ("ack", "single", "mixed"):
        ctl.call("psam_config", procedure=how)
        lk = link()
        lk.reset()
        each_case(lk)
    cmds = stats()["commands"]
    mptest.true("00c0000003" in cmds, "case 4 fetched with GET RESPONSE: %r" % cmds)


def test_6cxx_resends_with_the_right_le():
    lk = link()
    lk.reset()
    resp = lk.transceive(b"\x00\xb0\x96\x00\x08")  # the terminal number is 6 bytes
    mptest.hex_eq(resp, bytes.fromhex("0100000000019000"))
    mptest.eq(stats()["commands"][-2:], ["00b0960008", "00b0960006"])
    resp = lk.transceive(b"\x00\xb0\x96\x00\x00")  # Le 00 (256) too
    mptest.hex_eq(resp, bytes.fromhex("0100000000019000"))


def test_get_response_chains_past_256_bytes():
    lk = link()
    lk.reset()
    body = bytes(range(200))
    resp = lk.transceive(b"\x80\xec\x03\x00\xc8" + body + b"\x00")
    mptest.eq(len(resp), 602)
    mptest.hex_eq(resp[:600], body * 3)
    mptest.hex_eq(resp[-2:], b"\x90\x00")
    mptest.eq(stats()["commands"][-3:], ["00c0000000", "00c0000000", "00c0000058"])


def test_null_bytes_extend_the_work_waiting_time():
    ctl.call("psam_config", wi=1, nulls=4, null_ms=160)  # 640 ms of NULLs, WWT 100 ms + margin
    lk = link()
    lk.reset()
    mptest.eq(lk.wwt_ms, 100 + MARGIN)
    resp = lk.transceive(b"\x80\x70\x00\x00\x24" + bytes(36) + b"\x08")
    mptest.eq(len(resp), 10)
    mptest.eq(lk.nulls, 4)
    mptest.eq(stats()["nulls"], 4)
    lk2 = link(busy_ms=300)  # a card that stays busy too long is given up on
    lk2.reset()
    e = mptest.raises(LinkTimeout, lk2.transceive, b"\x80\x70\x00\x00\x24" + bytes(36))
    mptest.true("busy" in str(e), str(e))
    mptest.raises(ChipError, lk2.transceive, b"\x80\xe0\x00\x00")
    lk2.reset()
    mptest.hex_eq(lk2.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")


def test_silence_beyond_wwt_times_out():
    ctl.call("psam_config", wi=1, nulls=1, null_ms=MARGIN + 600)  # beyond WWT 100 ms + margin
    lk = link()
    lk.reset()
    e = mptest.raises(LinkTimeout, lk.transceive, b"\x80\x70\x00\x00\x24" + bytes(36))
    mptest.true("procedure byte" in str(e) or "SW" in str(e), str(e))


def test_inverse_convention():
    ctl.call("psam_config", inverse=True, ta1=0x96)  # Fi 512, Di 32: 223200 baud
    lk = link(max_baud=250000)
    atr = lk.reset()
    mptest.true(lk.inverse and atr.inverse)
    mptest.eq(atr.raw[0], 0x3F)
    mptest.eq((lk.pps_result, lk.baud), ("ok", 223200))
    mptest.eq(lk.uart.parity, 1)  # odd, as a direct UART sees inverse-convention parity
    each_case(lk)
    st = stats()
    mptest.eq(st["config_errors"], 0)
    mptest.eq(st["parity_errors_out"], len(atr.raw))  # only the ATR, before the switch


def test_atr_with_tck_and_t1_offer():
    ctl.call("psam_config", t1=True, wi=2)
    lk = link()
    atr = lk.reset()
    mptest.eq(atr.protocols, [0, 1])
    mptest.true(atr.tck is not None)
    mptest.eq(atr.wi, 2)
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")


def purchase(lk):
    init = b"\x80\x70\x00\x00\x24" + bytes(range(36)) + b"\x08"
    resp = lk.transceive(init)
    mptest.eq((len(resp), resp[-2:]), (10, b"\x90\x00"))
    mptest.hex_eq(lk.transceive(b"\x80\x72\x00\x00\x04\x01\x02\x03\x04"), b"\x90\x00")


def test_purchase_bytes_and_modelled_line_time():
    # INIT SAM FOR PURCHASE (36 in, 8 out through 61 08 + GET RESPONSE) + CREDIT SAM (4 in).
    i_tx, i_rx = iso7816.t0_chars(36, 8)
    c_tx, c_rx = iso7816.t0_chars(4)
    want_tx, want_rx = i_tx + c_tx, i_rx + c_rx
    mptest.eq((want_tx, want_rx), (55, 17))
    for pps, baud in ((False, 9600), (True, 38400)):
        lk = link(pps=pps)
        lk.reset()
        lk.reset_stats()
        ctl.call("psam_clear")
        purchase(lk)
        mptest.eq((lk.chars_tx, lk.chars_rx), (want_tx, want_rx))
        st = stats()
        mptest.eq((st["chars_in"], st["chars_out"]), (want_tx, want_rx))
        mptest.eq(lk.baud, baud)
        model = iso7816.line_time_us(want_tx + want_rx, baud)
        mptest.between(lk.line_us, model - 10, model + 10)
        mptest.log(
            "purchase PSAM exchanges: %d chars to PSAM, %d from it, %d us line time at %d baud"
            % (lk.chars_tx, lk.chars_rx, lk.line_us, baud)
        )
    import gc

    lk = link()
    lk.reset()
    purchase(lk)  # warm up: first-call allocations (strings, bound methods) out of the way
    gc.collect()
    before = gc.mem_alloc()
    purchase(lk)
    used = gc.mem_alloc() - before
    # Includes the simulated UART's own framing (SimUART copies every frame); a regression guard.
    mptest.log("heap allocated by one purchase's PSAM exchanges: %d bytes" % used)
    mptest.between(used, 0, 16000)
    for baud in (115200, 223200):
        mptest.log(
            "model: %d us at %d baud" % (iso7816.line_time_us(want_tx + want_rx, baud), baud)
        )


def test_specific_mode_takes_ta1_without_pps():
    ctl.call("psam_config", ta1=0x13, ta2=0x00)
    lk = link()
    atr = lk.reset()
    mptest.true(atr.specific)
    mptest.eq((lk.pps_result, lk.baud, stats()["pps_ok"]), (None, 38400, 0))
    each_case(lk)
    mptest.eq(stats()["config_errors"], 0)
    lk = link(max_baud=19200)
    e = mptest.raises(ChipError, lk.reset)
    mptest.true("fixed at 38400" in str(e), str(e))
    ctl.call("psam_config", ta2=0x10)  # implicit parameters: the default rate here
    lk = link()
    lk.reset()
    mptest.eq(lk.baud, 9600)
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")


def test_random_lengths_and_procedure_styles():
    import random

    random.seed(6)
    lk = None
    how = None
    for i in range(24):
        if i % 8 == 0:
            how = ("ack", "single", "mixed")[i // 8]
            ctl.call("psam_config", procedure=how)
            lk = link()
            lk.reset()
        n = random.getrandbits(8) or 1
        data = bytes(random.getrandbits(8) for _ in range(n))
        resp = lk.transceive(b"\x80\xee\x00\x00" + bytes((n,)) + data + b"\x00")
        mptest.hex_eq(resp, data + b"\x90\x00", "lc %d %s" % (n, how))
    mptest.eq(stats()["config_errors"], 0)


# -- faults, wiring, clock, board -------------------------------------------------------------


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
