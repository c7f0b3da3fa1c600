"""Simulators of everything outside the ESP32: cards, PSAM, NFC chips, modem (CPython)."""
