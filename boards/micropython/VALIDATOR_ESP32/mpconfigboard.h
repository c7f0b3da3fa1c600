// The fare validator on an ESP32 module (boards/micropython/VALIDATOR_ESP32).
#ifndef MICROPY_HW_BOARD_NAME
// A variant sets its own (mpconfigvariant_*.cmake).
#define MICROPY_HW_BOARD_NAME "Fare validator ESP32"
#endif
#define MICROPY_HW_MCU_NAME "ESP32"

// No Bluetooth: the validator talks over its cellular modem; the BLE stack would cost flash and
// heap (sdkconfig.board leaves CONFIG_BT_ENABLED off to match).
#define MICROPY_PY_BLUETOOTH (0)
