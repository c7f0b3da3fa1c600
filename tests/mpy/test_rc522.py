# mpy: heapsize=128k timeout=120 server=tools.sim.rc522_server
# The RC522 driver against the MFRC522 simulator at the SPI level: activation of 4/7/10-byte
# UIDs, two cards at once, T=CL edge cases, faults from the chip and the card.
import log
import mptest
from linkerr import CardGone, ChipError, LinkError, ProtocolError
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


# -- chip set-up and the empty field -----------------------------------------------------------


def test_empty_field_polls_none_and_chip_is_set_up():
    mptest.eq(rd.poll(), None)
    mptest.eq(rd.version, 0x92)
    st = state()
    mptest.true(st["antenna"], "antenna left off")
    mptest.eq(st["errors"], [])


def test_wrong_spi_mode_is_a_chip_error():
    spi = SimSPI("rc522", baudrate=4000000, firstbit=SimSPI.LSB)
    bad = RC522(spi, _cs())
    try:
        e = mptest.raises(ChipError, bad.poll)
        mptest.true("not answering" in str(e), str(e))
    finally:
        rd.spi.init(baudrate=4000000)  # the simulated bus keeps the last settings sent


# -- ISO 14443-3 activation ---------------------------------------------------------------------


def test_activate_4_byte_uid_iso_dep():
    t = active_card(uid="04a1b2c3")
    mptest.hex_eq(t.uid, bytes.fromhex("04a1b2c3"))
    mptest.eq(t.kind, "A")
    mptest.eq(t.sak, 0x20)
    mptest.true(t.iso_dep)
    mptest.hex_eq(t.ats, bytes.fromhex("0578804000"))
    mptest.hex_eq(t.atqa, b"\x00\x04")  # MSB first, as the PN532 driver
    mptest.eq(state()["cards"]["card"]["state"], "protocol")


def test_activate_7_byte_uid():
    t = active_card(uid="04112233445566")
    mptest.hex_eq(t.uid, bytes.fromhex("04112233445566"))
    mptest.hex_eq(t.atqa, b"\x00\x44")
    mptest.eq(t.sak, 0x20)


def test_activate_10_byte_uid():
    t = active_card(uid="0811223344556677889a")
    mptest.hex_eq(t.uid, bytes.fromhex("0811223344556677889a"))
    mptest.true(t.iso_dep)


def test_non_iso_dep_card_is_found_but_refuses_apdus():
    t = active_card(uid="a1b2c3d4", sak=0x08, iso_dep=False, ats="")
    mptest.false(t.iso_dep)
    mptest.hex_eq(t.ats, b"")
    mptest.raises(CardGone, rd.transceive, SELECT)
    mptest.true(rd.present())  # halted, woken and selected again by its UID
    rd.release()
    mptest.eq(state()["cards"]["card"]["state"], "halt")


def test_bad_ats_or_silent_rats_is_logged_and_polls_none():
    place(ats="0778")  # TL says 7 bytes, 2 come
    mptest.eq(rd.poll(), None)
    mptest.true(log.find("ATS length", log.WARNING), str(log.recent(4)))
    ctl.call("rc522_clear")
    place(sak=0x20, iso_dep=False)  # claims ISO 14443-4 in its SAK, ignores RATS
    mptest.eq(rd.poll(), None)
    mptest.true(log.find("activation failed", log.WARNING))
    ctl.call("rc522_clear")
    place()
    mptest.true(rd.poll() is not None, "no recovery after a failed activation")


def test_sfgt_is_waited_after_the_ats():
    import time

    place(ats="0320" + "48")  # TB1: FWI 4, SFGI 8 -> SFGT 77 ms
    t0 = time.ticks_ms()
    t = rd.poll()
    took = time.ticks_diff(time.ticks_ms(), t0)
    mptest.true(t is not None)
    mptest.true(took >= 77, "SFGT not waited: %d ms" % took)
    mptest.eq(rd.isodep.ats.sfgi, 8)


def _two_cards(uid_a, uid_b):
    place("a", uid=uid_a)
    place("b", uid=uid_b)
    seen = []
    for _ in range(2):
        t = rd.poll()
        mptest.true(t is not None, "a card was lost in the collision")
        seen.append(t.uid)
        mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")
        rd.release()  # DESELECT: that card halts, the next poll finds the other one
    mptest.eq(rd.poll(), None)
    return sorted(seen)


def test_two_cards_4_byte_collision_resolved():
    got = _two_cards("11223344", "11223355")
    mptest.eq(got, sorted([bytes.fromhex("11223344"), bytes.fromhex("11223355")]))


def test_two_cards_collide_in_first_bit_and_at_level_two():
    got = _two_cards("04000001", "05000001")
    mptest.eq(got, sorted([bytes.fromhex("04000001"), bytes.fromhex("05000001")]))
    # same cascade level 1 (CT + 3 bytes), they differ only at level 2
    got = _two_cards("04112233445566", "04112233445567")
    mptest.eq(got, sorted([bytes.fromhex("04112233445566"), bytes.fromhex("04112233445567")]))


def test_two_cards_with_10_byte_uids_differing_in_the_last_bit():
    a, b = "0811223344556677889a", "0811223344556677889b"
    got = _two_cards(a, b)
    mptest.eq(got, sorted([bytes.fromhex(a), bytes.fromhex(b)]))


def test_4_and_7_byte_cards_together():
    got = _two_cards("2a3b4c5d", "04aabbccddeeff")
    mptest.eq(got, sorted([bytes.fromhex("2a3b4c5d"), bytes.fromhex("04aabbccddeeff")]))


def _every_card(uids, irq_pin=False):
    # Each poll resolves the collisions and activates one card; DESELECT halts it, so the
    # next poll finds another, until none answers REQA.
    for i, uid in enumerate(uids):
        place("c%d" % i, uid=uid)
    reader = rd
    if irq_pin:
        reader = RC522(SimSPI("rc522", baudrate=4000000), _cs(), irq=Pin("rc522_irq", Pin.IN))
    seen = []
    try:
        for _ in range(len(uids) + 1):
            t = reader.poll()
            if t is None:
                break
            seen.append(t.uid.hex())
            mptest.hex_eq(reader.transceive(SELECT)[-2:], b"\x90\x00")
            reader.release()
    finally:
        reader.release()
    mptest.eq(sorted(seen), sorted(uids), "cards found")
    mptest.eq(log.find("", log.WARNING), [], "activation failures logged")


def test_three_4_byte_cards_colliding_inside_a_byte():
    # 0x11/0x13 collide at bit 1; after choosing 1 the next round runs with RxAlign 2 and
    # 13223340/13223341 collide at bit 24: CollPos 25 counted from the byte, not 23.
    _every_card(["11223340", "13223340", "13223341"])


def test_collisions_inside_bytes_with_err_irq_at_the_end_of_the_frame():
    ctl.call("rc522_chip", coll_irq="end")
    _every_card(["11223340", "13223340", "13223341", "1b223340"])


def test_err_irq_at_the_collision_with_the_irq_pin():
    ctl.call("rc522_chip", coll_irq_reads=3)
    _every_card(["11223340", "13223340", "13223341"], irq_pin=True)


def test_7_byte_cards_colliding_inside_bytes_at_level_two():
    # Same CL1 (88 04 11 22); CL2 33 44 55 60, 33 46 55 60, 33 46 55 61, 33 46 d5 61
    _every_card(["04112233445560", "04112233465560", "04112233465561", "0411223346d561"])


def test_10_byte_cards_colliding_inside_bytes_at_levels_two_and_three():
    _every_card(
        [
            "08112233445561778899",
            "08112233445563778899",
            "08112233445563778898",
            "081122334455e3778898",
            "0811223344dd63778898",
        ]
    )


def test_4_7_and_10_byte_cards_together():
    _every_card(
        [
            "13223340",
            "13223341",
            "04112233445560",
            "04112233465561",
            "0811223344dd63778898",
            "08112233445563778899",
        ]
    )


def test_halted_card_stays_quiet_until_it_leaves():
    active_card()
    rd.release()
    mptest.eq(rd.poll(), None, "a halted card answered REQA")
    rd.wakeup = True
    try:
        mptest.true(rd.poll() is not None, "WUPA must wake a halted card")
    finally:
        rd.wakeup = False
    ctl.call("rc522_remove", name="card")
    place()
    mptest.true(rd.poll() is not None)


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


# -- garbage and a failing chip -----------------------------------------------------------------


def test_garbage_and_truncated_answers_never_crash():
    place()
    kinds = ("garbage", "truncate", "corrupt_resp", "parity_resp", "overflow", "lose_resp")
    for round_ in range(12):
        for at in range(6):
            ctl.call("rc522_fault", kind=kinds[(round_ + at) % len(kinds)], at=at, arg=round_ % 5)
        try:
            t = rd.poll()
            if t is not None:
                rd.transceive(SELECT)
        except LinkError:
            pass  # typed errors are the contract; anything else fails the test
        rd.release()
    ctl.call("rc522_clear")
    place()
    t = rd.poll()
    mptest.true(t is not None, "the driver did not recover after garbage")
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")


def test_random_register_values_never_crash():
    # A garbled bus: register reads return noise for a while (IRQ bits, FIFO levels, FIFO
    # contents, error bits, collision positions all random), at activation and in exchanges.
    place()
    errors = {}
    found = 0

    def count(fn, *args):
        try:
            return fn(*args)
        except LinkError as e:
            name = type(e).__name__
            errors[name] = errors.get(name, 0) + 1

    rd.wakeup = True  # the card is halted after each release: wake it every round
    try:
        for n in range(24):
            t = count(rd.poll)  # clean unless the chip is re-initialised under noise
            ctl.call("rc522_fault", kind="noise", arg=3 + 7 * n)
            if t is not None:
                found += 1
                count(rd.transceive, SELECT)
            rd.present()
            count(rd.poll)  # activation itself under noise
            rd.release()
            ctl.call("rc522_fault", kind="noise", arg=0)
    finally:
        rd.wakeup = False
    mptest.log("typed errors under noise: %r, card found %d/24" % (errors, found))
    mptest.true(found >= 6, "the noise never reached an activated card")
    ctl.call("rc522_clear")
    place()
    t = rd.poll()
    mptest.true(t is not None, "no recovery after a garbled bus")
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")


def test_stuck_chip_is_chip_error_and_next_poll_recovers():
    active_card()
    ctl.call("rc522_fault", kind="stuck")
    mptest.raises(ChipError, rd.transceive, SELECT)
    t = rd.poll()  # soft reset + field reset: the card powers up afresh
    mptest.true(t is not None and t.iso_dep)
    mptest.hex_eq(rd.transceive(SELECT)[-2:], b"\x90\x00")


def test_dead_chip_raises_chip_error_until_it_returns():
    ctl.call("rc522_fault", kind="dead")
    mptest.raises(ChipError, rd.poll)
    mptest.raises(ChipError, rd.poll)
    ctl.call("rc522_fault", kind="alive")
    place()
    mptest.true(rd.poll() is not None)


# -- cost ---------------------------------------------------------------------------------------


def test_spi_cost_of_activation_select_and_reads():
    mptest.eq(rd.poll(), None)  # chip initialised and field clean before counting
    place()
    ctl.call("rc522_counters_reset")
    t = rd.poll()
    mptest.true(t is not None)
    act = state()["spi"]
    ctl.call("rc522_counters_reset")
    rd.transceive(SELECT)
    rd.transceive(b"\x00\xb2\x01\xbc\x00")
    rd.transceive(b"\x80\xca\x00\x20")
    ex = state()["spi"]
    mptest.log("activation: %d SPI transactions, %d bytes" % (act["transactions"], act["bytes"]))
    mptest.log("SELECT + 2 reads: %d transactions, %d bytes" % (ex["transactions"], ex["bytes"]))
    # REQA, anticollision, SELECT, RATS: 8 per frame, plus 4 to set the timer for the ATS
    mptest.eq(act["transactions"], 4 * 8 + 4)
    mptest.eq(ex["transactions"], 3 * 8 + 4)


def test_irq_pin_instead_of_polling():
    irq = Pin("rc522_irq", Pin.IN)
    spi = SimSPI("rc522", baudrate=4000000)
    withirq = RC522(spi, _cs(), irq=irq)
    try:
        mptest.eq(withirq.poll(), None)  # init programs the IRQ enables; empty field
        mptest.eq(irq.value(), 0, "TimerIRq of the empty poll must pull the line low")
        place()
        t = withirq.poll()
        mptest.true(t is not None and t.iso_dep)
        mptest.hex_eq(withirq.transceive(b"\x80\xca\x01\x00")[-2:], b"\x90\x00")
        ctl.call("rc522_fault", kind="stuck")
        ctl.call("rc522_counters_reset")
        mptest.raises(ChipError, withirq.transceive, SELECT)
        mptest.eq(irq.value(), 1, "a stuck chip never pulls the line")
        # 6 to start the frame and one status read after the deadline: no SPI polling
        mptest.eq(state()["spi"]["transactions"], 7)
        t = withirq.poll()
        mptest.true(t is not None, "no recovery with the IRQ pin")
    finally:
        withirq.release()
