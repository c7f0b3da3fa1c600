# Freeze manifest for esp32_pn532_hsu: build a custom MicroPython with
#   make -C ports/esp32 BOARD=ESP32_GENERIC \
#        FROZEN_MANIFEST=$(pwd)/boards/esp32_pn532_hsu/manifest.py
# (see README, "Freezing the application into MicroPython").
include("$(PORT_DIR)/boards/manifest.py")
include("../manifest_common.py")
module("board.py")
