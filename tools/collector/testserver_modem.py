"""The modem simulator's hub (tools/sim/modem_server.py) with two collectors behind fault proxies
(tools/collector/testserver.py) in the same process, one on SQLite and one on a throw-away
PostgreSQL: validator -> simulated modem -> collector -> database, for both databases.

    python -m tools.collector.testserver_modem --port 0      prints "PORT <n>" (the hub)

Extra ctl command: collector_port(db="sqlite"|"postgres") -> that proxy's port (its /_test/*
controls as in testserver). Without PostgreSQL binaries only "sqlite" exists.
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
    started = []  # (backend, pg) to stop at exit
    atexit.register(lambda: [b.stop() for b, _ in started] + [p.stop() for _, p in started if p])
    atexit.register(tmp.cleanup)
    proxies = {}
    proxy, backend = start(tmp.name)
    started.append((backend, None))
    proxies["sqlite"] = proxy
    from tests.host.pg import PgServer, pg_bindir

    if pg_bindir() is not None:
        pg = PgServer(fast=True)
        pg.start()
        proxy, backend = start(tmp.name, pg)
        started.append((backend, pg))
        proxies["postgres"] = proxy

    @hub.command("collector_port")
    def _port(db="sqlite"):
        if db not in proxies:
            raise ValueError("no %s collector here (PostgreSQL not installed?)" % db)
        return proxies[db].server_address[1]

    return hub


if __name__ == "__main__":
    # The test plugin stops servers with SIGTERM: exit normally so the atexit clean-up runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main_for(build)
