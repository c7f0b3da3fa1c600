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
        self.init(baudrate, polarity, phase, bits, firstbit)

    def init(self, baudrate=1000000, polarity=0, phase=0, bits=8, firstbit=0, **kw):
        self.firstbit = firstbit
        cfg = {"baudrate": baudrate, "polarity": polarity, "phase": phase, "bits": bits}
        cfg["firstbit"] = "LSB" if firstbit == SimSPI.LSB else "MSB"
        self.link.send("C", json.dumps(cfg).encode())

    def deinit(self):
        self.link.close()

    def _exchange(self, data):
        self.transactions += 1
        self.link.send("X", data)
        kind, payload = self.link.recv()
        return payload

    def write(self, buf):
        self._exchange(bytes(buf))

    def read(self, nbytes, write=0x00):
        return self._exchange(bytes((write,)) * nbytes)

    def readinto(self, buf, write=0x00):
        buf[:] = self._exchange(bytes((write,)) * len(buf))

    def write_readinto(self, write_buf, read_buf):
        read_buf[: len(write_buf)] = self._exchange(bytes(write_buf))
