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
_RING = 64

_level = INFO
_echo = True
_recent = []
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


def recent(n=_RING):
    return _recent[-n:]


def clear():
    _recent.clear()


def find(fragment, level=DEBUG):
    """Kept lines at or above `level` containing `fragment` (tests use this)."""
    return [line for lvl, line in _recent if lvl >= level and fragment in line]


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
        if len(_recent) >= _RING:
            _recent.pop(0)
        _recent.append((level, line))
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
