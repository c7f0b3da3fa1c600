# The unix-port simulation board: the same application and drivers, with machine-like bus
# objects backed by the CPython simulators. Freezing is not needed for it; this manifest lets a
# custom unix build carry the application like an ESP32 one would (tools/build_micropython32.py).
import os

include("../manifest_common.py")
# every module of this folder but this manifest itself
freeze(".", sorted(n for n in os.listdir(".") if n.endswith(".py") and n != "manifest.py"))
