# Pin map for the esp32_pn532_spi validator board (ESP32-WROOM/WROVER module).
# The wiring table in README.md shows the same numbers; change both together. The PSAM slot,
# modem, LEDs, buzzer and display pins are the ones every board shares (boards/esp32_common.py).
NAME = "esp32_pn532_spi"

READER = {
    "chip": "pn532",
    "bus": "spi",
    "spi_id": 2,
    "sck": 18,
    "mosi": 23,
    "miso": 19,
    "cs": 5,
    "baudrate": 1000000,
    "irq": 34,
    "reset": 15,
}

# The parts the application asks for (firmware/app.py), built by boards/esp32_common.py.
from esp32_common import CONFIG_PATH, DISPLAY, FEEDBACK, MODEM, PSAM, show_fatal, start  # noqa: E402, F401


def make_parts(cfg):
    import esp32_common

    return esp32_common.board_parts(cfg)
