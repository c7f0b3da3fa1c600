# Quectel EC2x / EC200 dialect for drivers/modem.py: PDP with QICSGP/QIACT, HTTP(S) through the
# module's QHTTPCFG/QHTTPURL/QHTTPPOST/QHTTPGET/QHTTPREAD stack. The request header is sent by us
# (requestheader=1) so any header (the uplink's signature) reaches the server.
# Facts: the Quectel EC2x/EC200 HTTP(S) application note and public code (SeeedJP/WioLTEforArduino
# WioLTE.cpp, darshanmirajkar/Quectel_EC21; docs/sources.md); error numbers from that note's list
# as far as known (UNCONFIRMED on the modules, see docs/modem.md).
import time

from atmodem import AtError, AtTimeout, fields
from http_socket import split_url
from micropython import const
from modem import deadline_left
from transport import ConnectionLost, ModemFault, NetworkDown, TransportError, TransportTimeout

_INPUT_S = const(10)  # seconds the module waits for our URL / request bytes

_TIMEOUTS = (702, 722, 726, 727, 728)
_NETWORK = (706, 707, 708, 709, 710, 713, 714)
_CONNECTION = (715, 716, 717, 718, 719, 731)


class QuectelDialect:
    name = "quectel"
    on_pulse_ms = 200  # EC21 ">= 100 ms" (oFono); WioLTE pulses 200 ms
    off_pulse_ms = 750  # oFono's off pulse
    power_off_cmd = "AT+QPOWD=1"
    pdp_lost_urcs = (b'+QIURC: "pdpdeact"',)

    def __init__(self, context=1, ssl_ctx=1, cmd_ms=2000, ca_file="UFS:ca.pem"):
        self.cmd_ms = cmd_ms  # deadline of the quick commands (configuration, STOP)
        self.context = context
        self.ssl_ctx = ssl_ctx
        # The back office's CA certificate in the module's file system (AT+QFUPL) at
        # provisioning; https verifies the server against it (seclevel 1). docs/protocol.md 1.
        self.ca_file = ca_file
        self._configured = None  # (https?) last configuration sent, re-sent after a restart

    def attach(self, at):
        pass

    async def pdp_up(self, at, apn, user, password):
        self._configured = None
        cid = self.context
        auth = 1 if user else 0
        await at.command(
            'AT+QICSGP=%d,1,"%s","%s","%s",%d' % (cid, apn, user, password, auth), self.cmd_ms
        )
        lines, _ = await at.command("AT+QIACT?", self.cmd_ms, prefix=b"+QIACT:")
        for line in lines:
            f = fields(line, b"+QIACT:")
            if f[0] == str(cid) and f[1] == "1":
                return f[3] if len(f) > 3 else None
        await at.command("AT+QIACT=%d" % cid, 150000)
        lines, _ = await at.command("AT+QIACT?", self.cmd_ms, prefix=b"+QIACT:")
        for line in lines:
            f = fields(line, b"+QIACT:")
            if f[0] == str(cid):
                return f[3] if len(f) > 3 else None
        raise AtError("context %d not active" % cid)

    async def pdp_active(self, at):
        lines, _ = await at.command("AT+QIACT?", self.cmd_ms, prefix=b"+QIACT:")
        for line in lines:
            f = fields(line, b"+QIACT:")
            if f[0] == str(self.context):
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

    async def _configure(self, at, https):
        if self._configured == https:
            return
        cid = self.context
        await at.command('AT+QHTTPCFG="contextid",%d' % cid, self.cmd_ms)
        await at.command('AT+QHTTPCFG="requestheader",1', self.cmd_ms)
        await at.command('AT+QHTTPCFG="responseheader",0', self.cmd_ms)
        if https:
            ctx = self.ssl_ctx
            await at.command('AT+QHTTPCFG="sslctxid",%d' % ctx, self.cmd_ms)
            await at.command('AT+QSSLCFG="sslversion",%d,4' % ctx, self.cmd_ms)
            await at.command('AT+QSSLCFG="ciphersuite",%d,0XFFFF' % ctx, self.cmd_ms)
            await at.command('AT+QSSLCFG="cacert",%d,"%s"' % (ctx, self.ca_file), self.cmd_ms)
            await at.command('AT+QSSLCFG="seclevel",%d,1' % ctx, self.cmd_ms)
            await at.command('AT+QSSLCFG="sni",%d,1' % ctx, self.cmd_ms)
        self._configured = https

    async def http(self, at, method, url, body, headers, timeout_ms, max_body, sink=None):
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        https, host, port, path = split_url(url)
        try:
            await self._configure(at, https)
        except AtError:
            self._configured = None
            raise
        raw_url = url.encode()
        await at.command(
            "AT+QHTTPURL=%d,%d" % (len(raw_url), _INPUT_S),
            self.cmd_ms,
            prompt=b"CONNECT",
            data=raw_url,
        )
        default = 443 if https else 80
        head = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (
            method,
            path,
            host if port == default else "%s:%d" % (host, port),
        )
        for name, value in headers.items():
            value = str(value)
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError("header %r has a line break" % name)
            head += "%s: %s\r\n" % (name, value)
        if method == "POST":
            head += "Content-Length: %d\r\n" % len(body)
        head = (head + "\r\n").encode()
        request = (head, body) if method == "POST" else (head,)
        total = len(head) + (len(body) if method == "POST" else 0)
        rsp_s = max(1, deadline_left(deadline) // 1000)
        tag = b"+QHTTPPOST:" if method == "POST" else b"+QHTTPGET:"
        waiter = at.expect(tag)
        try:
            if method == "POST":
                cmd = "AT+QHTTPPOST=%d,%d,%d" % (total, _INPUT_S, rsp_s)
            else:
                cmd = "AT+QHTTPGET=%d,%d,%d" % (rsp_s, total, _INPUT_S)
            # The OK comes once our bytes are in: allow for the UART time of a big body.
            ms = self.cmd_ms + total // 8
            await at.command(cmd, ms, prompt=b"CONNECT", data=request)
            try:
                line = await waiter.wait(deadline_left(deadline))
            except (AtTimeout, TransportTimeout):
                await self._stop(at)
                raise TransportTimeout("no HTTP answer in time")
        finally:
            waiter.cancel()
        f = fields(line, tag)
        err = int(f[0])
        if err:
            raise self.map_error(err)
        status = int(f[1])
        if len(f) < 3:
            raise TransportError("response without a length (chunked) is not supported")
        length = int(f[2])
        stream = sink is not None and status == 206
        if length > max_body and not stream:
            raise TransportError("response of %d bytes exceeds %d" % (length, max_body))
        data = None if stream else bytearray(length)
        if length:
            try:
                lines, got = await at.command(
                    "AT+QHTTPREAD=%d" % _INPUT_S,
                    deadline_left(deadline),
                    raw=sink if stream else data,
                    raw_len=length,
                    end=b"+QHTTPREAD:",
                )
            except AtTimeout:
                raise ConnectionLost("body cut short of %d bytes" % length)
            except AtError as e:
                raise ConnectionLost("body read refused: %s" % e.line)
            done = int(fields(lines[-1], b"+QHTTPREAD:")[0]) if lines else 0
            if done:
                raise self.map_error(done)
            if got < length:
                raise ConnectionLost("body cut at %d of %d bytes" % (got, length))
        if stream:
            return status, length  # the pieces went to the sink as they came
        return status, data  # the bytearray itself: a copy would need a second block as big

    async def _stop(self, at):
        try:
            await at.command("AT+QHTTPSTOP", self.cmd_ms)
        except (AtError, AtTimeout):
            pass
