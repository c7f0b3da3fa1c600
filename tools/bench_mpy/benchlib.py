# Helpers shared by the MicroPython benchmark scripts (run by tools/benchmarks.py under the unix
# port): results are printed as one line "BENCH <json>" each, read back by the host.
import json
import time

_NOW0 = time.ticks_us()


def emit(**kv):
    print("BENCH " + json.dumps(kv))


def median(xs):
    s = sorted(xs)
    n = len(s)
    if not n:
        return 0
    if n & 1:
        return s[n // 2]
    return (s[n // 2 - 1] + s[n // 2]) / 2


def busy(n):
    """The fixed MicroPython baseline: n turns of a small integer loop (no allocation)."""
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFF
    return x


def busy_us(n=200000, reps=5):
    """Median microseconds of busy(n): absolute times drift, ratios against this do less."""
    out = []
    for _ in range(reps):
        t0 = time.ticks_us()
        busy(n)
        out.append(time.ticks_diff(time.ticks_us(), t0))
    return median(out)


def cpu_us():
    """This process's CPU time (user + system) in microseconds from /proc (10 ms ticks): other
    processes on a shared machine do not inflate it as they inflate wall time. None where there
    is no /proc (a board: use wall time there)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().split(")")[-1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * 10000  # USER_HZ 100


def arg(i, default):
    import sys

    return int(sys.argv[i]) if len(sys.argv) > i else default
