"""The collector's HTTP API (Starlette; run under uvicorn by `python -m tools.collector serve`).

Validators POST binary messages (docs/protocol.md) to /v1/upload and /v1/params. Every refusal
has its own status and a logged reason, and stores nothing:
400 malformed, 401 bad MAC, 403 unknown device, 409 stale counter (signed answer carrying the
server's counter), 413 body too large, 422 a record that does not decode or whose sequence does not
match the batch header, 503 the database failed (retry later).
"""

import logging

import uplink_proto as up
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import clearing as clearing_mod
from .db import SCHEMA_VERSION, Stale, server_time

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
        "401": {"description": "HMAC does not verify under the device's secret", **text},
        "403": {"description": "Unknown device id", **text},
        "409": {
            "description": "Counter not above the last accepted one (replay, or a rebooted "
            "validator): a signed answer with status 1 carrying the server's counter",
            **octet,
        },
        "413": {"description": "Body larger than the limit (64 KiB)", **text},
        "503": {"description": "Database unavailable: retry later", **text},
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


def create_app(store, decoder="default", clearing=None, max_body=up.MAX_BODY):
    """store: a db.Store. decoder: bytes -> dict (firmware/record.py's decode by default; None
    stores records opaque). clearing: a clearing.Clearing or None."""
    if decoder == "default":
        decoder = default_decoder()
    if clearing is None:
        clearing = clearing_mod.Clearing()

    def authenticate(body):
        try:
            device = up.peek_device(body)
        except up.ProtoError as e:
            raise Refused(400, str(e))
        info = store.auth(device)
        if info is None:
            raise Refused(403, "unknown device %d" % device)
        secret = info["secret"]
        try:
            req = up.decode_request(secret, body)
        except up.ProtoError as e:
            raise Refused(401 if "MAC" in str(e) else 400, "device %d: %s" % (device, e))
        return secret, req, info

    def do_upload(body):
        secret, req, info = authenticate(body)
        device = req["device"]
        if req["type"] != up.T_UPLOAD:
            raise Refused(400, "device %d: not an upload request" % device)
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
            res = store.ingest(device, req["counter"], req["acked"], first, rows, req["time"])
        except Stale as e:
            return stale(secret, req, e.server_counter)
        if noted:
            log.warning(
                "device %d: %d purchases held out of settlement or reported: %s",
                device,
                len(noted),
                "; ".join("seq %d %s" % (seq, ",".join(exc)) for seq, exc in noted[:10]),
            )
        offer = store.latest_version(device)
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
        )
        return Response(answer, 200, media_type=BINARY)

    def stale(secret, req, server_counter):
        log.warning(
            "device %d: counter %d not above %d (replayed or rebooted): refused",
            req["device"],
            req["counter"],
            server_counter,
        )
        answer = up.encode_answer(
            secret,
            req["type"],
            up.ST_STALE_COUNTER,
            req["device"],
            req["counter"],
            server_counter,
            server_time(),
            bind=req["mac"],
        )
        return Response(answer, 409, media_type=BINARY)

    def do_params(body):
        secret, req, _info = authenticate(body)
        device = req["device"]
        if req["type"] != up.T_PARAMS:
            raise Refused(400, "device %d: not a parameter request" % device)
        try:
            store.touch(device, req["counter"], req["time"])
        except Stale as e:
            return stale(secret, req, e.server_counter)
        kind, version, base, data = store.bundle_for(device, req["have_version"])
        pkind = {"none": up.P_NONE, "full": up.P_FULL, "delta": up.P_DELTA}[kind]
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
        )
        return Response(answer, 200, media_type=BINARY)

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
        Route("/v1/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.store = store
    return app
