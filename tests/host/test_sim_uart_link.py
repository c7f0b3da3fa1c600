"""The hub side of a simulated UART when the firmware's side goes away mid-stream."""

import socket
import threading

from tools.sim.hub import FrameStream
from tools.sim.uart import UartDevice


class Echo(UartDevice):
    def on_data(self, data):
        self.send(data)


def test_bytes_sent_after_the_firmware_closed_are_dropped_not_raised():
    device = Echo()
    ours, theirs = socket.socketpair()
    stream = FrameStream(ours)
    device.stream = stream  # as serve() sets it, before its reader thread sees the close
    theirs.close()
    # A broken pipe may need more than one write to surface; none of them may raise.
    for _ in range(50):
        device.send(b"\r\n+CREG: 2\r\n" * 100)
        if device.stream is None:
            break
    assert device.stream is None
    ours.close()


def test_bytes_reach_a_connected_firmware():
    device = Echo()
    ours, theirs = socket.socketpair()
    stream = FrameStream(ours)
    serving = threading.Thread(target=lambda: _serve_quietly(device, stream), daemon=True)
    serving.start()
    FrameStream(theirs).write_frame(b"D", b"AT\r")
    kind, payload = FrameStream(theirs).read_frame()
    assert (kind, payload) == (b"D", b"AT\r")
    theirs.close()
    serving.join(5)
    assert device.stream is None


def _serve_quietly(device, stream):
    try:
        device.serve(stream)
    except Exception:
        pass
