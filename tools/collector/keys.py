"""Device keys derived from a master key kept outside the database.

The database holds no usable device secret: each device's 32-byte HMAC key is diversified from
the master key by the device id and a key version, the way PBOC diversifies a card's keys from
the issuer's master key (two encryptions under the master key, of the factor and of its
complement, concatenated: tools/sim/crypto.py `DesSuite.diversify`), here with AES-256:

    F  = "TUDK" (4) | device id (4) | key version (4) | 00 00 00 01 (4)        16 bytes
    DK = AES-256-ECB(master, F) || AES-256-ECB(master, F xor FF..FF)          32 bytes

The database keeps the key version (a re-provisioned device gets the next one, so every key it
had before stops working) and a 3-byte key check value, so a collector started with the wrong
master key says so instead of refusing every device with 401.

The master key (32 bytes) comes from, in this order: `--master-key-file FILE` or
$COLLECTOR_MASTER_KEY_FILE (32 raw bytes or 64 hex digits, a file only its owner can read), or
$COLLECTOR_MASTER_KEY (64 hex digits). An HSM or KMS plugs in with `--key-source module:name`:
`name` is called with no arguments and returns an object with `device_key(device_id, version)
-> bytes` (the HSM diversifies; the master key never leaves it) and `kcv(key) -> bytes`
(or inherits them from `KeySource`).
"""

import functools
import hashlib
import hmac
import importlib
import os
import stat

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MASTER_LEN = 32


class KeyError_(ValueError):
    """No usable master key (missing, malformed, readable by others)."""


class KeySource:
    """Derives device keys from a master key held in this process's memory only."""

    def __init__(self, master):
        master = bytes(master)
        if len(master) != MASTER_LEN:
            raise KeyError_("the master key must be %d bytes" % MASTER_LEN)
        self._master = master

    @staticmethod
    def factor(device_id, version):
        return b"TUDK" + device_id.to_bytes(4, "big") + version.to_bytes(4, "big") + b"\0\0\0\1"

    @functools.lru_cache(maxsize=65536)  # noqa: B019  (one KeySource per process)
    def device_key(self, device_id, version):
        f = self.factor(device_id, version)
        enc = Cipher(algorithms.AES(self._master), modes.ECB()).encryptor()
        return enc.update(f + bytes(b ^ 0xFF for b in f)) + enc.finalize()

    @staticmethod
    def kcv(key):
        """Key check value: identifies a key without revealing it."""
        return hmac.new(bytes(key), b"key check value", hashlib.sha256).digest()[:3]


def read_master_file(path):
    st = os.stat(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyError_(
            "master key file %s is readable by others (mode %o): chmod 600 it"
            % (path, stat.S_IMODE(st.st_mode))
        )
    with open(path, "rb") as f:
        data = f.read().strip()
    if len(data) == 2 * MASTER_LEN:
        try:
            data = bytes.fromhex(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise KeyError_("master key file %s: not 64 hex digits" % path)
    if len(data) != MASTER_LEN:
        raise KeyError_("master key file %s: need %d bytes (or hex)" % (path, MASTER_LEN))
    return data


def from_env(master_file=None, source=None, env=None):
    """The key source the command line and environment name, or None when none is given."""
    env = os.environ if env is None else env
    if source:
        mod, _, name = source.partition(":")
        if not name:
            raise KeyError_("--key-source wants module:name")
        return getattr(importlib.import_module(mod), name)()
    path = master_file or env.get("COLLECTOR_MASTER_KEY_FILE")
    if path:
        return KeySource(read_master_file(path))
    hexkey = env.get("COLLECTOR_MASTER_KEY")
    if hexkey:
        try:
            return KeySource(bytes.fromhex(hexkey))
        except ValueError:
            raise KeyError_("$COLLECTOR_MASTER_KEY: not 64 hex digits")
    return None


def create_secret_file(path, data):
    """Write a file holding a secret: created 0600 (never world-readable, not even briefly);
    an existing file is refused rather than overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def new_master_file(path):
    """A fresh random master key in a new 0600 file (64 hex digits)."""
    create_secret_file(path, os.urandom(MASTER_LEN).hex().encode() + b"\n")
