"""AT lines and URCs: drivers/atmodem.py's line parsers (fields, parse_error), drivers/modem.py's
parse_reg/parse_cclk/csq_to_dbm, and AtEngine's receive side (feed: line splitting, echo, data
headers and raw bytes, prompts, final results, URC routing) with a command in flight or not.

What does not run here: AtEngine.command() and ModemTransport need MicroPython's asyncio
(StreamReader on a raw stream, wait_for_ms, sleep_ms), which CPython's asyncio does not have;
they stay with tests/mpy/test_fuzz_atmodem.py and test_fuzz_modem.py. To build an engine, this
target gives atmodem (that module only) a stand-in `asyncio` with the four names its constructor
and _Pending use (StreamReader, StreamWriter, Lock, Event); feeding bytes never awaits.

Input: first byte: bit 0 parsers/engine; for the engine bits 1-3 pick the command in flight (none,
+CSQ query, a '>' prompt, CONNECT with raw bytes, a data header read into a buffer or a sink,
an end-line command), then the rest is fed in pieces whose sizes come from the bytes themselves.
Invariants: parsers raise only ValueError/IndexError (what modem.py catches); feed() never
raises; URC handlers get only their prefix and no line end; raw bytes never pass the buffer;
after reset() an honest answer gives the command exactly its lines and OK.
"""

from tools.fuzz import shim

shim.install()

import atmodem  # noqa: E402
import modem  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "atmodem"


class _Event:
    def __init__(self):
        self.flag = False

    def set(self):
        self.flag = True

    def clear(self):
        self.flag = False

    def is_set(self):
        return self.flag


class _Asyncio:
    """The names AtEngine.__init__ and _Pending touch; nothing here is awaited."""

    Event = _Event

    @staticmethod
    def StreamReader(stream):  # noqa: N802 - asyncio's name
        return None

    @staticmethod
    def StreamWriter(stream, extra):  # noqa: N802
        return None

    @staticmethod
    def Lock():  # noqa: N802
        return None


atmodem.asyncio = _Asyncio
URCS = (b"+CEREG:", b"+CGREG:", b"RDY", b"+HTTPACTION:")
LINES = (
    b'+CCLK: "26/11/29,20:22:00+32"',
    b"+CEREG: 1,5",
    b"+CSQ: 21,99",
    b"+CME ERROR: 14",
    b"+CMS ERROR: SIM busy",
)


def new_engine(got):
    at = atmodem.AtEngine(object())
    at.echo = False
    at.data_header(b"+HTTPREAD: DATA,")
    for pre in URCS:

        def handler(line, pre=pre):
            # the engine contains a handler's exceptions: a violation is noted, checked later
            if not line.startswith(pre):
                got.append("URC %r routed to %r" % (line, pre))
            if b"\n" in line or line.endswith(b"\r"):
                got.append("line end in a URC line %r" % line)
            got.append(pre)
            if pre == b"+CEREG:":
                modem.parse_reg(line, False)  # may raise: the engine must contain it

        at.on_urc(pre, handler)
    return at


def pending(kind, sunk):
    P = atmodem._Pending
    if kind == 1:
        return P(b"AT+CSQ", b"+CSQ:", None, None, None)
    if kind == 2:
        return P(b"AT+CIPSEND=5", None, b">", None, None)
    if kind == 3:
        p = P(b"AT+QIRD", None, b"CONNECT", memoryview(bytearray(8)), None)
        p.raw_after_connect = 8
        return p
    if kind == 4:
        return P(b"AT+HTTPREAD=0,10", None, None, memoryview(bytearray(10)), b"+HTTPREAD: 0")
    if kind == 5:
        p = P(b"AT+HTTPREAD=0,10", None, None, None, b"+HTTPREAD: 0")
        p.sink = lambda mv: sunk.append(bytes(mv))
        return p
    if kind == 6:
        return P(b"AT+CGMR", None, None, None, None)
    return None


def _parsers(line):
    for fn in (
        lambda x: atmodem.fields(x, x[: x.find(b":") + 1]),
        lambda x: modem.parse_reg(x, True),
        lambda x: modem.parse_reg(x, False),
        modem.parse_cclk,
        lambda x: modem.csq_to_dbm(int(atmodem.fields(x, b"+CSQ:")[0])),
    ):
        try:
            v = fn(line)
        except (ValueError, IndexError):
            continue
        if fn is modem.parse_cclk:
            check(v is None or isinstance(v, int), "cclk %r" % (v,))
    try:
        e = atmodem.parse_error(line)
    except ValueError:  # undecodable: modem.py classifies it (docs/robustness.md)
        return
    check(isinstance(e, atmodem.AtError), "parse_error gave %r" % (e,))


def one_input(data):
    if not data:
        return
    if not data[0] & 1:
        _parsers(data[1:])
        return
    got, sunk = [], []
    at = new_engine(got)
    p = pending(data[0] >> 1 & 7, sunk)
    at._cmd = p
    pos = 1
    while pos < len(data):
        k = 1 + data[pos] % 40
        at.feed(data[pos : pos + k])
        pos += k
    bad = [x for x in got if isinstance(x, str)]
    check(not bad, "; ".join(bad))
    if p is not None:
        check(p.raw is None or p.raw_got <= len(p.raw), "raw past the buffer")
        check(p.prefix is None or all(x.startswith(p.prefix) for x in p.lines), "info lines")
    at.reset()
    p = pending(1, sunk)
    at._cmd = p
    del got[:]
    at.feed(b"\r\n+CEREG: 5\r\n\r\n+CSQ: 21,99\r\n\r\nOK\r\n")
    check(p.done and p.ok and p.error is None and p.lines == [b"+CSQ: 21,99"], "honest CSQ")
    check(got == [b"+CEREG:"], "honest URC")


SEEDS = tuple(b"\x00" + x for x in LINES) + (
    b"\x01\x7f\r\n+CSQ: 21,99\r\n\r\nOK\r\n",
    b"\x03\x7f\r\n+CEREG: 5\r\n\r\n+CSQ: 7,99\r\n\r\nOK\r\n",
    b"\x05\x7f\r\n> ",
    b"\x07\x7f\r\nCONNECT\r\nabcdefgh\r\nOK\r\n",
    b"\x09\x7f\r\n+HTTPREAD: DATA,10\r\n0123456789\r\n+HTTPREAD: 0\r\n\r\nOK\r\n",
    b"\x0b\x7f\r\n+HTTPREAD: DATA,10\r\n0123456789\r\n+HTTPREAD: 0\r\n\r\nOK\r\n",
    b"\x0d\x7f\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS DONE\r\n\r\n+CME ERROR: 3\r\n",
    b"\x01\x7f\r\n+HTTPACTION: 1,200,12\r\n\r\nDOWNLOAD\r\n",
)
