# The unix-port simulation board: the same pin-map shape as the ESP32 boards, with every bus
# backed by the CPython simulators (tools/sim) over a local socket. See docs/architecture.md.
NAME = "unix_sim"

READER = {"chip": "pn532", "bus": "i2c"}
PSAM = {"clk_hz": 3571200}
MODEM = {"dialect": "sim7600"}
FEEDBACK = {"led_green": "green", "led_red": "red", "buzzer": "buzzer"}
DISPLAY = {"addr": 0x3C, "width": 128, "height": 64}
