# Default freeze manifest of VALIDATOR_ESP32_S3 (used when make gets no FROZEN_MANIFEST=): the
# ESP32-S3 pin set, PN532 on HSU with the modem on UART0 (free: the REPL is on native USB). It
# includes the port's own manifest, the application, the drivers, ssd1306 and that pin set's
# board.py; boot.py and main.py stay on the filesystem.
include("../../esp32s3_pn532_hsu/manifest.py")
