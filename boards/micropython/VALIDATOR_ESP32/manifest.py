# Default freeze manifest of VALIDATOR_ESP32 (used when make gets no FROZEN_MANIFEST=): the
# reference pin set, PN532 on I2C. It includes the port's own manifest, the application, the
# drivers, ssd1306 and that pin set's board.py; boot.py and main.py stay on the filesystem.
include("../../esp32_pn532_i2c/manifest.py")
