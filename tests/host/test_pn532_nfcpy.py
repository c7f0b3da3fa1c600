"""nfcpy, a PN532 host nobody here wrote, drives the simulated chip over its HSU on a pty.

nfcpy's ``tty:`` path (nfc.clf.device.connect) lists /dev and cannot name /dev/pts/N, so the
test does what that path does: ``transport.TTY(port)``, ``pn532.init(tty)`` (wake-up with ten
zeros, GetFirmwareVersion, SAMConfiguration, maybe SetSerialBaudRate, Diagnose line test,
SetParameters 00, every RFConfiguration item), then ContactlessFrontend.sense, Type 4
activation (RATS and ISO-DEP blocks through InCommunicateThru) and the T-Union SELECT. Closing
puts the chip into PowerDown; the next open must wake it.
"""

import logging

import nfc
import nfc.clf
import nfc.clf.pn532
import nfc.tag
import pytest
from nfc.clf import transport

from tools.sim.card import VirtualCard
from tools.sim.field import Field, SimpleApduCard
from tools.sim.pn532_pty import PtyPN532

TUNION_AID = bytes.fromhex("A000000632010105")
SELECT = b"\x00\xa4\x04\x00\x08" + TUNION_AID


@pytest.fixture
def chip():
    c = PtyPN532(field=Field())
    yield c
    c.close()


# The simulated chip answers in its own thread of this process: a machine busy with other work
# can hold it past nfcpy's 100 ms ACK wait. nfcpy's waits are stretched, its protocol untouched.
STRETCH = 20


class PatientTTY(transport.TTY):
    def read(self, timeout):
        return super().read(timeout * STRETCH if timeout else timeout)


def open_clf(chip):
    """nfcpy's tty: open, on the pty."""
    tty = PatientTTY(chip.port)
    device = nfc.clf.pn532.init(tty)
    device._path = chip.port
    clf = nfc.ContactlessFrontend()
    clf.device = device
    return clf


def test_nfcpy_opens_the_chip_senses_activates_and_selects(chip, caplog):
    caplog.set_level(logging.DEBUG, logger="nfc")
    card = VirtualCard.from_profile("tunion_plain")
    chip.field.add(card)
    clf = open_clf(chip)
    try:
        assert str(clf.device).startswith("PN532v1.6")
        state = chip.state()
        assert not state["asleep"] and not state["low_vbat"] and state["params"] == 0x00
        assert state["retries"] == [0x01, 0x00, 0x01]  # RFConfiguration 05 taken
        target = clf.sense(nfc.clf.RemoteTarget("106A"))
        assert target is not None and bytes(target.sdd_res) == card.uid
        assert bytes(target.sel_res) == bytes((card.sak,))
        # nfcpy asked without auto-RATS: the chip returned no ATS and runs no ISO-DEP itself.
        assert chip.state()["iso_dep_targets"] == []
        tag = nfc.tag.activate(clf, target)
        assert type(tag).__name__ == "Type4ATag"
        answer = tag.transceive(SELECT)
        assert answer[-2:] == b"\x90\x00" and answer[:2] == b"\x6f\x3e"  # the FCI
        assert chip.state()["stats"]["commands"]["42"] >= 2  # RATS + the I-block, thru
        assert [a["apdu"] for a in card.audit if "apdu" in a] == [SELECT]
        assert card.summary()["violations"] == []
    finally:
        clf.close()
    assert "error" not in caplog.text.lower()
    assert chip.state()["asleep"] and chip.state()["wake_sources"] == 0xB0  # I2C, SPI, HSU
    # PowerDown on close; the next open's preamble of zeros wakes it again.
    clf = open_clf(chip)
    try:
        assert clf.sense(nfc.clf.RemoteTarget("106A")) is not None
        assert chip.state()["stats"]["wakeups"] == 2
    finally:
        clf.close()


def test_nfcpy_with_no_card_and_with_a_card_that_leaves(chip):
    clf = open_clf(chip)
    try:
        # No answer to the poll: nfcpy looks for the REQA still in the CIU FIFO.
        assert clf.sense(nfc.clf.RemoteTarget("106A")) is None
        assert chip.state()["stats"]["commands"]["06"] >= 1
        card = SimpleApduCard()
        chip.field.add(card)
        tag = nfc.tag.activate(clf, clf.sense(nfc.clf.RemoteTarget("106A")))
        assert tag.transceive(SELECT)[-2:] == b"\x90\x00"
        before = chip.state()["clock_us"]
        chip.field.remove(card)
        with pytest.raises(nfc.tag.TagCommandError):
            tag.transceive(SELECT)
        # Each frame nobody answered cost the RF timeout nfcpy set for it.
        assert chip.state()["clock_us"] > before
    finally:
        clf.close()
