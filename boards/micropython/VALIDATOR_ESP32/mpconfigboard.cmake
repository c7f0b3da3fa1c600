# MicroPython board definition: the fare validator on an ESP32 module (WROOM-32, or WROVER with
# its PSRAM left unused). Build from MicroPython v1.27's ports/esp32 (README, "A validator build
# of MicroPython"):
#   make BOARD_DIR=/path/to/repo/boards/micropython/VALIDATOR_ESP32 [BOARD_VARIANT=FLASH_16M] \
#        [FROZEN_MANIFEST=/path/to/repo/boards/<pin set>/manifest.py]
set(IDF_TARGET esp32)

include(${MICROPY_BOARD_DIR}/../validator.cmake)

# The port's base settings (no sdkconfig.ble: Bluetooth stays out), then this board's.
set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
)
validator_sdkconfig(${MICROPY_BOARD_DIR}/sdkconfig.board)

# The port's modules, the application, drivers, ssd1306 and a pin set; FROZEN_MANIFEST= on the
# make command line picks another pin set (boards/<name>/manifest.py).
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
