"""Fleet-signed bundles (firmware/bundle.py format 2) and the P-256 verification behind them
(firmware/p256.py, pure Python), instrumented (the `chunkdl` target runs p256 uninstrumented).

Input: byte 0 mod 5 picks the mode.
0: the rest is r || s (64 bytes) and a message: p256.verify_digest must agree with the
   `cryptography` package's ECDSA verification, and never raise.
1: the message (rest) is signed with the fleet key, then the signature is xor-ed with its first
   64 bytes: near-valid signatures (r, s at 0, n, above n; one bit off), same agreement.
2: the rest is a 65-byte public key: p256.public_key accepts exactly the points `cryptography`
   accepts (uncompressed form).
3: 3-byte edits (op, 14-bit position, value) to the honest signed file's manifest head and chunk
   hashes, re-signed: bundle.verify_signed_file either refuses with BundleError or gives a
   manifest whose chunks cover the body and a body header that agrees with it, sections in
   bounds; read_config / read_delta refuse with BundleError only.
4: the same edits anywhere in the file, not re-signed: refused unless nothing changed.
Verification is a pure function, so there is no honest round after the damage.
"""

import hashlib

from tools.fuzz import shim

shim.install()

import bundle  # noqa: E402
import cardlists as cl  # noqa: E402
import p256  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: E402

from tools import params_sign  # noqa: E402
from tools.fuzz.shim import check  # noqa: E402
from tools.fuzz.targets.params import CFG, NEW, _edit  # noqa: E402

NAME = "signed"
KEY = ec.derive_private_key(0x1111_2222_3333, ec.SECP256R1())  # the chunkdl target's fleet key
PUB = KEY.public_key()
RAW = params_sign.public_bytes(KEY)
Q = p256.public_key(RAW)
TRUST = bundle.Trust({1: RAW}, operator=7, city="2482", route=12, groups=(3, 9))
NOW = 100
_sigs = {}


def _sign(msg):
    """A fixed signature per message (ECDSA signing is randomised; an input must replay)."""
    s = _sigs.get(msg)
    if s is None:
        if len(_sigs) > 4096:
            _sigs.clear()
        s = _sigs[msg] = params_sign.sign_raw(KEY, msg)
    return s


_BODY = bundle.build_body(4, 0, CFG, cl.blacklist_bytes([NEW]))
_UNSIGNED = bundle.manifest_unsigned(_BODY, 1, 4, 0, operator=7, city=0x2482, route=12, group=3)
HONEST = _UNSIGNED + _sign(_UNSIGNED) + _BODY
_M = bundle.Manifest(HONEST[: bundle.MHEAD])


def _agree(sig, msg):
    d = hashlib.sha256(msg).digest()
    mine = p256.verify_digest(Q, d, sig)
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    try:
        PUB.verify(encode_dss_signature(r, s), msg, ec.ECDSA(hashes.SHA256()))
        theirs = True
    except (InvalidSignature, ValueError):
        theirs = False
    check(mine is theirs, "p256 says %s, cryptography %s (sig %s)" % (mine, theirs, sig.hex()))


def _file(data):
    f = bundle.open_bytes(data)
    try:
        m, hdr = bundle.verify_signed_file(f, len(data), TRUST, NOW)
    except bundle.BundleError:
        return False
    check(m.n_chunks * m.chunk >= m.body_len > (m.n_chunks - 1) * m.chunk, "chunks")
    check(m.total == len(data), "length")
    check(hdr.version == m.version and hdr.activation == m.activation, "header vs manifest")
    for kind, (off, length, _) in hdr.sections.items():
        check(kind in bundle.NAMES, "section kind %r" % kind)
        check(m.len + bundle.HEADER <= off and off + length <= len(data), "section bounds")
    try:
        cfg = bundle.read_config(f, hdr)
        check(cfg is None or isinstance(cfg, dict), "config %r" % type(cfg))
        bundle.read_delta(f, hdr)
    except bundle.BundleError:
        pass
    return True


def one_input(data):
    if not data:
        return
    mode, rest = data[0] % 5, bytes(data[1:])
    if mode == 0:
        if len(rest) >= 64:
            _agree(rest[:64], rest[64:])
    elif mode == 1:
        sig = bytearray(_sign(rest[64:]))
        for i, b in enumerate(rest[:64]):
            sig[i] ^= b
        _agree(bytes(sig), rest[64:])
    elif mode == 2:
        raw = (rest + bytes(65))[:65]
        try:
            p256.public_key(raw)
            mine = True
        except ValueError:
            mine = False
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
            theirs = raw[0] == 4  # p256 takes the uncompressed form only
        except ValueError:
            theirs = False
        check(mine is theirs, "key %s: p256 %s, cryptography %s" % (raw.hex(), mine, theirs))
    elif mode == 3:
        head = _edit(HONEST[: _M.signed_len], rest)
        _file(head + _sign(head) + HONEST[_M.signed_len + bundle.SIG_LEN :])
    else:
        bad = _edit(HONEST, rest)
        check(not _file(bad) or bad == HONEST, "unsigned damage accepted")


SEEDS = (
    b"\x00" + bytes(64) + b"m",
    b"\x00" + b"\xff" * 64 + b"m",
    b"\x01" + bytes(64) + b"m",
    b"\x01" + b"\x01" + bytes(63) + b"message",
    b"\x01" + bytes(63) + b"\x01" + b"message",
    b"\x02" + RAW,
    b"\x02\x04" + bytes(64),
    b"\x03",
    b"\x03\x00\x05\x02",
    b"\x03\x00\x08\x00",
    b"\x03\x00\x30\x10",
    b"\x03\x80\x40\x00",
    b"\x04",
    b"\x04\x00\x05\x01",
    b"\x04\x00\xff\x01",
)
