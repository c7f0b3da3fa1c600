"""Lets plain-Python firmware and driver modules import under CPython for fuzzing.

Explicit and small: a `micropython` module with const/native/viper (plus viper's `ptr8`, the
identity: a bytearray indexes as unsigned bytes already), the `time.ticks_*` and
`time.sleep_ms/us` functions MicroPython adds to `time` (on a virtual clock), and firmware/ +
drivers/ on sys.path.
Nothing else is faked; a module that needs more (machine pins, littlefs, sockets) is fuzzed
through its own fakes in its target, or stays with its MicroPython mutation fuzzer.
"""

import os
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PERIOD = 1 << 30  # MicroPython's ticks wrap (TICKS_PERIOD on the unix port)
# A virtual clock: every ticks_ms() read moves it 1 ms, a sleep moves it by its length. Deadline
# loops then end after a bounded number of reads, nothing really sleeps, and an input replays
# the same way every time (a coverage-guided fuzzer needs that).
_now_us = [0]


def _ident(x):
    return x


def _ticks_ms():
    _now_us[0] += 1000
    return (_now_us[0] // 1000) & (_PERIOD - 1)


def _ticks_us():
    _now_us[0] += 50
    return _now_us[0] & (_PERIOD - 1)


def _ticks_add(t, d):
    return (t + d) & (_PERIOD - 1)


def _ticks_diff(a, b):
    return ((a - b + _PERIOD // 2) & (_PERIOD - 1)) - _PERIOD // 2


def _sleep_ms(ms):
    if ms > 0:
        _now_us[0] += int(ms * 1000)


def _sleep_us(us):
    if us > 0:
        _now_us[0] += int(us)


def install():
    """Idempotent. Call before importing any firmware/driver module."""
    for sub in ("firmware", "drivers"):
        path = os.path.join(ROOT, sub)
        if path not in sys.path:
            sys.path.insert(0, path)
    if "micropython" not in sys.modules:
        mp = types.ModuleType("micropython")
        mp.const = _ident
        mp.native = _ident
        mp.viper = _ident
        sys.modules["micropython"] = mp
    import builtins

    if not hasattr(builtins, "ptr8"):
        builtins.ptr8 = _ident  # viper's byte pointer (tests/mpy/memlog.py's copy loops)
    for name, fn in (
        ("ticks_ms", _ticks_ms),
        ("ticks_us", _ticks_us),
        ("ticks_add", _ticks_add),
        ("ticks_diff", _ticks_diff),
        ("sleep_ms", _sleep_ms),
        ("sleep_us", _sleep_us),
    ):
        setattr(time, name, fn)


class Escape(AssertionError):
    """An invariant of docs/robustness.md broken inside a target: the finding."""


def check(cond, what):
    if not cond:
        raise Escape(what)
