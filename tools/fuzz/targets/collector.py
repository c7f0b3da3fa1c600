"""The collector's request decoding: tools/collector/app.py Service.upload/params (authenticate,
counter, decode_request, record decoding, storing) on a SQLite store, and the HTTP server's
request head and body handling (tools/collector/server.py HttpServer.handle on an in-memory
stream). tests/host/test_fuzz_collector*.py drive the Starlette app with hypothesis.

Input: first byte: bits 0-1 pick the mode. 0: the rest is an upload/params body (bit 2) sealed
with the device's secret, its counter set just above the device's when bit 3 is set; 1: the
rest as a body, unsealed; 2: the rest as raw bytes on a connection to HttpServer.handle.
Invariants (docs/robustness.md): the answer is a documented status, never 500/503 and never an
unexpected exception (the server's catch-all logs it: a finding); a refused request stores no
row; a stored row decodes with the sequence its batch implies; then the honest device's next
upload is 200 and stored.
"""

import asyncio
import logging
import os
import shutil
import struct
import tempfile

from tools.fuzz import shim

shim.install()

import record  # noqa: E402
import uplink_proto as up  # noqa: E402

from tools.collector import synth  # noqa: E402
from tools.collector.app import Refused, Service  # noqa: E402
from tools.collector.bench import SimDevice  # noqa: E402
from tools.collector.db import Store  # noqa: E402
from tools.collector.server import HttpServer  # noqa: E402
from tools.fuzz.shim import check  # noqa: E402

NAME = "collector"
SECRET = bytes(range(1, 33))
DEVICE = 7
OK_STATUSES = {200, 400, 401, 403, 404, 405, 409, 411, 413, 416, 422, 431, 501}


class _Unexpected(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.seen = []

    def emit(self, r):
        if r.exc_info:
            self.seen.append("%s: %r" % (r.getMessage(), r.exc_info[1]))


class _World:
    """One store and device for the process (a store per input would cost more than the input);
    in the fuzzing run's work directory or bench/out (not /tmp: atheris leaves by os._exit)."""

    def __init__(self):
        base = os.getenv("FUZZ_WORKDIR") or os.path.join(shim.ROOT, "bench", "out")
        os.makedirs(base, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="fuzz-collector-", dir=base)
        self.store = Store("sqlite:///" + self.dir + "/c.sqlite3")
        self.store.provision(DEVICE, SECRET, "bus")
        self.svc = Service(self.store)
        self.http = HttpServer(self.svc, threads=1)
        self.dev = SimDevice(DEVICE, SECRET)
        self.next_seq = 1
        self.unexpected = _Unexpected()
        logging.getLogger("collector").addHandler(self.unexpected)
        logging.getLogger("collector").setLevel(logging.ERROR)
        logging.getLogger("collector").propagate = False


_world = None


def world():
    global _world
    if _world is None:
        _world = _World()
    return _world


class _Writer:
    def __init__(self):
        self.out = bytearray()

    def get_extra_info(self, name):
        return None

    def write(self, data):
        self.out += data

    async def drain(self):
        pass

    def close(self):
        pass


def _call(w, upload, body):
    try:
        return (w.svc.upload if upload else w.svc.params)(body)[0]
    except Refused as e:
        return e.status


async def _http(w, raw):
    reader = asyncio.StreamReader(limit=16384)
    reader.feed_data(raw)
    reader.feed_eof()
    writer = _Writer()
    await w.http.handle(reader, writer)
    return bytes(writer.out)


def honest_upload(w):
    seqs = [w.next_seq, w.next_seq + 1]
    for _ in range(2):
        recs = [synth.purchase(s, t=synth.T0, psam_serial=s & 0xFFFF) for s in seqs]
        status, answer = w.svc.upload(w.dev.upload_body(seqs[0], recs))
        if status == 409:
            w.dev.answer(answer)
            continue
        break
    check(status == 200, "honest upload got %d" % status)
    check(w.dev.answer(answer)["status"] == up.ST_OK, "honest answer")
    check(set(seqs) <= set(w.store.seqs(DEVICE)), "honest records stored")
    w.next_seq = seqs[-1] + 1


def one_input(data):
    if not data:
        return
    w = world()
    del w.unexpected.seen[:]
    before = set(w.store.seqs(DEVICE))
    mode, rest = data[0] & 3, bytes(data[1:])
    upload = not data[0] & 4
    if mode == 0:
        if len(rest) >= up.REQ_LEN:
            if data[0] & 8:
                counter = w.store.device(DEVICE)["counter"] + 1
                rest = rest[:8] + struct.pack(">I", counter) + rest[12:]
            rest = up._seal(SECRET, rest)
        statuses = [_call(w, upload, rest)]
    elif mode == 1:
        statuses = [_call(w, upload, rest)]
    else:
        out = asyncio.run(_http(w, rest))
        statuses = [int(x.split(b" ")[1]) for x in out.split(b"\r\n") if x.startswith(b"HTTP/1")]
    check(not w.unexpected.seen, "unexpected: %s" % w.unexpected.seen)
    for s in statuses:
        check(s in OK_STATUSES, "status %d" % s)
    after = set(w.store.seqs(DEVICE))
    if 200 not in statuses:
        check(after == before, "refused (%r) but rows changed" % statuses)
    new = sorted(after - before)
    if new:
        rows = {int(r[1]): r for r in w.store.export(DEVICE)}
        for seq in new:
            rec = record.decode(bytes.fromhex(rows[seq][-1]))
            check(rec["seq"] == seq, "stored seq %d holds %d" % (seq, rec["seq"]))
        w.next_seq = max(w.next_seq, max(after) + 1)
    honest_upload(w)


def close():
    """Drop the store (tests call this; a fuzzing process leaves it under bench/out)."""
    global _world
    if _world is not None:
        _world.store.close()
        logging.getLogger("collector").removeHandler(_world.unexpected)
        logging.getLogger("collector").propagate = True
        logging.getLogger("collector").setLevel(logging.NOTSET)
        shutil.rmtree(_world.dir, ignore_errors=True)
        _world = None


def _seed_bodies():
    d = SimDevice(DEVICE, SECRET)
    recs = [synth.purchase(s, t=synth.T0, psam_serial=s) for s in (1, 2)]
    up_body = d.upload_body(1, recs)
    par_body = d.params_body(0)
    http = (
        b"POST /v1/upload HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(up_body) + up_body,
        b"GET /v1/health HTTP/1.1\r\n\r\nGET /openapi.json HTTP/1.0\r\n\r\n",
        b"POST /v1/params HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /v1/bundle/3?d=7&t=00 HTTP/1.1\r\nRange: bytes=0-9\r\n\r\n",
    )
    return (
        b"\x08" + up_body[: -up.MAC_LEN],
        b"\x0c" + par_body[: -up.MAC_LEN],
        b"\x01" + up_body,
    ) + tuple(b"\x02" + h for h in http)


SEEDS = _seed_bodies()
