# machine.UART look-alike for the unix-port simulation board, backed by a device simulator on the
# hub (tools/sim/uart.py). Same constructor and methods the drivers use on an ESP32: read(),
# readinto(), readline(), write(), any(), init(), deinit(), flush(), txdone(), sendbreak();
# `timeout` and `timeout_char` in ms as on the ESP32; pollable by select/asyncio through ioctl.
import io
import json
import select
import time

from ringbuf import RingBuffer
from simlink import SimLink

_MP_STREAM_POLL = 3
_MP_STREAM_POLL_RD = 0x0001
_MP_STREAM_POLL_WR = 0x0004


class SimUART(io.IOBase):
    def __init__(self, device, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        self.device = device
        self.link = SimLink("uart", device)
        self._poll = select.poll()
        self._poll.register(self.link.sock, select.POLLIN)
        self._rx = RingBuffer(kw.get("rxbuf", 4096))
        self.overruns = 0
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

    def _pump(self, wait_ms):
        """Move whatever the hub has sent into the receive ring; wait up to wait_ms for some."""
        got = False
        while self._poll.poll(wait_ms):
            kind, payload = self.link.recv()
            if kind == "D":
                n = self._rx.put(payload)
                self.overruns += len(payload) - n
                got = True
            wait_ms = 0
        return got

    def any(self):
        self._pump(0)
        return len(self._rx)

    def _wait_for(self, n, timeout):
        deadline = time.ticks_add(time.ticks_ms(), timeout)
        self._pump(0)
        while len(self._rx) < n:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                break
            self._pump(left)

    def read(self, n=-1):
        if n is None or n < 0:
            self._wait_for(1, self.timeout)
            n = len(self._rx)
        else:
            self._wait_for(n, self.timeout)
        n = min(n, len(self._rx))
        if not n:
            return None
        out = bytearray(n)
        self._rx.readinto(out)
        return bytes(out)

    def readinto(self, buf, n=None):
        want = len(buf) if n is None else n
        self._wait_for(want, self.timeout)
        got = self._rx.readinto(buf, want)
        return got or None

    def readline(self):
        deadline = time.ticks_add(time.ticks_ms(), self.timeout)
        while True:
            self._pump(0)
            i = self._rx.find(10)
            if i >= 0:
                out = bytearray(i + 1)
                self._rx.readinto(out)
                return bytes(out)
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                break
            self._pump(left)
        return self.read(len(self._rx)) if len(self._rx) else None

    def write(self, data):
        self.link.send("D", bytes(data))
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
