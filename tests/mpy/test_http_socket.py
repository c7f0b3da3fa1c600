# mpy: heapsize=128k timeout=60 server=tools.sim.modem_server
# The socket Transport against a real local HTTP server (the one the modem simulator forwards to).

import log
import mptest
from atmodem import loop_block_probe
from http_socket import SocketTransport, build_request, split_url
from simlink import Control
from transport import ConnectionLost, NetworkDown, TransportTimeout

_base = []


def base():
    if not _base:
        _base.append("http://127.0.0.1:%d" % Control().call("http_port"))
    return _base[0]


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()


class Iface:
    def __init__(self, up):
        self.up = up

    def isconnected(self):
        return self.up

    def status(self, what):
        return -60


def test_split_url_and_request_head():
    mptest.eq(split_url("http://h:8080/a/b?c=1"), (False, "h", 8080, "/a/b?c=1"))
    mptest.eq(split_url("https://host"), (True, "host", 443, "/"))
    mptest.eq(split_url("http://host/"), (False, "host", 80, "/"))
    for bad in ("ftp://h/", "http://:80/", "http://h:0/", "http://h/a b", "http://h:x/"):
        mptest.raises(ValueError, split_url, bad)
    head = build_request("POST", "h", 8080, False, "/p", b"abc", {"X-A": "1"})
    mptest.eq(
        head,
        b"POST /p HTTP/1.1\r\nHost: h:8080\r\nConnection: close\r\nX-A: 1\r\n"
        b"Content-Length: 3\r\n\r\n",
    )
    mptest.raises(ValueError, build_request, "GET", "h", 80, False, "/", b"", {"X": "a\r\nB: c"})


async def test_round_trips():
    t = SocketTransport()
    body = bytes(range(256)) * 20
    status, got = await t.request("POST", base() + "/echo", body, {"X-Sig": "s1"}, 3000)
    mptest.eq(status, 200)
    mptest.hex_eq(got, body)
    seen = Control().call("http_log", last=1)[0]
    mptest.eq((seen["headers"].get("X-Sig"), seen["body_len"]), ("s1", len(body)))
    status, got = await t.request("GET", base() + "/blob/6000", timeout_ms=3000)
    mptest.eq((status, len(got), got[250:252]), (200, 6000, b"\xfa\x00"))
    mptest.eq(await t.request("GET", base() + "/status/503"), (503, b"status 503"))
    mptest.eq(await t.request("POST", base() + "/echo", b""), (200, b""))
    status, got = await t.request("GET", base() + "/chunked/2000")
    mptest.eq((status, len(got), got[:2]), (200, 2000, b"\x00\x01"))
    status, got = await t.request("GET", base() + "/close/1500")
    mptest.eq((status, len(got)), (200, 1500))
    st = t.status()
    mptest.eq((st["link"], st["requests"], st["errors"], st["last_error"]), ("socket", 6, 0, None))


async def test_failures_are_typed_and_the_next_request_works():
    t = SocketTransport()
    await mptest.araises(ConnectionLost, t.request("GET", base() + "/reset/3000"))
    mptest.true(t.status()["last_error"].startswith("ConnectionLost"))
    await mptest.araises(TransportTimeout, t.request("GET", base() + "/slow/1000", b"", None, 200))
    await mptest.araises(ConnectionLost, t.request("GET", "http://127.0.0.1:1/x"))
    small = SocketTransport(max_body=100)
    e = await mptest.araises(OSError, small.request("GET", base() + "/blob/101"))
    mptest.true("exceeds" in str(e))
    down = SocketTransport(iface=Iface(False))
    await mptest.araises(NetworkDown, down.request("GET", base() + "/blob/1"))
    mptest.eq(down.status()["registered"], False)
    up = SocketTransport(iface=Iface(True))
    mptest.eq((await up.request("GET", base() + "/blob/3"))[1], b"\x00\x01\x02")
    mptest.eq(up.status()["rssi_dbm"], -60)
    mptest.eq(t.status()["errors"], 3)
    mptest.eq((await t.request("GET", base() + "/blob/10"))[0], 200)
    mptest.true(log.find("request failed", log.WARNING))


async def test_loop_stays_free_during_socket_requests():
    t = SocketTransport()

    async def work():
        for _ in range(5):
            await t.request("POST", base() + "/echo", bytes(4000))
        return True

    ok, gap, ticks = await loop_block_probe(work(), 2)
    mptest.true(ok)
    mptest.log("LOOP_BLOCK socket 5 x POST 4000 B max gap %d ms, %d ticks" % (gap, ticks))


async def test_https_without_a_provisioned_ca_is_refused_never_unverified():
    from transport import TransportError

    t = SocketTransport(ca_file="/no/such/ca.der")
    url = base().replace("http://", "https://") + "/echo"
    try:
        await t.request("POST", url, b"secret card data", {}, 5000)
        mptest.true(False, "an https request went out without a CA certificate")
    except TransportError as e:
        mptest.true("not provisioned" in str(e), str(e))
    mptest.true(t.ssl_context is None)  # no context was built, verified or not
    status, _ = await SocketTransport().request("POST", base() + "/echo", b"x", {}, 5000)
    mptest.eq(status, 200)
