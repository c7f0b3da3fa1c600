# Runs first at every start. Nothing here may fail: the validator must always reach main.py.
import gc

gc.collect()
try:
    import board

    if hasattr(board, "early"):
        board.early()  # e.g. release the REPL's UART to the modem on the HSU board
except Exception as e:  # noqa: BLE001 - report and go on to main.py
    print("boot.py:", e)
