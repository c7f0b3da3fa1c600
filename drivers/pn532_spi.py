# PN532 over SPI: mode 0, LSB first (set with `firstbit`, no software bit reversal). Each
# chip-select window starts with an operation byte: DW writes a frame, SR reads the status
# (bit 0 = ready), DR reads the pending frame, which the chip streams for as long as CS is low.
import time

from linkerr import ProtocolError
from micropython import const
from pn532 import FRAME_BUF, frame_size

_DW = const(0x01)
_SR = const(0x02)
_DR = const(0x03)
_HDR = const(6)  # 00 00 FF LEN LCS TFI, or a whole ACK
# Between looks while the chip works: the IRQ line every 100 us (a GPIO read), the status over
# SPI every 500 us (a 2-byte transfer each). Half a period is the average latency per wait, which
# docs/tap-model.md charges to each command.
_IRQ_LOOK_US = const(100)
_POLL_US = const(500)


class PN532SPI:
    def __init__(self, spi, cs, irq=None, baudrate=1000000, configure=True):
        self.spi = spi
        self.cs = cs
        self.irq = irq
        if configure:
            spi.init(baudrate=baudrate, polarity=0, phase=0, firstbit=spi.LSB)
        cs.value(1)
        self._tx = bytearray(FRAME_BUF + 1)
        self._tx[0] = _DW
        self._txv = memoryview(self._tx)
        self._sr_out = bytes((_SR, 0))
        self._sr_in = bytearray(2)
        self._dr_out = bytes((_DR,) + (0,) * (_HDR + 2))
        self._dr_in = bytearray(_HDR + 3)

    def wake(self):
        # Holding CS low for a few ms wakes a sleeping chip (libnfc pn532_spi_wakeup).
        self.cs.value(0)
        time.sleep_ms(2)
        self.cs.value(1)

    def send(self, frame):
        n = len(frame)
        self._txv[1 : n + 1] = frame
        self.cs.value(0)
        try:
            self.spi.write(self._txv[: n + 1])
        finally:
            self.cs.value(1)

    def _ready(self, deadline):
        while True:
            if self.irq is not None:
                if self.irq.value() == 0:
                    return True
            else:
                self.cs.value(0)
                try:
                    self.spi.write_readinto(self._sr_out, self._sr_in)
                finally:
                    self.cs.value(1)
                # 01 is ready; FF is a MISO line nobody drives (a sleeping chip), not ready.
                if self._sr_in[1] == 1:
                    return True
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return False
            time.sleep_us(_IRQ_LOOK_US if self.irq is not None else _POLL_US)

    def receive(self, buf, timeout_ms, hint=0):
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        if not self._ready(deadline):
            return 0
        hdr = memoryview(self._dr_in)
        self.cs.value(0)
        try:
            self.spi.write_readinto(memoryview(self._dr_out)[: _HDR + 1], hdr[: _HDR + 1])
            got = _HDR
            size = frame_size(hdr[1:], got)
            if size < 0:
                # An extended frame's header is two bytes longer.
                self.spi.readinto(hdr[_HDR + 1 :])
                got = _HDR + 2
                size = frame_size(hdr[1:], got)
                if size < 0:
                    raise ProtocolError("no PN532 frame start over SPI")
            if size > len(buf):
                raise ProtocolError("PN532 frame of %d bytes does not fit" % size)
            buf[:got] = hdr[1 : got + 1]
            if size > got:
                self.spi.readinto(memoryview(buf)[got:size])
            return size
        finally:
            self.cs.value(1)
