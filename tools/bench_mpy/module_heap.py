# Each firmware and driver module's own heap on micropython32 (docs/runtime.md "What grew"):
# imported one by one in dependency order, gc.collect() and gc.mem_alloc() after each, so a
# module's figure is its globals, function objects and classes (its code is frozen in flash).
# argv: optional path of a file with the module names (whitespace-separated) to use instead.
import gc
import sys

MODULES = (
    "asyncio json log timeutil hmac256 crc ringbuf bcd record messages bootmode faults config"
    " fare cardlists p256 bundle params apdu tunion decide psam_app txlog txlog_migrate purchase"
    " settle bus1a linkerr timetrust clock uplink_proto uplink chunkdl app vfs iso7816 isodep"
    " pn532 pn532_i2c reader psam_link txpace atmodem modem modem_simcom http_socket transport"
    " ssd1306 font_zh16 display feedback rtcchip ds3231 pcf8563 board"
)
names = open(sys.argv[1]).read().split() if len(sys.argv) > 1 else MODULES.split()
gc.collect()
base = gc.mem_alloc()
prev = base
for m in names:
    try:
        __import__(m)
    except ImportError:
        print("MODULE %-16s missing" % m)
        continue
    gc.collect()
    h = gc.mem_alloc()
    print("MODULE %-16s %6d %6d" % (m, h - prev, h - base))
    prev = h
