"""Partitioning and retention of the records table (docs/scaling.md section 4).

PostgreSQL (from migration 7): `records` is partitioned by month of `received` (UTC). The
records held before the migration stay in one partition, `records_legacy`, covering everything
up to the end of the month the migration ran in; each later month has its own, `records_YYYYMM`,
made ahead (this month and the next two) at every start of the collector and by `retention`. A
record whose month has no partition yet lands in `records_default`, which is never lost: the
next start or `retention` moves it into a new partition of its month. The uniqueness keys are
not in `records` (PostgreSQL enforces a unique key on a partitioned table only when it includes
the partition key) but in three key tables filled in the same transaction as the record:
record_keys (device, seq), psam_serials (PSAM terminal, serial), card_debits (card, card counter).
They outlive the records (KEY_MONTHS), so a record re-sent after its month was dropped is still
refused as held.

SQLite keeps one table; a "partition" there is the records of one calendar month.

Retention: a partition leaves the database only when all of these hold, checked in the
transaction that drops it:
- it ends at least `keep_months` months before the current month;
- it was exported (`export`: CSV of Store.EXPORT_COLUMNS, mode 0600, SHA-256 recorded in the
  `exports` table) and the export was verified (`verify`: the file's digest is the recorded one,
  and the rows held now serialise to exactly that file, so a record changed after the export,
  by `recheck` say, makes the export stale);
- nothing in it waits to be cleared: no unconfirmed debit (a DEBIT_INTENT with no outcome that
  the card's counters do not settle either) and no purchase whose TAC could not be checked yet
  (`nokey`/`unchecked`, which `recheck` may still clear).
Anything else is refused with the reason (`Refused`), and nothing is dropped.
"""

import calendar
import csv
import hashlib
import io
import logging
import os
import re
import time
from datetime import datetime, timezone

log = logging.getLogger("collector.partitions")

AHEAD = 2  # months made ahead of the current one
KEEP_MONTHS = 3  # records online (docs/scaling.md section 4)
KEY_MONTHS = 13  # key table rows kept
PRUNE_BATCH = 10000
DEFAULT = "records_default"
LEGACY = "records_legacy"


class Refused(Exception):
    """Retention would lose something; nothing was dropped."""


def month_start(t):
    d = datetime.fromtimestamp(t, timezone.utc)
    return calendar.timegm((d.year, d.month, 1, 0, 0, 0))


def add_months(t, n):
    d = datetime.fromtimestamp(month_start(t), timezone.utc)
    m = d.year * 12 + d.month - 1 + n
    return calendar.timegm((m // 12, m % 12 + 1, 1, 0, 0, 0))


def month_name(lo):
    d = datetime.fromtimestamp(lo, timezone.utc)
    return "records_%04d%02d" % (d.year, d.month)


def month_of(name):
    """records_YYYYMM -> (lo, hi), or None."""
    m = re.fullmatch(r"records_(\d{4})(\d{2})", name)
    if not m or not 1 <= int(m.group(2)) <= 12:
        return None
    lo = calendar.timegm((int(m.group(1)), int(m.group(2)), 1, 0, 0, 0))
    return lo, add_months(lo, 1)


# --- PostgreSQL: migration 7 and the partitions ahead ------------------------------------------

_KEY_TABLES = (
    """CREATE TABLE record_keys (
        device_id BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        received BIGINT NOT NULL,
        PRIMARY KEY (device_id, seq))""",
    """CREATE TABLE psam_serials (
        psam_tid TEXT NOT NULL,
        psam_serial BIGINT NOT NULL,
        device_id BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        received BIGINT NOT NULL,
        PRIMARY KEY (psam_tid, psam_serial))""",
    """CREATE TABLE card_debits (
        card_no TEXT NOT NULL,
        card_atc BIGINT NOT NULL,
        device_id BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        received BIGINT NOT NULL,
        PRIMARY KEY (card_no, card_atc))""",
    # rows arrive in time order: a BRIN index finds a month to prune for almost nothing
    "CREATE INDEX record_keys_received ON record_keys USING brin (received)",
    "CREATE INDEX psam_serials_received ON psam_serials USING brin (received)",
    "CREATE INDEX card_debits_received ON card_debits USING brin (received)",
    "INSERT INTO record_keys (device_id, seq, received) SELECT device_id, seq, received "
    "FROM records",
    "INSERT INTO psam_serials (psam_tid, psam_serial, device_id, seq, received) "
    "SELECT psam_tid, psam_serial, device_id, seq, received FROM records "
    "WHERE tsn_dup = 0 AND psam_tid IS NOT NULL AND psam_serial IS NOT NULL",
    "INSERT INTO card_debits (card_no, card_atc, device_id, seq, received) "
    "SELECT card_no, card_atc, device_id, seq, received FROM records "
    "WHERE tsn_dup = 0 AND kind IN (1, 2) AND card_no IS NOT NULL AND card_atc IS NOT NULL",
)
_PARENT_INDEXES = (
    "CREATE INDEX records_dev_seq ON records (device_id, seq)",
    "CREATE INDEX records_card_atc ON records (card_no, card_atc)",
    "CREATE INDEX records_exceptions ON records (exceptions) WHERE exceptions IS NOT NULL",
)


def partition_pg(ex, now):
    """Migration 7 on PostgreSQL, inside the migration's transaction (all of it or nothing):
    the key tables from the rows held, then `records` renamed to records_legacy and attached,
    after a CHECK on `received`, as the first partition of a new partitioned `records`."""
    for sql in _KEY_TABLES:
        ex.run(sql)
    n, top = ex.one("SELECT COUNT(*), MAX(received) FROM records")
    if not n:
        ex.run("ALTER TABLE records RENAME TO records_v6")
        ex.run(
            "CREATE TABLE records (LIKE records_v6 INCLUDING DEFAULTS) "
            "PARTITION BY RANGE (received)"
        )
        ex.run("DROP TABLE records_v6")
    else:
        hi = add_months(max(now, top + 1), 1)
        ex.run("ALTER TABLE records RENAME TO %s" % LEGACY)
        ex.run("ALTER TABLE %s DROP CONSTRAINT records_pkey" % LEGACY)
        ex.run("DROP INDEX records_tsn")
        ex.run("DROP INDEX records_atc")
        ex.run("ALTER INDEX records_card_atc RENAME TO %s_card_atc" % LEGACY)
        ex.run("ALTER INDEX records_exceptions RENAME TO %s_exceptions" % LEGACY)
        # The CHECK lets ATTACH skip its own scan of the table.
        ex.run(
            "ALTER TABLE %s ADD CONSTRAINT %s_received CHECK (received < %d)"
            % (LEGACY, LEGACY, hi)
        )
        ex.run(
            "CREATE TABLE records (LIKE %s INCLUDING DEFAULTS) PARTITION BY RANGE (received)"
            % LEGACY
        )
        ex.run(
            "ALTER TABLE records ATTACH PARTITION %s FOR VALUES FROM (MINVALUE) TO (%d)"
            % (LEGACY, hi)
        )
        log.warning(
            "migration 7: %d records held before are partition %s (up to %s); later months "
            "get their own partitions",
            n,
            LEGACY,
            time.strftime("%Y-%m-%d", time.gmtime(hi)),
        )
    for sql in _PARENT_INDEXES:
        ex.run(sql)  # an equal index of records_legacy is attached, not built again
    ex.run("CREATE TABLE %s PARTITION OF records DEFAULT" % DEFAULT)


def listing_pg(ex):
    """-> [(name, lo or None, hi or None)] of the partitions, in order; the default: both None."""
    rows = ex.all(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'records'::regclass"
    )
    out = []
    for name, bound in rows:
        m = re.search(r"FROM \((.+?)\) TO \((.+?)\)", bound or "")
        if not m:
            out.append((name, None, None))
            continue
        lo, hi = (None if v == "MINVALUE" else int(v.strip("'")) for v in m.groups())
        out.append((name, lo, hi))
    return sorted(out, key=lambda p: (p[2] is None, p[2] or 0))


def ensure(ex, now, ahead=AHEAD):
    """The partitions of this month and the next `ahead` months, and of every month that has
    records in the default partition (moved there into their own partition). -> names made."""
    ex.run("SELECT pg_advisory_xact_lock(734202)")
    parts = listing_pg(ex)
    covered = [(lo, hi) for _n, lo, hi in parts if hi is not None]

    def has(lo):
        return any((a is None or a <= lo) and lo < b for a, b in covered)

    months = {add_months(now, i) for i in range(ahead + 1)}
    stray = ex.all(
        "SELECT received, COUNT(*) FROM %s GROUP BY received ORDER BY received" % DEFAULT
    )
    waiting = {}
    for t, n in stray:
        waiting[month_start(t)] = waiting.get(month_start(t), 0) + n
    made = []
    for lo in sorted(months | set(waiting)):
        if has(lo):
            if lo in waiting:  # cannot be: a row goes to the default only if no partition fits
                log.error("rows in %s for month %s that has a partition", DEFAULT, month_name(lo))
            continue
        name, hi = month_name(lo), add_months(lo, 1)
        ex.run("CREATE TABLE %s (LIKE records INCLUDING DEFAULTS)" % name)
        if lo in waiting:
            moved = ex.run(
                "WITH m AS (DELETE FROM %s WHERE received >= %d AND received < %d RETURNING *) "
                "INSERT INTO %s SELECT * FROM m" % (DEFAULT, lo, hi, name)
            )
            log.warning(
                "%d records of %s were held in %s (no partition for their month yet): moved to %s",
                moved,
                time.strftime("%Y-%m", time.gmtime(lo)),
                DEFAULT,
                name,
            )
        ex.run(
            "ALTER TABLE %s ADD CONSTRAINT %s_received CHECK (received >= %d AND received < %d)"
            % (name, name, lo, hi)
        )
        ex.run(
            "ALTER TABLE records ATTACH PARTITION %s FOR VALUES FROM (%d) TO (%d)" % (name, lo, hi)
        )
        covered.append((lo, hi))
        made.append(name)
    return made


# --- both databases: the partitions, their exports, retention -----------------------------------


def _range(lo, hi, col="received"):
    """SQL condition on `received` for [lo, hi) (lo None: from the start). Integers only."""
    cond = "%s < %d" % (col, hi)
    return cond if lo is None else "%s >= %d AND %s" % (col, lo, cond)


def listing(store):
    """-> [dict(name, lo, hi, rows)], oldest first. PostgreSQL: its partitions (the default has
    lo and hi None); SQLite: the calendar months that hold records."""
    out = []
    with store._tx(write=False) as ex:
        if store.dialect == "pg":
            for name, lo, hi in listing_pg(ex):
                n = ex.one("SELECT COUNT(*) FROM %s" % name)[0]
                out.append({"name": name, "lo": lo, "hi": hi, "rows": n})
            return out
        for month, n in ex.all(
            "SELECT strftime('%Y%m', received, 'unixepoch') AS m, COUNT(*) FROM records "
            "GROUP BY m ORDER BY m"
        ):
            lo, hi = month_of("records_" + month)
            out.append({"name": "records_" + month, "lo": lo, "hi": hi, "rows": n})
    return out


def _find(store, name):
    for p in listing(store):
        if p["name"] == name:
            if p["hi"] is None:
                raise Refused(
                    "%s is the default partition: `retention` moves its rows, it is "
                    "never exported or dropped" % name
                )
            return p
    raise Refused("no partition %s" % name)


def _lines(ex, lo, hi):
    """The partition's rows as CSV lines (bytes): the `export` columns, raw as hex."""
    from .db import Store

    cols = Store.EXPORT_COLUMNS
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    yield buf.getvalue().encode()
    sql = "SELECT %s FROM records WHERE %s ORDER BY device_id, seq"
    rows = ex.all(sql % (", ".join(cols), _range(lo, hi)))
    for r in rows:
        buf.seek(0)
        buf.truncate()
        w.writerow(tuple(r[:-1]) + (bytes(r[-1]).hex(),))
        yield buf.getvalue().encode()


def _digest_rows(ex, lo, hi):
    h, n = hashlib.sha256(), -1
    for line in _lines(ex, lo, hi):
        h.update(line)
        n += 1
    return h.hexdigest(), n


def _digest_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export(store, name, directory, now=None):
    """Write partition `name` to DIRECTORY/name.csv (0600: card numbers), record its digest.
    Only a partition whose month has ended. -> dict(path, rows, sha256)."""
    now = int(store.clock() if now is None else now)
    p = _find(store, name)
    if p["hi"] > now:
        raise Refused("%s is still being written (it ends %s)" % (name, _day(p["hi"])))
    os.makedirs(directory, exist_ok=True)
    path = os.path.abspath(os.path.join(directory, name + ".csv"))
    tmp = path + ".part"
    h, n = hashlib.sha256(), -1
    with store._tx(write=False) as ex:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            for line in _lines(ex, p["lo"], p["hi"]):
                f.write(line)
                h.update(line)
                n += 1
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    with store._tx() as ex:
        ex.run("DELETE FROM exports WHERE part = ?", (name,))
        ex.run(
            "INSERT INTO exports (part, lo, hi, nrows, sha256, path, exported) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, p["lo"], p["hi"], n, h.hexdigest(), path, now),
        )
    log.info("%s: %d records exported to %s (sha256 %s)", name, n, path, h.hexdigest())
    return {"path": path, "rows": n, "sha256": h.hexdigest()}


def _check_export(ex, name, lo, hi):
    """Raises Refused unless the partition's export file and its rows match what was recorded."""
    row = ex.one("SELECT nrows, sha256, path FROM exports WHERE part = ?", (name,))
    if row is None:
        raise Refused("%s was never exported" % name)
    nrows, sha, path = row
    if not os.path.exists(path):
        raise Refused("%s: its export %s is gone" % (name, path))
    if _digest_file(path) != sha:
        raise Refused("%s: its export %s is not the file that was written" % (name, path))
    got, n = _digest_rows(ex, lo, hi)
    if got != sha:
        raise Refused(
            "%s: the records differ from their export (%d rows now, %d exported): export again"
            % (name, n, nrows)
        )
    return path


def verify(store, name, now=None):
    """Check partition `name`'s export against the file and the rows; marks it verified."""
    now = int(store.clock() if now is None else now)
    p = _find(store, name)
    path = err = None
    with store._tx(write=False) as ex:
        try:
            path = _check_export(ex, name, p["lo"], p["hi"])
        except Refused as e:
            err = e
    with store._tx() as ex:  # a failed check withdraws an earlier verification
        ex.run("UPDATE exports SET verified = ? WHERE part = ?", (None if err else now, name))
    if err:
        raise err
    return path


def uncleared(store_or_ex, lo, hi):
    """-> (unconfirmed debits not settled by the card's counters, purchases whose TAC was not
    checked yet) among the records of [lo, hi)."""
    from .db import Store

    ex = store_or_ex
    r = _range(lo, hi)
    unchecked = ex.one(
        "SELECT COUNT(*) FROM records WHERE kind IN (1, 2) "
        "AND tac_status IN ('nokey', 'unchecked') AND " + r
    )[0]
    open_ = 0
    for card, atc, raw in ex.all(
        "SELECT i.card_no, i.card_atc, i.raw FROM records i WHERE i.kind = 8 AND "
        + _range(lo, hi, "i.received")
        + " AND NOT EXISTS (SELECT 1 FROM records o WHERE o.card_no = i.card_no "
        "AND o.card_atc = i.card_atc AND o.kind IN (1, 2, 9))"
    ):
        v = None if atc is None else Store._by_counter(ex, card, atc, bytes(raw))
        if v is None or v["verdict"] == "unknown":
            open_ += 1
    return open_, unchecked


def drop(store, name, keep_months=KEEP_MONTHS, now=None):
    """Drop partition `name` (SQLite: delete its month) if retention allows it (module doc),
    all checked in the dropping transaction. Raises Refused with the reason otherwise."""
    now = int(store.clock() if now is None else now)
    p = _find(store, name)
    cutoff = add_months(now, -keep_months)
    if p["hi"] > cutoff:
        raise Refused(
            "%s ends %s: records stay %d months (until %s)"
            % (name, _day(p["hi"]), keep_months, _day(add_months(p["hi"], keep_months)))
        )
    with store._tx() as ex:
        if store.dialect == "pg":
            ex.run("LOCK TABLE %s IN SHARE MODE" % name)  # no write while it is checked
        opened, unchecked = uncleared(ex, p["lo"], p["hi"])
        if opened or unchecked:
            raise Refused(
                "%s holds records not cleared yet: %d unconfirmed debits, %d purchases whose "
                "TAC was not checked (`recheck` once the issuer's key is in the key file)"
                % (name, opened, unchecked)
            )
        row = ex.one("SELECT verified FROM exports WHERE part = ?", (name,))
        if row is None or row[0] is None:
            raise Refused("%s: no verified export" % name)
        path = _check_export(ex, name, p["lo"], p["hi"])
        if store.dialect == "pg":
            ex.run("ALTER TABLE records DETACH PARTITION %s" % name)
            ex.run("DROP TABLE %s" % name)
        else:
            ex.run("DELETE FROM records WHERE " + _range(p["lo"], p["hi"]))
        ex.run("UPDATE exports SET dropped = ? WHERE part = ?", (now, name))
    log.warning("%s: %d records dropped (exported to %s, verified)", name, p["rows"], path)
    return p["rows"]


def prune_keys(store, now=None, key_months=KEY_MONTHS, batch=PRUNE_BATCH):
    """PostgreSQL: delete key table rows older than `key_months` months, in small transactions,
    never those of a record still held. -> rows deleted."""
    if store.dialect != "pg":
        return 0
    now = int(store.clock() if now is None else now)
    cutoff = add_months(now, -key_months)
    held = [p for p in listing(store) if p["rows"] and p["hi"] is not None]
    if held:
        if held[0]["lo"] is None:
            return 0  # records_legacy holds records from any time
        cutoff = min(cutoff, held[0]["lo"])
    default_min = None
    with store._tx(write=False) as ex:
        default_min = ex.one("SELECT MIN(received) FROM %s" % DEFAULT)[0]
    if default_min is not None:
        cutoff = min(cutoff, default_min)
    total = 0
    for table in ("record_keys", "psam_serials", "card_debits"):
        while True:
            with store._tx() as ex:
                n = ex.run(
                    "DELETE FROM %s WHERE ctid IN (SELECT ctid FROM %s WHERE received < %d "
                    "LIMIT %d)" % (table, table, cutoff, batch)
                )
            total += n
            if n < batch:
                break
    if total:
        log.info("key tables: %d rows from before %s deleted", total, _day(cutoff))
    return total


def run(store, export_dir=None, keep_months=KEEP_MONTHS, now=None, apply=False):
    """The retention policy: partitions made ahead (PostgreSQL), then each partition past
    `keep_months` exported, verified and dropped (apply) or only reported.
    -> [dict(name, lo, hi, rows, action, reason)]."""
    now = int(store.clock() if now is None else now)
    if store.dialect == "pg":
        with store._tx() as ex:
            ensure(ex, now)
    cutoff = add_months(now, -keep_months)
    out = []
    for p in listing(store):
        item = dict(p, action="kept", reason="")
        out.append(item)
        if p["hi"] is None:
            item["reason"] = "default partition" + (": rows waiting" if p["rows"] else "")
            continue
        if p["hi"] > cutoff:
            item["reason"] = "within %d months" % keep_months
            continue
        try:
            if not apply:
                with store._tx(write=False) as ex:
                    opened, unchecked = uncleared(ex, p["lo"], p["hi"])
                item["action"] = "due"
                item["reason"] = "%d unconfirmed debits, %d TAC unchecked" % (opened, unchecked)
                continue
            if export_dir is None:
                raise Refused("no --export-dir")
            with store._tx(write=False) as ex:
                waiting = any(uncleared(ex, p["lo"], p["hi"]))
            if waiting:
                drop(store, p["name"], keep_months, now)  # refused, with the counts
            try:
                verify(store, p["name"], now)
            except Refused:
                export(store, p["name"], export_dir, now)
                verify(store, p["name"], now)
            drop(store, p["name"], keep_months, now)
            item["action"] = "dropped"
        except Refused as e:
            item["action"] = "refused"
            item["reason"] = str(e)
            log.error("retention: %s", e)
    if apply:
        prune_keys(store, now)
    return out


def _day(t):
    return time.strftime("%Y-%m-%d", time.gmtime(t))
