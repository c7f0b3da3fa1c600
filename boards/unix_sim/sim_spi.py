# machine.SPI look-alike for the unix-port simulation board (hub side: tools/sim/buses.py).
# The chip-select line is an ordinary sim_pin.Pin the driver toggles, as on the ESP32.
import json

from simlink import SimLink


class SimSPI:
    MSB = 0
    LSB = 1

    def __init__(self, bus, baudrate=1000000, polarity=0, phase=0, bits=8, firstbit=0, **kw):
        self.link = SimLink("spi", bus)
        self.transactions = 0
        self._drop = bytearray(0)  # a write's answer: the hub's bytes are read and dropped
        self._filler = bytearray(32)
        self._fillv = []
        self.init(baudrate, polarity, phase, bits, firstbit)

    def init(self, baudrate=1000000, polarity=0, phase=0, bits=8, firstbit=0, **kw):
        self.firstbit = firstbit
        cfg = {"baudrate": baudrate, "polarity": polarity, "phase": phase, "bits": bits}
        cfg["firstbit"] = "LSB" if firstbit == SimSPI.LSB else "MSB"
        self.link.send("C", json.dumps(cfg).encode())

    def deinit(self):
        self.link.close()

    def _exchange_into(self, parts, out):
        # The hub answers with exactly as many bytes as were sent (tools/sim/buses.py).
        self.transactions += 1
        link = self.link
        if len(parts) == 1:
            link.send("X", parts[0])
        else:
            n = 0
            for p in parts:
                n += len(p)
            link._frame("X", n)
            for p in parts:
                link.sock.write(p)
        link.recv_into(out)

    def _fill(self, write, n):
        """The bytes clocked out while reading: `write` n times, from one small buffer."""
        f = self._filler
        if f[0] != write:
            for i in range(len(f)):
                f[i] = write
        v = self._fillv
        del v[:]
        while n > len(f):
            v.append(f)
            n -= len(f)
        if n:
            v.append(memoryview(f)[:n])
        return v

    def write(self, buf):
        self.transactions += 1
        self.link.send("X", buf)
        self.link.recv_into(self._drop)

    def read(self, nbytes, write=0x00):
        out = bytearray(nbytes)
        self.readinto(out, write)
        return bytes(out)

    def readinto(self, buf, write=0x00):
        self._exchange_into(self._fill(write, len(buf)), buf)
        del self._fillv[:]

    def write_readinto(self, write_buf, read_buf):
        self._exchange_into((write_buf,), read_buf)
