# Seeded mutation generators shared by the MicroPython fuzz tests (tests/mpy/test_fuzz_*.py) and
# the host ones (tests/host/test_fuzz_*.py). Plain Python that runs unchanged on both runtimes:
# no random module (MicroPython's lacks Random instances), no f-strings nesting, no typing.
# MicroPython tests put <repo>/tools on sys.path and `import fuzzgen`; the host does
# `from tools import fuzzgen`. See docs/robustness.md.
import os

DEFAULT_SEED = 0x7A11
# Bytes that tend to sit on a parser's edges: lengths, status words, TLV and frame markers.
INTERESTING = (0x00, 0x01, 0x02, 0x7F, 0x80, 0x81, 0x82, 0xFE, 0xFF, 0x90, 0x61, 0x6C, 0xD5, 0x0D)


def long_mode():
    """True when FUZZ_LONG=1 (make fuzz): counts go up about twenty times."""
    return os.getenv("FUZZ_LONG") == "1"


def count(n):
    """The iteration count for a test: n in the normal run, 20 n in the long mode."""
    return n * 20 if long_mode() else n


def seed(offset=0):
    """The base seed: FUZZ_SEED from the environment (decimal or 0x hex) or the default; a test
    adds its own offset so that each test has its own stream."""
    s = os.getenv("FUZZ_SEED")
    base = int(s, 0) if s else DEFAULT_SEED
    return (base + offset) & 0xFFFFFFFF


class Rng:
    """xorshift32: the same stream on CPython and MicroPython for the same seed."""

    def __init__(self, seed_value):
        self.seed = seed_value & 0xFFFFFFFF
        self.state = self.seed or 0x9E3779B9
        for _ in range(4):
            self.next()

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x & 0xFFFFFFFF
        return self.state

    def below(self, n):
        """0 <= value < n (n >= 1)."""
        return self.next() % n if n > 1 else 0

    def chance(self, num, den):
        return self.below(den) < num

    def byte(self):
        if self.below(4) == 0:
            return INTERESTING[self.below(len(INTERESTING))]
        return self.next() & 0xFF

    def bytes(self, n):
        return bytes(self.byte() for _ in range(n))

    def choice(self, seq):
        return seq[self.below(len(seq))]


def mutate(rng, data, ops=0, tokens=()):
    """A damaged copy of `data` (bytes): 1-4 random edits (bit flip, byte set, interesting
    byte, insert, delete, truncate, duplicate a slice, random tail, splice in a token).
    Returns bytes; may be empty."""
    b = bytes(data)
    for _ in range(ops or 1 + rng.below(4)):
        op = rng.below(10 if tokens else 9)
        n = len(b)
        if op <= 2 and n:
            i = rng.below(n)
            if op == 0:
                v = b[i] ^ (1 << rng.below(8))
            elif op == 1:
                v = rng.next() & 0xFF
            else:
                v = INTERESTING[rng.below(len(INTERESTING))]
            b = b[:i] + bytes((v,)) + b[i + 1 :]
        elif op == 3:
            i = rng.below(n + 1)
            b = b[:i] + rng.bytes(1 + rng.below(4)) + b[i:]
        elif op == 4 and n:
            i = rng.below(n)
            b = b[:i] + b[i + 1 + rng.below(4) :]
        elif op == 5 and n:
            b = b[: rng.below(n)]
        elif op == 6 and n:
            i = rng.below(n)
            j = min(n, i + 1 + rng.below(8))
            k = rng.below(n + 1)
            b = b[:k] + b[i:j] + b[k:]
        elif op == 7:
            b += rng.bytes(1 + rng.below(16))
        elif op == 8 and n:
            # a length-looking byte: one more, one less, or its top bit flipped
            i = rng.below(n)
            b = b[:i] + bytes(((b[i] + rng.choice((1, 0xFF, 0x80))) & 0xFF,)) + b[i + 1 :]
        elif op == 9:
            i = rng.below(n + 1)
            b = b[:i] + rng.choice(tokens) + b[i:]
    return bytes(b)


def garble(rng, data, tokens=()):
    """Mostly a mutation of `data`; one time in eight pure random bytes of a random length."""
    if rng.below(8) == 0:
        return rng.bytes(rng.below(2 * len(data) + 4))
    return mutate(rng, data, 0, tokens)


def mutate_text(rng, text, tokens=()):
    """A damaged copy of an ASCII line (str), for AT responses and HTTP headers."""
    raw = mutate(rng, text.encode(), 0, tuple(t.encode() for t in tokens))
    return "".join(chr(c) if c < 0x80 else "?" for c in raw)


class Tally:
    """Outcome counts for the summary line a test prints."""

    def __init__(self):
        self.counts = {}

    def add(self, what):
        self.counts[what] = self.counts.get(what, 0) + 1

    def get(self, what):
        return self.counts.get(what, 0)

    def total(self):
        return sum(self.counts.values())

    def summary(self):
        return " ".join("%s=%d" % kv for kv in sorted(self.counts.items()))


def report(name, seed_value, n, tally=None):
    """The line each fuzz test leaves in its output: name, seed, count, outcomes."""
    line = "fuzz %s seed=0x%08x (FUZZ_SEED=0x%08x) n=%d long=%d" % (
        name,
        seed_value,
        seed(0),
        n,
        1 if long_mode() else 0,
    )
    if tally is not None:
        line += " " + tally.summary()
    return line
