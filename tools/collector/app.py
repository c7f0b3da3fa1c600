"""The collector's HTTP API: Service (what every request does) and a Starlette app of it for the
tests and the test server; `python -m tools.collector serve` runs Service in its own HTTP server
(tools/collector/server.py).

Validators POST binary messages (docs/protocol.md) to /v1/upload and /v1/params. Every refusal
has its own status and a logged reason, and stores nothing:
400 malformed, 401 bad MAC or unknown device (the same answer: an outsider learns nothing about
which ids exist), 409 stale counter (signed answer carrying the server's counter), 413 body too
large, 422 a record that does not decode or whose sequence does not match the batch header, 429
over the device's rate, 503 the database failed (retry later)."""

import logging
import struct
import time

import uplink_proto as up
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import bundles
from . import clearing as clearing_mod
from .db import MAX_COUNTER_JUMP, MAX_EPOCH_JUMP, SCHEMA_VERSION, Stale, server_time

log = logging.getLogger("collector")
BINARY = "application/octet-stream"
BOOT = 6  # record.BOOT: carries the PSAM terminal number the validator started with


class Refused(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def default_decoder():
    """firmware/record.py's decode when that module exists, else None (records stored opaque,
    their sequence taken from the batch header)."""
    try:
        import record
    except ImportError:
        return None
    return getattr(record, "decode", None)


def fields_of(rec):
    """The columns the collector indexes, from a decoded record dict."""
    return {
        "kind": rec.get("kind"),
        "time": rec.get("time"),
        "psam_tid": rec.get("psam_tid") or None,
        "psam_serial": rec.get("psam_serial") if rec.get("psam_tid") else None,
        "card_no": rec.get("card_no"),
        "amount": rec.get("amount"),
        "card_atc": rec.get("card_atc"),
        "flags": rec.get("flags"),
    }


# A device's plausible window starts a day before it was provisioned (a validator set up and
# tested the day before its record in the back office).
PROVISION_SLACK = 86400


async def _read_body(request, limit):
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise Refused(413, "body of %s bytes exceeds %d" % (declared, limit))
        except ValueError:
            raise Refused(400, "bad Content-Length %r" % declared)
    parts = []
    n = 0
    try:
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise Refused(413, "body exceeds %d bytes" % limit)
            parts.append(chunk)
    except ClientDisconnect:
        raise Refused(400, "client disconnected after %d bytes (truncated body)" % n)
    return b"".join(parts)


def openapi_document():
    octet = {"content": {BINARY: {"schema": {"type": "string", "format": "binary"}}}}
    text = {"content": {"text/plain": {"schema": {"type": "string"}}}}
    refusals = {
        "400": {"description": "Malformed message or truncated body", **text},
        "401": {
            "description": "HMAC does not verify under the device's secret, or an unknown "
            "device id (the same answer: ids are not disclosed)",
            **text,
        },
        "409": {
            "description": "Counter not above the last accepted one (replay, or a rebooted "
            "validator): a signed answer with status 1 carrying the server's counter",
            **octet,
        },
        "411": {"description": "POST without Content-Length", **text},
        "413": {"description": "Body larger than the limit (64 KiB)", **text},
        "429": {"description": "The device sent more requests a second than allowed", **text},
        "431": {"description": "Request head over 8 KiB", **text},
        "501": {"description": "Chunked request bodies are not accepted", **text},
        "503": {
            "description": "Database unavailable, or too many connections: retry later",
            **text,
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "T-Union validator collector",
            "version": "1",
            "description": "Binary messages in the request and answer bodies, specified byte "
            "by byte in docs/protocol.md. Every message ends with an HMAC-SHA256 under the "
            "device's secret.",
        },
        "paths": {
            "/v1/upload": {
                "post": {
                    "summary": "Upload a batch of journal records (or a heartbeat with none)",
                    "requestBody": {"required": True, **octet},
                    "responses": {
                        "200": {
                            "description": "Signed answer: highest sequence held contiguously, "
                            "server time, newest parameter version on offer",
                            **octet,
                        },
                        "422": {
                            "description": "A record does not decode or its sequence does not "
                            "match the batch header; nothing of the batch stored",
                            **text,
                        },
                        **refusals,
                    },
                }
            },
            "/v1/params": {
                "post": {
                    "summary": "Ask for parameters newer than the version held",
                    "requestBody": {"required": True, **octet},
                    "responses": {
                        "200": {
                            "description": "Signed answer: nothing, a full bundle or a delta",
                            **octet,
                        },
                        **refusals,
                    },
                }
            },
            "/v1/health": {
                "get": {
                    "summary": "Liveness and schema version (for the load balancer)",
                    "responses": {"200": {"description": "JSON {ok, schema}"}},
                }
            },
        },
    }


_REC = struct.Struct(">BBBBBBII6sI10s4s3s3s3sH4sHHHBI")


def fast_decode(raw):
    """firmware/record.py's decode for the fields the collector uses, in one struct call (a
    quarter of its cost); a record that does not check (length, version, CRC) goes through
    record.decode, whose RecordError says why."""
    import record

    if not record.valid(raw):
        return record.decode(raw)
    f = _REC.unpack(raw)
    return {
        "version": f[0],
        "kind": f[1],
        "flags": f[2],
        "card_type": f[3],
        "txn_type": f[4],
        "seq": f[6],
        "time": f[7],
        "psam_tid": f[8],
        "psam_serial": f[9],
        "card_no": f[10],
        "issuer": f[11],
        "amount": int.from_bytes(f[12], "big"),
        "balance_before": int.from_bytes(f[13], "big"),
        "balance_after": int.from_bytes(f[14], "big"),
        "card_atc": f[15],
        "tac": f[16],
        "reason": f[20],
    }


class AuthCache:
    """Per process: what authenticating a device needs (key, provisioning time, PSAMs) for `ttl`
    seconds, and the highest counter this process knows the back office accepted. A request whose
    counter is not above it is refused with 409 without touching the database (a replay costs
    what a bad MAC costs); anything else goes to the database, which decides. A key that no longer
    verifies (the device was re-provisioned) is read again at once."""

    def __init__(self, store, ttl=5.0, size=100000):
        self.store = store
        self.ttl = ttl
        self.size = size
        self._d = {}

    def get(self, device, fresh=False):
        """fresh: read again unless read within the last second (a flood of bad MACs costs no
        database query per request)."""
        now = time.monotonic()
        e = self._d.get(device)
        if e is not None and now - e[0] < (min(1.0, self.ttl) if fresh else self.ttl):
            return e[1]
        info = self.store.auth(device)
        if info is not None:
            old = e[1]["counter"] if e is not None and e[1] is not None else 0
            if e is not None and e[1] is not None and e[1]["secret"] != info["secret"]:
                old = 0  # a new key: its counter started again
            info["counter"] = max(info["counter"], old)
        if len(self._d) >= self.size:
            self._d.clear()
        self._d[device] = (now, info)
        return info

    def accepted(self, device, counter, dev_time=None):
        e = self._d.get(device)
        if e is not None and e[1] is not None and counter > e[1]["counter"]:
            e[1]["counter"] = counter
            if dev_time is not None:
                e[1]["last_time"] = dev_time


class RateLimit:
    """Per device and per process, a token bucket: `rate` requests a second, bursts of `burst`.
    A validator sends a request every few seconds, and up to 60 in a row when it drains a
    backlog (docs/protocol.md section 8): the defaults let that through."""

    def __init__(self, rate=20.0, burst=60):
        self.rate = rate
        self.burst = burst
        self._b = {}

    def allow(self, device):
        now = time.monotonic()
        tokens, last = self._b.get(device, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._b[device] = (tokens, now)
            return False
        if len(self._b) > 100000:
            self._b.clear()
        self._b[device] = (tokens - 1, now)
        return True


class Service:
    """The protocol, independent of the HTTP server: upload(body) and params(body) ->
    (status, body bytes); Refused for a refusal. Used by the Starlette app (tests, TestClient)
    and by tools/collector/server.py (`serve`)."""

    def __init__(self, store, decoder="default", clearing=None, rate=None):
        if decoder == "default":
            decoder = fast_decode if default_decoder() is not None else None
        self.store = store
        self.decoder = decoder
        self.clearing = clearing if clearing is not None else clearing_mod.Clearing()
        self.cache = AuthCache(store)
        self.rate = rate  # a RateLimit, or None
        self._offers = {}

    def authenticate(self, body, want):
        try:
            device = up.peek_device(body)
        except up.ProtoError as e:
            raise Refused(400, str(e))
        kind = body[3]
        if kind != want:
            raise Refused(
                400,
                "device %d: not %s request"
                % (device, "an upload" if want == up.T_UPLOAD else "a parameter"),
            )
        if self.rate is not None and not self.rate.allow(device):
            raise Refused(
                429, "device %d: more than %g requests a second" % (device, self.rate.rate)
            )
        info = self.cache.get(device)
        if info is None:
            # Same answer as a bad MAC: an outsider learns nothing about which ids exist.
            log.warning("device %d: unknown device", device)
            raise Refused(401, "device %d: bad MAC" % device)
        mac_ok = up.check_mac(info["secret"], body)
        if not mac_ok:
            info = self.cache.get(device, fresh=True)  # re-provisioned since it was cached?
            if info is None or not up.check_mac(info["secret"], body):
                raise Refused(401, "device %d: bad MAC" % device)
        counter = request_key(body)
        if counter <= info["counter"] or counter >> 32 > up.EPOCH_MAX:
            # Cheap refusal before anything is decoded: nothing above it was accepted here yet.
            raise StaleRequest(info, body, info["counter"], info.get("last_time"))
        try:
            req = up.decode_request(info["secret"], body, verified=True)
        except up.ProtoError as e:
            raise Refused(400, "device %d: %s" % (device, e))
        req["key"] = counter
        return req, info

    def accepted(self, device, info, req):
        """The database took the request's (epoch, counter): a new epoch is a restart (INFO)."""
        old = info["counter"] >> 32
        if req["epoch"] > old:
            log.info(
                "device %d: boot epoch %d (was %d): the validator restarted, counter from %d",
                device,
                req["epoch"],
                old,
                req["counter"],
            )
        self.cache.accepted(device, req["key"], req["time"])

    def upload(self, body):
        try:
            req, info = self.authenticate(body, up.T_UPLOAD)
        except StaleRequest as e:
            return self.stale(e.info, e.body, e.server_counter, e.last_time)
        secret = info["secret"]
        device = req["device"]
        decoder = self.decoder
        clearing = self.clearing
        rows = []
        noted = []
        first = req["first_seq"]
        now = server_time()
        not_before = info["created"] - PROVISION_SLACK
        psams = info["psams"]
        for i, raw in enumerate(req["records"]):
            seq = first + i
            fields = {}
            if decoder is not None:
                try:
                    rec = decoder(raw)
                except Exception as e:  # any decoder failure is a refused record, never a crash
                    raise Refused(422, "device %d seq %d: record refused: %s" % (device, seq, e))
                if rec.get("seq") != seq:
                    raise Refused(
                        422,
                        "device %d: record %d of the batch has seq %r, header implies %d"
                        % (device, i, rec.get("seq"), seq),
                    )
                fields = fields_of(rec)
                tac, exc = clearing.check(rec, not_before, now)
                if tac is not None and bytes(rec.get("psam_tid") or b"").hex() not in psams:
                    exc.append(clearing_mod.EXC_PSAM)  # quarantined: demotes no other record
                elif rec.get("kind") == BOOT and any(rec.get("psam_tid") or b""):
                    tid = bytes(rec["psam_tid"]).hex()
                    if tid not in psams:
                        log.error(
                            "device %d seq %d: booted with PSAM %s, not registered to it "
                            "(registered: %s): its purchases are quarantined until the registry "
                            "says so (python -m tools.collector psam)",
                            device,
                            seq,
                            tid,
                            ", ".join(sorted(psams)) or "none",
                        )
                fields["tac_status"] = tac
                fields["exceptions"] = exc
                if exc:
                    noted.append((seq, exc))
            rows.append((seq, raw, fields))
        try:
            res = self.store.ingest(device, req["key"], req["acked"], first, rows, req["time"])
        except Stale as e:
            self.cache.accepted(device, e.server_counter)
            return self.stale(info, body, e.server_counter, e.last_time)
        self.accepted(device, info, req)
        if noted:
            log.warning(
                "device %d: %d purchases held out of settlement or reported: %s",
                device,
                len(noted),
                "; ".join("seq %d %s" % (seq, ",".join(exc)) for seq, exc in noted[:10]),
            )
        offer = self.offer(device)
        if res["duplicates"] or res["tsn_dups"]:
            log.info(
                "device %d: seq %d..%d, %d new, %d already held, %d PSAM serial repeats",
                device,
                first,
                first + len(rows) - 1,
                res["stored"],
                res["duplicates"],
                res["tsn_dups"],
            )
        answer = up.encode_answer(
            secret,
            up.T_UPLOAD,
            up.ST_OK,
            device,
            req["counter"],
            req["counter"],
            server_time(),
            value=res["contig"],
            extra=offer,
            bind=req["mac"],
            server_epoch=_epoch_of(req),
        )
        return 200, answer

    # s: the upload answer's parameter offer is read again after this (0: every time; `serve`
    # caches it 2 s, so a new bundle reaches the answers within that).
    offer_ttl = 0.0

    def offer(self, device):
        if not self.offer_ttl:
            return self.store.latest_version(device)
        now = time.monotonic()
        e = self._offers.get(device)
        if e is not None and now - e[0] < self.offer_ttl:
            return e[1]
        v = self.store.latest_version(device)
        if len(self._offers) > 100000:
            self._offers.clear()
        self._offers[device] = (now, v)
        return v

    def stale(self, info, body, server_counter, last_time=None):
        """server_counter: the key (epoch << 32 | counter) the back office last accepted."""
        device, counter, dev_time = struct.unpack_from(">III", body, 4)
        key = request_key(body)
        epoch, s_epoch = key >> 32, server_counter >> 32
        if key > server_counter:
            log.warning(
                "device %d: epoch %d counter %d jumps more than %d epochs or %d counts above "
                "epoch %d counter %d (a bug or a flipped bit): told to continue from there",
                device,
                epoch,
                counter,
                MAX_EPOCH_JUMP,
                MAX_COUNTER_JUMP,
                s_epoch,
                server_counter & 0xFFFFFFFF,
            )
            return 409, self._stale_answer(info, body, server_counter)
        # The request is authenticated, so the device built it. With a boot epoch (version 2),
        # one not above the last accepted is a copy of an older request. Without one (version 1):
        # built after the last request the back office accepted (its time is later), the
        # validator restarted and lost its counter; otherwise it is a replay.
        if up.peek_epoch(body) == 0 and last_time is not None and dev_time > last_time:
            log.info(
                "device %d: counter %d not above %d: the validator restarted (its clock is ahead "
                "of its last accepted request): told to continue above it",
                device,
                counter,
                server_counter,
            )
        else:
            log.warning(
                "device %d: epoch %d counter %d not above epoch %d counter %d: a replayed "
                "request (or a version 1 restart with the clock behind): refused",
                device,
                epoch,
                counter,
                s_epoch,
                server_counter & 0xFFFFFFFF,
            )
        return 409, self._stale_answer(info, body, server_counter)

    @staticmethod
    def _stale_answer(info, body, server_counter):
        device, counter = struct.unpack_from(">II", body, 4)
        return up.encode_answer(
            info["secret"],
            body[3],
            up.ST_STALE_COUNTER,
            device,
            counter,
            server_counter & 0xFFFFFFFF,
            server_time(),
            bind=up.request_mac(body),
            server_epoch=(server_counter >> 32) if body[2] == up.VERSION_EPOCH else None,
        )

    def params(self, body):
        try:
            req, info = self.authenticate(body, up.T_PARAMS)
        except StaleRequest as e:
            return self.stale(e.info, e.body, e.server_counter, e.last_time)
        secret = info["secret"]
        device = req["device"]
        try:
            self.store.touch(device, req["key"], req["time"])
        except Stale as e:
            self.cache.accepted(device, e.server_counter)
            return self.stale(info, body, e.server_counter, e.last_time)
        self.accepted(device, info, req)
        kind, version, base, data = self.store.bundle_for(device, req["have_version"])
        pkind = bundles.PKIND[kind]
        if pkind != up.P_NONE:
            log.info(
                "device %d: sending %s bundle %d (has %d)",
                device,
                kind,
                version,
                req["have_version"],
            )
        answer = up.encode_answer(
            secret,
            up.T_PARAMS,
            up.ST_OK,
            device,
            req["counter"],
            req["counter"],
            server_time(),
            value=version,
            extra=base,
            pkind=pkind,
            payload=data,
            bind=req["mac"],
            server_epoch=_epoch_of(req),
        )
        return 200, answer


def request_key(body):
    """(epoch, counter) of an authenticated request as one integer, epoch << 32 | counter
    (version 1 requests: epoch 0). A device's keys must increase (docs/protocol.md section 2)."""
    return up.peek_epoch(body) << 32 | struct.unpack_from(">I", body, 8)[0]


def _epoch_of(req):
    return req["epoch"] if req["version"] == up.VERSION_EPOCH else None


class StaleRequest(Exception):
    def __init__(self, info, body, server_counter, last_time=None):
        super().__init__("stale counter")
        self.info = info
        self.body = body
        self.server_counter = server_counter
        self.last_time = last_time


def create_app(store, decoder="default", clearing=None, max_body=up.MAX_BODY, service=None):
    """store: a db.Store. decoder: bytes -> dict (firmware/record.py's decode by default; None
    stores records opaque). clearing: a clearing.Clearing or None."""
    svc = service or Service(store, decoder, clearing)

    def do_upload(body):
        status, answer = svc.upload(body)
        return Response(answer, status, media_type=BINARY)

    def do_params(body):
        status, answer = svc.params(body)
        return Response(answer, status, media_type=BINARY)

    def endpoint(work, what):
        async def handle(request):
            client = request.client.host if request.client else "?"
            try:
                body = await _read_body(request, max_body)
                return await run_in_threadpool(work, body)
            except Refused as e:
                log.warning("%s from %s refused (%d): %s", what, client, e.status, e.reason)
                return PlainTextResponse(e.reason + "\n", e.status)
            except Exception as e:  # the database or a bug: the device retries later
                log.exception("%s from %s failed: %s", what, client, e)
                return PlainTextResponse("back office error, retry later\n", 503)

        return handle

    async def health(request):
        try:
            schema = await run_in_threadpool(store.schema_version)
        except Exception as e:
            log.error("health check: database unavailable: %s", e)
            return JSONResponse({"ok": False, "error": "database unavailable"}, 503)
        return JSONResponse({"ok": schema == SCHEMA_VERSION, "schema": schema})

    async def openapi(request):
        return JSONResponse(openapi_document())

    routes = [
        Route("/v1/upload", endpoint(do_upload, "upload"), methods=["POST"]),
        Route("/v1/params", endpoint(do_params, "params"), methods=["POST"]),
        bundles.route(store),  # GET /v1/bundle/<version>: big bundles by ranges
        Route("/v1/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.store = store
    app.state.service = svc
    return app
