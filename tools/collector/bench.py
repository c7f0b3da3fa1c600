"""Collector figures for `make bench` (issue 11 calls these) and a CPython device client.

measure_ingest(db_url, uploaders=4, batches=25, batch_size=100) -> dict
    records/s stored by a real uvicorn collector on loopback, `uploaders` threads each acting
    as its own device and posting batches over HTTP/1.1 keep-alive connections.
wire_bytes(batch_size=100, compress=False) -> dict
    bytes on the wire per record for one upload exchange (request and answer, HTTP framing
    included), measured on a real socket.

python -m tools.collector.bench [--db URL] [--uploaders N]   prints both as JSON
"""

import argparse
import http.client
import json
import os
import socket
import tempfile
import threading
import time

import uplink_proto as up

from . import synth
from .db import Store

# What a validator's HTTP request carries besides the body (drivers/http_socket.py style; the
# modem stacks send about as much).
REQUEST_HEADERS = {"Content-Type": "application/octet-stream"}


def nodelay(sock):
    """The answer leaves as headers then body: without TCP_NODELAY (inherited by accepted
    sockets on Linux) Nagle holds the body for the client's delayed ACK, ~40 ms a request."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SimDevice:
    """A validator as the collector sees it: id, secret, counter, acknowledged sequence."""

    def __init__(self, device_id, secret, compress=False, epoch=None):
        self.id = device_id
        self.secret = secret
        self.epoch = epoch  # None: protocol version 1 (no boot epoch)
        self.counter = 0
        self.acked = 0
        self.compress = compress
        self.last_mac = b""

    def upload_body(self, first_seq, records, now=None, counter=None):
        self.counter = self.counter + 1 if counter is None else counter
        return self._sent(
            up.encode_upload(
                self.secret,
                self.id,
                self.counter,
                now if now is not None else int(time.time()) - 946684800,
                self.acked,
                first_seq,
                records,
                compress=self.compress,
                epoch=self.epoch,
            )
        )

    def params_body(self, have, counter=None):
        self.counter = self.counter + 1 if counter is None else counter
        return self._sent(
            up.encode_params(self.secret, self.id, self.counter, 0, have, epoch=self.epoch)
        )

    def _sent(self, body):
        self.last_mac = up.request_mac(body)  # the answer to it must be bound to this
        return body

    def answer(self, body, kind=up.T_UPLOAD):
        ans = up.decode_answer(
            self.secret, body, self.id, self.counter, kind, self.last_mac, self.epoch
        )
        if kind == up.T_UPLOAD and ans["status"] == up.ST_OK:
            self.acked = max(self.acked, ans["value"])
        if ans["status"] == up.ST_STALE_COUNTER:
            self.counter = ans["server_counter"]
            if self.epoch is not None:
                self.epoch = ans["server_epoch"]
        return ans


class ServerThread:
    """uvicorn serving the collector app in a thread on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        nodelay(self.sock)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        cfg = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            date_header=False,
        )
        self.server = uvicorn.Server(cfg)
        # daemon: a process stopped by a signal must not wait on it before its atexit clean-up.
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def measure_ingest(db_url, uploaders=4, batches=25, batch_size=100, base_device=7000):
    from .app import create_app
    from .clearing import Clearing, simulator_keys

    store = Store(db_url)
    devices = []
    for i in range(uploaders):
        dev = SimDevice(base_device + i, os.urandom(32))
        store.provision(dev.id, dev.secret)
        store.register_psam(dev.id, dev.id.to_bytes(6, "big"))
        # Start above anything an earlier run on this database stored for these ids.
        info = store.device(dev.id)
        dev.counter = info["counter"]
        dev.acked = info["contig"]
        devices.append(dev)
    # Bodies built before the clock starts: the figure is the collector's, not the client's.
    work = []
    for dev in devices:
        bodies = []
        seq = dev.acked + 1
        for _ in range(batches):
            # Purchases that clear clean (genuine TACs, registered PSAM, the time now): the
            # collector does all of its clearing work and has nothing to log.
            now = int(time.time()) - 946684800
            recs = [
                synth.purchase(
                    s,
                    psam_tid=dev.id.to_bytes(6, "big"),
                    t=now,
                    genuine=True,
                    card=dev.id % 10000 * 10000 + s // 60000,
                    atc=s % 60000 + 1,
                )
                for s in range(seq, seq + batch_size)
            ]
            dev.acked = seq - 1
            bodies.append(dev.upload_body(seq, recs))
            seq += batch_size
        work.append(bodies)
    errors = []
    app = create_app(store, clearing=Clearing(simulator_keys()))
    with ServerThread(app) as srv:

        def run(bodies):
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            conn.connect()
            # Without this, Nagle and delayed ACKs add ~40 ms per request on loopback.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for body in bodies:
                conn.request("POST", "/v1/upload", body, REQUEST_HEADERS)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    errors.append((resp.status, data[:100]))
            conn.close()

        before = store.count()
        threads = [threading.Thread(target=run, args=(b,)) for b in work]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        stored = store.count() - before
    store.close()
    total = uploaders * batches * batch_size
    return {
        "db": store.dialect,
        "uploaders": uploaders,
        "batch_size": batch_size,
        "records": total,
        "stored": stored,
        "errors": len(errors),
        "seconds": round(elapsed, 3),
        "records_per_s": round(stored / elapsed, 1) if elapsed else 0.0,
    }


def wire_bytes(batch_size=100, compress=False):
    """One upload exchange on a raw socket: request bytes sent, answer bytes received."""
    from .app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(os.path.join(tmp, "wire.sqlite3"))
        dev = SimDevice(1, os.urandom(32), compress=compress)
        store.provision(dev.id, dev.secret)
        recs = [synth.purchase(s) for s in range(1, batch_size + 1)]
        body = dev.upload_body(1, recs)
        with ServerThread(create_app(store)) as srv:
            head = (
                "POST /v1/upload HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
                "Connection: close\r\n\r\n" % (srv.port, len(body))
            ).encode()
            with socket.create_connection(("127.0.0.1", srv.port)) as s:
                s.sendall(head + body)
                answer = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
        store.close()
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("upload failed: %r" % answer[:80])
    sent = len(head) + len(body)
    return {
        "batch_size": batch_size,
        "compressed": compress,
        "record_bytes": batch_size * synth.SIZE,
        "body_bytes": len(body),
        "request_bytes": sent,
        "answer_bytes": len(answer),
        "bytes_per_record": round((sent + len(answer)) / batch_size, 2) if batch_size else None,
        "exchange_bytes": sent + len(answer),
    }


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.collector.bench")
    p.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    p.add_argument("--uploaders", type=int, default=4)
    p.add_argument("--batches", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=100)
    args = p.parse_args(argv)
    out = {"wire": [wire_bytes(n, c) for n in (0, 10, 50, 100, 200) for c in (False, True)]}
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or os.path.join(tmp, "bench.sqlite3")
        out["ingest"] = measure_ingest(url, args.uploaders, args.batches, args.batch_size)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
