# Pin map for the esp32_pn532_i2c validator board: an ESP32-WROOM-32 or ESP32-WROVER module
# (stock ESP32_GENERIC or ESP32_GENERIC-SPIRAM firmware, or the validator's own build).
# The wiring table in README.md shows the same numbers; change both together. The PSAM slot,
# modem, LEDs, buzzer and display pins are the ones every board shares (boards/esp32_common.py).
NAME = "esp32_pn532_i2c"

READER = {
    "chip": "pn532",
    "bus": "i2c",
    "i2c_id": 1,
    "sda": 18,
    "scl": 19,
    "freq": 400000,
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


def make_parts(cfg):
    import esp32_common

    return esp32_common.board_parts(cfg)
