# The unix-port simulation board: the same application and drivers, with machine-like bus
# objects backed by the CPython simulators. Freezing is not needed for it; this manifest lets a
# custom unix build carry the application like an ESP32 one would.
include("../manifest_common.py")
freeze(".")
