"""Shared pytest set-up: the MicroPython/mpy-cross plugin and fixtures every host test can use."""

pytest_plugins = ["tests.mpy_plugin"]
