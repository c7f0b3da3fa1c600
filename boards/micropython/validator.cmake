# Shared by the validator board definitions (VALIDATOR_ESP32, VALIDATOR_ESP32_S3), included from
# their mpconfigboard.cmake.
#
# ESP-IDF resolves a relative CONFIG_PARTITION_TABLE_CUSTOM_FILENAME against the project
# (ports/esp32), not the board folder, and MicroPython copies sdkconfig fragments without
# expanding anything. So a fragment that names a file of this repository writes
# @VALIDATOR_BOARDS_DIR@ (this repository's boards/ folder) and is added through
# validator_sdkconfig(), which copies it into the build folder with that path filled in.
get_filename_component(VALIDATOR_BOARDS_DIR ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)
get_filename_component(VALIDATOR_BOARD_DEFS_DIR ${CMAKE_CURRENT_LIST_DIR} ABSOLUTE)

function(validator_sdkconfig fragment)
    get_filename_component(name ${fragment} NAME)
    set(out ${CMAKE_BINARY_DIR}/validator.${name})
    configure_file(${fragment} ${out} @ONLY)
    set(SDKCONFIG_DEFAULTS ${SDKCONFIG_DEFAULTS} ${out} PARENT_SCOPE)
endfunction()
