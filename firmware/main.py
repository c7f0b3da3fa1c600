# Runs after boot.py. The whole application lives in app.py (compiled); this stays tiny so a
# technician can read it on the device.
import app
import board

app.main(board)
