# MicroPython board definition: the fare validator on an ESP32-S3 module (e.g. ESP32-S3-WROOM-1),
# REPL on the native USB port so that UART0 is free for the reader or the modem. Build from
# MicroPython v1.27's ports/esp32 (README, "A validator build of MicroPython"):
#   make BOARD_DIR=/path/to/repo/boards/micropython/VALIDATOR_ESP32_S3 [BOARD_VARIANT=FLASH_16M] \
#        [FROZEN_MANIFEST=/path/to/repo/boards/<pin set>/manifest.py]
set(IDF_TARGET esp32s3)

include(${MICROPY_BOARD_DIR}/../validator.cmake)

# The port's base settings (no sdkconfig.ble: Bluetooth stays out; no SPIRAM: the heap stays in
# internal RAM, the size the application is measured at), then this board's.
set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
)
validator_sdkconfig(${MICROPY_BOARD_DIR}/sdkconfig.board)

# The port's modules, the application, drivers, ssd1306 and a pin set; FROZEN_MANIFEST= on the
# make command line picks another pin set (boards/<name>/manifest.py).
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
