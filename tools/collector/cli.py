"""Command line of the collector.

    python -m tools.collector serve --db URL --port N [--host H] --tac-keys keys.json|test
    python -m tools.collector exceptions --db URL [--device ID]
    python -m tools.collector loads --db URL FILE.csv
    python -m tools.collector recheck --db URL --tac-keys FILE [--device ID]
    python -m tools.collector psam --db URL [--device ID] [--tid HEX ...] [--remove]
    python -m tools.collector masterkey --out FILE
    python -m tools.collector provision --db URL --device ID [--psam HEX] [--name NAME]
                                        [--master-key-file FILE] [--secret-stdin]
    python -m tools.collector publish --db URL FILE (--group G ... | --all) --param-key ID:HEX
    python -m tools.collector publish --db URL FILE --device ID         # legacy HMAC bundle
    python -m tools.collector rollout --db URL --version V (--group G ... | --all)
    python -m tools.collector groups --db URL --device ID --group G ...
    python -m tools.collector rollout-status --db URL
    python -m tools.collector export --db URL [--device ID] [--out FILE.csv]
                                     [--sheet [--lang zh] [--tz +08:00]]
    python -m tools.collector unconfirmed --db URL [--device ID] [--all]
    python -m tools.collector boots --db URL [--device ID]
    python -m tools.collector retention --db URL [--keep-months 3] [--export-dir DIR] [--apply]
    python -m tools.collector web --db URL [--port 8081]; user NAME --role R; rollup  (web/cli.py)

`unconfirmed` lists the unconfirmed debits: DEBIT_INTENT records with no outcome (PURCHASE,
PURCHASE_RECOVERED or DEBIT_VOID of the same card number and card counter, from any device).
They are not money until an outcome arrives or clearing settles them from the card's counters;
--all lists every intent with the outcome that closed it.

`exceptions` lists the purchases stored for audit but kept out of settlement, with their
reasons (bad or uncheckable TAC, amount above the fare tables, date outside the device's window,
balance arithmetic, a balance that rose with no load, a repeated PSAM serial or card counter, a
PSAM not registered to the device, a test record) and those only reported (sold on an unset
clock), then the unconfirmed debits; totals on stderr. `loads` imports the top-up system's loads
that explain a balance rise.

`publish` checks a bundle before storing it (tools/collector/bundles.py: parses, signature,
chunks, config, version above the published one and within bounds, size) and starts its rollout
with the groups given; `rollout` extends it, `rollout-status` shows who holds what
(docs/parameters.md "Publishing").

`boots` lists the validators' starts (BOOT records): the reset cause (power-on, watchdog,
brownout, soft, hard, ...), the parts that failed to start, and a count per device and cause;
brown-outs point at a modem's current bursts on a weak supply, watchdog resets at a hang.

`retention` keeps --keep-months months of records online (docs/scaling.md section 4): each
older month is exported to --export-dir as CSV, the export verified against the rows, and the
month dropped (PostgreSQL: its partition; SQLite: its rows) only if none of its debits is still
unconfirmed and every purchase's TAC was checked; otherwise it is refused with the reason (exit
3). It also makes the coming months' partitions on PostgreSQL. Without --apply: the plan.

Device keys are derived from a master key outside the database (tools/collector/keys.py):
--master-key-file FILE (0600), $COLLECTOR_MASTER_KEY_FILE or $COLLECTOR_MASTER_KEY (hex), or
an HSM/KMS through --key-source module:name. `serve` checks the master key against the
database's key check values before it listens.

--db takes ``sqlite:///path`` (default ``sqlite:///collector.sqlite3``), a bare path, or
``postgresql://user@host:port/dbname``.
"""

import argparse
import csv
import logging
import os
import sys

from .. import record_sheet, versions
from . import bundles
from .db import DEFAULT_URL, Store, parse_url
from .web import cli as web_cli


def _serve(args):
    from . import server
    from .app import RateLimit, Service
    from .clearing import Clearing

    logging.getLogger().setLevel(args.log_level.upper())
    clearing = Clearing(tac_keys(args.tac_keys), max_amount=args.max_amount)
    keys = _keys(args)
    store = Store(args.db, keys=keys)  # migrates once, before any worker starts
    try:
        store.check_keys()
    finally:
        store.close()
    if args.workers > 1 and store.dialect == "sqlite":
        logging.getLogger("collector").warning(
            "%d workers on SQLite: one writer at a time; PostgreSQL scales", args.workers
        )
    sock = server.listen(args.host, args.port)
    port = sock.getsockname()[1]
    # First stdout line, like the simulators: scripts started with --port 0 read it.
    print("PORT %d" % port, flush=True)
    logging.getLogger("collector").info(
        "collector on %s:%d, %d workers, database %s",
        args.host,
        port,
        args.workers,
        parse_url(args.db),
    )
    limits = server.Limits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        max_inflight=args.max_inflight,
    )

    def make_service():
        svc = Service(
            Store(args.db, migrate=False, keys=keys),
            clearing=clearing,
            rate=RateLimit(args.rate, args.burst) if args.rate > 0 else None,
        )
        svc.offer_ttl = 2.0
        return svc

    return server.run(sock, make_service, limits, threads=args.threads, workers=args.workers)


def tac_keys(spec):
    """--tac-keys: a key file (0600), or 'test' for the simulators' documented test keys.
    Clearing is on by default: without keys the collector does not start."""
    from . import clearing

    if not spec:
        raise ValueError(
            "clearing needs the issuers' TAC keys: --tac-keys FILE (JSON, mode 0600, "
            "docs/protocol.md section 10) or $COLLECTOR_TAC_KEYS; --tac-keys test for the "
            "simulators' test keys"
        )
    if spec == "test":
        logging.getLogger("collector").warning(
            "TAC keys: the published TEST keys (simulated cards only; real cards fail)"
        )
        return clearing.simulator_keys()
    return clearing.load_key_file(spec)


def _tz(args):
    """The --tz of a report command in seconds (times print as local time with the zone)."""
    return record_sheet.parse_tz(getattr(args, "tz", None) or "+08:00")


def _when(args, t):
    return record_sheet.local_iso(t, _tz(args))


def _yuan(fen):
    return "-" if fen is None else record_sheet.yuan(fen)


# The report commands' words in Chinese (--lang zh): the column names, yes/no and the summary
# lines; exception reasons as the dashboard names them (tools/collector/web/i18n.py).
ZH = {
    "device seq local_time card_no card_atc yuan tac settles reasons": (
        "设备 序号 本地时间 卡号 卡计数器 金额(元) TAC 结算 原因"
    ),
    "device seq local_time card_no card_atc yuan psam_tid psam_serial outcome": (
        "设备 序号 本地时间 卡号 卡计数器 金额(元) PSAM终端号 PSAM流水 结果"
    ),
    "device seq local_time reset_cause faults psam unconfirmed": (
        "设备 序号 本地时间 复位原因 故障 PSAM 未确认扣款"
    ),
    "yes": "是",
    "NO": "否",
    "ok": "正常",
    "FAILED": "故障",
    "UNCONFIRMED": "未确认",
    "UNCONFIRMED %s (card counter +1 at device %d seq %d)": (
        "未确认 %s (卡计数器+1: 设备 %d 序号 %d)"
    ),
    "DEBITED": "已扣款",
    "NOT_DEBITED": "未扣款",
    "unconfirmed_debit": "未确认扣款",
    "settles: %d purchases, %s yuan; excluded: %d purchases, %s yuan; reported: %d; "
    "unconfirmed debits: %d": (
        "结算: %d 笔, %s 元; 不结算: %d 笔, %s 元; 报告: %d; 未确认扣款: %d"
    ),
    "%d unconfirmed debits (%s yuan)": "未确认扣款 %d 笔 (%s 元)",
    "device %d: %d %s": "设备 %d: %d 次 %s",
}


def _w(args, text):
    """The report's words in the language asked for (--lang)."""
    return ZH.get(text, text) if getattr(args, "lang", "en") == "zh" else text


def _reasons(args, reasons):
    if getattr(args, "lang", "en") != "zh":
        return ",".join(reasons)
    from tools.collector.web import i18n

    return ",".join(i18n.name_of(i18n.REASONS, r, "zh") for r in reasons)


def _exceptions(args):
    store = Store(args.db)
    try:
        rows = store.exceptions(args.device)
        unconfirmed = store.unconfirmed(args.device)
        totals = store.settlement(args.device)
    finally:
        store.close()
    print(_w(args, "device seq local_time card_no card_atc yuan tac settles reasons"))
    for r in rows:
        print(
            "%d %d %s %s %s %s %s %s %s"
            % (
                r["device_id"],
                r["seq"],
                _when(args, r["time"]),
                r["card_no"],
                r["card_atc"],
                _yuan(r["amount"]),
                r["tac_status"],
                _w(args, "yes" if r["settles"] else "NO"),
                _reasons(args, r["reasons"]),
            )
        )
    for r in unconfirmed:
        print(
            "%d %d %s %s %s %s - %s %s"
            % (
                r["device_id"],
                r["seq"],
                _when(args, r["time"]),
                r["card_no"],
                r["card_atc"],
                _yuan(r["amount"]),
                _w(args, "NO"),
                _w(args, "unconfirmed_debit"),
            )
        )
    print(
        _w(
            args,
            "settles: %d purchases, %s yuan; excluded: %d purchases, %s yuan; reported: %d; "
            "unconfirmed debits: %d",
        )
        % (
            totals["records"],
            _yuan(totals["amount"]),
            totals["excluded"],
            _yuan(totals["excluded_amount"]),
            totals["reported"],
            len(unconfirmed),
        ),
        file=sys.stderr,
    )
    return 0


def _recheck(args):
    from .clearing import Clearing

    clearing = Clearing(tac_keys(args.tac_keys), max_amount=args.max_amount)
    store = Store(args.db)
    try:
        out = store.recheck(clearing, args.device)
    finally:
        store.close()
    print(
        "%d purchases checked again, %d changed, %d now settle"
        % (out["checked"], out["changed"], out["cleared"])
    )
    return 0


def _loads(args):
    rows = []
    with open(args.file, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f)):
            if i == 0 and row and row[0] == "card_no":
                continue
            if len(row) < 3:
                raise ValueError(
                    "%s line %d: card_no,time,amount[,source] expected" % (args.file, i + 1)
                )
            rows.append(
                (row[0].lower(), int(row[1]), int(row[2]), row[3] if len(row) > 3 else None)
            )
    store = Store(args.db)
    try:
        store.add_loads(rows)
    finally:
        store.close()
    print("%d loads imported" % len(rows))
    return 0


def _psam(args):
    store = Store(args.db)
    try:
        if args.remove:
            for tid in args.tid:
                if not store.unregister_psam(tid):
                    raise ValueError("PSAM %s is not registered" % tid)
        else:
            if args.device is None and args.tid:
                raise ValueError("--device is needed to register a PSAM")
            for tid in args.tid:
                store.register_psam(args.device, tid)
        rows = store.psams(args.device)
    finally:
        store.close()
    print("psam_tid device")
    for tid, dev in sorted(rows.items()):
        print("%s %d" % (tid, dev))
    return 0


def _keys(args):
    from .keys import from_env

    return from_env(args.master_key_file, args.key_source)


def _masterkey(args):
    from .keys import new_master_file

    new_master_file(args.out)
    print(
        "master key written to %s (mode 0600): keep it off the database host's backups" % args.out
    )
    return 0


def _provision(args):
    """The device's key, derived from the master key, goes to stdout (for its config.json:
    tools/provision.py writes that file itself). --secret-stdin imports an existing validator's
    secret (hex on stdin, never on the command line): stored, reported at every start."""
    secret = None
    if args.secret_stdin:
        secret = bytes.fromhex(sys.stdin.readline().strip())
    store = Store(args.db, keys=_keys(args))
    try:
        key = store.provision(args.device, secret, args.name)
        for tid in args.psam:
            store.register_psam(args.device, tid)
    finally:
        store.close()
    print("device %d secret %s" % (args.device, key.hex()))
    return 0


def _store_cmd(fn):
    # The parameter commands (tools/collector/bundles.py) take an open store.
    def run(args):
        store = Store(args.db)
        try:
            return fn(args, store)
        finally:
            store.close()

    return run


def _export(args):
    # --sheet: one row a record as a person reads it (tools/record_sheet.py, docs/operators.md)
    tz = None
    if args.tz is not None:
        try:
            tz = record_sheet.parse_tz(args.tz)
        except ValueError as e:
            print("error: %s" % e, file=sys.stderr)
            return 2
    if args.out and os.path.exists(args.out):
        print("error: %s exists; not overwritten" % args.out, file=sys.stderr)
        return 2
    store = Store(args.db)
    enc = "utf-8-sig" if args.sheet else "utf-8"  # a BOM: Excel then reads the Chinese right
    out = open(args.out, "x", newline="", encoding=enc) if args.out else sys.stdout
    try:
        if args.sheet:
            n = record_sheet.write_export(
                store.export(args.device), Store.EXPORT_COLUMNS, out, tz, args.lang
            )
        else:
            w = csv.writer(out)
            w.writerow(Store.EXPORT_COLUMNS)
            n = 0
            for row in store.export(args.device):
                w.writerow(row)
                n += 1
    finally:
        if args.out:
            out.close()
        store.close()
    print("%d records exported" % n, file=sys.stderr)
    return 0


def _retention(args):
    """The retention policy (tools/collector/partitions.py): a plan, or (--apply) export,
    verify and drop each month past --keep-months that has nothing waiting to be cleared.
    Exit 3 when a month due was refused (for a cron job to alert on)."""
    from . import partitions

    store = Store(args.db)
    try:
        res = partitions.run(store, args.export_dir, args.keep_months, apply=args.apply)
    finally:
        store.close()
    print("partition from to rows action reason")
    for p in res:
        print(
            "%s %s %s %d %s %s"
            % (
                p["name"],
                "-" if p["lo"] is None else partitions._day(p["lo"]),
                "-" if p["hi"] is None else partitions._day(p["hi"]),
                p["rows"],
                p["action"],
                p["reason"],
            )
        )
    return 3 if any(p["action"] == "refused" for p in res) else 0


def _unconfirmed(args):
    store = Store(args.db)
    try:
        rows = store.intents(args.device, open_only=not args.all)
    finally:
        store.close()
    names = {1: "purchase", 2: "purchase_recovered", 9: "debit_void"}
    print(_w(args, "device seq local_time card_no card_atc yuan psam_tid psam_serial outcome"))
    for r in rows:
        o = r["outcome"]
        what = _w(args, "UNCONFIRMED")
        bc = r.get("by_counter")
        if o is None and bc is not None:
            what = _w(args, "UNCONFIRMED %s (card counter +1 at device %d seq %d)") % (
                _w(args, bc["verdict"].upper()),
                bc["device_id"],
                bc["seq"],
            )
        if o is not None:
            what = "%s device %d seq %d" % (
                names.get(o["kind"], o["kind"]),
                o["device_id"],
                o["seq"],
            )
        print(
            "%d %d %s %s %s %s %s %s %s"
            % (
                r["device_id"],
                r["seq"],
                _when(args, r["time"]),
                r["card_no"],
                r["card_atc"],
                _yuan(r["amount"]),
                r["psam_tid"],
                r["psam_serial"],
                what,
            )
        )
    n = sum(1 for r in rows if r["outcome"] is None)
    print(
        _w(args, "%d unconfirmed debits (%s yuan)")
        % (n, _yuan(sum(r["amount"] or 0 for r in rows if r["outcome"] is None))),
        file=sys.stderr,
    )
    return 0


def _boots(args):
    store = Store(args.db)
    try:
        rows = store.boots(args.device)
    finally:
        store.close()
    print(_w(args, "device seq local_time reset_cause faults psam unconfirmed"))
    counts = {}
    for r in rows:
        print(
            "%d %d %s %s %s %s %d"
            % (
                r["device_id"],
                r["seq"],
                _when(args, r["time"]),
                r["reset_cause"],
                ",".join(r["faults"]) or "-",
                _w(args, "ok" if r["psam_ok"] else "FAILED"),
                r["unconfirmed"],
            )
        )
        key = (r["device_id"], r["reset_cause"])
        counts[key] = counts.get(key, 0) + 1
    for (dev, cause), n in sorted(counts.items()):
        print(_w(args, "device %d: %d %s") % (dev, n, cause), file=sys.stderr)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tools.collector",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_db(sp):
        sp.add_argument(
            "--db",
            default=os.environ.get("COLLECTOR_DB", DEFAULT_URL),
            help="database URL (default %(default)s, or $COLLECTOR_DB)",
        )
        return sp

    def with_lang(sp):
        sp.add_argument(
            "--lang", choices=("en", "zh"), default="en", help="the report's words: en, zh"
        )
        return sp

    def with_tz(sp):
        # reports print local time with its zone (docs/operators.md); amounts in yuan
        sp.add_argument(
            "--tz", default="+08:00", help="UTC offset of the times printed (default +08:00)"
        )
        return sp

    def with_keys(sp):
        sp.add_argument(
            "--master-key-file",
            help="device master key, 32 bytes or 64 hex, mode 0600 (or "
            "$COLLECTOR_MASTER_KEY_FILE, or $COLLECTOR_MASTER_KEY as hex)",
        )
        sp.add_argument(
            "--key-source", help="module:name of an HSM/KMS key source (tools/collector/keys.py)"
        )
        return sp

    s = with_keys(with_db(sub.add_parser("serve", help="run the HTTP service")))
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed)")
    s.add_argument(
        "--tac-keys",
        default=os.environ.get("COLLECTOR_TAC_KEYS"),
        help="TAC key file, JSON {issuer4hex: {alg: {root, issuer8}}}, mode 0600 (or "
        "$COLLECTOR_TAC_KEYS); 'test' for the simulators' test keys. Required.",
    )
    s.add_argument(
        "--max-amount",
        type=int,
        default=5000,
        help="highest fare of the fare tables, fen (default %(default)s): above it a purchase "
        "is an exception",
    )
    s.add_argument("--log-level", default="info")
    s.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (PostgreSQL)"
    )
    s.add_argument("--threads", type=int, default=8, help="database threads per process")
    s.add_argument("--header-timeout", type=float, default=10.0, help="s for a request head")
    s.add_argument("--body-timeout", type=float, default=30.0, help="s for a request body")
    s.add_argument("--idle-timeout", type=float, default=60.0, help="s an idle connection stays")
    s.add_argument("--max-connections", type=int, default=4000, help="per process")
    s.add_argument("--max-inflight", type=int, default=32, help="requests processed at once")
    s.add_argument(
        "--rate", type=float, default=20.0, help="requests a second per device (0: no limit)"
    )
    s.add_argument("--burst", type=int, default=60, help="burst of requests per device")
    s = with_keys(with_db(sub.add_parser("provision", help="add a device or give it a new key")))
    s.add_argument("--device", type=int, required=True)
    s.add_argument(
        "--secret-stdin",
        action="store_true",
        help="import an existing validator's secret (hex on stdin); default: a key derived from "
        "the master key, printed",
    )
    s.add_argument("--name")
    s.add_argument(
        "--psam", action="append", default=[], help="register this PSAM (12 hex) to the device"
    )
    param_cmds = bundles.add_commands(sub, with_db)
    param_cmds.update(web_cli.add_commands(sub, with_db))  # the dashboard (tools/collector/web)
    s = with_db(sub.add_parser("export", help="records as CSV"))
    s.add_argument("--device", type=int)
    s.add_argument("--out", help="file (default: stdout); an existing file is not overwritten")
    s.add_argument(
        "--sheet",
        action="store_true",
        help="spreadsheet columns: kinds and reasons in words, local time and UTC, yuan, card "
        "numbers as text, route and stop (docs/operators.md); default: the raw columns",
    )
    s.add_argument("--lang", choices=("en", "zh"), default="en", help="--sheet words: en, zh")
    s.add_argument(
        "--tz", help="--sheet: UTC offset for a device with no sale yet (default +08:00)"
    )
    s = with_db(sub.add_parser("retention", help="export, verify and drop old months"))
    s.add_argument("--keep-months", type=int, default=3, help="months kept (default 3)")
    s.add_argument("--export-dir", help="where each month's CSV export goes (0600)")
    s.add_argument("--apply", action="store_true", help="do it (default: print the plan)")
    s = with_lang(
        with_tz(with_db(sub.add_parser("unconfirmed", help="debit intents with no outcome yet")))
    )
    s.add_argument("--device", type=int)
    s.add_argument("--all", action="store_true", help="every intent, with its outcome")
    s = with_lang(
        with_tz(with_db(sub.add_parser("boots", help="starts: reset causes, parts that failed")))
    )
    s.add_argument("--device", type=int)
    s = sub.add_parser("masterkey", help="make a new master key file (0600)")
    s.add_argument("--out", required=True)
    s = with_db(sub.add_parser("psam", help="the PSAM registry: which PSAM is which device's"))
    s.add_argument("--device", type=int)
    s.add_argument("--tid", action="append", default=[], help="PSAM terminal number, 12 hex")
    s.add_argument("--remove", action="store_true", help="unregister the --tid PSAMs")
    s = with_lang(
        with_tz(
            with_db(sub.add_parser("exceptions", help="purchases excluded from settlement, why"))
        )
    )
    s.add_argument("--device", type=int)
    s = with_db(sub.add_parser("recheck", help="clear again purchases with a bad or no TAC"))
    s.add_argument("--device", type=int)
    s.add_argument("--tac-keys", default=os.environ.get("COLLECTOR_TAC_KEYS"))
    s.add_argument("--max-amount", type=int, default=5000)
    s = with_db(sub.add_parser("loads", help="import loads (top-ups) from CSV"))
    s.add_argument("file", help="CSV: card_no (hex),time (validator time),amount (fen)[,source]")
    versions.add_flag(p)  # the version set (tools/versions.py)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cmds = {
            "serve": _serve,
            "provision": _provision,
            "export": _export,
            "unconfirmed": _unconfirmed,
            "boots": _boots,
            "exceptions": _exceptions,
            "loads": _loads,
            "recheck": _recheck,
            "psam": _psam,
            "masterkey": _masterkey,
            "retention": _retention,
        }
        cmds.update({name: _store_cmd(fn) for name, fn in param_cmds.items()})
        if args.cmd in ("unconfirmed", "boots", "exceptions"):
            _tz(args)  # a bad --tz is refused before the database is read
        return cmds[args.cmd](args)
    except (ValueError, OSError, RuntimeError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
