"""The collector's HTTP/1.1 server for `python -m tools.collector serve`: asyncio, binary bodies
with Content-Length, keep-alive, and the limits a public endpoint needs.

Limits (each refusal logged, nothing stored):
- a request's head (request line and headers) must arrive within `header_timeout` seconds of its
  first byte and an idle keep-alive connection is closed after `idle_timeout`; its body within
  `body_timeout`: a slow client is cut off, it holds no thread and no database connection while
  it dawdles;
- `max_connections` open connections per process (the rest get 503 and are closed), and at most
  `max_inflight` requests being processed at once (the others wait their turn, in order);
- heads over 8 KiB get 431, bodies over 64 KiB 413 (before a byte of the body is read),
  chunked bodies 501, a POST without Content-Length 411;
- a per-device request rate (app.RateLimit, 429).

Processing (MAC, counter, records, database) runs in a thread pool of `threads` threads, so the
event loop keeps reading other connections. `workers` processes share the listening socket
(forked after it is bound); each has its own database connections and no state another needs,
so a city runs as many as its load needs, on one or several hosts behind a load balancer.
"""

import asyncio
import json
import logging
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from . import app as app_mod

log = logging.getLogger("collector.http")

REASONS = {
    200: "OK",
    206: "Partial Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    416: "Range Not Satisfiable",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
}
MAX_HEAD = 8192


class Limits:
    def __init__(
        self,
        header_timeout=10.0,
        body_timeout=30.0,
        idle_timeout=60.0,
        max_connections=4000,
        max_inflight=32,
        max_body=65536,
    ):
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_inflight = max_inflight
        self.max_body = max_body


class _Close(Exception):
    """Answer, then close the connection."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HttpServer:
    """One process's server: `service` is an app.Service."""

    def __init__(self, service, limits=None, threads=8):
        self.service = service
        self.limits = limits or Limits()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="collector")
        self.conns = 0
        self.requests = 0
        self.cut = 0  # connections closed for being too slow
        self._sem = None

    def _routes(self):
        svc = self.service
        return {
            ("POST", "/v1/upload"): ("upload", svc.upload),
            ("POST", "/v1/params"): ("params", svc.params),
        }

    async def handle(self, reader, writer):
        lim = self.limits
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else "?"
        if self.conns >= lim.max_connections:
            log.warning("connection from %s refused: %d connections open", client, self.conns)
            await self._send(writer, 503, b"too many connections\n", close=True)
            writer.close()
            return
        self.conns += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        try:
            first = True
            while True:
                try:
                    close = await self._one(reader, writer, client, first)
                except _Close as e:
                    log.warning("request from %s refused (%d): %s", client, e.status, e.reason)
                    await self._send(writer, e.status, (e.reason + "\n").encode(), close=True)
                    return
                first = False
                if close:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except Exception as e:  # noqa: BLE001  (a bug: logged, the connection closed, serving goes on)
            log.exception("connection from %s: unexpected %s: closed", client, e)
            return
        finally:
            self.conns -= 1
            try:
                writer.close()
            except Exception:  # noqa: BLE001  (a socket already gone)
                pass

    async def _one(self, reader, writer, client, first):
        lim = self.limits
        # Wait for the first byte of the next request (idle keep-alive), then for the whole head.
        try:
            async with asyncio.timeout(lim.idle_timeout):  # cheaper than wait_for: no task
                b = await reader.read(1)
        except TimeoutError:
            return True  # idle: close quietly
        if not b:
            return True
        try:
            async with asyncio.timeout(lim.header_timeout):
                head = b + await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            self.cut += 1
            log.info("%s: request head not complete in %g s: closed", client, lim.header_timeout)
            return True
        except asyncio.LimitOverrunError:
            raise _Close(431, "request head over %d bytes" % MAX_HEAD)
        if len(head) > MAX_HEAD:
            raise _Close(431, "request head over %d bytes" % MAX_HEAD)
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, path, version = lines[0].split(" ", 2)
        except ValueError:
            raise _Close(400, "malformed request line")
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            k, sep, v = line.partition(":")
            if not sep:
                raise _Close(400, "malformed header line")
            headers[k.strip().lower()] = v.strip()
        close = version != "HTTP/1.1" or headers.get("connection", "").lower() == "close"
        if "transfer-encoding" in headers:
            raise _Close(501, "chunked bodies are not accepted: send Content-Length")
        length = headers.get("content-length")
        if length is None:
            if method == "POST":
                raise _Close(411, "POST without Content-Length")
            n = 0
        else:
            try:
                n = int(length)
                if n < 0:
                    raise ValueError
            except ValueError:
                raise _Close(400, "bad Content-Length %r" % length)
        if n > lim.max_body:
            raise _Close(413, "body of %d bytes exceeds %d" % (n, lim.max_body))
        body = b""
        if n:
            try:
                async with asyncio.timeout(lim.body_timeout):
                    body = await reader.readexactly(n)
            except TimeoutError:
                self.cut += 1
                log.warning(
                    "%s: body of %d bytes not received in %g s: closed, nothing stored",
                    client,
                    n,
                    lim.body_timeout,
                )
                return True
            except asyncio.IncompleteReadError as e:
                log.warning(
                    "%s: disconnected after %d of %d bytes (truncated body): nothing stored",
                    client,
                    len(e.partial),
                    n,
                )
                return True
        route_path, _, query = path.partition("?")
        if method == "GET" and route_path.startswith("/v1/bundle/"):
            status, ctype, payload, extra = await self._bundle(route_path, query, headers)
            self.requests += 1
            await self._send(writer, status, payload, ctype, close, extra)
            return close
        if path.partition("?")[0] == "/v1/health" and method == "GET":
            status, ctype, payload = await self._health()
        elif path == "/openapi.json" and method == "GET":
            status, ctype = 200, "application/json"
            payload = json.dumps(app_mod.openapi_document()).encode()
        else:
            route = self._routes().get((method, path.partition("?")[0]))
            if route is None:
                known = any(p == path for _m, p in self._routes())
                status = 405 if known else 404
                ctype, payload = "text/plain", b"no such endpoint\n"
            else:
                status, ctype, payload = await self._process(route, body, client)
        self.requests += 1
        await self._send(writer, status, payload, ctype, close)
        return close

    async def _process(self, route, body, client):
        what, fn = route
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limits.max_inflight)
        async with self._sem:
            loop = asyncio.get_running_loop()
            try:
                status, answer = await loop.run_in_executor(self.pool, fn, body)
                return status, app_mod.BINARY, answer
            except app_mod.Refused as e:
                log.warning("%s from %s refused (%d): %s", what, client, e.status, e.reason)
                return e.status, "text/plain", (e.reason + "\n").encode()
            except Exception as e:  # noqa: BLE001  (the database or a bug: the device retries)
                log.exception("%s from %s failed: %s", what, client, e)
                return 503, "text/plain", b"back office error, retry later\n"

    async def _bundle(self, route_path, query, headers):
        """GET /v1/bundle/<version>?d=&t= with a Range: big parameter bundles by ranges
        (tools/collector/bundles.py serve(), fleetparams' module; this is only the plumbing)."""
        from urllib.parse import parse_qs

        from . import bundles

        q = parse_qs(query)
        try:
            version = int(route_path[len("/v1/bundle/") :])
            device = int((q.get("d") or ["0"])[0])
        except ValueError:
            return 400, "text/plain", b"bad request\n", {}
        token = (q.get("t") or [None])[0]
        loop = asyncio.get_running_loop()
        store = self.service.store
        try:
            status, extra, body = await loop.run_in_executor(
                self.pool, bundles.serve, store, version, device, token, headers.get("range")
            )
        except Exception as e:  # noqa: BLE001  (the database: the device resumes later)
            log.exception("bundle %d for device %d failed: %s", version, device, e)
            return 503, "text/plain", b"back office error, retry later\n", {}
        if status >= 400:
            log.warning("bundle %d for device %d refused (%d): %s", version, device, status, body)
        ctype = "application/octet-stream" if status == 206 else "text/plain"
        return status, ctype, body, extra

    async def _health(self):
        loop = asyncio.get_running_loop()
        try:
            schema = await loop.run_in_executor(self.pool, self.service.store.schema_version)
        except Exception as e:  # noqa: BLE001
            log.error("health check: database unavailable: %s", e)
            return 503, "application/json", b'{"ok": false, "error": "database unavailable"}'
        ok = schema == app_mod.SCHEMA_VERSION
        return 200, "application/json", json.dumps({"ok": ok, "schema": schema}).encode()

    async def _send(self, writer, status, payload, ctype="text/plain", close=False, extra=None):
        head = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
            status,
            REASONS.get(status, "Status"),
            ctype,
            len(payload),
        )
        for k, v in (extra or {}).items():
            head += "%s: %s\r\n" % (k, v)
        if close:
            head += "Connection: close\r\n"
        try:
            writer.write(head.encode() + b"\r\n" + payload)
            await writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    async def serve(self, sock, stop=None):
        server = await asyncio.start_server(self.handle, sock=sock, limit=MAX_HEAD)
        async with server:
            if stop is None:
                await server.serve_forever()
            else:
                await stop.wait()
                server.close()


def listen(host, port, backlog=1024):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def run(sock, make_service, limits=None, threads=8, workers=1):
    """Serve on `sock` until SIGTERM/SIGINT. make_service() builds this process's app.Service
    (its Store and database connections); with workers > 1 it runs in each forked child."""
    if workers <= 1:
        return _run_one(sock, make_service, limits, threads)
    children = {}

    def spawn(i):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = _run_one(sock, make_service, limits, threads) or 0
            finally:
                os._exit(code)
        children[pid] = i
        log.info("worker %d started (pid %d)", i, pid)

    for i in range(workers):
        spawn(i)
    stopping = []

    def stop(*_):
        stopping.append(1)
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        i = children.pop(pid, None)
        if i is None:
            continue
        if not stopping:
            log.error("worker %d (pid %d) died (status %d): restarting it", i, pid, status)
            time.sleep(0.5)
            spawn(i)
    return 0


def _run_one(sock, make_service, limits, threads):
    service = make_service()
    server = HttpServer(service, limits, threads)

    async def main():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(sock, stop)

    try:
        asyncio.run(main())
    finally:
        server.pool.shutdown(wait=False)
        service.store.close()
    return 0
