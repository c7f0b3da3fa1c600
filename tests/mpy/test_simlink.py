# mpy: server=tools.sim.selftest_server timeout=60
# The MicroPython side reaches the CPython simulation hub and its control channel.
import mptest
from simlink import Control, SimLink, SimLinkError


def test_control_channel_answers():
    ctl = Control()
    mptest.eq(ctl.call("ping"), "pong")
    e = mptest.raises(SimLinkError, ctl.call, "no_such_command")
    mptest.true("unknown command" in str(e))
    mptest.eq(ctl.call("ping"), "pong")  # a bad command leaves the channel usable


def test_unknown_device_is_refused():
    e = mptest.raises(SimLinkError, SimLink, "i2c", "nothing")
    mptest.true("no device" in str(e))


def _uart_config(key, want):
    # The settings travel on the UART's own socket; this control query travels on another, so
    # it may overtake them: ask until they have arrived (bounded).
    import time

    for _ in range(100):
        got = Control().call("uart_config").get(key)
        if got == want:
            return got
        time.sleep_ms(10)
    return got


def test_sim_uart_round_trip_and_config():
    from sim_uart import SimUART

    uart = SimUART("echo", baudrate=9600, parity=0, stop=2, timeout=500)
    mptest.eq(_uart_config("parity", 0), 0)
    uart.write(b"at\r\n")
    mptest.hex_eq(uart.read(4), b"AT\r\n")
    uart.write(b"line one\nrest")
    mptest.hex_eq(uart.readline(), b"LINE ONE\n")
    mptest.hex_eq(uart.read(4), b"REST")
    uart.init(baudrate=38400)
    mptest.eq(_uart_config("baudrate", 38400), 38400)
    uart.sendbreak()
    mptest.hex_eq(uart.read(7), b"<break>")
    uart.init(timeout=20)
    mptest.eq(uart.read(1), None)  # times out, nothing there
    mptest.eq(uart.any(), 0)


def test_pins_reach_devices_and_back():
    from sim_pin import Pin

    rst = Pin("reset", Pin.OUT, value=1)
    rst.off()
    rst.on()
    mptest.eq(Control().call("reset_edges"), [1, 0, 1])
    irq = Pin("irq", Pin.IN)
    mptest.eq(irq.value(), 0)
    Control().call("drive", name="irq", level=1)
    mptest.eq(irq.value(), 1)


async def test_sim_uart_works_with_asyncio_streams():
    import asyncio

    from sim_uart import SimUART

    uart = SimUART("echo", timeout=0)
    reader = asyncio.StreamReader(uart)
    writer = asyncio.StreamWriter(uart, {})
    writer.write(b"ok\n")
    await writer.drain()
    line = await asyncio.wait_for_ms(reader.readline(), 2000)
    mptest.hex_eq(line, b"OK\n")


def test_sim_i2c_transactions_and_nack():
    from sim_i2c import SimI2C

    i2c = SimI2C("i2c0")
    i2c.writeto(0x50, b"\x02abc")
    mptest.hex_eq(i2c.readfrom_mem(0x50, 0x02, 3), b"abc")
    mptest.eq(i2c.scan(), [0x50])
    e = mptest.raises(OSError, i2c.writeto, 0x51, b"\x00")
    mptest.eq(e.args[0], 19)  # ENODEV, as the ESP32 port raises
    Control().call("i2c_busy", busy=True)
    mptest.raises(OSError, i2c.readfrom, 0x50, 1)
    Control().call("i2c_busy", busy=False)
    mptest.eq(len(i2c.readfrom(0x50, 4)), 4)


def test_sim_spi_exchange_follows_chip_select():
    from sim_pin import Pin
    from sim_spi import SimSPI

    spi = SimSPI("spi2", baudrate=1000000, firstbit=SimSPI.LSB)
    cs = Pin("cs", Pin.OUT, value=1)
    mptest.hex_eq(spi.read(2, 0x00), b"\xff\xff")  # not selected
    cs(0)
    buf = bytearray(3)
    spi.write_readinto(b"\x00\x0f\xff", buf)
    cs(1)
    mptest.hex_eq(buf, b"\xff\xf0\x00")
    state = Control().call("spi_state")
    mptest.eq(state["config"]["firstbit"], "LSB")
    mptest.eq(state["edges"], [False, True, False])
