# Pin map for the esp32_rc522_spi validator board: an ESP32-WROOM-32 or ESP32-WROVER module
# (stock ESP32_GENERIC or ESP32_GENERIC-SPIRAM firmware, or the validator's own build).
# The wiring table in README.md shows the same numbers; change both together. The PSAM slot,
# modem, LEDs, buzzer and display pins are the ones every board shares (boards/esp32_common.py).
NAME = "esp32_rc522_spi"

READER = {
    "chip": "rc522",
    "bus": "spi",
    "spi_id": 2,
    "sck": 18,
    "mosi": 23,
    "miso": 19,
    "cs": 5,
    "baudrate": 10000000,  # the MFRC522's SPI limit (NXP datasheet: up to 10 Mbit/s)
    "irq": 34,
    "reset": 15,
    "type_b": False,  # True polls type B cards too (a second round per poll)
}

# The parts the application asks for (firmware/app.py), built by boards/esp32_common.py.
from esp32_common import (  # noqa: E402, F401
    CONFIG_PATH,
    DISPLAY,
    FEEDBACK,
    MODEM,
    PSAM,
    RTC,
    SAFE_PIN,
    show_fatal,
    start,
)
from esp32_common import STRAPPING as _STRAPPING  # noqa: E402

# Strapping pins this board uses, and why their level at reset is right.
STRAPPING = dict(_STRAPPING)
STRAPPING[15] = "reader reset: an output only after boot; MTDO's pull-up keeps the boot log"
STRAPPING[5] = "reader chip select, held high by the reader: the SDIO-timing default"


def make_parts(cfg):
    import esp32_common

    return esp32_common.board_parts(cfg)
