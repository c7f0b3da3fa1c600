// The fare validator on an ESP32-S3 module (boards/micropython/VALIDATOR_ESP32_S3).
#ifndef MICROPY_HW_BOARD_NAME
// A variant sets its own (mpconfigvariant_*.cmake).
#define MICROPY_HW_BOARD_NAME "Fare validator ESP32-S3"
#endif
#define MICROPY_HW_MCU_NAME "ESP32S3"

// The REPL lives on the native USB port (TinyUSB CDC, the port's default on the S3), never on
// UART0: all three UARTs belong to the reader, the PSAM and the modem.
#define MICROPY_HW_ENABLE_UART_REPL (0)

// No Bluetooth: the validator talks over its cellular modem (sdkconfig.board leaves
// CONFIG_BT_ENABLED off to match).
#define MICROPY_PY_BLUETOOTH (0)
