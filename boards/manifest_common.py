# Shared part of every ESP32 board's freeze manifest: the application and its drivers.
# Included by boards/<name>/manifest.py; paths are relative to this file.
require("ssd1306")
freeze("../firmware")
freeze("../drivers")
module("esp32_common.py")
