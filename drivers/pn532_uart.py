# PN532 over HSU (UART, 115200 8N1 at power-up). The chip sleeps until it sees 0x55 and a long
# run of zeros (libnfc sends 55 55 and 14 zeros); after that, frames are a plain byte stream, so
# receive() reassembles them from whatever has arrived and keeps the rest for the next call.
import time

from linkerr import ProtocolError
from micropython import const
from pn532 import FRAME_BUF, _find_start, frame_size

_WAKE = b"\x55\x55" + bytes(14)
# Between looks at the UART while the chip works: 100 us, so an answer waits 50 us on average
# to be noticed (a looser period is charged to every command in docs/tap-model.md).
_POLL_US = const(100)


class PN532UART:
    def __init__(self, uart, irq=None, gap_ms=20, baudrate=115200):
        self.uart = uart
        self.baudrate = baudrate  # the speed `uart` was opened at
        self.irq = irq
        self.gap_ms = gap_ms  # silence that ends a frame early (a truncated frame)
        self._acc = bytearray(2 * FRAME_BUF)
        self._accv = memoryview(self._acc)
        self._n = 0

    def wake(self):
        self._n = 0
        while self.uart.any():
            self.uart.read()
        self.uart.write(_WAKE)

    def send(self, frame):
        self.uart.write(frame)

    def set_baudrate(self, baud):
        time.sleep_ms(2)  # let the ACK leave before the line speed changes
        self.uart.init(baudrate=baud)
        self.baudrate = baud
        self._n = 0

    def _take(self, buf):
        """One complete frame from the accumulator into buf, else 0."""
        n = self._n
        try:
            size = frame_size(self._acc, n)
        except ProtocolError:
            # Drop through the start code so the next call resynchronises on later bytes.
            p = _find_start(self._acc, n)
            self._drop(p)
            raise
        if size < 0:
            if _find_start(self._acc, n) < 0 and n > 1:
                self._drop(n - 1)  # junk; keep a last 00 that may begin a start code
            return 0
        if size > len(buf):
            self._drop(n)
            raise ProtocolError("PN532 frame of %d bytes does not fit" % size)
        if size > n:
            return 0
        buf[:size] = self._accv[:size]
        self._drop(size)
        return size

    def _drop(self, k):
        n = self._n
        self._acc[: n - k] = self._accv[k:n]
        self._n = n - k

    def receive(self, buf, timeout_ms, hint=0):
        now = time.ticks_ms()
        deadline = time.ticks_add(now, timeout_ms)
        last = now
        while True:
            size = self._take(buf)
            if size:
                return size
            k = self.uart.any()
            now = time.ticks_ms()
            if k:
                k = min(k, len(self._acc) - self._n)
                got = self.uart.readinto(self._accv[self._n : self._n + k]) or 0
                self._n += got
                last = now
                continue
            if self._n > 2 and time.ticks_diff(now, last) > self.gap_ms:
                # A frame started and the line went quiet: it was cut short. Say so now, so
                # the driver can NACK for a fresh copy instead of waiting out its timeout.
                n = self._n
                self._n = 0
                if _find_start(self._acc, n) >= 0:
                    raise ProtocolError("truncated PN532 frame (%d bytes)" % n)
            if time.ticks_diff(deadline, now) <= 0:
                return 0
            time.sleep_us(_POLL_US)
