# Pin map for the esp32s3_pn532_hsu validator board: an ESP32-S3-WROOM-1 module (any flash and
# PSRAM variant) with the validator's S3 firmware, whose REPL is on the native USB: the PN532 on
# HSU, the PSAM and the modem need all three UARTs. (A classic ESP32 cannot carry this set-up: its
# UART0 belongs to the REPL, and stock ESP32_GENERIC_S3 keeps a REPL on UART0 too.)
# The wiring table in README.md shows the same numbers; change both together.
NAME = "esp32s3_pn532_hsu"

READER = {
    "chip": "pn532",
    "bus": "uart",
    "uart_id": 1,
    "tx": 17,
    "rx": 18,
    "baudrate": 115200,
    # SetSerialBaudRate after init: the PN532's fastest (its table ends at 1 288 000); the
    # ESP32-S3 UART makes 1 289 023 baud of it (80 MHz x 16 / 993, +0.08 %)
    "fast_baud": 1288000,
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
