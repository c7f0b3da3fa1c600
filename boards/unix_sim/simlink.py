# MicroPython side of the simulation hub (tools/sim/hub.py): one socket per simulated bus or
# control channel, carrying frames of type (1 byte) | length (2 bytes, big-endian) | payload.
import json
import os
import socket

_HEADER = 3


class SimLinkError(OSError):
    pass


def hub_address():
    port = os.getenv("SIM_PORT")
    if not port:
        raise SimLinkError("SIM_PORT is not set: start a simulation hub first")
    return ("127.0.0.1", int(port))


class SimLink:
    def __init__(self, kind, name, address=None):
        host, port = address or hub_address()
        self.sock = socket.socket()
        self.sock.connect(socket.getaddrinfo(host, port)[0][-1])
        self.sock.write(("%s %s\n" % (kind, name)).encode())
        line = self._readline()
        if line != b"OK":
            self.sock.close()
            raise SimLinkError("hub refused %s %s: %s" % (kind, name, line.decode()))
        self._hdr = bytearray(_HEADER)

    def _readline(self):
        out = bytearray()
        while True:
            ch = self.sock.read(1)
            if not ch:
                raise SimLinkError("hub closed the link")
            if ch == b"\n":
                return bytes(out)
            out += ch

    def read_exact(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            chunk = self.sock.readinto(view[got:])
            if not chunk:
                raise SimLinkError("hub closed the link")
            got += chunk
        return buf

    def send(self, kind, payload=b""):
        n = len(payload)
        self.sock.write(bytes((ord(kind), n >> 8, n & 0xFF)) + bytes(payload))

    def recv(self):
        """-> (kind as a 1-char str, payload bytes)"""
        hdr = self.read_exact(_HEADER)
        n = (hdr[1] << 8) | hdr[2]
        payload = bytes(self.read_exact(n)) if n else b""
        return chr(hdr[0]), payload

    def close(self):
        self.sock.close()


class Control:
    """JSON commands to the simulated world: cards in the field, faults, audit trails."""

    def __init__(self, address=None):
        self.link = SimLink("ctl", "world", address)

    def call(self, cmd, **args):
        self.link.send("C", json.dumps({"cmd": cmd, "args": args}).encode())
        kind, payload = self.link.recv()
        answer = json.loads(payload)
        if not answer.get("ok"):
            raise SimLinkError("%s: %s" % (cmd, answer.get("error")))
        return answer.get("result")
