# Shared part of every ESP32 board's freeze manifest: the application and its drivers.
# Included by boards/<name>/manifest.py; paths are relative to this file.
import os

require("ssd1306")
# boot.py and main.py stay out: MicroPython runs a frozen boot.py/main.py in preference to the
# filesystem's (shared/runtime/pyexec.c, pyexec_file_if_exists), and a depot must be able to
# replace them by copying files.
_AT_ROOT = ("boot.py", "main.py")
_APP = sorted(n for n in os.listdir("../firmware") if n.endswith(".py") and n not in _AT_ROOT)
freeze("../firmware", _APP)
freeze("../drivers")
module("esp32_common.py")
