# Assertion helpers for MicroPython-side tests (see tests/README.md).
# Plain `assert` works too; these add messages that show both values.
import sys


class Skip(Exception):
    pass


def skip(reason):
    raise Skip(reason)


def call(fn):
    """Call a test function; an `async def` test is run to completion on a fresh asyncio loop."""
    result = fn()
    if type(result).__name__ == "generator":
        import asyncio

        try:
            asyncio.run(result)
        finally:
            asyncio.new_event_loop()


def eq(got, want, msg=""):
    if got != want:
        raise AssertionError("%s\n  got:  %r\n  want: %r" % (msg or "not equal", got, want))


def ne(got, other, msg=""):
    if got == other:
        raise AssertionError("%s: both are %r" % (msg or "unexpectedly equal", got))


def true(value, msg=""):
    if not value:
        raise AssertionError(msg or "expected a true value, got %r" % (value,))


def false(value, msg=""):
    if value:
        raise AssertionError(msg or "expected a false value, got %r" % (value,))


def hex_eq(got, want, msg=""):
    """Compare byte strings, showing both in hex."""
    if bytes(got) != bytes(want):
        raise AssertionError(
            "%s\n  got:  %s\n  want: %s"
            % (msg or "bytes differ", bytes(got).hex(), bytes(want).hex())
        )


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and require exc_type (or a subclass); return the exception for further checks."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    except BaseException as e:  # noqa: B036
        raise AssertionError("expected %s, got %s: %r" % (exc_type.__name__, type(e).__name__, e))
    raise AssertionError("expected %s, nothing was raised" % exc_type.__name__)


async def araises(exc_type, coro):
    """The asyncio version of raises(): await coro and require exc_type."""
    try:
        await coro
    except exc_type as e:
        return e
    except BaseException as e:  # noqa: B036
        raise AssertionError("expected %s, got %s: %r" % (exc_type.__name__, type(e).__name__, e))
    raise AssertionError("expected %s, nothing was raised" % exc_type.__name__)


def between(value, low, high, msg=""):
    if not (low <= value <= high):
        raise AssertionError("%s: %r not in [%r, %r]" % (msg or "out of range", value, low, high))


def log(*args):
    """Print a line that shows up with the test's report (figures, seeds, counts)."""
    print(*args)
    sys.stdout.flush() if hasattr(sys.stdout, "flush") else None


def repo_root():
    import os

    return os.getenv("REPO_ROOT") or "."


def param():
    """The value this run of a `params=a,b,c` file stands for (tests/README.md); None without."""
    import os

    return os.getenv("MPY_PARAM")


def only(*values):
    """Decorator: the test belongs to the runs of these `params=` values only. The pytest plugin
    reads it (by name, from the source) and collects the test for those runs alone; run by hand
    for another value, the test skips."""

    def deco(fn):
        def run():
            if param() not in values:
                skip("only for %s" % ", ".join(values))
            return fn()

        return run

    return deco
