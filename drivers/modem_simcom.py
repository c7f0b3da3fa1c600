# SIMCom SIM7600 dialect for drivers/modem.py: PDP with CGDCONT/CGACT, HTTP(S) through the
# module's HTTPINIT/HTTPPARA/HTTPDATA/HTTPACTION/HTTPREAD/HTTPTERM stack.
# Facts: SIMCom A76XX AT command manual and public code (cdjq/DFRobot_SIM7600, mchobby/micropython-
# A7682E-modem lib/sim76xx/http.py; docs/sources.md); result codes from the manual's HTTP(S) table
# (SIM7600 assumed the same: UNCONFIRMED on the module).
import time

from atmodem import AtError, AtTimeout, fields
from micropython import const
from modem import deadline_left
from transport import ConnectionLost, ModemFault, NetworkDown, TransportError, TransportTimeout

_READ_CHUNK = const(1024)  # the module hands out bodies in pieces of about this size
_DATA_MS = const(10000)  # HTTPDATA input window

_TIMEOUTS = (705, 718)
_NETWORK = (709, 713, 714, 717)
_CONNECTION = (704, 706, 710, 715, 716, 719)


def check_header(name, value):
    """Header names and values travel inside AT quotes: no quotes, no line breaks."""
    for text in (name, value):
        for bad in ('"', "\r", "\n"):
            if bad in text:
                raise ValueError("header %r cannot be sent through the modem" % name)


class SimcomDialect:
    name = "simcom"
    on_pulse_ms = 500  # "type 500 ms" in public SIM7600 code; datasheet UNCONFIRMED
    off_pulse_ms = 2500  # UNCONFIRMED: hold long enough for a power-down
    power_off_cmd = "AT+CPOF"
    pdp_lost_urcs = (b"+CGEV: NW PDN DEACT", b"+CGEV: NW DEACT", b"+CGEV: ME PDN DEACT")

    def __init__(self, tls_version=4, ssl_ctx=0, cmd_ms=2000, ca_file="ca.pem"):
        self.cmd_ms = cmd_ms  # deadline of the quick commands (parameters, TERM)
        self.tls_version = tls_version  # CSSLCFG sslversion 4 = all versions
        self.ssl_ctx = ssl_ctx
        # The back office's CA certificate, stored in the module (AT+CCERTDOWN) at provisioning;
        # https verifies the server against it (authmode 1). docs/protocol.md section 1.
        self.ca_file = ca_file

    def attach(self, at):
        at.data_header(b"+HTTPREAD: DATA,")

    async def pdp_up(self, at, apn, user, password):
        await at.command('AT+CGDCONT=1,"IP","%s"' % apn, self.cmd_ms)
        if user:
            await at.command('AT+CGAUTH=1,1,"%s","%s"' % (user, password), self.cmd_ms)
        await at.command("AT+CGACT=1,1", 30000)
        lines, _ = await at.command("AT+CGPADDR=1", self.cmd_ms, prefix=b"+CGPADDR:")
        ip = fields(lines[0], b"+CGPADDR:")[1] if lines else None
        if not ip or ip == "0.0.0.0":
            raise AtError("no address on context 1")
        return ip

    async def pdp_active(self, at):
        lines, _ = await at.command("AT+CGACT?", self.cmd_ms, prefix=b"+CGACT:")
        for line in lines:
            f = fields(line, b"+CGACT:")
            if f[0] == "1":
                return f[1] == "1"
        return False

    def map_error(self, code):
        if code in _TIMEOUTS:
            return TransportTimeout("modem HTTP timeout (%d)" % code)
        if code in _NETWORK:
            return NetworkDown("modem HTTP network error (%d)" % code)
        if code in _CONNECTION:
            return ConnectionLost("modem HTTP connection error (%d)" % code)
        return ModemFault("modem HTTP error %d" % code)

    async def http(self, at, method, url, body, headers, timeout_ms, max_body, sink=None):
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        try:
            await at.command("AT+HTTPTERM", self.cmd_ms)  # a session left over makes HTTPINIT fail
        except AtError:
            pass
        await at.command("AT+HTTPINIT", 5000)
        try:
            return await self._exchange(at, method, url, body, headers, deadline, max_body, sink)
        finally:
            try:
                await at.command("AT+HTTPTERM", self.cmd_ms)
            except (AtError, AtTimeout):
                pass

    async def _exchange(self, at, method, url, body, headers, deadline, max_body, sink=None):
        if '"' in url:
            raise ValueError("URL cannot contain a quote")
        await at.command('AT+HTTPPARA="URL","%s"' % url, self.cmd_ms)
        if url.startswith("https://"):
            ctx = self.ssl_ctx
            await at.command(
                'AT+CSSLCFG="sslversion",%d,%d' % (ctx, self.tls_version), self.cmd_ms
            )
            await at.command('AT+CSSLCFG="cacert",%d,"%s"' % (ctx, self.ca_file), self.cmd_ms)
            await at.command('AT+CSSLCFG="authmode",%d,1' % ctx, self.cmd_ms)
            await at.command('AT+HTTPPARA="SSLCFG",%d' % ctx, self.cmd_ms)
        extra = []
        for name, value in headers.items():
            value = str(value)
            check_header(name, value)
            if name.lower() == "content-type":
                await at.command('AT+HTTPPARA="CONTENT","%s"' % value, self.cmd_ms)
            else:
                extra.append("%s: %s" % (name, value))
        if extra:
            # Several headers go in one USERDATA, separated by a literal backslash-r-backslash-n.
            await at.command('AT+HTTPPARA="USERDATA","%s"' % "\\r\\n".join(extra), self.cmd_ms)
        if method == "POST":
            await at.command(
                "AT+HTTPDATA=%d,%d" % (len(body), _DATA_MS),
                self.cmd_ms + len(body) // 8,  # UART time of a big body
                prompt=b"DOWNLOAD",
                data=body,
            )
        waiter = at.expect(b"+HTTPACTION:")
        try:
            await at.command("AT+HTTPACTION=%d" % (1 if method == "POST" else 0), self.cmd_ms)
            try:
                line = await waiter.wait(deadline_left(deadline))
            except AtTimeout:
                raise TransportTimeout("no HTTP answer in time")
        finally:
            waiter.cancel()
        f = fields(line, b"+HTTPACTION:")
        status = int(f[1])
        length = int(f[2])
        if status >= 600:
            raise self.map_error(status)
        stream = sink is not None and status == 206
        if length > max_body and not stream:
            raise TransportError("response of %d bytes exceeds %d" % (length, max_body))
        data = None if stream else bytearray(length)
        view = None if stream else memoryview(data)
        off = 0
        while off < length:
            size = min(_READ_CHUNK, length - off)
            try:
                _, got = await at.command(
                    "AT+HTTPREAD=%d,%d" % (off, size),
                    deadline_left(deadline),
                    raw=sink if stream else view[off : off + size],
                    end=b"+HTTPREAD: 0",
                )
            except AtTimeout:
                raise ConnectionLost("body cut at %d of %d bytes" % (off, length))
            except AtError as e:
                raise ConnectionLost("body read refused at %d: %s" % (off, e.line))
            if got < size:
                raise ConnectionLost("body cut at %d of %d bytes" % (off + got, length))
            off += got
        if stream:
            return status, length  # the pieces went to the sink as they came
        return status, data  # the bytearray itself: a copy would need a second block as big
