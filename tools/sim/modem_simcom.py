"""The SIMCom SIM7600 dialect of the simulated modem (tools/sim/modem.py), as the firmware's
drivers/modem_simcom.py speaks it: the ICCID, power-down, TLS configuration and the module's own
HTTP(S) stack (HTTPINIT, HTTPPARA, HTTPDATA, HTTPACTION, HTTPREAD, HTTPTERM).

ModemSim takes these commands only while it plays a SIMCom module; playing a Quectel one it
answers them ERROR, as that module would. Everything here runs as a ModemSim method (self is the
modem): the 3GPP commands both modules share, power, registration and faults stay in modem.py.
"""

from tools.sim.modem_common import split as _split

SIMCOM = "simcom"


class SimcomDialect:
    NAME = SIMCOM
    MANUFACTURER = "SIMCOM INCORPORATED"
    MODEL = "SIMCOM_SIM7600E-H"
    REVISION = "+CGMR: LE20B04SIM7600M22"
    POWER_DOWN_URC = "NORMAL POWER DOWN"
    BOOT_URCS = ()  # after RDY
    SIM_URCS = ("SMS DONE", "PB DONE")
    PDP_LOST_URC = "+CGEV: NW PDN DEACT 1"
    # +HTTPACTION error codes (docs/modem.md): no network, TLS, reset, connect, other
    HTTP_ERRORS = {"net": 717, "tls": 715, "reset": 706, "connect": 714, "other": 702}

    def _at_CICCID(self, arg, query):
        self._iccid("+ICCID")

    def _at_CPOF(self, arg, query):
        self.reply()
        self._power_off(urc=True)

    def _at_CSSLCFG(self, arg, query):
        self._tls_cfg(arg)

    # ---- HTTP(S) ---------------------------------------------------------------------------

    def _at_HTTPINIT(self, arg, query):
        if self.http is not None:
            return self.error()
        if not self.pdp:
            return self.error()
        self.http = {"url": None, "content": None, "userdata": "", "ssl": None, "data": b""}
        self.reply()

    def _at_HTTPTERM(self, arg, query):
        if self.http is None:
            return self.error()
        self.busy = None
        self.http = None
        self.reply()

    def _at_HTTPPARA(self, arg, query):
        if self.http is None:
            return self.error()
        key, _, value = arg.partition(",")
        key = key.strip('"').upper()
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        if key == "URL":
            self.http["url"] = value
        elif key == "CONTENT":
            self.http["content"] = value
        elif key == "USERDATA":
            self.http["userdata"] = value
        elif key == "SSLCFG":
            self.http["ssl"] = value
        elif key not in ("CONNECTTO", "RECVTO", "ACCEPT", "READMODE"):
            return self.error()
        self.reply()

    def _at_HTTPDATA(self, arg, query):
        if self.http is None:
            return self.error()
        n, ms = (int(x) for x in _split(arg)[:2])

        def done(data):
            self.http["data"] = data
            self.reply()

        self._prompt(b"DOWNLOAD", n, done, ms / 1000.0)

    def _at_HTTPACTION(self, arg, query):
        h = self.http
        if h is None or not h["url"] or self.busy is not None:
            return self.error()
        method = int(arg)
        if method not in (0, 1):
            return self.error()
        self.reply()
        headers = {}
        for item in h["userdata"].split("\\r\\n"):
            k, sep, v = item.partition(":")
            if sep:
                headers[k.strip()] = v.strip()
        if h["content"]:
            headers["Content-Type"] = h["content"]
        tls_ok = h["ssl"] is not None and "sslversion" in self.tls
        self._start_http(
            "POST" if method == 1 else "GET",
            h["url"],
            headers,
            h["data"] if method == 1 else b"",
            tls_ok,
            lambda st, body, err: self._simcom_done(method, st, body, err),
        )

    def _simcom_done(self, method, status, body, err):
        if self.http is None:
            return
        if err:
            self.http["body"] = b""
            return self.urc("+HTTPACTION: %d,%d,0" % (method, err))
        self.http["body"] = body
        self.urc("+HTTPACTION: %d,%d,%d" % (method, status, len(body)))

    def _at_HTTPREAD(self, arg, query):
        h = self.http
        if h is None or "body" not in h:
            return self.error()
        body = h["body"]
        if query:
            return self.reply("+HTTPREAD: LEN,%d" % len(body))
        parts = [int(x) for x in _split(arg)]
        off, size = (parts[0], parts[1]) if len(parts) > 1 else (0, parts[0])
        chunk = body[off : off + size]
        self.reply()
        k = self._body_cut(len(chunk))
        if k is not None:
            # The connection dropped while the module was taking the body: it hands out what
            # it got and says the read is over; the session is gone.
            self.out(b"\r\n+HTTPREAD: DATA,%d\r\n" % k + chunk[:k] + b"\r\n+HTTPREAD: 0\r\n")
            self.http = None
            return
        cut = self._use("reset_mid_body")
        out = b""
        for i in range(0, len(chunk), 1024):
            piece = chunk[i : i + 1024]
            out += b"\r\n+HTTPREAD: DATA,%d\r\n" % len(piece)
            if cut:
                out += piece[: len(piece) // 2]
                self.out(out)
                self.http = None  # the session died with the connection
                return
            out += piece
        out += b"\r\n+HTTPREAD: 0\r\n"
        self.out(out)
