# HMAC-SHA256 (RFC 2104) over the device's hashlib.sha256, for bundles and upload batches.
# micropython-lib's hmac is not in the unix port's frozen set and its PyPI release is years out of
# date, so the dozen lines live here; tests check it against CPython's hmac.
import hashlib

_BLOCK = 64


def _pad_key(key):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    return key + bytes(_BLOCK - len(key))


class HMAC256:
    def __init__(self, key, msg=None):
        key = _pad_key(bytes(key))
        self._outer_key = bytes(b ^ 0x5C for b in key)
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        if msg is not None:
            self._inner.update(msg)

    def update(self, msg):
        self._inner.update(msg)

    def digest(self):
        # hashlib objects on MicroPython cannot be copied: digest() ends this HMAC.
        outer = hashlib.sha256(self._outer_key)
        outer.update(self._inner.digest())
        return outer.digest()


def hmac_sha256(key, msg):
    return HMAC256(key, msg).digest()


def equal(a, b):
    """Compare two MACs in time independent of where they differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b):
        diff |= x ^ y
    return diff == 0
