"""A PSAM answering ISO/IEC 7816-3 T=0 at the character level over a simulated UART.

The firmware's UART (boards/unix_sim/sim_uart.py) reaches this device through the hub as
``uart psam``; the reset line is a hub pin watched with ``Hub.on_pin``. What it models:

* ATR on every rising edge of the reset line, built from the settings (TA1, TC2 = WI, historical
  bytes, an extra T=1 offer that makes TCK present) in the direct or the inverse convention. In
  the inverse convention every character on the wire is bit-inverted and bit-reversed, so a UART
  set for the direct convention reads TS 0x3F as 0x03 and must switch to odd parity.
* The single I/O wire: whatever the firmware transmits comes back on its receive line (``echo``).
* The firmware's UART settings are checked against the card's current rate (f * D / F, within
  2 %), even parity in the direct convention (odd in the inverse one, as seen by a direct UART)
  and 2 stop bits. A character sent with the wrong settings is lost (counted in
  ``config_errors``); characters the card sends while the firmware's baud is wrong arrive garbled.
* PPS (only as the first exchange after the ATR), procedure bytes (ACK, ~INS per byte, a mix),
  NULL bytes 0x60 sent at intervals for slow commands, ``61xx`` + GET RESPONSE (chained past 256
  bytes), ``6Cxx`` when Le differs from the data available.
* Faults (one-shot unless ``count`` says more): ``no_atr``, ``late_atr`` (after ``ms``),
  ``short_atr``, ``corrupt_atr`` (bad TCK, or bad TS with ``ts=1``), ``pps_refuse`` (``how``:
  silent, mismatch, default), ``parity`` (``to="reader"``: the next procedure byte arrives with
  a flipped bit; ``to="card"``: the card rejects the next character, its echo is corrupted;
  ``skip=n`` lets n writes of the reader through first),
  ``garbage`` (junk instead of the next procedure byte), ``silence`` (``at="header"`` or
  ``"data"``: the card stops answering until the next reset).

The application behind the characters is any object with ``process_apdu(apdu) -> bytes``
(data + SW); commands reach it in their T=0 shape (case 1: 4 bytes, case 2: header with Le,
case 3/4: header with Lc and data, no Le).
"""

import threading
import time

from tools.sim.uart import UartDevice

FI = (372, 372, 558, 744, 1116, 1488, 1860, 0, 0, 512, 768, 1024, 1536, 2048, 0, 0)
DI = (0, 1, 2, 4, 8, 16, 32, 64, 12, 20, 0, 0, 0, 0, 0, 0)
NULL = 0x60
GET_RESPONSE = 0xC0
# Case-2 instructions: P3 is Le and the card sends data. Everything else receives P3 bytes.
OUTGOING_INS = frozenset((0xB0, 0xB2, 0xC0, 0x84, 0xCA))
BAUD_TOLERANCE = 0.02
ATR_DELAY_MS = 1  # the card answers 400 to 40 000 clocks after the reset edge
# How long a reset waits for the reader's new UART rate to arrive on its own socket. Returned as
# soon as it has: only a reader that really has the wrong rate waits it out. 50 ms was missed
# once on a loaded machine.
CONFIG_GRACE_S = 1.0


def _inverse(b):
    x = ~b & 0xFF
    r = 0
    for _ in range(8):
        r = (r << 1) | (x & 1)
        x >>= 1
    return r


INVERSE = bytes(_inverse(b) for b in range(256))


def build_atr(ta1=0x13, wi=None, hist=b"PSAMSIM", t1=False, inverse=False, ta2=None):
    """Logical ATR bytes (TS 0x3B or 0x3F). ta1=None omits TA1; wi sets TC2; t1 adds a T=1 offer
    in TD2, which makes TCK mandatory; ta2 (specific mode) is sent as TA2."""
    y1 = 0
    body = bytearray()
    if ta1 is not None:
        y1 |= 0x1
        body.append(ta1)
    if wi is not None or t1 or ta2 is not None:
        y1 |= 0x8
        td1 = (0x10 if ta2 is not None else 0) | (0x40 if wi is not None else 0)
        body.append(td1 | (0x80 if t1 else 0))
        if ta2 is not None:
            body.append(ta2)
        if wi is not None:
            body.append(wi)
        if t1:
            body.append(0x01)
    out = bytearray((0x3F if inverse else 0x3B, (y1 << 4) | len(hist)))
    out += body + hist
    if t1:
        x = 0
        for b in out[1:]:
            x ^= b
        out.append(x)
    return bytes(out)


class PsamUart(UartDevice):
    """The card. Register ``serve`` as the hub's ``uart psam`` handler and ``on_reset_pin`` on
    the reset pin (tools/sim/psam_server.py does both)."""

    def __init__(self, app, clk_hz=3571200):
        super().__init__()
        self.app = app
        self.clk_hz = clk_hz
        self.settings = self.default_settings()
        self.faults = {}
        self.gen = 0
        self.reset_stats()
        self._power_off()

    @staticmethod
    def default_settings():
        return {
            "ta1": 0x13,
            "wi": None,
            "hist": b"PSAMSIM",
            "t1": False,
            "ta2": None,  # specific mode: no PPS; bit 5 clear means TA1's rate right after the ATR
            "atr": "",  # hex: send exactly this ATR (logical bytes) instead of building one
            "inverse": False,
            "echo": True,
            "procedure": "ack",  # ack | single | mixed
            "slow_ins": [0x70],
            "nulls": 0,
            "null_ms": 0,
        }

    # ---- control
    def reset_stats(self):
        self.stats = {
            "resets": 0,
            "atrs": 0,
            "pps_ok": 0,
            "pps_refused": 0,
            "chars_in": 0,  # reader -> card, as the card understood them
            "chars_out": 0,  # card -> reader, echo excluded
            "echo": 0,
            "nulls": 0,
            "config_errors": 0,
            "last_config_error": "",
            "parity_errors_out": 0,
            "ignored": 0,
            "apdus": 0,
        }
        self.commands = []  # headers seen, hex, newest last

    def configure(self, **kw):
        with self.lock:
            for key, value in kw.items():
                if key not in self.settings:
                    raise KeyError("unknown PSAM setting %r" % key)
                if key == "hist":
                    value = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
                self.settings[key] = value
            return self.snapshot_settings()

    def snapshot_settings(self):
        s = dict(self.settings)
        s["hist"] = s["hist"].hex()
        return s

    def inject(self, kind, count=1, **params):
        known = (
            "no_atr",
            "late_atr",
            "short_atr",
            "corrupt_atr",
            "pps_refuse",
            "parity",
            "garbage",
            "silence",
        )
        if kind not in known:
            raise KeyError("unknown PSAM fault %r" % kind)
        with self.lock:
            params["left"] = count
            self.faults[kind] = params
        return sorted(self.faults)

    def clear(self, settings=False):
        """Drop pending faults and zero the counters; settings=True also restores the defaults."""
        with self.lock:
            self.faults.clear()
            self.reset_stats()
            if settings:
                self.settings = self.default_settings()

    def snapshot(self):
        with self.lock:
            out = dict(self.stats)
            out["baud"] = self.expected_baud()
            out["mode"] = self.mode
            out["commands"] = list(self.commands[-40:])
            return out

    def _take(self, kind):
        fault = self.faults.get(kind)
        if fault is None:
            return None
        fault["left"] -= 1
        if fault["left"] <= 0:
            del self.faults[kind]
        return fault

    # ---- line state
    def _power_off(self):
        self.mode = "off"
        self.f_idx = 1
        self.d_idx = 1
        self.buf = bytearray()
        self.data = bytearray()
        self.header = b""
        self.pending = b""
        self.pending_sw = b"\x90\x00"
        self.inverse = False
        self.pps_allowed = False
        self.silent_after_procedure = False

    def current_atr(self):
        s = self.settings
        if s["atr"]:
            atr = bytearray.fromhex(s["atr"])
            atr[0] = 0x3F if s["inverse"] else 0x3B
            return bytes(atr)
        return build_atr(s["ta1"], s["wi"], s["hist"], s["t1"], s["inverse"], s["ta2"])

    def card_ta1(self):
        """TA1 of the ATR in force (0x11, the default, when absent)."""
        atr = self.current_atr()
        return atr[2] if atr[1] & 0x10 else 0x11

    def expected_baud(self):
        return self.clk_hz * DI[self.d_idx] / FI[self.f_idx]

    def _config_problem(self):
        cfg = self.config
        baud = cfg.get("baudrate") or 0
        want = self.expected_baud()
        if abs(baud - want) > want * BAUD_TOLERANCE:
            return "baud %s, card runs at %.0f" % (baud, want)
        parity = cfg.get("parity")
        if parity is None or (parity & 1) != (1 if self.inverse else 0):
            return "parity %r, card needs %s" % (parity, "odd" if self.inverse else "even")
        if cfg.get("stop") != 2:
            return "stop bits %r, card needs 2" % (cfg.get("stop"),)
        if cfg.get("bits") != 8:
            return "data bits %r, card needs 8" % (cfg.get("bits"),)
        return None

    def _baud_ok(self):
        baud = self.config.get("baudrate") or 0
        want = self.expected_baud()
        return abs(baud - want) <= want * BAUD_TOLERANCE

    def _parity_ok(self):
        parity = self.config.get("parity")
        return parity is not None and (parity & 1) == (1 if self.inverse else 0)

    def _out(self, logical, flip_first=False):
        """Characters from the card to the reader, converted to the wire and counted."""
        if not logical:
            return
        wire = bytearray(INVERSE[b] for b in logical) if self.inverse else bytearray(logical)
        if flip_first:
            wire[0] ^= 0x80
        if not self._baud_ok():
            wire = bytearray(b ^ 0x55 for b in wire)
        if not self._parity_ok():
            self.stats["parity_errors_out"] += len(wire)
        self.stats["chars_out"] += len(logical)
        self.send(bytes(wire))

    # ---- reset line
    def on_reset_pin(self, level):
        with self.lock:
            self.gen += 1
            self._power_off()
            if not level:
                return
            self.stats["resets"] += 1
            self.inverse = bool(self.settings["inverse"])
            s = self.settings
            atr = self.current_atr()
            self.pps_allowed = s["ta2"] is None
            if self._take("no_atr"):
                self.mode = "dead"
                return
            fault = self._take("corrupt_atr")
            if fault:
                atr = bytearray(atr)
                if fault.get("ts") or not s["t1"]:
                    atr[0] = 0x35  # no TCK to break: break TS
                else:
                    atr[-1] ^= 0x01
            after = "atr"
            if self._take("short_atr"):
                after = "dead"  # stops mid-ATR and stays mute until the next reset
                atr = atr[: max(2, len(atr) // 2)]
            fault = self._take("late_atr")
            delay = fault.get("ms", 200) if fault else ATR_DELAY_MS
            self._later(delay / 1000.0, [bytes(atr)], after, atr=True)

    def _specific_rate(self):
        """In specific mode the card moves to TA1's rate once its ATR is out (TA2 bit 5 clear)."""
        ta2 = self.settings["ta2"]
        if ta2 is not None and not ta2 & 0x10:
            ta1 = self.card_ta1()
            self.f_idx, self.d_idx = ta1 >> 4, ta1 & 0x0F

    def _later(self, delay, parts, next_mode, null_ms=0, atr=False):
        """Send parts after delay (NULLs between them) from a thread; a reset cancels it."""
        gen = self.gen
        self.mode = "busy"

        def run():
            time.sleep(delay)
            if atr:
                self._await_reader_rate(gen)
            for i, part in enumerate(parts):
                if i:
                    time.sleep(null_ms / 1000.0)
                with self.lock:
                    if self.gen != gen:
                        return
                    if part == b"\x60":
                        self.stats["nulls"] += 1
                    last = i == len(parts) - 1
                    if last:
                        # Ready for the reader before it can see the last character.
                        if atr:
                            self.stats["atrs"] += 1
                        if self.mode == "busy":
                            self.mode = next_mode
                    self._out(part)
                    if last and atr:
                        self._specific_rate()

        threading.Thread(target=run, daemon=True).start()

    def _await_reader_rate(self, gen):
        """The reader's UART settings and the reset edge reach the hub on two sockets, so a rate
        change made just before the edge may land a moment after it. On a board the change is
        instant; wait a little for it here, then let a reader that really has the wrong rate
        receive a garbled ATR."""
        deadline = time.monotonic() + CONFIG_GRACE_S
        while time.monotonic() < deadline:
            with self.lock:
                if self.gen != gen or self._baud_ok():
                    return
            time.sleep(0.001)

    # ---- characters from the reader
    def on_data(self, data):
        fault = None
        if self.mode in ("header", "data", "atr") and "parity" in self.faults:
            f = self.faults["parity"]
            if f.get("to") == "card" and f.get("skip", 0) > 0:
                f["skip"] -= 1  # let that many writes through first (e.g. the header)
            elif f.get("to") == "card":
                fault = self._take("parity")
        if self.settings["echo"]:
            echo = bytearray(data)
            if fault:
                echo[0] ^= 0x01  # the card's error signal lands in the echoed character
            self.stats["echo"] += len(echo)
            self.send(bytes(echo))
        if fault:
            self.mode = "dead"
            return
        problem = self._config_problem()
        if problem:
            self.stats["config_errors"] += len(data)
            self.stats["last_config_error"] = problem
            return
        for b in data:
            self._char(INVERSE[b] if self.inverse else b)

    def _char(self, b):
        mode = self.mode
        if mode in ("off", "dead", "busy"):
            self.stats["ignored"] += 1
            return
        self.stats["chars_in"] += 1
        if mode == "atr":
            if b == 0xFF and self.pps_allowed:
                self.mode = "pps"
                self.buf = bytearray((b,))
                return
            self.mode = mode = "header"
            self.buf = bytearray()
        self.pps_allowed = False
        if mode == "pps":
            self.buf.append(b)
            if len(self.buf) >= 2:
                pps0 = self.buf[1]
                n = 3 + sum(1 for bit in (0x10, 0x20, 0x40) if pps0 & bit)
                if len(self.buf) == n:
                    req, self.buf = bytes(self.buf), bytearray()
                    self._pps(req)
        elif mode == "header":
            self.buf.append(b)
            if len(self.buf) == 5:
                header, self.buf = bytes(self.buf), bytearray()
                self._header(header)
        elif mode == "data":
            self.data.append(b)
            if len(self.data) < self.header[4]:
                how = self.settings["procedure"]
                if how == "single":
                    self._out(bytes((self.header[1] ^ 0xFF,)))
                elif how == "mixed" and len(self.data) == 1:
                    self._out(bytes((self.header[1],)))  # ACK: the rest in one go
            else:
                self._execute(bytes(self.header) + bytes(self.data))

    def _pps(self, req):
        self.pps_allowed = False
        x = 0
        for b in req:
            x ^= b
        fault = self._take("pps_refuse")
        if fault:
            self.stats["pps_refused"] += 1
            how = fault.get("how", "silent")
            if how == "mismatch":
                self._out(bytes((0xFF, 0x10, 0x11, 0xFF ^ 0x10 ^ 0x11)))
                self.mode = "dead"  # a failed PPS leaves the card waiting for a reset
            elif how == "default":
                self._out(bytes((0xFF, 0x00, 0xFF)))
                self.mode = "header"
            else:
                self.mode = "dead"
            return
        if x != 0 or req[1] & 0x0F != 0:
            self.stats["pps_refused"] += 1
            self.mode = "dead"  # bad PCK or not T=0: no answer
            return
        if not req[1] & 0x10:
            self.stats["pps_ok"] += 1
            self._out(req)
            self.mode = "header"
            return
        pps1 = req[2]
        ta1 = self.card_ta1()
        fi, di = pps1 >> 4, pps1 & 0x0F
        card_fi, card_di = ta1 >> 4, ta1 & 0x0F
        fits = FI[fi] and DI[di] and FI[fi] == FI[card_fi] and DI[di] <= DI[card_di]
        if pps1 != 0x11 and not fits:
            # Unsupported values: accept the default rate by leaving PPS1 out.
            self.stats["pps_refused"] += 1
            self._out(bytes((0xFF, req[1] & 0x0F, 0xFF ^ (req[1] & 0x0F))))
            self.mode = "header"
            return
        self.stats["pps_ok"] += 1
        self._out(req)  # the echo is sent at the old rate; the new one applies after it
        self.f_idx, self.d_idx = fi, di
        self.mode = "header"

    def _header(self, header):
        self.header = header
        self.stats["apdus"] += 1
        self.commands.append(header.hex())
        ins, p3 = header[1], header[4]
        fault = self._take("silence")
        if fault and fault.get("at", "header") == "header":
            self.mode = "dead"
            return
        self.silent_after_procedure = bool(fault)
        if ins & 0xF0 in (0x60, 0x90) or ins & 1:
            self._status(b"\x6d\x00")
            return
        if ins in OUTGOING_INS:
            self._outgoing(header)
        elif p3 == 0:
            self._execute(header[:4])
        else:
            self.data = bytearray()
            self.mode = "data"
            single = self.settings["procedure"] in ("single", "mixed")
            self._first_procedure(bytes((header[1] ^ 0xFF if single else header[1],)))

    def _first_procedure(self, pb):
        """The procedure byte after a header, where the line faults strike. False: gone dead."""
        if self._take("garbage"):
            self._out(b"\x00\x13\xa5")
            self.mode = "dead"
            return False
        fault = self.faults.get("parity")
        if fault and fault.get("to", "reader") == "reader":
            self._take("parity")
            self._out(pb, flip_first=True)
        else:
            self._out(pb)
        if self.silent_after_procedure:
            self.mode = "dead"
            return False
        return True

    def _status(self, sw):
        self.mode = "header"
        self._out(sw)

    def _outgoing(self, header):
        ins, p3 = header[1], header[4]
        le = p3 or 256
        if ins == GET_RESPONSE and self.pending:
            # Data this T=0 layer held back for a case-4 command. When it holds nothing, the
            # application answers (an application may keep its own T=0-style pending data).
            avail, sw = self.pending, self.pending_sw
            if le > len(avail):
                self._status(bytes((0x6C, len(avail) & 0xFF)))
                return
            data, self.pending = avail[:le], avail[le:]
            rest = len(self.pending)
            sw = bytes((0x61, min(rest, 256) & 0xFF)) if rest else sw
            self._send_data(data, sw)
            return
        resp = self._app(header)
        data, sw = resp[:-2], resp[-2:]
        if not data:
            self._status(sw)
        elif len(data) != le:
            self._status(bytes((0x6C, len(data) & 0xFF)))
        else:
            self._send_data(data, sw)

    def _send_data(self, data, sw):
        ins = self.header[1]
        how = self.settings["procedure"]
        parts = bytearray()
        if how == "ack":
            parts.append(ins)
            parts += data
        else:
            for i, b in enumerate(data):
                if how == "mixed" and i == 1:
                    parts.append(ins)
                    parts += data[1:]
                    break
                parts.append(ins ^ 0xFF)
                parts.append(b)
        self._procedure_then(bytes(parts), sw)

    def _procedure_then(self, body, sw):
        """Send the first procedure byte (with faults applied), the rest and the status word."""
        self.mode = "header"
        if self._first_procedure(body[:1]):
            self._out(body[1:] + sw)

    def _app(self, apdu):
        try:
            resp = bytes(self.app.process_apdu(bytes(apdu)))
        except Exception:  # an application bug answers like a card's internal error
            resp = b"\x6f\x00"
        if len(resp) < 2:
            resp = b"\x6f\x00"
        return resp

    def _execute(self, apdu):
        resp = self._app(apdu)
        data, sw = resp[:-2], resp[-2:]
        if data:
            self.pending, self.pending_sw = data, sw
            sw = bytes((0x61, min(len(data), 256) & 0xFF))
        s = self.settings
        if apdu[1] in s["slow_ins"] and s["nulls"]:
            nulls = [b"\x60"] * s["nulls"]
            self._later(s["null_ms"] / 1000.0, nulls + [sw], "header", s["null_ms"])
            return
        self._status(sw)


class StandinPsamApp:
    """A tiny APDU application for link tests (the real one is tools/sim/psam.py).

    00A4 SELECT -> 9000; 00B0 96 READ BINARY -> 6-byte terminal number; 0084 GET CHALLENGE ->
    Le bytes; 8070 INIT SAM FOR PURCHASE (36 bytes) -> serial(4) + MAC1(4); 8072 CREDIT SAM FOR
    PURCHASE (4 bytes) -> 9000, or 9302 for MAC2 00000000; 80E0 (case 1) -> 9000; 80EE -> its
    data back (case 4); 80EC P1=n -> its data n times (for GET RESPONSE chains)."""

    terminal = bytes.fromhex("010000000001")

    def __init__(self):
        self.serial = 0x100
        self.challenges = 0

    def process_apdu(self, apdu):
        if len(apdu) < 4:
            return b"\x67\x00"
        cla, ins, p1, p2 = apdu[:4]
        body = apdu[5:] if len(apdu) > 5 else b""
        if ins == 0xA4:
            return b"\x90\x00"
        if ins == 0xB0 and p1 == 0x96:
            return self.terminal + b"\x90\x00"
        if ins == 0x84:
            self.challenges += 1
            n = apdu[4] if len(apdu) > 4 and apdu[4] else 256
            return bytes((self.challenges + i) & 0xFF for i in range(n)) + b"\x90\x00"
        if cla == 0x80 and ins == 0x70:
            if len(body) != 0x24:
                return b"\x67\x00"
            self.serial += 1
            mac1 = bytes(sum(body[i::4]) & 0xFF for i in range(4))
            return self.serial.to_bytes(4, "big") + mac1 + b"\x90\x00"
        if cla == 0x80 and ins == 0x72:
            if len(body) != 4:
                return b"\x67\x00"
            return b"\x93\x02" if body == b"\x00" * 4 else b"\x90\x00"
        if ins == 0xC0:
            return b"\x69\x85"  # nothing pending here: the T=0 layer keeps case-4 data
        if cla == 0x80 and ins == 0xE0:
            return b"\x90\x00"
        if cla == 0x80 and ins == 0xEE:
            return body + b"\x90\x00"
        if cla == 0x80 and ins == 0xEC:
            return body * max(1, p1) + b"\x90\x00"
        return b"\x6d\x00"
