"""Partitioning (PostgreSQL, migration 7) and retention (both databases) of the records table:
tools/collector/partitions.py, docs/scaling.md section 4. Real PostgreSQL (tests/host/pg.py)."""

import os
import stat
import threading
import time
import warnings

import psycopg
import pytest
import record

from tests.host.pg import pg_server  # noqa: F401  (fixture)
from tools.collector import cli, partitions, synth
from tools.collector.app import create_app
from tools.collector.bench import SimDevice
from tools.collector.clearing import Clearing, simulator_keys
from tools.collector.db import _INSERT, Store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SECRET = bytes(range(1, 33))
DAY = 86400
_n = [0]


def pg_url(pg):
    _n[0] += 1
    return pg.create_db("part%d_%d" % (os.getpid(), _n[0]))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "c.sqlite3")
    return pg_url(request.getfixturevalue("pg_server"))


class Bus:
    """A device uploading through the app, its records stored at the store's clock."""

    def __init__(self, store, clearing=None, device=1):
        if store.device(device) is None:
            store.provision(device, SECRET, "bus")
            store.register_psam(device, synth.PSAM)
        self.client = TestClient(
            create_app(store, clearing=clearing or Clearing(simulator_keys()))
        )
        self.dev = SimDevice(device, SECRET, epoch=1)

    def send(self, first, recs):
        r = self.client.post("/v1/upload", content=self.dev.upload_body(first, recs))
        assert r.status_code == 200, r.text
        return self.dev.answer(r.content)


def relkind(url, name):
    with psycopg.connect(url) as c:
        row = c.execute("SELECT relkind FROM pg_class WHERE relname = %s", (name,)).fetchone()
    return row[0] if row else None


def count(url, sql):
    with psycopg.connect(url) as c:
        return c.execute(sql).fetchone()[0]


def test_a_new_postgres_database_is_partitioned_by_month_with_key_tables(pg_server):  # noqa: F811
    url = pg_url(pg_server)
    s = Store(url)
    try:
        assert s.schema_version() == 7 and relkind(url, "records") == "p"
        now = time.time()
        names = [p["name"] for p in partitions.listing(s)]
        want = [partitions.month_name(partitions.add_months(now, i)) for i in range(3)]
        assert names == want + [partitions.DEFAULT]
        bus = Bus(s)
        recs = [synth.purchase(i, genuine=True) for i in range(1, 6)]
        assert bus.send(1, recs)["value"] == 5
        assert count(url, "SELECT COUNT(*) FROM %s" % want[0]) == 5
        assert count(url, "SELECT COUNT(*) FROM record_keys") == 5
        assert count(url, "SELECT COUNT(*) FROM psam_serials") == 5
        assert count(url, "SELECT COUNT(*) FROM card_debits") == 5
        # Re-sent: held once. A new record repeating a held PSAM serial: kept out of the keys.
        bus.dev.acked = 0
        bus.send(1, recs)
        clash = synth.purchase(6, psam_serial=1001, genuine=True)
        assert bus.send(6, [clash])["value"] == 6
        assert s.count() == 6 and count(url, "SELECT COUNT(*) FROM psam_serials") == 5
        assert ["tsn_dup" in r["reasons"] for r in s.exceptions() if r["seq"] == 6] == [True]
        # A restart makes nothing twice.
        s.close()
        s = Store(url)
        assert [p["name"] for p in partitions.listing(s)] == want + [partitions.DEFAULT]
    finally:
        s.close()


def _version_6(url):
    """A database as a collector of migrations 1-6 left it, with records and a clash."""
    from tools.collector import db as dbmod

    old = dbmod.MIGRATIONS
    try:
        dbmod.MIGRATIONS = old[:6]
        dbmod.SCHEMA_VERSION = 6
        s = Store(url)
        s.provision(1, SECRET, "bus")
        s.register_psam(1, synth.PSAM)
        rows = []
        for seq in range(1, 41):
            raw = synth.purchase(seq, genuine=True)
            f = record.decode(raw)
            f["tac_status"] = "ok"
            rows.append(Store._row(1, int(time.time()) - 40 * DAY + seq, seq, raw, f))
        raw = synth.purchase(41, psam_serial=1001, genuine=True)  # repeats seq 1's serial
        f = dict(record.decode(raw), tac_status="ok", exceptions=["tsn_dup"])
        dup = Store._row(1, int(time.time()), 41, raw, f)
        with s._tx() as ex:
            ex.many(_INSERT, rows + [dup[:-1] + (1,)])
            ex.run("UPDATE devices SET contig = 41 WHERE device_id = 1")
        s.close()
    finally:
        dbmod.MIGRATIONS = old
        dbmod.SCHEMA_VERSION = old[-1][0]


def test_migration_7_keeps_the_records_held_in_one_partition_and_their_keys(pg_server):  # noqa: F811
    url = pg_url(pg_server)
    _version_6(url)
    s = Store(url)
    try:
        assert s.schema_version() == 7 and relkind(url, "records") == "p"
        assert relkind(url, partitions.LEGACY) == "r"
        parts = partitions.listing(s)
        assert parts[0]["name"] == partitions.LEGACY and parts[0]["lo"] is None
        assert parts[0]["rows"] == 41 and parts[0]["hi"] > time.time()
        assert count(url, "SELECT COUNT(*) FROM record_keys") == 41
        assert count(url, "SELECT COUNT(*) FROM psam_serials") == 40  # not the duplicate
        assert s.seqs(1) == list(range(1, 42))
        # The keys taken over refuse what they held before: a re-sent record, a new record with
        # a held PSAM serial.
        bus = Bus(s)
        bus.dev.acked = 41
        assert (
            bus.send(10, [synth.purchase(i, genuine=True) for i in range(10, 13)])["value"] == 41
        )
        assert s.count() == 41
        assert bus.send(42, [synth.purchase(42, psam_serial=1002, genuine=True)])["value"] == 42
        assert ["tsn_dup" in r["reasons"] for r in s.exceptions() if r["seq"] == 42] == [True]
    finally:
        s.close()


def test_migration_7_interrupted_half_way_leaves_version_6_whole_and_runs_again(
    pg_server,  # noqa: F811
):
    """The migration's connection is killed while it waits for the lock to rename `records`
    (the key tables already made and filled): everything it did is rolled back, the database is
    version 6 with its records, and the next start migrates it."""
    url = pg_url(pg_server)
    _version_6(url)
    reader = psycopg.connect(url)
    reader.execute("SELECT COUNT(*) FROM records").fetchone()  # holds ACCESS SHARE in its tx
    errors = []

    def start():
        try:
            Store(url).close()
        except Exception as e:  # noqa: BLE001  (expected: the connection was terminated)
            errors.append(e)

    t = threading.Thread(target=start)
    t.start()
    pid = None
    with psycopg.connect(url, autocommit=True) as admin:
        for _ in range(600):
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'ALTER TABLE records RENAME%%'"
            ).fetchone()
            if row:
                pid = row[0]
                break
            time.sleep(0.05)
        assert pid is not None, "the migration never waited at the rename"
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    t.join(60)
    assert len(errors) == 1 and isinstance(errors[0], psycopg.OperationalError), errors
    reader.rollback()
    reader.close()
    with psycopg.connect(url) as c:
        assert c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 6
        assert c.execute("SELECT to_regclass('record_keys')").fetchone()[0] is None
    assert relkind(url, "records") == "r" and count(url, "SELECT COUNT(*) FROM records") == 41
    s = Store(url)
    try:
        assert s.schema_version() == 7 and relkind(url, "records") == "p"
        assert s.seqs(1) == list(range(1, 42))
        assert count(url, "SELECT COUNT(*) FROM record_keys") == 41
    finally:
        s.close()


def test_a_record_for_a_month_with_no_partition_is_kept_then_moved(pg_server, caplog):  # noqa: F811
    url = pg_url(pg_server)
    s = Store(url)
    try:
        later = time.time() + 200 * DAY  # beyond the partitions made ahead
        s.clock = lambda: later
        bus = Bus(s)
        assert bus.send(1, [synth.purchase(i, genuine=True) for i in (1, 2, 3)])["value"] == 3
        assert count(url, "SELECT COUNT(*) FROM %s" % partitions.DEFAULT) == 3
        # The next start (or `retention`) gives the month its partition and moves the rows.
        s.close()
        s = Store(url)
        name = partitions.month_name(partitions.month_start(later))
        assert count(url, "SELECT COUNT(*) FROM %s" % partitions.DEFAULT) == 0
        assert count(url, "SELECT COUNT(*) FROM %s" % name) == 3
        assert any("moved to " + name in m for m in caplog.messages)
        s.clock = lambda: later
        bus = Bus(s)
        bus.dev.counter = s.device(1)["counter"] & 0xFFFFFFFF
        bus.send(1, [synth.purchase(i, genuine=True) for i in (1, 2, 3, 4)])
        assert s.seqs(1) == [1, 2, 3, 4] and count(url, "SELECT COUNT(*) FROM %s" % name) == 4
    finally:
        s.close()


def _old_month(store, tmp_path):
    """Records of a month 5 months back: purchases, an intent left open, one purchase stored
    when the issuer's key was missing; and records of this month."""
    now = time.time()
    old = partitions.add_months(now, -5) + 3 * DAY
    store.clock = lambda: old
    bus = Bus(store)
    bus.send(1, [synth.purchase(i, genuine=True) for i in (1, 2, 3)])
    bus.send(4, [synth.debit(4, record.DEBIT_INTENT, card=77, atc=5, psam_serial=9001)])
    nokey = Bus(store, clearing=Clearing({}))
    nokey.dev = bus.dev
    nokey.send(5, [synth.purchase(5, genuine=True)])
    store.clock = time.time
    bus.send(6, [synth.purchase(6, genuine=True)])
    return bus, partitions.month_name(partitions.month_start(old))


def test_retention_drops_only_what_was_exported_verified_and_cleared(db_url, tmp_path):
    s = Store(db_url)
    out = str(tmp_path / "exports")
    try:
        bus, month = _old_month(s, tmp_path)
        current = partitions.month_name(partitions.month_start(time.time()))
        plan = {p["name"]: p for p in partitions.run(s)}
        assert plan[month]["action"] == "due" and plan[month]["rows"] == 5
        assert plan[month]["reason"] == "1 unconfirmed debits, 1 TAC unchecked"
        assert plan[current]["action"] == "kept"
        # Never exported: refused.
        with pytest.raises(partitions.Refused, match="not cleared yet: 1 unconfirmed debits, 1"):
            partitions.drop(s, month)
        assert s.count() == 6
        # This month: not before it has been kept 3 months, and not exported while written.
        with pytest.raises(partitions.Refused, match="records stay 3 months"):
            partitions.drop(s, current)
        with pytest.raises(partitions.Refused, match="still being written"):
            partitions.export(s, current, out)
        # The policy refuses while the intent is open and the TAC unchecked.
        res = {p["name"]: p for p in partitions.run(s, out, apply=True)}
        assert res[month]["action"] == "refused" and "not cleared yet" in res[month]["reason"]
        assert s.count() == 6
        # The outcome arrives; the key is provided and the purchase checked again.
        bus.send(7, [synth.debit(7, record.PURCHASE, card=77, atc=5, psam_serial=9001)])
        assert s.recheck(Clearing(simulator_keys()))["changed"] == 1
        # Exported before a change is stale: refused until exported again.
        ex = partitions.export(s, month, out)
        assert stat.S_IMODE(os.stat(ex["path"]).st_mode) == 0o600 and ex["rows"] == 5
        partitions.verify(s, month)
        with s._tx() as tx:
            tx.run("UPDATE records SET tac_status = 'bad' WHERE seq = 2")
        with pytest.raises(partitions.Refused, match="differ from their export"):
            partitions.drop(s, month)
        with pytest.raises(partitions.Refused, match="differ from their export"):
            partitions.verify(s, month)
        with pytest.raises(partitions.Refused, match="no verified export"):
            partitions.drop(s, month)
        # A damaged export file: refused too.
        partitions.export(s, month, out)
        partitions.verify(s, month)
        with open(ex["path"], "ab") as f:
            f.write(b"x")
        with pytest.raises(partitions.Refused, match="not the file that was written"):
            partitions.drop(s, month)
        # The policy exports again, verifies and drops.
        res = {p["name"]: p for p in partitions.run(s, out, apply=True)}
        assert res[month]["action"] == "dropped", res[month]
        assert res[current]["action"] == "kept"
        assert s.seqs(1) == [6, 7]
        with open(ex["path"], encoding="ascii") as f:
            lines = f.read().splitlines()
        assert lines[0].startswith("device_id,seq,received") and len(lines) == 6
        assert [int(x.split(",")[1]) for x in lines[1:]] == [1, 2, 3, 4, 5]
        # Re-sent after their month is gone, the records are still held once (key tables keep
        # them on PostgreSQL; SQLite's counter refuses a replay and the device freed them).
        if s.dialect == "pg":
            bus.dev.acked = 0
            bus.send(1, [synth.purchase(i, genuine=True) for i in (1, 2, 3)])
            assert s.seqs(1) == [6, 7]
    finally:
        s.close()


def test_retention_command(db_url, tmp_path, capsys):
    s = Store(db_url)
    try:
        _bus, month = _old_month(s, tmp_path)
    finally:
        s.close()
    assert cli.main(["retention", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert month in out and "due" in out
    args = ["retention", "--db", db_url, "--apply", "--export-dir", str(tmp_path / "e")]
    assert cli.main(args) == 3  # refused: not cleared yet
    assert "refused" in capsys.readouterr().out
