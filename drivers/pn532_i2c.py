# PN532 over I2C (address 0x24). Every read starts with the status byte (bit 0 = ready); the
# chip may NACK its own address while busy, which is "not ready yet", not an error. A frame read
# consumes it: when a frame is longer than the first read, a NACK frame makes the chip send it
# again whole (as ESPHome's pn532_i2c does), so short answers cost one read.
import time

from linkerr import ChipError, ProtocolError
from micropython import const
from pn532 import FRAME_BUF, NACK, frame_size

ADDRESS = const(0x24)
# STOP to next START. The datasheet says 1.3 ms; libnfc found 1.4 ms too short and uses 5 ms.
_BUS_FREE_MS = const(5)
_WRITE_TRIES = const(5)


class PN532I2C:
    def __init__(self, i2c, addr=ADDRESS, irq=None, first_read=40, bus_free_ms=_BUS_FREE_MS):
        self.i2c = i2c
        self.addr = addr
        self.irq = irq
        self.first_read = first_read
        self.bus_free_us = bus_free_ms * 1000
        self._last = time.ticks_us()
        self._status = bytearray(1)
        self._rd = bytearray(FRAME_BUF + 1)
        self._rdv = memoryview(self._rd)

    def wake(self):
        # The PN532 stretches SCL while it wakes up; nothing to send (libnfc pn532_i2c_wakeup).
        pass

    def _free(self):
        # Every transaction starts a bus-free time after the previous one ended; this also
        # paces the ready polling.
        wait = self.bus_free_us - time.ticks_diff(time.ticks_us(), self._last)
        if wait > 0:
            time.sleep_us(wait)

    def send(self, frame):
        for _ in range(_WRITE_TRIES):
            self._free()
            try:
                self.i2c.writeto(self.addr, frame)
                return
            except OSError:
                pass  # address NACKed: the chip is busy finishing the previous exchange
            finally:
                self._last = time.ticks_us()
        raise ChipError("PN532 does not acknowledge its I2C address")

    def _ready(self, deadline):
        while True:
            if self.irq is not None:
                if self.irq.value() == 0:
                    return True
                time.sleep_ms(1)
            else:
                self._free()
                try:
                    self.i2c.readfrom_into(self.addr, self._status)
                    if self._status[0] & 1:
                        return True
                except OSError:
                    pass  # busy chip NACKs its address
                finally:
                    self._last = time.ticks_us()
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return False

    def _read(self, n):
        """Read status + n bytes; -> True when the status said ready."""
        self._free()
        try:
            self.i2c.readfrom_into(self.addr, self._rdv[: n + 1])
        except OSError:
            return False
        finally:
            self._last = time.ticks_us()
        return bool(self._rd[0] & 1)

    def receive(self, buf, timeout_ms, hint=0):
        # `hint`: the frame length the driver expects (6 for an ACK), read in one go.
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        want = hint or self.first_read
        resent = False
        while True:
            if not self._ready(deadline):
                return 0
            if not self._read(want):
                # Ready went away between status and read: wait again, within the deadline.
                if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                    return 0
                continue
            size = frame_size(self._rdv[1:], want)
            if size < 0:
                raise ProtocolError("no PN532 frame in %d bytes read" % want)
            if size <= want:
                buf[:size] = self._rdv[1 : size + 1]
                return size
            if resent or size > FRAME_BUF:
                raise ProtocolError("PN532 frame of %d bytes does not fit" % size)
            # Longer than the first read: ask the chip to send the same frame again, whole.
            want = size
            resent = True
            self.send(NACK)
