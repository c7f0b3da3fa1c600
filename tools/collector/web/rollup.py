"""Summary tables from `records`, filled incrementally (the pages read only these and indexed
lookups, never a year of records).

Each device is summarised up to its contiguous sequence (`devices.contig`): the records at or
below it never change, so a record is counted exactly once, whatever is re-sent. Records above a
gap wait until the gap is filled (or declared lost by the validator's floor). Up to BATCH devices a
transaction: the sums, the device's row, its history and the open intents move together with
`web_rolled.upto`, so a rollup cut short (a crash, a second rollup beside it) counts nothing twice.

Revenue is what the buses took: purchases (PURCHASE, PURCHASE_RECOVERED) that are not a repeated
PSAM serial (tsn_dup = 0), per local day of the sale (the UTC offset in its `reason` byte, the
collector's zone when unknown), route and card type. What clearing keeps out is on the Money
page's exception list, read live from `records` through its partial index.
"""

import logging
import time

import bootmode
import record
import timeutil

from . import schema

log = logging.getLogger("collector.web.rollup")
DAY = 86400
CHUNK = 5000  # records of one device per pass
BATCH = 200  # devices per transaction
EVENT_KINDS = (3, 4, 5, 6, 7)  # REFUSED, PARAM_ACTIVATION, CLOCK_CHANGE, BOOT, JOURNAL_EVENT
_UPSERT_DAILY = (
    "INSERT INTO web_daily (day, device_id, route, card_type, n, amount) "
    "VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (device_id, day, route, card_type) DO UPDATE SET n = web_daily.n + excluded.n, "
    "amount = web_daily.amount + excluded.amount"
)
_UPSERT_FLEET = (
    "INSERT INTO web_daily_fleet (day, route, card_type, n, amount) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (day, route, card_type) DO UPDATE SET n = web_daily_fleet.n + excluded.n, "
    "amount = web_daily_fleet.amount + excluded.amount"
)
_DEVICE_COLS = (
    "route",
    "last_rtime",
    "boot_time",
    "boot_cause",
    "faults",
    "psam_ok",
    "boots",
    "param_version",
    "blacklist_version",
    "clock_unset",
    "clock_changes",
    "purchases",
    "amount",
)


def local_day(rtime, reason, default_tz=timeutil.DEFAULT_TZ_SECONDS):
    """Days since 2000-01-01 of a sale, in the UTC offset it was sold in."""
    tz = record.tz_of(reason or 0)
    return (rtime + (default_tz if tz is None else tz)) // DAY


def day_text(day):
    """'YYYY-MM-DD' of a day number."""
    y, m, d = time.gmtime(day * DAY + 946684800)[:3]
    return "%04d-%02d-%02d" % (y, m, d)


def rollup(store, device_id=None, limit=None):
    """Summarise what is new; -> number of records read. limit: stop after about that many
    (the rest next time)."""
    schema.ensure(store)
    sql = (
        "SELECT d.device_id, d.contig, COALESCE(w.upto, 0) FROM devices d "
        "LEFT JOIN web_rolled w ON w.device_id = d.device_id WHERE d.contig > COALESCE(w.upto, 0)"
    )
    args = ()
    if device_id is not None:
        sql += " AND d.device_id = ?"
        args = (device_id,)
    with store._tx(write=False) as ex:
        todo = {dev: [upto, contig] for dev, contig, upto in ex.all(sql, args)}
    total = 0
    while todo and (limit is None or total < limit):
        devs = sorted(todo)
        for i in range(0, len(devs), BATCH):
            items = [
                (d, todo[d][0], min(todo[d][1], todo[d][0] + CHUNK)) for d in devs[i : i + BATCH]
            ]
            done = _batch(store, items)
            for dev, _upto, top in items:
                if dev not in done:  # another rollup moved it on: its business now
                    del todo[dev]
                    continue
                total += done[dev]
                todo[dev][0] = top
                if top >= todo[dev][1]:
                    del todo[dev]
    return total


def _batch(store, items):
    """Records (upto, top] of each (device, upto, top), in one transaction (a few statements for
    all of them); a device another rollup moved on meanwhile is skipped. -> {device: records}."""
    daily = {}
    events = []
    intents = []
    outcomes = []
    done = {}
    devs = [d for d, _u, _t in items]
    marks = ", ".join("?" for _ in devs)
    with store._tx() as ex:
        if store.dialect == "pg":
            ex.run("SELECT pg_advisory_xact_lock(734204)")  # one rollup at a time, fleet-wide
        rolled = dict(
            ex.all("SELECT device_id, upto FROM web_rolled WHERE device_id IN (%s)" % marks, devs)
        )
        states = {
            r[0]: dict(zip(_DEVICE_COLS, r[1:]))
            for r in ex.all(
                "SELECT device_id, %s FROM web_device WHERE device_id IN (%s)"
                % (", ".join(_DEVICE_COLS), marks),
                devs,
            )
        }
        dev_rows = {"update": [], "insert": []}
        rolled_rows = {"update": [], "insert": []}
        for dev, upto, top in items:
            if rolled.get(dev, 0) != upto:
                continue
            st = states.get(dev) or {c: None for c in _DEVICE_COLS}
            for c in ("boots", "clock_unset", "clock_changes", "purchases", "amount"):
                st[c] = st[c] or 0
            rows = ex.all(
                "SELECT seq, kind, rtime, amount, card_no, card_atc, tsn_dup, flags, raw "
                "FROM records WHERE device_id = ? AND seq > ? AND seq <= ? ORDER BY seq",
                (dev, upto, top),
            )
            for seq, kind, rtime, amount, card_no, atc, dup, flags, raw in rows:
                raw = bytes(raw)
                if rtime is not None and (st["last_rtime"] or 0) < rtime:
                    st["last_rtime"] = rtime
                if (flags or 0) & 0x04:
                    st["clock_unset"] += 1
                if kind in (1, 2, 8, 9):
                    st["route"] = int.from_bytes(raw[53:55], "big")
                if kind in (1, 2):
                    outcomes.append((card_no, atc))
                    if dup:
                        continue
                    key = (local_day(rtime or 0, raw[59]), dev, st["route"], raw[3])
                    n, a = daily.get(key, (0, 0))
                    daily[key] = (n + 1, a + (amount or 0))
                    st["purchases"] += 1
                    st["amount"] += amount or 0
                elif kind == 9:
                    outcomes.append((card_no, atc))
                elif kind == 8:
                    if card_no is not None and atc is not None:
                        intents.append((card_no, atc, dev, seq, rtime, amount))
                elif kind in EVENT_KINDS:
                    events.append((dev, seq, kind, rtime, _event(st, kind, rtime, raw)))
            values = tuple(st[c] for c in _DEVICE_COLS)
            if dev in states:
                dev_rows["update"].append(values + (dev,))
            else:
                dev_rows["insert"].append((dev,) + values)
            (rolled_rows["update"] if dev in rolled else rolled_rows["insert"]).append((top, dev))
            done[dev] = len(rows)
        # executemany: one round trip a statement on PostgreSQL (psycopg pipelines it).
        if daily:
            ex.many(_UPSERT_DAILY, [k + v for k, v in daily.items()])
            fleet = {}
            for (day, _dev, route, ctype), (n, a) in daily.items():
                f = fleet.get((day, route, ctype), (0, 0))
                fleet[(day, route, ctype)] = (f[0] + n, f[1] + a)
            ex.many(_UPSERT_FLEET, [k + v for k, v in fleet.items()])
        if events:
            ex.many(
                "INSERT INTO web_events (device_id, seq, kind, rtime, detail) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (device_id, seq) DO NOTHING",
                events,
            )
        closed = {(c, a) for c, a in outcomes if c is not None and a is not None}
        if closed and ex.one("SELECT 1 FROM web_open LIMIT 1") is not None:
            ex.many("DELETE FROM web_open WHERE card_no = ? AND card_atc = ?", sorted(closed))
        for it in intents:
            if it[:2] in closed:
                continue
            # Its outcome may be held already (from another device, rolled up before).
            held = ex.one(
                "SELECT 1 FROM records WHERE card_no = ? AND card_atc = ? AND kind IN (1, 2, 9) "
                "LIMIT 1",
                it[:2],
            )
            if held is None:
                ex.run(
                    "INSERT INTO web_open (card_no, card_atc, device_id, seq, rtime, amount) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (card_no, card_atc) DO NOTHING",
                    it,
                )
        if dev_rows["update"]:
            ex.many(
                "UPDATE web_device SET %s WHERE device_id = ?"
                % ", ".join("%s = ?" % c for c in _DEVICE_COLS),
                dev_rows["update"],
            )
        if dev_rows["insert"]:
            ex.many(
                "INSERT INTO web_device (device_id, %s) VALUES (?%s)"
                % (", ".join(_DEVICE_COLS), ", ?" * len(_DEVICE_COLS)),
                dev_rows["insert"],
            )
        if rolled_rows["update"]:
            ex.many("UPDATE web_rolled SET upto = ? WHERE device_id = ?", rolled_rows["update"])
        if rolled_rows["insert"]:
            ex.many(
                "INSERT INTO web_rolled (upto, device_id) VALUES (?, ?)", rolled_rows["insert"]
            )
    return done


def _event(st, kind, rtime, raw):
    """A short, language-neutral description of a history record; updates the device's row."""
    if kind == 6:
        try:
            info = bootmode.boot_info(record.decode(raw))
        except record.RecordError as e:
            log.warning("BOOT record does not decode: %s", e)
            return "undecodable"
        st["boots"] += 1
        st["boot_time"] = rtime
        st["boot_cause"] = info["reset_cause"]
        st["faults"] = ",".join(info["faults"]) or None
        st["psam_ok"] = 1 if info["psam_ok"] else 0
        return "cause=%s faults=%s psam=%s unconfirmed=%d" % (
            info["reset_cause"],
            ",".join(info["faults"]) or "-",
            "ok" if info["psam_ok"] else "failed",
            info["unconfirmed"],
        )
    if kind == 4:
        st["param_version"] = int.from_bytes(raw[20:24], "big")
        st["blacklist_version"] = int.from_bytes(raw[44:47], "big")
        return "params=%d blacklist=%d" % (st["param_version"], st["blacklist_version"])
    if kind == 5:
        st["clock_changes"] += 1
        return "before=%d source=%d" % (int.from_bytes(raw[20:24], "big"), raw[59])
    if kind == 3:
        return "reason=%d card=%s" % (raw[59], raw[24:34].hex())
    return "journal"


def rebuild(store):
    """Forget the summaries and build them again (after `recheck`, or a restore)."""
    schema.ensure(store)
    with store._tx() as ex:
        for t in (
            "web_rolled",
            "web_daily",
            "web_daily_fleet",
            "web_device",
            "web_events",
            "web_open",
        ):
            ex.run("DELETE FROM %s" % t)
    return rollup(store)
