# mpy: heapsize=96k timeout=120 server=tools.sim.rc522_server
# Bit rates above 106 kbit/s on the RC522 (docs/nfc-rc522.md "Bit rates"): a PPS to the fastest
# rate the card's ATS offers, TxModeReg/RxModeReg/ModWidthReg set to match, and the simulator
# losing every frame sent or answered at the wrong rate.
import log
import mptest
from linkerr import LinkError
from rc522 import RC522
from sim_pin import Pin
from sim_spi import SimSPI
from simlink import Control

AID = bytes.fromhex("A000000632010105")
SELECT = b"\x00\xa4\x04\x00\x08" + AID
ATS_424 = "0578b34000"  # TA(1) b3: same D both ways, DS and DR 2 and 4 (212, 424 kbit/s)
ATS_106 = "0578804000"  # TA(1) 80: 106 kbit/s only (the T-Union profiles' kind)
ctl = None


class _NoHistory:
    def append(self, level):
        pass


def reader(**kw):
    pin = Pin("rc522_cs", Pin.OUT, value=1)
    pin.history = _NoHistory()
    return RC522(SimSPI("rc522", baudrate=4000000, polarity=0, phase=0), pin, **kw)


def setup():
    global ctl
    if ctl is None:
        ctl = Control()
    ctl.call("rc522_clear")
    log.set_level(log.INFO, echo=False)
    log.clear()


def card(name="card"):
    return ctl.call("rc522_state")["cards"][name]


def test_pps_to_424_when_the_ats_offers_it():
    ctl.call("rc522_place", name="card", ats=ATS_424)
    rd = reader()
    t = rd.poll()
    mptest.true(t is not None and t.iso_dep)
    c = card()
    mptest.eq((c["kbps"], c["pps"]), ([424, 424], 1))
    mptest.eq(rd._rate, 2)
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
    mptest.eq((card()["rate_errors"], ctl.call("rc522_state")["rate_errors"]), (0, 0))
    rd.release()  # DESELECT at 424; the card is back at 106
    mptest.eq(card()["kbps"], [106, 106])
    # The next poll finds it at 106 again (the chip goes back first) and asks again.
    ctl.call("rc522_place", name="card", ats=ATS_424)
    mptest.true(rd.poll() is not None)
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
    mptest.eq(card()["pps"], 1)


def test_max_kbps_caps_the_rate_and_106_cards_get_no_pps():
    ctl.call("rc522_place", name="card", ats=ATS_424)
    rd = reader(max_kbps=212)
    rd.poll()
    mptest.eq(card()["kbps"], [212, 212])
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
    rd.release()
    for ats in (ATS_106, "0578b04000", "0578034000", "0205"):  # 106, DS only, DR only, no TA
        ctl.call("rc522_place", name="card", ats=ats)
        rd = reader()
        mptest.true(rd.poll() is not None, ats)
        mptest.eq((card()["kbps"], card()["pps"], rd._rate), ([106, 106], 0, 0), ats)
        mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
        rd.release()
    rd = reader(max_kbps=106)
    ctl.call("rc522_place", name="card", ats=ATS_424)
    rd.poll()
    mptest.eq(card()["pps"], 0)


def test_a_pps_the_card_never_heard_leaves_both_at_106():
    ctl.call("rc522_place", name="card", ats=ATS_424)
    rd = reader()
    # REQA, ANTICOLLISION, SELECT, RATS, then the PPS: lost on its way to the card.
    ctl.call("rc522_fault", kind="lose_cmd", at=4)
    mptest.true(rd.poll() is not None)
    mptest.eq((card()["pps"], rd._rate, rd.pps_refused), (0, 0, 1))
    mptest.true(log.find("not answered", log.WARNING), "logged")
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")  # a PPS comes first or never


def test_frames_at_the_wrong_rate_are_lost():
    # The card switched but its PPS answer was lost: the chip stays at 106 while the card
    # listens at 424. Every exchange fails (a typed error), and the next poll recovers.
    ctl.call("rc522_place", name="card", ats=ATS_424)
    rd = reader()
    ctl.call("rc522_fault", kind="lose_resp", at=4)
    mptest.true(rd.poll() is not None)
    mptest.eq((card()["kbps"], rd._rate), ([424, 424], 0))
    mptest.raises(LinkError, rd.transceive, SELECT)
    mptest.true(card()["rate_errors"] > 0, "the card heard frames at 106 as noise")
    ctl.call("rc522_place", name="card", ats=ATS_424)  # field reset brings it back
    mptest.true(rd.poll() is not None)
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
    # A chip set for a rate with the wrong pause width reaches no card either.
    rd._write(0x24, 0x26)  # ModWidth of 106 while sending at 424
    mptest.raises(LinkError, rd.transceive, SELECT)
    mptest.true(ctl.call("rc522_state")["rate_errors"] > 0)
