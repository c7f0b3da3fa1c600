"""The hub for the ESP32 stand-in tests (tests/mpy/test_esp32_boards.py, test_esp32_standin.py):
every reader chip, the PSAM and the modem (tools/sim/bench_hub.build_all_readers), a collector the
modem's HTTP goes to (tools/collector/testserver, SQLite), and two plain UART devices for the
stand-in's own tests:
  "echo"  sends back what it gets;
  "drip"  on "n,ms\\n" sends n bytes "0123456789..." one every ms milliseconds.

    python -m tools.sim.esp32_bench --port 0        prints "PORT <n>" (the hub)

Extra ctl commands: collector_port() -> the collector proxy's port (its /_test/* controls as in
tools/collector/testserver); modem_bytes_in() -> bytes the modem has received.
"""

import atexit
import signal
import sys
import tempfile
import threading
import time

from tools.sim.bench_hub import build_all_readers
from tools.sim.hub import main_for
from tools.sim.selftest_server import EchoUart
from tools.sim.uart import UartDevice


class DripUart(UartDevice):
    def __init__(self):
        super().__init__()
        self._line = b""

    def on_data(self, data):
        self._line += data
        while b"\n" in self._line:
            line, _, self._line = self._line.partition(b"\n")
            n, _, ms = line.decode().partition(",")
            threading.Thread(target=self._drip, args=(int(n), int(ms)), daemon=True).start()

    def _drip(self, n, ms):
        for i in range(n):
            time.sleep(ms / 1000)
            self.send(b"%d" % (i % 10))


def build():
    hub = build_all_readers()
    hub.register("uart", "echo", EchoUart().serve)
    hub.register("uart", "drip", DripUart().serve)
    modem = hub.handlers[("uart", "modem")].__self__
    hub.command("modem_bytes_in")(lambda: modem.bytes_in)

    from tools.collector.testserver import start

    tmp = tempfile.TemporaryDirectory(prefix="collector-esp32-")
    proxy, backend = start(tmp.name)
    atexit.register(tmp.cleanup)
    atexit.register(backend.stop)
    hub.command("collector_port")(lambda: proxy.server_address[1])
    return hub


if __name__ == "__main__":
    # The test plugin stops servers with SIGTERM: exit normally so the atexit clean-up runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main_for(build)
