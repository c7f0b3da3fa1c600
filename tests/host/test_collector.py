"""The collector on SQLite and on a real PostgreSQL server: one suite, both databases."""

import csv
import http.client
import io
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings

import bundle as fwbundle
import pytest
import record
import uplink_proto as up

from tests.host.pg import pg_server  # noqa: F401  (fixture)
from tools.collector import cli, synth
from tools.collector.app import create_app
from tools.collector.bench import ServerThread, SimDevice, measure_ingest, wire_bytes
from tools.collector.clearing import Clearing, IssuerKey, tac_of
from tools.collector.db import SCHEMA_VERSION, Store

with warnings.catch_warnings():
    # starlette 1.x nudges towards httpx2; the pinned httpx works and is what we have.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SECRET_A = bytes(range(1, 33))
SECRET_B = bytes(range(101, 133))
PSAM_B = b"\x00\x00\x00\x00\x00\x02"
_dbn = [0]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "c.sqlite3")
    pg = request.getfixturevalue("pg_server")
    _dbn[0] += 1
    return pg.create_db("t%d_%d" % (os.getpid(), _dbn[0]))


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.provision(1, SECRET_A, "bus 1")
    s.provision(2, SECRET_B, "bus 2")
    s.register_psam(1, synth.PSAM)
    s.register_psam(2, PSAM_B)
    yield s
    s.close()


@pytest.fixture
def client(store):
    return TestClient(create_app(store))


def old_device(s, device_id, secret):
    """A device row as a schema before migration 6 held it (secret stored)."""
    with s._tx() as ex:
        ex.run(
            "INSERT INTO devices (device_id, secret, created) VALUES (?, ?, ?)",
            (device_id, secret, int(time.time())),
        )


def recs(first, last):
    return [synth.purchase(s) for s in range(first, last + 1)]


def upload(client, dev, first, last, **kw):
    r = client.post("/v1/upload", content=dev.upload_body(first, recs(first, last), **kw))
    assert r.status_code == 200, r.text
    return dev.answer(r.content)


def test_batch_is_stored_and_acknowledged(client, store):
    dev = SimDevice(1, SECRET_A)
    ans = upload(client, dev, 1, 50)
    assert ans["status"] == up.ST_OK and ans["value"] == 50
    assert store.seqs(1) == list(range(1, 51))
    rows = list(store.export(1))
    assert rows[0][5] == synth.PSAM.hex() and rows[0][9] == "nokey"  # no TAC key set up
    assert rows[0][-2] == "tac_nokey,date"  # reported, never silently unchecked
    assert bytes.fromhex(rows[7][-1]) == synth.purchase(8)


def test_compressed_batch_is_stored_identically(client, store):
    dev = SimDevice(1, SECRET_A, compress=True)
    body = dev.upload_body(1, recs(1, 100))
    assert len(body) < 100 * 64 * 0.7
    r = client.post("/v1/upload", content=body)
    assert dev.answer(r.content)["value"] == 100
    assert [bytes.fromhex(row[-1]) for row in store.export(1)] == recs(1, 100)


def test_resent_batch_is_stored_once(client, store):
    dev = SimDevice(1, SECRET_A)
    for _ in range(3):  # the answer was lost twice; each retry is a new signed request
        dev.acked = 0
        assert upload(client, dev, 1, 20)["value"] == 20
    assert store.count(1) == 20


def test_overlapping_batches(client, store):
    dev = SimDevice(1, SECRET_A)
    upload(client, dev, 1, 30)
    dev.acked = 10
    assert upload(client, dev, 11, 45)["value"] == 45
    assert store.seqs(1) == list(range(1, 46))


def test_out_of_order_batches_hold_the_ack_at_the_gap(client, store):
    dev = SimDevice(1, SECRET_A)
    body = dev.upload_body(21, recs(21, 40))  # a later batch arrives first
    assert dev.answer(client.post("/v1/upload", content=body).content)["value"] == 0
    assert upload(client, dev, 1, 10)["value"] == 10
    assert upload(client, dev, 11, 20)["value"] == 40  # the gap filled: everything held
    assert store.seqs(1) == list(range(1, 41))
    assert store.gaps(1) == []


def test_devices_are_kept_apart(client, store):
    a, b = SimDevice(1, SECRET_A), SimDevice(2, SECRET_B)
    upload(client, a, 1, 10)
    r = client.post(
        "/v1/upload",
        content=b.upload_body(1, [synth.purchase(s, psam_tid=PSAM_B) for s in range(1, 6)]),
    )
    assert b.answer(r.content)["value"] == 5
    assert store.count(1) == 10 and store.count(2) == 5


def test_repeated_psam_serial_is_kept_once_for_clearing(client, store, caplog):
    a, b = SimDevice(1, SECRET_A), SimDevice(2, SECRET_B)
    upload(client, a, 1, 5)
    # A PSAM moved from bus 1 to bus 2 (registry updated) replays a serial bus 1 booked.
    store.register_psam(2, synth.PSAM)
    dup = synth.purchase(1, psam_serial=1003, card=33, atc=4000)
    r = client.post("/v1/upload", content=b.upload_body(1, [dup]))
    assert b.answer(r.content)["value"] == 1  # the device still advances
    flags = {(row[0], row[1]): row[10] for row in store.export()}
    assert flags[(1, 3)] == 0 and flags[(2, 1)] == 1
    assert any("repeats a held purchase (tsn_dup" in m for m in caplog.messages)


def test_a_foreign_psam_is_quarantined_and_demotes_no_genuine_record(client, store, caplog):
    a, b = SimDevice(1, SECRET_A), SimDevice(2, SECRET_B)
    # Device 2 uploads first a record with device 1's PSAM and its next serial...
    forged = synth.purchase(1, psam_serial=1003, card=7, atc=99)
    r = client.post("/v1/upload", content=b.upload_body(1, [forged]))
    assert b.answer(r.content)["value"] == 1
    # ...then device 1's genuine record with that serial and card counter arrives.
    genuine = [
        synth.purchase(s, card=7, atc=99) if s == 3 else synth.purchase(s) for s in (1, 2, 3)
    ]
    r = client.post("/v1/upload", content=a.upload_body(1, genuine))
    assert a.answer(r.content)["value"] == 3
    cols = Store.EXPORT_COLUMNS
    rows = {(row[0], row[1]): row for row in store.export()}
    assert rows[(1, 3)][cols.index("tsn_dup")] == 0  # the genuine record keeps its place
    assert "psam" not in (rows[(1, 3)][cols.index("exceptions")] or "")
    assert rows[(2, 1)][cols.index("tsn_dup")] == 1
    assert rows[(2, 1)][cols.index("exceptions")].split(",")[-1] == "psam"
    reasons = {(r["device_id"], r["seq"]): r["reasons"] for r in store.exceptions()}
    assert "psam" in reasons[(2, 1)] and "psam" not in reasons.get((1, 3), [])


def test_psam_registry_boot_warning_and_cli(client, store, caplog, tmp_path, capsys, monkeypatch):
    b = SimDevice(2, SECRET_B)
    boot = record.encode({"kind": record.BOOT, "time": synth.T0, "psam_tid": synth.PSAM}, 1)
    r = client.post("/v1/upload", content=b.upload_body(1, [boot]))
    assert b.answer(r.content)["value"] == 1
    assert any(
        "booted with PSAM %s, not registered" % synth.PSAM.hex() in m for m in caplog.messages
    )
    assert store.psams() == {synth.PSAM.hex(): 1, PSAM_B.hex(): 2}
    store.register_psam(2, synth.PSAM)  # moved: it leaves device 1
    assert store.psams(1) == {} and store.psams(2) == {synth.PSAM.hex(): 2, PSAM_B.hex(): 2}
    for bad in ("12", "zz" * 6):
        with pytest.raises(ValueError):
            store.register_psam(2, bad)
    with pytest.raises(ValueError, match="unknown device"):
        store.register_psam(9, "00" * 6)
    url = "sqlite:///" + str(tmp_path / "p.sqlite3")
    monkeypatch.setenv("COLLECTOR_MASTER_KEY", "11" * 32)
    assert cli.main(["provision", "--db", url, "--device", "4", "--psam", "0000000000AB"]) == 0
    assert cli.main(["psam", "--db", url, "--device", "4", "--tid", "0000000000ac"]) == 0
    assert capsys.readouterr().out.endswith("0000000000ab 4\n0000000000ac 4\n")
    assert cli.main(["psam", "--db", url, "--tid", "0000000000ab", "--remove"]) == 0
    assert cli.main(["psam", "--db", url, "--tid", "0000000000ab", "--remove"]) == 2
    assert cli.main(["psam", "--db", url]) == 0
    assert capsys.readouterr().out.endswith("psam_tid device\n0000000000ac 4\n")


def test_restore_from_an_older_backup(client, store, caplog):
    dev = SimDevice(1, SECRET_A)
    upload(client, dev, 1, 30)
    assert dev.acked == 30  # the device freed 1..30
    # The back office is restored from a backup taken when it held 1..10 (counter 0).
    store.forget_after(1, 10)
    with store._tx() as ex:
        ex.run("UPDATE devices SET contig = 10, counter = 0 WHERE device_id = 1")
    dev.counter = 5  # the device's counter is ahead of the restored one: accepted
    assert upload(client, dev, 31, 40)["value"] == 40
    assert store.gaps(1) == [(11, 30)]
    assert any("gone from the device but not held here" in m for m in caplog.messages)
    assert store.count(1) == 20
    # Re-sending what the device still has changes nothing.
    dev.acked = 30
    assert upload(client, dev, 31, 40)["value"] == 40
    assert store.count(1) == 20 and store.gaps(1) == [(11, 30)]


def test_stale_counter_gets_a_signed_answer_with_the_server_counter(client, store):
    dev = SimDevice(1, SECRET_A)
    upload(client, dev, 1, 3)
    upload(client, dev, 4, 6)
    rebooted = SimDevice(1, SECRET_A)  # lost its counter
    rebooted.acked = 6
    r = client.post("/v1/upload", content=rebooted.upload_body(7, recs(7, 9)))
    assert r.status_code == 409
    ans = rebooted.answer(r.content)
    assert ans["status"] == up.ST_STALE_COUNTER and ans["server_counter"] == 2
    assert store.count(1) == 6
    assert upload(client, rebooted, 7, 9)["value"] == 9


def test_replayed_request_is_refused_and_changes_nothing(client, store, caplog):
    dev = SimDevice(1, SECRET_A)
    body = dev.upload_body(1, recs(1, 5))
    assert client.post("/v1/upload", content=body).status_code == 200
    before = store.device(1)
    r = client.post("/v1/upload", content=body)
    assert r.status_code == 409
    assert store.device(1)["counter"] == before["counter"] and store.count(1) == 5
    assert any("a replayed request" in m for m in caplog.messages)


def _hostile_cases():
    a = SimDevice(1, SECRET_A)
    good = a.upload_body(1, recs(1, 3))
    flipped = bytearray(good)
    flipped[40] ^= 0x04
    foreign = SimDevice(2, SECRET_A).upload_body(1, recs(1, 3))  # A's key, B's id
    unknown = SimDevice(9, SECRET_A).upload_body(1, recs(1, 3))
    bad_rec = bytearray(synth.purchase(2))
    bad_rec[30] ^= 0xFF  # CRC no longer matches
    wrong_seq = SimDevice(1, SECRET_A).upload_body(5, recs(1, 3))
    return {
        "bad_hmac": ("/v1/upload", bytes(flipped), 401, "bad MAC"),
        "foreign_device": ("/v1/upload", foreign, 401, "device 2: bad MAC"),
        # 401 like a bad MAC: an outsider cannot tell which device ids exist
        "unknown_device": ("/v1/upload", unknown, 401, "device 9: bad MAC"),
        "truncated": ("/v1/upload", good[:-7], 401, "bad MAC"),
        "garbage": ("/v1/upload", b"\x00" * 80, 400, "magic"),
        "empty": ("/v1/upload", b"", 400, "too short"),
        "oversize": ("/v1/upload", good + bytes(up.MAX_BODY), 413, "exceeds"),
        "params_to_upload": ("/v1/upload", a.params_body(0), 400, "not an upload"),
        "upload_to_params": ("/v1/params", good, 400, "not a parameter"),
        "corrupt_record": (
            "/v1/upload",
            SimDevice(1, SECRET_A).upload_body(1, [synth.purchase(1), bytes(bad_rec)]),
            422,
            "bad CRC",
        ),
        "seq_mismatch": ("/v1/upload", wrong_seq, 422, "header implies 5"),
    }


@pytest.mark.parametrize("case", sorted(_hostile_cases()))
def test_hostile_request_is_refused_logged_and_stores_nothing(client, store, caplog, case):
    path, body, status, reason = _hostile_cases()[case]
    before = (store.device(1), store.device(2), store.count())
    r = client.post(path, content=body)
    assert r.status_code == status
    assert reason in r.text
    assert any("refused (%d)" % status in m and reason in m for m in caplog.messages)
    assert (store.device(1), store.device(2), store.count()) == before
    # The collector still works for honest devices afterwards.
    assert upload(client, SimDevice(1, SECRET_A), 1, 2)["value"] == 2


def test_body_cut_mid_request_stores_nothing(store, caplog):
    dev = SimDevice(1, SECRET_A)
    body = dev.upload_body(1, recs(1, 40))
    with ServerThread(create_app(store)) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(
            b"POST /v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body[: len(body) // 2]
        )
        time.sleep(0.2)
        s.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any("truncated" in m for m in caplog.messages):
            time.sleep(0.05)
    assert any("truncated body" in m for m in caplog.messages)
    assert store.count() == 0 and store.device(1)["counter"] == 0


def test_parameters_nothing_full_delta_and_per_device(client, store):
    dev = SimDevice(1, SECRET_A)

    def ask(have):
        r = client.post("/v1/params", content=dev.params_body(have))
        assert r.status_code == 200
        return dev.answer(r.content, up.T_PARAMS)

    ans = ask(0)
    assert (ans["pkind"], ans["value"], ans["payload"]) == (up.P_NONE, 0, b"")
    full3 = b"BUNDLE v3 " * 300
    store.publish(3, full3)
    assert upload(client, dev, 1, 1)["extra"] == 3  # the upload answer announces it
    ans = ask(0)
    assert (ans["pkind"], ans["value"], ans["payload"]) == (up.P_FULL, 3, full3)
    assert ask(3)["pkind"] == up.P_NONE
    store.publish(4, b"full four" * 100)
    store.publish(4, b"delta 3->4", base=3)
    ans = ask(3)
    assert (ans["pkind"], ans["value"], ans["extra"], ans["payload"]) == (
        up.P_DELTA,
        4,
        3,
        b"delta 3->4",
    )
    assert ask(2)["pkind"] == up.P_FULL  # no delta from 2: the full bundle
    store.publish(9, b"only for bus 1", target=1)
    assert ask(4)["payload"] == b"only for bus 1"
    other = SimDevice(2, SECRET_B)
    r = client.post("/v1/params", content=other.params_body(0))
    assert other.answer(r.content, up.T_PARAMS)["value"] == 4
    with pytest.raises(ValueError):
        store.publish(4, b"x", base=5)


def test_answers_carry_server_time_and_the_device_skew_is_kept(client, store):
    dev = SimDevice(1, SECRET_A)
    now2000 = int(time.time()) - 946684800
    ans = upload(client, dev, 1, 2, now=now2000 - 10 * 365 * 86400)  # device thinks it is 10 y ago
    assert abs(ans["time"] - now2000) <= 5
    assert abs(store.device(1)["last_skew"] + 10 * 365 * 86400) <= 5
    # Records keep the time the validator wrote: the clearing sees the skew, nothing is rewritten.
    assert store.count(1) == 2


class _FailingStore:
    """A database that fails on write (disk full, connection lost)."""

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)

    def ingest(self, *a, **kw):
        raise sqlite3.OperationalError("disk I/O error")


def test_database_failure_is_503_and_the_device_keeps_its_records(store):
    client = TestClient(create_app(_FailingStore(store)), raise_server_exceptions=False)
    dev = SimDevice(1, SECRET_A)
    r = client.post("/v1/upload", content=dev.upload_body(1, recs(1, 5)))
    assert r.status_code == 503 and "retry later" in r.text
    assert store.count() == 0
    assert dev.acked == 0


def test_restart_between_retries_keeps_exactly_once(db_url, store):
    dev = SimDevice(1, SECRET_A)
    body = dev.upload_body(1, recs(1, 25))
    assert TestClient(create_app(store)).post("/v1/upload", content=body).status_code == 200
    store.close()  # the collector stops before its answer leaves: the device never saw it
    again = Store(db_url)
    try:
        r = TestClient(create_app(again)).post(
            "/v1/upload", content=dev.upload_body(1, recs(1, 25))
        )
        assert dev.answer(r.content)["value"] == 25
        assert again.count(1) == 25
    finally:
        again.close()


def test_concurrent_overlapping_uploads_store_each_record_once(db_url, store):
    devs = [SimDevice(1, SECRET_A), SimDevice(2, SECRET_B)]
    errors = []
    with ServerThread(create_app(store)) as srv:

        def hammer(dev, k):
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
            for i in range(12):
                first = 1 + ((i * 7 + k * 13) % 60)
                dev_body = dev.upload_body(first, recs(first, first + 19))
                conn.request("POST", "/v1/upload", dev_body)
                resp = conn.getresponse()
                resp.read()
                if resp.status not in (200, 409):
                    errors.append(resp.status)
            conn.close()

        # Two threads per device share its counter the way a retry storm would.
        threads = [
            threading.Thread(target=hammer, args=(SimDevice(d.id, d.secret), k))
            for k in range(2)
            for d in devs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    for dev in devs:
        seqs = store.seqs(dev.id)
        assert seqs == sorted(set(seqs))
        assert len(seqs) == len(set(seqs))


def test_ingest_benchmark_runs_and_stores_everything(db_url):
    res = measure_ingest(db_url, uploaders=3, batches=4, batch_size=50)
    assert res["errors"] == 0 and res["stored"] == res["records"] == 600
    assert res["records_per_s"] > 0
    logging.getLogger("test").info("ingest %s", res)


def test_migrations_upgrade_an_old_schema_and_refuse_a_newer_one(db_url):
    from tools.collector import db as dbmod

    old = dbmod.MIGRATIONS
    try:
        dbmod.MIGRATIONS = old[:1]
        dbmod.SCHEMA_VERSION = 1
        s = Store(db_url)
        assert s.schema_version() == 1
        old_device(s, 1, SECRET_A)
        s.close()
    finally:
        dbmod.MIGRATIONS = old
        dbmod.SCHEMA_VERSION = old[-1][0]
    s = Store(db_url)
    assert s.schema_version() == SCHEMA_VERSION
    assert s.secret(1) == SECRET_A  # data kept through the upgrade
    with s._tx() as ex:
        ex.run("INSERT INTO schema_version (version) VALUES (99)")
    s.close()
    with pytest.raises(RuntimeError, match="newer than this collector"):
        Store(db_url)


def test_provision_refuses_bad_ids_and_short_secrets(store):
    with pytest.raises(ValueError):
        store.provision(0, SECRET_A)
    with pytest.raises(ValueError):
        store.provision(2**32, SECRET_A)
    with pytest.raises(ValueError):
        store.provision(5, b"short")


def test_postgres_crash_gives_503_then_recovers_exactly_once(request):
    import psycopg

    pg = request.getfixturevalue("pg_server")
    url = pg.create_db("crash%d" % os.getpid())
    # The test server runs with synchronous_commit off (speed): a crash would lose acknowledged
    # commits, which is exactly what a real deployment must not configure. Turn it on here.
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute('ALTER DATABASE "crash%d" SET synchronous_commit = on' % os.getpid())
    s = Store(url)
    s.provision(1, SECRET_A)
    client = TestClient(create_app(s), raise_server_exceptions=False)
    dev = SimDevice(1, SECRET_A)
    assert upload(client, dev, 1, 10)["value"] == 10
    pg.restart()  # the pooled connection is now dead
    statuses = []
    for _ in range(3):
        r = client.post("/v1/upload", content=dev.upload_body(11, recs(11, 20)))
        statuses.append(r.status_code)
        if r.status_code == 200:
            assert dev.answer(r.content)["value"] == 20
            break
    assert statuses[0] == 503 and statuses[-1] == 200
    assert s.seqs(1) == list(range(1, 21))
    s.close()


# --- not per database ---------------------------------------------------------------------------


def test_cli_provision_publish_export_and_serve(tmp_path, capsys, monkeypatch):
    url = "sqlite:///" + str(tmp_path / "cli.sqlite3")
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET_A.hex() + "\n"))
    assert cli.main(["provision", "--db", url, "--device", "5", "--secret-stdin"]) == 0
    assert cli.main(["provision", "--db", url, "--device", "6"]) == 2  # no master key
    assert "no master key" in capsys.readouterr().err
    mk = str(tmp_path / "master.key")
    assert cli.main(["masterkey", "--out", mk]) == 0
    assert cli.main(["provision", "--db", url, "--device", "6", "--master-key-file", mk]) == 0
    out = capsys.readouterr().out
    assert "device 6 secret " in out and len(out.split("device 6 secret ")[1].strip()) == 64
    bundle = tmp_path / "b.bin"
    bundle.write_bytes(b"params" * 10)
    # publish checks what it stores (tools/collector/bundles.py; more in test_params_publish.py)
    assert cli.main(["publish", "--db", url, "--version", "7", str(bundle), "--all"]) == 2
    assert "error:" in capsys.readouterr().err
    bundle.write_bytes(
        fwbundle.build(SECRET_A, 7, 0, {"settings": {}, "whitelist": {}, "fares": {}})
    )
    assert cli.main(["publish", "--db", url, str(bundle), "--device", "5"]) == 2  # config refused
    assert "no routes" in capsys.readouterr().err
    bundle.write_bytes(fwbundle.build(SECRET_A, 7, 0, None, None, (6, [1], [])))
    assert cli.main(["publish", "--db", url, "--version", "7", str(bundle), "--device", "5"]) == 0
    assert cli.main(["publish", "--db", url, "--version", "0", str(bundle), "--device", "5"]) == 2
    assert "error:" in capsys.readouterr().err
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.collector", "serve", "--db", url, "--port", "0"]
        + ["--tac-keys", "test", "--master-key-file", mk],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("PORT ")
        port = int(line.split()[1])
        for _ in range(50):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/openapi.json")
                spec = json.loads(conn.getresponse().read())
                break
            except OSError:
                time.sleep(0.1)
        assert set(spec["paths"]) >= {"/v1/upload", "/v1/params", "/v1/health"}
        assert "409" in spec["paths"]["/v1/upload"]["post"]["responses"]
        dev = SimDevice(5, SECRET_A)
        conn.request("POST", "/v1/upload", dev.upload_body(1, recs(1, 4)))
        resp = conn.getresponse()
        ans = dev.answer(resp.read())
        assert ans["value"] == 4 and ans["extra"] == 7
        assert resp.getheader("server") is None  # no bytes wasted on the cellular link
    finally:
        proc.terminate()
        proc.wait(10)
    csv_path = tmp_path / "out.csv"
    assert cli.main(["export", "--db", url, "--out", str(csv_path)]) == 0
    rows = list(csv.reader(io.StringIO(csv_path.read_text())))
    assert rows[0][:2] == ["device_id", "seq"] and [r[1] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert record.decode(bytes.fromhex(rows[2][-1]))["seq"] == 2


def test_health_endpoint(tmp_path):
    s = Store(str(tmp_path / "h.sqlite3"))
    r = TestClient(create_app(s)).get("/v1/health")
    assert r.json() == {"ok": True, "schema": SCHEMA_VERSION}
    s.close()


def test_clearing_verifies_tacs_with_the_simulator_keys():
    from tools.sim import crypto

    key = IssuerKey(crypto.TEST_ROOT_KEYS["tac"], bytes.fromhex("3104000000000000"))
    clearing = Clearing({b"\x31\x04\x00\x00": key})
    rec = record.decode(synth.purchase(5))
    rec["tac"] = tac_of(key, rec)
    assert clearing.verdict(rec) == "ok"
    rec["amount"] += 1  # the record no longer matches what the card signed
    assert clearing.verdict(rec) == "bad"
    rec["issuer"] = b"\x99\x99\x00\x00"
    assert clearing.verdict(rec) == "nokey"
    assert clearing.verdict(record.decode(synth.boot(3))) is None
    good = dict(record.decode(synth.purchase(6)), tac=bytes(4))
    assert clearing.verdict(good) == "bad"


def test_clearing_flags_are_stored(tmp_path):
    from tools.sim import crypto

    key = IssuerKey(crypto.TEST_ROOT_KEYS["tac"], bytes.fromhex("3104000000000000"))
    s = Store(str(tmp_path / "cl.sqlite3"))
    s.provision(1, SECRET_A)
    client = TestClient(create_app(s, clearing=Clearing({b"\x31\x04\x00\x00": key})))
    good = record.decode(synth.purchase(1))
    batch = [synth.purchase(1, tac=tac_of(key, good)), synth.purchase(2)]
    dev = SimDevice(1, SECRET_A)
    assert dev.answer(client.post("/v1/upload", content=dev.upload_body(1, batch)).content)
    assert [row[9] for row in s.export(1)] == ["ok", "bad"]
    s.close()


def test_wire_bytes_per_record_under_70():
    plain = wire_bytes(100, compress=False)
    packed = wire_bytes(100, compress=True)
    assert plain["bytes_per_record"] < 70
    assert packed["bytes_per_record"] < plain["bytes_per_record"]
    logging.getLogger("test").info("wire %s %s", plain, packed)


def _kinds(*spec):
    """[(kind, card, atc, serial)] -> records numbered from 1."""
    return [
        synth.debit(i + 1, k, card=c, atc=a, psam_serial=n) for i, (k, c, a, n) in enumerate(spec)
    ]


def test_unconfirmed_debits_are_stored_reported_and_paired(client, store):
    In, P, R, V = (
        record.DEBIT_INTENT,
        record.PURCHASE,
        record.PURCHASE_RECOVERED,
        record.DEBIT_VOID,
    )
    dev1, dev2 = SimDevice(1, SECRET_A), SimDevice(2, SECRET_B)
    batch1 = _kinds(
        (In, 1, 7, 101),  # closed by its purchase (same PSAM serial: no clash with the intent)
        (P, 1, 7, 101),
        (In, 2, 3, 102),  # card 2 pulled: closed later by the re-tap's recovered purchase
        (In, 3, 9, 103),  # card 3 refused DEBIT: void
        (V, 3, 9, 103),
        (In, 4, 1, 104),  # never resolved: unconfirmed
        (In, 5, 2, 105),  # resolved at another device (the card's counter is the card's)
    )
    ans = dev1.answer(client.post("/v1/upload", content=dev1.upload_body(1, batch1)).content)
    assert ans["value"] == 7
    open_ = store.unconfirmed()
    assert [(r["device_id"], r["seq"]) for r in open_] == [(1, 3), (1, 6), (1, 7)]
    assert open_[0]["card_atc"] == 3 and open_[0]["amount"] == 200
    assert open_[0]["psam_serial"] == 102 and open_[0]["psam_tid"] == synth.PSAM.hex()
    batch2 = [synth.debit(1, P, card=5, atc=2, psam_serial=900, psam_tid=b"\x00" * 5 + b"\x02")]
    dev2.answer(client.post("/v1/upload", content=dev2.upload_body(1, batch2)).content)
    more = [synth.debit(8, R, card=2, atc=3, psam_serial=102)]
    dev1.answer(client.post("/v1/upload", content=dev1.upload_body(8, more)).content)
    assert [(r["device_id"], r["seq"]) for r in store.unconfirmed()] == [(1, 6)]
    assert store.unconfirmed(2) == []
    every = {r["seq"]: r["outcome"] for r in store.intents(1)}
    assert every == {
        1: {"kind": P, "device_id": 1, "seq": 2},
        3: {"kind": R, "device_id": 1, "seq": 8},
        4: {"kind": V, "device_id": 1, "seq": 5},
        6: None,
        7: {"kind": P, "device_id": 2, "seq": 1},
    }
    # an intent is never money: no TAC verdict, no tsn clash with the purchase it announces
    rows = {r[1]: r for r in store.export(1)}
    assert rows[1][3] == In and rows[1][9] is None and rows[1][10] == 0 and rows[1][11] == 7
    assert rows[2][3] == P and rows[2][10] == 0
    assert Clearing({}).verdict(record.decode(batch1[0])) is None
    assert Clearing({}).verdict(record.decode(batch1[4])) is None


def test_migration_3_backfills_card_counters_of_older_purchases(db_url):
    from tools.collector import db as dbmod

    old = dbmod.MIGRATIONS
    try:
        dbmod.MIGRATIONS = old[:2]
        dbmod.SCHEMA_VERSION = 2
        s = Store(db_url)
        old_device(s, 1, SECRET_A)
        raw = synth.debit(1, record.PURCHASE, card=9, atc=4242)
        f = {"kind": 1, "time": 1, "psam_tid": synth.PSAM, "psam_serial": 5000}
        with s._tx() as ex:
            ex.run(
                "INSERT INTO records (device_id, seq, received, raw, kind, rtime, psam_tid, "
                "psam_serial, card_no, amount, tsn_dup) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (1, 1, 0, raw, 1, 1, synth.PSAM.hex(), f["psam_serial"], "3104", 200, 0),
            )
        s.close()
    finally:
        dbmod.MIGRATIONS = old
        dbmod.SCHEMA_VERSION = old[-1][0]
    s = Store(db_url)
    with s._tx(write=False) as ex:
        assert ex.one("SELECT card_atc FROM records WHERE seq = 1")[0] == 4242
    s.close()


def test_cli_lists_unconfirmed_debits(tmp_path, capsys):
    url = "sqlite:///" + str(tmp_path / "u.sqlite3")
    s = Store(url)
    s.provision(1, SECRET_A)
    batch = _kinds(
        (record.DEBIT_INTENT, 1, 7, 1),
        (record.PURCHASE, 1, 7, 1),
        (record.DEBIT_INTENT, 2, 8, 2),
    )
    dev = SimDevice(1, SECRET_A)
    dev.answer(
        TestClient(create_app(s)).post("/v1/upload", content=dev.upload_body(1, batch)).content
    )
    s.close()
    assert cli.main(["unconfirmed", "--db", url]) == 0
    got = capsys.readouterr()
    lines = got.out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("1 3 ") and lines[1].endswith("UNCONFIRMED")
    assert "1 unconfirmed debits (2.00 yuan)" in got.err
    assert cli.main(["unconfirmed", "--db", url, "--all"]) == 0
    out = capsys.readouterr().out
    assert "purchase device 1 seq 2" in out and "UNCONFIRMED" in out


def test_a_floor_on_heartbeats_is_saved_once(client, store, caplog):
    dev = SimDevice(1, SECRET_A)
    upload(client, dev, 1, 3)
    dev.acked = 10  # the device freed 4..10 that this (restored) back office never held
    for _ in range(3):
        r = client.post("/v1/upload", content=dev.upload_body(11, []))  # heartbeats
        assert dev.answer(r.content)["value"] == 10
    assert store.gaps(1) == [(4, 10)] and store.device(1)["contig"] == 10
    assert sum("gone from the device" in m for m in caplog.messages) == 1
