# mpy: heapsize=128k timeout=120 server=tools.sim.nfc_server params=i2c,spi,hsu
# The PN532 driver over each simulated bus, one run per transport (`params=`): I2C (address
# 0x24, status-byte ready polling), SPI (LSB first, DW/SR/DR) and HSU (wake-up preamble, frames
# reassembled from a byte stream, SetSerialBaudRate); status polling and the IRQ pin. The cases
# every bus shares are in pn532_cases.py; what one bus alone does is marked `@mptest.only`.
import mptest
import pn532_cases as cases
from sim_pin import Pin

BUS = mptest.param()

if BUS == "i2c":
    from pn532_i2c import PN532I2C
    from sim_i2c import SimI2C

    _bus = SimI2C("nfc_i2c")

    def transport(**kw):
        return PN532I2C(_bus, **kw)

    env = cases.Env("i2c", transport, lambda: _bus.transactions)

elif BUS == "spi":
    from pn532_spi import PN532SPI
    from sim_spi import SimSPI

    _bus = SimSPI("nfc_spi")
    _cs = Pin("nfc_cs", Pin.OUT, value=1)

    def transport(**kw):
        return PN532SPI(_bus, _cs, **kw)

    env = cases.Env("spi", transport, lambda: _bus.transactions)

else:
    from counting_uart import CountingUART
    from pn532_uart import PN532UART

    _uart = CountingUART("nfc_hsu", baudrate=115200)

    def transport(**kw):
        return PN532UART(_uart, **kw)

    env = cases.Env("hsu", transport, lambda: _uart.calls)


def setup():
    if BUS == "spi":
        # The simulated Pin keeps every level it was driven to (for tests); status polling
        # toggles chip select thousands of times, so drop that history between tests.
        _cs.history.clear()


# -- what every bus does -------------------------------------------------------------------------


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


@mptest.only("i2c")  # the driver's logic, the same on every bus: run once
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


def test_measure_exchange_cost():
    cases.measure_exchange_cost(env)


@mptest.only("i2c", "spi")
def test_irq_pin_instead_of_status_polling():
    irq = Pin("nfc_%s_irq" % BUS, Pin.IN)
    t = transport(irq=irq)
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


# -- I2C -----------------------------------------------------------------------------------------


@mptest.only("i2c")
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


@mptest.only("i2c")
def test_status_polled_until_ready_without_a_fixed_gap():
    # The simulated chip answers "not ready" for a while after each command (as the chip does
    # while it works): the driver polls the status byte until it is ready, then reads at once.
    t = transport()
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


@mptest.only("i2c")
def test_address_match_wakes_the_chip():
    env.fresh(init=False)
    mptest.true(env.state()["asleep"])
    r = cases.pn532.PN532(transport(), **cases.FAST)
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


@mptest.only("i2c")
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


# -- SPI -----------------------------------------------------------------------------------------


@mptest.only("spi")
def test_msb_first_bus_is_refused_with_typed_errors():
    r = env.fresh()
    _bus.init(baudrate=1000000, firstbit=SimSPI.MSB)  # a board that forgot firstbit
    try:
        mptest.raises(cases.LinkError, r.init)
    finally:
        _bus.init(baudrate=1000000, firstbit=SimSPI.LSB)
    r.init()
    mptest.eq(r.firmware[0], 0x32)


@mptest.only("spi")
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
    r = cases.pn532.PN532(transport(), **cases.FAST)
    mptest.eq(bytes(r.command(0x16, b"\x20")), b"\x00")  # PowerDown, SPI may wake it
    mptest.true(env.state()["asleep"])
    cases.log.clear()
    mptest.eq(r.init()[0], 0x32)
    mptest.eq(cases.log.find("no ACK", cases.log.WARNING), [], "CS held low must wake it")
    mptest.eq(bytes(r.command(0x16, b"\x80")), b"\x00")  # only I2C may wake it
    mptest.raises(cases.LinkTimeout, r.init)
    mptest.true(env.state()["asleep"])


# -- HSU -----------------------------------------------------------------------------------------


@mptest.only("hsu")
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
    r = cases.pn532.PN532(transport(), **cases.FAST)
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


@mptest.only("hsu")
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


@mptest.only("hsu")
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


@mptest.only("hsu")
def test_baud_change_the_chip_missed_falls_back():
    t = transport()
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
