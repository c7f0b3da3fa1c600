"""Fuzzing the collector's own HTTP server (tools/collector/server.py, what `serve` runs): any
bytes on a connection get an answer with a known status or a closed connection, nothing is
stored for them, the server keeps serving an honest device, and no connection stays held."""

import logging
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.host.test_collector_server import SECRET, Running, post
from tools import fuzzgen
from tools.collector import synth
from tools.collector.bench import SimDevice
from tools.collector.db import Store
from tools.collector.server import Limits

pytestmark = pytest.mark.fuzz

KNOWN = {b"200", b"400", b"401", b"404", b"405", b"409", b"411", b"413", b"422", b"431", b"501"}
METHODS = st.sampled_from([b"POST", b"GET", b"PUT", b"", b"P\x00ST", b"post"])
PATHS = st.sampled_from([b"/v1/upload", b"/v1/params", b"/v1/health", b"/", b"/v1/bundle/x", b"*"])
HEADERS = st.lists(
    st.one_of(
        st.builds(lambda n: b"Content-Length: %d" % n, st.integers(-5, 70000)),
        st.just(b"Content-Length: abc"),
        st.just(b"Transfer-Encoding: chunked"),
        st.just(b"Connection: close"),
        st.just(b"no colon here"),
        st.binary(max_size=40),
    ),
    max_size=4,
)


def _exchange(port, data):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(30)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # then the server sees the end: it must answer or close
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        return out
    except ConnectionResetError:
        return b""
    finally:
        s.close()


class Errors(logging.Handler):
    """ERROR records of the server and of asyncio (an exception escaping a connection)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.seen = []

    def emit(self, rec):
        self.seen.append(rec.getMessage())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzzhttp") / "f.sqlite3"
    store = Store("sqlite:///" + str(path))
    store.provision(1, SECRET)
    store.register_psam(1, synth.PSAM)
    errors = Errors()
    for name in ("collector.http", "asyncio"):
        logging.getLogger(name).addHandler(errors)
    lim = Limits(header_timeout=0.3, body_timeout=0.3, idle_timeout=0.5)
    try:
        with Running(store, lim) as srv:
            srv.errors = errors
            yield srv, store
    finally:
        for name in ("collector.http", "asyncio"):
            logging.getLogger(name).removeHandler(errors)
        store.close()


@settings(
    max_examples=fuzzgen.count(60),
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(
    method=METHODS,
    path=PATHS,
    headers=HEADERS,
    body=st.binary(max_size=300),
    cut=st.integers(0, 400),
)
def test_any_bytes_get_a_known_status_or_a_close_and_store_nothing(
    server, method, path, headers, body, cut
):
    srv, store = server
    before = (store.count(), store.device(1))
    data = method + b" " + path + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body
    out = _exchange(srv.port, data[: cut or None])
    for status in [out[9:12]] + [
        out[i + 9 : i + 12] for i in range(1, len(out)) if out.startswith(b"HTTP/1.1 ", i)
    ]:
        if out:
            assert status in KNOWN, out[:200]
    assert (store.count(), store.device(1)) == before


def test_the_server_still_serves_and_holds_no_connection_after_the_fuzzing(server):
    srv, store = server
    dev = SimDevice(1, SECRET)
    dev.counter = store.device(1)["counter"]
    dev.acked = store.device(1)["contig"]
    first = dev.acked + 1
    status, ans = post(srv.port, dev.upload_body(first, [synth.purchase(first)]))
    assert status == 200 and dev.answer(ans)["value"] == first
    deadline = time.monotonic() + 30
    while srv.http.conns and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.http.conns == 0
    assert srv.errors.seen == []  # no exception escaped a connection
