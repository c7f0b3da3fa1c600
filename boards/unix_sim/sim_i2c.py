# machine.I2C look-alike for the unix-port simulation board (hub side: tools/sim/buses.py).
# Errors as on the ESP32 port: OSError(ENODEV) when the address is not acknowledged.
# The methods that hand back no new object allocate nothing: on a board the bus is C code, so
# what this stand-in allocated would be charged to the firmware's heap figures.
import errno

from micropython import const
from simlink import SimLink

_ACK = const(0x41)  # "A"


class SimI2C:
    def __init__(self, bus="i2c0", freq=400000, **kw):
        self.link = SimLink("i2c", bus)
        self.freq = freq
        self.transactions = 0
        self._req = bytearray(3)
        self._vec1 = [None]
        self._vec2 = [None, None]

    def _ack(self):
        link = self.link
        link.recv_into(self._req)  # an acknowledgement carries no payload
        if link.kind != _ACK:
            raise OSError(errno.ENODEV)

    def _write(self, addr, parts):
        self.transactions += 1
        self.link.send_byte_and("W", addr, parts)
        self._ack()

    def writeto(self, addr, buf, stop=True):
        v = self._vec1
        v[0] = buf
        try:
            self._write(addr, v)
        finally:
            v[0] = None
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        self._write(addr, vector)
        n = 0
        for part in vector:
            n += len(part)
        return n

    def _read_header(self, addr, nbytes):
        self.transactions += 1
        req = self._req
        req[0] = addr
        req[1] = nbytes >> 8
        req[2] = nbytes & 0xFF
        link = self.link
        link.send("R", req)
        n = link.recv_header()
        if link.kind != _ACK:
            while n:  # drop whatever came with the refusal
                link.recv_payload(req, min(n, 3))
                n -= min(n, 3)
            raise OSError(errno.ENODEV)
        return n

    def readfrom(self, addr, nbytes, stop=True):
        n = self._read_header(addr, nbytes)
        out = bytearray(n)
        if n:
            self.link.recv_payload(out, n)
        return bytes(out)

    def readfrom_into(self, addr, buf, stop=True):
        n = self._read_header(addr, len(buf))
        if n:
            self.link.recv_payload(buf, n)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        req = self._req
        req[0] = memaddr
        v = self._vec2
        v[0] = memoryview(req)[:1]
        v[1] = buf
        try:
            self._write(addr, v)
        finally:
            v[0] = v[1] = None

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        self.writeto_mem(addr, memaddr, b"")
        return self.readfrom(addr, nbytes)

    def scan(self):
        found = []
        for addr in range(0x08, 0x78):
            try:
                self.readfrom(addr, 0)
                found.append(addr)
            except OSError:
                pass
        return found
