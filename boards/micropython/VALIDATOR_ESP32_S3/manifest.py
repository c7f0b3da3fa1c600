# Default freeze manifest of VALIDATOR_ESP32_S3 (used when make gets no FROZEN_MANIFEST=): the
# port's own modules, the application, the drivers and ssd1306. The pin file comes with a pin
# set: give FROZEN_MANIFEST=/path/to/repo/boards/<ESP32-S3 pin set>/manifest.py to freeze one,
# or copy its board.py to the board. boot.py and main.py stay on the filesystem.
include("$(PORT_DIR)/boards/manifest.py")
include("../../manifest_common.py")
