# The uplink's view of the network: one HTTP request at a time, binary bodies, typed errors.
# Implemented by the modem's own HTTP stack (SIM7600, Quectel dialects) and by plain sockets
# (Wi-Fi on a bench board, PPP). The uplink code does not know which one it has.
#
#   class Transport:
#       async def request(self, method, url, body=b"", headers=None, timeout_ms=30000, sink=None)
#           -> (status: int, body: bytes)
#           With `sink` (a function), the body of a 206 answer (a ranged GET) is not kept: each
#           piece goes to sink(memoryview) as it arrives (it must not raise) and the body
#           returned is its length as an int; other answers come back as usual.
#       def status(self) -> dict   # signal, registration, last error: for display and journal
#
# `url` is absolute ("http://host:port/path"). A response with any HTTP status is returned, not
# raised; only failing to get a response raises one of these.


class TransportError(OSError):
    """Base: no HTTP response was obtained."""


class NetworkDown(TransportError):
    """No registration, no PDP context / IP, or the interface is off."""


class TransportTimeout(TransportError):
    """The request or the response did not complete in time."""


class ConnectionLost(TransportError):
    """The connection dropped mid-request or mid-response (the server may have acted on it)."""


class ModemFault(TransportError):
    """The modem stopped answering or answered nonsense; it will be recovered (power-cycled)."""
