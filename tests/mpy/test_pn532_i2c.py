# mpy: heapsize=128k timeout=120 server=tools.sim.nfc_server
# The PN532 driver over the simulated I2C bus (address 0x24, status-byte ready polling), and
# with the IRQ pin instead of polling.
import mptest
import pn532_cases as cases
from pn532_i2c import PN532I2C
from sim_i2c import SimI2C
from sim_pin import Pin

_bus = SimI2C("nfc_i2c")
# 1 ms bus-free time keeps the file fast; test_bus_free_time_between_transactions checks 5 ms.
env = cases.Env("i2c", lambda: PN532I2C(_bus, bus_free_ms=1), lambda: _bus.transactions)


def test_init_configures_the_chip():
    cases.init_configures_the_chip(env)


def test_poll_without_card_is_none_and_bounded():
    cases.poll_without_card_is_none_and_bounded(env)


def test_activate_select_read_and_release():
    cases.activate_select_read_and_release(env)


def test_chained_answers_from_the_chip():
    cases.chained_answers_from_the_chip(env)


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


class TimedBus:
    """The simulated bus, noting when each transaction starts and ends."""

    def __init__(self, bus):
        self.bus = bus
        self.spans = []

    def _timed(self, fn, *args):
        t0 = cases.time.ticks_us()
        try:
            return fn(*args)
        finally:
            self.spans.append((t0, cases.time.ticks_us()))

    def writeto(self, addr, buf):
        return self._timed(self.bus.writeto, addr, buf)

    def readfrom_into(self, addr, buf):
        return self._timed(self.bus.readfrom_into, addr, buf)


def test_bus_free_time_between_transactions():
    timed = TimedBus(_bus)
    env.fresh()
    r = cases.pn532.PN532(PN532I2C(timed, bus_free_ms=5), **cases.FAST)
    r.init()
    env.place()
    r.poll()
    r.transceive(cases.SELECT)
    gaps = [
        cases.time.ticks_diff(timed.spans[i + 1][0], timed.spans[i][1])
        for i in range(len(timed.spans) - 1)
    ]
    mptest.log("I2C gaps: %d transactions, shortest %d us" % (len(timed.spans), min(gaps)))
    mptest.true(len(gaps) > 20)
    mptest.true(min(gaps) >= 5000, "bus-free time kept: %d us" % min(gaps))


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
