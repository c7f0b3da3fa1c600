# Runs first at every start. Nothing here may fail: the validator must always reach main.py.
import gc

gc.collect()
try:
    import board

    if hasattr(board, "early"):
        board.early()  # a board's set-up that must come first
except Exception as e:  # noqa: BLE001 - report and go on to main.py
    print("boot.py:", e)
