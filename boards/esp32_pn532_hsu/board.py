# Pin map for the esp32_pn532_hsu validator board (ESP32-WROOM/WROVER module).
# The wiring table in README.md shows the same numbers; change both together. The PSAM slot,
# modem, LEDs, buzzer and display pins are the ones every board shares (boards/esp32_common.py).
NAME = "esp32_pn532_hsu"

READER = {
    "chip": "pn532",
    "bus": "uart",
    "uart_id": 1,
    "tx": 18,
    "rx": 19,
    "baudrate": 115200,
    "irq": 34,
    "reset": 15,
}

# UART1 serves the PN532, so the modem takes UART0 once the application has started; holding
# GPIO0 low at power-up keeps the REPL there for depot maintenance (see README).
from esp32_common import CONFIG_PATH, DISPLAY, FEEDBACK, PSAM, show_fatal, start  # noqa: E402, F401

MODEM = {"uart_id": 0, "tx": 25, "rx": 26, "baudrate": 115200, "pwrkey": 13, "status": 39}
MAINTENANCE = False


def early():
    """From boot.py: GPIO0 held low at power-up keeps UART0 for the REPL (no modem)."""
    global MAINTENANCE
    import machine

    MAINTENANCE = machine.Pin(0, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0


def make_parts(cfg):
    import esp32_common

    return esp32_common.board_parts(cfg, maintenance=MAINTENANCE)
