# PN532 over I2C (address 0x24). Every read starts with the status byte (bit 0 = ready); the
# chip may NACK its own address while busy, which is "not ready yet", not an error. A frame read
# consumes it: when a frame is longer than the first read, a NACK frame makes the chip send it
# again whole (as ESPHome's pn532_i2c does), so short answers cost one read.
# No fixed bus-free pause between transactions (libnfc keeps 5 ms): the driver polls the one-byte
# status (or watches the IRQ line) every poll_us until the chip is ready, within the caller's
# deadline, and reads the frame at once when it is (docs/nfc.md "I2C").
import time

from linkerr import ChipError, ProtocolError
from micropython import const
from pn532 import FRAME_BUF, NACK, frame_size

ADDRESS = const(0x24)
_POLL_US = const(500)  # between status polls while the chip works (a 1-byte read each)
_IRQ_LOOK_US = const(100)  # between looks at the IRQ line (a GPIO read)
_WRITE_TRIES = const(25)  # a busy chip NACKing its address: about 25 ms of tries
_WRITE_PAUSE_US = const(1000)


class PN532I2C:
    def __init__(self, i2c, addr=ADDRESS, irq=None, first_read=40, poll_us=_POLL_US):
        self.i2c = i2c
        self.addr = addr
        self.irq = irq
        self.first_read = first_read
        self.poll_us = poll_us
        self.not_ready = 0  # status polls that found the chip busy (bench figures)
        self._status = bytearray(1)
        self._rd = bytearray(FRAME_BUF + 1)
        self._rdv = memoryview(self._rd)

    def wake(self):
        # The PN532 stretches SCL while it wakes up; nothing to send (libnfc pn532_i2c_wakeup).
        pass

    def send(self, frame):
        for i in range(_WRITE_TRIES):
            if i:
                time.sleep_us(_WRITE_PAUSE_US)
            try:
                self.i2c.writeto(self.addr, frame)
                return
            except OSError:
                pass  # address NACKed: the chip is busy finishing the previous exchange
        raise ChipError("PN532 does not acknowledge its I2C address")

    def _ready(self, deadline):
        """Poll until the chip has a frame for us: -> False when the deadline passed first."""
        irq = self.irq
        while True:
            if irq is not None:
                if irq.value() == 0:
                    return True
            else:
                try:
                    self.i2c.readfrom_into(self.addr, self._status)
                    if self._status[0] & 1:
                        return True
                except OSError:
                    pass  # busy chip NACKs its address
                self.not_ready += 1
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return False
            time.sleep_us(_IRQ_LOOK_US if irq is not None else self.poll_us)

    def _read(self, n):
        """Read status + n bytes; -> True when the status said ready."""
        try:
            self.i2c.readfrom_into(self.addr, self._rdv[: n + 1])
        except OSError:
            return False
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
