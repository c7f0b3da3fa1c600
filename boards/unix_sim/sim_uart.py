# machine.UART look-alike for the unix-port simulation board, backed by a device simulator on the
# hub (tools/sim/uart.py). Same constructor and methods the drivers use on an ESP32: read(),
# readinto(), readline(), write(), any(), init(), deinit(), flush(), txdone(), sendbreak();
# `timeout` and `timeout_char` in ms as on the ESP32; pollable by select/asyncio through ioctl.
#
# Memory as on a board: the ESP32 port's receive ring (`rxbuf`) is the UART driver's C buffer,
# outside the MicroPython heap. Here the bytes wait in the link socket's kernel buffer instead,
# and only a small staging ring is in the heap; writes and reads allocate nothing but the new
# object read()/readline() return (as the port's do). Not modelled: bytes lost when `rxbuf`
# overflows (the socket holds them all).
import io
import json
import select
import time

from micropython import const
from ringbuf import RingBuffer
from simlink import SimLink

_MP_STREAM_POLL = const(3)
_MP_STREAM_POLL_RD = const(0x0001)
_MP_STREAM_POLL_WR = const(0x0004)
_DATA = const(0x44)  # "D"
_STAGE = const(256)  # bytes of the receive stream held in the heap at a time


class SimUART(io.IOBase):
    def __init__(self, device, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        self.device = device
        self.link = SimLink("uart", device)
        self._poll = select.poll()
        self._poll.register(self.link.sock, select.POLLIN)
        self.rxbuf = kw.get("rxbuf", 256)
        self._rx = RingBuffer(min(self.rxbuf, _STAGE))
        self._left = 0  # bytes of the data frame being read that are still in the socket
        self._chunk = bytearray(32)
        self.overruns = 0  # kept for callers; never counted (see above)
        self.init(baudrate, bits, parity, stop, **kw)

    def init(self, baudrate=None, bits=None, parity=-1, stop=None, **kw):
        if baudrate is not None:
            self.baudrate = baudrate
        if bits is not None:
            self.bits = bits
        if parity != -1:
            self.parity = parity
        if stop is not None:
            self.stop = stop
        self.timeout = kw.get("timeout", getattr(self, "timeout", 0))
        self.timeout_char = kw.get("timeout_char", getattr(self, "timeout_char", 0))
        cfg = {"baudrate": self.baudrate, "bits": self.bits, "parity": self.parity}
        cfg["stop"] = self.stop
        self.link.send("C", json.dumps(cfg).encode())

    def deinit(self):
        self.link.close()

    def _ready(self, wait_ms):
        for _ in self._poll.ipoll(wait_ms):  # ipoll: no list of results
            return True
        return False

    def _pump(self, wait_ms):
        """Move what the hub has sent into the staging ring while it has room; wait up to
        wait_ms for the first bytes. -> True if any arrived."""
        got = False
        rx = self._rx
        link = self.link
        chunk = self._chunk
        while rx.free():
            if not self._left:
                if not self._ready(wait_ms):
                    break
                wait_ms = 0
                n = link.recv_header()
                if link.kind == _DATA:
                    self._left = n
                else:  # nothing else comes this way; read past it
                    while n:
                        k = min(n, len(chunk))
                        link.recv_payload(chunk, k)
                        n -= k
                continue
            k = min(self._left, rx.free(), len(chunk))
            link.recv_payload(chunk, k)
            for i in range(k):
                rx.put_byte(chunk[i])
            self._left -= k
            got = True
        return got

    def any(self):
        self._pump(0)
        return len(self._rx) + self._left

    def _take(self, buf, got, want, timeout):
        """Move bytes into buf[got:want] until it is full or `timeout` ms pass with it short."""
        rx = self._rx
        deadline = time.ticks_add(time.ticks_ms(), timeout)
        while True:
            self._pump(0)
            while got < want and len(rx):
                buf[got] = rx.get_byte()
                got += 1
            if got >= want:
                return got
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return got
            self._pump(left)

    def read(self, n=-1):
        if n is None or n < 0:
            # Everything there is once the first byte is in (or the timeout passed).
            if not self.any() and self.timeout:
                self._pump(self.timeout)
            out = bytearray()
            rx = self._rx
            while self.any():
                while len(rx):
                    out.append(rx.get_byte())
            return bytes(out) if out else None
        out = bytearray(n)
        got = self._take(out, 0, n, self.timeout)
        if not got:
            return None
        return bytes(out) if got == n else bytes(memoryview(out)[:got])

    def readinto(self, buf, n=None):
        want = len(buf) if n is None else min(n, len(buf))
        got = self._take(buf, 0, want, self.timeout)
        return got or None

    def readline(self):
        out = bytearray()
        rx = self._rx
        deadline = time.ticks_add(time.ticks_ms(), self.timeout)
        while True:
            self._pump(0)
            while len(rx):
                b = rx.get_byte()
                out.append(b)
                if b == 10:
                    return bytes(out)
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return bytes(out) if out else None
            self._pump(left)

    def write(self, data):
        self.link.send("D", data)
        return len(data)

    def sendbreak(self):
        self.link.send("K")

    def flush(self):
        pass

    def txdone(self):
        return True

    def ioctl(self, req, arg):
        if req == _MP_STREAM_POLL:
            ready = 0
            if arg & _MP_STREAM_POLL_RD and self.any():
                ready |= _MP_STREAM_POLL_RD
            if arg & _MP_STREAM_POLL_WR:
                ready |= _MP_STREAM_POLL_WR
            return ready
        return 0
