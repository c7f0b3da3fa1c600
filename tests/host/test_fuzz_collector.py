"""Fuzz (issue 11): hostile HTTP requests against the collector (tools/collector/app.py), called
in process through its ASGI interface, so that even what an HTTP client library would refuse to
send (lying Content-Length, a body cut by a disconnect, odd methods and paths) reaches it.

Three hypothesis families: unsigned junk bodies; messages *signed with the device's own secret*
but hostile inside (mutated headers, wild counters and sequence numbers, records that do not
decode or whose sequence does not match, bad deflate streams); and HTTP-level abuse.
Invariants: the answer is one of the documented statuses (never 500/503 while SQLite is fine);
a refused request stores nothing and does not move the device's acknowledged state; an accepted
upload stores only records that decode and carry the sequence the batch header implies; and the
honest validator's next upload is accepted and stored. Counts and the seed mode are reported with
record_property and printed (`pytest -rP` shows them); FUZZ_LONG=1 multiplies the counts by 20.

The honest device speaks protocol version 2 (a boot epoch, what firmware/uplink.py sends by
default) and the hostile messages are version 2 or 1; the whole file runs again with a version 1
device sent only version 1 messages (a version 2 message accepted for a device moves it to
version 2 for good, as on a real validator), so both versions stay covered.
"""

import asyncio
import logging
import struct
import tempfile
import time
import warnings

import pytest
import record
import uplink_proto as up
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import fuzzgen
from tools.collector import synth
from tools.collector.app import create_app
from tools.collector.bench import SimDevice
from tools.collector.db import Store

warnings.simplefilter("ignore", DeprecationWarning)

pytestmark = pytest.mark.fuzz

SECRET = bytes(range(1, 33))
DEVICE = 7
EPOCH = 5  # the honest version 2 device's boot epoch
OK_STATUSES = {200, 400, 401, 403, 404, 405, 409, 413, 422}


def examples(n):
    return settings(
        max_examples=fuzzgen.count(n),
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )


class Harness:
    """One SQLite store and app for a test; the honest device keeps uploading between examples.
    protocol: the honest device's request version; `versions` those the hostile messages use."""

    def __init__(self, protocol=2):
        self.protocol = protocol
        self.versions = (2, 2, 1) if protocol == 2 else (1,)
        self.tmp = tempfile.TemporaryDirectory()
        self.store = Store("sqlite:///" + self.tmp.name + "/c.sqlite3")
        self.store.provision(DEVICE, SECRET, "bus")
        self.app = create_app(self.store)
        self.dev = SimDevice(DEVICE, SECRET, epoch=EPOCH if protocol == 2 else None)
        self.next_seq = 1
        self.tally = fuzzgen.Tally()
        self.examples = 0
        logging.getLogger("collector").setLevel(logging.CRITICAL)

    def close(self):
        logging.getLogger("collector").setLevel(logging.NOTSET)  # later tests read its log
        self.store.close()
        self.tmp.cleanup()

    def call(self, method, path, headers, chunks, disconnect=False):
        """One ASGI request -> (status, body). chunks: list of body pieces."""
        sent = []

        async def run():
            pieces = list(chunks)
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "raw_path": path.encode("latin-1", "replace"),
                "query_string": b"",
                "root_path": "",
                "headers": [(k.lower(), v) for k, v in headers],
                "client": ("127.0.0.1", 5000),
                "server": ("127.0.0.1", 8080),
            }

            async def receive():
                if pieces:
                    body = pieces.pop(0)
                    more = bool(pieces) or disconnect
                    return {"type": "http.request", "body": body, "more_body": more}
                if disconnect:
                    return {"type": "http.disconnect"}
                await asyncio.sleep(3600)

            async def send(message):
                sent.append(message)

            if disconnect and not pieces:
                pieces.append(b"")
            await asyncio.wait_for(self.app(scope, receive, send), 30)

        if disconnect:
            chunks = list(chunks)
        asyncio.run(run())
        start = [m for m in sent if m["type"] == "http.response.start"]
        assert len(start) == 1, sent
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start[0]["status"], body

    def post(self, path, body, headers=None):
        hdrs = [(b"content-type", b"application/octet-stream")]
        hdrs.append((b"content-length", str(len(body)).encode()))
        return self.call("POST", path, hdrs + list(headers or []), [body])

    def snapshot(self):
        return self.store.seqs(DEVICE), self.store.device(DEVICE)

    def check(self, status, before, what):
        """The invariants after one hostile request."""
        self.examples += 1
        self.tally.add(str(status))
        assert status in OK_STATUSES, "%s: status %d" % (what, status)
        after = self.snapshot()
        if status != 200:
            assert after[0] == before[0], "%s: refused (%d) but rows changed" % (what, status)
        new = sorted(set(after[0]) - set(before[0]))
        if new:
            rows = {int(r[1]): r for r in self.store.export(DEVICE)}
            for seq in new:
                raw = bytes.fromhex(rows[seq][-1])
                rec = record.decode(raw)  # stored only when it decodes ...
                assert rec["seq"] == seq, "%s: stored seq %d holds %d" % (what, seq, rec["seq"])
            self.next_seq = max(self.next_seq, max(after[0]) + 1)
            self.tally.add("stored_rows")
        self.honest_upload(what)

    def honest_upload(self, what):
        """The validator's next batch goes through (after a 409 it adopts the server counter,
        as firmware/uplink.py does) and its records are stored."""
        seqs = list(range(self.next_seq, self.next_seq + 2))
        for _ in range(2):
            recs = [synth.purchase(s, t=synth.T0, psam_serial=s & 0xFFFF) for s in seqs]
            body = self.dev.upload_body(seqs[0], recs)
            status, answer = self.post("/v1/upload", body)
            if status == 409:
                self.dev.answer(answer)
                self.tally.add("honest_409_then_resent")
                continue
            break
        assert status == 200, "%s: honest upload got %d %r" % (what, status, answer[:80])
        ans = self.dev.answer(answer)
        assert ans["status"] == up.ST_OK
        assert set(seqs) <= set(self.store.seqs(DEVICE)), what
        self.next_seq = seqs[-1] + 1

    def report(self, name, record_property):
        line = "fuzz %s hypothesis derandomize=True examples=%d long=%d %s" % (
            name,
            self.examples,
            1 if fuzzgen.long_mode() else 0,
            self.tally.summary(),
        )
        record_property("fuzz", line)
        print(line)
        return line


@pytest.fixture(params=[2, 1], ids=["v2", "v1"])
def harness(request):
    h = Harness(request.param)
    yield h
    h.close()


def header(version, kind, counter, now, epoch=EPOCH):
    """A request header of either protocol version (docs/protocol.md section 3.1)."""
    head = struct.pack(">2sBBIII", b"TU", version, kind, DEVICE, counter, now)
    return head + (struct.pack(">I", epoch) if version == up.VERSION_EPOCH else b"")


def test_unsigned_junk_bodies(harness, record_property):
    header_ = header(harness.protocol, 1, 1, 0)

    @examples(150)
    @given(
        path=st.sampled_from(["/v1/upload", "/v1/params"]),
        body=st.one_of(
            st.binary(max_size=300),
            st.binary(max_size=200).map(lambda b: header_ + b),
            st.binary(min_size=32, max_size=32).map(lambda m: header_ + m),
        ),
    )
    def run(path, body):
        before = harness.snapshot()
        status, _ = harness.post(path, body)
        assert status in (400, 401, 403, 413), (body[:40], status)
        harness.check(status, before, "junk to %s" % path)

    run()
    harness.report("collector_junk", record_property)


def resealed(inner):
    return up._seal(SECRET, inner)


def epochs():
    """Boot epochs: the honest device's, near it, anywhere."""
    return st.one_of(st.just(EPOCH), st.integers(0, EPOCH + 3), st.integers(0, 0xFFFFFFFF))


@st.composite
def signed_uploads(draw, versions):
    """Upload messages signed with the device's secret whose content is hostile."""
    # Counters stay below 2**31: one accepted message at 0xFFFFFFFF (only possible with the
    # device's key) would leave the real device no counter above it (see docs/robustness.md).
    counter = draw(st.one_of(st.integers(0, 3), st.integers(0, 0x7FFFFFFF)))
    now = draw(st.integers(0, 0xFFFFFFFF))
    acked = draw(st.one_of(st.integers(0, 50), st.integers(0, 0xFFFFFFFF)))
    first = draw(st.one_of(st.integers(0, 60), st.integers(0, 0xFFFFFFFF)))
    n = draw(st.integers(0, 6))
    size = draw(st.sampled_from([64] * 6 + [0, 1, 63, 65, 255]))
    enc = draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 255]))
    recs = []
    for i in range(n):
        kind = draw(st.sampled_from(["good", "good", "good", "wrong_seq", "flipped", "random"]))
        seq = (first + i) & 0xFFFFFFFF
        raw = synth.purchase(seq or 1, t=synth.T0, psam_serial=7)
        if kind == "wrong_seq":
            raw = synth.purchase(draw(st.integers(1, 0xFFFFFFFF)), t=synth.T0, psam_serial=7)
        elif kind == "flipped":
            pos = draw(st.integers(0, 63))
            raw = raw[:pos] + bytes((raw[pos] ^ draw(st.integers(1, 255)),)) + raw[pos + 1 :]
        elif kind == "random":
            raw = draw(st.binary(min_size=64, max_size=64))
        recs.append(raw[:size] + bytes(max(0, size - 64)))
    head = header(draw(st.sampled_from(versions)), up.T_UPLOAD, counter, now, draw(epochs()))
    count = draw(st.one_of(st.just(n), st.just(n), st.just(n), st.integers(0, 0xFFFF)))
    head += struct.pack(">IIHBB", acked, first, count, size, enc)
    payload = b"".join(recs)
    if enc == 1:
        packed = up.deflate(payload)
        payload = packed if draw(st.booleans()) else draw(st.binary(max_size=80))
    inner = head + payload
    cut = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, len(inner))))
    if cut is not None:
        inner = inner[:cut]
    return resealed(inner)


def test_signed_hostile_uploads(harness, record_property):
    @examples(200)
    @given(body=signed_uploads(harness.versions))
    def run(body):
        before = harness.snapshot()
        status, answer = harness.post("/v1/upload", body)
        harness.check(status, before, "signed upload %s" % body[:40].hex())

    run()
    line = harness.report("collector_signed", record_property)
    assert harness.tally.get("422") > 0 and harness.tally.get("400") > 0, line


@st.composite
def signed_params(draw, versions):
    kind = draw(st.sampled_from([up.T_PARAMS, up.T_PARAMS, up.T_UPLOAD, 0, 3, 255]))
    counter = draw(st.integers(0, 0x7FFFFFFF))
    version = draw(st.sampled_from(versions))
    head = header(version, kind, counter, draw(st.integers(0, 2**32 - 1)), draw(epochs()))
    tail = draw(
        st.one_of(
            st.integers(0, 2**32 - 1).map(lambda v: struct.pack(">I", v)), st.binary(max_size=9)
        )
    )
    return resealed(head + tail)


def test_signed_hostile_parameter_queries(harness, record_property):
    harness.store.publish(1, b"bundle-bytes-v1")

    @examples(150)
    @given(body=signed_params(harness.versions))
    def run(body):
        before = harness.snapshot()
        status, _ = harness.post("/v1/params", body)
        harness.check(status, before, "signed params %s" % body[:24].hex())

    run()
    harness.report("collector_params", record_property)


HEADER_NAMES = [b"content-length", b"content-type", b"transfer-encoding", b"x-junk", b"host"]


def test_http_level_abuse(harness, record_property):
    good = SimDevice(DEVICE, SECRET, epoch=harness.dev.epoch)

    @examples(150)
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
        path=st.one_of(
            st.sampled_from(["/v1/upload", "/v1/params", "/v1/health", "/openapi.json", "/"]),
            st.text(alphabet="/v1uplodaxms%.?#", max_size=20).map(lambda p: "/" + p),
        ),
        headers=st.lists(
            st.tuples(
                st.sampled_from(HEADER_NAMES),
                st.one_of(
                    st.sampled_from([b"-1", b"0", b"99999999999", b"abc", b"", b"chunked"]),
                    st.binary(max_size=20).map(lambda b: bytes(c for c in b if 32 <= c < 127)),
                ),
            ),
            max_size=4,
        ),
        body=st.one_of(st.binary(max_size=100), st.just(None)),
        split=st.integers(1, 7),
        disconnect=st.booleans(),
    )
    def run(method, path, headers, body, split, disconnect):
        if body is None:  # a real signed upload, sent under hostile HTTP conditions
            body = good.upload_body(1, [synth.purchase(1)], counter=1)
        chunks = [body[i : i + split] for i in range(0, len(body), split)] or [b""]
        if disconnect:
            chunks = chunks[: len(chunks) // 2]
        before = harness.snapshot()
        status, _ = harness.call(method, path, headers, chunks, disconnect)
        if disconnect and method == "POST" and path in ("/v1/upload", "/v1/params"):
            assert status == 400, "a cut body must be refused, got %d" % status
        harness.check(status, before, "%s %s" % (method, path))

    run()
    harness.report("collector_http", record_property)


def test_long_run_has_no_leftover_state(harness):
    # After everything, the collector still answers health and keeps contiguous sequences.
    harness.honest_upload("final")
    status, body = harness.call("GET", "/v1/health", [], [b""])
    assert status == 200 and b'"ok":true' in body
    assert harness.store.gaps(DEVICE) == []
    assert time.time() > 0
