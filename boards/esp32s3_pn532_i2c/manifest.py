# Freeze manifest for the esp32s3_pn532_i2c pin set: the port's own modules, the application,
# drivers, ssd1306 and this board.py (a /board.py on the filesystem still wins: '' comes first
# on sys.path). This board needs the validator's S3 build, whose REPL is on the native USB
# (stock ESP32_GENERIC_S3 keeps a REPL on UART0, which the modem takes here).
# Build the validator's MicroPython with it (README, "A validator build of MicroPython"):
#   make -C ports/esp32 BOARD_DIR=/path/to/repo/boards/micropython/VALIDATOR_ESP32_S3 \
#        FROZEN_MANIFEST=/path/to/repo/boards/esp32s3_pn532_i2c/manifest.py
include("$(PORT_DIR)/boards/manifest.py")
include("../manifest_common.py")
module("board.py")
