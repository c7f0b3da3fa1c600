"""The modem simulator's hub (tools/sim/modem_server.py) with a collector behind a fault proxy
(tools/collector/testserver.py) in the same process: validator -> simulated modem -> collector.

    python -m tools.collector.testserver_modem --port 0      prints "PORT <n>" (the hub)

Extra ctl command: collector_port() -> the proxy's port (its /_test/* controls as in testserver).
"""

import atexit
import signal
import sys
import tempfile

from tools.sim.hub import main_for
from tools.sim.modem_server import build as build_modem_hub

from .testserver import start


def build():
    hub = build_modem_hub()
    tmp = tempfile.TemporaryDirectory(prefix="collector-modem-")
    proxy, backend = start(tmp.name)

    def cleanup():
        backend.stop()
        tmp.cleanup()

    atexit.register(cleanup)
    hub.command("collector_port")(lambda: proxy.server_address[1])
    return hub


if __name__ == "__main__":
    # The test plugin stops servers with SIGTERM: exit normally so the temporary files go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main_for(build)
