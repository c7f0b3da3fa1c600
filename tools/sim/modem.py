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

Each module's own commands live beside the firmware's split of them: tools/sim/modem_simcom.py
(drivers/modem_simcom.py) and tools/sim/modem_quectel.py (drivers/modem_quectel.py); a modem
playing one answers the other's commands ERROR. The HTTP stack both use is tools/sim/modem_http.py;
this file keeps power, the AT line, the 3GPP commands both modules share, network time and faults.

Error codes: SIMCom +HTTPACTION codes follow the A76XX AT manual's HTTP(S) result table (SIM7600
assumed the same); Quectel codes follow the EC2x HTTP(S) manual's list as remembered. Both are
UNCONFIRMED against the modules themselves (see docs/modem.md).
"""

import random
import threading
import time

from tools.sim.modem_common import split as _split
from tools.sim.modem_http import HttpStack
from tools.sim.modem_quectel import QUECTEL, QuectelDialect
from tools.sim.modem_simcom import SIMCOM, SimcomDialect
from tools.sim.uart import UartDevice

DIALECTS = {SIMCOM: SimcomDialect, QUECTEL: QuectelDialect}

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


class ModemSim(SimcomDialect, QuectelDialect, HttpStack, UartDevice):
    """The modem; its dialect's commands come from the class of DIALECTS it plays (`d`)."""

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

    @property
    def d(self):
        """The dialect class this modem plays: its identity, URCs and error codes."""
        return DIALECTS[self.dialect]

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
            self.urc(self.d.POWER_DOWN_URC)
        self.power = False
        self.gen += 1
        self._reset_state()

    def _boot_rdy(self):
        self.urc("RDY")
        for text in self.d.BOOT_URCS:
            self.urc(text)
        self.later(self.timing["sim_ready_ms"], self._boot_sim)

    def _boot_sim(self):
        self.sim_ready = True
        self.urc("+CPIN: READY")
        for text in self.d.SIM_URCS:
            self.urc(text)
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
        self.urc(self.d.PDP_LOST_URC)

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
        attr = "_at_" + uname.lstrip("+").replace("&", "_")
        if any(attr in vars(d) for d in DIALECTS.values()) and attr not in vars(self.d):
            return self.error()  # the other module's command: this one does not know it
        handler = getattr(self, attr, None)
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
        self.reply(self.d.MANUFACTURER)

    def _at_CGMM(self, arg, query):
        self.reply(self.d.MODEL)

    def _at_CGMR(self, arg, query):
        self.reply(self.d.REVISION)

    def _at_CGSN(self, arg, query):
        self.reply("861234050000017")

    def _iccid(self, tag):
        if self.sim_state == "MISSING":
            return self.error(10)
        self.reply("%s: 89860012345678901234" % tag)

    def _tls_cfg(self, arg):
        # TLS settings are recorded; an https:// request needs them (CSSLCFG / QSSLCFG)
        parts = _split(arg)
        self.tls[parts[0].lower()] = parts[1:]
        self.reply()

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
