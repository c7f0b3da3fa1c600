# Runs first at every start. Nothing here may fail: the validator must always reach main.py,
# unless safe mode stops it on purpose (docs/boot.md): a pin held low at power-up or /safemode.
import gc

gc.collect()
board = None
try:
    import board

    if hasattr(board, "early"):
        board.early()  # a board's set-up that must come first
except Exception as e:  # noqa: BLE001 - report and go on to main.py
    print("boot.py:", e)
try:
    import bootmode

    _mode, _why = bootmode.select(board)
except Exception as e:  # noqa: BLE001 - no mode module: the application starts
    print("boot.py:", e)
    _mode = None
if _mode == "safe":
    print("SAFE MODE (%s): REPL without the application and without the watchdog" % _why)
    # An exception ends boot.py: MicroPython then skips main.py and starts the REPL.
    raise bootmode.SafeMode(_why)
