"""Test and bench fixture for big parameter downloads (firmware/chunkdl.py): the modem simulator's
hub (tools/sim/modem_server.py) with a real collector behind it (tools/collector/testserver.py,
SQLite), and fleet-signed bundles built, signed and published on request.

    python -m tools.params_dl_fixture --port 0        prints "PORT <n>" (the hub)

Extra hub commands:
    pdl_collector()                        -> the collector proxy's port
    pdl_publish(name, cards, version, ...) -> signs a bundle of `cards` cards (seeded numbers),
        writes build/params-dl/<name>.bnd, publishes it for every device unless publish=False;
        -> {"path", "total", "version", "pubkey", "scope"}
    pdl_secret(device)                     -> the device's upload secret (hex)
The signing key is a fixed test key (never a fleet's): FIXTURE_KEY_SCALAR below.
"""

import atexit
import hashlib
import random
import signal
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from tools import params_sign
from tools.collector.testserver import SECRETS, start
from tools.sim.hub import main_for
from tools.sim.modem_server import build as build_modem_hub

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import bundle  # noqa: E402
import cardlists  # noqa: E402

OUT = ROOT / "build" / "params-dl"
FIXTURE_KEY_SCALAR = 0x5EED_F1EE_7000_0001
SCOPE = {"operator": 1, "city": "2482", "route": 101, "group": 0}
CFG = {
    "settings": {"dup_tap_s": 60},
    "whitelist": {"local_issuers": ["05212482"], "local_city": "2482", "issuers": []},
    "fares": {"routes": {"101": {"mode": "flat", "fare": 200}}, "card_types": {"1": {}}},
}
SEED = 20261205


def key():
    return ec.derive_private_key(FIXTURE_KEY_SCALAR, ec.SECP256R1())


def cards_of(n, seed=SEED):
    rng = random.Random(seed)
    return [rng.randrange(10**18, 10**19) for _ in range(n)]


def make(name, cards, version, scope=None, key_id=1, tamper=None):
    """Build and sign (cached by content) -> (path, data)."""
    OUT.mkdir(parents=True, exist_ok=True)
    scope = dict(SCOPE, **(scope or {}))
    tag = hashlib.sha256(
        repr((cards, version, sorted(scope.items()), key_id, tamper, bundle.MHEAD)).encode()
    ).hexdigest()[:16]
    path = OUT / ("%s-%s.bnd" % (name, tag))
    if not path.exists():
        body = bundle.build_body(version, 0, CFG, cardlists.blacklist_bytes(cards_of(cards)))
        data = bytearray(params_sign.sign(key(), key_id, body, scope))
        if tamper is not None:
            data[tamper] ^= 0x40
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(data))
        tmp.rename(path)
    link = OUT / ("%s.bnd" % name)
    link.unlink(missing_ok=True)
    link.symlink_to(path.name)
    return link, path.read_bytes()


def build():
    hub = build_modem_hub()
    tmp = tempfile.TemporaryDirectory(prefix="params-dl-")
    proxy, backend = start(tmp.name)
    atexit.register(tmp.cleanup)
    atexit.register(backend.stop)

    @hub.command("pdl_collector")
    def _port():
        return proxy.server_address[1]

    @hub.command("pdl_secret")
    def _secret(device=1):
        return SECRETS[device].hex()

    @hub.command("pdl_publish")
    def _publish(name, cards, version, scope=None, tamper=None, truncate=None, publish=True):
        path, data = make(name, cards, version, scope, tamper=tamper)
        if truncate is not None:
            data = data[:truncate]
        if publish:
            backend.store.publish(version, data)
        return {
            "path": str(path),
            "total": len(data),
            "version": version,
            "pubkey": params_sign.public_bytes(key()).hex(),
        }

    @hub.command("pdl_cuts")
    def _cuts(n, total, seed=SEED):
        """Drop the connection at n seeded byte points of the next bodies -> the points."""
        rng = random.Random(seed)
        points = sorted(rng.randrange(1, total) for _ in range(n))
        hub_modem_cut(points)
        return points

    @hub.command("pdl_sample")
    def _sample(n, cards=1_000_000, seed=SEED):
        """n card numbers of the seeded list (as strings: MicroPython ints are fine, JSON too)."""
        every = cards_of(cards, seed)
        return [str(c) for c in every[:: max(1, len(every) // n)][:n]]

    def hub_modem_cut(points):
        hub.commands["modem_cut_bodies_at"](points=points)

    @hub.command("pdl_reset")
    def _reset():
        backend.reset()
        return True

    return hub


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main_for(build)
