"""The simulated PN532's HSU on a pseudo-terminal, so any serial host (nfcpy's ``tty:`` driver,
libnfc, a terminal) can open it as it would open /dev/ttyUSB0.

    chip = PtyPN532(field=Field())     # chip.port: the slave side, e.g. /dev/pts/7
    ...                                # open chip.port at 115200 8N1
    chip.close()

A pty carries bytes, not bits: the speed a host sets on it (termios) cannot be tied to the
bytes already written (a host that switches speed right after its ACK would race the reader),
so the line always runs at the chip's speed here; SetSerialBaudRate still takes effect on the
host's ACK, and the bus tests (tools/sim/uart.py) keep checking speeds. Line time for the
wake-up is counted at the chip's speed. Everything else is ``PN532HSUSim``
(tools/sim/pn532.py): the wake-up, commands, faults.
"""

import os
import select
import termios
import threading
import tty

from tools.sim.pn532 import PN532HSUSim


class PtyPN532(PN532HSUSim):
    def __init__(self, **kw):
        PN532HSUSim.__init__(self, **kw)
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line discipline: a UART is 8-bit clean
        attrs = termios.tcgetattr(self.slave)
        attrs[4] = attrs[5] = termios.B115200
        termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
        self.port = os.ttyname(self.slave)
        self.config = {"baudrate": 115200}
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _line_ok(self):
        return True

    def _read_loop(self):
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                continue
            with self.lock:
                self.config = {"baudrate": self.baud}
                self.bytes_in += len(data)
                self.on_data(data)

    def send(self, data):
        if not data or self._stop.is_set():
            return
        self.bytes_out += len(data)
        try:
            os.write(self.master, bytes(data))
        except OSError:
            pass

    def close(self):
        self._stop.set()
        self._reader.join(1)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
