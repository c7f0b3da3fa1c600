# How this start goes: the application, safe mode or maintenance (docs/boot.md).
#   safe         a pin held low at power-up (the board's SAFE_PIN, never a strapping pin) or a
#                /safemode file: boot.py stops before main.py, so the REPL comes up without the
#                application and without the watchdog (nothing has started it since the reset).
#   maintenance  a /maintenance file (removed as it is read: one start only): the application
#                opens its log and parameters for the depot, sells nothing, and keeps the
#                watchdog armed with the long maintenance window (app.maintenance()). Once in
#                maintenance, a soft reset (mpremote does one when it connects) stays in it:
#                /maintenance.on is honoured after a soft reset only, and dropped after any
#                other reset (the window's watchdog reset, machine.reset(), a power cut).
#   app          everything else.
# Also here: the reset cause as the BOOT record codes it, brown-out included. MicroPython v1.27
# on an ESP32 reports ESP_RST_BROWNOUT as PWRON_RESET (ports/esp32/modmachine.c); a brown-out
# is a system reset that keeps RTC slow memory, so a marker left there by the last start tells
# a brown-out from a real power-up, which loses it. Other users of RTC memory go through
# rtc_memory(), which keeps the marker.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


APP = "app"
SAFE = "safe"
MAINT = "maintenance"
SAFE_FILE = "/safemode"
MAINT_FILE = "/maintenance"
MAINT_ON = "/maintenance.on"
ROOT = ""  # where the three files live: the file system's root on a board (tests move it)

# Reset causes as the BOOT record's `reason` byte codes them (docs/record-format.md).
CAUSE_UNKNOWN = const(0)
CAUSE_POWER_ON = const(1)
CAUSE_HARD = const(2)
CAUSE_WATCHDOG = const(3)
CAUSE_DEEPSLEEP = const(4)
CAUSE_SOFT = const(5)
CAUSE_BROWNOUT = const(6)
# The BOOT record (docs/record-format.md): `reason` = the reset cause (these codes),
# `balance_before` = the parts that failed to start (FAULT_PARTS bits), flags 0x01 = PSAM not
# ready. One table for both runtimes: the firmware writes with it, the collector and
# tools/journal_decode read with it (kept out of record.py, which every heap test loads).
CAUSE_NAMES = ("other", "power-on", "hard", "watchdog", "deepsleep", "soft", "brownout")
FAULT_PARTS = (
    (0x01, "reader"),
    (0x02, "psam"),
    (0x04, "modem"),
    (0x08, "rtc"),
    (0x10, "display"),
)
_MARK = b"VLD1"  # what this firmware leaves in RTC memory at every start

mode = None  # the decision, once made (boot.py makes it; main.py and app.main read it)
why = ""


class SafeMode(Exception):
    """Raised at the end of boot.py in safe mode: MicroPython then skips main.py and starts
    the REPL (ports/esp32/main.c runs main.py only after a boot.py that ended normally)."""


def _exists(os_mod, path):
    try:
        os_mod.stat(path)
        return True
    except OSError:
        return False


def path(name):
    return ROOT + name


def decide(pin_low, safe_file, maint_file):
    """-> (mode, why). The pin wins; then the files."""
    if pin_low:
        return SAFE, "safe-mode pin held low"
    if safe_file:
        return SAFE, SAFE_FILE + " present"
    if maint_file:
        return MAINT, "maintenance requested"
    return APP, ""


def read_pin(spec, pin_cls):
    """True when the board's safe-mode pin reads low; False when it has none or it fails."""
    if not spec:
        return False
    try:
        pull = pin_cls.PULL_UP if spec.get("pull") == "up" else -1
        p = pin_cls(spec["gpio"], pin_cls.IN, pull)
        # Two reads a little apart: a contact that bounces must read low both times.
        if p.value():
            return False
        return not p.value()
    except Exception:  # noqa: BLE001 - a wrong pin map must not stop the start
        return False


def _remove(os_mod, name):
    try:
        os_mod.remove(path(name))
    except OSError:
        pass


def select(board, pin_cls=None, os_mod=None, machine_mod=None):
    """Decide once and remember; never raises (a failure means the application starts)."""
    global mode, why
    if mode is not None:
        return mode, why
    try:
        if os_mod is None:
            import os as os_mod
        if machine_mod is None:
            import machine as machine_mod
        if pin_cls is None:
            pin_cls = machine_mod.Pin
        low = read_pin(getattr(board, "SAFE_PIN", None), pin_cls)
        maint = _exists(os_mod, path(MAINT_FILE))
        if _exists(os_mod, path(MAINT_ON)):
            soft = machine_mod.reset_cause() == getattr(machine_mod, "SOFT_RESET", -1)
            if soft:
                maint = True
            else:
                _remove(os_mod, MAINT_ON)  # the window ended or the depot reset: service
        mode, why = decide(low, _exists(os_mod, path(SAFE_FILE)), maint)
        if mode == MAINT:
            _remove(os_mod, MAINT_FILE)  # one start only
    except Exception as e:  # noqa: BLE001
        mode, why = APP, "mode check failed: %s" % e
    return mode, why


def mark_maintenance():
    """The application entered maintenance: a soft reset comes back to it (mpremote)."""
    try:
        f = open(path(MAINT_ON), "w")
        f.write("1")
        f.close()
    except Exception:  # noqa: BLE001 - without it a soft reset returns to service: acceptable
        pass


def reset():
    """Forget the decision (tests; a soft reset starts a fresh interpreter anyway)."""
    global mode, why
    mode = None
    why = ""


def reset_cause(machine_mod):
    """The reset cause code for the BOOT record, from machine.reset_cause() and the RTC memory
    marker; leaves the marker for the next start. Never raises."""
    try:
        c = machine_mod.reset_cause()
    except Exception:  # noqa: BLE001
        return CAUSE_UNKNOWN
    table = (
        ("PWRON_RESET", CAUSE_POWER_ON),
        ("HARD_RESET", CAUSE_HARD),
        ("WDT_RESET", CAUSE_WATCHDOG),
        ("DEEPSLEEP_RESET", CAUSE_DEEPSLEEP),
        ("SOFT_RESET", CAUSE_SOFT),
        ("BROWNOUT_RESET", CAUSE_BROWNOUT),  # a port that reports it itself
    )
    code = CAUSE_UNKNOWN
    for name, value in table:
        if getattr(machine_mod, name, None) == c:
            code = value
            break
    try:
        rtc = machine_mod.RTC()
        mem = bytes(rtc.memory())
        if code == CAUSE_POWER_ON and mem[: len(_MARK)] == _MARK:
            code = CAUSE_BROWNOUT  # "power-on" with RTC memory intact: the power never left
        if mem[: len(_MARK)] != _MARK:
            rtc.memory(_MARK)  # what a power-up left there is noise
    except Exception:  # noqa: BLE001 - no RTC memory: brown-outs read as power-on
        pass
    return code


def rtc_memory(rtc, data=None):
    """RTC memory for other users, after this module's marker (which they must not overwrite:
    it is how a brown-out is told from a power-up). Returns the bytes after the marker."""
    if data is None:
        mem = bytes(rtc.memory())
        return mem[len(_MARK) :] if mem[: len(_MARK)] == _MARK else b""
    rtc.memory(_MARK + bytes(data))
    return None


def boot_info(d):
    """What a decoded BOOT record says: reset cause, parts down, PSAM, unconfirmed debits."""
    r = d.get("reason", 0)
    mask = d.get("balance_before", 0)
    return {
        "reset_cause": cause_name(r),
        "faults": [name for bit, name in FAULT_PARTS if mask & bit],
        "psam_ok": not d.get("flags", 0) & 0x01,
        "unconfirmed": d.get("amount", 0),
    }


def cause_name(code):
    return CAUSE_NAMES[code] if 0 <= code < len(CAUSE_NAMES) else "other"
