"""Hub side of the simulated I2C and SPI buses (firmware side: boards/unix_sim/sim_i2c.py and
sim_spi.py).

I2C link frames (one transaction each, answered before the next):
  'W' addr(1) data      -> 'A' (every byte acknowledged) | 'N' (address not acknowledged)
  'R' addr(1) n(2)      -> 'A' n bytes                   | 'N'
An I2C device implements ``i2c_write(data) -> bool`` and ``i2c_read(n) -> bytes | None``
(False/None = NACK the address, as a busy PN532 does).

SPI link frames:
  'C' JSON settings (baudrate, polarity, phase, bits, firstbit: "MSB"/"LSB")  -> no answer
  'X' bytes clocked out by the firmware -> 'X' the same number of bytes clocked in
An SPI device implements ``spi_exchange(data, config) -> bytes`` (same length) and
``spi_select(active: bool)``, called on chip-select edges; the bus wires the chip-select pin by
name through ``Hub.on_pin``. Bytes are exchanged as they sit in the firmware's buffers; a device
that needs a particular bit order checks ``config["firstbit"]`` and refuses the wrong one.
"""

import json
import struct
import threading


class I2CBus:
    def __init__(self, hub):
        self.hub = hub
        self.devices = {}
        self.transactions = 0
        self.bytes = 0

    def attach(self, addr, device):
        self.devices[addr] = device

    def serve(self, stream):
        while True:
            kind, payload = stream.read_frame()
            if not payload:
                stream.write_frame(b"N")
                continue
            addr = payload[0]
            with self.hub.lock:
                self.transactions += 1
                device = self.devices.get(addr)
                if kind == b"W":
                    self.bytes += 1 + len(payload) - 1
                    ok = device is not None and device.i2c_write(bytes(payload[1:]))
                    stream.write_frame(b"A" if ok else b"N")
                elif kind == b"R" and len(payload) == 3:
                    (n,) = struct.unpack(">H", payload[1:3])
                    data = device.i2c_read(n) if device is not None else None
                    if data is None:
                        stream.write_frame(b"N")
                    else:
                        self.bytes += 1 + n
                        data = bytes(data[:n]).ljust(n, b"\xff")
                        stream.write_frame(b"A", data)
                else:
                    stream.write_frame(b"N")


class SPIBus:
    def __init__(self, hub, device, cs_pin):
        self.hub = hub
        self.device = device
        self.config = {"firstbit": "MSB"}
        self.transactions = 0
        self.bytes = 0
        self._lock = threading.Lock()
        hub.on_pin(cs_pin, lambda level: device.spi_select(level == 0))

    def serve(self, stream):
        while True:
            kind, payload = stream.read_frame()
            if kind == b"C":
                self.config = json.loads(payload)
                continue
            if kind == b"X":
                with self.hub.lock:
                    self.transactions += 1
                    self.bytes += len(payload)
                    out = bytes(self.device.spi_exchange(bytes(payload), self.config))
                out = out[: len(payload)].ljust(len(payload), b"\xff")
                stream.write_frame(b"X", out)
