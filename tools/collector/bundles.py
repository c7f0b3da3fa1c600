"""Parameter bundles in the back office: validation before publishing, rollout by device group,
what each device is offered, and the rollout's state (docs/parameters.md "Publishing").

The collector stores and serves the signed bytes; it holds the fleet's *public* keys only (to
check a bundle before publishing it), never a key that can sign parameters. Legacy HMAC bundles
(format 1, one device each) are still served to devices without fleet keys.

Tables (their own small schema, `param_schema`, so the collector's record migrations and these
evolve apart): `bundles` (from the first migration: target 0 = the fleet, or one device),
`param_rollout` (version, grp: 0 = every device), `device_groups` (device_id, grp) and
`device_params` (the version each device last said it holds, and when).
"""

import logging
import re
import struct
import time

import bundle  # firmware/, on the path through tools/collector/__init__.py
import hmac256
import params
import uplink_proto as up

log = logging.getLogger("collector.bundles")

U32 = 0xFFFFFFFF
# A fleet-signed bundle bigger than this goes by ranges (GET /v1/bundle/<v>): the answer to a
# parameter query carries only its length (pkind P_CHUNKED). Smaller ones ride in the answer.
INLINE_MAX = 16384
MAX_RANGE = 256 * 1024  # bytes one ranged GET may ask for
PKIND = {"none": up.P_NONE, "full": up.P_FULL, "delta": up.P_DELTA, "chunked": up.P_CHUNKED}
MAX_BUNDLE = 16 * 1024 * 1024  # a million-card list is 5.8 MB
SCHEMA = [
    (
        1,
        [
            "CREATE TABLE IF NOT EXISTS param_rollout (version {big} NOT NULL, "
            "grp {big} NOT NULL, started {big} NOT NULL, PRIMARY KEY (version, grp))",
            "CREATE TABLE IF NOT EXISTS device_groups (device_id {big} NOT NULL, "
            "grp {big} NOT NULL, PRIMARY KEY (device_id, grp))",
            "CREATE TABLE IF NOT EXISTS device_params (device_id {big} PRIMARY KEY, "
            "have {big} NOT NULL, asked {big} NOT NULL)",
        ],
    )
]


class PublishError(ValueError):
    pass


def ensure(store):
    """Create or migrate the parameter tables (idempotent; the collector calls it at start)."""
    if getattr(store, "_param_schema", False):
        return
    big = "INTEGER" if store.dialect == "sqlite" else "BIGINT"
    with store._tx() as ex:
        if store.dialect == "pg":
            ex.run("SELECT pg_advisory_xact_lock(734202)")
        ex.run("CREATE TABLE IF NOT EXISTS param_schema (version INTEGER NOT NULL)")
        have = ex.one("SELECT MAX(version) FROM param_schema")[0] or 0
        for version, statements in SCHEMA:
            if version <= have:
                continue
            for sql in statements:
                ex.run(sql.format(big=big))
            ex.run("INSERT INTO param_schema (version) VALUES (?)", (version,))
    store._param_schema = True


# --- validation (the publish CLI) --------------------------------------------------------------


def validate(data, keys=None, secret=None, current=0, max_size=MAX_BUNDLE, now=None):
    """Check a bundle before it is published. keys: {key_id: public key bytes} (fleet-signed);
    secret: a device secret (legacy format 1). -> a dict describing it; PublishError with the
    reason otherwise. Checks: parses, signature (cryptography, then the firmware's own
    verifier), every chunk hash, body header and sections, config as the validator checks it,
    version above `current`, at most MAX_STEP above it and at most VERSION_MAX, size."""
    if len(data) > max_size:
        raise PublishError("%d bytes exceeds the %d-byte limit" % (len(data), max_size))
    f = bundle.open_bytes(data)
    try:
        if bytes(data[:4]) == bundle.MMAGIC:
            if not keys:
                raise PublishError("a fleet-signed bundle: give the fleet public keys")
            m = bundle.Manifest(data[: bundle.MHEAD])
            if m.key_id not in keys:
                raise PublishError("signed by key %d, not one of %s" % (m.key_id, sorted(keys)))
            from tools import params_sign

            params_sign.check_signature(bytes(data), keys[m.key_id])
            trust = bundle.Trust({m.key_id: keys[m.key_id]})
            trust.check_scope = lambda m: None  # the scope is the devices' to check
            m, hdr = bundle.verify_signed_file(f, len(data), trust, None)
            info = {"format": 2, "key_id": m.key_id, "scope": m.scope(), "chunks": m.n_chunks}
        elif bytes(data[:4]) == bundle.MAGIC:
            if secret is None:
                raise PublishError("a legacy HMAC bundle: publish it for one device (--device)")
            hdr = bundle.verify_file(f, secret, len(data))
            info = {"format": 1, "key_id": 0}
        else:
            raise PublishError("not a parameter bundle (magic %r)" % bytes(data[:4]))
        cfg = bundle.read_config(f, hdr)
        if cfg is not None:
            params.check_config(cfg)
        delta = bundle.read_delta(f, hdr)
    except (bundle.BundleError, params.ParamsError) as e:
        raise PublishError("bundle refused: %s" % e)
    except ValueError as e:  # params_sign.SignError and friends
        raise PublishError("bundle refused: %s" % e)
    v = hdr.version
    if not 0 < v <= bundle.VERSION_MAX:
        raise PublishError("version %d outside 1..%d" % (v, bundle.VERSION_MAX))
    if v <= current:
        raise PublishError("version %d is not above the published %d" % (v, current))
    if current and v > current + bundle.MAX_STEP:
        raise PublishError(
            "version %d jumps more than %d above %d" % (v, bundle.MAX_STEP, current)
        )
    info.update(
        version=v,
        size=len(data),
        base=delta[0] if delta else 0,
        kind="delta" if delta else ("full" if hdr.section(bundle.BLACKLIST) else "config"),
    )
    return info


# --- publishing and rollout ------------------------------------------------------------------


def publish(store, version, data, target=0, base=0, groups=None):
    """Store a bundle and start its rollout. groups: None = every device (group 0), or a list
    of group numbers (the rest follow with rollout()). A device-targeted (legacy) bundle needs
    no rollout. The version must fit the protocol: 1..VERSION_MAX."""
    ensure(store)
    if not 0 < version <= bundle.VERSION_MAX:
        raise ValueError("version %d outside 1..%d" % (version, bundle.VERSION_MAX))
    if base < 0 or (base and base >= version):
        raise ValueError("need 0 <= base < version")
    now = int(time.time())
    with store._tx() as ex:
        ex.run(
            "DELETE FROM bundles WHERE target = ? AND version = ? AND base = ?",
            (target, version, base),
        )
        ex.run(
            "INSERT INTO bundles (target, version, base, data, published) VALUES (?, ?, ?, ?, ?)",
            (target, version, base, bytes(data), now),
        )
        if target == 0:
            for g in [0] if groups is None else groups:
                _start(ex, version, g, now)


def _start(ex, version, grp, now):
    if not 0 <= grp <= U32:
        raise ValueError("group %d outside 0..%d" % (grp, U32))
    if not ex.one("SELECT 1 FROM param_rollout WHERE version = ? AND grp = ?", (version, grp)):
        ex.run(
            "INSERT INTO param_rollout (version, grp, started) VALUES (?, ?, ?)",
            (version, grp, now),
        )


def rollout(store, version, groups=None):
    """Extend a published version's rollout to more groups (None: every device)."""
    ensure(store)
    now = int(time.time())
    with store._tx() as ex:
        if not ex.one("SELECT 1 FROM bundles WHERE target = 0 AND version = ?", (version,)):
            raise ValueError("version %d is not published for the fleet" % version)
        for g in [0] if groups is None else groups:
            _start(ex, version, g, now)


def set_groups(store, device_id, groups):
    ensure(store)
    with store._tx() as ex:
        ex.run("DELETE FROM device_groups WHERE device_id = ?", (device_id,))
        for g in groups:
            ex.run("INSERT INTO device_groups (device_id, grp) VALUES (?, ?)", (device_id, g))


def _target(ex, device_id):
    # A device with bundles of its own (legacy) gets those; the rest share the fleet's.
    row = ex.one("SELECT 1 FROM bundles WHERE target = ? LIMIT 1", (device_id,))
    return device_id if row else 0


def _latest(ex, device_id):
    target = _target(ex, device_id)
    if target:
        row = ex.one("SELECT MAX(version) FROM bundles WHERE target = ?", (target,))
        return target, row[0] or 0
    row = ex.one(
        "SELECT MAX(r.version) FROM param_rollout r WHERE r.grp = 0 OR r.grp IN "
        "(SELECT grp FROM device_groups WHERE device_id = ?)",
        (device_id,),
    )
    rolled = row[0] or 0
    # Fleet bundles published before rollouts existed (no rollout rows at all) go to everyone.
    row = ex.one(
        "SELECT MAX(b.version) FROM bundles b WHERE b.target = 0 AND NOT EXISTS "
        "(SELECT 1 FROM param_rollout r WHERE r.version = b.version)"
    )
    return 0, max(rolled, row[0] or 0)


def offer(store, device_id):
    """The newest version on offer to a device, for the upload answer's u32 field. Never raises:
    a broken bundle table must not turn uploads into errors (the records would be stored but
    never acknowledged); the reason is logged and nothing is offered."""
    try:
        ensure(store)
        with store._tx(write=False) as ex:
            v = _latest(ex, device_id)[1]
    except Exception as e:  # noqa: BLE001 - logged; uploads go on
        log.error("parameter offer for device %d failed: %s", device_id, e)
        return 0
    if not 0 <= v <= U32:
        log.error("parameter version %d does not fit the answer: nothing offered", v)
        return 0
    return v


def bundle_for(store, device_id, have):
    """-> (kind, version, base, data): kind 'none', 'full' or 'delta'. Notes what the device
    said it holds (the rollout state)."""
    ensure(store)
    with store._tx() as ex:
        now = int(time.time())
        if ex.one("SELECT 1 FROM device_params WHERE device_id = ?", (device_id,)):
            ex.run(
                "UPDATE device_params SET have = ?, asked = ? WHERE device_id = ?",
                (have, now, device_id),
            )
        else:
            ex.run(
                "INSERT INTO device_params (device_id, have, asked) VALUES (?, ?, ?)",
                (device_id, have, now),
            )
        target, latest = _latest(ex, device_id)
        if not latest or latest == have or latest > U32:
            return ("none", latest if 0 <= latest <= U32 else 0, 0, b"")
        if have:
            row = ex.one(
                "SELECT data FROM bundles WHERE target = ? AND version = ? AND base = ?",
                (target, latest, have),
            )
            if row:
                return ("delta", latest, have, bytes(row[0]))
        row = ex.one(
            "SELECT data FROM bundles WHERE target = ? AND version = ? AND base = 0",
            (target, latest),
        )
        if not row:
            log.error("bundle %d (target %d) has no full form: none offered", latest, target)
            return ("none", have, 0, b"")
        data = bytes(row[0])
        if len(data) > INLINE_MAX and data[:4] == bundle.MMAGIC:
            return ("chunked", latest, 0, struct.pack(">I", len(data)))
        return ("full", latest, 0, data)


def status(store):
    """One dict per fleet version: groups it is rolled out to (with start times), devices in
    them, how many said they hold it or newer, and the rest still below."""
    ensure(store)
    out = []
    with store._tx(write=False) as ex:
        versions = [
            r[0]
            for r in ex.all("SELECT DISTINCT version FROM bundles WHERE target = 0 ORDER BY 1")
        ]
        all_devices = [r[0] for r in ex.all("SELECT device_id FROM devices ORDER BY 1")]
        have = dict(ex.all("SELECT device_id, have FROM device_params"))
        members = {}
        for dev, grp in ex.all("SELECT device_id, grp FROM device_groups"):
            members.setdefault(grp, set()).add(dev)
        for v in versions:
            groups = ex.all(
                "SELECT grp, started FROM param_rollout WHERE version = ? ORDER BY grp", (v,)
            )
            if not groups or any(g == 0 for g, _ in groups):
                eligible = set(all_devices)
            else:
                eligible = set()
                for g, _ in groups:
                    eligible |= members.get(g, set())
            holding = sorted(d for d in eligible if have.get(d, 0) >= v)
            out.append(
                {
                    "version": v,
                    "groups": [{"group": g, "started": s} for g, s in groups] or "all (legacy)",
                    "eligible": len(eligible),
                    "holding": len(holding),
                    "waiting": sorted(eligible - set(holding)),
                }
            )
    return out


# --- ranged serving ---------------------------------------------------------------------------

_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


def serve(store, version, device, token, range_header):
    """-> (status, headers, body) for GET /v1/bundle/<version>?d=<device>&t=<token>. The device
    must be known and its token right (uplink_proto.bundle_token), the version one on offer to
    it, the range inside the bundle and at most MAX_RANGE bytes: 206 with the bytes."""
    # An unknown device and a wrong token get the same answer, as on the upload route, so an
    # outsider cannot tell which device ids exist (the log says which).
    secret = store.secret(device) if 0 < device <= U32 else None
    if secret is None:
        log.warning("bundle %d asked for by unknown device %d", version, device)
        return 401, {}, b"bad token\n"
    want = up.bundle_token(secret, device, version)
    if not hmac256.equal(want.encode(), (token or "").encode()):
        return 401, {}, b"bad token\n"
    m = _RANGE.match(range_header or "")
    a, b = (int(m.group(1)), int(m.group(2))) if m else (0, -1)
    ensure(store)
    with store._tx(write=False) as ex:
        if _latest(ex, device)[1] != version:
            return 404, {}, b"version not on offer to this device\n"
        # Only the range leaves the database (substr on a BLOB / bytea counts bytes), not the
        # whole 5.8 MB for each 64 KiB asked.
        n = max(0, min(b - a + 1, MAX_RANGE))
        row = ex.one(
            "SELECT length(data), substr(data, ?, ?) FROM bundles "
            "WHERE target = 0 AND version = ? AND base = 0",
            (a + 1, n, version),
        )
    if not row:
        return 404, {}, b"no such bundle\n"
    total = row[0]
    if not m:
        return 416, {"Content-Range": "bytes */%d" % total}, b"give a Range: bytes=a-b\n"
    if not a <= b < total or b - a + 1 > MAX_RANGE:
        return 416, {"Content-Range": "bytes */%d" % total}, b"range not satisfiable\n"
    return 206, {"Content-Range": "bytes %d-%d/%d" % (a, b, total)}, bytes(row[1])


def route(store):
    """The Starlette route of serve()."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    async def handle(request):
        try:
            version = int(request.path_params["version"])
            device = int(request.query_params.get("d", "0"))
        except ValueError:
            return Response(b"bad request\n", 400, media_type="text/plain")
        try:
            status, headers, body = await run_in_threadpool(
                serve,
                store,
                version,
                device,
                request.query_params.get("t"),
                request.headers.get("range"),
            )
        except Exception as e:  # the database: the device resumes later
            log.exception("bundle %d for device %d failed: %s", version, device, e)
            return Response(b"back office error, retry later\n", 503, media_type="text/plain")
        if status >= 400:
            log.warning("bundle %d for device %d refused (%d): %s", version, device, status, body)
        ctype = "application/octet-stream" if status == 206 else "text/plain"
        return Response(body, status, headers=headers, media_type=ctype)

    return Route("/v1/bundle/{version:int}", handle, methods=["GET"])


# --- command line (hooked into tools/collector/cli.py) ---------------------------------------


def _keys(args):
    keys = {}
    if args.keys_file:
        import json

        with open(args.keys_file) as f:
            for kid, hexkey in json.load(f).items():
                keys[int(kid)] = bytes.fromhex(hexkey)
    for spec in args.param_key or []:
        kid, _, hexkey = spec.partition(":")
        keys[int(kid)] = bytes.fromhex(hexkey)
    return keys


def _current(store, target):
    ensure(store)
    with store._tx(write=False) as ex:
        row = ex.one("SELECT MAX(version) FROM bundles WHERE target = ?", (target,))
    return row[0] or 0


def cmd_publish(args, store):
    with open(args.file, "rb") as f:
        data = f.read()
    target = args.device or 0
    secret = store.secret(target) if target else None
    if target and secret is None:
        raise PublishError("unknown device %d" % target)
    if not target and not (args.group or args.all):
        raise PublishError("say who gets it first: --group G (repeat) or --all")
    current = _current(store, target)
    info = validate(data, _keys(args), secret, current, args.max_size)
    if args.version is not None and args.version != info["version"]:
        raise PublishError("--version %d, the bundle says %d" % (args.version, info["version"]))
    if args.delta_from and info["base"] != args.delta_from:
        raise PublishError(
            "--delta-from %d, the bundle's delta base is %d" % (args.delta_from, info["base"])
        )
    base = info["base"] if info["kind"] == "delta" else 0
    publish(store, info["version"], data, target, base, None if args.all else args.group)
    who = (
        "device %d" % target
        if target
        else ("all devices" if args.all else "groups %s" % args.group)
    )
    print(
        "published version %d (%s, format %d, %d bytes) for %s"
        % (info["version"], info["kind"], info["format"], len(data), who)
    )
    return 0


def cmd_rollout(args, store):
    if not (args.group or args.all):
        raise PublishError("--group G (repeat) or --all")
    rollout(store, args.version, None if args.all else args.group)
    print(
        "version %d rolled out to %s" % (args.version, "all devices" if args.all else args.group)
    )
    return cmd_status(args, store)


def cmd_groups(args, store):
    set_groups(store, args.device, args.group or [])
    print("device %d in groups %s" % (args.device, args.group or []))
    return 0


def cmd_status(args, store):
    for row in status(store):
        groups = row["groups"]
        if isinstance(groups, list):
            groups = ", ".join("all" if g["group"] == 0 else str(g["group"]) for g in groups)
        print(
            "version %d: rolled out to %s; %d of %d devices hold it; waiting: %s"
            % (
                row["version"],
                groups,
                row["holding"],
                row["eligible"],
                " ".join(str(d) for d in row["waiting"][:20]) or "none",
            )
        )
    return 0


def add_commands(sub, with_db):
    """The parameter subcommands; -> {name: fn(args, store)}."""
    s = with_db(sub.add_parser("publish", help="check and publish a parameter bundle"))
    s.add_argument("file")
    s.add_argument("--version", type=int, help="must match the bundle's (a check)")
    s.add_argument("--device", type=int, help="a legacy bundle for one device")
    s.add_argument("--delta-from", type=int, help="must match the delta's base (a check)")
    s.add_argument("--group", type=int, action="append", help="roll out to this group first")
    s.add_argument("--all", action="store_true", help="roll out to every device")
    s.add_argument("--param-key", action="append", metavar="ID:HEX", help="fleet public key")
    s.add_argument("--keys-file", help='JSON {"id": "04..hex"} of fleet public keys')
    s.add_argument("--max-size", type=int, default=MAX_BUNDLE)
    s = with_db(sub.add_parser("rollout", help="extend a version's rollout"))
    s.add_argument("--version", type=int, required=True)
    s.add_argument("--group", type=int, action="append")
    s.add_argument("--all", action="store_true")
    s = with_db(sub.add_parser("groups", help="set a device's groups"))
    s.add_argument("--device", type=int, required=True)
    s.add_argument("--group", type=int, action="append")
    with_db(sub.add_parser("rollout-status", help="who holds which parameter version"))
    return {
        "publish": cmd_publish,
        "rollout": cmd_rollout,
        "groups": cmd_groups,
        "rollout-status": cmd_status,
    }
