# Pin map for the esp32s3_pn532_i2c validator board: an ESP32-S3-WROOM-1 module (any flash and
# PSRAM variant) with the validator's S3 firmware (REPL on the native USB). The PN532 on I2C1
# takes the two pins the HSU board gives its UART (17, 18), so one PCB serves both PN532 modes;
# the PSAM, modem, LEDs, buzzer and display are the S3 boards' (boards/esp32_common.py).
# The wiring table in README.md shows the same numbers; change both together.
NAME = "esp32s3_pn532_i2c"

READER = {
    "chip": "pn532",
    "bus": "i2c",
    "i2c_id": 1,
    "sda": 17,
    "scl": 18,
    "freq": 400000,
    "irq": 10,
    "reset": 11,
    "type_b": False,  # True polls type B cards too (a second round per poll)
}

# The parts the application asks for (firmware/app.py), built by boards/esp32_common.py.
from esp32_common import (  # noqa: E402, F401
    CONFIG_PATH,
    RTC,
    show_fatal,
    start,
)
from esp32_common import DISPLAY_S3 as DISPLAY  # noqa: E402, F401
from esp32_common import FEEDBACK_S3 as FEEDBACK  # noqa: E402, F401
from esp32_common import MODEM_S3 as MODEM  # noqa: E402, F401
from esp32_common import PSAM_S3 as PSAM  # noqa: E402, F401
from esp32_common import SAFE_PIN_S3 as SAFE_PIN  # noqa: E402, F401

# Strapping pins this board uses (none: 0, 3, 45 and 46 stay free).
STRAPPING = {}


def make_parts(cfg):
    import esp32_common

    return esp32_common.board_parts(cfg)
