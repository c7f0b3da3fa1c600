# mpy: heapsize=128k timeout=120 server=tools.sim.nfc_server
# The PN532 driver over the simulated SPI bus (LSB first, DW/SR/DR), with status polling and
# with the IRQ pin.
import mptest
import pn532_cases as cases
from pn532_spi import PN532SPI
from sim_pin import Pin
from sim_spi import SimSPI

_bus = SimSPI("nfc_spi")
_cs = Pin("nfc_cs", Pin.OUT, value=1)
env = cases.Env("spi", lambda: PN532SPI(_bus, _cs), lambda: _bus.transactions)


def setup():
    # The simulated Pin keeps every level it was driven to (for tests); status polling toggles
    # chip select thousands of times, so drop that history between tests.
    _cs.history.clear()


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


def test_msb_first_bus_is_refused_with_typed_errors():
    r = env.fresh()
    _bus.init(baudrate=1000000, firstbit=SimSPI.MSB)  # a board that forgot firstbit
    try:
        mptest.raises(cases.LinkError, r.init)
    finally:
        _bus.init(baudrate=1000000, firstbit=SimSPI.LSB)
    r.init()
    mptest.eq(r.firmware[0], 0x32)


def test_irq_pin_instead_of_status_polling():
    irq = Pin("nfc_spi_irq", Pin.IN)
    t = PN532SPI(_bus, _cs, irq=irq)
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


def test_chip_select_wakes_the_chip():
    class NoWake(PN532SPI):
        def wake(self):
            pass

    env.fresh(init=False)
    mptest.true(env.state()["asleep"])
    r = cases.pn532.PN532(NoWake(_bus, _cs), **cases.FAST)
    # The chip-select edge of the first frame wakes the chip and that window is lost: no ACK;
    # the frame sent again is taken.
    mptest.eq(r.init()[0], 0x32)
    mptest.true(cases.log.find("no ACK for command 14", cases.log.WARNING), "no resend")
    r = cases.pn532.PN532(PN532SPI(_bus, _cs), **cases.FAST)
    mptest.eq(bytes(r.command(0x16, b"\x20")), b"\x00")  # PowerDown, SPI may wake it
    mptest.true(env.state()["asleep"])
    cases.log.clear()
    mptest.eq(r.init()[0], 0x32)
    mptest.eq(cases.log.find("no ACK", cases.log.WARNING), [], "CS held low must wake it")
    mptest.eq(bytes(r.command(0x16, b"\x80")), b"\x00")  # only I2C may wake it
    mptest.raises(cases.LinkTimeout, r.init)
    mptest.true(env.state()["asleep"])
