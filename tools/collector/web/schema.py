"""The dashboard's tables, versioned in `web_schema` (like bundles.py's `param_schema`), so the
collector's record migrations and these evolve apart. `ensure(store)` is idempotent."""

SCHEMA = [
    (
        1,
        [
            # Accounts and sessions (auth.py). A session row holds a hash of the cookie's token.
            "CREATE TABLE IF NOT EXISTS web_users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, "
            "role TEXT NOT NULL, created {big} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS web_sessions (token TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "csrf TEXT NOT NULL, expires {big} NOT NULL)",
            # Rollup (rollup.py): how far each device's records are summarised (its contiguous
            # sequence), revenue per local day (days since 2000-01-01), device, route, card type,
            # and the same without the device (the Money page reads only that one).
            "CREATE TABLE IF NOT EXISTS web_rolled (device_id {big} PRIMARY KEY, "
            "upto {big} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS web_daily (day INTEGER NOT NULL, "
            "device_id {big} NOT NULL, "
            "route INTEGER NOT NULL, card_type INTEGER NOT NULL, n {big} NOT NULL, "
            "amount {big} NOT NULL, PRIMARY KEY (device_id, day, route, card_type))",
            "CREATE TABLE IF NOT EXISTS web_daily_fleet (day INTEGER NOT NULL, "
            "route INTEGER NOT NULL, card_type INTEGER NOT NULL, n {big} NOT NULL, "
            "amount {big} NOT NULL, PRIMARY KEY (day, route, card_type))",
            # One row per device: what its records said last (route, start, faults, parameters,
            # clock), for the Fleet page.
            "CREATE TABLE IF NOT EXISTS web_device (device_id {big} PRIMARY KEY, route INTEGER, "
            "last_rtime {big}, boot_time {big}, boot_cause TEXT, faults TEXT, psam_ok INTEGER, "
            "boots {big} NOT NULL DEFAULT 0, param_version {big}, blacklist_version {big}, "
            "clock_unset {big} NOT NULL DEFAULT 0, clock_changes {big} NOT NULL DEFAULT 0, "
            "purchases {big} NOT NULL DEFAULT 0, amount {big} NOT NULL DEFAULT 0)",
            "CREATE INDEX IF NOT EXISTS web_device_route ON web_device (route)",
            # A device's history: every record that is not money (starts, parameters, clock,
            # refusals, journal notes), for its page.
            "CREATE TABLE IF NOT EXISTS web_events (device_id {big} NOT NULL, seq {big} NOT NULL, "
            "kind INTEGER NOT NULL, rtime {big}, detail TEXT, PRIMARY KEY (device_id, seq))",
            # Unconfirmed debits: intents whose outcome is not held (yet).
            "CREATE TABLE IF NOT EXISTS web_open (card_no TEXT NOT NULL, card_atc {big} NOT NULL, "
            "device_id {big} NOT NULL, seq {big} NOT NULL, rtime {big}, amount {big}, "
            "PRIMARY KEY (card_no, card_atc))",
            # An administrator's review of a clearing exception.
            "CREATE TABLE IF NOT EXISTS web_review (device_id {big} NOT NULL, seq {big} NOT NULL, "
            "status TEXT NOT NULL, note TEXT, by_user TEXT NOT NULL, at {big} NOT NULL, "
            "PRIMARY KEY (device_id, seq))",
        ],
    )
]

# Indexes on the collector's own `records`, for the Money page's exception list and counts over a
# date range. Re-checked at every start (IF NOT EXISTS): a migration of `records` that rebuilds
# the table (partitioning) gets them back. The first start on a big table builds it (writes
# wait meanwhile); on PostgreSQL it can be made beforehand with CREATE INDEX CONCURRENTLY.
INDEXES = [
    "CREATE INDEX IF NOT EXISTS web_records_exceptions "
    "ON records (rtime, kind, exceptions, amount) "
    "WHERE exceptions IS NOT NULL",
]


def ensure(store):
    if getattr(store, "_web_schema", False):
        return
    big = "INTEGER" if store.dialect == "sqlite" else "BIGINT"
    with store._tx() as ex:
        if store.dialect == "pg":
            ex.run("SELECT pg_advisory_xact_lock(734203)")
        ex.run("CREATE TABLE IF NOT EXISTS web_schema (version INTEGER NOT NULL)")
        have = ex.one("SELECT MAX(version) FROM web_schema")[0] or 0
        for version, statements in SCHEMA:
            if version <= have:
                continue
            for sql in statements:
                ex.run(sql.format(big=big))
            ex.run("INSERT INTO web_schema (version) VALUES (?)", (version,))
        for sql in INDEXES:
            ex.run(sql)
    store._web_schema = True
