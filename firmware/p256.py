# ECDSA P-256 / SHA-256 signature verification on plain integers, for MicroPython (whose
# hashlib has SHA-256 but no public-key primitive) and CPython alike. Only verification lives
# here: the parameter signing key never leaves the operator's offline machine
# (tools/params_sign.py signs with the `cryptography` package). Curve constants: SEC 2 v2
# section 2.4.2 / FIPS 186-4 D.1.2.3. Formulas: Jacobian coordinates with a = -3 ("dbl-2001-b")
# and mixed addition ("madd-2007-bl") as catalogued in the Explicit-Formulas Database
# (hyperelliptic.org/EFD/g1p/auto-shortw-jacobian-3.html); the two scalar multiplications are
# done together (Shamir's trick), 256 doublings and about 192 additions per verification.
# Timing does not matter: everything verified is public (no secret is used here).

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
_GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
SIG_LEN = const(64)  # r || s, 32 bytes each, big-endian
KEY_LEN = const(65)  # 0x04 || x || y (SEC 1 uncompressed point)


def _on_curve(x, y):
    return (y * y - (x * x * x - 3 * x + _B)) % _P == 0


def public_key(raw):
    """(x, y) from a 65-byte uncompressed point; ValueError if it is not a point of the curve."""
    if len(raw) != KEY_LEN or raw[0] != 4:
        raise ValueError("public key: want 65 bytes starting 04")
    x = int.from_bytes(bytes(raw[1:33]), "big")
    y = int.from_bytes(bytes(raw[33:65]), "big")
    if x >= _P or y >= _P or not _on_curve(x, y):
        raise ValueError("public key is not a P-256 point")
    return (x, y)


def _dbl(X, Y, Z):
    if not Z or not Y:
        return 0, 1, 0
    P = _P
    d = Z * Z % P
    g = Y * Y % P
    b = X * g % P
    a = 3 * (X - d) * (X + d) % P
    X3 = (a * a - 8 * b) % P
    Z3 = ((Y + Z) * (Y + Z) - g - d) % P
    Y3 = (a * (4 * b - X3) - 8 * g * g) % P
    return X3, Y3, Z3


def _madd(X1, Y1, Z1, x2, y2):
    """(X1:Y1:Z1) + (x2, y2) affine."""
    if not Z1:
        return x2, y2, 1
    P = _P
    zz = Z1 * Z1 % P
    u2 = x2 * zz % P
    s2 = y2 * Z1 * zz % P
    h = (u2 - X1) % P
    r = 2 * (s2 - Y1) % P
    if not h:
        if not r:
            return _dbl(X1, Y1, Z1)
        return 0, 1, 0  # P + (-P)
    hh = h * h % P
    i = 4 * hh % P
    j = h * i % P
    v = X1 * i % P
    X3 = (r * r - j - 2 * v) % P
    Y3 = (r * (v - X3) - 2 * Y1 * j) % P
    Z3 = ((Z1 + h) * (Z1 + h) - zz - hh) % P
    return X3, Y3, Z3


def _affine(X, Y, Z):
    if not Z:
        return None
    zi = pow(Z, _P - 2, _P)
    zi2 = zi * zi % _P
    return X * zi2 % _P, Y * zi2 * zi % _P


def verify_digest(key, digest, sig):
    """True when `sig` (r || s) is a valid signature of the 32-byte SHA-256 `digest` under
    `key` ((x, y) from public_key()). Never raises on a malformed signature: False."""
    if len(sig) != SIG_LEN or len(digest) != 32:
        return False
    r = int.from_bytes(bytes(sig[:32]), "big")
    s = int.from_bytes(bytes(sig[32:]), "big")
    if not (0 < r < _N and 0 < s < _N):
        return False
    e = int.from_bytes(bytes(digest), "big")  # 256 bits: no truncation for P-256
    w = pow(s, _N - 2, _N)
    u1 = e * w % _N
    u2 = r * w % _N
    qx, qy = key
    # G + Q once, in affine form, for the steps where both scalars have a 1 bit.
    X, Y, Z = _madd(_GX, _GY, 1, qx, qy)
    gq = _affine(X, Y, Z)
    X, Y, Z = 0, 1, 0
    for i in range(255, -1, -1):
        X, Y, Z = _dbl(X, Y, Z)
        b1 = (u1 >> i) & 1
        b2 = (u2 >> i) & 1
        if b1 and b2:
            if gq is None:
                continue  # G + Q is the point at infinity: adding it changes nothing
            X, Y, Z = _madd(X, Y, Z, gq[0], gq[1])
        elif b1:
            X, Y, Z = _madd(X, Y, Z, _GX, _GY)
        elif b2:
            X, Y, Z = _madd(X, Y, Z, qx, qy)
    pt = _affine(X, Y, Z)
    if pt is None:
        return False
    return pt[0] % _N == r
