# Paced writes to a UART without stalling the asyncio loop. On the ESP32 port machine.UART.write()
# returns only once all but the TX buffer's worth (txbuf, 256 bytes by default) has left the wire,
# so one 6.5 KB write at 115,200 baud holds the loop (and the tap) for over half a second; and
# the port cannot say how full that buffer is (its poll always reports "writable"). TxPacer
# estimates the backlog from the line rate instead: a writer hands over chunks that fit what the
# buffer has free, and awaits the line for the rest.
import time

from micropython import const

_FIFO = const(128)  # the UART's hardware FIFO: all there is when txbuf is 0
_MIN_CHUNK = const(32)


class TxPacer:
    def __init__(self, baudrate, txbuf=256, bits_per_char=10):
        """baudrate and txbuf as the UART was built with; bits_per_char: start + data + parity +
        stop bits (10 for 8N1)."""
        if baudrate <= 0:
            raise ValueError("baudrate")
        self.char_us = (bits_per_char * 1000000 + baudrate - 1) // baudrate
        # Use three quarters of the buffer: the IDF keeps it as a ring of items with headers,
        # so it holds a little less than txbuf bytes of data.
        self.room = max((txbuf or _FIFO) * 3 // 4, _MIN_CHUNK)
        # Half of that per write, so the next chunk goes in while the previous one drains.
        self.chunk = max(self.room // 2, _MIN_CHUNK)
        self._end = time.ticks_us()  # when the last byte handed over leaves the wire
        self.waits = 0  # times a writer had to await the line
        self.chunks = 0

    def backlog(self):
        """Bytes handed over that have not left the wire yet (an estimate from the line rate)."""
        left = time.ticks_diff(self._end, time.ticks_us())
        return (left + self.char_us - 1) // self.char_us if left > 0 else 0

    def wait_ms(self, n):
        """How long to wait before n more bytes fit the TX buffer (0: now)."""
        left = time.ticks_diff(self._end, time.ticks_us())
        if left < 0:
            left = 0
        over = left + (n - self.room) * self.char_us
        if over <= 0:
            return 0
        return over // 1000 + 1

    def sent(self, n):
        """n bytes were handed to the UART."""
        now = time.ticks_us()
        if time.ticks_diff(self._end, now) < 0:
            self._end = now
        self._end = time.ticks_add(self._end, n * self.char_us)
        self.chunks += 1

    async def write(self, stream, data):
        """Write all of data (bytes-like) to stream in chunks the TX buffer takes at once."""
        import asyncio

        mv = memoryview(data)
        n = len(mv)
        i = 0
        while i < n:
            k = n - i
            if k > self.chunk:
                k = self.chunk
            wait = self.wait_ms(k)
            if wait:
                self.waits += 1
                await asyncio.sleep_ms(wait)
            w = stream.write(mv[i : i + k])
            if w is None:
                w = 0  # a non-blocking stream that took nothing: try again after a pause
                await asyncio.sleep_ms(1)
            self.sent(w)
            i += w
