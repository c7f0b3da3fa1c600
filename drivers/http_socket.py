# The uplink's Transport (drivers/transport.py) over plain sockets: Wi-Fi on a bench board, PPP
# on a modem, the host network on the unix port. HTTP/1.1, one connection per request
# ("Connection: close"), binary bodies with Content-Length; chunked and close-delimited answers
# are read too. Everything goes through asyncio streams, so taps keep being served.
#
#   t = SocketTransport(iface=wlan)
#   status, body = await t.request("POST", "http://host:8080/batch", body, {"X-Sig": sig})
import asyncio

import log
from micropython import const
from transport import ConnectionLost, NetworkDown, TransportError, TransportTimeout

_log = log.get("http")
_HEAD_MAX = const(8192)  # response status line + headers


def split_url(url):
    """'http://host:8080/p?q' -> (https: bool, host, port, '/p?q'); ValueError when not one."""
    if url.startswith("http://"):
        https, rest = False, url[7:]
    elif url.startswith("https://"):
        https, rest = True, url[8:]
    else:
        raise ValueError("not an http(s) URL: %r" % url)
    slash = rest.find("/")
    hostport, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    colon = hostport.rfind(":")
    if colon >= 0:
        host, port = hostport[:colon], int(hostport[colon + 1 :])
    else:
        host, port = hostport, 443 if https else 80
    if not host or not (0 < port < 65536):
        raise ValueError("bad host or port in %r" % url)
    for ch in " \r\n":
        if ch in url:
            raise ValueError("URL with whitespace: %r" % url)
    return https, host, port, path


def build_request(method, host, port, https, path, body, headers):
    default = 443 if https else 80
    hostname = host if port == default else "%s:%d" % (host, port)
    head = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, path, hostname)
    for name, value in headers.items():
        value = str(value)
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value or ":" in name:
            raise ValueError("bad header %r" % name)
        head += "%s: %s\r\n" % (name, value)
    if body or method in ("POST", "PUT"):
        head += "Content-Length: %d\r\n" % len(body)
    return head.encode() + b"\r\n"


class SocketTransport:
    def __init__(self, iface=None, ssl_context=None, max_body=32768, ca_file="ca.der"):
        self.iface = iface  # network.WLAN / network.PPP: isconnected(), maybe status("rssi")
        # https: the back office's certificate is verified against the CA certificate in
        # `ca_file` (DER, provisioned with config.json; docs/protocol.md section 1), or by the
        # caller's own ssl_context. There is no unverified mode.
        self.ssl_context = ssl_context
        self.ca_file = ca_file
        self.max_body = max_body
        self.last_error = None
        self.errors = 0
        self.requests = 0

    def status(self):
        up = True
        rssi = None
        if self.iface is not None:
            up = bool(self.iface.isconnected())
            try:
                rssi = self.iface.status("rssi")
            except Exception:  # PPP and some ports have no rssi
                rssi = None
        return {
            "link": "socket",
            "registered": up,
            "rssi_dbm": rssi,
            "last_error": self.last_error,
            "errors": self.errors,
            "requests": self.requests,
        }

    def _fail(self, exc):
        self.errors += 1
        self.last_error = "%s: %s" % (type(exc).__name__, exc.args[0] if exc.args else "")
        _log.warning("request failed: %s", self.last_error)
        return exc

    async def request(self, method, url, body=b"", headers=None, timeout_ms=30000, sink=None):
        """-> (status, body bytes); raises NetworkDown, TransportTimeout, ConnectionLost."""
        https, host, port, path = split_url(url)
        body = body or b""
        head = build_request(method, host, port, https, path, body, headers or {})
        self.requests += 1
        if self.iface is not None and not self.iface.isconnected():
            raise self._fail(NetworkDown("interface not connected"))
        try:
            return await asyncio.wait_for_ms(
                self._exchange(https, host, port, head, body, method, sink), timeout_ms
            )
        except asyncio.TimeoutError:
            raise self._fail(TransportTimeout("no complete answer in %d ms" % timeout_ms))
        except TransportError as e:
            raise self._fail(e)
        except (OSError, EOFError) as e:
            raise self._fail(ConnectionLost("socket error %r" % (e,)))

    def _verifying_context(self):
        import tls

        try:
            with open(self.ca_file, "rb") as f:
                ca = f.read()
        except OSError:
            raise TransportError(
                "https needs the CA certificate %s: not provisioned" % self.ca_file
            )
        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = tls.CERT_REQUIRED
        ctx.load_verify_locations(cadata=ca)
        self.ssl_context = ctx  # built once
        return ctx

    async def _exchange(self, https, host, port, head, body, method, sink=None):
        ssl = None
        if https:
            ssl = self.ssl_context
            if ssl is None:
                ssl = self._verifying_context()
        try:
            if ssl is not None:
                reader, writer = await asyncio.open_connection(host, port, ssl=ssl)
            else:
                reader, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            if e.args and e.args[0] in (-2, -3, -202):  # getaddrinfo failures: no DNS / no net
                raise NetworkDown("cannot resolve %s" % host)
            raise ConnectionLost("cannot connect to %s:%d (%r)" % (host, port, e))
        try:
            writer.write(head)
            if body:
                writer.write(body)
            await writer.drain()
            return await self._response(reader, method, sink)
        finally:
            try:
                writer.close()
                await writer.wait_closed()
            except OSError:
                pass

    async def _response(self, reader, method, sink=None):
        line = await reader.readline()
        if not line:
            raise ConnectionLost("closed before the status line")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionLost("not an HTTP answer: %r" % line[:40])
        try:
            status = int(parts[1])
        except ValueError:
            raise ConnectionLost("bad status line %r" % line[:40])
        length = None
        chunked = False
        seen = len(line)
        while True:
            line = await reader.readline()
            seen += len(line)
            if not line:
                raise ConnectionLost("closed inside the headers")
            if seen > _HEAD_MAX:
                raise ConnectionLost("headers too long")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    length = -1
                if length < 0:  # a negative one reached bytearray(n): ValueError escaped
                    raise ConnectionLost("bad Content-Length")
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, b""
        if sink is not None and status == 206 and length is not None and not chunked:
            return status, await self._stream(reader, length, sink)
        if chunked:
            return status, await self._chunked(reader)
        if length is None:
            return status, await self._until_close(reader)
        if length > self.max_body:
            raise TransportError("response of %d bytes exceeds %d" % (length, self.max_body))
        return status, await self._exact(reader, length)

    async def _exact(self, reader, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = await reader.readinto(view[got:])
            if not k:
                raise ConnectionLost("body cut at %d of %d bytes" % (got, n))
            got += k
        return buf  # no copy: one block of n bytes is enough to ask of the heap

    async def _stream(self, reader, n, sink):
        buf = bytearray(512)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = await reader.readinto(view[: min(512, n - got)])
            if not k:
                raise ConnectionLost("body cut at %d of %d bytes" % (got, n))
            sink(view[:k])
            got += k
        return n

    async def _chunked(self, reader):
        out = bytearray()
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionLost("closed inside a chunked body")
            try:
                n = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                n = -1
            if n < 0:
                raise ConnectionLost("bad chunk size %r" % line[:20])
            if len(out) + n > self.max_body:
                raise TransportError("chunked response exceeds %d" % self.max_body)
            if n == 0:
                await reader.readline()  # the empty trailer line
                return bytes(out)
            out += await self._exact(reader, n)
            await reader.readline()

    async def _until_close(self, reader):
        out = bytearray()
        while True:
            data = await reader.read(1024)
            if not data:
                return bytes(out)
            out += data
            if len(out) > self.max_body:
                raise TransportError("response exceeds %d" % self.max_body)
