# The application's decision for one card (firmware/decide.py: blacklist, whitelist, fare), run
# alone `n` times for callgrind's instruction count: tools/benchmarks.py counts n and 0 runs after
# the same set-up and takes the difference per decision (decide_instructions_32). The set-up is
# the application's (tests/mpy/app_rig.py with the example bundle, as app_heap.py): one real tap
# through Validator.handle_tap gives the card's info, the reader link and the time the decision
# saw; the counted loop repeats that decision for the card's next presentation (97 s later, as
# Rig.tap presents it; the engine's state is not advanced, so every run takes the same path). It
# is a sale: the answer is checked, so a refusal path is never what is counted.
# argv: n, image path prefix, bundle path, mode. Mode "marks" (what the bench counts): each
# decision follows a collection, as on the validator, whose tap loop collects once the card has
# left (Validator.tap_loop); gc.isenabled() before it and micropython.opt_level() after it, two C
# functions nothing else calls, let callgrind zero and dump around each decision alone
# (--zero-before / --dump-before, as tools/bench_mpy/tap.py's mode 2). Otherwise the n decisions
# run back to back with the collector off (the difference of n and 0 decisions): allocation
# then gets dearer with every decision, as the garbage of the earlier ones is not collected.
import gc
import sys

import app_rig
import benchlib

n = benchlib.arg(1, 30)
IMG = sys.argv[2] if len(sys.argv) > 2 else "/tmp/bench_decide"
BND = sys.argv[3] if len(sys.argv) > 3 else "bench/out/bundle.bin"
MARKS = len(sys.argv) > 4 and sys.argv[4] == "marks"

# The file system on app_rig.FileDev (a host file behind esp32.Partition's interface), as the
# Rig's default: its readblocks reads into littlefs's buffer like the partition's C does.
# (ramdisk.RAMBlockDev, used here before, copies every read into a new bytes object in Python:
# 39 k of its instructions per decision were the stand-in's, not the firmware's.)
rig = app_rig.Rig(BND, img=IMG)
assert rig.booted
v = rig.v
seen = []


class _Capture:
    def __init__(self, d):
        self.d = d

    def prepare(self, *a):
        return self.d.prepare(*a)

    def __call__(self, info):
        seen.append((dict(info), self.d.link, self.d.now, self.d.accept))
        return self.d(info)

    def __getattr__(self, name):
        return getattr(self.d, name)


real = v.decider
v.decider = _Capture(real)
reason = rig.tap()
v.decider = real
assert seen, "the tap did not reach the decision: %r" % (reason,)
info, link, now, accept = seen[0]
now += 97  # the next presentation of this card, past the duplicate window (as Rig.tap)
real.prepare(link, now, accept)
first = real(info)
assert not isinstance(first, str), "the decision refused the sale: %r" % (first,)
if MARKS:
    import micropython

    micropython.opt_level()  # the set-up's dump, which the bench skips
    for _ in range(n):
        gc.collect()
        gc.isenabled()
        real.prepare(link, now, accept)
        real(info)
        micropython.opt_level()
else:
    # The application collects once the card has left (Validator.tap_loop), not while the
    # rider waits: no collection inside the counted decisions.
    gc.collect()
    gc.disable()
    for _ in range(n):
        real.prepare(link, now, accept)
        real(info)
    gc.enable()
rig.close()
benchlib.emit(decisions=n, tap_reason=reason, fare_status=first.status)
