"""HTTP answers read by drivers/http_socket.py (the uplink's transport over sockets: Wi-Fi, PPP,
the unix port): status line, headers, Content-Length, chunked and close-delimited bodies, a 206
body streamed to a sink (the chunked parameter download).

SocketTransport.request runs with a stand-in for MicroPython's asyncio names it uses
(`open_connection` gives a stream over the input, `wait_for_ms` awaits): every await of the
fake stream returns at once, so the coroutine is driven without an event loop.
Input: byte 0 picks the method (POST, GET, HEAD), a sink (the 206 path), a small body limit and
how many bytes one read gives (1, 7, 64, all); the rest is what the server sends.
Invariants (docs/robustness.md): request() gives (status, body) or raises a drivers/transport.py
error, nothing else; a body is never above the limit and matches its Content-Length; a streamed
206 body reaches the sink whole. Then the same transport gets an honest answer exactly.
"""

from tools.fuzz import shim

shim.install()

import http_socket  # noqa: E402
from transport import TransportError  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "http"
HONEST = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
METHODS = ("POST", "GET", "HEAD", "POST")
PIECES = (1, 7, 64, 1 << 20)


class _Stream:
    def __init__(self, data, piece):
        self.data = data
        self.pos = 0
        self.piece = piece

    async def readline(self):
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end + 1
        out = self.data[self.pos : end]
        self.pos = end
        return out

    async def readinto(self, view):
        n = min(len(view), self.piece, len(self.data) - self.pos)
        view[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n

    async def read(self, n):
        n = min(n, self.piece)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def write(self, b):
        pass

    async def drain(self):
        pass

    def close(self):
        pass

    async def wait_closed(self):
        pass


class _Asyncio:
    """The names of MicroPython's asyncio that http_socket uses, over one input."""

    class TimeoutError(Exception):
        pass

    def __init__(self):
        self.stream = None

    async def open_connection(self, host, port, ssl=None):
        return self.stream, self.stream

    async def wait_for_ms(self, coro, ms):
        return await coro


_aio = _Asyncio()


def _drive(coro):
    try:
        while True:
            coro.send(None)
    except StopIteration as e:
        return e.value


def _request(t, data, piece, method, sink):
    _aio.stream = _Stream(data, piece)
    return _drive(t.request(method, "http://collector:8080/v1/upload", b"x", sink=sink))


def one_input(data):
    if not data:
        return
    ctl, answer = data[0], bytes(data[1:])
    saved = http_socket.asyncio
    http_socket.asyncio = _aio
    try:
        t = http_socket.SocketTransport(max_body=64 if ctl & 8 else 32768)
        got = []
        sink = got.append if ctl & 4 else None
        try:
            status, body = _request(t, answer, PIECES[ctl >> 4 & 3], METHODS[ctl & 3], sink)
        except TransportError:
            pass
        else:
            check(isinstance(status, int), "status %r" % (status,))
            if isinstance(body, int):
                check(sink is not None and status == 206, "a length without a sink")
                check(sum(len(x) for x in got) == body, "streamed %d bytes" % body)
            else:
                check(len(body) <= t.max_body, "body of %d bytes" % len(body))
        res = _request(t, HONEST, 64, "POST", None)
        check(res[0] == 200 and bytes(res[1]) == b"hello", "honest answer: %r" % (res,))
    finally:
        http_socket.asyncio = saved


SEEDS = (
    b"\x00" + HONEST,
    b"\x01" + HONEST,
    b"\x02" + HONEST,
    b"\x10" + HONEST,
    b"\x30" + HONEST,
    b"\x00HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"\x00HTTP/1.1 200 OK\r\n\r\nclose-delimited body",
    b"\x04HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\n0123456789",
    b"\x08HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + bytes(100),
    b"\x00HTTP/1.1 204 No Content\r\n\r\n",
    b"\x00HTTP/1.0 500 Oops\r\ncontent-length: 3\r\n\r\nbad",
)
