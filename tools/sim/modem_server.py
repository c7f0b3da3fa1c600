"""Hub server for the modem tests: a simulated modem on ``uart modem``, its power key on pin
``modem_pwrkey``, and a real local HTTP server the modem (and the socket transport) talk to.

ctl commands:
  modem_dialect(dialect)            "simcom" | "quectel"; the modem is switched off
  modem_timing(**ms)                override DEFAULT_TIMING entries (see tools/sim/modem.py)
  modem_fault(fault, count=1)       inject a fault; modem_clear(fault=None) removes it
  modem_state()                     power, boots, echo, registration, pdp, faults, counters
  modem_commands(clear=False)       AT command lines received
  modem_set(**kw)                   operator_stat (1 home, 5 roaming, 3 denied),
                                    network_time [7 ints] ([] = none), sim_state (READY | SIM PIN |
                                    MISSING), apns (accepted APNs, None = any),
                                    nitz (the network sends its time at registration),
                                    time_offset (s: how wrong that time is)
  http_port()                       the local HTTP server's port
  http_log(clear=False, last=5)     requests the HTTP server saw (method, path, headers,
                                    body_len, body: the first 64 bytes in hex)

HTTP routes (tools.sim.modem_server.TestHttpHandler):
  POST /echo          200, the request body back
  GET  /blob/<n>      200, n bytes (i % 251)
  *    /status/<code> that status, body b"status <code>"
  GET  /reset/<n>     announces n bytes, sends half, then drops the connection
  GET  /slow/<ms>     200 after <ms>
  GET  /chunked/<n>   n bytes, chunked transfer encoding
  GET  /close/<n>     n bytes, no length: delimited by closing the connection
"""

import http.server
import threading
import time

from tools.sim.hub import Hub, main_for
from tools.sim.modem import DEFAULT_TIMING, ModemSim


def blob(n):
    return bytes(i % 251 for i in range(n))


class TestHttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_sink = None  # a list, set by start_http_server

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _answer(self, status, body, close=False):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _handle(self):
        body = self._body()
        if self.log_sink is not None:
            hdrs = {k: v for k, v in self.headers.items()}
            entry = {"method": self.command, "path": self.path, "headers": hdrs}
            entry["body_len"] = len(body)
            entry["body"] = body[:64].hex()  # a head: enough to recognise, small for the ctl link
            self.log_sink.append(entry)
        parts = self.path.split("?")[0].strip("/").split("/")
        try:
            if parts[0] == "echo" and self.command == "POST":
                return self._answer(200, body)
            if parts[0] == "blob":
                return self._answer(200, blob(int(parts[1])))
            if parts[0] == "status":
                code = int(parts[1])
                return self._answer(code, b"status %d" % code)
            if parts[0] == "slow":
                time.sleep(int(parts[1]) / 1000.0)
                return self._answer(200, b"slow")
            if parts[0] == "chunked":
                data = blob(int(parts[1]))
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(data), 700):
                    piece = data[i : i + 700]
                    self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return None
            if parts[0] == "close":
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(blob(int(parts[1])))
                self.close_connection = True
                return None
            if parts[0] == "reset":
                n = int(parts[1])
                self.send_response(200)
                self.send_header("Content-Length", str(n))
                self.end_headers()
                self.wfile.write(blob(n)[: n // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return None
        except (ValueError, IndexError):
            return self._answer(400, b"bad request")
        return self._answer(404, b"not found")

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle


def start_http_server(log):
    handler = type("Handler", (TestHttpHandler,), {"log_sink": log})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def add_modem(hub, dialect=None, timing=None, clock=None):
    """A modem on UART "modem" with its power key on pin "modem_pwrkey": `dialect` ("simcom",
    "quectel"; the simulator's default otherwise), `timing` overriding DEFAULT_TIMING entries,
    `clock` the network's time (NITZ, AT+CCLK). -> the ModemSim."""
    m = ModemSim()
    if dialect is not None:
        m.set_dialect(dialect)
    if timing:
        m.timing.update(timing)
    if clock is not None:
        m.clock = clock
    hub.register("uart", "modem", m.serve)
    hub.on_pin("modem_pwrkey", m.on_pwrkey)
    return m


def build():
    hub = Hub()
    the_modem = add_modem(hub)
    http_log = []
    server = start_http_server(http_log)

    def modem():
        return the_modem

    @hub.command("modem_dialect")
    def _dialect(dialect):
        modem().set_dialect(dialect)
        return dialect

    @hub.command("modem_timing")
    def _timing(**ms):
        unknown = set(ms) - set(DEFAULT_TIMING)
        if unknown:
            raise ValueError("unknown timing %s" % sorted(unknown))
        modem().timing.update(ms)
        return modem().timing

    hub.command("modem_fault")(lambda fault, count=1: modem().inject(fault, count))
    hub.command("modem_cut_bodies_at")(lambda points: modem().cut_bodies_at(points))
    hub.command("modem_cuts_done")(lambda: modem().cuts_done)

    @hub.command("modem_wire_bytes")
    def _wire(clear=False):
        n = modem().wire_bytes
        if clear:
            modem().wire_bytes = 0
        return n

    hub.command("modem_clear")(lambda fault=None: modem().clear(fault))

    @hub.command("modem_state")
    def _state():
        m = modem()
        return {
            "dialect": m.dialect,
            "power": m.power,
            "boots": m.boots,
            "echo": m.echo,
            "reg": m.reg_stat,
            "pdp": m.pdp,
            "apn": m.apn,
            "faults": dict(m.faults),
            "stuck": m.stuck,
            "ppp_dials": m.ppp_dials,
            "tls": sorted(m.tls),
            "bytes_in": m.bytes_in,
            "bytes_out": m.bytes_out,
        }

    @hub.command("modem_commands")
    def _commands(clear=False):
        out = list(modem().commands)
        if clear:
            modem().commands.clear()
        return out

    @hub.command("modem_set")
    def _set(
        operator_stat=None,
        network_time=None,
        sim_state=None,
        apns=False,
        nitz=None,
        time_offset=None,
    ):
        m = modem()
        if nitz is not None:
            m.nitz = bool(nitz)
        if time_offset is not None:
            m.time_offset = int(time_offset)
        if sim_state is not None and sim_state not in ("READY", "SIM PIN", "MISSING"):
            raise ValueError("sim_state is READY, SIM PIN or MISSING")
        if apns is not False:
            m.apns = None if apns is None else list(apns)
        m.set_network(operator_stat, sim_state)
        if network_time is not None:  # [] clears it: the network's clock (`clock`) answers
            m.network_time = tuple(int(x) for x in network_time) or None
        return True

    hub.command("http_port")(lambda: server.server_address[1])

    @hub.command("http_log")
    def _http_log(clear=False, last=5):
        out = list(http_log)[-last:]
        if clear:
            http_log.clear()
        return out

    return hub


if __name__ == "__main__":
    main_for(build)
