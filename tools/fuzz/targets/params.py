"""Parameter installs (firmware/params.py Params.install_bytes and its Receiver) on a host store:
a real directory per input (copied from a template holding the honest version 3) and, in slot
mode, two in-memory raw partitions (tests/host/test_params_host.py's MemSlot). This is the path
tests/mpy/test_fuzz_params.py runs on littlefs, with coverage guidance: section tables, configs
(fares, whitelist, settings), full blacklists into a file or a slot, overlay and merged deltas
(firmware/blmerge.py), activation times, the version floor.

Input: byte 0 picks file or slot mode, the bundle to damage (a full set v4, an overlay delta on
v3, a merged delta on v3, a config-only v4), whether the damage is re-signed with the device key
(so it gets past the MAC), and whether the bundle arrives through a Receiver in pieces (byte 1
gives the piece size). Then either edits (3 bytes each: op in the top 2 bits of the first, a
14-bit position, a value: set, add, truncate, insert) or, with byte 0's top bit, JSON text that
becomes the config of a correctly signed v4 (hostile types, ranges, keys).
Invariants (docs/robustness.md): the install gives (True, "activated"/"pending") or (False,
reason) and nothing escapes; unsigned damage is refused; a refused bundle leaves version,
blacklist, the directory's files and the active slot as they were; an accepted one survives a
reload (a fresh Params on the same files loads the same version and the tap's lookup gives a
verdict). Then the
honest next version installs and is active with its blacklist.
"""

import os
import shutil
import sys
import tempfile

from tools.fuzz import shim

shim.install()
if os.path.join(shim.ROOT, "tests", "host") not in sys.path:
    sys.path.append(os.path.join(shim.ROOT, "tests", "host"))

import json  # noqa: E402

import blmerge  # noqa: E402
import bundle  # noqa: E402
import cardlists as cl  # noqa: E402
import params  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "params"
KEY = b"host-params-secret"
LOST = "3104991585000011383"
NEW = "2482000000000000017"
ADD = 2482000000000000025
NOW = 100
CFG = {
    "settings": {"dup_tap_s": 30},
    "whitelist": {"local_issuers": ["05212482"], "local_city": "2482", "issuers": ["02002900"]},
    "fares": {"routes": {"101": {"mode": "flat", "fare": 200}}, "card_types": {"1": {}}},
}
_BL3 = cl.blacklist_bytes([LOST])
_BL_NEW = cl.blacklist_bytes([NEW])
BASE = bundle.build(KEY, 3, 0, CFG, _BL3)
_LOST_KEY = cl.card_key(LOST)
_VERDICTS = (cl.OK, cl.BLACKLISTED, cl.LIST_UNAVAILABLE)
_MERGED = blmerge.result_digest({_LOST_KEY, ADD})
BASES = (
    bundle.build(KEY, 4, 0, CFG, _BL_NEW),
    bundle.build(KEY, 4, 0, None, None, (3, [ADD], [])),
    bundle.build(KEY, 4, 0, None, None, (3, [ADD], [], _MERGED)),
    bundle.build(KEY, 4, 0, CFG),
)


class MemSlot:
    """A raw partition in memory (as tests/host/test_params_host.py's, kept here so the target
    does not import a test module): readblocks with offset, writeblocks erasing whole blocks or
    programming (1 -> 0 bits only) at an offset, ioctl 4/5/6."""

    def __init__(self, data):
        self.data = bytearray(data)
        self.blocks = len(data) // 4096

    def readblocks(self, n, buf, off=0):
        a = n * 4096 + off
        buf[:] = self.data[a : a + len(buf)]

    def writeblocks(self, n, buf, off=None):
        if off is None:
            self.data[n * 4096 : n * 4096 + len(buf)] = buf
            return
        a = n * 4096 + off
        self.data[a : a + len(buf)] = bytes(
            x & y for x, y in zip(self.data[a : a + len(buf)], buf)
        )

    def ioctl(self, op, arg):
        if op == 6:
            self.data[arg * 4096 : (arg + 1) * 4096] = b"\xff" * 4096
            return 0
        return self.blocks if op == 4 else 4096 if op == 5 else 0


class Templates:
    """Two parameter stores (file mode, slot mode) with one bundle installed, made once and
    copied fresh for every input (an install per input would cost more than the input).
    open(root, slots) -> a params.Params over them; the chunkdl target shares this."""

    def __init__(self, prefix, first, first_at=0):
        base = os.getenv("FUZZ_WORKDIR") or os.path.join(shim.ROOT, "bench", "out")
        os.makedirs(base, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=base)
        self.templates = []
        for slot_mode in (False, True):
            root = os.path.join(self.dir, "t%d" % slot_mode)
            slots = [MemSlot(b"\xff" * 16384), MemSlot(b"\xff" * 16384)] if slot_mode else None
            p = self.open(root, slots)
            assert p.install_bytes(first, first_at) == (True, "activated")
            p.close()
            files = {}
            for n in os.listdir(root):
                with open(os.path.join(root, n), "rb") as f:
                    files[n] = f.read()
            self.templates.append((files, [bytes(s.data) for s in slots] if slots else None))
        self.work = os.path.join(self.dir, "w")

    def open(self, root, slots):
        raise NotImplementedError

    def fresh(self, slot_mode):
        """A copy of the template in the work directory -> its slots (None in file mode)."""
        files, slots = self.templates[slot_mode]
        shutil.rmtree(self.work, ignore_errors=True)
        os.mkdir(self.work)
        for n, data in files.items():
            with open(os.path.join(self.work, n), "wb") as f:
                f.write(data)
        return [MemSlot(s) for s in slots] if slots else None


class _World(Templates):
    """v3 installed in both modes."""

    def __init__(self):
        Templates.__init__(self, "fuzz-params-", BASE)

    def open(self, root, slots):
        return params.Params(root, KEY, slots=slots)

    def fresh(self, slot_mode):
        p = self.open(self.work, Templates.fresh(self, slot_mode))
        check(p.load(0) and p.version == 3, "template did not load")
        return p


_world = None


def _snapshot(p):
    """The directory's files and the active slot (the free one takes a download's blacklist
    before its MAC is checked: that is allowed to change)."""
    out = {}
    for n in sorted(os.listdir(p.root)):
        with open(os.path.join(p.root, n), "rb") as f:
            out[n] = f.read()
    active = p._slot_of((p.state or {}).get("active")) if p.slots else None
    return out, bytes(p.slots[active].data) if active is not None else None


def _edit(data, script):
    data = bytearray(data)
    for i in range(0, len(script) - 2, 3):
        a, b, v = script[i], script[i + 1], script[i + 2]
        op, pos = a >> 6, ((a & 0x3F) << 8 | b)
        if op == 0:
            if pos < len(data):
                data[pos] = v
        elif op == 1:
            if pos < len(data):
                data[pos] = (data[pos] + v) & 0xFF
        elif op == 2:
            del data[pos:]
        else:
            data[pos:pos] = bytes((v,))
    return bytes(data)


def _install(p, data, pieces):
    if not pieces:
        return p.install_bytes(data, NOW)
    rx = p.receiver(len(data))
    for i in range(0, len(data), pieces):
        rx.write(data[i : i + pieces])
    return rx.finish(NOW)


def one_input(data):
    global _world
    if len(data) < 2:
        return
    if _world is None:
        _world = _World()
    ctl, rest = data[0], bytes(data[2:])
    slot_mode = ctl & 1
    pieces = data[1] * 37 + 1 if ctl & 0x10 else 0
    if ctl & 0x80:
        try:
            cfg = json.loads(rest)
        except (ValueError, RecursionError):
            return
        try:
            bad = bundle.build(KEY, 4, 0, cfg)
        except (TypeError, ValueError, RecursionError):
            return  # not JSON-able back (NaN is, keys must be strings): nothing to send
        signed = True
    else:
        orig = BASES[ctl >> 1 & 3]
        bad = _edit(orig, rest)
        signed = bool(ctl & 8)
        if signed and len(bad) >= bundle.HEADER + bundle.MAC_LEN:
            bad = bundle.resign(bad, KEY)
    p = _world.fresh(slot_mode)
    before = _snapshot(p)
    res = _install(p, bad, pieces)
    check(
        isinstance(res, tuple) and len(res) == 2 and res[0] in (True, False), "result %r" % (res,)
    )
    ok, why = res
    check(isinstance(why, str) and why, "reason %r" % (why,))
    if not signed:
        check(not ok or bad == orig, "unsigned damage accepted: %s" % why)
    if not ok:
        check(p.version == 3 and p.blacklist.contains(LOST), "refused, but the set changed")
        check(_snapshot(p) == before, "refused (%s), but files or slots changed" % why)
        nxt = BASES[0]
        v = 4
    else:
        check(why in ("activated", "pending"), "accepted as %r" % why)
        q = params.Params(p.root, KEY, slots=p.slots)
        loaded = q.load(NOW)
        check(loaded and q.version == p.version, "reload: %s v%d" % (loaded, q.version))
        # the tap's lookup: a signed list that is inconsistent inside is LIST_UNAVAILABLE
        # (install checks its size, not every block: docs/robustness.md observations)
        check(cl.check_blacklist(q.blacklist, NEW) in _VERDICTS, "lookup")
        q.close()
        v = max(p.version, ((p.state or {}).get("pending") or {}).get("version", 0)) + 1
        if v > bundle.VERSION_MAX:
            p.close()
            return
        nxt = bundle.build(KEY, v, 0, CFG, _BL_NEW)
    res = p.install_bytes(nxt, NOW)
    check(res == (True, "activated"), "honest v%d: %r" % (v, res))
    check(p.version == v and p.blacklist.contains(NEW), "honest set not active")
    check(not p.blacklist.contains(LOST), "old blacklist still in force")
    p.close()


def close():
    """Drop the work directory (tests call this; a fuzzing process leaves it under bench/out)."""
    global _world
    if _world is not None:
        shutil.rmtree(_world.dir, ignore_errors=True)
        _world = None


SEEDS = (
    b"\x08\x00",
    b"\x09\x00",
    b"\x0a\x00",
    b"\x0c\x00",
    b"\x0e\x00",
    b"\x0f\x00",
    b"\x18\x03",
    b"\x19\x40",
    b"\x00\x00\x00\x05\x07",
    b"\x08\x00\x00\x0c\x05",
    b"\x08\x00\x80\x40\x00",
    b"\x0a\x00\x00\x20\x09",
    b"\x0c\x00\x00\x2c\x00",
    b"\x80\x00" + json.dumps(CFG).encode(),
    b"\x81\x00" + json.dumps(CFG).encode(),
    b'\x80\x00{"settings": {"dup_tap_s": -1}}',
    b'\x80\x00{"whitelist": {"local_city": -1}}',
    b'\x80\x00{"fares": {"routes": {"101": {"mode": "zone", "fare": []}}}}',
)
