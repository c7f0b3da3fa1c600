"""Load test of a real collector (`serve`, its own processes) on loopback, for `make bench`.

    python -m tools.collector.load [--db URL] [--devices 50] [--seconds 60] [--workers 2]
                                   [--slow 300]      prints the figures as JSON

`devices` simulated validators (asyncio, one keep-alive connection each, in this process) upload
back to back for `seconds`: batches of 1-40 records (uniform), genuine purchases (TACs under the
simulators' test keys, one card per device, a consistent balance chain), so the collector does
all of its clearing work. The requests are built before the clock starts (enough for 12,000
records/s; past that a device builds them as it goes), so the generator, which shares the cores
with the collector and PostgreSQL, mostly writes and reads sockets. `slow` connections are held
open meanwhile, trickling a request head one byte every few seconds and coming back when cut off
(slowloris). Afterwards the database is
read: every record each device was told is held must be there exactly once (per device the
sequence 1..n with no hole, no row outside it, nothing flagged as a duplicate).

Figures: records_per_s (records acknowledged / seconds), latency p50/p99 of the uploads (request
written to answer read), lost, duplicated, requests, CPU ms per request of the collector processes
(/proc), and the replay cost ratio: server time of a replayed 64 KB batch / of a request with a
bad MAC, measured on the same Service in this process.
"""

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import record
import uplink_proto as up

from . import synth
from .clearing import tac_of
from .db import Store
from .keys import KeySource

ROOT = Path(__file__).resolve().parents[2]
_REC = struct.Struct(">BBBBBBII6sI10s4s3s3s3sH4sHHHB")  # firmware/record.py, bytes 0-59
MASTER = bytes(range(64, 96))  # the load test's own master key (a throw-away database)
EPOCH_2000 = 946684800


class Device:
    def __init__(self, device_id, key, rng, epoch=1):
        """epoch: the boot epoch the device's requests carry (protocol version 2, the
        validator's default); None sends version 1 requests."""
        self.id = device_id
        self.key = key
        self.rng = rng
        self.epoch = epoch
        self.counter = 0
        self.seq = 0  # last sequence sent
        self.acked = 0
        self.balance = 10_000_000
        self.psam = b"\x00\x01" + device_id.to_bytes(4, "big")
        self.card = bytes.fromhex("31040000%012d" % device_id)
        self.latencies = []
        self.prebuilt = collections.deque()
        self.records = 0
        self.errors = []
        self.statuses = {}

    def records_for(self, n, now):
        """n genuine purchases (firmware/record.py layout, packed here in one struct call: the
        load generator shares the cores with the collector, so it keeps its own cost low)."""
        out = []
        tkey = synth.test_key()
        for _ in range(n):
            self.seq += 1
            seq = self.seq
            fare = 100 + 50 * (seq % 3)
            bal = self.balance
            self.balance -= fare
            tac = tac_of(
                tkey,
                {
                    "card_no": self.card,
                    "time": now,
                    "reason": 160,
                    "amount": fare,
                    "psam_tid": self.psam,
                    "psam_serial": seq,
                },
            )
            head = _REC.pack(
                record.VERSION,
                record.PURCHASE,
                0,
                1,
                6,
                0,
                seq,
                now,
                self.psam,
                seq,
                self.card,
                synth.ISSUER,
                fare.to_bytes(3, "big"),
                bal.to_bytes(3, "big"),
                (bal - fare).to_bytes(3, "big"),
                seq & 0xFFFF,
                tac,
                52,
                seq % 30,
                0,
                160,
            )
            out.append(head + struct.pack(">I", zlib.crc32(head)))
        return out

    def body(self, n):
        now = int(time.time()) - EPOCH_2000
        first = self.seq + 1
        recs = self.records_for(n, now)
        self.counter += 1
        body = up.encode_upload(
            self.key,
            self.id,
            self.counter,
            now,
            self.acked,
            first,
            recs,
            compress=False,
            epoch=self.epoch,
        )
        return body, up.request_mac(body), n

    def prebuild(self, records, lo, hi):
        """Requests built before the clock starts, about `records` records in all: the load
        generator shares the cores with what it measures, so it does its work up front (as
        bench.measure_ingest does). Each entry: (wire bytes, MAC, n, counter, first seq,
        balance before)."""
        self.prebuilt = collections.deque()
        while records > 0:
            n = self.rng.randint(lo, hi)
            first, bal = self.seq + 1, self.balance
            body, mac, n = self.body(n)
            wire = (HEAD % len(body)).encode() + body
            self.prebuilt.append((wire, mac, n, self.counter, first, bal))
            records -= n

    def next_request(self, lo, hi):
        if self.prebuilt:
            return self.prebuilt.popleft()
        n = self.rng.randint(lo, hi)
        first, bal = self.seq + 1, self.balance
        body, mac, n = self.body(n)
        return (HEAD % len(body)).encode() + body, mac, n, self.counter, first, bal

    def refused(self, first, balance):
        """A request was refused: its records and every later one are sent again."""
        self.prebuilt.clear()
        self.seq = first - 1
        self.balance = balance


HEAD = (
    "POST /v1/upload HTTP/1.1\r\nHost: collector\r\nContent-Type: application/octet-stream\r\n"
    "Content-Length: %d\r\n\r\n"
)


async def _read_answer(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    n = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            n = int(line[15:])
    body = await reader.readexactly(n)
    return status, body


async def run_device(dev, port, deadline, lo, hi):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < deadline:
            wire, mac, n, counter, first, bal = dev.next_request(lo, hi)
            t0 = time.perf_counter()
            writer.write(wire)
            await writer.drain()
            status, answer = await _read_answer(reader)
            dev.latencies.append(time.perf_counter() - t0)
            dev.statuses[status] = dev.statuses.get(status, 0) + 1
            if status != 200:
                dev.errors.append((status, answer[:80]))
                dev.refused(first, bal)  # not stored: sent again, after a pause
                await asyncio.sleep(0.1)
                continue
            ans = up.decode_answer(dev.key, answer, dev.id, counter, up.T_UPLOAD, mac, dev.epoch)
            dev.acked = ans["value"]
            dev.records += n
    finally:
        writer.close()


async def slowloris(port, stop, held):
    """One slow client: a request head a byte every 2 s, reconnecting when cut off."""
    head = b"POST /v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        held[0] += 1
        try:
            for i in range(len(head)):
                writer.write(head[i : i + 1])
                await writer.drain()
                try:
                    await asyncio.wait_for(stop.wait(), 2.0)
                    return
                except asyncio.TimeoutError:
                    pass
                if reader.at_eof():
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            held[0] -= 1
            writer.close()


def _cpu_seconds(pid):
    """utime + stime of a process and its children (the forked workers)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                pids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def start_server(db_url, workers, threads=8, extra=()):
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLLECTOR_MASTER_KEY=MASTER.hex())
    cmd = [sys.executable, "-m", "tools.collector", "serve", "--db", db_url, "--port", "0"]
    cmd += ["--tac-keys", "test", "--workers", str(workers), "--threads", str(threads)]
    cmd += ["--rate", "0", "--log-level", "warning", *extra]
    # Its log goes to a file: a pipe nobody reads would block the collector once full.
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, env=env)
    proc.errlog = err
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        proc.kill()
        proc.wait(10)
        err.seek(0)
        raise RuntimeError("collector did not start: %s" % err.read().decode()[-2000:])
    return proc, int(line.split()[1])


def server_log(proc, tail=4000):
    proc.errlog.seek(0)
    return proc.errlog.read().decode(errors="replace")[-tail:]


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    proc.stdout.close()
    proc.errlog.close()


def provision(db_url, n, base, protocol=2):
    store = Store(db_url, keys=KeySource(MASTER))
    devs = []
    rng = random.Random(1)
    try:
        for i in range(n):
            d = base + i
            key = store.provision(d)
            dev = Device(d, key, random.Random(rng.random()), _epoch(protocol, d))
            store.register_psam(d, dev.psam)
            devs.append(dev)
    finally:
        store.close()
    return devs


def check_stored(db_url, devs):
    """-> (lost, duplicated): records a device was answered for but not held, and rows beyond one
    per record (or held as duplicates)."""
    store = Store(db_url, migrate=False)
    lost = dup = 0
    try:
        with store._tx(write=False) as ex:
            for dev in devs:
                n, distinct, lo, hi, flagged = ex.one(
                    "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq), "
                    "COALESCE(SUM(tsn_dup), 0) FROM records WHERE device_id = ?",
                    (dev.id,),
                )
                want = dev.records
                if n:
                    lost += max(0, want - distinct) + (0 if lo == 1 else 1)
                else:
                    lost += want
                dup += (n - distinct) + flagged + max(0, distinct - want)
    finally:
        store.close()
    return lost, dup


def _epoch(protocol, device_id):
    """A device's boot epoch: version 2 requests carry one (any value a validator's log could
    have reached; distinct per device), version 1 requests none."""
    if protocol not in (1, 2):
        raise ValueError("protocol is 1 or 2")
    return None if protocol == 1 else 1000 + device_id % 50000


def _pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run_load(
    db_url,
    devices=50,
    seconds=60.0,
    workers=2,
    slow=0,
    lo=1,
    hi=40,
    base=100000,
    threads=8,
    protocol=2,
):
    devs = provision(db_url, devices, base, protocol)
    for d in devs:  # enough for 12,000 records/s; past that a device builds as it goes
        d.prebuild(int(12000 * seconds / devices), lo, hi)
    proc, port = start_server(db_url, workers, threads)
    try:
        cpu0 = _cpu_seconds(proc.pid)

        async def main():
            stop = asyncio.Event()
            held = [0]
            slows = [asyncio.ensure_future(slowloris(port, stop, held)) for _ in range(slow)]
            if slow:
                await asyncio.sleep(3)  # let them connect before the clock starts
            t0 = time.monotonic()
            deadline = t0 + seconds
            await asyncio.gather(*(run_device(d, port, deadline, lo, hi) for d in devs))
            elapsed = time.monotonic() - t0
            peak = held[0]
            stop.set()
            await asyncio.gather(*slows, return_exceptions=True)
            return elapsed, peak

        c0 = time.process_time()
        elapsed, held = asyncio.run(main())
        client_cpu = time.process_time() - c0
        cpu = _cpu_seconds(proc.pid) - cpu0
    finally:
        stop_server(proc)
    lat = [x for d in devs for x in d.latencies]
    requests = len(lat)
    records = sum(d.records for d in devs)
    lost, dup = check_stored(db_url, devs)
    statuses = {}
    for d in devs:
        for k, v in d.statuses.items():
            statuses[str(k)] = statuses.get(str(k), 0) + v
    return {
        "devices": devices,
        "batch": [lo, hi],
        "seconds": round(elapsed, 1),
        "workers": workers,
        "protocol": protocol,
        "slow_connections": slow,
        "slow_held_at_end": held,
        "requests": requests,
        "records": records,
        "records_per_s": round(records / elapsed) if elapsed else 0,
        "p50_ms": round(_pct(lat, 0.50) * 1000, 1) if lat else None,
        "p99_ms": round(_pct(lat, 0.99) * 1000, 1) if lat else None,
        "statuses": statuses,
        "first_errors": [e for d in devs for e in d.errors[:1]][:3],
        "lost": lost,
        "duplicated": dup,
        "cpu_ms_per_request": round(cpu * 1000 / requests, 2) if requests else None,
        "client_cpu_s": round(client_cpu, 1),
        "collector_cpu_s": round(cpu, 1),
    }


def replay_cost(db_url, reps=200, protocol=2):
    """Server time of a replayed 64 KB batch / of the same request with a bad MAC (medians)."""
    from .app import Service
    from .clearing import Clearing, simulator_keys

    store = Store(db_url, keys=KeySource(MASTER))
    try:
        dev = provision_one(store, 99999, protocol)
        svc = Service(store, clearing=Clearing(simulator_keys()))
        n = min(up.MAX_RECORDS, (up.MAX_BODY - up.upload_len(0)) // record.SIZE)
        body, _mac, _n = dev.body(n)
        status, _ = svc.upload(body)
        if status != 200:
            raise RuntimeError("the batch to replay was refused: %d" % status)
        bad = bytearray(body)
        bad[-1] ^= 1
        bad = bytes(bad)

        def timed(b):
            out = []
            for _ in range(reps):
                t = time.perf_counter()
                try:
                    svc.upload(b)
                except Exception:  # noqa: BLE001  (the bad MAC is a Refused)
                    pass
                out.append(time.perf_counter() - t)
            return statistics.median(out)

        timed(bad)  # warm
        replay = timed(body)
        badmac = timed(bad)
    finally:
        store.close()
    return {
        "replay_ms": round(replay * 1000, 3),
        "bad_mac_ms": round(badmac * 1000, 3),
        "ratio": round(replay / badmac, 2),
        "batch_bytes": len(body),
    }


def provision_one(store, device_id, protocol=2):
    key = store.provision(device_id)
    dev = Device(device_id, key, random.Random(device_id), _epoch(protocol, device_id))
    store.register_psam(device_id, dev.psam)
    return dev


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.collector.load")
    p.add_argument("--db", help="PostgreSQL URL (default: a throw-away server, fsync on)")
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--slow", type=int, default=0)
    p.add_argument(
        "--protocol", type=int, choices=(1, 2), default=2, help="request version (2: boot epoch)"
    )
    args = p.parse_args(argv)
    pg = None
    url = args.db
    if url is None:
        from tests.host.pg import PgServer

        pg = PgServer(fast=False).start()
        url = pg.create_db("load")
    try:
        out = run_load(
            url,
            args.devices,
            args.seconds,
            args.workers,
            args.slow,
            threads=args.threads,
            protocol=args.protocol,
        )
        out["replay"] = replay_cost(url, protocol=args.protocol)
    finally:
        if pg is not None:
            pg.stop()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
