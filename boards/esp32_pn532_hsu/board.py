# Pin map for the esp32_pn532_hsu validator board (ESP32-WROOM/WROVER module).
# The wiring table in README.md shows the same numbers; change both together.
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

# PSAM slot (ISO 7816): I/O on a UART joined TX/RX through a resistor, so TX is echoed on RX.
# 4 MHz: the LEDC divides 80 MHz exactly with a 50 % duty (3.5712 MHz comes out 3,575,419 Hz).
PSAM = {
    "uart_id": 2,
    "tx": 17,
    "rx": 16,
    "clk": 4,
    "clk_hz": 4000000,
    "reset": 14,
    "echo": True,
    "max_baud": 115200,
}

# UART1 serves the PN532, so the modem takes UART0 once the application starts; holding
# GPIO0 low at power-up keeps the REPL there for depot maintenance (see README).
# Cellular modem (SIM7600 / EC2x / EC200) on its own UART, with the power key and status pins.
MODEM = {"uart_id": 0, "tx": 25, "rx": 26, "baudrate": 115200, "pwrkey": 13, "status": 39}

# Passenger feedback and the SSD1306 128x64 display on I2C0.
FEEDBACK = {"led_green": 32, "led_red": 33, "buzzer": 27}
DISPLAY = {"i2c_id": 0, "sda": 21, "scl": 22, "addr": 0x3C, "width": 128, "height": 64}

# The parts the application asks for (firmware/app.py), built by boards/esp32_common.py.
CONFIG_PATH = "/config.json"
MAINTENANCE = False


def early():
    """From boot.py: GPIO0 held low at power-up keeps UART0 for the REPL (no modem)."""
    global MAINTENANCE
    import machine

    MAINTENANCE = machine.Pin(0, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0


def start():
    import esp32_common

    esp32_common.start()


def make_parts(cfg):
    import esp32_common

    return esp32_common.make_parts(__import__("board"), cfg, maintenance=MAINTENANCE)


def show_fatal(text):
    import esp32_common

    esp32_common.show_fatal(text)
