# machine.I2C look-alike for the unix-port simulation board (hub side: tools/sim/buses.py).
# Errors as on the ESP32 port: OSError(ENODEV) when the address is not acknowledged.
import errno

from simlink import SimLink


class SimI2C:
    def __init__(self, bus="i2c0", freq=400000, **kw):
        self.link = SimLink("i2c", bus)
        self.freq = freq
        self.transactions = 0

    def _write(self, addr, data):
        self.transactions += 1
        self.link.send("W", bytes((addr,)) + bytes(data))
        kind, _ = self.link.recv()
        if kind != "A":
            raise OSError(errno.ENODEV)

    def writeto(self, addr, buf, stop=True):
        self._write(addr, buf)
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        data = bytearray()
        for part in vector:
            data += part
        self._write(addr, data)
        return len(data)

    def readfrom(self, addr, nbytes, stop=True):
        self.transactions += 1
        self.link.send("R", bytes((addr, nbytes >> 8, nbytes & 0xFF)))
        kind, payload = self.link.recv()
        if kind != "A":
            raise OSError(errno.ENODEV)
        return payload

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf), stop)
        buf[: len(data)] = data

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._write(addr, bytes((memaddr,)) + bytes(buf))

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        self._write(addr, bytes((memaddr,)))
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
