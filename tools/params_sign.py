"""Fleet signature for parameter bundles (docs/parameters.md "Fleet signature"), run offline on
the operator's signing machine: the private key never goes to the collector.

    python -m tools.params_sign keygen --out fleet-1.pem            # prints the public key (hex)
    python -m tools.params_sign pubkey fleet-1.pem                   # the public key again
    python -m tools.params_sign sign IN --key fleet-1.pem --key-id 1 -o OUT \\
        [--operator N] [--city 2482] [--route R] [--group G] [--not-before T] [--not-after T]

``sign`` takes a body (``params_compile --body-only``) or a legacy HMAC bundle (format 1: its MAC
is dropped and the body re-marked as format 2: the migration path) and writes the signed bundle:
manifest (scope, validity window, SHA-256 of every 4 KiB chunk), ECDSA P-256 signature, body.
Set PARAMS_KEY_PASSPHRASE to read or write an encrypted key.
"""

import argparse
import os
import struct
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import bundle  # noqa: E402


class SignError(ValueError):
    pass


def generate():
    return ec.generate_private_key(ec.SECP256R1())


def public_bytes(key):
    """The 65-byte uncompressed point a validator is provisioned with."""
    pub = key.public_key() if hasattr(key, "public_key") else key
    return pub.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _passphrase():
    p = os.environ.get("PARAMS_KEY_PASSPHRASE")
    return p.encode() if p else None


def load_key(path):
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, _passphrase())
    except (ValueError, TypeError) as e:
        raise SignError("%s: not a usable private key: %s" % (path, e))
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SignError("%s: not a P-256 key" % path)
    return key


def save_key(key, path):
    pw = _passphrase()
    enc = serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption()
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def body_of(data):
    """A format-2 body from a body or a legacy format-1 bundle (MAC dropped, unchecked)."""
    if len(data) < bundle.HEADER or bytes(data[:4]) != bundle.MAGIC:
        raise SignError("not a bundle body")
    fmt = data[4]
    if fmt == bundle.FORMAT_SIGNED:
        body = bytes(data)
    elif fmt == bundle.FORMAT:
        body = bytearray(data[: len(data) - bundle.MAC_LEN])
        body[4] = bundle.FORMAT_SIGNED
        struct.pack_into(">I", body, 20, len(body))
        body = bytes(body)
    else:
        raise SignError("unknown bundle format %d" % fmt)
    try:
        bundle._parse_header(body[: bundle.HEADER], len(body), bundle.FORMAT_SIGNED)
    except bundle.BundleError as e:
        raise SignError("body refused: %s" % e)
    return body


def sign_raw(key, digest_input):
    der = key.sign(digest_input, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sign(key, key_id, body, scope=None, not_before=0, not_after=0, created=0):
    """The signed bundle: manifest, signature, body. scope: operator, city (4 BCD digits or
    int), route, group (0 or absent = any)."""
    scope = dict(scope or {})
    city = scope.get("city", 0)
    if isinstance(city, str):
        if len(city) != 4 or not city.isdigit():
            raise SignError("city must be 4 digits")
        city = int(city, 16)
    hdr = bundle._parse_header(body[: bundle.HEADER], len(body), bundle.FORMAT_SIGNED)
    try:
        unsigned = bundle.manifest_unsigned(
            body,
            key_id,
            hdr.version,
            hdr.activation,
            not_before,
            not_after,
            scope.get("operator", 0),
            city,
            scope.get("route", 0),
            scope.get("group", 0),
            created=created,
        )
    except (bundle.BundleError, struct.error) as e:
        raise SignError("manifest: %s" % e)
    return unsigned + sign_raw(key, unsigned) + body


def check_signature(data, public_key_bytes):
    """Host-side check with `cryptography` (the publish CLI's second opinion): -> Manifest."""
    m = bundle.Manifest(data[: bundle.MHEAD])
    if len(data) != m.total:
        raise SignError("length %d, manifest says %d (truncated or padded)" % (len(data), m.total))
    sig = data[m.signed_len : m.len]
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(public_key_bytes))
    try:
        pub.verify(encode_dss_signature(r, s), data[: m.signed_len], ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignError("bad signature for key %d" % m.key_id)
    return m


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("keygen", help="a new P-256 signing key (PEM, mode 600)")
    s.add_argument("--out", required=True)
    s = sub.add_parser("pubkey", help="print a key's public half as hex")
    s.add_argument("key")
    s = sub.add_parser("sign", help="sign a body or a legacy bundle")
    s.add_argument("input")
    s.add_argument("--key", required=True)
    s.add_argument("--key-id", type=int, required=True)
    s.add_argument("-o", "--out", required=True)
    for name in ("operator", "route", "group", "not-before", "not-after"):
        s.add_argument("--" + name, type=int, default=0)
    s.add_argument("--city", default="0000")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "keygen":
            key = generate()
            save_key(key, args.out)
            print(public_bytes(key).hex())
        elif args.cmd == "pubkey":
            print(public_bytes(load_key(args.key)).hex())
        else:
            key = load_key(args.key)
            body = body_of(Path(args.input).read_bytes())
            scope = {
                "operator": args.operator,
                "city": args.city,
                "route": args.route,
                "group": args.group,
            }
            data = sign(key, args.key_id, body, scope, args.not_before, args.not_after)
            tmp = args.out + ".tmp"
            Path(tmp).write_bytes(data)
            os.replace(tmp, args.out)
            m = bundle.Manifest(data[: bundle.MHEAD])
            print(
                "signed version %d with key %d for %s: %s (%d bytes, %d chunks)"
                % (m.version, m.key_id, m.scope(), args.out, len(data), m.n_chunks)
            )
    except (SignError, bundle.BundleError, OSError) as e:
        print("params_sign: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
