# A small logger for the validator: leveled, named, printed to the console and kept in a ring of
# recent lines for the maintenance view and for tests to assert on. micropython-lib's `logging`
# works too on a board, but its PyPI release is stale and we need the in-RAM ring anyway.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


DEBUG = const(10)
INFO = const(20)
WARNING = const(30)
ERROR = const(40)

_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARN", ERROR: "ERROR"}
# Recent lines live in one preallocated byte ring, not as a list of strings: 64 kept lines were
# over 5 KB of small objects scattered over a board's heap, churned one per tap. Each record is
# level (1 byte), length (1 byte), text (at most 255 bytes); a record never wraps: 0xFF marks
# where the ring went back to its start.
_CAP = const(3072)
_WRAP = const(0xFF)
_MAX_LINE = const(255)

_level = INFO
_echo = True
_ring = None  # made at the first kept line: a quiet program pays nothing
_pos = [0, 0, 0]  # oldest record, next write, records kept
_sinks = []


def set_level(level, echo=None):
    global _level, _echo
    _level = level
    if echo is not None:
        _echo = echo


def add_sink(fn):
    """fn(level, name, text) is called for every kept line (status display, journal notes)."""
    _sinks.append(fn)


def remove_sink(fn):
    if fn in _sinks:
        _sinks.remove(fn)


def _drop_oldest():
    start = _pos[0]
    start += 2 + _ring[start + 1]
    _pos[2] -= 1
    if start >= _CAP or _ring[start] == _WRAP or not _pos[2]:
        start = 0 if _pos[2] else _pos[1]
    _pos[0] = start


def _keep(level, line):
    global _ring
    if _ring is None:
        _ring = bytearray(_CAP)
    data = line.encode()
    n = len(data)
    if n > _MAX_LINE:
        n = _MAX_LINE
    need = 2 + n
    end = _pos[1]
    if end + need > _CAP:
        while _pos[2] and _pos[0] >= end:  # the records between here and the end go
            _drop_oldest()
        if end < _CAP:
            _ring[end] = _WRAP
        end = 0
        if not _pos[2]:
            _pos[0] = 0
    while _pos[2] and end <= _pos[0] < end + need:
        _drop_oldest()
    if not _pos[2]:
        _pos[0] = end
    _ring[end] = level
    _ring[end + 1] = n
    _ring[end + 2 : end + 2 + n] = data[:n] if n < len(data) else data
    _pos[1] = end + need
    _pos[2] += 1


def _lines():
    out = []
    pos = _pos[0]
    for _ in range(_pos[2]):
        if pos >= _CAP or _ring[pos] == _WRAP:
            pos = 0
        n = _ring[pos + 1]
        out.append((_ring[pos], bytes(_ring[pos + 2 : pos + 2 + n]).decode("utf-8", "replace")))
        pos += 2 + n
    return out


def recent(n=64):
    """The last n kept lines, oldest first, as (level, text)."""
    lines = _lines()
    return lines[-n:] if n < len(lines) else lines


def clear():
    _pos[0] = _pos[1] = _pos[2] = 0


def find(fragment, level=DEBUG):
    """Kept lines at or above `level` containing `fragment` (tests use this)."""
    return [line for lvl, line in _lines() if lvl >= level and fragment in line]


class Logger:
    def __init__(self, name):
        self.name = name

    def log(self, level, msg, *args):
        if level < _level:
            return
        if args:
            try:
                msg = msg % args
            except (TypeError, ValueError):
                msg = "%s %r" % (msg, args)
        line = "%s %s: %s" % (_NAMES.get(level, str(level)), self.name, msg)
        _keep(level, line)
        if _echo:
            print(line)
        for sink in _sinks:
            sink(level, self.name, msg)

    def debug(self, msg, *args):
        self.log(DEBUG, msg, *args)

    def info(self, msg, *args):
        self.log(INFO, msg, *args)

    def warning(self, msg, *args):
        self.log(WARNING, msg, *args)

    def error(self, msg, *args):
        self.log(ERROR, msg, *args)


def get(name):
    return Logger(name)
