# mpy: heapsize=128k timeout=120 server=tools.sim.psam_server
# The split exchange of the PSAM link (transceive_start / transceive_finish, docs/psam-link.md):
# the command leaves, the PSAM computes while the caller talks to the card, the answer is
# collected afterwards. Driver against the character-level PSAM simulator through the hub.
import time

import log
import mptest
from linkerr import ChipError, LinkTimeout, ProtocolError
from psam_rig import CLK, MARGIN, ctl, setup, stats, teardown  # noqa: F401
from psam_rig import link as _rig_link

INIT = b"\x80\x70\x00\x00\x24" + bytes(range(36)) + b"\x08"


def link(**kw):
    lk = _rig_link(**kw)
    lk.reset()
    return lk


def answer_waits(lk):
    """Wait (bounded) until the PSAM's status sits in the UART's buffer, unasked for."""
    for _ in range(400):
        if lk.uart.any():
            return True
        time.sleep_ms(5)
    return False


def test_start_sends_everything_and_the_answer_waits_for_finish():
    lk = link()
    want = lk.transceive(INIT)  # the whole exchange in one call, for comparison
    mptest.eq(len(want), 10)
    lk.reset_stats()
    lk.transceive_start(INIT)
    # Header and the 36 data bytes are out; the driver has not read the status yet.
    mptest.eq((lk.chars_tx, lk.chars_rx), (5 + 36, 1))
    mptest.true(answer_waits(lk), "the PSAM answered while the caller was away")
    resp = lk.transceive_finish()
    mptest.eq(len(resp), 10)
    mptest.hex_eq(resp[-2:], b"\x90\x00")
    mptest.eq(resp[:4], (int.from_bytes(want[:4], "big") + 1).to_bytes(4, "big"))  # next serial
    mptest.hex_eq(resp[4:8], want[4:8])  # same MAC1 for the same data
    # GET RESPONSE for the 8 bytes went in finish: 46 characters out, 14 in, as transceive().
    mptest.eq((lk.chars_tx, lk.chars_rx), (46, 14))
    mptest.eq(stats()["commands"][-2:], ["8070000024", "00c0000008"])
    mptest.eq(stats()["config_errors"], 0)


def test_split_each_case_and_procedure_style():
    for how in ("ack", "single", "mixed"):
        ctl.call("psam_config", procedure=how)
        lk = link()
        for apdu, want in (
            (b"\x80\xe0\x00\x00", b"\x90\x00"),  # case 1
            (b"\x00\xb0\x96\x00\x06", bytes.fromhex("0100000000019000")),  # case 2
            (b"\x00\xb0\x96\x00\x08", bytes.fromhex("0100000000019000")),  # case 2, 6Cxx
            (b"\x80\x72\x00\x00\x04\x01\x02\x03\x04", b"\x90\x00"),  # case 3
            (b"\x80\x72\x00\x00\x04\x00\x00\x00\x00", b"\x93\x02"),
            (b"\x80\xee\x00\x00\x03abc\x00", b"abc\x90\x00"),  # case 4
        ):
            lk.transceive_start(apdu)
            mptest.hex_eq(lk.transceive_finish(), want)
        mptest.eq(len(lk.transceive(INIT)), 10, how)


def test_refusal_right_after_the_header_is_kept_for_finish():
    lk = link()
    # INS 0x6D is invalid: the card answers 6D00 instead of a procedure byte, data never sent.
    lk.reset_stats()
    lk.transceive_start(b"\x80\x6d\x00\x00\x02\x01\x02")
    mptest.eq(lk.chars_tx, 5)  # the header alone
    mptest.hex_eq(lk.transceive_finish(), b"\x6d\x00")
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")


def test_nulls_sent_meanwhile_are_read_in_finish():
    ctl.call("psam_config", wi=1, nulls=3, null_ms=120)  # each gap longer than the 100 ms WWT
    lk = link()
    lk.transceive_start(INIT)
    time.sleep_ms(200)
    resp = lk.transceive_finish()
    mptest.eq(len(resp), 10)
    mptest.eq(lk.nulls, 3)


def test_misuse_is_refused_clearly():
    lk = link()
    e = mptest.raises(ChipError, lk.transceive_finish)
    mptest.true("no command started" in str(e), str(e))
    mptest.raises(ProtocolError, lk.transceive_start, b"\x80\x72\x00\x00\x04\x01")
    mptest.hex_eq(lk.transceive(b"\x80\xe0\x00\x00"), b"\x90\x00")  # the link stayed up
    # A command started and never collected is finished (answer dropped) before the next one.
    lk.transceive_start(INIT)
    mptest.hex_eq(lk.transceive(b"\x80\x72\x00\x00\x04\x01\x02\x03\x04"), b"\x90\x00")
    mptest.true(log.find("never collected", log.WARNING), "the dropped answer is logged")
    mptest.raises(ChipError, lk.transceive_finish)  # nothing pending any more
    lk.off()
    e = mptest.raises(ChipError, lk.transceive_start, INIT)
    mptest.true("not reset" in str(e), str(e))


def test_a_card_gone_silent_fails_in_finish_and_reset_recovers():
    ctl.call("psam_config", wi=1)
    lk = link()
    ctl.call("psam_fault", kind="silence", at="data")  # procedure byte, then nothing
    lk.transceive_start(b"\x80\x72\x00\x00\x04\x01\x02\x03\x04")
    e = mptest.raises(LinkTimeout, lk.transceive_finish)
    mptest.true("procedure byte" in str(e), str(e))
    mptest.true(log.find("failed", log.ERROR), "logged")
    mptest.raises(ChipError, lk.transceive_start, INIT)  # not until a reset
    mptest.raises(ChipError, lk.transceive_finish)
    lk.reset()
    lk.transceive_start(INIT)
    mptest.eq(len(lk.transceive_finish()), 10)
    # The same silence after the header: start itself fails, finish has nothing to collect.
    ctl.call("psam_fault", kind="silence", at="header")
    mptest.raises(LinkTimeout, lk.transceive_start, INIT)
    mptest.raises(ChipError, lk.transceive_finish)


def test_header_ahead_then_data_gives_the_same_answer():
    lk = link()
    want = lk.transceive(INIT)
    lk.reset_stats()
    lk.transceive_header(INIT[:5])
    # The header is out; its echo and the PSAM's procedure byte wait in the UART's buffer.
    mptest.eq((lk.chars_tx, lk.chars_rx), (5, 0))
    mptest.true(answer_waits(lk), "the procedure byte came while the caller was away")
    lk.transceive_start(INIT)  # the same header: only the data go
    mptest.eq((lk.chars_tx, lk.chars_rx), (5 + 36, 1))
    resp = lk.transceive_finish()
    mptest.eq(resp[:4], (int.from_bytes(want[:4], "big") + 1).to_bytes(4, "big"))
    mptest.hex_eq(resp[4:8], want[4:8])  # same MAC1 for the same data
    mptest.eq(lk.apdus, 1)  # the 8070 counted once (its GET RESPONSE is part of it)
    mptest.eq(stats()["commands"][-2:], ["8070000024", "00c0000008"])
    mptest.eq(stats()["config_errors"], 0)


def test_header_ahead_whose_data_never_come_is_completed_and_the_psam_stays_clean():
    lk = link()
    serial = int.from_bytes(lk.transceive(INIT)[:4], "big")
    # The sale stops (the card refused INITIALIZE): finish completes the command with zeros.
    lk.transceive_header(INIT[:5])
    resp = lk.transceive_finish()
    # This simulator takes any data (the virtual PSAM of the purchase tests refuses key
    # version 0 with 6A88): a serial is used, as by a sale that stops after its 8070.
    mptest.hex_eq(resp[-2:], b"\x90\x00")
    mptest.eq(int.from_bytes(resp[:4], "big"), serial + 1)
    mptest.eq(stats()["commands"][-2:], ["8070000024", "00c0000008"])
    mptest.true(lk.ready, "the link stays up")
    # The PSAM is in step: the next 8070 answers with the next serial.
    mptest.eq(int.from_bytes(lk.transceive(INIT)[:4], "big"), serial + 2)
    # Another command after a header sent ahead: the first is completed (logged), then it.
    lk.transceive_header(INIT[:5])
    mptest.hex_eq(lk.transceive(b"\x80\x72\x00\x00\x04\x01\x02\x03\x04"), b"\x90\x00")
    mptest.true(log.find("never collected", log.WARNING), "the completed header is logged")
    mptest.eq(int.from_bytes(lk.transceive(INIT)[:4], "big"), serial + 4)
    # A header for another 8070 with other data than announced still goes through whole.
    lk.transceive_header(b"\x80\x72\x00\x00\x04")
    mptest.eq(len(lk.transceive(INIT)), 10)
    e = mptest.raises(ProtocolError, lk.transceive_header, b"\x80\x70\x00\x00\x00")
    mptest.true("Lc > 0" in str(e), str(e))
    mptest.eq(len(lk.transceive(INIT)), 10)  # a bad header is refused, the link stays up


def test_echo_of_deferred_characters_is_checked_before_anything_else():
    # The data's echo is read in finish: a character the PSAM rejected fails the command there,
    # before its status is believed.
    lk = link()
    ctl.call("psam_fault", kind="parity", to="card", skip=1)  # the header passes, the data not
    lk.transceive_start(INIT)
    e = mptest.raises(ProtocolError, lk.transceive_finish)
    mptest.true("echo differs" in str(e), str(e))
    mptest.false(lk.ready, "a reset is needed")
    lk.reset()
    # A header sent ahead whose echo is wrong fails when its data go.
    ctl.call("psam_fault", kind="parity", to="card")
    lk.transceive_header(INIT[:5])
    e = mptest.raises(ProtocolError, lk.transceive_start, INIT)
    mptest.true("echo differs" in str(e), str(e))
    mptest.raises(ChipError, lk.transceive_finish)
    lk.reset()
    mptest.eq(len(lk.transceive(INIT)), 10)
