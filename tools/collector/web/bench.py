"""The dashboard's page times with a year of a 1,000-bus fleet in PostgreSQL (`make bench`,
stage `dashboard`; BENCHMARKS.md). Not a test: it builds millions of rows.

    python -m tools.collector.web.bench [--buses 1000] [--days 365] [--taps 10] [--reps 5]

What is generated, by SQL in the server (tools/collector's own schema, then the dashboard's):
- `buses` devices on 100 routes, each with `taps` purchases a day for `days` days (records with
  route, card type, UTC offset in their bytes; one purchase a bus and day with a clearing
  exception, so the exception list holds buses x days rows, what a real fleet at ~300 taps a bus
  and day would hold at a 0.3 % exception rate);
- the summary tables as rollup.py would fill them (by one GROUP BY over the records), two
  history rows a bus and day, one open intent a bus, 12 bundles rolled out to 10 groups;
- then one more day of records for the whole fleet, summarised by rollup.rollup() (timed: the
  daily cost of keeping the summaries), and a check that the summaries equal the records.
Each page is then fetched `reps` times over HTTP (logged in, uvicorn on loopback): median ms.
"""

import argparse
import json
import statistics
import time

DAY = 86400
TZ = 8 * 3600
EPOCH_2000 = 946684800
PW = "bench password 1"


def _gen_records(ex, first_dev, last_dev, s_from, s_to, taps, t0):
    ex.run(
        "INSERT INTO records (device_id, seq, received, raw, kind, rtime, psam_tid, psam_serial, "
        "card_no, amount, tsn_dup, tac_status, card_atc, flags, exceptions) "
        "SELECT d, s, 0, set_byte(set_byte(set_byte(set_byte(set_byte("
        "decode(repeat('00', 64), 'hex'), 1, 1), 3, mod(s, 4)::int), "
        "53, ((1 + mod(d, 100)) >> 8)::int), "
        "54, ((1 + mod(d, 100)) & 255)::int), 59, 160), "
        "1, ? + ((s - 1) / ?) * 86400 + 21600 + mod(s - 1, ?) * (57600 / ?), NULL, NULL, "
        "lpad(mod(d * 7919 + s, 200000)::text, 20, '0'), 100 + mod(s, 3) * 50, 0, "
        "CASE WHEN mod(s, ?) = 3 THEN 'bad' ELSE 'ok' END, s, 0, "
        "CASE WHEN mod(s, ?) = 3 THEN 'tac_bad' END "
        "FROM generate_series(?::bigint, ?::bigint) d, generate_series(?::bigint, ?::bigint) s",
        (t0, taps, taps, taps, taps, taps, first_dev, last_dev, s_from, s_to),
    )


def generate(store, buses, days, taps, say=print):
    """The year, straight into the tables. -> (t0, seconds)."""
    from . import schema

    schema.ensure(store)
    from .. import bundles

    bundles.ensure(store)
    day0 = (int(time.time()) - EPOCH_2000) // DAY - days - 1
    t0 = day0 * DAY - TZ  # validator time of local midnight, day0
    started = time.monotonic()
    n = days * taps
    with store._tx() as ex:
        ex.run(
            "INSERT INTO devices (device_id, secret, name, counter, contig, created, last_seen, "
            "last_skew) SELECT d, '\\x00'::bytea, 'bus ' || d, 1, ?, 0, ?, 0 "
            "FROM generate_series(1, ?) d",
            (n, int(time.time()), buses),
        )
    step = 50
    for first in range(1, buses + 1, step):
        with store._tx() as ex:
            _gen_records(ex, first, min(buses, first + step - 1), 1, n, taps, t0)
        if first % 200 == 1:
            say(
                "dashboard bench: records of buses %d.. (%.0f s)"
                % (first, time.monotonic() - started)
            )
    with store._tx() as ex:
        ex.run(
            "INSERT INTO web_daily (day, device_id, route, card_type, n, amount) "
            "SELECT (rtime + ?) / 86400, device_id, get_byte(raw, 53) * 256 + get_byte(raw, 54), "
            "get_byte(raw, 3), COUNT(*), SUM(amount) FROM records "
            "WHERE kind IN (1, 2) AND tsn_dup = 0 GROUP BY 1, 2, 3, 4",
            (TZ,),
        )
        ex.run(
            "INSERT INTO web_daily_fleet (day, route, card_type, n, amount) "
            "SELECT day, route, card_type, SUM(n), SUM(amount) FROM web_daily GROUP BY 1, 2, 3"
        )
        ex.run(
            "INSERT INTO web_device (device_id, route, last_rtime, boot_time, boot_cause, "
            "psam_ok, boots, param_version, blacklist_version, purchases, amount) "
            "SELECT device_id, 1 + mod(device_id, 100), MAX(day) * 86400, MAX(day) * 86400, "
            "'power-on', 1, COUNT(DISTINCT day), 12, 40, SUM(n), SUM(amount) FROM web_daily "
            "GROUP BY device_id"
        )
        ex.run("INSERT INTO web_rolled (device_id, upto) SELECT device_id, contig FROM devices")
        ex.run(
            "INSERT INTO web_events (device_id, seq, kind, rtime, detail) "
            "SELECT d, 100000000 + k, CASE WHEN mod(k, 2) = 0 THEN 6 ELSE 4 END, "
            "? + k / 2 * 86400, "
            "'generated' FROM generate_series(1, ?) d, generate_series(0, ?) k",
            (t0, buses, 2 * days - 1),
        )
        ex.run(
            "INSERT INTO web_open (card_no, card_atc, device_id, seq, rtime, amount) "
            "SELECT 'open' || d, 1, d, 1, ? + d, 200 FROM generate_series(1, ?) d",
            (t0, buses),
        )
        for v in range(1, 13):
            ex.run(
                "INSERT INTO bundles (target, version, base, data, published) "
                "VALUES (0, ?, 0, ?, ?)",
                (v, bytes(4096), int(time.time()) - (13 - v) * 86400 * 30),
            )
            for g in range(1, 11):
                ex.run(
                    "INSERT INTO param_rollout (version, grp, started) VALUES (?, ?, ?)",
                    (v, g, int(time.time())),
                )
        ex.run(
            "INSERT INTO device_groups (device_id, grp) SELECT d, 1 + mod(d, 10) "
            "FROM generate_series(1, ?) d",
            (buses,),
        )
        ex.run(
            "INSERT INTO device_params (device_id, have, asked) SELECT d, "
            "CASE WHEN mod(d, 10) = 0 THEN 11 ELSE 12 END, ? FROM generate_series(1, ?) d",
            (int(time.time()), buses),
        )
    vacuum(store)
    return t0, time.monotonic() - started


def vacuum(store):
    """VACUUM ANALYZE (outside a transaction): the state autovacuum keeps a live database in
    (statistics, visibility map: index-only scans), not a table just bulk-loaded."""
    import psycopg

    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def one_more_day(store, buses, days, taps, t0):
    """A day of the fleet's records, then rollup.rollup(): -> (records, seconds)."""
    from . import rollup

    n = days * taps
    step = 100
    for first in range(1, buses + 1, step):
        with store._tx() as ex:
            _gen_records(ex, first, min(buses, first + step - 1), n + 1, n + taps, taps, t0)
    with store._tx() as ex:
        ex.run("UPDATE devices SET contig = ?", (n + taps,))
    t = time.monotonic()
    got = rollup.rollup(store)
    return got, time.monotonic() - t


def check(store):
    """The summaries equal the records (revenue and count)."""
    with store._tx(write=False) as ex:
        a = ex.one(
            "SELECT COUNT(*), SUM(amount) FROM records WHERE kind IN (1, 2) AND tsn_dup = 0"
        )
        b = ex.one("SELECT SUM(n), SUM(amount) FROM web_daily_fleet")
    return tuple(map(int, a)) == tuple(map(int, b)), a


def time_pages(store, reps, buses):
    import httpx

    from ..bench import ServerThread
    from . import auth
    from .pages import create_web_app

    auth.add_user(store, "bench", PW, "administrator")
    app = create_web_app(store, roll_every=1e9)
    with store._tx(write=False) as ex:
        last = ex.one("SELECT MAX(day) FROM web_daily_fleet")[0]
    from .rollup import day_text

    pages = {
        "fleet": "/fleet",
        "fleet_route": "/fleet?route=7",
        "device": "/device/%d" % (buses // 2),
        "money_30d": "/money",
        "money_year": "/money?from=%s&to=%s" % (day_text(last - 365), day_text(last)),
        "params": "/params",
    }
    out = {}
    with ServerThread(app) as srv:
        base = "https://127.0.0.1:%d" % srv.port
        # The cookie is Secure: the client talks plain HTTP on loopback but keeps it as HTTPS.
        with httpx.Client(base_url="http://127.0.0.1:%d" % srv.port) as c:
            r = c.get("/login")
            import re

            token = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
            r = c.post(
                "/login",
                data={"csrf": token, "user": "bench", "password": PW},
                cookies={"tu_login": r.cookies.get("tu_login") or token},
            )
            session = r.cookies.get("tu_session")
            assert session, "bench login failed (%d)" % r.status_code
            for name, path in pages.items():
                times = []
                for _ in range(reps):
                    t = time.monotonic()
                    r = c.get(path, cookies={"tu_session": session})
                    times.append((time.monotonic() - t) * 1000)
                    assert r.status_code == 200, (path, r.status_code)
                out[name] = round(statistics.median(times), 1)
                out[name + "_bytes"] = len(r.content)
        del base
    return out


def run(url, buses=1000, days=365, taps=10, reps=5, say=print):
    from ..db import Store

    store = Store(url)
    try:
        t0, gen_s = generate(store, buses, days, taps, say)
        say("dashboard bench: generated in %.0f s" % gen_s)
        n_day, roll_s = one_more_day(store, buses, days, taps, t0)
        ok, totals = check(store)
        with store._tx(write=False) as ex:
            sizes = {
                t: ex.one("SELECT COUNT(*) FROM %s" % t)[0]
                for t in ("records", "web_daily", "web_daily_fleet", "web_events")
            }
            exc = ex.one("SELECT COUNT(*) FROM records WHERE exceptions IS NOT NULL")[0]
        pages = time_pages(store, reps, buses)
    finally:
        store.close()
    return {
        "dashboard_buses": buses,
        "dashboard_days": days,
        "dashboard_taps_per_bus_day": taps,
        "dashboard_reps": reps,
        "dashboard_rows": sizes,
        "dashboard_exceptions": exc,
        "dashboard_generate_s": round(gen_s, 1),
        "dashboard_rollup_day_records": n_day,
        "dashboard_rollup_day_s": round(roll_s, 2),
        "dashboard_rollup_records_per_s": round(n_day / roll_s) if roll_s else None,
        "dashboard_summaries_match": ok,
        "dashboard_page_ms": pages,
        "dashboard_page_ms_max": max(v for k, v in pages.items() if not k.endswith("_bytes")),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buses", type=int, default=1000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--taps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--db", help="a PostgreSQL URL (default: a throw-away server)")
    args = ap.parse_args(argv)
    if args.db:
        res = run(args.db, args.buses, args.days, args.taps, args.reps)
    else:
        from tests.host.pg import PgServer

        with PgServer(fast=True) as pg:
            res = run(pg.create_db("dash"), args.buses, args.days, args.taps, args.reps)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
