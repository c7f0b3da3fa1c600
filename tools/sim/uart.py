"""Hub side of a simulated UART: the byte stream between firmware and a device simulator.

Frames on the link (see boards/unix_sim/sim_uart.py for the firmware side):
  'D' data bytes, either direction;
  'C' JSON line settings from the firmware (baudrate, bits, parity, stop), sent on init;
  'K' a break condition from the firmware.
A device simulator subclasses UartDevice, gets on_config/on_data/on_break calls in the link's
thread, and answers with send(). Line time is not simulated; a device that must see the right
baud rate (a PSAM after PPS) compares `self.config` itself.
"""

import json
import threading


class UartDevice:
    def __init__(self):
        self.config = {}
        self.stream = None
        self.lock = threading.RLock()
        self.bytes_in = 0  # from the firmware
        self.bytes_out = 0  # to the firmware

    # Called by the hub for every connection of this device.
    def serve(self, stream):
        with self.lock:
            self.stream = stream
        try:
            while True:
                kind, payload = stream.read_frame()
                with self.lock:
                    if kind == b"D":
                        self.bytes_in += len(payload)
                        self.on_data(payload)
                    elif kind == b"C":
                        self.config = json.loads(payload)
                        self.on_config(self.config)
                    elif kind == b"K":
                        self.on_break()
        finally:
            with self.lock:
                if self.stream is stream:
                    self.stream = None

    def send(self, data):
        """Bytes from the device to the firmware; dropped when no firmware is connected."""
        stream = self.stream
        if stream is None or not data:
            return
        self.bytes_out += len(data)
        try:
            for i in range(0, len(data), 0xFFFF):
                stream.write_frame(b"D", bytes(data[i : i + 0xFFFF]))
        except OSError:
            # The firmware's side closed (a power cut) before this link's reader thread noticed:
            # the bytes fall on an unpowered pin, as on a board.
            with self.lock:
                if self.stream is stream:
                    self.stream = None

    def on_data(self, data):
        raise NotImplementedError

    def on_config(self, config):
        pass

    def on_break(self):
        pass
