# The cellular modem as the uplink's Transport (drivers/transport.py): bring-up, health, recovery.
# The AT dialogue is drivers/atmodem.py; what differs between modules (PDP context, the HTTP
# stack, power-off command, URC names) is a dialect object from modem_simcom.py or
# modem_quectel.py. Everything awaits: taps are never delayed by the modem.
#
#   m = ModemTransport(uart, pwrkey, SimcomDialect(), apn="cmnet")
#   status, body = await m.request("POST", "http://host/batch", body, {"X-Sig": sig})
import asyncio
import time

import log
import timeutil
from atmodem import AtEngine, AtError, AtTimeout, fields
from micropython import const
from transport import ModemFault, NetworkDown, TransportError, TransportTimeout

_log = log.get("modem")

REG_HOME = const(1)
REG_ROAMING = const(5)
REG_NAMES = {
    0: "not registered",
    1: "home",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "roaming",
}
_SIM_BUSY = const(14)
_SIM_MISSING = const(10)
_UNSENDABLE = ('"', "\r", "\n")
_REG_CMDS = ("CEREG", "CGREG", "CREG")  # EPS first: LTE modules may leave CREG unregistered


def csq_to_dbm(rssi):
    """3GPP TS 27.007 +CSQ rssi -> dBm (None when 99, unknown)."""
    if rssi == 0:
        return -113
    if 1 <= rssi <= 31:
        return -111 + (rssi - 1) * 2 if rssi < 31 else -51
    return None


def parse_reg(line, query):
    """'+CEREG: 1,5' (query: n,stat) or '+CEREG: 5,...' (URC: stat first) -> stat int."""
    colon = line.find(b":")
    parts = fields(line, line[: colon + 1])
    stat = parts[1] if query else parts[0]
    return int(stat)


def parse_cclk(line):
    """'+CCLK: "26/11/29,20:22:00+32"' (local time, zone in quarter hours) -> validator seconds
    (since 2000-01-01 UTC), or None when the modem has no network time yet."""
    q1 = line.find(b'"')
    q2 = line.find(b'"', q1 + 1)
    if q1 < 0 or q2 < 0:
        raise ValueError("no quoted time")
    text = bytes(line[q1 + 1 : q2]).decode()
    date, _, clock = text.partition(",")
    y, mo, d = (int(x) for x in date.split("/"))
    sign = 1
    cut = clock.find("+")
    if cut < 0:
        cut = clock.find("-")
        sign = -1
    zone = int(clock[cut + 1 :]) * sign if cut >= 0 else 0
    hh, mi, ss = (int(x) for x in (clock[:cut] if cut >= 0 else clock).split(":"))
    y += 2000
    # Modules report their build date (e.g. 80/01/06) until the network sets the clock.
    if y < 2024 or y > 2069 or not (1 <= mo <= 12 and 1 <= d <= 31):
        return None
    if hh > 23 or mi > 59 or ss > 59:
        return None
    return timeutil.to_seconds(y, mo, d, hh, mi, ss) - zone * 900


def parse_ctz(line):
    """'+CTZV: +32' / '+CTZV: +32,26/11/30,06:30:00' / '+CTZE: "+32",0,"2026/11/30,06:30:00"'
    (3GPP TS 27.007 8.41; local time) -> validator seconds, or None when it carries no time."""
    text = bytes(line[line.find(b":") + 1 :]).decode().replace('"', "").strip()
    parts = text.split(",")
    zone = int(parts[0])
    date = None
    for i in range(1, len(parts) - 1):
        if "/" in parts[i] and ":" in parts[i + 1]:
            date = parts[i]
            clock = parts[i + 1]
    if date is None:
        return None
    y, mo, d = (int(x) for x in date.split("/"))
    hh, mi, ss = (int(x) for x in clock.split(":")[:3])
    y += 2000 if y < 100 else 0
    if not (2024 <= y <= 2069 and 1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mi < 60):
        return None
    return timeutil.to_seconds(y, mo, d, hh, mi, ss) - zone * 900


_CTZR = {"quectel": 2}  # +CTZE (with the time) where the module has it; +CTZV elsewhere


class ModemTransport:
    """The Transport of drivers/transport.py over a cellular modem's own HTTP stack."""

    def __init__(
        self,
        uart,
        pwrkey,
        dialect,
        apn="",
        user="",
        password="",
        pwrkey_active=1,
        on_pulse_ms=None,
        off_pulse_ms=None,
        rdy_timeout_ms=20000,
        sim_timeout_ms=10000,
        reg_timeout_ms=60000,
        reg_wait_ms=5000,
        poll_ms=500,
        guard_ms=1000,
        settle_ms=2000,
        probe_ms=300,
        max_body=32768,
        on_time=None,
        baudrate=None,
        txbuf=256,
    ):
        # baudrate (and the UART's txbuf): pace writes to a machine.UART, whose write() blocks
        # the loop once its TX buffer is full (drivers/txpace.py); None for streams that don't.
        pacer = None
        if baudrate:
            from txpace import TxPacer

            pacer = TxPacer(baudrate, txbuf)
        self.at = AtEngine(uart, pacer=pacer)
        self.dialect = dialect
        self.pwrkey = pwrkey
        self.apn = apn
        self.user = user
        self.password = password
        self.pwrkey_active = pwrkey_active
        self.on_pulse_ms = on_pulse_ms or dialect.on_pulse_ms
        self.off_pulse_ms = off_pulse_ms or dialect.off_pulse_ms
        self.rdy_timeout_ms = rdy_timeout_ms
        self.sim_timeout_ms = sim_timeout_ms
        self.reg_timeout_ms = reg_timeout_ms
        self.reg_wait_ms = reg_wait_ms
        self.poll_ms = poll_ms
        self.guard_ms = guard_ms
        self.settle_ms = settle_ms  # after switching off, before the key is pressed again
        self.probe_ms = probe_ms  # how long an 'AT' may take before the modem counts as silent
        self.max_body = max_body
        self.on_time = on_time  # fn(seconds since 2000 UTC) when the network gives the time
        self.ready = False
        self.suspect = False  # it stopped answering: probe, escape or power-cycle first
        self.reg = 0
        self.rssi_dbm = None
        self.pdp = False
        self.ip = None
        self.net_time = None
        # NITZ (docs/time.md): the network sent its time since the module started (a +CTZV or
        # +CTZE URC). Only then does AT+CCLK read the network's time and not the module's own
        # free-running clock, which starts from its build date or wherever it was left.
        self.nitz = False
        self.nitz_count = 0  # time zone reports received: a new one is worth an AT+CCLK?
        self.last_error = None
        self.errors = 0
        self.requests = 0
        self.power_cycles = 0
        self.restarts = 0  # RDY seen outside our own bring-up
        self._booting = False
        self.ppp = False  # the UART belongs to PPP (dial_ppp .. hangup_ppp)
        self._lock = asyncio.Lock()
        pwrkey.value(1 - pwrkey_active)
        at = self.at
        at.on_urc(b"RDY", self._on_rdy)
        at.on_urc(b"+CREG:", self._on_reg)
        at.on_urc(b"+CGREG:", self._on_reg)
        at.on_urc(b"+CEREG:", self._on_reg)
        at.on_urc(b"NORMAL POWER DOWN", self._on_down)
        at.on_urc(b"POWERED DOWN", self._on_down)
        at.on_urc(b"+CTZV:", self._on_ctz)
        at.on_urc(b"+CTZE:", self._on_ctz)
        for pre in dialect.pdp_lost_urcs:
            at.on_urc(pre, self._on_pdp_lost)
        dialect.attach(at)

    # ---- URCs -------------------------------------------------------------------------------
    def _on_ctz(self, line):
        try:
            secs = parse_ctz(line)
        except (ValueError, IndexError):
            _log.warning("bad time zone URC %r", line)
            return
        if not self.nitz:
            _log.info("network time (NITZ) received")
        self.nitz = True
        self.nitz_count += 1
        if secs is not None:
            self.net_time = secs

    def _on_rdy(self, line):
        self.nitz = False  # a restarted module's clock is its own again
        self.at.echo = True  # a fresh boot echoes again until ATE0
        if not self._booting:
            self.restarts += 1
            self.ready = False
            self.pdp = False
            self.at.fail_waiters("modem restarted")
            _log.warning("modem restarted on its own")

    def _on_reg(self, line):
        try:
            stat = parse_reg(line, False)
        except (ValueError, IndexError):
            _log.warning("bad registration URC %r", line)
            return
        if stat != self.reg:
            _log.info("registration: %s", REG_NAMES.get(stat, str(stat)))
        self.reg = stat
        if stat not in (REG_HOME, REG_ROAMING):
            self.pdp = False

    def _on_down(self, line):
        self.ready = False
        self.pdp = False

    def _on_pdp_lost(self, line):
        if self.pdp:
            _log.warning("PDP context lost: %r", line)
        self.pdp = False

    # ---- status -----------------------------------------------------------------------------
    def registered(self):
        return self.reg in (REG_HOME, REG_ROAMING)

    def status(self):
        return {
            "link": "modem",
            "dialect": self.dialect.name,
            "ready": self.ready,
            "registered": self.registered(),
            "registration": REG_NAMES.get(self.reg, str(self.reg)),
            "roaming": self.reg == REG_ROAMING,
            "rssi_dbm": self.rssi_dbm,
            "pdp": self.pdp,
            "ip": self.ip,
            "last_error": self.last_error,
            "errors": self.errors,
            "requests": self.requests,
            "power_cycles": self.power_cycles,
            "restarts": self.restarts,
            "net_time": self.net_time,
            "nitz": self.nitz,
            "ppp": self.ppp,
        }

    def _fail(self, exc):
        self.errors += 1
        self.last_error = "%s: %s" % (type(exc).__name__, exc.args[0] if exc.args else "")
        _log.warning("request failed: %s", self.last_error)
        return exc

    # ---- power ------------------------------------------------------------------------------
    async def _pulse(self, ms):
        self.pwrkey.value(self.pwrkey_active)
        try:
            await asyncio.sleep_ms(ms)
        finally:
            # Even when cancelled: a key left pressed would switch the modem off again.
            self.pwrkey.value(1 - self.pwrkey_active)

    async def power_on(self):
        """Make sure the modem is on and answering AT; pulses the key only when it is silent."""
        self.at.start()
        if await self.at.probe(2, self.probe_ms):
            return
        await self._boot()

    async def _boot(self):
        at = self.at
        rdy = at.expect(b"RDY")
        self._booting = True
        try:
            await self._pulse(self.on_pulse_ms)
            try:
                await rdy.wait(self.rdy_timeout_ms)
            except AtTimeout:
                _log.warning("no RDY after the power key")
            at.reset()
            if not await at.probe(5, 500):
                raise ModemFault("modem does not answer after power-on")
        finally:
            rdy.cancel()
            self._booting = False

    async def power_cycle(self):
        """Off (by command when it still answers, else by the key) and on again."""
        self.power_cycles += 1
        self.ready = False
        self.pdp = False
        at = self.at
        _log.warning("power-cycling the modem")
        if await at.probe(1, self.probe_ms):
            try:
                await at.command(self.dialect.power_off_cmd, 5000)
            except (AtError, AtTimeout):
                pass
        else:
            await self._pulse(self.off_pulse_ms)
        await asyncio.sleep_ms(self.settle_ms)
        at.reset()
        if await at.probe(1, self.probe_ms):
            return  # the key found it off (not hung) and switched it on: fine as well
        await self._boot()

    async def escape(self):
        """Leave a data mode or an input prompt the modem is stuck in (ESC, then +++ with guard
        times), and tell whether it answers AT afterwards."""
        at = self.at
        await at.send_raw(b"\x1b")
        await asyncio.sleep_ms(self.guard_ms)
        await at.send_raw(b"+++")
        await asyncio.sleep_ms(self.guard_ms)
        at.reset()
        at.echo = True
        return await at.probe(2, self.probe_ms)

    async def recover(self):
        """Back to a modem answering AT: probe, escape, power-cycle, in that order."""
        at = self.at
        at.start()
        self.ready = False
        if await at.probe(2, self.probe_ms):
            self.suspect = False
            return
        if await self.escape():
            _log.info("modem answered again after an escape")
            self.suspect = False
            return
        await self.power_cycle()
        self.suspect = False

    # ---- bring-up ---------------------------------------------------------------------------
    async def start(self):
        """Power on if needed and bring the modem to registered with a PDP context."""
        at = self.at
        if self.suspect:
            await self.recover()
        else:
            await self.power_on()
        await at.command("ATE0", 1000)
        at.echo = False
        await at.command("AT+CMEE=1", 1000)
        try:
            await at.command("AT+CTZU=1", 1000)  # let the network (NITZ) set the clock
            await at.command("AT+CTZR=%d" % _CTZR.get(self.dialect.name, 1), 1000)
        except AtError:
            pass
        await self._sim_ready()
        for name in _REG_CMDS:
            try:
                await at.command("AT+%s=1" % name, 1000)
            except AtError:
                pass  # a module without this domain
        await self._registration(self.reg_timeout_ms)
        await self.signal()
        await self._pdp_up()
        await self.network_time()
        self.ready = True
        _log.info(
            "modem up: %s, %s dBm, ip %s",
            REG_NAMES.get(self.reg),
            self.rssi_dbm,
            self.ip,
        )

    async def _sim_ready(self):
        deadline = time.ticks_add(time.ticks_ms(), self.sim_timeout_ms)
        while True:
            try:
                lines, _ = await self.at.command("AT+CPIN?", 5000, prefix=b"+CPIN:")
                state = fields(lines[0], b"+CPIN:")[0] if lines else ""
                if state == "READY":
                    return
                raise NetworkDown("SIM needs %s" % state)
            except AtError as e:
                if e.code == _SIM_MISSING:
                    raise NetworkDown("no SIM card")
                if e.code != _SIM_BUSY and e.code != "SIM busy":
                    raise NetworkDown("SIM error: %s" % e.line)
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise NetworkDown("SIM stayed busy")
            await asyncio.sleep_ms(self.poll_ms)

    async def query_registration(self):
        best = 0
        for name in _REG_CMDS:
            pre = ("+%s:" % name).encode()
            try:
                lines, _ = await self.at.command("AT+%s?" % name, 1000, prefix=pre)
            except AtError:
                continue
            for line in lines:
                try:
                    stat = parse_reg(line, True)
                except (ValueError, IndexError):
                    _log.warning("bad registration answer %r", line)
                    continue
                if stat in (REG_HOME, REG_ROAMING):
                    self.reg = stat
                    return stat
                if stat == 3:
                    best = 3
                elif best != 3 and stat:
                    best = stat
        self.reg = best
        return best

    async def _registration(self, timeout_ms):
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while True:
            stat = await self.query_registration()
            if stat in (REG_HOME, REG_ROAMING):
                return
            if stat == 3:
                raise NetworkDown("registration denied")
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise NetworkDown("not registered (%s)" % REG_NAMES.get(stat, str(stat)))
            await asyncio.sleep_ms(self.poll_ms)

    async def signal(self):
        """Refresh and return the signal level in dBm (None when unknown)."""
        lines, _ = await self.at.command("AT+CSQ", 1000, prefix=b"+CSQ:")
        if lines:
            try:
                self.rssi_dbm = csq_to_dbm(int(fields(lines[0], b"+CSQ:")[0]))
            except (ValueError, IndexError):
                _log.warning("bad CSQ answer %r", lines[0])
        return self.rssi_dbm

    async def _pdp_up(self):
        try:
            self.ip = await self.dialect.pdp_up(self.at, self.apn, self.user, self.password)
        except AtError as e:
            self.pdp = False
            raise NetworkDown("PDP context refused: %s" % e.line)
        self.pdp = True

    async def network_time(self):
        """The network's time (validator seconds) or None; passed to on_time when known. None
        until the network sent NITZ: before that AT+CCLK is the module's own clock."""
        if not self.nitz:
            _log.info("no network time yet (no NITZ since the module started)")
            return None
        try:
            lines, _ = await self.at.command("AT+CCLK?", 1000, prefix=b"+CCLK:")
            secs = parse_cclk(lines[0]) if lines else None
        except AtError:
            secs = None
        except (ValueError, IndexError):
            _log.warning("bad CCLK answer")
            secs = None
        if secs is not None:
            self.net_time = secs
            if self.on_time is not None:
                self.on_time(secs)
        return secs

    async def dial_ppp(self):
        """Bring the modem up, dial the packet service (ATD*99#) and hand the UART over: after
        CONNECT the line carries PPP, for network.PPP(uart).connect() and a SocketTransport.
        AT commands (and this transport's request()) wait until hangup_ppp()."""
        async with self._lock:
            try:
                if not self.ready or self.suspect:
                    await self.start()
                await self.at.command("ATD*99#", 10000, end=b"CONNECT")
            except AtError as e:
                raise self._fail(NetworkDown("PPP dial refused: %s" % e.line))
            except AtTimeout:
                self.suspect = True
                raise self._fail(ModemFault("no answer to the PPP dial"))
            self.at.stop()  # PPP owns the bytes now
            self.ppp = True
            self.ready = False  # AT state is unknown until we are back in command mode

    async def hangup_ppp(self):
        """Leave PPP data mode (+++ with guard times, ATH); the next request() brings the modem
        up again through AT."""
        async with self._lock:
            self.ppp = False
            self.at.reset()
            self.at.start()
            if not await self.escape():
                self.suspect = True
                raise self._fail(ModemFault("modem stayed in data mode"))
            try:
                await self.at.command("ATH", 2000)
            except AtError:
                pass  # already on hook

    async def refresh(self):
        """Re-read signal and registration for the status display; never raises."""
        if not self.ready:
            return self.status()
        async with self._lock:
            self.at.start()
            try:
                await self.signal()
                await self.query_registration()
            except (AtError, AtTimeout) as e:
                self.last_error = "refresh: %r" % (e,)
        return self.status()

    # ---- the Transport ----------------------------------------------------------------------
    async def _ensure(self):
        if not self.ready or self.suspect:
            try:
                await self.start()
            except AtTimeout as e:
                self.suspect = True
                raise ModemFault("modem not answering during bring-up: %s" % e)
            except AtError as e:
                raise ModemFault("bring-up refused: %s" % e.line)
            return
        if not self.registered():
            await self._registration(self.reg_wait_ms)
        if not self.pdp:
            await self._pdp_up()

    async def request(self, method, url, body=b"", headers=None, timeout_ms=30000, sink=None):
        """One HTTP request through the modem's own stack -> (status, body bytes).
        Raises NetworkDown, TransportTimeout, ConnectionLost or ModemFault (drivers/transport)."""
        if method not in ("GET", "POST"):
            raise ValueError("method %r not supported by the modem stacks" % method)
        if not (url.startswith("http://") or url.startswith("https://")):
            raise ValueError("absolute http(s) URL required: %r" % url)
        for text in [url] + ["%s%s" % kv for kv in (headers or {}).items()]:
            for bad in _UNSENDABLE:
                if bad in text:
                    # Inside AT quotes or a header line these would break the command.
                    _log.error("request refused: %r in %r", bad, text[:40])
                    raise ValueError("%r cannot be sent through the modem" % bad)
        if self.ppp:
            raise self._fail(NetworkDown("the UART carries PPP: use the socket transport"))
        async with self._lock:
            self.requests += 1
            self.at.start()  # (again) on this event loop
            restarts = self.restarts
            try:
                await self._ensure()
                return await self.dialect.http(
                    self.at,
                    method,
                    url,
                    body or b"",
                    headers or {},
                    timeout_ms,
                    self.max_body,
                    sink,
                )
            except Exception as e:
                raise self._fail(await self._classify(e, restarts))

    async def _classify(self, e, restarts):
        """Any failure of a request -> the typed error the uplink sees; marks what recovery the
        next request must do."""
        if self.restarts != restarts:
            self.ready = False
            return ModemFault("modem restarted during the request")
        if isinstance(e, TransportError):
            if isinstance(e, NetworkDown):
                self.pdp = False
            return e
        if isinstance(e, AtTimeout):
            # A command the modem should answer at once went unanswered: hung or stuck.
            self.suspect = True
            self.ready = False
            return ModemFault("modem stopped answering: %s" % e)
        if isinstance(e, AtError):
            # An HTTP command refused: check whether the network is the reason.
            return await self._explain(e)
        if isinstance(e, (ValueError, IndexError)):
            self.suspect = True
            return ModemFault("unparsable modem answer: %r" % e)
        raise e

    async def _explain(self, e):
        try:
            await self.query_registration()
            if not self.registered():
                self.pdp = False
                return NetworkDown("not registered (%s)" % e.line)
            if not await self.dialect.pdp_active(self.at):
                self.pdp = False
                return NetworkDown("no PDP context (%s)" % e.line)
        except AtTimeout:
            self.suspect = True
            self.ready = False
            return ModemFault("modem stopped answering")
        except AtError:
            pass
        mapped = self.dialect.map_error(e.code) if isinstance(e.code, int) else None
        return mapped or ModemFault("modem refused: %s" % e.line)

    async def close(self):
        self.at.stop()


def deadline_left(deadline):
    """ms left until a ticks_ms deadline; raises TransportTimeout when it has passed."""
    left = time.ticks_diff(deadline, time.ticks_ms())
    if left <= 0:
        raise TransportTimeout("request deadline passed")
    return left
