"""A real collector behind a fault-injecting HTTP proxy, for the MicroPython uplink tests.

    python -m tools.collector.testserver --port 0        prints "PORT <n>" first

The collector (uvicorn, a temporary SQLite file, or PostgreSQL with --pg) has devices 1 and 2
provisioned with the secrets below. The proxy on <n> forwards /v1/* to it, applying queued faults
one per request, and answers /_test/* control calls (JSON) that exist only here:

    POST /_test/fault    {"modes": [...]}  drop_before | drop_after | status503 | restart | garble
    GET  /_test/state?device=1             records held, seqs, counter, contig, gaps, requests
    POST /_test/reset                      a fresh, empty database
    POST /_test/publish  {"version", "data_hex", "repeat", "base", "target"}
    POST /_test/restore  {"device", "keep"} the database as an older backup had it
    POST /_test/time     {"offset": s}     shift the collector's clock (a server clock far off)
"""

import argparse
import http.client
import json
import logging
import os
import signal
import socketserver
import tempfile
import threading

from . import app as app_mod
from . import db as db_mod
from .app import create_app
from .bench import ServerThread
from .clearing import Clearing, simulator_keys
from .db import Store

SECRETS = {1: bytes(range(1, 33)), 2: bytes(range(101, 133))}
log = logging.getLogger("collector.testserver")


class Backend:
    def __init__(self, url_factory):
        self.url_factory = url_factory
        self.lock = threading.RLock()
        self.faults = []
        self.requests = 0
        self.offset = 0
        self.store = None
        self.server = None
        real = db_mod.server_time
        app_mod.server_time = lambda: real() + self.offset
        self.reset()

    def start(self):
        # Clearing as `serve` runs it, with the simulators' documented test keys.
        app = create_app(self.store, clearing=Clearing(simulator_keys()))
        self.server = ServerThread(app).__enter__()

    def stop(self):
        if self.server is not None:
            self.server.__exit__(None, None, None)
            self.server = None

    def reset(self):
        with self.lock:
            self.stop()
            if self.store is not None:
                self.store.close()
            self.store = Store(self.url_factory())
            for dev, secret in SECRETS.items():
                self.store.provision(dev, secret)
            self.faults = []
            self.requests = 0
            self.offset = 0
            self.start()

    def restart(self):
        """The collector process dies and comes back on the same database."""
        with self.lock:
            url = self.store.url
            self.stop()
            self.store.close()
            self.store = Store(url)
            self.start()

    def forward(self, method, path, body, headers):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.request(method, path, body, headers)
            resp = conn.getresponse()
            return resp.status, resp.getheader("content-type", ""), resp.read()
        finally:
            conn.close()

    def state(self, device):
        s = self.store
        return {
            "count": s.count(device),
            "seqs": s.seqs(device),
            "device": s.device(device),
            "gaps": s.gaps(device),
            "requests": self.requests,
            "faults_left": len(self.faults),
        }


def _reply(wfile, status, body, ctype="application/json"):
    head = "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
    wfile.write((head % (status, ctype, len(body))).encode() + body)
    wfile.flush()


def make_handler(backend):
    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            line = self.rfile.readline(4096)
            if not line:
                return
            method, path = line.decode().split()[:2]
            headers = {}
            while True:
                h = self.rfile.readline(4096)
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            body = self.rfile.read(int(headers.get("content-length", "0")))
            if path.startswith("/_test/"):
                return self.control(method, path, body)
            with backend.lock:
                backend.requests += 1
                mode = backend.faults.pop(0) if backend.faults else None
            if mode == "drop_before":
                log.info("fault: connection cut before the request reached the collector")
                return
            if mode == "status503":
                return _reply(self.wfile, 503, b"injected failure\n", "text/plain")
            fwd = {"Content-Type": headers.get("content-type", "application/octet-stream")}
            if "range" in headers:
                fwd["Range"] = headers["range"]  # ranged bundle fetches (tools/collector/bundles)
            status, ctype, answer = backend.forward(method, path, body, fwd)
            if mode == "drop_after":
                log.info("fault: collector answered %d, connection cut before the answer", status)
                return
            if mode == "restart":
                log.info("fault: collector restarted before its answer left")
                backend.restart()
                return
            if mode == "garble" and answer:
                answer = bytes([answer[0] ^ 0xFF]) + answer[1:]
            _reply(self.wfile, status, answer, ctype)

        def control(self, method, path, body):
            args = json.loads(body or b"{}")
            name, _, query = path[len("/_test/") :].partition("?")
            if name == "fault":
                with backend.lock:
                    backend.faults.extend(args["modes"])
                out = {"queued": len(backend.faults)}
            elif name == "state":
                device = int(query.partition("=")[2] or 1)
                out = backend.state(device)
            elif name == "reset":
                backend.reset()
                out = {"ok": True}
            elif name == "publish":
                backend.store.publish(
                    args["version"],
                    bytes.fromhex(args["data_hex"]) * args.get("repeat", 1),
                    target=args.get("target", 0),
                    base=args.get("base", 0),
                )
                out = {"ok": True}
            elif name == "restore":
                backend.store.forget_after(args["device"], args["keep"])
                with backend.store._tx() as ex:
                    ex.run(
                        "UPDATE devices SET contig = ?, counter = 0 WHERE device_id = ?",
                        (args["keep"], args["device"]),
                    )
                out = {"ok": True}
            elif name == "time":
                backend.offset = int(args["offset"])
                out = {"server_time": app_mod.server_time()}
            else:
                return _reply(self.wfile, 404, b'{"error": "no such control"}')
            _reply(self.wfile, 200, json.dumps(out).encode())

    return Handler


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def start(tmpdir, pg=None, port=0, thread=True):
    """Backend and proxy in this process -> (proxy, backend); the proxy serves in a daemon thread
    unless thread=False. Other hub modules (the modem simulator's) use this to put a collector
    behind their link."""
    n = [0]

    def url_factory():
        n[0] += 1
        if pg is not None:
            return pg.create_db("uplink%d" % n[0])
        return "sqlite:///" + os.path.join(tmpdir, "c%d.sqlite3" % n[0])

    backend = Backend(url_factory)
    server = _Server(("127.0.0.1", port), make_handler(backend))
    if thread:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, backend


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.collector.testserver")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--pg", action="store_true", help="PostgreSQL (a throw-away server)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def _term(*_):
        raise KeyboardInterrupt  # the test plugin stops us with SIGTERM: clean up PostgreSQL

    signal.signal(signal.SIGTERM, _term)
    tmp = tempfile.TemporaryDirectory(prefix="collector-test-")
    pg = None
    backend = None
    try:
        if args.pg or os.environ.get("UPLINK_TEST_DB") == "postgres":
            from tests.host.pg import PgServer

            pg = PgServer(fast=True)
            pg.start()
        server, backend = start(tmp.name, pg, args.port, thread=False)
        print("PORT %d" % server.server_address[1], flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        # Whatever stage a signal interrupted, nothing is left running or on disk.
        if backend is not None:
            backend.stop()
        if pg is not None:
            pg.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
