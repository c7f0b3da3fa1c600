"""tools.board_wiring: the wiring tables of docs/bench-setup.md and its SVGs follow the pin maps.

The check fails as soon as a board's pin map and the page disagree (`make wiring` rewrites both),
every pin a board's parts use appears in its table, and the pictures are well-formed SVG with a
line per GPIO.
"""

import xml.etree.ElementTree as ET

from tools import board_wiring

# Pin-map keys that name a module pin (the rest are bus numbers, rates, addresses, flags).
PIN_KEYS = ("sda", "scl", "sck", "mosi", "miso", "cs", "tx", "rx", "irq", "reset", "clk")
PIN_KEYS += ("pwrkey", "status", "led_green", "led_red", "buzzer", "gpio")


def test_the_page_and_pictures_are_current():
    assert board_wiring.main(["--check"]) == 0, "run make wiring"


def test_every_pin_of_every_board_is_in_its_table():
    for name in board_wiring.ESP32_BOARDS:
        board = board_wiring.load_board(name)
        listed = {gpio for _part, _pin, gpio, _note in board_wiring.wires(board)}
        for part in ("READER", "PSAM", "MODEM", "FEEDBACK", "DISPLAY", "SAFE_PIN"):
            for key, value in getattr(board, part).items():
                if key in PIN_KEYS and isinstance(value, int):
                    assert "GPIO%d" % value in listed, (name, part, key)


def test_a_changed_pin_map_changes_the_page(monkeypatch):
    real = board_wiring.load_board

    def moved(name):
        board = real(name)
        if name == "esp32_pn532_i2c":
            board.READER = dict(board.READER, sda=23)
        return board

    before, _ = board_wiring.render()
    monkeypatch.setattr(board_wiring, "load_board", moved)
    after, pictures = board_wiring.render()
    assert before != after
    assert "| PN532 (I2C mode) | SDA | GPIO23 |" in after
    assert ">GPIO23<" in pictures[board_wiring.SVG_DIR / "esp32_pn532_i2c.svg"]


def test_the_pictures_are_svg_with_a_line_per_gpio():
    _doc, pictures = board_wiring.render()
    for path, text in pictures.items():
        root = ET.fromstring(text)
        assert root.tag.endswith("svg")
        board = board_wiring.load_board(path.stem)
        gpios = [w for w in board_wiring.wires(board) if w[2].startswith("GPIO")]
        lines = [e for e in root.iter() if e.tag.endswith("line")]
        assert len(lines) == len(gpios), path.name


def test_strapping_pins_are_marked():
    board = board_wiring.load_board("esp32_pn532_i2c")
    notes = {gpio: note for _p, _pin, gpio, note in board_wiring.wires(board)}
    assert notes["GPIO2"].endswith("strapping pin")
    assert notes["GPIO15"].endswith("strapping pin")
