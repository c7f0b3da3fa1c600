"""The world of the whole-application heap run (tools/bench_mpy/app_heap.py with real drivers):
one hub with the PN532 on I2C and a virtual T-Union card in its field, the SSD1306 display, the
character-level PSAM, the SIM7600 modem forwarding HTTP to a real collector on SQLite (the
device provisioned, the example bundle published as version 3), and the feedback pins.

    python -m tools.bench_app_world --port 0       prints "PORT <n>" (the hub)

Extra ctl commands (the MicroPython side calls them between measured operations):
  bench_info() -> {"url", "device", "secret", "version", "bundle"}  (bundle: a host file holding
                  the published version, for the validator's first install)
  bench_time(t)            the virtual time the collector and the modem's clock report
  bench_card(present)      the card in or out of the field (a rider tapping again)
  bench_topup(balance)     refills the card so a thousand taps never run it dry
  bench_publish_delta(version, base, cards)   a blacklist delta the collector then offers
  bench_status() -> {"records", "acked", "debits", "balance"}
  bench_violations() -> [texts]: the virtual card's audit (must stay empty)
"""

import atexit
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _sub in ("firmware", "drivers"):
    if str(ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(ROOT / _sub))

DEVICE = 17
SECRET = bytes(range(32))  # tests/mpy/app_rig.py SECRET
BASE_VERSION = 3


def build():
    from tools import params_compile as pc
    from tools.collector import app as collector_app
    from tools.collector.app import create_app
    from tools.collector.bench import ServerThread
    from tools.collector.db import Store
    from tools.sim.bench_hub import BenchWorld
    from tools.sim.card import VirtualCard

    tmp = tempfile.TemporaryDirectory(prefix="bench-app-world-")
    atexit.register(tmp.cleanup)
    store = Store("sqlite:///%s" % (Path(tmp.name) / "collector.sqlite3"))
    store.provision(DEVICE, SECRET, "heap bench validator")
    ex = pc.EXAMPLE
    base = pc.compile_bundle(
        SECRET,
        ex / "fares.toml",
        ex / "whitelist.csv",
        ex / "blacklist.csv",
        version=BASE_VERSION,
        activation=0,
        progress=False,
    )
    store.publish(BASE_VERSION, base)
    bundle_path = Path(tmp.name) / "bundle.bin"
    bundle_path.write_bytes(base)
    world = BenchWorld(reader="pn532_i2c", dialect="simcom", start=849300000)
    collector_app.server_time = lambda: world.time
    server = ServerThread(create_app(store))
    server.__enter__()
    atexit.register(lambda: server.__exit__(None, None, None))
    card = VirtualCard.from_profile("tunion_plain", balance=90000)
    state = {"placed": False}
    hub = world.hub

    def place(present):
        if present and not state["placed"]:
            world.place(card)
        elif not present and state["placed"]:
            world.remove(card)
        state["placed"] = bool(present)

    place(True)

    @hub.command("bench_info")
    def _info():
        return {
            "url": "http://127.0.0.1:%d" % server.port,
            "device": DEVICE,
            "secret": SECRET.hex(),
            "version": BASE_VERSION,
            "bundle": str(bundle_path),
        }

    @hub.command("bench_time")
    def _time(t):
        world.time = int(t)
        return world.time

    @hub.command("bench_card")
    def _card(present=True):
        with hub.lock:
            place(present)
        return state["placed"]

    @hub.command("bench_topup")
    def _topup(balance=90000):
        with hub.lock:
            card.tu["balance"] = int(balance)
        return card.tu["balance"]

    @hub.command("bench_publish_delta")
    def _delta(version, base, cards):
        import bundle
        import cardlists

        adds = [cardlists.card_key(str(c)) for c in cards]
        data = bundle.build(SECRET, int(version), 0, None, None, (int(base), adds, []))
        store.publish(int(version), data, base=int(base))
        return len(data)

    @hub.command("bench_violations")
    def _violations():  # the card's audit: APDUs to other applications, SFI 0x16 reads
        return list(card.violations)

    @hub.command("bench_status")
    def _status():
        st = store.device_status(DEVICE) if hasattr(store, "device_status") else {}
        return {"balance": card.tu["balance"], "store": st}

    return hub


if __name__ == "__main__":
    from tools.sim.hub import main_for

    # The bench stops servers with SIGTERM: exit normally so the atexit clean-up runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main_for(build)
