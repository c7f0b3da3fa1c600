# mpy: heapsize=128k timeout=120 server=tools.sim.nfc_server
# The PN532 driver over the simulated I2C bus (address 0x24, status-byte ready polling), and
# with the IRQ pin instead of polling.
import mptest
import pn532_cases as cases
from pn532_i2c import PN532I2C
from sim_i2c import SimI2C
from sim_pin import Pin

_bus = SimI2C("nfc_i2c")
env = cases.Env("i2c", lambda: PN532I2C(_bus), lambda: _bus.transactions)


def test_init_configures_the_chip():
    cases.init_configures_the_chip(env)


def test_poll_without_card_is_none_and_bounded():
    cases.poll_without_card_is_none_and_bounded(env)


def test_activate_select_read_and_release():
    cases.activate_select_read_and_release(env)


def test_chained_answers_from_the_chip():
    cases.chained_answers_from_the_chip(env)


def test_bit_rate_from_the_ats():
    cases.bit_rate_from_the_ats(env)


def test_bit_rate_failures():
    cases.bit_rate_failures(env)


def test_type_b_where_the_firmware_allows():
    cases.type_b_where_the_firmware_allows(env)


def test_damaged_and_lost_frames_are_recovered():
    cases.damaged_and_lost_frames_are_recovered(env)


def test_failures_are_typed_and_the_next_command_works():
    cases.failures_are_typed_and_the_next_command_works(env)


def test_card_leaving_between_exchanges():
    cases.card_leaving_between_exchanges(env)


def test_card_leaving_mid_chain():
    cases.card_leaving_mid_chain(env)


def test_second_card_appearing():
    cases.second_card_appearing(env)


def test_blocked_poll_is_cancelled():
    cases.blocked_poll_is_cancelled(env)


def test_mifare_card_is_not_iso_dep():
    cases.mifare_card_is_not_iso_dep(env)


def test_busy_chip_nacking_its_address_is_tolerated():
    r = env.fresh()
    env.place()
    r.poll()
    env.fault("nack_bus", count=3)
    mptest.eq(r.transceive(cases.SELECT)[-2:], b"\x90\x00")
    env.fault("nack_bus", count=50)  # never comes back: a typed error, not a hang
    mptest.raises(cases.ChipError, r.transceive, cases.SELECT)
    env.call("pn532_clear_faults")
    mptest.true(r.poll() is not None)


def test_status_polled_until_ready_without_a_fixed_gap():
    # The simulated chip answers "not ready" for a while after each command (as the chip does
    # while it works): the driver polls the status byte until it is ready, then reads at once.
    t = PN532I2C(_bus)
    env.fresh()
    r = cases.pn532.PN532(t, **cases.FAST)
    r.init()
    env.place()
    mptest.true(r.poll() is not None)
    before = env.state()["stats"].get("not_ready", 0)
    mptest.eq(r.transceive(cases.SELECT)[-2:], b"\x90\x00")
    busy = env.state()["stats"].get("not_ready", 0) - before
    mptest.true(busy >= 1, "the chip said not ready %d time(s)" % busy)
    mptest.true(t.not_ready >= busy, "the driver saw each of them: %d" % t.not_ready)
    # A chip that is never ready gives up at the caller's deadline with a timeout.
    env.fault("slow", ms=cases.SLOWER_THAN_FAST_MS)  # beyond FAST's exchange timeout
    mptest.raises(cases.LinkTimeout, r.transceive, cases.SELECT)


def test_irq_pin_instead_of_status_polling():
    irq = Pin("nfc_i2c_irq", Pin.IN)
    t = PN532I2C(_bus, irq=irq)
    env.fresh()
    r = cases.pn532.PN532(t, **cases.FAST)
    r.init()
    mptest.true(env.state()["irq_enabled"])
    env.place()
    mptest.true(r.poll() is not None)
    mptest.eq(r.transceive(cases.SELECT)[-2:], b"\x90\x00")
    env.fault("slow", ms=50)
    mptest.eq(r.transceive(cases.SELECT)[-2:], b"\x90\x00")
    env.fault("drop_response")
    mptest.raises(cases.LinkTimeout, r.transceive, cases.SELECT)


def test_measure_exchange_cost():
    cases.measure_exchange_cost(env)


def test_address_match_wakes_the_chip():
    env.fresh(init=False)
    mptest.true(env.state()["asleep"])
    r = cases.pn532.PN532(PN532I2C(_bus), **cases.FAST)
    # The chip stretches SCL while it wakes on its address, then takes the frame: no resend.
    mptest.eq(r.init()[0], 0x32)
    mptest.eq(cases.log.find("no ACK", cases.log.WARNING), [])
    mptest.eq(env.state()["stats"]["i2c_wakes"], 1)
    mptest.eq(bytes(r.command(0x16, b"\x80")), b"\x00")  # PowerDown, I2C may wake it
    mptest.true(env.state()["asleep"])
    mptest.eq(r.init()[0], 0x32)
    mptest.eq(env.state()["stats"]["i2c_wakes"], 2)
    mptest.eq(bytes(r.command(0x16, b"\x10")), b"\x00")  # only HSU may wake it: NACKs
    mptest.raises(cases.ChipError, r.init)
    mptest.true(env.state()["asleep"])


def test_a_card_that_left_is_reported_after_the_rf_timeout():
    # The chip only knows the card is gone when its RF timeout (index 0D: 409.6 ms) runs out;
    # with time_scale 1 it waits that long for real, and the driver's default exchange
    # timeout still gets status 01 (CardGone), not a LinkTimeout.
    r = env.fresh(exchange_timeout_ms=1500)
    env.call("pn532_config", time_scale=1.0)
    try:
        env.place()
        mptest.true(r.poll() is not None)
        env.remove()
        before = env.state()["clock_us"]
        mptest.raises(cases.CardGone, r.transceive, cases.SELECT)
        mptest.eq(env.state()["clock_us"] - before, 409_600)
    finally:
        env.call("pn532_config", time_scale=0)
