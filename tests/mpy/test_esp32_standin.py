# mpy: server=tools.sim.esp32_bench heapsize=256k timeout=180
# The strict stand-ins of the ESP32 port themselves (tests/mpy/esp32_machine.py, esp32_module.py):
# they refuse what MicroPython v1.27 on the module refuses (or what the module cannot do), and
# behave as the port does where the firmware relies on it. Real UART timing runs here (the
# simulation's time is real time), but nothing asserts a duration.
import errno

import esp32_machine as machine
import esp32_module as esp32
import mptest

WIRING = {("uart", 1): "echo", ("uart", 2): "drip", ("uart", 0): "echo", ("i2c", 0): "i2c0"}


def setup():
    machine.use("wroom32")
    machine.WIRING.clear()
    machine.WIRING.update(WIRING)


# ---- pins ----
def test_flash_pins_and_missing_gpios_are_refused():
    for n in (6, 7, 8, 9, 10, 11):
        e = mptest.raises(ValueError, machine.Pin, n, machine.Pin.OUT)
        mptest.true("flash" in str(e))
    for n in (20, 24, 28, 31, 40, -1):
        mptest.eq(str(mptest.raises(ValueError, machine.Pin, n)), "invalid pin")
    machine.Pin(16, machine.Pin.OUT)  # a WROOM-32 has GPIO16/17 ...
    machine.use("wrover")
    mptest.eq(str(mptest.raises(ValueError, machine.Pin, 16)), "invalid pin")  # ... a WROVER not
    mptest.eq(str(mptest.raises(ValueError, machine.Pin, 17, machine.Pin.OUT)), "invalid pin")


def test_34_to_39_are_input_only():
    for n in (34, 35, 36, 37, 38, 39):
        machine.Pin(n, machine.Pin.IN)
        e = mptest.raises(ValueError, machine.Pin, n, machine.Pin.OUT)
        mptest.eq(str(e), "pin can only be input")
    p = machine.Pin(35, machine.Pin.IN)
    mptest.raises(ValueError, p.init, machine.Pin.OUT)
    mptest.raises(ValueError, machine.PWM, machine.Pin(36))
    mptest.raises(ValueError, machine.UART, 1, tx=34, rx=35)


def test_strapping_pins_pulled_the_wrong_way_are_refused_the_rest_noted():
    e = mptest.raises(ValueError, machine.I2C, 0, scl=machine.Pin(22), sda=machine.Pin(12))
    mptest.true("strapping" in str(e) and "1.8 V" in str(e), str(e))
    mptest.raises(ValueError, machine.UART, 1, tx=25, rx=12)  # an idle line is high
    mptest.raises(ValueError, machine.Pin, 12, machine.Pin.IN, machine.Pin.PULL_UP)
    del machine.strapping_used[:]
    machine.Pin(2, machine.Pin.OUT, value=0)
    machine.Pin(15, machine.Pin.OUT)
    mptest.eq(sorted(n for n, _ in machine.strapping_used), [2, 15])


def test_s3_pins():
    machine.use("s3")
    for n in (19, 20, 22, 26, 30, 33, 37, 47, 49):
        mptest.eq(str(mptest.raises(ValueError, machine.Pin, n)), "invalid pin")
    machine.Pin(38, machine.Pin.OUT)  # no input-only pins on an S3
    mptest.raises(ValueError, machine.UART, 1, tx=17, rx=46)  # GPIO46 must be low at reset
    del machine.strapping_used[:]
    machine.Pin(0, machine.Pin.IN)
    mptest.eq([n for n, _ in machine.strapping_used], [0])


# ---- UART ----
def test_uart_ids_and_buffer_rules():
    e = mptest.raises(ValueError, machine.UART, 3, tx=25, rx=26)
    mptest.eq(str(e), "UART(3) does not exist")
    mptest.raises(OSError, machine.UART, 1, tx=25, rx=26, rxbuf=128)
    mptest.raises(OSError, machine.UART, 1, tx=25, rx=26, txbuf=100)
    machine.UART(1, tx=25, rx=26, txbuf=0, rxbuf=129)
    mptest.raises(ValueError, machine.UART, 1)  # default pins 10/9: the flash
    mptest.raises(ValueError, machine.UART, 1, tx=25, rx=26, bits=9)
    mptest.raises(ValueError, machine.UART, 1, tx=25, rx=26, stop=3)
    u = machine.UART(1, tx=25, rx=26)
    mptest.raises(ValueError, u.init, rxbuf=1024)
    mptest.raises(ValueError, u.irq, None, 0, True)
    machine.use("wrover")
    mptest.raises(ValueError, machine.UART, 2)  # default pins 17/16: the PSRAM


def test_uart0_belongs_to_the_repl():
    e = mptest.raises(ValueError, machine.UART, 0, tx=25, rx=26, rxbuf=8192)
    mptest.eq(str(e), "REPL UART buffer size is fixed")
    u = machine.UART(0, tx=25, rx=26, timeout=500)
    mptest.raises(ValueError, u.irq, None)
    u.write(b"hello\n")
    mptest.eq(u.read(6), None, "what arrives goes to the REPL, not to read()")
    u.write(b"\x03")  # the echo device sends it back: Ctrl-C on the REPL's input
    mptest.raises(KeyboardInterrupt, u.read, 1)
    machine.use("s3")
    u = machine.UART(0, tx=15, rx=16, rxbuf=8192, timeout=1000)  # REPL on USB: UART0 is free
    u.write(b"ok")
    mptest.eq(u.read(2), b"OK")


def test_read_timeouts_as_v1_27():
    u = machine.UART(2, tx=32, rx=35, timeout=0, timeout_char=0)
    u.write(b"6,100\n")  # six bytes, 100 ms apart
    mptest.eq(u.read(6), None, "timeout 0: nothing there yet")
    u.init(timeout=300, timeout_char=0)
    got = u.read(6)
    # The first byte within `timeout`, then what else is there: the stream layer asks again,
    # each time waiting up to `timeout` for a first byte, until it has all six.
    mptest.eq(got, b"012345")
    u.write(b"3,20\n")
    u.init(timeout=300, timeout_char=0)  # init discards what arrived before it
    buf = bytearray(8)
    mptest.eq(u.readinto(buf, 3), 3)
    mptest.eq(bytes(buf[:3]), b"012")
    u.init(timeout=30, timeout_char=0)
    mptest.eq(u.readinto(buf), None, "nothing more came")
    u.init(timeout=300)
    u.write(b"2,5\n")
    mptest.eq(u.readline(), b"01", "no newline: what came before the timeout")
    mptest.eq(u.readline(), None)


def test_write_blocks_until_all_but_txbuf_bytes_are_sent():
    u = machine.UART(1, tx=25, rx=26, baudrate=2400, rxbuf=4096)
    mptest.eq(u.write(bytes(200)), 200)
    mptest.eq(u.writes_blocked, 0, "200 bytes fit the default 256-byte TX ring")
    mptest.false(u.txdone(), "0.8 s of line at 2400 baud")
    u.flush()
    mptest.true(u.txdone())
    u.init(baudrate=115200)
    u.write(bytes(1000))
    mptest.eq(u.writes_blocked, 1, "1000 bytes do not: write() waits for the line")
    mptest.true(u.pending_tx() <= 256, "it returns with at most txbuf bytes still to go")
    big = machine.UART(1, tx=25, rx=26, baudrate=115200, txbuf=2048, rxbuf=4096)
    big.write(bytes(1500))
    mptest.eq(big.writes_blocked, 0)
    nofifo = machine.UART(1, tx=25, rx=26, txbuf=0, rxbuf=4096)
    nofifo.write(bytes(300))
    mptest.eq(nofifo.writes_blocked, 1, "txbuf=0: only the 128-byte FIFO")


# ---- I2C, SPI ----
def test_i2c_ids_and_the_clock_stretch_timeout():
    mptest.eq(str(mptest.raises(ValueError, machine.I2C, 2)), "I2C(2) doesn't exist")
    i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21), timeout=50000)
    mptest.eq(i2c.timeout_us, 13107, "the ESP32's 20-bit counter caps the 50 ms asked for")
    machine.I2C.STRETCH_US["i2c0"] = 20000
    try:
        e = mptest.raises(OSError, i2c.writeto, 0x3C, b"\x00")
        mptest.eq(e.args[0], errno.ETIMEDOUT)
        machine.I2C.STRETCH_US["i2c0"] = 400
        i2c.writeto(0x3C, b"\x00\xae")  # the display answers
    finally:
        machine.I2C.STRETCH_US.clear()


def test_spi_ids():
    mptest.eq(str(mptest.raises(ValueError, machine.SPI, 0)), "SPI(0) doesn't exist")
    mptest.eq(str(mptest.raises(ValueError, machine.SPI, 3)), "SPI(3) doesn't exist")


# ---- system ----
def test_a_watchdog_not_fed_resets_the_board():
    import time

    mptest.raises(ValueError, machine.WDT, 1, 1000)
    mptest.raises(ValueError, machine.WDT, 0, 0)
    w = machine.WDT(timeout=100)
    w.feed()
    time.sleep_ms(150)
    e = mptest.raises(machine.WatchdogReset, machine.Pin, 4, machine.Pin.OUT)
    mptest.false(isinstance(e, Exception), "no `except Exception` in the firmware catches it")
    e = mptest.raises(machine.WatchdogReset, w.feed)
    machine.restart(e.cause)
    mptest.eq(machine.reset_cause(), machine.WDT_RESET)
    mptest.eq(machine.wdt_state(), None, "a reset stops the watchdog until the app starts it")


def test_time_counts_from_2000_on_the_rtc():
    t = machine.TIME
    mptest.between(t.time(), 0, 5)
    mptest.eq(t.gmtime(0)[:3], (2000, 1, 1))
    machine.RTC().datetime((2026, 12, 4, 4, 18, 0, 0, 0))
    now = t.time()
    mptest.eq(t.gmtime(now)[:5], (2026, 12, 4, 18, 0))
    mptest.eq(t.gmtime(now)[6:], (4, 338), "Friday, day 338 of the year")
    mptest.eq(t.mktime((2026, 12, 4, 18, 0, 0, 0, 0)), now - now % 60)
    t0 = t.ticks_ms()  # the rest is the unix port's own
    mptest.true(t.ticks_diff(t.ticks_ms(), t0) >= 0)


def test_reset_causes_freq_and_rtc_across_resets():
    mptest.eq(machine.reset_cause(), machine.PWRON_RESET)
    mptest.eq(machine.freq(), 160000000)
    machine.freq(240000000)
    mptest.eq(machine.freq(), 240000000)
    mptest.raises(ValueError, machine.freq, 100000000)
    rtc = machine.RTC()
    mptest.eq(rtc.datetime()[:3], (2000, 1, 1))
    mptest.eq(rtc.datetime()[3], 5, "2000-01-01 was a Saturday (Monday = 0)")
    rtc.datetime((2026, 12, 4, 4, 18, 0, 0, 0))
    rtc.memory(b"kept")
    mptest.raises(ValueError, rtc.memory, bytes(2049))
    e = mptest.raises(machine.BoardReset, machine.soft_reset)
    machine.restart(e.cause)
    mptest.eq(machine.reset_cause(), machine.SOFT_RESET)
    mptest.eq(machine.freq(), 160000000, "a reset restores the configured frequency")
    mptest.eq(rtc.datetime()[:5], (2026, 12, 4, 4, 18))
    mptest.eq(rtc.memory(), b"kept")
    e = mptest.raises(machine.BoardReset, machine.reset)
    mptest.eq(e.cause, machine.HARD_RESET)
    machine.power_cut()
    mptest.eq(machine.reset_cause(), machine.PWRON_RESET)
    mptest.eq(rtc.datetime()[:3], (2000, 1, 1))
    mptest.eq(rtc.memory(), b"")


# ---- esp32.Partition and NVS ----
def _txlog():
    esp32.use_table(
        (
            ("nvs", 1, 2, 0x6000),
            ("factory", 0, 0, 0x1F0000),
            ("txlog", 1, 0x40, 0x40000),
        )
    )
    return esp32.Partition.find(esp32.Partition.TYPE_DATA, label="txlog")[0]


def test_partition_find_info_and_ioctl():
    dev = _txlog()
    mptest.eq(dev.info()[0:2], (1, 0x40))
    mptest.eq(dev.info()[3:5], (0x40000, "txlog"))
    mptest.eq(dev.ioctl(4, 0), 64)
    mptest.eq(dev.ioctl(5, 0), 4096)
    mptest.eq(esp32.Partition.find(esp32.Partition.TYPE_DATA, label="nope"), [])
    mptest.eq(len(esp32.Partition.find(esp32.Partition.TYPE_APP)), 1)
    mptest.raises(OSError, esp32.Partition, "nope")
    small = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="txlog", block_size=512)[0]
    mptest.eq(small.ioctl(6, 0), -22, "erase needs the native 4 KiB block size")


def test_writeblocks_erases_without_offset_and_only_programs_with_one():
    dev = _txlog()
    buf = bytearray(4096)
    dev.writeblocks(1, b"\xf0" * 4096)  # erase + program
    dev.writeblocks(1, b"\x0f\xff", 10)  # program only: bits go 1 -> 0
    dev.readblocks(1, buf)
    mptest.eq((buf[9], buf[10], buf[11]), (0xF0, 0x00, 0xF0))
    dev.writeblocks(1, b"\xff" * 4096)  # an erasing write sets it all back
    dev.readblocks(1, buf)
    mptest.eq(buf[10], 0xFF)
    mptest.raises(OSError, dev.writeblocks, 1, b"\x00" * 100)  # an erase must cover sectors
    e = mptest.raises(OSError, dev.readblocks, 63, bytearray(8), 4092)
    mptest.eq(e.args[0], -0x104)
    mptest.eq(dev.ioctl(6, 1), 0)
    dev.readblocks(1, buf, 0)
    mptest.eq(buf[:4], b"\xff\xff\xff\xff")


def test_nvs_keeps_only_what_was_committed():
    esp32.wipe()
    n = esp32.NVS("journal")
    e = mptest.raises(OSError, n.get_i32, "hwm")
    mptest.eq(e.args[0], -4354)
    n.set_i32("hwm", 1024)
    n.set_blob("b", b"xyz")
    mptest.raises(OSError, esp32.NVS("journal").get_i32, "hwm")  # not committed yet
    n.commit()
    n2 = esp32.NVS("journal")
    mptest.eq(n2.get_i32("hwm"), 1024)
    buf = bytearray(8)
    mptest.eq(n2.get_blob("b", buf), 3)
    mptest.raises(OverflowError, n2.set_i32, "x", 1 << 31)


def test_a_soft_reset_leaves_the_started_watchdog_running():
    # The port keeps the task watchdog's user across a soft reset: the interpreter restarts,
    # the watchdog does not stop (why the validator's safe mode needs a hard reset).
    w = machine.WDT(timeout=2000)
    w.feed()
    e = mptest.raises(machine.BoardReset, machine.soft_reset)
    machine.restart(e.cause)
    mptest.eq(machine.wdt_state(), (2000, 1), "still armed after Ctrl-D")
    e = mptest.raises(machine.BoardReset, machine.reset)
    machine.restart(e.cause)
    mptest.eq(machine.wdt_state(), None, "a hard reset restarts the chip without it")


def test_a_brownout_reads_as_power_on_but_rtc_memory_survives():
    rtc = machine.RTC()
    rtc.datetime((2026, 12, 4, 4, 18, 0, 0, 0))
    rtc.memory(b"marker")
    machine.brownout()
    mptest.eq(machine.reset_cause(), machine.PWRON_RESET, "v1.27 maps ESP_RST_BROWNOUT so")
    mptest.false(hasattr(machine, "BROWNOUT_RESET"), "the port has no constant for it")
    mptest.eq(rtc.memory(), b"marker", "RTC slow memory kept: the chip stayed powered")
    mptest.eq(rtc.datetime()[:3], (2000, 1, 1))
    machine.power_cut()
    mptest.eq(rtc.memory(), b"")
