# MicroPython side of the simulation hub (tools/sim/hub.py): one socket per simulated bus or
# control channel, carrying frames of type (1 byte) | length (2 bytes, big-endian) | payload.
import json
import os
import socket

from micropython import const

_HEADER = const(3)
_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)


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
        self._one = bytearray(1)
        self._scratch = bytearray(32)
        self.kind = 0  # the kind code of the frame recv_into() last read
        try:
            # Header and payload go out as two writes: without this, Nagle's algorithm would
            # hold the second until the hub acknowledged the first.
            self.sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass

    def _readline(self):
        out = bytearray()
        while True:
            ch = self.sock.read(1)
            if not ch:
                raise SimLinkError("hub closed the link")
            if ch == b"\n":
                return bytes(out)
            out += ch

    def _frame(self, kind, n):
        hdr = self._hdr
        hdr[0] = ord(kind) if isinstance(kind, str) else kind
        hdr[1] = n >> 8
        hdr[2] = n & 0xFF
        self.sock.write(hdr)

    def send(self, kind, payload=b""):
        # No allocation: the header from its own buffer, the payload as given (a simulated bus
        # is a C driver on a board, so what it costs here is not the firmware's).
        n = len(payload)
        self._frame(kind, n)
        if n:
            self.sock.write(payload)

    def send_byte_and(self, kind, first, parts):
        """One frame: the byte `first`, then every buffer of `parts` (not joined)."""
        n = 1
        for p in parts:
            n += len(p)
        self._frame(kind, n)
        one = self._one
        one[0] = first
        self.sock.write(one)
        for p in parts:
            if len(p):
                self.sock.write(p)

    def _read_into(self, buf, n):
        got = self.sock.readinto(buf, n) if n else 0
        if got is None or (n and not got):
            raise SimLinkError("hub closed the link")
        if got < n:  # rare: a frame split across TCP segments
            view = memoryview(buf)
            while got < n:
                k = self.sock.readinto(view[got:n])
                if not k:
                    raise SimLinkError("hub closed the link")
                got += k

    def recv_header(self):
        """Read a frame's header; -> its payload length (self.kind: its kind code). The caller
        then reads exactly that many bytes with recv_payload()."""
        hdr = self._hdr
        self._read_into(hdr, _HEADER)
        self.kind = hdr[0]
        return (hdr[1] << 8) | hdr[2]

    def recv_payload(self, buf, n):
        """Exactly n payload bytes into buf (n <= len(buf)): no allocation."""
        self._read_into(buf, n)

    def recv_into(self, buf):
        """A whole frame; its payload into buf (the part beyond len(buf) is read and dropped);
        -> the payload length. No allocation; the kind code is in self.kind."""
        n = self.recv_header()
        keep = min(n, len(buf))
        if keep:
            self._read_into(buf, keep)
        left = n - keep
        scratch = self._scratch
        while left:
            k = min(left, len(scratch))
            self._read_into(scratch, k)
            left -= k
        return n

    def recv(self):
        """-> (kind as a 1-char str, payload bytes)"""
        n = self.recv_header()
        payload = b""
        if n:
            out = bytearray(n)
            self._read_into(out, n)
            payload = bytes(out)
        return chr(self.kind), payload

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
