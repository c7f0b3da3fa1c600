# mpy: server=tools.sim.bench_hub heapsize=1m timeout=240
# Each ESP32 board's own factory code (boards/esp32_common.py + board.py) builds the validator's
# parts with a stand-in `machine` that maps its bus ids and GPIOs to the simulators, and the
# parts then do a whole purchase: the code an operator flashes, run before it meets hardware.
import sys

import esp32_machine
import mptest

sys.modules["machine"] = esp32_machine

import esp32_common  # noqa: E402
from psam_app import PsamApp  # noqa: E402
from simlink import Control  # noqa: E402

SHARED = {
    ("pin", 14): "psam_rst",
    ("pin", 4): "psam_clk",
    ("pin", 13): "modem_pwrkey",
    ("pin", 32): "led_green",
    ("pin", 33): "led_red",
    ("pin", 27): "buzzer",
    ("pin", 15): "reader_reset",
    ("pin", 34): "reader_irq",
    ("pin", 0): "boot_key",
    ("uart", 2): "psam",
    ("i2c", 0): "i2c0",
}
BOARDS = {
    "esp32_pn532_i2c": ("pn532_i2c", {("i2c", 1): "nfc_i2c", ("uart", 1): "modem"}),
    "esp32_pn532_spi": (
        "pn532_spi",
        {("spi", 2): "nfc_spi", ("pin", 5): "nfc_cs", ("uart", 1): "modem"},
    ),
    "esp32_pn532_hsu": ("pn532_hsu", {("uart", 1): "nfc_hsu", ("uart", 0): "modem"}),
    "esp32_rc522_spi": (
        "rc522_spi",
        {("spi", 2): "rc522", ("pin", 5): "rc522_cs", ("uart", 1): "modem"},
    ),
}
CFG = {"modem": "sim7600", "apn": "cmnet"}


def _load_board(name):
    path = "%s/boards/%s" % (mptest.repo_root(), name)
    sys.path.insert(0, path)
    try:
        if "board" in sys.modules:
            del sys.modules["board"]
        import board

        return board
    finally:
        sys.path.remove(path)


def _parts_and_purchase(name):
    import purchase
    from pending import RamPendingStore

    reader_kind, wiring = BOARDS[name]
    esp32_machine.WIRING.clear()
    esp32_machine.WIRING.update(SHARED)
    esp32_machine.WIRING.update(wiring)
    del esp32_machine.made[:]
    board = _load_board(name)
    mptest.eq(board.NAME, name)
    parts = board.make_parts(CFG)
    mptest.true(parts.reader is not None and parts.psam_link is not None)
    mptest.true(parts.display is not None, "display built on I2C0")
    mptest.eq(parts.root, "/data")
    ctl = Control()
    ctl.call("bench_place", reader=reader_kind)
    target = parts.reader.poll()
    mptest.true(target is not None and target.iso_dep, "card activated on %s" % reader_kind)
    parts.psam_link.reset()
    journal = []
    p = purchase.Purchaser(
        PsamApp(parts.psam_link), RamPendingStore(), {"journal": journal.append}
    )
    mptest.true(p.boot(), "PSAM over the board's UART 2")
    res = p.tap(parts.reader, {"debit": 150, "must_cover": 150, "route": 1}, 849300000)
    mptest.eq(res.reason, purchase.OK, res.detail)
    card = ctl.call("bench_card", reader=reader_kind)
    mptest.eq((len(card["debits"]), card["violations"]), (1, []))
    parts.reader.release()
    return esp32_machine.made


def test_pn532_i2c_board():
    made = _parts_and_purchase("esp32_pn532_i2c")
    i2c1 = [kw for kind, n, kw in made if kind == "i2c" and n == 1]
    mptest.eq(len(i2c1), 1)
    mptest.eq(
        (i2c1[0]["sda"].name, i2c1[0]["scl"].name, i2c1[0]["freq"]), ("gpio18", "gpio19", 400000)
    )


def test_pn532_spi_board_uses_lsb_first():
    made = _parts_and_purchase("esp32_pn532_spi")
    spi = [kw for kind, n, kw in made if kind == "spi"]
    mptest.eq(spi[0]["firstbit"], esp32_machine.SPI.LSB)


def test_pn532_hsu_board_gives_uart1_to_the_reader_and_uart0_to_the_modem():
    made = _parts_and_purchase("esp32_pn532_hsu")
    uarts = [n for kind, n, _ in made if kind == "uart"]
    mptest.eq(sorted(uarts), [0, 1, 2])


def test_rc522_board():
    _parts_and_purchase("esp32_rc522_spi")


def test_a_board_wired_differently_is_a_clear_error():
    esp32_machine.WIRING.clear()
    e = mptest.raises(
        ValueError,
        esp32_common.make_reader,
        {
            "chip": "rc522",
            "spi_id": 1,
            "baudrate": 1,
            "sck": 1,
            "mosi": 2,
            "miso": 3,
            "cs": 5,
            "irq": 34,
        },
    )
    mptest.true("does not wire" in str(e))
