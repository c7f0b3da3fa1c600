"""Chunked download of a fleet-signed bundle (firmware/chunkdl.py over firmware/params.py and the
format-2 checks of firmware/bundle.py) on a host store: a directory per input copied from a
template with the fleet-signed v3 active (file mode, or two in-memory slots), a ranged fetch
steered by the input, power cuts with a reload and resume from the checkpoint.

Input: byte 0 picks file or slot mode and the bundle: the honest v4; its manifest (head and chunk
hashes) edited then re-signed with the fleet key (so the fuzzer works past the signature on
chunk size and count, scope, window, version); the manifest or body edited and not re-signed;
the body edited with its chunk hashes recomputed and re-signed (the format-2 body header and
sections behind a good manifest). Byte 1: the number of 3-byte edits that follow (op, 14-bit
position, value: set, xor, truncate, insert), then the fetch window. The rest steers one fetch
each: honest, cut after some bytes, one byte of the body damaged, short data, tiny pieces, a
power cut (the store is reloaded and the download resumed from its checkpoint), extra bytes, a
failure before any byte. When the script ends the network is honest.

Invariants (docs/robustness.md): run() gives (True, "activated"/"pending") or (False, reason),
or raises the transport's own error after too many failures in a row; no bundle or params
error escapes; the honest v4 is installed exactly (damage in transit is fetched again, never
installed); a bundle not re-signed is never accepted; a refused one leaves v3 active and no
download files behind; an accepted one survives a reload. Then a pending checkpoint resumes, or
a fresh download of the honest next version runs, on an honest network, and activates.

The chunk checkpoint interval is set to every request (chunkdl._CHECKPOINT = 1) so power cuts
reach the resume path; P-256 verification (pure Python, fuzzed by the `signed` target) runs
uninstrumented here and is memoised per (key, digest, signature): it is a pure function.
"""

import os
import shutil

from tools.fuzz import shim

shim.install()

import bundle  # noqa: E402
import cardlists as cl  # noqa: E402
import chunkdl  # noqa: E402
import p256  # noqa: E402
import params  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from tools import params_sign  # noqa: E402
from tools.fuzz.shim import check  # noqa: E402
from tools.fuzz.targets.params import (  # noqa: E402
    _VERDICTS,
    CFG,
    LOST,
    NEW,
    Templates,
)

NAME = "chunkdl"
NOW = 100
KEY = ec.derive_private_key(0x1111_2222_3333, ec.SECP256R1())
SCOPE = {"operator": 7, "city": "2482", "route": 12, "group": 3}
_BL3 = cl.blacklist_bytes([LOST])
_BL_NEW = cl.blacklist_bytes([NEW])
_verify = p256.verify_digest
_memo = {}


def _memo_verify(q, digest, sig):
    k = (q, bytes(digest), bytes(sig))
    r = _memo.get(k)
    if r is None:
        if len(_memo) > 4096:
            _memo.clear()
        r = _memo[k] = _verify(q, digest, sig)
    return r


_sigs = {}


def _sign(msg):
    """A fixed signature per message (ECDSA signing is randomised; an input must replay)."""
    s = _sigs.get(msg)
    if s is None:
        if len(_sigs) > 4096:
            _sigs.clear()
        s = _sigs[msg] = params_sign.sign_raw(KEY, msg)
    return s


def trust():
    return bundle.Trust(
        {1: params_sign.public_bytes(KEY)}, operator=7, city="2482", route=12, groups=(3, 9)
    )


def body(version, bl=_BL_NEW):
    return bundle.build_body(version, 0, CFG, bl)


def signed(b, **kw):
    hdr = bundle._parse_header(b[: bundle.HEADER], len(b), bundle.FORMAT_SIGNED)
    m = bundle.manifest_unsigned(
        b, 1, hdr.version, hdr.activation, operator=7, city=0x2482, route=12, group=3, **kw
    )
    return m + _sign(m) + b


BASE = signed(body(3, _BL3))
HONEST_BODY = body(4)
HONEST = signed(HONEST_BODY)
_SIGNED_LEN = bundle.Manifest(HONEST[: bundle.MHEAD]).signed_len
_next = {}


class _PowerCut(BaseException):
    """Not an Exception: nothing in the firmware catches it, as nothing survives a power cut."""


class _World(Templates):
    """v3 installed in both modes, fleet-signed."""

    def __init__(self):
        Templates.__init__(self, "fuzz-chunkdl-", BASE)

    def open(self, root, slots):
        return params.Params(root, b"legacy-secret-16", slots=slots, trust=trust())

    def fresh(self, slot_mode):
        return self.reload(Templates.fresh(self, slot_mode))

    def reload(self, slots):
        p = self.open(self.work, slots)
        check(p.load(NOW), "store did not load")
        return p


_world = None


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
                data[pos] ^= v
        elif op == 2:
            del data[pos:]
        else:
            data[pos:pos] = bytes((v,))
    return bytes(data)


class Net:
    """Serves `data` by ranges; each fetch follows the next op of the script, then honest."""

    def __init__(self, data, script):
        self.data = data
        self.script = script
        self.pos = 0
        self.cuts = 0
        self.damaged = 0
        try:
            self.mlen = bundle.Manifest(data[: bundle.MHEAD]).len
        except bundle.BundleError:
            self.mlen = 0

    def _byte(self):
        if self.pos >= len(self.script):
            return 0
        self.pos += 1
        return self.script[self.pos - 1]

    async def fetch(self, off, length, sink):
        piece = self.data[off : off + length]
        op = self._byte() if self.pos < len(self.script) else 0
        kind = op & 7
        if kind == 0:
            sink(memoryview(piece))
        elif kind in (1, 5):
            k = self._byte() * 16 + (op >> 3)
            sink(memoryview(piece[:k]))
            if kind == 5 and self.cuts < 3:
                self.cuts += 1
                raise _PowerCut()
            raise ConnectionError("cut")
        elif kind == 2:
            # Body bytes only: a manifest damaged in transit before its signature is checked
            # (key id, lengths) is refused, not fetched again (docs/robustness.md observations).
            bad = bytearray(piece)
            at = max(off + self._byte() * 16 + (op >> 3), self.mlen) - off
            v = self._byte() or 1
            if at < len(bad):
                bad[at] ^= v
                self.damaged += 1
            sink(memoryview(bytes(bad)))
        elif kind == 3:
            sink(memoryview(piece[: self._byte() * 16 + (op >> 3)]))
        elif kind == 4:
            n = self._byte() + 1
            for i in range(0, len(piece), n):
                sink(memoryview(piece[i : i + n]))
        elif kind == 6:
            sink(memoryview(piece + bytes(self._byte())))
        else:
            raise OSError(110, "timed out")


def _drive(coro):
    """Run a coroutine whose awaits never suspend (the fake fetch): no event loop needed."""
    try:
        while True:
            coro.send(None)
    except StopIteration as e:
        return e.value


def _run(p, net, version, total, window, slots):
    """Download to the end, through power cuts (reload + resume). -> (p, result or exception)."""
    dl = chunkdl.Download(p, net.fetch, version, total, NOW, window=window)
    while True:
        try:
            return p, _drive(dl.run(max_failures=4))
        except _PowerCut:
            if dl.rx is not None:
                dl.rx.f.close()
            p.close()
            p = _world.reload(slots)
            dl = chunkdl.resume(p, net.fetch, NOW, version) or chunkdl.Download(
                p, net.fetch, version, total, NOW, window=window
            )
        except (OSError, ValueError) as e:
            # the transport's errors (Net raises ConnectionError, OSError(110) = TimeoutError;
            # run() itself ValueError for a short range), nothing of the bundle's or the store's
            check(
                not isinstance(e, (bundle.BundleError, params.ParamsError, cl.ListError)),
                "%s escaped run(): %s" % (type(e).__name__, e),
            )
            if dl.rx is not None:
                dl.rx.f.close()
            return p, e


def _next_version(v):
    if v not in _next:
        if len(_next) > 64:
            _next.clear()
        _next[v] = signed(body(v))
    return _next[v]


def one_input(data):
    # Only while this target runs (tests import every target into one process): a checkpoint
    # after every request, so power cuts reach resume(), and the memoised verification.
    saved = chunkdl._CHECKPOINT, p256.verify_digest
    chunkdl._CHECKPOINT, p256.verify_digest = 1, _memo_verify
    try:
        _one(data)
    finally:
        chunkdl._CHECKPOINT, p256.verify_digest = saved


def _one(data):
    global _world
    if len(data) < 3:
        return
    if _world is None:
        _world = _World()
    ctl, n_edits = data[0], data[1]
    edits = bytes(data[2 : 2 + 3 * n_edits])
    rest = bytes(data[2 + 3 * n_edits :])
    window = 512 * (1 + (rest[0] & 15)) if rest else chunkdl.WINDOW
    script = rest[1:]
    slot_mode = ctl & 1
    variant = ctl >> 1 & 3
    if variant == 0 or not edits:
        data_in, variant = HONEST, 0
    elif variant == 1:
        head = _edit(HONEST[:_SIGNED_LEN], edits)
        data_in = head + _sign(head) + HONEST_BODY
    elif variant == 2:
        data_in = _edit(HONEST, edits)
    else:
        b = _edit(HONEST_BODY, edits)
        if len(b) < bundle.HEADER:
            return  # the signer cannot parse it: not sent
        try:
            data_in = signed(b)
        except (bundle.BundleError, ValueError):
            return  # the signer refuses it (body shorter than a header, ...): not sent
    p = _world.fresh(slot_mode)
    slots = p.slots
    net = Net(data_in, script)
    p, res = _run(p, net, 4, len(data_in), window, slots)
    files = sorted(os.listdir(p.root))
    if isinstance(res, tuple):
        ok, why = res
        check(ok in (True, False) and isinstance(why, str) and why, "result %r" % (res,))
        if variant == 2 and not net.damaged:  # (damage in transit may undo the edit)
            check(not ok or data_in == HONEST, "unsigned damage accepted: %s" % why)
        if variant == 0 or (ok and data_in == HONEST):
            check(res == (True, "activated"), "honest bundle: %r" % (res,))
            check(p.version == 4 and p.blacklist.contains(NEW), "honest bundle not exact")
            check(not p.blacklist.contains(LOST), "old blacklist in force")
        if not ok:
            check(p.version == 3 and p.blacklist.contains(LOST), "refused, but the set changed")
            check(params.INCOMING not in files, "refused, incoming file left")
            check(params.DL_STATE not in files, "refused, checkpoint left")
        else:
            q = _world.reload(slots)
            check(q.version == p.version, "reload: v%d, was v%d" % (q.version, p.version))
            check(cl.check_blacklist(q.blacklist, NEW) in _VERDICTS, "lookup")
            q.close()
    else:
        check(p.version == 3 and p.blacklist.contains(LOST), "transport failed, set changed")
    v = max(p.version, ((p.state or {}).get("pending") or {}).get("version", 0)) + 1
    if v > bundle.VERSION_MAX:
        p.close()
        return
    if not isinstance(res, tuple):
        # the checkpoint of the failed download: resume it honestly, or it is dropped
        dl = chunkdl.resume(p, Net(data_in, b"").fetch, NOW, 4)
        if dl is not None:
            r = _drive(dl.run())
            check(r[0] in (True, False), "resumed: %r" % (r,))
            if data_in == HONEST:
                check(r == (True, "activated") and p.version == 4, "resumed honest: %r" % (r,))
            v = max(p.version, ((p.state or {}).get("pending") or {}).get("version", 0)) + 1
    nxt = _next_version(v)
    p, res = _run(p, Net(nxt, b""), v, len(nxt), chunkdl.WINDOW, slots)
    check(res == (True, "activated"), "honest v%d: %r" % (v, res))
    check(p.version == v and p.blacklist.contains(NEW), "honest set not active")
    check(sorted(os.listdir(p.root)) == ["b%d.bnd" % v, "floor", "state"], "leftover files")
    p.close()


def close():
    global _world
    if _world is not None:
        shutil.rmtree(_world.dir, ignore_errors=True)
        _world = None


SEEDS = (
    b"\x00\x00\x00",
    b"\x01\x00\x00",
    b"\x00\x00\x07",
    b"\x01\x00\x00\x00",
    b"\x00\x00\x00\x01\x05",
    b"\x00\x00\x00\x02\x10\x01",
    b"\x01\x00\x00\x02\x10\x01",
    b"\x00\x00\x00\x05\x02",
    b"\x01\x00\x00\x05\x01\x05\x00",
    b"\x00\x00\x00\x03\x04",
    b"\x00\x00\x00\x04\x2f",
    b"\x00\x00\x00\x06\x05",
    b"\x00\x00\x00\x07\x07\x07\x07\x07",
    b"\x02\x01\x00\x20\x07\x00",
    b"\x02\x01\x00\x34\x05\x00",
    b"\x03\x01\x00\x40\x01\x00",
    b"\x04\x01\x41\x00\x01\x00",
    b"\x06\x01\x00\x10\x05\x00",
    b"\x07\x01\x00\xb0\x01\x00",
)
