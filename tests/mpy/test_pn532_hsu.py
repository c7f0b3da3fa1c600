# mpy: heapsize=128k timeout=120 server=tools.sim.nfc_server
# The PN532 driver over the simulated HSU (UART): wake-up preamble, frames reassembled from a byte
# stream, and SetSerialBaudRate.
import mptest
import pn532_cases as cases
from pn532_uart import PN532UART
from sim_uart import SimUART


class CountingUART(SimUART):
    """Counts the driver's writes and reads (the figure a UART 'transaction' stands for here)."""

    calls = 0

    def write(self, data):
        self.calls += 1
        return SimUART.write(self, data)

    def readinto(self, buf, n=None):
        self.calls += 1
        return SimUART.readinto(self, buf, n)


_uart = CountingUART("nfc_hsu", baudrate=115200)
env = cases.Env("hsu", lambda: PN532UART(_uart), lambda: _uart.calls)


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


def test_chip_sleeps_until_the_wake_up_preamble():
    class NoWake(PN532UART):
        def wake(self):
            pass

    env.fresh(init=False)
    mptest.true(env.state()["asleep"])
    r = cases.pn532.PN532(NoWake(_uart), **cases.FAST)
    # Without a preamble the first frame only wakes the chip (its head is lost while the chip
    # starts): no ACK; the frame sent again is taken.
    mptest.eq(r.init()[0], 0x32)
    mptest.true(cases.log.find("no ACK for command 14", cases.log.WARNING), "no resend")
    mptest.eq(env.state()["stats"]["wakeups"], 1)
    # PowerDown with HSU among the wake-up sources: the driver's preamble wakes it.
    r = cases.pn532.PN532(PN532UART(_uart), **cases.FAST)
    mptest.eq(bytes(r.command(0x16, b"\x10")), b"\x00")
    mptest.true(env.state()["asleep"])
    cases.log.clear()
    mptest.eq(r.init()[0], 0x32)
    mptest.eq(cases.log.find("no ACK", cases.log.WARNING), [], "preamble too short")
    mptest.eq(env.state()["stats"]["wakeups"], 2)
    # PowerDown with only SPI as a wake-up source: nothing on the UART wakes it.
    mptest.eq(bytes(r.command(0x16, b"\x20")), b"\x00")
    mptest.raises(cases.LinkTimeout, r.init)
    mptest.true(env.state()["asleep"])


def test_truncated_frame_is_noticed_by_the_quiet_line_and_fetched_again():
    r = env.fresh()
    env.place()
    r.poll()
    nacks = env.state()["stats"]["nacks_from_host"]
    env.fault("truncate")
    t0 = cases.time.ticks_ms()
    mptest.eq(r.transceive(cases.SELECT)[-2:], b"\x90\x00")
    mptest.between(cases.time.ticks_diff(cases.time.ticks_ms(), t0), 0, 400, "no timeout wait")
    mptest.eq(env.stat("nacks_from_host", nacks + 1), nacks + 1)
    env.fault("garbage", length=40)  # no frame at all: the exchange times out, typed
    mptest.raises(cases.LinkTimeout, r.transceive, cases.SELECT)
    mptest.true(r.poll() is not None)
    mptest.eq(r.transceive(cases.SELECT)[-2:], b"\x90\x00")


def test_set_serial_baudrate():
    r = env.fresh()
    try:
        mptest.raises(ValueError, r.set_serial_baudrate, 12345)
        mptest.true(r.set_serial_baudrate(921600))
        mptest.eq(env.state()["baud"], 921600)
        mptest.eq(_uart.baudrate, 921600)
        env.place()
        mptest.true(r.poll() is not None)
        mptest.eq(r.transceive(cases.SELECT)[-2:], b"\x90\x00")
        env.remove()
        cases.measure_exchange_cost(env, r)
        # The chip back at power-on speed while the host stays fast: typed timeouts, no hang.
        env.call("pn532_reset")
        mptest.raises(cases.LinkError, r.init)
    finally:
        _uart.init(baudrate=115200)
    mptest.eq(r.init()[0], 0x32)


def test_baud_change_the_chip_missed_falls_back():
    t = PN532UART(_uart)
    env.fresh(init=False)
    r = cases.pn532.PN532(t, **cases.FAST)
    r.init()
    env.fault("lose_host_ack")  # the chip never hears the ACK that makes it switch
    try:
        mptest.false(r.set_serial_baudrate(460800))
        mptest.eq((t.baudrate, env.state()["baud"]), (115200, 115200))
        mptest.true(cases.log.find("back to 115200", cases.log.WARNING))
    finally:
        _uart.init(baudrate=115200)
    env.place()
    mptest.true(r.poll() is not None)


def test_measure_exchange_cost():
    cases.measure_exchange_cost(env)
