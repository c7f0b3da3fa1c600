"""A cellular modem on a simulated UART: SIMCom SIM7600 or Quectel EC2x/EC200 AT dialogue.

The firmware's drivers/atmodem.py, modem.py, modem_simcom.py and modem_quectel.py talk to it
byte for byte. What it does, and what it only pretends:

* Power: off until the power key (a pin the firmware drives, wired with ``Hub.on_pin``) is held
  at its active level for ``on_pulse_ms``; then boot URCs with realistic spacing (RDY, +CPIN,
  SMS DONE / PB DONE). Holding the key ``off_pulse_ms`` while on powers it down.
* AT: echo on until ATE0; CMEE numeric errors; SIM busy (+CME ERROR: 14) until the SIM is ready;
  CSQ; CREG/CGREG/CEREG with URCs when enabled; PDP context per dialect; CCLK network time.
* HTTP: the dialect's own stack (HTTPINIT... / QHTTPURL...). Requests are really sent, with
  http.client, to the URL's host (a local HTTP server in tests). ``https://`` URLs need the
  dialect's TLS configuration first but are carried as plain HTTP (the simulator does no TLS).
* Faults (``inject``): no_answer, garbage, urc_mid, reg_lost, pdp_drop, http_5xx,
  reset_mid_body, slow, stuck (a data mode only ``+++`` after a guard time leaves), reboot.

Error codes: SIMCom +HTTPACTION codes follow the A76XX AT manual's HTTP(S) result table (SIM7600
assumed the same); Quectel codes follow the EC2x HTTP(S) manual's list as remembered. Both are
UNCONFIRMED against the modules themselves (see docs/modem.md).
"""

import http.client
import random
import threading
import time
import urllib.parse

from tools.sim.uart import UartDevice

SIMCOM = "simcom"
QUECTEL = "quectel"

DEFAULT_TIMING = {
    "on_pulse_ms": 100,  # key held at least this long switches an off modem on
    "off_pulse_ms": 600,  # key held at least this long switches an on modem off
    "boot_ms": 300,  # key release -> RDY
    "sim_ready_ms": 150,  # RDY -> SIM ready (SIM busy before)
    "reg_ms": 150,  # SIM ready -> registered
    "guard_ms": 200,  # silence around +++
    "urc_ms": 20,  # command OK -> the URC that completes it (HTTP actions)
    "slow_ms": 3000,  # extra delay of a 'slow' HTTP action
}

FAULTS = (
    "no_answer",
    "garbage",
    "urc_mid",
    "reg_lost",
    "pdp_drop",
    "http_5xx",
    "reset_mid_body",
    "slow",
    "stuck",
    "reboot",
)


class _Input:
    # Collecting an exact number of raw bytes after a prompt (DOWNLOAD, CONNECT, '>').
    def __init__(self, n, done, timeout_s):
        self.n = n
        self.buf = bytearray()
        self.done = done
        self.deadline = time.monotonic() + timeout_s


class ModemSim(UartDevice):
    def __init__(self, dialect=SIMCOM, timing=None, seed=1):
        super().__init__()
        self.dialect = dialect
        self.timing = dict(DEFAULT_TIMING)
        if timing:
            self.timing.update(timing)
        self.rng = random.Random(seed)
        self.pwrkey_active = 1  # the board drives the key through a transistor
        self.power = False
        self.gen = 0  # bumps on every power change; stale timers check it
        self.key_since = None
        self.faults = {}
        self.commands = []  # every command line received, for tests
        self.http_log = []  # (method, url, headers, body) forwarded
        self.boots = 0
        self.ppp_dials = 0  # ATD*99# / AT+CGDATA="PPP" answered with CONNECT
        self.network_time = None  # (y, m, d, hh, mm, ss, tz_quarters): a fixed answer (tests)
        # Network time (NITZ, docs/time.md): the network sends it at registration when `nitz`
        # is on, as +CTZV (AT+CTZR=1) or +CTZE (=2, with the local time, 3GPP TS 27.007 8.41);
        # from then on AT+CCLK reads it. `clock()` gives it (validator seconds: the scenario's
        # clock; None: the host's), `time_offset` makes it wrong. Before NITZ the module's own
        # clock answers, which counts from its build date (parse_cclk refuses it).
        self.clock = None
        self.time_offset = 0
        self.tz_quarters = 32
        self.nitz = True
        self.operator_stat = 1  # 1 home, 5 roaming, 3 denied: what registration turns into
        self.sim_state = "READY"  # or "SIM PIN", or "MISSING" (+CME ERROR: 10)
        self.apns = None  # APNs the network accepts (None: any)
        # Connections dropped at chosen points: cumulative offsets in the HTTP body bytes handed
        # to the firmware (cut_bodies_at); what a cut leaves per dialect is in _body_cut.
        self.cut_at = []
        self.wire_bytes = 0  # HTTP bytes both ways on the cellular side (headers and bodies)
        self.body_out = 0
        self.cuts_done = 0
        self._reset_state()

    # ---- state ------------------------------------------------------------------------------
    def _reset_state(self):
        self.echo = True
        self.line = bytearray()
        self.input = None
        self.stuck = False
        self.last_rx = 0.0
        self.sim_ready = False
        self.reg_stat = 0
        self.reg_urc = {"CREG": 0, "CGREG": 0, "CEREG": 0}
        self.pdp = False
        self.apn = None
        self.http = None  # per-dialect HTTP session state
        self.tls = {}
        self.busy = None  # a pending HTTP action's timer
        self.ctzr = 0
        self.nitz_seen = False  # the module's clock was set by the network since power-on
        self.booted_at = time.monotonic()

    def later(self, ms, fn, *args):
        gen = self.gen

        def run():
            with self.lock:
                if self.gen == gen and self.power:
                    fn(*args)

        t = threading.Timer(ms / 1000.0, run)
        t.daemon = True
        t.start()
        return t

    def out(self, data):
        if self.faults.get("no_answer") or not self.power:
            return
        # Pieces of at most 1 KiB, as a UART FIFO would hand them over, never one huge burst.
        for i in range(0, len(data), 1024):
            self.send(data[i : i + 1024])

    def urc(self, text):
        self.out(b"\r\n" + text.encode() + b"\r\n")

    def reply(self, *lines, final="OK"):
        """Info lines then the final result code, in verbose (ATV1) framing."""
        if self._use("garbage"):
            self.out(self._garbage())
            return
        out = b""
        mid = self.faults.get("urc_mid")
        for i, line in enumerate(lines):
            out += b"\r\n" + (line.encode() if isinstance(line, str) else line) + b"\r\n"
            if mid and i == 0:
                out += b'\r\n+CMTI: "SM",3\r\n'
        if mid:
            out += b"\r\n+CEREG: %d\r\n" % self.reg_stat if self.reg_stat else b"\r\nRING\r\n"
        if final:
            out += b"\r\n" + final.encode() + b"\r\n"
        self.out(out)

    def error(self, code=None):
        self.reply(final="ERROR" if code is None else "+CME ERROR: %d" % code)

    def _garbage(self):
        n = self.rng.randrange(20, 400)
        junk = bytes(self.rng.randrange(256) for _ in range(n))
        return junk + b"\r\n" + bytes(self.rng.randrange(33, 127) for _ in range(300)) + b"\r\n"

    # ---- power key --------------------------------------------------------------------------
    def on_pwrkey(self, level):
        with self.lock:
            now = time.monotonic()
            if level == self.pwrkey_active:
                self.key_since = now
                return
            if self.key_since is None:
                return
            held = (now - self.key_since) * 1000
            self.key_since = None
            if not self.power and held >= self.timing["on_pulse_ms"]:
                self._power_on()
            elif self.power and held >= self.timing["off_pulse_ms"]:
                self._power_off(urc=True)

    def _power_on(self):
        self.power = True
        self.gen += 1
        self.boots += 1
        self._reset_state()
        self.faults.pop("no_answer", None)
        self.faults.pop("stuck", None)
        self.later(self.timing["boot_ms"], self._boot_rdy)

    def _power_off(self, urc):
        if urc:
            self.urc("NORMAL POWER DOWN" if self.dialect == SIMCOM else "POWERED DOWN")
        self.power = False
        self.gen += 1
        self._reset_state()

    def _boot_rdy(self):
        self.urc("RDY")
        if self.dialect == QUECTEL:
            self.urc("+CFUN: 1")
        self.later(self.timing["sim_ready_ms"], self._boot_sim)

    def _boot_sim(self):
        self.sim_ready = True
        self.urc("+CPIN: READY")
        if self.dialect == SIMCOM:
            self.urc("SMS DONE")
            self.urc("PB DONE")
        else:
            self.urc("+QIND: SMS DONE")
            self.urc("+QIND: PB DONE")
        self.later(self.timing["reg_ms"], self._register)

    def _register(self):
        if self.faults.get("reg_lost") or self.sim_state != "READY":
            return
        self._set_reg(self.operator_stat)

    def set_network(self, operator_stat=None, sim_state=None):
        """Change the SIM or what the network grants; a running modem follows at once."""
        with self.lock:
            if operator_stat is not None:
                self.operator_stat = int(operator_stat)
            if sim_state is not None:
                self.sim_state = sim_state
            if self.power and self.sim_ready and not self.faults.get("reg_lost"):
                self._set_reg(self.operator_stat if self.sim_state == "READY" else 0)

    def _set_reg(self, stat):
        self.reg_stat = stat
        for name, mode in self.reg_urc.items():
            if mode:
                self.urc("+%s: %d" % (name, stat))
        if stat in (1, 5) and self.nitz:
            self._send_nitz()

    # ---- network time ---------------------------------------------------------------------------
    def network_seconds(self):
        """The network's time now (validator seconds, UTC)."""
        if self.clock is not None:
            t = int(self.clock())
        else:
            t = int(time.time()) - 946684800
        return t + int(self.time_offset)

    def _local(self):
        if self.network_time is not None:
            return self.network_time
        t = time.gmtime(946684800 + self.network_seconds() + self.tz_quarters * 900)
        return t[0], t[1], t[2], t[3], t[4], t[5], self.tz_quarters

    def _send_nitz(self):
        self.nitz_seen = True
        y, mo, d, hh, mi, ss, tzq = self._local()
        if self.ctzr == 1:
            self.urc("+CTZV: %+03d" % tzq)
        elif self.ctzr == 2:
            when = "%04d/%02d/%02d,%02d:%02d:%02d" % (y, mo, d, hh, mi, ss)
            self.urc('+CTZE: "%+03d",0,"%s"' % (tzq, when))

    def _at_CTZR(self, arg, query):
        if query:
            return self.reply("+CTZR: %d" % self.ctzr)
        mode = int(arg or 0)
        if mode not in (0, 1, 2):
            return self.error()
        self.ctzr = mode
        self.reply()

    def set_dialect(self, dialect):
        """Swap the module: it is off afterwards, with no faults, until the key is pulsed."""
        if dialect not in (SIMCOM, QUECTEL):
            raise ValueError("dialect is %r or %r" % (SIMCOM, QUECTEL))
        with self.lock:
            self.power = False
            self.gen += 1
            self.faults.clear()
            self.dialect = dialect
            self.boots = 0
            self.commands.clear()
            self.http_log.clear()
            self._reset_state()

    # ---- faults (ctl) -----------------------------------------------------------------------
    def inject(self, fault, count=1):
        with self.lock:
            if fault not in FAULTS:
                raise ValueError("unknown fault %r (known: %s)" % (fault, ", ".join(FAULTS)))
            if fault == "reg_lost":
                self.faults["reg_lost"] = 1
                self.pdp = False
                self._set_reg(2)  # searching
            elif fault == "pdp_drop":
                self._pdp_lost()
            elif fault == "reboot":
                self._power_off(urc=False)
                self._power_on()
            elif fault == "stuck":
                self.stuck = True
            elif fault == "garbage":
                self.faults["garbage"] = count
                self.out(self._garbage())
            else:
                self.faults[fault] = count
            return dict(self.faults)

    def clear(self, fault=None):
        with self.lock:
            if fault is None:
                self.faults.clear()
                self.stuck = False
            else:
                self.faults.pop(fault, None)
                if fault == "stuck":
                    self.stuck = False
            if (fault in (None, "reg_lost")) and self.power and self.sim_ready:
                if not self.reg_stat or self.reg_stat == 2:
                    self.later(self.timing["reg_ms"], self._register)
            return dict(self.faults)

    def _pdp_lost(self):
        if not self.pdp:
            return
        self.pdp = False
        if self.dialect == SIMCOM:
            self.urc("+CGEV: NW PDN DEACT 1")
        else:
            self.urc('+QIURC: "pdpdeact",1')

    def _use(self, fault):
        n = self.faults.get(fault)
        if not n:
            return False
        if n <= 1:
            del self.faults[fault]
        else:
            self.faults[fault] = n - 1
        return True

    # ---- bytes in ---------------------------------------------------------------------------
    def on_data(self, data):
        now = time.monotonic()
        quiet = (now - self.last_rx) * 1000 >= self.timing["guard_ms"]
        self.last_rx = now
        if not self.power or self.faults.get("no_answer"):
            return
        if data == b"+++" and quiet:
            # Escape: leaves a data mode or an input prompt; answered after the trailing guard.
            was = self.stuck or self.input is not None
            self.stuck = False
            self.input = None
            self.line.clear()
            if was:
                self.later(self.timing["guard_ms"], self.reply)
            return
        if self.stuck:
            return
        if self.input is not None:
            self._take_input(data)
            return
        echo = bytearray()
        for i, b in enumerate(data):
            if self.echo:
                echo.append(b)
            if b == 13:
                text = self.line.decode("latin-1").strip()
                self.line.clear()
                if echo:
                    self.out(bytes(echo))
                    echo.clear()
                if text:
                    self._command(text)
                if self.input is not None:
                    # A prompt opened: the rest of this chunk is its payload.
                    rest = bytes(data[i + 1 :])
                    if rest:
                        self._take_input(rest)
                    return
            elif b == 10:
                continue
            elif b == 0x1B:
                self.line.clear()
            elif len(self.line) < 2048:
                self.line.append(b)
        if echo:
            self.out(bytes(echo))

    def _take_input(self, data):
        inp = self.input
        if time.monotonic() > inp.deadline:
            self.input = None
            self.error()
            return
        if len(inp.buf) == 0 and data[:1] == b"\x1b":
            self.input = None  # ESC cancels a pending input
            self.reply()
            return
        need = inp.n - len(inp.buf)
        inp.buf += data[:need]
        if len(inp.buf) >= inp.n:
            self.input = None
            inp.done(bytes(inp.buf))

    def _prompt(self, prompt, n, done, timeout_s=10):
        self.input = _Input(n, done, timeout_s)
        self.out(b"\r\n" + prompt + b"\r\n" if prompt != b">" else b"\r\n> ")

    # ---- commands ---------------------------------------------------------------------------
    def _command(self, text):
        self.commands.append(text)
        up = text.upper()
        if not up.startswith("AT"):
            self.error()
            return
        body = text[2:]
        ubody = up[2:]
        if ubody == "":
            return self.reply()
        if ubody in ("E0", "E1"):
            self.echo = ubody == "E1"
            return self.reply()
        if ubody.startswith("D*99") or ubody.startswith('+CGDATA="PPP"'):
            # PPP dial: CONNECT, then the line carries PPP frames until +++ after a guard time.
            if self.reg_stat not in (1, 5) or self.apn is None:
                return self.reply(final="NO CARRIER")
            self.reply(final="CONNECT")
            self.stuck = True
            self.ppp_dials += 1
            return None
        if ubody in ("H", "H0"):
            return self.reply()
        name, _, arg = body.partition("=")
        uname = name.upper()
        if uname.endswith("?"):
            uname, arg, query = uname[:-1], "", True
        else:
            query = False
        handler = getattr(self, "_at_" + uname.lstrip("+").replace("&", "_"), None)
        if handler is None:
            return self.error()
        try:
            handler(arg, query)
        except (ValueError, IndexError):
            self.error()

    def _at_CMEE(self, arg, query):
        self.reply()

    def _at_CTZU(self, arg, query):
        self.reply()

    def _at_CPIN(self, arg, query):
        if self.sim_state == "MISSING":
            return self.error(10)  # SIM not inserted
        if not self.sim_ready:
            return self.error(14)  # SIM busy
        self.reply("+CPIN: %s" % self.sim_state)

    # Identity (tools/board/selftest.py reports it): maker, model, firmware, IMEI, SIM ICCID.
    def _at_CGMI(self, arg, query):
        self.reply("SIMCOM INCORPORATED" if self.dialect == SIMCOM else "Quectel")

    def _at_CGMM(self, arg, query):
        self.reply("SIMCOM_SIM7600E-H" if self.dialect == SIMCOM else "EC200U")

    def _at_CGMR(self, arg, query):
        self.reply("+CGMR: LE20B04SIM7600M22" if self.dialect == SIMCOM else "EC200UCNAAR02A10M08")

    def _at_CGSN(self, arg, query):
        self.reply("861234050000017")

    def _iccid(self, tag):
        if self.sim_state == "MISSING":
            return self.error(10)
        self.reply("%s: 89860012345678901234" % tag)

    def _at_CICCID(self, arg, query):
        if self.dialect != SIMCOM:
            return self.error()
        self._iccid("+ICCID")

    def _at_QCCID(self, arg, query):
        if self.dialect == SIMCOM:
            return self.error()
        self._iccid("+QCCID")

    def _at_CSQ(self, arg, query):
        self.reply("+CSQ: %d,99" % (21 if self.reg_stat in (1, 5) else 99))

    def _reg(self, name, arg, query):
        if not self.sim_ready:
            return self.error(14)
        if query:
            return self.reply("+%s: %d,%d" % (name, self.reg_urc[name], self.reg_stat))
        self.reg_urc[name] = int(arg or 0)
        self.reply()

    def _at_CREG(self, arg, query):
        self._reg("CREG", arg, query)

    def _at_CGREG(self, arg, query):
        self._reg("CGREG", arg, query)

    def _at_CEREG(self, arg, query):
        self._reg("CEREG", arg, query)

    def _at_CCLK(self, arg, query):
        if self.nitz_seen:
            y, mo, d, hh, mi, ss, tzq = self._local()
        else:
            # The module's free-running clock since power-on, from its build date.
            up = int(time.monotonic() - self.booted_at)
            y, mo, d, hh, mi, ss, tzq = 1980, 1, 6, up // 3600 % 24, up // 60 % 60, up % 60, 0
        self.reply(
            '+CCLK: "%02d/%02d/%02d,%02d:%02d:%02d%+03d"' % (y % 100, mo, d, hh, mi, ss, tzq)
        )

    def _at_CPOF(self, arg, query):
        self.reply()
        self._power_off(urc=True)

    def _at_QPOWD(self, arg, query):
        self.reply()
        self._power_off(urc=True)

    # PDP, SIMCom style
    def _at_CGDCONT(self, arg, query):
        parts = _split(arg)
        self.apn = parts[2] if len(parts) > 2 else ""
        self.reply()

    def _at_CGACT(self, arg, query):
        if query:
            return self.reply("+CGACT: 1,%d" % self.pdp)
        if self.reg_stat not in (1, 5):
            return self.error(30)  # no network service
        if self.apns is not None and self.apn not in self.apns:
            return self.error()  # the network rejects the APN
        self.pdp = _split(arg)[0] == "1"
        self.reply()

    def _at_CGPADDR(self, arg, query):
        if not self.pdp:
            return self.reply("+CGPADDR: 1,0.0.0.0")
        self.reply("+CGPADDR: 1,10.64.1.7")

    # PDP, Quectel style
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

    # TLS configuration (recorded; https:// needs it)
    def _at_CSSLCFG(self, arg, query):
        parts = _split(arg)
        self.tls[parts[0].lower()] = parts[1:]
        self.reply()

    def _at_QSSLCFG(self, arg, query):
        self._at_CSSLCFG(arg, query)

    # ---- SIMCom HTTP ------------------------------------------------------------------------
    def _at_HTTPINIT(self, arg, query):
        if self.dialect != SIMCOM or self.http is not None:
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

    def cut_bodies_at(self, points):
        """Drop the connection when the body bytes handed out reach each of these offsets."""
        self.cut_at = sorted(int(p) for p in points)
        self.body_out = 0
        self.cuts_done = 0

    def _body_cut(self, n):
        """Bytes of the next `n` to hand out before a planned cut, or None (no cut in them)."""
        while self.cut_at and self.cut_at[0] < self.body_out:
            self.cut_at.pop(0)
        if self.cut_at and self.cut_at[0] < self.body_out + n:
            k = self.cut_at.pop(0) - self.body_out
            self.body_out += k
            self.cuts_done += 1
            return k
        self.body_out += n
        return None

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

    # ---- Quectel HTTP -----------------------------------------------------------------------
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

    # ---- the HTTP stack: real requests to the URL's server ----------------------------------
    def _start_http(self, method, url, headers, body, tls_ok, done):
        simcom = self.dialect == SIMCOM
        err_net = 717 if simcom else 709
        err_tls = 715 if simcom else 731
        delay = self.timing["urc_ms"] / 1000.0
        if not self.pdp:
            result = {"code": err_net}
        elif url.startswith("https://") and not tls_ok:
            result = {"code": err_tls}
        elif self._use("http_5xx"):
            result = {"status": 503, "body": b"service unavailable"}
        else:
            result = None
            if self._use("slow"):
                delay += self.timing["slow_ms"] / 1000.0
        gen = self.gen
        token = object()
        self.busy = token

        def worker():
            # The request runs outside the lock so the modem keeps answering AT meanwhile.
            t0 = time.monotonic()
            res = result or self._forward(method, url, headers, body)
            left = delay - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)
            with self.lock:
                if self.gen != gen or self.busy is not token or not self.power:
                    return  # cancelled (HTTPTERM, QHTTPSTOP) or the modem restarted
                self.busy = None
                if not self.pdp and "code" not in res:
                    res = {"code": err_net}  # the context went down while we waited
                if "error" in res:
                    code = {"reset": 706 if simcom else 717, "connect": 714 if simcom else 716}
                    done(0, b"", code.get(res["error"], 702 if simcom else 701))
                elif "code" in res:
                    done(0, b"", res["code"])
                else:
                    done(res["status"], res["body"], 0)

        threading.Thread(target=worker, daemon=True).start()

    def _forward(self, method, url, headers, body):
        parts = urllib.parse.urlsplit(url.replace("https://", "http://", 1))
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.http_log.append((method, url, dict(headers), bytes(body)))
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
        except (OSError, ValueError):
            return {"error": "connect"}
        sent = conn.send

        def counted(data):
            self.wire_bytes += len(data)
            return sent(data)

        conn.send = counted  # what goes over the air: request line, headers, body
        try:
            conn.request(method, path, body=body if method == "POST" else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            head = "HTTP/1.1 %d %s\r\n" % (resp.status, resp.reason) + str(resp.headers)
            self.wire_bytes += len(head.encode("latin-1")) + len(data)
            return {"status": resp.status, "body": data}
        except http.client.IncompleteRead:
            return {"error": "reset"}
        except ConnectionRefusedError:
            return {"error": "connect"}
        except (OSError, http.client.HTTPException):
            return {"error": "reset"}
        finally:
            conn.close()


def _split(arg):
    out = []
    for part in arg.split(","):
        part = part.strip()
        if len(part) >= 2 and part[0] == '"' and part[-1] == '"':
            part = part[1:-1]
        out.append(part)
    return out
