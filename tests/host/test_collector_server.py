"""The collector's own HTTP server (`serve`): slow clients are cut off without holding up real
devices, bad HTTP is refused before the body is read, connections and per-device rates are
capped, several worker processes share one port."""

import asyncio
import http.client
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import uplink_proto as up

from tests.host.pg import pg_server  # noqa: F401  (fixture)
from tools.collector import synth
from tools.collector.app import RateLimit, Service
from tools.collector.bench import SimDevice
from tools.collector.db import Store
from tools.collector.server import HttpServer, Limits, listen

ROOT = Path(__file__).resolve().parents[2]
SECRET = bytes(range(1, 33))


class Running:
    """An HttpServer on a loopback port in a thread."""

    def __init__(self, store, limits, rate=None):
        self.sock = listen("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.http = HttpServer(Service(store, rate=rate), limits, threads=4)
        self.loop = asyncio.new_event_loop()
        self.stop = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.stop = asyncio.Event()
        self.loop.run_until_complete(self.http.serve(self.sock, self.stop))

    def __enter__(self):
        self.thread.start()
        while self.stop is None:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        self.http.pool.shutdown()
        self.sock.close()


@pytest.fixture
def store(tmp_path):
    s = Store("sqlite:///" + str(tmp_path / "s.sqlite3"))
    s.provision(1, SECRET)
    s.register_psam(1, synth.PSAM)
    yield s
    s.close()


def post(port, body, path="/v1/upload"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, body, {"Content-Type": "application/octet-stream"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def raw(port, data, wait=True):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    if not wait:
        return s
    s.settimeout(30)
    out = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def test_slow_clients_are_cut_off_and_real_devices_go_through(store, caplog):
    lim = Limits(header_timeout=0.5, body_timeout=0.5, idle_timeout=5)
    dev = SimDevice(1, SECRET)
    with Running(store, lim) as srv:
        slow_head = [raw(srv.port, b"POST /v1/upload HTTP/1.1\r\nHost: x\r\n", wait=False)]
        slow_body = [
            raw(srv.port, b"POST /v1/upload HTTP/1.1\r\nContent-Length: 500\r\n\r\nTU", wait=False)
        ]
        # a real device is served while they hang
        status, ans = post(srv.port, dev.upload_body(1, [synth.purchase(s) for s in (1, 2, 3)]))
        assert status == 200 and dev.answer(ans)["value"] == 3
        for s in slow_head + slow_body:
            s.settimeout(30)
            assert s.recv(100) == b""  # the server closed them
            s.close()
    assert srv.http.cut == 2
    assert any("not received in 0.5 s: closed, nothing stored" in m for m in caplog.messages)
    assert store.count() == 3 and store.device(1)["counter"] == dev.counter


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"POST /v1/upload HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", b"413"),
        (b"POST /v1/upload HTTP/1.1\r\nHost: x\r\n\r\n", b"411"),
        (b"POST /v1/upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
        (b"POST /v1/upload HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"POST /v1/upload HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n", b"404"),
        (b"GET /v1/upload HTTP/1.1\r\nConnection: close\r\n\r\n", b"405"),
    ],
)
def test_bad_http_is_refused_before_the_body(store, request_bytes, status):
    with Running(store, Limits()) as srv:
        out = raw(srv.port, request_bytes)
    assert out.startswith(b"HTTP/1.1 " + status), out[:80]
    assert store.count() == 0 and store.device(1)["counter"] == 0


def test_connection_cap_and_keep_alive_and_health(store):
    with Running(store, Limits(max_connections=2, idle_timeout=5)) as srv:
        held = [raw(srv.port, b"", wait=False) for _ in range(2)]
        deadline = time.monotonic() + 30
        while srv.http.conns < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # until the server holds both (not a timing assert)
        assert srv.http.conns == 2
        out = raw(srv.port, b"")  # refused at once, before it says anything
        assert out.startswith(b"HTTP/1.1 503") and b"too many connections" in out
        for s in held:
            s.close()
        deadline = time.monotonic() + 10
        while srv.http.conns and time.monotonic() < deadline:
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        dev = SimDevice(1, SECRET)
        for first in (1, 3, 5):  # three requests on one keep-alive connection
            recs = [synth.purchase(s) for s in (first, first + 1)]
            conn.request("POST", "/v1/upload", dev.upload_body(first, recs))
            resp = conn.getresponse()
            assert resp.status == 200 and dev.answer(resp.read())["value"] == first + 1
        conn.request("GET", "/v1/health")
        resp = conn.getresponse()
        assert resp.status == 200 and b'"ok": true' in resp.read()
        conn.close()


def test_a_device_over_its_rate_gets_429_and_nothing_is_stored(store):
    with Running(store, Limits(), rate=RateLimit(rate=0.001, burst=2)) as srv:
        dev = SimDevice(1, SECRET)
        assert post(srv.port, dev.upload_body(1, [synth.purchase(1)]))[0] == 200
        assert post(srv.port, dev.upload_body(2, [synth.purchase(2)]))[0] == 200
        status, text = post(srv.port, dev.upload_body(3, [synth.purchase(3)]))
        assert status == 429 and b"requests a second" in text
    assert store.count() == 2


def test_replay_and_reboot_are_told_apart_without_decoding(store, caplog):
    caplog.set_level(logging.INFO, logger="collector")
    svc = Service(store)
    dev = SimDevice(1, SECRET)
    body = dev.upload_body(1, [synth.purchase(s) for s in range(1, 40)], now=synth.T0)
    assert svc.upload(body)[0] == 200
    calls = []
    svc.decoder = lambda r: calls.append(r)  # must not be reached for a stale request
    caplog.clear()
    status, ans = svc.upload(body)  # the same bytes again
    assert status == 409 and calls == []
    assert any("a replayed request" in m for m in caplog.messages)
    rebooted = SimDevice(1, SECRET)  # counter back at 0, clock moved on
    status, ans = svc.upload(rebooted.upload_body(40, [synth.purchase(40)], now=synth.T0 + 60))
    assert status == 409 and calls == []
    assert rebooted.answer(ans)["server_counter"] == 1
    assert any("the validator restarted" in m for m in caplog.messages)
    assert up.MAC_LEN == 32


def test_serve_with_two_workers_stores_every_record_once(tmp_path):
    url = "sqlite:///" + str(tmp_path / "w.sqlite3")
    s = Store(url)
    for d in (1, 2, 3, 4):
        s.provision(d, SECRET)
    s.close()
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLLECTOR_MASTER_KEY="22" * 32)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.collector", "serve", "--db", url, "--port", "0"]
        + ["--tac-keys", "test", "--workers", "2", "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        port = int(proc.stdout.readline().decode().split()[1])
        errors = []

        def device(d):
            dev = SimDevice(d, SECRET)
            for first in range(1, 60, 10):
                recs = [
                    synth.purchase(x, psam_tid=bytes(5) + bytes((d,)))
                    for x in range(first, first + 10)
                ]
                for _ in range(50):
                    try:
                        status, ans = post(port, dev.upload_body(first, recs))
                        break
                    except OSError:
                        time.sleep(0.1)
                if status != 200:
                    errors.append(status)
                else:
                    dev.answer(ans)

        threads = [threading.Thread(target=device, args=(d,)) for d in (1, 2, 3, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
    finally:
        proc.terminate()
        proc.wait(20)
    s = Store(url)
    assert [s.seqs(d) for d in (1, 2, 3, 4)] == [list(range(1, 61))] * 4
    s.close()


@pytest.mark.parametrize("protocol", [2, 1])
def test_load_test_stores_every_record_once_with_slow_connections(request, protocol):
    """tools/collector/load.py end to end on a real PostgreSQL: a short run (figures come from
    `make bench`, nothing here is timed). Its devices send protocol version 2 (a boot epoch, as
    the validators do) by default; version 1 stays covered."""
    from tests.host.pg import pg_bindir
    from tools.collector import load

    if pg_bindir() is None:
        pytest.skip("PostgreSQL binaries not installed")
    pg = request.getfixturevalue("pg_server")
    url = pg.create_db("load%d_%d" % (os.getpid(), protocol))
    r = load.run_load(url, devices=4, seconds=2, slow=6, protocol=protocol)
    assert r["records"] > 0 and r["statuses"] == {"200": r["requests"]}
    assert r["lost"] == 0 and r["duplicated"] == 0 and r["protocol"] == protocol
    s = Store(url, migrate=False)
    try:
        # the (epoch, counter) key the collector keeps: epoch << 32 | counter (0 for version 1)
        for dev in range(100000, 100004):
            key = s.device(dev)["counter"]
            assert key >> 32 == (0 if protocol == 1 else load._epoch(2, dev)), dev
            assert key & 0xFFFFFFFF > 0
    finally:
        s.close()
    rc = load.replay_cost(pg.create_db("replay%d_%d" % (os.getpid(), protocol)), 5, protocol)
    assert rc["batch_bytes"] > 60000 and rc["ratio"] > 0


def test_big_bundles_are_served_by_range_through_serve(store, monkeypatch):
    """GET /v1/bundle/<v> reaches tools/collector/bundles.py serve() with the device, token and
    Range, and its status and headers come back (the bundle logic is tested in
    tests/host/test_params_publish.py)."""
    from tools.collector import bundles

    seen = []

    def fake(st, version, device, token, rng):
        seen.append((version, device, token, rng))
        return 206, {"Content-Range": "bytes 10-19/100"}, bytes(range(10, 20))

    monkeypatch.setattr(bundles, "serve", fake)
    with Running(store, Limits()) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", "/v1/bundle/3?d=1&t=abc", headers={"Range": "bytes=10-19"})
        resp = conn.getresponse()
        assert resp.status == 206 and resp.read() == bytes(range(10, 20))
        assert resp.getheader("Content-Range") == "bytes 10-19/100"
        conn.request("GET", "/v1/bundle/x?d=1")
        resp = conn.getresponse()
        assert resp.status == 400 and resp.read() == b"bad request\n"
        conn.close()
    assert seen == [(3, 1, "abc", "bytes=10-19")]


def test_a_counter_jump_is_answered_with_the_real_counter_and_the_device_recovers(store, caplog):
    svc = Service(store)
    dev = SimDevice(1, SECRET)
    assert svc.upload(dev.upload_body(1, [synth.purchase(1)]))[0] == 200
    # a flipped bit: the counter jumps by 2^31
    status, ans = svc.upload(dev.upload_body(2, [synth.purchase(2)], counter=dev.counter + 2**31))
    assert status == 409 and dev.answer(ans)["server_counter"] == 1  # the device adopts 1
    assert any("jumps more than" in m for m in caplog.messages)
    assert store.count() == 1 and store.device(1)["counter"] == 1
    status, ans = svc.upload(dev.upload_body(2, [synth.purchase(2)]))
    assert status == 200 and dev.answer(ans)["value"] == 2
