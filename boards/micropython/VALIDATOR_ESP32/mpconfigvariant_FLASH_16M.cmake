# 16 MB flash: room for the two raw blacklist slots and a 1 MiB transaction log.
validator_sdkconfig(${VALIDATOR_BOARD_DEFS_DIR}/sdkconfig.flash_16MiB)

list(APPEND MICROPY_DEF_BOARD
    MICROPY_HW_BOARD_NAME="Fare validator ESP32 16MB"
)
