# The ESP32 stand-ins in place, and an ESP32 board's own code loaded on them: the set-up that
# test_boot.py, test_esp32_time.py, test_board_selftest_esp32.py and test_esp32_boards.py share.
# install() makes `machine` the strict stand-in (esp32_machine.py), `esp32` its module
# (esp32_module.py) and `time` the stand-in's clock (counted from 2000 on its RTC, as on a board):
# call it before importing anything that imports those, and after any large early allocation (a
# RAM flash), which must come first so the imports do not fragment the heap.
import sys

import esp32_machine
import esp32_module
import mptest


def install():
    sys.modules["machine"] = esp32_machine
    sys.modules["esp32"] = esp32_module
    sys.modules["time"] = esp32_machine.TIME


# The validator's partition tables (boards/micropython/VALIDATOR_*), "txlog" included.
TABLE_4MB = "/boards/partitions-4MiB-validator.csv"
TABLE_16MB = "/boards/partitions-16MiB-validator.csv"

# The hub's names for what the classic ESP32 boards wire (boards/esp32_common.py) ...
ESP32_SHARED = {
    ("pin", 14): "psam_rst",
    ("pin", 4): "psam_clk",
    ("pin", 13): "modem_pwrkey",
    ("pin", 2): "led_green",
    ("pin", 33): "led_red",
    ("pin", 27): "buzzer",
    ("pin", 15): "reader_reset",
    ("pin", 34): "reader_irq",
    ("uart", 2): "psam",
    ("uart", 1): "modem",
    ("i2c", 0): "i2c0",
}
# ... and the ESP32-S3 boards.
S3_SHARED = {
    ("pin", 7): "psam_rst",
    ("pin", 6): "psam_clk",
    ("pin", 21): "modem_pwrkey",
    ("pin", 39): "led_green",
    ("pin", 40): "led_red",
    ("pin", 41): "buzzer",
    ("pin", 11): "reader_reset",
    ("pin", 10): "reader_irq",
    ("uart", 2): "psam",
    ("uart", 0): "modem",
    ("i2c", 0): "i2c0",
}
# board -> its reader's wiring
READERS = {
    "esp32_pn532_i2c": {("i2c", 1): "nfc_i2c"},
    "esp32_pn532_spi": {("spi", 2): "nfc_spi", ("pin", 5): "nfc_cs"},
    "esp32_rc522_spi": {("spi", 2): "rc522", ("pin", 5): "rc522_cs"},
    "esp32s3_pn532_hsu": {("uart", 1): "nfc_hsu"},
    "esp32s3_pn532_i2c": {("i2c", 1): "nfc_i2c"},
}


# The application tests: the RTC set once at APP_T0 (a power cut would take it to 2000), and the
# parameter bundle they activate: a flat fare of 100 on route 12, the local issuer whitelisted.
APP_T0 = (2026, 12, 4, 4, 8, 30, 0, 0)
BUNDLE = {
    "settings": {"dup_tap_s": 60, "upload_interval_s": 120},
    "whitelist": {"local_issuers": ["09981001"], "local_city": "1001", "issuers": ["09981001"]},
    "fares": {
        "routes": {"12": {"mode": "flat", "fare": 100}},
        "card_types": {"1": {}, "2": {}, "3": {}},
    },
}


def wiring(board, *more):
    """The hub names a board's pins and buses reach: its family's, its reader's, then `more`."""
    out = dict(S3_SHARED if board.startswith("esp32s3") else ESP32_SHARED)
    out.update(READERS[board])
    for m in more:
        out.update(m)
    return out


def wire(table):
    esp32_machine.WIRING.clear()
    esp32_machine.WIRING.update(table)


def load_board(name):
    """boards/<name>/board.py, imported afresh (each test may load another board)."""
    path = "%s/boards/%s" % (mptest.repo_root(), name)
    sys.path.insert(0, path)
    try:
        if "board" in sys.modules:
            del sys.modules["board"]
        import board

        return board
    finally:
        sys.path.remove(path)


def mount_data(flash, fresh=True):
    """`flash` (a RAM block device) mounted as the board's littlefs at /data, formatted first
    when `fresh` (a new device) and kept otherwise (a reboot)."""
    import vfs

    try:
        vfs.umount("/data")
    except OSError:
        pass
    if fresh:
        vfs.VfsLfs2.mkfs(flash)
    vfs.mount(vfs.VfsLfs2(flash, mtime=False), "/data")


def device_config(base, secret):
    """The config of device 1 (key `secret`) at the collector `base`: route 12, stop 3, a
    SIM7600 on APN cmnet (config.validate takes it)."""
    return {
        "device_id": 1,
        "secret": secret.hex(),
        "route": 12,
        "stop": 3,
        "city": "1001",
        "institution": "1200290000000000",
        "collector_url": base,
        "modem": "sim7600",
        "apn": "cmnet",
    }


def activate_bundle(v, cfg):
    """BUNDLE signed with the device's key, installed in Validator `v` as version 1."""
    import bundle
    import cardlists

    data = bundle.build(cfg["secret_bytes"], 1, 0, BUNDLE, cardlists.blacklist_bytes(()))
    mptest.eq(v.params.install_bytes(data, v.clock.now())[0], True)


def power_on(name, module="wroom32", more=None, table=TABLE_4MB, size=4 << 20):
    """A power-up of board `name` on `module`: the module's pins, the board's wiring (`more` on
    top), a fresh flash with `table`; returns the board's module."""
    esp32_machine.use(module)
    wire(wiring(name, more or {}))
    esp32_module.use_csv(mptest.repo_root() + table, size)
    return load_board(name)
