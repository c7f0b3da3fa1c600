"""firmware/params.py also runs under CPython (a real directory instead of littlefs), which lets
hypothesis throw damaged and re-chunked bundles at the install path: every damaged one is
refused with a reason, the active set stays, and chunking never changes the outcome."""

import os
import tempfile

import bundle
import cardlists as cl
import params
from hypothesis import given, settings
from hypothesis import strategies as st

KEY = b"host-params-secret"
LOST = "3104991585000011383"
NEW = "2482000000000000017"
CFG = {
    "settings": {"dup_tap_s": 30},
    "whitelist": {"local_issuers": ["05212482"], "local_city": "2482", "issuers": ["02002900"]},
    "fares": {"routes": {"101": {"mode": "flat", "fare": 200}}, "card_types": {"1": {}}},
}
BASE = bundle.build(KEY, 3, 0, CFG, cl.blacklist_bytes([LOST]))
NEXT = bundle.build(KEY, 4, 0, CFG, cl.blacklist_bytes([NEW]))


class MemSlot:
    """A raw partition in memory (readblocks with offset, writeblocks erasing whole blocks)."""

    def __init__(self, blocks=8):
        self.data = bytearray(b"\xff" * (4096 * blocks))
        self.blocks = blocks

    def readblocks(self, n, buf, off=0):
        a = n * 4096 + off
        buf[:] = self.data[a : a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if off is None:  # erase, then program
            self.data[n * 4096 : n * 4096 + len(buf)] = buf
            return
        a = n * 4096 + off  # program only: NOR bits go from 1 to 0
        self.data[a : a + len(buf)] = bytes(
            x & y for x, y in zip(self.data[a : a + len(buf)], buf)
        )

    def ioctl(self, op, arg):
        if op == 6:
            self.data[arg * 4096 : (arg + 1) * 4096] = b"\xff" * 4096
            return 0
        return self.blocks if op == 4 else 4096 if op == 5 else 0


def _setup(d, slots):
    p = params.Params(os.path.join(d, "params"), KEY, slots=slots)
    assert p.install_bytes(BASE, 0) == (True, "activated")
    return p


def _still_old(p, d):
    assert p.version == 3
    assert p.blacklist.contains(LOST) and not p.blacklist.contains(NEW)
    names = sorted(os.listdir(os.path.join(d, "params")))
    assert names == ["b3.bnd", "floor", "state"], names
    q = params.Params(os.path.join(d, "params"), KEY, slots=p.slots)
    assert q.load(0) and q.version == 3 and q.blacklist.contains(LOST)
    q.close()


def _damage(data, how, pos, byte):
    pos %= len(data)
    if how == "cut":
        return data[:pos]
    if how == "flip":
        return data[:pos] + bytes([data[pos] ^ (byte or 1)]) + data[pos + 1 :]
    if how == "append":
        return data + bytes([byte])
    return bytes([byte]) * pos  # junk


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["cut", "flip", "append", "junk"]),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=255),
    st.booleans(),
)
def test_damaged_bundles_are_refused_and_change_nothing(how, pos, byte, slot_mode):
    with tempfile.TemporaryDirectory() as d:
        p = _setup(d, [MemSlot(), MemSlot()] if slot_mode else None)
        bad = _damage(NEXT, how, pos, byte)
        ok, reason = p.install_bytes(bad, 0)
        assert not ok and reason
        _still_old(p, d)
        p.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=12), st.booleans())
def test_any_chunking_installs_the_same(sizes, slot_mode):
    with tempfile.TemporaryDirectory() as d:
        p = _setup(d, [MemSlot(), MemSlot()] if slot_mode else None)
        rx = p.receiver(len(NEXT))
        pos = 0
        i = 0
        while pos < len(NEXT):
            n = sizes[i % len(sizes)]
            rx.write(NEXT[pos : pos + n])
            pos += n
            i += 1
        assert rx.finish(0) == (True, "activated")
        assert p.version == 4 and p.blacklist.contains(NEW) and not p.blacklist.contains(LOST)
        p.close()


def test_a_stopped_download_is_refused_and_cleaned():
    with tempfile.TemporaryDirectory() as d:
        p = _setup(d, [MemSlot(), MemSlot()])
        rx = p.receiver(len(NEXT))
        rx.write(NEXT[:7000])
        ok, reason = rx.finish(0)
        assert not ok and "truncated" in reason
        _still_old(p, d)
        rx = p.receiver(len(NEXT))
        rx.write(NEXT[:100])
        rx.abort()
        _still_old(p, d)
        p.close()
