"""The Quectel EC2x/EC200 dialect of the simulated modem (tools/sim/modem.py), as the firmware's
drivers/modem_quectel.py speaks it: the ICCID, power-down, PDP with QICSGP/QIACT, TLS
configuration and the module's own HTTP(S) stack (QHTTPCFG, QHTTPURL, QHTTPGET, QHTTPPOST,
QHTTPREAD, QHTTPSTOP).

ModemSim takes these commands only while it plays a Quectel module; playing a SIMCom one it
answers them ERROR, as that module would. Everything here runs as a ModemSim method (self is the
modem): the 3GPP commands both modules share, power, registration and faults stay in modem.py.
"""

from tools.sim.modem_common import split as _split

QUECTEL = "quectel"


class QuectelDialect:
    NAME = QUECTEL
    MANUFACTURER = "Quectel"
    MODEL = "EC200U"
    REVISION = "EC200UCNAAR02A10M08"
    POWER_DOWN_URC = "POWERED DOWN"
    BOOT_URCS = ("+CFUN: 1",)  # after RDY
    SIM_URCS = ("+QIND: SMS DONE", "+QIND: PB DONE")
    PDP_LOST_URC = '+QIURC: "pdpdeact",1'
    # +QHTTP... error codes (docs/modem.md): no network, TLS, reset, connect, other
    HTTP_ERRORS = {"net": 709, "tls": 731, "reset": 717, "connect": 716, "other": 701}

    def _at_QCCID(self, arg, query):
        self._iccid("+QCCID")

    def _at_QPOWD(self, arg, query):
        self.reply()
        self._power_off(urc=True)

    def _at_QICSGP(self, arg, query):
        parts = _split(arg)
        self.apn = parts[2]
        self.reply()

    def _at_QIACT(self, arg, query):
        if query:
            if self.pdp:
                return self.reply('+QIACT: 1,1,1,"10.64.1.7"')
            return self.reply()
        if self.reg_stat not in (1, 5) or self.apn is None:
            return self.error()
        if self.apns is not None and self.apn not in self.apns:
            return self.error()
        self.pdp = True
        self.reply()

    def _at_QIDEACT(self, arg, query):
        self.pdp = False
        self.reply()

    def _at_QSSLCFG(self, arg, query):
        self._tls_cfg(arg)

    # ---- HTTP(S) ---------------------------------------------------------------------------

    def _qhttp(self):
        if self.http is None:
            self.http = {"url": None, "reqhdr": 0, "ctx": 1, "sslctx": None, "body": None}
        return self.http

    def _at_QHTTPCFG(self, arg, query):
        h = self._qhttp()
        parts = _split(arg)
        key = parts[0].lower()
        if key == "contextid":
            h["ctx"] = int(parts[1])
        elif key == "requestheader":
            h["reqhdr"] = int(parts[1])
        elif key == "sslctxid":
            h["sslctx"] = int(parts[1])
        elif key not in ("responseheader", "contenttype"):
            return self.error()
        self.reply()

    def _at_QHTTPURL(self, arg, query):
        h = self._qhttp()
        parts = [int(x) for x in _split(arg)]
        if self.busy is not None:
            return self.error(703)

        def done(data):
            h["url"] = data.decode("latin-1")
            self.reply()

        self._prompt(b"CONNECT", parts[0], done, parts[1] if len(parts) > 1 else 60)

    def _quectel_req(self, kind, n, input_s):
        h = self._qhttp()
        if not h["url"] or self.busy is not None:
            return self.error(703 if self.busy is not None else 705)
        if not self.pdp:
            return self.error(709)
        tls_ok = h["sslctx"] is not None and "sslversion" in self.tls

        def send(method, headers, body):
            self.reply()
            self._start_http(
                method,
                h["url"],
                headers,
                body,
                tls_ok,
                lambda st, b, err: self._quectel_done(kind, st, b, err),
            )

        if not h["reqhdr"]:
            if kind == "GET":
                return send("GET", {}, b"")

            return self._prompt(b"CONNECT", n, lambda d: send("POST", {}, d), input_s)

        def parsed(raw):
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ")[0]
            headers = {}
            for line in lines[1:]:
                k, sep, v = line.partition(":")
                if sep and k.strip().lower() not in ("host", "content-length"):
                    headers[k.strip()] = v.strip()
            send(method, headers, body)

        if kind == "GET" and not n:
            return self.error(730)
        self._prompt(b"CONNECT", n, parsed, input_s)

    def _at_QHTTPGET(self, arg, query):
        parts = [int(x) for x in _split(arg)] if arg else [60]
        n = parts[1] if len(parts) > 1 else 0
        self._quectel_req("GET", n, parts[2] if len(parts) > 2 else 60)

    def _at_QHTTPPOST(self, arg, query):
        parts = [int(x) for x in _split(arg)]
        self._quectel_req("POST", parts[0], parts[1] if len(parts) > 1 else 60)

    def _quectel_done(self, kind, status, body, err):
        h = self._qhttp()
        if err:
            h["body"] = None
            return self.urc("+QHTTP%s: %d" % (kind, err))
        h["body"] = body
        self.urc("+QHTTP%s: 0,%d,%d" % (kind, status, len(body)))

    def _at_QHTTPREAD(self, arg, query):
        h = self._qhttp()
        if h["body"] is None:
            return self.error(705)
        body = h["body"]
        h["body"] = None
        k = self._body_cut(len(body))
        if k is not None:
            # Data stops mid-body; the module reports the error once its timer runs out.
            self.out(b"\r\nCONNECT\r\n" + body[:k])
            return
        if self._use("reset_mid_body"):
            self.out(b"\r\nCONNECT\r\n" + body[: len(body) // 2])
            self.later(50, self.urc, "+QHTTPREAD: 717")
            return
        self.out(b"\r\nCONNECT\r\n" + body + b"\r\nOK\r\n")
        self.later(5, self.urc, "+QHTTPREAD: 0")

    def _at_QHTTPSTOP(self, arg, query):
        self.busy = None
        self.reply()
