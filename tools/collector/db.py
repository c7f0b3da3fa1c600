"""Storage for the collector: SQLite (a file, the default) or PostgreSQL (by URL), one schema with
versioned migrations, and an ingest that stores every record once whatever is re-sent.

Exactly-once rests on two unique keys: (device_id, seq) for every record, and
(psam_tid, psam_serial) for purchases (the PSAM's terminal transaction serial never repeats). The
insert ignores conflicts; a record whose device/seq is new but whose PSAM serial is already held
is kept with `tsn_dup = 1` (clearing excludes it, the log says so) so the device's sequence still
advances. The acknowledgement is the highest sequence held contiguously for the device.
On PostgreSQL (migration 7) `records` is partitioned by month and those keys live in key tables
(tools/collector/partitions.py, docs/scaling.md section 4); the rule is the same.
"""

import logging
import os
import queue
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from urllib.parse import unquote, urlparse

from . import bundles, partitions

log = logging.getLogger("collector.db")
# Exceptions that are reported but do not keep a purchase out of settlement (clearing.REPORT_ONLY).
REPORT_ONLY = frozenset(("clock_unset",))

EPOCH_2000 = 946684800  # validator time is seconds since 2000-01-01 UTC
DEFAULT_URL = "sqlite:///collector.sqlite3"

# Each migration: (version, statements). `{blob}` and `{big}` are filled per dialect. Never edit
# a published migration: add the next one.
MIGRATIONS = [
    (
        1,
        [
            """CREATE TABLE devices (
                device_id {big} PRIMARY KEY,
                secret {blob} NOT NULL,
                name TEXT,
                counter {big} NOT NULL DEFAULT 0,
                contig {big} NOT NULL DEFAULT 0,
                created {big} NOT NULL,
                last_seen {big},
                last_skew {big})""",
            """CREATE TABLE records (
                device_id {big} NOT NULL,
                seq {big} NOT NULL,
                received {big} NOT NULL,
                raw {blob} NOT NULL,
                kind INTEGER,
                rtime {big},
                psam_tid TEXT,
                psam_serial {big},
                card_no TEXT,
                amount {big},
                tsn_dup INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (device_id, seq))""",
            """CREATE UNIQUE INDEX records_tsn ON records (psam_tid, psam_serial)
                WHERE tsn_dup = 0 AND psam_tid IS NOT NULL""",
            """CREATE TABLE gaps (
                device_id {big} NOT NULL,
                from_seq {big} NOT NULL,
                to_seq {big} NOT NULL,
                noted {big} NOT NULL)""",
            """CREATE TABLE bundles (
                target {big} NOT NULL,
                version {big} NOT NULL,
                base {big} NOT NULL,
                data {blob} NOT NULL,
                published {big} NOT NULL,
                PRIMARY KEY (target, version, base))""",
        ],
    ),
    (
        2,
        [
            # Clearing: TAC verdict per purchase ('ok', 'bad', 'unchecked', NULL = not a purchase).
            "ALTER TABLE records ADD COLUMN tac_status TEXT",
        ],
    ),
    (
        3,
        [
            # Unconfirmed debits: a DEBIT_INTENT (kind 8) is closed by an outcome (kinds 1, 2, 9)
            # of the same card and card counter, from any device. Older rows get card_atc from
            # their raw bytes right after this migration (_backfill_card_atc).
            "ALTER TABLE records ADD COLUMN card_atc {big}",
            "CREATE INDEX records_card_atc ON records (card_no, card_atc)",
        ],
    ),
    (
        4,
        [
            # Clearing on by default: every purchase gets its exceptions (a comma list of
            # clearing.EXC_*; NULL = clean), the record's flags become a column (the test flag is
            # exported), a purchase is unique by (card number, card counter) as well as by PSAM
            # serial (older duplicates are marked first, _mark_atc_dups), and loads imported from
            # the top-up system explain a balance that went up between two of a card's debits.
            "ALTER TABLE records ADD COLUMN exceptions TEXT",
            "ALTER TABLE records ADD COLUMN flags INTEGER",
            """CREATE TABLE loads (
                card_no TEXT NOT NULL,
                ltime {big} NOT NULL,
                amount {big} NOT NULL,
                source TEXT)""",
            "CREATE INDEX loads_card ON loads (card_no, ltime)",
            "CREATE INDEX records_exceptions ON records (exceptions) WHERE exceptions IS NOT NULL",
        ],
    ),
    (
        5,
        [
            # The PSAM registry: which PSAM (terminal number, hex) belongs to which device. A
            # purchase under a PSAM that is not its device's is quarantined. Databases from
            # before learn it from the purchases held (_learn_psams).
            """CREATE TABLE psams (
                psam_tid TEXT PRIMARY KEY,
                device_id {big} NOT NULL,
                registered {big} NOT NULL)""",
            "CREATE INDEX psams_device ON psams (device_id)",
        ],
    ),
    (
        6,
        [
            # Device keys derived from a master key outside the database (tools/collector/keys.py):
            # key_version > 0 names the derived key and `secret` is left empty; 0 is a secret
            # stored before (or imported by Store.provision(secret=...)), kept working and
            # reported at start until the device is re-provisioned. kcv: key check value.
            "ALTER TABLE devices ADD COLUMN key_version {big} NOT NULL DEFAULT 0",
            "ALTER TABLE devices ADD COLUMN kcv {blob}",
        ],
    ),
    (
        7,
        [
            # Retention (tools/collector/partitions.py): a month of records leaves the database
            # only once it is exported, the export verified against the rows, and nothing in it
            # is waiting to be cleared. On PostgreSQL `records` then becomes partitioned by
            # month of `received`, its uniqueness moved to key tables (partitions.partition_pg,
            # docs/scaling.md section 4); SQLite keeps one table.
            """CREATE TABLE exports (
                part TEXT PRIMARY KEY,
                lo {big},
                hi {big} NOT NULL,
                nrows {big} NOT NULL,
                sha256 TEXT NOT NULL,
                path TEXT NOT NULL,
                exported {big} NOT NULL,
                verified {big},
                dropped {big})""",
        ],
    ),
]
# Statements run after a migration's Python step (the unique index needs the duplicates marked).
POST = {
    4: [
        """CREATE UNIQUE INDEX records_atc ON records (card_no, card_atc)
            WHERE tsn_dup = 0 AND kind IN (1, 2) AND card_atc IS NOT NULL""",
    ]
}
# Record kinds (firmware/record.py): the purchases that are money, the intent, and its outcomes.
MONEY_KINDS = (1, 2)  # PURCHASE, PURCHASE_RECOVERED
DEBIT_INTENT = 8
OUTCOME_KINDS = (1, 2, 9)  # PURCHASE, PURCHASE_RECOVERED, DEBIT_VOID
_ATC_AT = 47  # card_atc: 2 bytes big-endian at offset 47 of the 64-byte record
SCHEMA_VERSION = MIGRATIONS[-1][0]


_INSERT = (
    "INSERT INTO records (device_id, seq, received, raw, kind, rtime, psam_tid, psam_serial, "
    "card_no, amount, tac_status, card_atc, flags, exceptions, tsn_dup) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DUP = -1  # index of tsn_dup in a row tuple
_EXC = -2  # index of exceptions

# PostgreSQL: one batch in one round trip (the counter, the inserts, the clashes, the floor and
# the acknowledgement), the same steps as Store.ingest's portable path. Re-created at every start.
# From migration 7 `records` is partitioned by month and holds no unique key: the keys live in
# record_keys (device, seq), psam_serials (PSAM terminal, serial) and card_debits (card, card
# counter), inserted first. A record whose (device, seq) is held is not stored again; a new one
# whose purchase key is held by another record is stored with tsn_dup = 1 and holds no key.
PG_INGEST = """
CREATE OR REPLACE FUNCTION collector_ingest(
    p_device bigint, p_counter bigint, p_acked bigint, p_now bigint, p_skew bigint,
    p_seq bigint[], p_raw bytea[], p_kind int[], p_rtime bigint[], p_tid text[],
    p_serial bigint[], p_card text[], p_amount bigint[], p_tac text[], p_atc bigint[],
    p_flags int[], p_exc text[], p_dup int[])
RETURNS TABLE (o_status int, o_counter bigint, o_last_seen bigint, o_last_skew bigint,
               o_contig bigint, o_stored int, o_clashes text[], o_gap_from bigint,
               o_gap_missing bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_contig bigint;
    v_start bigint;
    v_n int := coalesce(array_length(p_seq, 1), 0);
    v_stored int := 0;
    v_clashes text[] := '{}';
    v_missing bigint;
    v_gap_from bigint;
    v_gap_missing bigint;
    v_bad_tsn bigint[] := '{}';
    v_bad_atc bigint[] := '{}';
BEGIN
    UPDATE devices SET counter = p_counter, last_seen = p_now, last_skew = p_skew
     WHERE device_id = p_device AND counter < p_counter
       AND counter >= CASE WHEN p_counter > 4294967295 AND (p_counter & 4294967295) <= 1048576
                           THEN GREATEST(0, ((p_counter >> 32) - 16777216) << 32)
                           ELSE p_counter - 1048576 END
    RETURNING contig INTO v_contig;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 1, d.counter, d.last_seen, d.last_skew, 0::bigint, 0,
            NULL::text[], NULL::bigint, NULL::bigint FROM devices d WHERE d.device_id = p_device;
        RETURN;
    END IF;
    IF v_n > 0 THEN
        -- one statement: the (device, seq) keys, then for the new records their purchase keys,
        -- then the records, a clash (a purchase key held by another record) marked
        WITH u AS (
            SELECT * FROM unnest(p_seq, p_raw, p_kind, p_rtime, p_tid, p_serial, p_card,
                                 p_amount, p_tac, p_atc, p_flags, p_exc, p_dup)
                AS u(seq, raw, kind, rtime, tid, ser, card, amt, tac, atc, flags, exc, dup)),
        k AS (
            INSERT INTO record_keys (device_id, seq, received)
            SELECT p_device, u.seq, p_now FROM u ON CONFLICT DO NOTHING RETURNING seq),
        n AS (
            SELECT u.*,
                u.dup = 0 AND u.tid IS NOT NULL AND u.ser IS NOT NULL AS wants_tsn,
                u.dup = 0 AND u.kind IN (1, 2) AND u.card IS NOT NULL
                    AND u.atc IS NOT NULL AS wants_atc
            FROM u JOIN k ON k.seq = u.seq),
        t AS (
            INSERT INTO psam_serials (psam_tid, psam_serial, device_id, seq, received)
            SELECT n.tid, n.ser, p_device, n.seq, p_now FROM n WHERE n.wants_tsn
            ON CONFLICT DO NOTHING RETURNING seq),
        c AS (
            INSERT INTO card_debits (card_no, card_atc, device_id, seq, received)
            SELECT n.card, n.atc, p_device, n.seq, p_now FROM n WHERE n.wants_atc
            ON CONFLICT DO NOTHING RETURNING seq),
        f AS (
            SELECT n.*,
                n.wants_tsn AND NOT EXISTS (SELECT 1 FROM t WHERE t.seq = n.seq) AS bad_tsn,
                n.wants_atc AND NOT EXISTS (SELECT 1 FROM c WHERE c.seq = n.seq) AS bad_atc
            FROM n),
        r AS (
            INSERT INTO records (device_id, seq, received, raw, kind, rtime, psam_tid,
                psam_serial, card_no, amount, tac_status, card_atc, flags, exceptions, tsn_dup)
            SELECT p_device, f.seq, p_now, f.raw, f.kind, f.rtime, f.tid, f.ser, f.card, f.amt,
                f.tac, f.atc, f.flags,
                CASE WHEN f.bad_tsn OR f.bad_atc
                     THEN nullif(concat_ws(',', f.exc, CASE WHEN f.bad_tsn THEN 'tsn_dup' END,
                                           CASE WHEN f.bad_atc THEN 'atc_dup' END), '')
                     ELSE f.exc END,
                CASE WHEN f.bad_tsn OR f.bad_atc THEN 1 ELSE f.dup END
            FROM f RETURNING 1)
        SELECT (SELECT count(*) FROM r),
               coalesce((SELECT array_agg(f.seq) FROM f WHERE f.bad_tsn), '{}'),
               coalesce((SELECT array_agg(f.seq) FROM f WHERE f.bad_atc), '{}')
          INTO v_stored, v_bad_tsn, v_bad_atc;
        IF cardinality(v_bad_tsn) + cardinality(v_bad_atc) > 0 THEN
            -- a clash holds neither key: the other one, taken above, is given back
            DELETE FROM psam_serials s USING unnest(p_seq, p_tid, p_serial) AS u(seq, tid, ser)
             WHERE u.seq = ANY (v_bad_atc) AND s.psam_tid = u.tid AND s.psam_serial = u.ser
               AND s.device_id = p_device AND s.seq = u.seq;
            DELETE FROM card_debits c USING unnest(p_seq, p_card, p_atc) AS u(seq, card, atc)
             WHERE u.seq = ANY (v_bad_tsn) AND c.card_no = u.card AND c.card_atc = u.atc
               AND c.device_id = p_device AND c.seq = u.seq;
            SELECT array_agg(u.seq::text || ':' || concat_ws(',',
                       CASE WHEN u.seq = ANY (v_bad_tsn) THEN 'tsn_dup' END,
                       CASE WHEN u.seq = ANY (v_bad_atc) THEN 'atc_dup' END) ORDER BY u.seq)
              INTO v_clashes FROM unnest(p_seq) AS u(seq)
             WHERE u.seq = ANY (v_bad_tsn) OR u.seq = ANY (v_bad_atc);
        END IF;
    END IF;
    v_start := v_contig;
    IF p_acked > v_contig THEN
        SELECT count(*) INTO v_missing FROM record_keys
         WHERE device_id = p_device AND seq > v_contig AND seq <= p_acked;
        IF v_missing < p_acked - v_contig THEN
            INSERT INTO gaps (device_id, from_seq, to_seq, noted)
                VALUES (p_device, v_contig + 1, p_acked, p_now);
            v_gap_from := v_contig + 1;
            v_gap_missing := p_acked - v_contig - v_missing;
        END IF;
        v_contig := p_acked;
    END IF;
    -- the run of held sequences that continues v_contig: seq - rank is constant along it
    SELECT coalesce(max(t.seq), v_contig) INTO v_contig FROM (
        SELECT h.seq, h.seq - row_number() OVER (ORDER BY h.seq) AS grp
        FROM (SELECT r.seq FROM record_keys r WHERE r.device_id = p_device AND r.seq > v_contig
              ORDER BY r.seq LIMIT 100000) h) t
     WHERE t.grp = v_contig;
    IF v_contig <> v_start THEN
        UPDATE devices SET contig = v_contig WHERE device_id = p_device;
    END IF;
    RETURN QUERY SELECT 0, p_counter, p_now, p_skew, v_contig, v_stored, v_clashes, v_gap_from,
        v_gap_missing;
END
$fn$
"""


# A request's counter may be at most this far above the last accepted one. A validator counts
# up by one, or adopts the back office's counter from a 409, so only a bug or a flipped bit
# jumps further; such a request gets a 409 with the real counter, which the validator adopts:
# no value it sends can push its counter to the end of its range (docs/protocol.md section 2).
MAX_COUNTER_JUMP = 1 << 20  # collector_ingest() has the same figure (1048576)
# Protocol version 2 requests carry a boot epoch (the validator's log sequence number at boot,
# which its BOOT record makes grow at every boot): the collector keeps (epoch, counter) as one
# key, epoch << 32 | counter, in devices.counter (version 1 devices: epoch 0, the key is the
# counter). Keys increase lexicographically. A new epoch may start its counter anywhere up to
# MAX_COUNTER_JUMP and be at most MAX_EPOCH_JUMP above the last accepted epoch (the log's
# sequence grows by every record, not only by boots); further is treated like a counter jump:
# a 409 with the real (epoch, counter), which the validator adopts. collector_ingest() has the
# same figures (16777216, 1048576).
MAX_EPOCH_JUMP = 1 << 24


def key_floor(key):
    """The lowest stored key below which a request's key is refused as a jump (see above)."""
    if key >> 32 and (key & 0xFFFFFFFF) <= MAX_COUNTER_JUMP:
        return max(0, ((key >> 32) - MAX_EPOCH_JUMP) << 32)
    return key - MAX_COUNTER_JUMP


class Stale(Exception):
    """The request's counter is not above the last one accepted (a replay or a rebooted device).
    last_time: the device's clock (validator time) when it built the last accepted request."""

    def __init__(self, server_counter, last_time=None):
        super().__init__("counter not above %d" % server_counter)
        self.server_counter = server_counter
        self.last_time = last_time


def _device_time(last_seen, last_skew):
    if last_seen is None or last_skew is None:
        return None
    return last_seen - EPOCH_2000 + last_skew


def _private_file(path):
    """The database holds device data (and legacy secrets): created 0600, and an existing one
    readable by others is tightened, with a log line. SQLite gives its -wal and -shm files the
    database file's mode."""
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        return
    except FileExistsError:
        pass
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("database %s was readable by others (mode %o): now 0600", path, mode)
        os.chmod(path, 0o600)
        for extra in ("-wal", "-shm"):
            if os.path.exists(path + extra):
                os.chmod(path + extra, 0o600)


def card_atc_key(card_no, atc):
    return None if card_no is None or atc is None else (card_no, atc)


def _hexify(v):
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v)


class Store:
    """Open with a URL: ``sqlite:///path``, a bare path, or ``postgresql://user@host:port/db``."""

    def __init__(self, url=DEFAULT_URL, migrate=True, keys=None):
        """keys: a keys.KeySource (the master key) for devices with derived keys."""
        self.url = url
        self.keys = keys
        self.clock = time.time  # `received` of what is stored (tests move it to other months)
        if url.startswith(("postgresql://", "postgres://")):
            self.dialect = "pg"
            import psycopg

            self._psycopg = psycopg
            self._pool = queue.LifoQueue()
        else:
            self.dialect = "sqlite"
            path = url[len("sqlite://") :] if url.startswith("sqlite://") else url
            if path.startswith("/") and url.startswith("sqlite:///"):
                path = path[1:]
            self.path = unquote(path) or ":memory:"
            _private_file(self.path)
            self._local = threading.local()
            self._all = []
            self._all_lock = threading.Lock()
        if migrate:
            self.migrate()

    # --- connections ------------------------------------------------------------------------

    def _sqlite_conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before the answer frees the records on the validator.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self, write=True):
        """A transaction: yields an executor; commits on success, rolls back on error."""
        if self.dialect == "sqlite":
            conn = self._sqlite_conn()
            # A writer takes the lock up front (IMMEDIATE): no deadlock upgrading a read lock.
            # Readers do not take it, so WAL lets them run beside a writer.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _Exec(conn, "sqlite")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        else:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                conn = self._connect()
            try:
                with conn.transaction():
                    yield _Exec(conn, "pg")
            except BaseException:
                if conn.closed or conn.broken:
                    conn = None
                raise
            finally:
                if conn is not None:
                    self._pool.put(conn)

    def _connect(self):
        # autocommit: a single statement (collector_ingest) is its own transaction, one round
        # trip; `_tx` still opens explicit transactions on it.
        return self._psycopg.connect(self.url, autocommit=True)

    def close(self):
        if self.dialect == "sqlite":
            with self._all_lock:
                for conn in self._all:
                    try:
                        conn.close()
                    except sqlite3.ProgrammingError:
                        pass  # owned by a thread that is gone; closed by the GC
                self._all.clear()
            self._local = threading.local()
        else:
            while True:
                try:
                    self._pool.get_nowait().close()
                except queue.Empty:
                    break

    # --- schema -------------------------------------------------------------------------------

    def migrate(self):
        blob, big = ("BLOB", "INTEGER") if self.dialect == "sqlite" else ("BYTEA", "BIGINT")
        with self._tx() as ex:
            if self.dialect == "pg":
                # Several collectors may start at once on one database: one migrates at a time.
                ex.run("SELECT pg_advisory_xact_lock(734201)")
            ex.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = ex.one("SELECT MAX(version) FROM schema_version")
            have = row[0] or 0
            if have > SCHEMA_VERSION:
                raise RuntimeError(
                    "database schema %d is newer than this collector (%d)" % (have, SCHEMA_VERSION)
                )
            for version, statements in MIGRATIONS:
                if version <= have:
                    continue
                for sql in statements:
                    ex.run(sql.format(blob=blob, big=big))
                ex.run("INSERT INTO schema_version (version) VALUES (?)", (version,))
                log.info("schema migrated to version %d", version)
                if version == 3:
                    self._backfill_card_atc(ex)
                if version == 4:
                    self._backfill_exceptions(ex)
                if version == 5:
                    self._learn_psams(ex)
                if version == 7 and self.dialect == "pg":
                    partitions.partition_pg(ex, int(self.clock()))
                for sql in POST.get(version, ()):
                    ex.run(sql.format(blob=blob, big=big))
            if self.dialect == "pg" and have <= SCHEMA_VERSION:
                ex.run(PG_INGEST)
                if SCHEMA_VERSION >= 7:
                    # this month's and the next two months' partitions exist before a record
                    # needs them; what reached the default partition moves to its month's
                    partitions.ensure(ex, int(self.clock()))
        return SCHEMA_VERSION

    @staticmethod
    def _backfill_card_atc(ex):
        rows = ex.all("SELECT device_id, seq, raw FROM records WHERE kind IN (1, 2, 8, 9)")
        for device_id, seq, raw in rows:
            raw = bytes(raw)
            if len(raw) >= _ATC_AT + 2:
                ex.run(
                    "UPDATE records SET card_atc = ? WHERE device_id = ? AND seq = ?",
                    (int.from_bytes(raw[_ATC_AT : _ATC_AT + 2], "big"), device_id, seq),
                )

    @staticmethod
    def _backfill_exceptions(ex):
        """Records held before migration 4: flags from the raw bytes, exceptions from what was
        known (tac_status 'bad' or 'unchecked', a PSAM serial repeat), and of two purchases with
        one (card number, card counter) the later one marked as the duplicate."""
        rows = ex.all(
            "SELECT device_id, seq, raw, kind, tac_status, tsn_dup, card_no, card_atc "
            "FROM records ORDER BY received, device_id, seq"
        )
        seen = set()
        for device_id, seq, raw, kind, tac, dup, card_no, atc in rows:
            raw = bytes(raw)
            flags = raw[2] if len(raw) > 2 else 0
            exc = []
            if kind in MONEY_KINDS:
                if tac == "bad":
                    exc.append("tac_bad")
                elif tac in ("unchecked", "nokey"):
                    exc.append("tac_nokey")
                if dup:
                    exc.append("tsn_dup")
                elif card_atc_key(card_no, atc) is not None:
                    if (card_no, atc) in seen:
                        exc.append("atc_dup")
                        dup = 1
                    seen.add((card_no, atc))
                if flags & 0x08:
                    exc.append("test")
            ex.run(
                "UPDATE records SET flags = ?, exceptions = ?, tsn_dup = ? "
                "WHERE device_id = ? AND seq = ?",
                (flags, ",".join(exc) or None, dup, device_id, seq),
            )

    @staticmethod
    def _learn_psams(ex):
        """Migration 5 on a database already in use: each PSAM registered to the device that
        booked the most purchases under it (logged, for the operator to check)."""
        rows = ex.all(
            "SELECT psam_tid, device_id, COUNT(*) FROM records WHERE kind IN (1, 2) "
            "AND psam_tid IS NOT NULL AND tsn_dup = 0 GROUP BY psam_tid, device_id"
        )
        best = {}
        for tid, dev, n in rows:
            if tid not in best or n > best[tid][1]:
                best[tid] = (dev, n)
        for tid, (dev, n) in sorted(best.items()):
            log.warning(
                "PSAM registry: PSAM %s registered to device %d (%d purchases)", tid, dev, n
            )
            ex.run(
                "INSERT INTO psams (psam_tid, device_id, registered) VALUES (?, ?, ?)",
                (tid, dev, int(time.time())),
            )

    def schema_version(self):
        with self._tx(write=False) as ex:
            return ex.one("SELECT MAX(version) FROM schema_version")[0]

    # --- devices ------------------------------------------------------------------------------

    def provision(self, device_id, secret=None, name=None):
        """Add a device or give it a new key -> the key (bytes) to put in its config.json.

        Without `secret` (the normal way) the key is derived from the master key (self.keys) under
        the device's next key version: the database keeps only the version and a check value,
        every earlier key of the device stops working, and its counter starts again from 0 (no
        captured request verifies under the new key, and a counter at its end cannot lock the
        device out). With `secret` (an existing validator's, tests) the secret is stored as
        before and the counter stays; such devices are reported at start."""
        if not 0 < device_id <= 0xFFFFFFFF:
            raise ValueError("device id must be 1..4294967295")
        if secret is not None and len(secret) < 16:
            raise ValueError("a device secret needs at least 16 bytes")
        if secret is None and self.keys is None:
            raise ValueError(
                "no master key: --master-key-file FILE, $COLLECTOR_MASTER_KEY_FILE or "
                "$COLLECTOR_MASTER_KEY (python -m tools.collector masterkey --out FILE makes one)"
            )
        with self._tx() as ex:
            row = ex.one("SELECT key_version FROM devices WHERE device_id = ?", (device_id,))
            if secret is None:
                version = (row[0] if row else 0) + 1
                key = self.keys.device_key(device_id, version)
                stored, kcv, counter = b"", self.keys.kcv(key), 0
            else:
                version, key, stored, kcv, counter = 0, bytes(secret), bytes(secret), None, None
            if row:
                ex.run(
                    "UPDATE devices SET secret = ?, name = ?, key_version = ?, kcv = ?, "
                    "counter = COALESCE(?, counter) WHERE device_id = ?",
                    (stored, name, version, kcv, counter, device_id),
                )
            else:
                ex.run(
                    "INSERT INTO devices (device_id, secret, name, created, key_version, kcv) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (device_id, stored, name, int(time.time()), version, kcv),
                )
        return key

    def _key(self, device_id, stored, version):
        if not version:
            return bytes(stored)
        if self.keys is None:
            raise RuntimeError(
                "device %d has a derived key (version %d) and this collector has no master key"
                % (device_id, version)
            )
        return self.keys.device_key(device_id, version)

    def secret(self, device_id):
        with self._tx(write=False) as ex:
            row = ex.one(
                "SELECT secret, key_version FROM devices WHERE device_id = ?", (device_id,)
            )
        return self._key(device_id, row[0], row[1]) if row else None

    def check_keys(self, sample=20):
        """At start: the master key must match the keys the database was provisioned with (key
        check values of a sample of devices). -> (derived devices, stored secrets). RuntimeError
        on a mismatch: every device would be refused with 401."""
        with self._tx(write=False) as ex:
            derived = ex.one("SELECT COUNT(*) FROM devices WHERE key_version > 0")[0]
            stored = ex.one("SELECT COUNT(*) FROM devices WHERE key_version = 0")[0]
            rows = ex.all(
                "SELECT device_id, key_version, kcv FROM devices WHERE key_version > 0 "
                "ORDER BY device_id LIMIT ?",
                (sample,),
            )
        if derived and self.keys is None:
            raise RuntimeError(
                "%d devices have derived keys and no master key is given "
                "(--master-key-file, $COLLECTOR_MASTER_KEY_FILE, $COLLECTOR_MASTER_KEY)" % derived
            )
        for dev, version, kcv in rows:
            if kcv is not None and self.keys.kcv(self.keys.device_key(dev, version)) != bytes(kcv):
                raise RuntimeError(
                    "the master key does not match this database (device %d key check value)" % dev
                )
        if stored:
            log.warning(
                "%d devices still have a secret stored in the database: re-provision them "
                "(python -m tools.collector provision) so a database leak gives nothing away",
                stored,
            )
        return derived, stored

    def auth(self, device_id):
        """What a request needs before its records are looked at, in one query: the secret, the
        last accepted counter, the provisioning time (validator time) and the PSAMs registered
        to the device (terminal numbers, hex). None if unknown."""
        with self._tx(write=False) as ex:
            rows = ex.all(
                "SELECT d.secret, d.counter, d.created, p.psam_tid, d.key_version, d.last_seen, "
                "d.last_skew FROM devices d "
                "LEFT JOIN psams p ON p.device_id = d.device_id WHERE d.device_id = ?",
                (device_id,),
            )
        if not rows:
            return None
        row = rows[0]
        return {
            "secret": self._key(device_id, row[0], row[4]),
            "counter": row[1],
            "created": row[2] - EPOCH_2000,
            "psams": frozenset(r[3] for r in rows if r[3] is not None),
            "last_time": _device_time(row[5], row[6]),
        }

    def register_psam(self, device_id, psam_tid):
        """The PSAM (6-byte terminal number, bytes or hex) belongs to the device from now on; a
        PSAM moved from another device leaves that device's registry."""
        tid = _hexify(psam_tid) if not isinstance(psam_tid, str) else psam_tid.lower()
        if len(tid) != 12 or any(c not in "0123456789abcdef" for c in tid):
            raise ValueError("a PSAM terminal number is 6 bytes (12 hex digits)")
        with self._tx() as ex:
            if not ex.one("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)):
                raise ValueError("unknown device %d" % device_id)
            old = ex.one("SELECT device_id FROM psams WHERE psam_tid = ?", (tid,))
            if old and old[0] != device_id:
                log.warning("PSAM %s moves from device %d to device %d", tid, old[0], device_id)
            ex.run("DELETE FROM psams WHERE psam_tid = ?", (tid,))
            ex.run(
                "INSERT INTO psams (psam_tid, device_id, registered) VALUES (?, ?, ?)",
                (tid, device_id, int(time.time())),
            )

    def unregister_psam(self, psam_tid):
        with self._tx() as ex:
            return ex.run("DELETE FROM psams WHERE psam_tid = ?", (psam_tid.lower(),))

    def psams(self, device_id=None):
        """{psam_tid hex: device_id}."""
        sql, args = "SELECT psam_tid, device_id FROM psams", ()
        if device_id is not None:
            sql, args = sql + " WHERE device_id = ?", (device_id,)
        with self._tx(write=False) as ex:
            return dict(ex.all(sql, args))

    def device(self, device_id):
        with self._tx(write=False) as ex:
            row = ex.one(
                "SELECT counter, contig, last_seen, last_skew FROM devices WHERE device_id = ?",
                (device_id,),
            )
        if not row:
            return None
        return dict(zip(("counter", "contig", "last_seen", "last_skew"), row))

    def _bump_counter(self, ex, device_id, counter, now, skew):
        # The row lock this UPDATE takes also serialises concurrent requests of one device.
        n = ex.run(
            "UPDATE devices SET counter = ?, last_seen = ?, last_skew = ? "
            "WHERE device_id = ? AND counter < ? AND counter >= ?",
            (counter, now, skew, device_id, counter, key_floor(counter)),
        )
        if n != 1:
            row = ex.one(
                "SELECT counter, last_seen, last_skew FROM devices WHERE device_id = ?",
                (device_id,),
            )
            raise Stale(row[0] if row else 0, _device_time(row[1], row[2]) if row else None)

    # --- ingest -------------------------------------------------------------------------------

    def _ingest_pg(self, device_id, counter, acked, rows, now, skew):
        cols = [[] for _ in range(14)]
        for seq, raw, f in rows:
            for col, v in zip(cols, self._row(device_id, now, seq, raw, f)[1:]):
                col.append(v)
        # (the row's `received` column is p_now: drop it from the arrays)
        del cols[1]
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            row = conn.execute(
                "SELECT * FROM collector_ingest(%s, %s, %s, %s, %s, %b::bigint[], %b::bytea[], "
                "%b::int[], %b::bigint[], %b::text[], %b::bigint[], %b::text[], %b::bigint[], "
                "%b::text[], %b::bigint[], %b::int[], %b::text[], %b::int[])",
                [device_id, counter, acked, now, skew] + cols,
            ).fetchone()
        except BaseException:
            if conn.closed or conn.broken:
                conn = None
            raise
        finally:
            if conn is not None:
                self._pool.put(conn)
        status, server_counter, last_seen, last_skew, contig, stored, clashes, gfrom, gmiss = row
        if status == 1:
            raise Stale(server_counter or 0, _device_time(last_seen, last_skew))
        for c in clashes or ():
            seq, _, why = c.partition(":")
            log.warning(
                "device %d seq %s repeats a held purchase (%s): kept outside settlement",
                device_id,
                seq,
                why,
            )
        if gfrom is not None:
            log.error(
                "device %d: records %d..%d are gone from the device but not held here "
                "(database restored from an older backup, or unreadable on the device); "
                "%d missing, noted in gaps",
                device_id,
                gfrom,
                acked,
                gmiss,
            )
        return {
            "contig": contig,
            "stored": stored,
            "duplicates": len(rows) - stored,
            "tsn_dups": len(clashes or ()),
        }

    def ingest(self, device_id, counter, acked, first_seq, rows, device_time=None):
        """Store one authenticated batch. rows: [(seq, raw, fields)] where fields holds the decoded
        kind, time, psam_tid, psam_serial, card_no, amount, card_atc, flags, tac_status and
        exceptions (a list of clearing.EXC_*), any may be None. A row whose exceptions include
        'psam' is quarantined: kept outside the uniqueness keys, so it demotes no other record.
        -> dict(contig, stored, duplicates, tsn_dups). Raises Stale."""
        now = int(self.clock())
        skew = None if device_time is None else device_time - (now - EPOCH_2000)
        if self.dialect == "pg":
            return self._ingest_pg(device_id, counter, acked, rows, now, skew)
        with self._tx() as ex:
            self._bump_counter(ex, device_id, counter, now, skew)
            stored = tsn_dups = 0
            if rows:
                lo, hi = rows[0][0], rows[-1][0]
                span = "SELECT seq FROM records WHERE device_id = ? AND seq >= ? AND seq <= ?"
                before = {r[0] for r in ex.all(span, (device_id, lo, hi))}
                fresh = [
                    self._row(device_id, now, seq, raw, f)
                    for seq, raw, f in rows
                    if seq not in before
                ]
                if fresh:
                    ex.many(_INSERT + " ON CONFLICT DO NOTHING", fresh)
                    after = {r[0] for r in ex.all(span, (device_id, lo, hi))}
                    for p in fresh:
                        if p[1] not in after:
                            self._insert_clash(ex, device_id, p)
                            tsn_dups += 1
                    stored = len(fresh)
            contig = self._advance(ex, device_id, acked, now)
        return {
            "contig": contig,
            "stored": stored,
            "duplicates": len(rows) - stored,
            "tsn_dups": tsn_dups,
        }

    @staticmethod
    def _insert_clash(ex, device_id, p):
        """A new (device, seq) whose purchase repeats a held one's PSAM serial or card counter:
        kept outside the uniqueness keys, its exceptions naming the clash."""
        why = []
        if ex.one(
            "SELECT 1 FROM records WHERE psam_tid = ? AND psam_serial = ? AND tsn_dup = 0",
            (p[6], p[7]),
        ):
            why.append("tsn_dup")
        if ex.one(
            "SELECT 1 FROM records WHERE card_no = ? AND card_atc = ? AND tsn_dup = 0 "
            "AND kind IN (1, 2)",
            (p[8], p[11]),
        ):
            why.append("atc_dup")
        exc = ",".join(filter(None, [p[_EXC]] + why)) or None
        log.warning(
            "device %d seq %d repeats a held purchase (%s; PSAM %s serial %s, card %s "
            "counter %s): kept outside settlement",
            device_id,
            p[1],
            ", ".join(why) or "a concurrent insert",
            p[6],
            p[7],
            p[8],
            p[11],
        )
        ex.run(_INSERT, p[:_EXC] + (exc, 1))

    @staticmethod
    def _row(device_id, now, seq, raw, f):
        # Only purchases carry a PSAM terminal transaction serial; boot, refusal, parameter and
        # clock records hold serial 0 and must not collide on the (terminal, serial) key, and an
        # intent or a void shares the serial of the purchase it announces or cancels.
        kind = f.get("kind")
        purchase = kind in MONEY_KINDS
        atc = f.get("card_atc") if kind in (DEBIT_INTENT,) + OUTCOME_KINDS else None
        exc = f.get("exceptions") or ()
        flags = f.get("flags")
        if flags is None and len(raw) > 2:
            flags = raw[2]
        return (
            device_id,
            seq,
            now,
            bytes(raw),
            kind,
            f.get("time"),
            _hexify(f.get("psam_tid")) if purchase else None,
            f.get("psam_serial") if purchase else None,
            _hexify(f.get("card_no")),
            f.get("amount"),
            f.get("tac_status"),
            atc,
            flags,
            ",".join(exc) or None,
            1 if "psam" in exc else 0,  # quarantined: outside the uniqueness keys
        )

    def _advance(self, ex, device_id, acked, now):
        contig = ex.one("SELECT contig FROM devices WHERE device_id = ?", (device_id,))[0]
        held = contig  # what the devices row says now: saved again below if it moved
        if acked > contig:
            # The device freed records we acknowledged once and no longer hold: the database was
            # restored from an older backup. They are the back office's loss, not the device's:
            # note the gap loudly and move on, or the device would wait forever.
            missing = ex.one(
                "SELECT COUNT(*) FROM records WHERE device_id = ? AND seq > ? AND seq <= ?",
                (device_id, contig, acked),
            )[0]
            if missing < acked - contig:
                log.error(
                    "device %d: records %d..%d are gone from the device but not held here "
                    "(database restored from an older backup, or unreadable on the device); "
                    "%d missing, noted in gaps",
                    device_id,
                    contig + 1,
                    acked,
                    acked - contig - missing,
                )
                ex.run(
                    "INSERT INTO gaps (device_id, from_seq, to_seq, noted) VALUES (?, ?, ?, ?)",
                    (device_id, contig + 1, acked, now),
                )
            contig = acked
        while True:
            seqs = ex.all(
                "SELECT seq FROM records WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT 2000",
                (device_id, contig),
            )
            for (seq,) in seqs:
                if seq != contig + 1:
                    break
                contig = seq
            else:
                if len(seqs) == 2000:
                    continue
            break
        if contig != held:
            # A floor above what is held moves it too: saved, so the next heartbeat with the
            # same floor notes no second gap (it did before, at every heartbeat).
            ex.run("UPDATE devices SET contig = ? WHERE device_id = ?", (contig, device_id))
        return contig

    def forget_after(self, device_id, keep):
        """What restoring a backup taken when the device's records 1..keep were held does to
        its rows (tests and the test server): later records and their keys gone."""
        with self._tx() as ex:
            ex.run("DELETE FROM records WHERE device_id = ? AND seq > ?", (device_id, keep))
            if self.dialect == "pg" and self.schema_version_in(ex) >= 7:
                for table in ("record_keys", "psam_serials", "card_debits"):
                    ex.run(
                        "DELETE FROM %s WHERE device_id = ? AND seq > ?" % table,
                        (device_id, keep),
                    )

    @staticmethod
    def schema_version_in(ex):
        return ex.one("SELECT MAX(version) FROM schema_version")[0] or 0

    def touch(self, device_id, counter, device_time=None):
        """Accept a counter without records (parameter queries). Raises Stale."""
        now = int(self.clock())
        skew = None if device_time is None else device_time - (now - EPOCH_2000)
        with self._tx() as ex:
            self._bump_counter(ex, device_id, counter, now, skew)

    # --- parameter bundles --------------------------------------------------------------------

    # Publishing, rollout and serving live in tools/collector/bundles.py (its own tables).

    def publish(self, version, data, target=0, base=0, groups=None):
        """A full bundle (base 0) or a delta from `base`, for one device or the fleet (target
        0), rolled out to `groups` (None: every device). Version 1..VERSION_MAX."""
        bundles.publish(self, version, data, target, base, groups)

    def latest_version(self, device_id):
        """The version on offer to a device; never raises (uploads must not fail over it)."""
        return bundles.offer(self, device_id)

    def bundle_for(self, device_id, have):
        """-> (kind, version, base, data): kind 'none', 'full' or 'delta'."""
        return bundles.bundle_for(self, device_id, have)

    # --- reading back -------------------------------------------------------------------------

    def count(self, device_id=None):
        with self._tx(write=False) as ex:
            if device_id is None:
                return ex.one("SELECT COUNT(*) FROM records")[0]
            return ex.one("SELECT COUNT(*) FROM records WHERE device_id = ?", (device_id,))[0]

    def seqs(self, device_id):
        with self._tx(write=False) as ex:
            rows = ex.all("SELECT seq FROM records WHERE device_id = ? ORDER BY seq", (device_id,))
        return [r[0] for r in rows]

    def gaps(self, device_id):
        with self._tx(write=False) as ex:
            rows = ex.all(
                "SELECT from_seq, to_seq FROM gaps WHERE device_id = ? ORDER BY from_seq",
                (device_id,),
            )
        return [tuple(r) for r in rows]

    def intents(self, device_id=None, open_only=False):
        """Every DEBIT_INTENT held (of one device, or all), oldest first, each a dict with its
        outcome: the record of kind 1, 2 or 9 with the same card_no and card_atc from any device
        (`outcome` None: an *unconfirmed debit*: the card may or may not have been debited; it is
        never money until an outcome arrives or clearing settles it from the card's counters)."""
        sql = (
            "SELECT i.device_id, i.seq, i.rtime, i.card_no, i.card_atc, i.amount, i.raw, "
            "(SELECT o.kind FROM records o WHERE o.card_no = i.card_no "
            "AND o.card_atc = i.card_atc AND o.kind IN (1, 2, 9) "
            "ORDER BY o.device_id, o.seq LIMIT 1), "
            "(SELECT o.device_id FROM records o WHERE o.card_no = i.card_no "
            "AND o.card_atc = i.card_atc AND o.kind IN (1, 2, 9) "
            "ORDER BY o.device_id, o.seq LIMIT 1), "
            "(SELECT o.seq FROM records o WHERE o.card_no = i.card_no "
            "AND o.card_atc = i.card_atc AND o.kind IN (1, 2, 9) "
            "ORDER BY o.device_id, o.seq LIMIT 1) "
            "FROM records i WHERE i.kind = 8"
        )
        args = ()
        if device_id is not None:
            sql += " AND i.device_id = ?"
            args = (device_id,)
        sql += " ORDER BY i.device_id, i.seq"
        out = []
        with self._tx(write=False) as ex:
            rows = ex.all(sql, args)
            for dev, seq, rtime, card_no, atc, amount, raw, okind, odev, oseq in rows:
                if open_only and okind is not None:
                    continue
                raw = bytes(raw)
                item = {
                    "device_id": dev,
                    "seq": seq,
                    "time": rtime,
                    "card_no": card_no,
                    "card_atc": atc,
                    "amount": amount,
                    "psam_tid": raw[14:20].hex(),
                    "psam_serial": int.from_bytes(raw[20:24], "big"),
                    "outcome": (
                        None if okind is None else {"kind": okind, "device_id": odev, "seq": oseq}
                    ),
                    "by_counter": None,
                }
                if okind is None and atc is not None:
                    item["by_counter"] = self._by_counter(ex, card_no, atc, raw)
                out.append(item)
        return out

    @staticmethod
    def _by_counter(ex, card_no, atc, raw):
        """Clearing from the card's counters: an open intent whose card booked its next debit
        (counter + 1) here. That debit's balance before equals the intent's balance after: the
        intent's DEBIT was executed ('debited'); equals its balance before: it was not
        ('not_debited'); anything else (a load or another operator's debit between): 'unknown'.
        None while the card has not come back."""
        row = ex.one(
            "SELECT device_id, seq, raw FROM records WHERE card_no = ? AND card_atc = ? "
            "AND kind IN (1, 2) AND tsn_dup = 0 ORDER BY device_id, seq LIMIT 1",
            (card_no, atc + 1),
        )
        if row is None:
            return None
        nxt = bytes(row[2])
        before_next = int.from_bytes(nxt[41:44], "big")
        if before_next == int.from_bytes(raw[44:47], "big"):
            verdict = "debited"
        elif before_next == int.from_bytes(raw[41:44], "big"):
            verdict = "not_debited"
        else:
            verdict = "unknown"
        return {"verdict": verdict, "device_id": row[0], "seq": row[1]}

    def unconfirmed(self, device_id=None):
        """The unconfirmed debits: intents with no outcome yet (see intents())."""
        return self.intents(device_id, open_only=True)

    def boots(self, device_id=None):
        """BOOT records, oldest first per device, decoded: reset cause (brown-out included),
        the parts that failed to start, PSAM state, unconfirmed debits at that start."""
        import bootmode
        import record

        sql = "SELECT device_id, seq, rtime, raw FROM records WHERE kind = ?"
        args = (record.BOOT,)
        if device_id is not None:
            sql += " AND device_id = ?"
            args += (device_id,)
        sql += " ORDER BY device_id, seq"
        with self._tx(write=False) as ex:
            rows = ex.all(sql, args)
        out = []
        for dev, seq, rtime, raw in rows:
            try:
                info = bootmode.boot_info(record.decode(bytes(raw)))
            except record.RecordError:
                continue  # stored records decoded once already; nothing else to say
            out.append(dict(info, device_id=dev, seq=seq, time=rtime))
        return out

    # --- clearing reports ------------------------------------------------------------------

    def add_loads(self, loads):
        """Loads from the top-up system: [(card_no hex, validator time, amount fen, source)].
        They explain a balance that went up between two of a card's debits."""
        with self._tx() as ex:
            ex.many(
                "INSERT INTO loads (card_no, ltime, amount, source) VALUES (?, ?, ?, ?)",
                [(c, int(t), int(a), src) for c, t, a, src in loads],
            )

    def _money(self, ex, extra="", args=()):
        return ex.all(
            "SELECT device_id, seq, rtime, card_no, card_atc, amount, tac_status, exceptions, "
            "tsn_dup, raw FROM records WHERE kind IN (1, 2)" + extra + " ORDER BY device_id, seq",
            args,
        )

    def balance_rises(self):
        """Purchases whose balance before is above the balance after the same card's previous
        debit (card counter one lower) with no load of exactly the difference in between: money
        the card did not have. -> [dict(device_id, seq, card_no, card_atc, rise)]."""
        by_card = {}
        with self._tx(write=False) as ex:
            for dev, seq, t, card, atc, _amt, _tac, _exc, _dup, raw in self._money(
                ex, " AND tsn_dup = 0 AND card_atc IS NOT NULL"
            ):
                raw = bytes(raw)
                bb = int.from_bytes(raw[41:44], "big")
                ba = int.from_bytes(raw[44:47], "big")
                by_card.setdefault(card, {})[atc] = (dev, seq, t, bb, ba)
            out = []
            for card, chain in by_card.items():
                for atc, (dev, seq, t, bb, _ba) in chain.items():
                    prev = chain.get(atc - 1)
                    if prev is None or bb <= prev[4]:
                        continue
                    rise = bb - prev[4]
                    loaded = ex.one(
                        "SELECT COALESCE(SUM(amount), 0) FROM loads "
                        "WHERE card_no = ? AND ltime >= ? AND ltime <= ?",
                        (card, prev[2], t),
                    )[0]
                    if loaded != rise:
                        out.append(
                            {
                                "device_id": dev,
                                "seq": seq,
                                "card_no": card,
                                "card_atc": atc,
                                "rise": rise,
                                "loaded": loaded,
                            }
                        )
        return sorted(out, key=lambda r: (r["device_id"], r["seq"]))

    def exceptions(self, device_id=None):
        """Every purchase held for audit but excluded from settlement (or reported: a clock that
        was not set), with its reasons: the stored exceptions plus the balance rises.
        -> [dict(device_id, seq, time, card_no, card_atc, amount, tac_status, reasons)]."""
        rises = {(r["device_id"], r["seq"]): r for r in self.balance_rises()}
        extra, args = " AND (exceptions IS NOT NULL OR tsn_dup = 1", ()
        if rises:
            extra += " OR (device_id, seq) IN (%s)" % ", ".join("(?, ?)" for _ in rises)
            args = tuple(x for k in rises for x in k)
        extra += ")"
        if device_id is not None:
            extra += " AND device_id = ?"
            args += (device_id,)
        out = []
        with self._tx(write=False) as ex:
            for dev, seq, t, card, atc, amt, tac, exc, _dup, _raw in self._money(ex, extra, args):
                reasons = exc.split(",") if exc else []
                if (dev, seq) in rises:
                    reasons.append("balance_up")
                out.append(
                    {
                        "device_id": dev,
                        "seq": seq,
                        "time": t,
                        "card_no": card,
                        "card_atc": atc,
                        "amount": amt,
                        "tac_status": tac,
                        "reasons": reasons,
                        "settles": not (set(reasons) - REPORT_ONLY),
                    }
                )
        return out

    def recheck(self, clearing, device_id=None, now=None):
        """Clear again the purchases whose TAC could not be checked or did not verify (an
        issuer's key provided later, a key file corrected): their tac_status and clearing
        exceptions are recomputed; the clash and PSAM exceptions stay as they were.
        -> {"checked": n, "changed": n, "cleared": n (now without an excluding exception)}."""
        import record

        from . import app as app_mod

        keep = {"tsn_dup", "atc_dup", "psam"}
        sql = (
            "SELECT r.device_id, r.seq, r.raw, r.exceptions, r.tac_status, d.created "
            "FROM records r JOIN devices d ON d.device_id = r.device_id "
            "WHERE r.kind IN (1, 2) AND r.tac_status IN ('bad', 'nokey', 'unchecked')"
        )
        args = ()
        if device_id is not None:
            sql += " AND r.device_id = ?"
            args = (device_id,)
        out = {"checked": 0, "changed": 0, "cleared": 0}
        with self._tx() as ex:
            for dev, seq, raw, exc, tac, created in ex.all(sql, args):
                try:
                    rec = record.decode(bytes(raw))
                except record.RecordError:
                    continue
                out["checked"] += 1
                new_tac, new_exc = clearing.check(
                    rec, created - EPOCH_2000 - app_mod.PROVISION_SLACK, now
                )
                new_exc += [e for e in (exc or "").split(",") if e in keep]
                joined = ",".join(new_exc) or None
                if new_tac != tac or joined != exc:
                    out["changed"] += 1
                    if not set(new_exc) - REPORT_ONLY:
                        out["cleared"] += 1
                    ex.run(
                        "UPDATE records SET tac_status = ?, exceptions = ? "
                        "WHERE device_id = ? AND seq = ?",
                        (new_tac, joined, dev, seq),
                    )
        log.info("recheck: %s", out)
        return out

    def settlement(self, device_id=None):
        """What clears: purchases with a verified TAC and no exception that excludes them.
        -> dict(records, amount, excluded, excluded_amount, reported)."""
        excluded = {}
        reported = 0
        for r in self.exceptions(device_id):
            if r["settles"]:
                reported += 1
            else:
                excluded[(r["device_id"], r["seq"])] = r["amount"] or 0
        extra, args = " AND tsn_dup = 0", ()
        if device_id is not None:
            extra += " AND device_id = ?"
            args = (device_id,)
        n = total = 0
        with self._tx(write=False) as ex:
            for dev, seq, _t, _c, _a, amt, tac, _e, _d, _r in self._money(ex, extra, args):
                if (dev, seq) in excluded or tac != "ok":
                    continue
                n += 1
                total += amt or 0
        return {
            "records": n,
            "amount": total,
            "excluded": len(excluded),
            "excluded_amount": sum(excluded.values()),
            "reported": reported,
        }

    EXPORT_COLUMNS = (
        "device_id",
        "seq",
        "received",
        "kind",
        "rtime",
        "psam_tid",
        "psam_serial",
        "card_no",
        "amount",
        "tac_status",
        "tsn_dup",
        "card_atc",
        "flags",
        "exceptions",
        "raw",
    )

    def export(self, device_id=None):
        """Rows as tuples in EXPORT_COLUMNS order (raw as hex), ordered by device and seq."""
        cols = ", ".join(self.EXPORT_COLUMNS)
        sql = "SELECT %s FROM records" % cols
        args = ()
        if device_id is not None:
            sql += " WHERE device_id = ?"
            args = (device_id,)
        sql += " ORDER BY device_id, seq"
        with self._tx(write=False) as ex:
            rows = ex.all(sql, args)
        for r in rows:
            yield tuple(r[:-1]) + (bytes(r[-1]).hex(),)


class _Exec:
    """Runs `?`-style SQL on either driver (psycopg wants `%s`)."""

    def __init__(self, conn, dialect):
        self.conn = conn
        self.pg = dialect == "pg"

    def _sql(self, sql):
        return sql.replace("?", "%s") if self.pg else sql

    def run(self, sql, args=()):
        cur = self.conn.execute(self._sql(sql), args)
        return cur.rowcount

    def many(self, sql, rows):
        if self.pg:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    def one(self, sql, args=()):
        return self.conn.execute(self._sql(sql), args).fetchone()

    def all(self, sql, args=()):
        return self.conn.execute(self._sql(sql), args).fetchall()


def server_time():
    """Now in validator time (seconds since 2000-01-01 UTC)."""
    return int(time.time()) - EPOCH_2000


def parse_url(url):
    """For messages: the URL without its password."""
    p = urlparse(url)
    if p.password:
        return url.replace(":" + p.password + "@", ":***@")
    return url
