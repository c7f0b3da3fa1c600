"""The simulation hub: one local TCP server through which firmware under the MicroPython unix port
reaches the simulated chips, cards, PSAM and modem.

Each connection opens with a hello line ``<kind> <name>\\n`` (for example ``i2c pn532`` or
``ctl world``); the hub answers ``OK\\n`` or ``ERR <reason>\\n`` and hands the connection to the
handler registered for that kind and name, in its own thread, for the connection's life.
After the hello both sides speak frames: ``type (1 byte) | length (2 bytes, big-endian) |
payload``. What the types mean is the handler's business (each bus documents its own).

``ctl`` connections carry JSON: a frame of type ``C`` holding ``{"cmd": ..., "args": {...}}``
is answered by a ``C`` frame ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ...}``.
Simulators register commands with ``Hub.command``; tests and the bench use them to put cards in
the field, inject faults and read audit trails.

Run a server module as ``python -m <module> --port 0``: it prints ``PORT <n>`` first, which the
test plugin passes to MicroPython as ``SIM_PORT``.
"""

import argparse
import json
import logging
import socket
import socketserver
import struct
import sys
import threading

log = logging.getLogger("sim.hub")

FRAME_HEADER = struct.Struct(">cH")
MAX_PAYLOAD = 0xFFFF


class LinkClosed(Exception):
    pass


class FrameStream:
    """Frame reader/writer over a connected socket (used by handlers on the hub side)."""

    def __init__(self, sock):
        self.sock = sock
        self.rfile = sock.makefile("rb")
        self.lock = threading.Lock()

    def read_exact(self, n):
        data = self.rfile.read(n)
        if data is None or len(data) < n:
            raise LinkClosed()
        return data

    def read_frame(self):
        kind, length = FRAME_HEADER.unpack(self.read_exact(FRAME_HEADER.size))
        return kind, self.read_exact(length) if length else b""

    def write_frame(self, kind, payload=b""):
        if len(payload) > MAX_PAYLOAD:
            raise ValueError("frame payload too long")
        with self.lock:
            self.sock.sendall(FRAME_HEADER.pack(kind, len(payload)) + bytes(payload))


class Hub:
    def __init__(self):
        self.handlers = {}  # (kind, name) -> callable(FrameStream)
        self.commands = {}  # name -> callable(**args) -> JSON-able
        self.lock = threading.RLock()  # handlers that touch shared world state take it
        self.server = None
        self.pins = {}  # name -> level, for pins the firmware drives or reads
        self.pin_listeners = {}  # name -> [fn(level)], devices watching a firmware output
        self.register("ctl", "world", self._serve_ctl)
        self.register("pin", "board", self._serve_pins)
        self.command("ping")(lambda: "pong")
        self.command("pin_levels")(lambda: dict(self.pins))

    def on_pin(self, name, fn):
        """Call fn(level) whenever the firmware drives pin `name` (reset lines, power keys)."""
        self.pin_listeners.setdefault(name, []).append(fn)

    def set_pin(self, name, level):
        """Drive an input pin as a device would (IRQ lines, modem status)."""
        with self.lock:
            self.pins[name] = int(level)

    def _serve_pins(self, stream):
        # 'S' name=level from the firmware drives a pin; 'G' name asks for a level, answered 'V'.
        while True:
            kind, payload = stream.read_frame()
            text = payload.decode("ascii", "replace")
            if kind == b"S":
                name, _, level = text.partition("=")
                with self.lock:
                    self.pins[name] = int(level)
                    listeners = list(self.pin_listeners.get(name, ()))
                for fn in listeners:
                    fn(int(level))
                stream.write_frame(b"A")
            elif kind == b"G":
                with self.lock:
                    level = self.pins.get(text, 0)
                stream.write_frame(b"V", b"%d" % level)

    def register(self, kind, name, handler):
        self.handlers[(kind, name)] = handler

    def command(self, name):
        def wrap(fn):
            self.commands[name] = fn
            return fn

        return wrap

    def call(self, cmd, args):
        fn = self.commands.get(cmd)
        if fn is None:
            raise KeyError("unknown command %r" % cmd)
        with self.lock:
            return fn(**args)

    def _serve_ctl(self, stream):
        while True:
            kind, payload = stream.read_frame()
            if kind != b"C":
                stream.write_frame(b"C", b'{"ok": false, "error": "expected a C frame"}')
                continue
            try:
                req = json.loads(payload)
                result = self.call(req["cmd"], req.get("args") or {})
                answer = {"ok": True, "result": result}
            except Exception as exc:  # a bad command must not kill the hub
                answer = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
            stream.write_frame(b"C", json.dumps(answer).encode())

    def serve(self, port=0, host="127.0.0.1"):
        hub = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                sock = self.request
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                stream = FrameStream(sock)
                hello = stream.rfile.readline(200).decode("ascii", "replace").split()
                handler = hub.handlers.get(tuple(hello)) if len(hello) == 2 else None
                if handler is None:
                    sock.sendall(b"ERR no device %s\n" % " ".join(hello).encode())
                    return
                sock.sendall(b"OK\n")
                try:
                    handler(stream)
                except (LinkClosed, ConnectionError):
                    pass  # the firmware went away (ended, killed: a power cut)
                except Exception:
                    log.exception("handler %s failed", hello)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, port), Handler)
        return self.server.server_address[1]

    def serve_forever_announced(self, port=0):
        """Bind, print 'PORT n' (the test plugin and bench read it), then serve until killed."""
        bound = self.serve(port)
        print("PORT %d" % bound, flush=True)
        try:
            self.server.serve_forever()
        except KeyboardInterrupt:
            pass

    def start_in_thread(self, port=0):
        bound = self.serve(port)
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        return bound

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def main_for(build_hub, argv=None):
    """Entry point helper for server modules: ``main_for(lambda: hub_with_my_devices())``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    build_hub().serve_forever_announced(args.port)


if __name__ == "__main__":
    main_for(Hub)
