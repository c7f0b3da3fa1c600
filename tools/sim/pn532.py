"""A PN532 chip at the bus level: the host frame protocol on I2C, SPI and HSU, the commands a
validator uses, and the ISO 14443-4 side to the cards in its field (InDataExchange with MI
chaining both ways, as the chip's firmware does with auto-RATS on).

Facts followed (docs/nfc.md credits the sources): frames ``00 00 FF LEN LCS D4|D5 PD.. DCS 00``,
extended frames ``00 00 FF FF FF LENm LENl LCS ..``, ACK ``00 00 FF 00 FF 00`` (host -> chip: abort
the running command), NACK ``00 00 FF FF 00 00`` (host -> chip: send the last response again),
application error frame ``00 00 FF 01 FF 7F 81 00``. A frame with a bad checksum is ignored (no
ACK). The chip answers every good command frame with an ACK, then its response.

Transports:
* ``PN532I2CSim`` for tools/sim/buses.py ``I2CBus`` at 0x24: every read starts with the status
  byte (bit 0 = ready); a one-byte read only polls; a longer read while ready hands over the
  pending frame (padded with zeros) and consumes it.
* ``PN532SPISim`` for ``SPIBus``: the first byte under chip select is DW 01 / SR 02 / DR 03; DR
  streams the pending frame; a later DR window resumes where the last stopped, the next byte
  coming out during the DR byte itself (as libnfc observed). The chip is LSB first:
  a bus configured MSB first sees every byte bit-reversed both ways.
* ``PN532HSUSim`` (a tools/sim/uart.py ``UartDevice``): asleep at power-up until a 0x55 byte;
  bytes at a baud rate other than the chip's are lost, and its answers arrive garbled.
  SetSerialBaudRate takes effect when the host ACKs it.

Faults (``fault(name, count=1, **params)``): ``ignore`` (command frames lost: no ACK, not run),
``drop_ack`` (ACK lost, command runs), ``drop_response`` (ACK, runs, answer lost),
``corrupt`` (a byte of the answer flipped on the wire; a NACK gets it clean), ``corrupt_always``,
``truncate`` (half the answer), ``garbage`` (random bytes instead of the answer), ``error_frame``,
``nack_bus`` (I2C address NACK, a busy chip), ``lose_host_ack`` (a host ACK is lost),
``slow`` (answer ready after ``ms``), ``psl_no_switch`` (after InPSL the card keeps 106
kbit/s), ``psl_silent`` (the card does not answer the PPS),
``card_leave`` (the card leaves during the next InDataExchange frame, or ``after`` that many more;
``when="before"``: the data never reaches it, ``"after"``: it runs the APDU, the answer is lost).
"""

import random
import threading
import time

from tools.sim import picc as piccmod
from tools.sim.field import DEFAULT_ATS, Field, exchange
from tools.sim.uart import UartDevice

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"
BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1288000)
PENDING = object()  # a command that answers later (InListPassiveTarget waiting for a card)
SYNTAX = object()  # answer with the application error frame

ERR_TIMEOUT = 0x01
ERR_CRC = 0x02
ERR_CONTEXT = 0x27

# RFConfiguration item -> number of ConfigurationData bytes (UM0701 RFConfiguration; nfcpy
# src/nfc/clf/pn532.py writes the analog items 0A..0D with these lengths).
RF_ITEM_SIZES = {0x01: 1, 0x02: 3, 0x04: 1, 0x05: 3, 0x0A: 11, 0x0B: 8, 0x0C: 3, 0x0D: 9}
# PowerDown WakeUpEnable bits of the host interfaces (UM0701 PowerDown).
WAKE_HSU, WAKE_SPI, WAKE_I2C = 0x10, 0x20, 0x80
# CIU registers in the PN532's XRAM (ReadRegister/WriteRegister addresses; the CIU is the
# PN512 core, its register map as nfcpy src/nfc/clf/pn53x.py names it).
CIU_TXMODE, CIU_RXMODE, CIU_TXCONTROL = 0x6302, 0x6303, 0x6304
CIU_FIFODATA, CIU_FIFOLEVEL = 0x6339, 0x633A
CRC_EN = 0x80  # TxMode/RxMode bit 7: the CIU adds / checks CRC_A


def rf_timeout_us(index):
    """RFConfiguration item 02's timeout index -> microseconds (100 us x 2^(n-1); 0: none)."""
    return 0 if not index else 100 << (min(index, 16) - 1)


def build_frame(data, tfi=0xD5):
    """A chip (D5) or host (D4) frame around data = command/response code + parameters."""
    body = bytes((tfi,)) + bytes(data)
    n = len(body)
    dcs = (-sum(body)) & 0xFF
    if n <= 254:
        return b"\x00\x00\xff" + bytes((n, (-n) & 0xFF)) + body + bytes((dcs, 0))
    hi, lo = n >> 8, n & 0xFF
    return b"\x00\x00\xff\xff\xff" + bytes((hi, lo, (-(hi + lo)) & 0xFF)) + body + bytes((dcs, 0))


def parse_host_frames(buf):
    """Consume host frames from buf (a bytearray): -> [("ack"|"nack"|"cmd", data)], leaving an
    incomplete frame in buf. Damaged frames are dropped and counted as ("bad", reason)."""
    events = []
    while True:
        i = buf.find(b"\x00\xff")
        if i < 0:
            del buf[: max(0, len(buf) - 1)]
            return events
        p = i + 2
        if len(buf) < p + 2:
            del buf[:i]
            return events
        ln, lcs = buf[p], buf[p + 1]
        if (ln, lcs) in ((0x00, 0xFF), (0xFF, 0x00)):
            events.append(("ack" if ln == 0 else "nack", b""))
            del buf[: p + 2]
            continue
        if ln == 0xFF and lcs == 0xFF:
            if len(buf) < p + 5:
                del buf[:i]
                return events
            if (buf[p + 2] + buf[p + 3] + buf[p + 4]) & 0xFF:
                events.append(("bad", "extended LCS"))
                del buf[:p]
                continue
            ln = (buf[p + 2] << 8) | buf[p + 3]
            off = p + 5
        else:
            if (ln + lcs) & 0xFF:
                events.append(("bad", "LCS"))
                del buf[:p]
                continue
            off = p + 2
        if len(buf) < off + ln + 1:
            del buf[:i]
            return events
        body = bytes(buf[off : off + ln])
        dcs = buf[off + ln]
        del buf[: off + ln + 1]
        if (sum(body) + dcs) & 0xFF:
            events.append(("bad", "DCS"))
        elif len(body) < 2 or body[0] != 0xD4:
            events.append(("bad", "TFI"))
        else:
            events.append(("cmd", body[1:]))


class PN532Core:
    """Chip state and commands; transports subclass it and implement _emit()."""

    def __init__(self, field=None, support=0x07, hub=None, irq_pin=None, seed=1):
        self.field = field if field is not None else Field()
        self.field.listeners.append(self._field_changed)
        self.lock = threading.RLock()
        self.hub = hub
        self.irq_pin = irq_pin
        self.rng = random.Random(seed)
        self.support = support
        self.max_resp = 261  # InDataExchange data per answer before MI chaining
        self.power_on()

    def power_on(self):
        with self.lock:
            # LowVbat at power-up (PN532 C106): asleep until the host interface wakes it, and
            # in that mode until SAMConfiguration. A PowerDown puts it back to sleep with only
            # the WakeUpEnable sources able to wake it (None: any host interface).
            self.asleep = True
            self.low_vbat = True
            self.wake_sources = None
            self.sleep_after_answer = False
            self.sleep_frame = None
            self.sam_mode = 0
            self.irq_enabled = False
            self.params = 0x14
            self.retries = [0xFF, 0x01, 0xFF]  # MxRtyATR, MxRtyPSL, MxRtyPassiveActivation
            self.timings = [0x00, 0x0B, 0x0A]
            self.rf_on = True
            self.auto_rfca = False
            self.regs = {CIU_TXMODE: 0x80, CIU_RXMODE: 0x80}
            self.fifo_byte = 0x00  # what ReadRegister of CIU_FIFOData shows (see _in_list)
            self.piccs = {}  # Tg -> tools/sim/picc.Picc: the card's RF side, frame by frame
            self.iso = set()  # Tgs the chip itself activated with RATS (auto-RATS)
            self.last_error = 0
            self.clock_us = 0  # chip time: RF timeouts spent (virtual, see time_scale)
            self.pending_rf_us = 0
            self.baud = 115200
            self.pending_baud = None
            self.pending = None  # parameters of a blocked InListPassiveTarget
            self.targets = {}  # Tg -> card
            self.rates = {}  # Tg -> {"chip": (BRit, BRti), "card": (...)} after InPSL
            self.chain_in = bytearray()
            self.chain_out = b""
            self.last_response = None
            self.faults = {}  # name -> {"count": n, params...}
            self.stats = {
                "commands": {},
                "acks_from_host": 0,
                "nacks_from_host": 0,
                "bad_frames": 0,
                "frames_out": 0,
                "apdus": 0,
                "ide_frames": 0,
                "wakeups": 0,
                "thru_frames": 0,
            }
            self._reset_output()

    # -- faults --------------------------------------------------------------------------------
    def fault(self, name, count=1, **params):
        with self.lock:
            self.faults[name] = dict(params, count=count)

    def clear_faults(self):
        with self.lock:
            self.faults.clear()

    def _take(self, name):
        f = self.faults.get(name)
        if f is None:
            return None
        after = f.get("after", 0)
        if after > 0:
            f["after"] = after - 1
            return None
        f["count"] -= 1
        if f["count"] <= 0:
            del self.faults[name]
        return f

    # -- host frames -----------------------------------------------------------------------------
    def handle_host_bytes(self, buf):
        for kind, data in parse_host_frames(buf):
            if kind == "ack":
                if self._take("lose_host_ack"):
                    continue
                self.stats["acks_from_host"] += 1
                self._cancel()
                if self.pending_baud:
                    self.baud, self.pending_baud = self.pending_baud, None
            elif kind == "nack":
                self.stats["nacks_from_host"] += 1
                if self.last_response is not None:
                    resp = self.last_response
                    if "corrupt_always" in self.faults:
                        resp = self._mangle(resp, self._take("corrupt_always"), "corrupt")
                    self._emit(resp, 0)
            elif kind == "bad":
                self.stats["bad_frames"] += 1
            else:
                self._on_command(data)

    def _on_command(self, data):
        cmd = data[0]
        stats = self.stats["commands"]
        stats["%02x" % cmd] = stats.get("%02x" % cmd, 0) + 1
        if self._take("ignore"):
            return
        self._cancel()  # a new command ends whatever the last one left behind
        self.pending_baud = None  # a speed change waits for the very next frame only
        if not self._take("drop_ack"):
            self._emit(ACK, 0)
        if self._take("error_frame"):
            result = SYNTAX
        else:
            result = self._run(cmd, bytes(data[1:]))
        if result is PENDING:
            return
        self._respond(cmd, result)

    def _respond(self, cmd, result):
        frame = ERROR_FRAME if result is SYNTAX else build_frame(bytes((cmd + 1,)) + result)
        self.last_response = frame
        if self._take("drop_response"):
            return
        for name in ("corrupt", "corrupt_always", "truncate", "garbage"):
            f = self._take(name)
            if f:
                frame = self._mangle(frame, f, name)
        slow = self._take("slow")
        delay = (slow.get("ms", 100) / 1000.0) if slow else 0
        delay += self.pending_rf_us * self.time_scale / 1e6
        self.pending_rf_us = 0
        if self.sleep_after_answer:
            self.sleep_after_answer = False
            self.sleep_frame = frame  # asleep once the host has this answer (_left)
        self._emit(frame, delay)

    # -- power ---------------------------------------------------------------------------------
    time_scale = 0.0  # real seconds per chip second for RF timeouts (0: chip time only)
    pending_rf_us = 0

    def _spend_rf(self, us):
        """The chip waits `us` on the RF side before it answers: counted in chip time, and
        slept for real only when time_scale says so (tests stay independent of the clock)."""
        self.clock_us += us
        self.pending_rf_us += us

    sleep_frame = None

    def _left(self, frame):
        """A frame went to the host (read on I2C/SPI, sent on HSU)."""
        if frame is self.sleep_frame:
            self.sleep_frame = None
            self.asleep = True
            self._field_off()

    def wake(self, source):
        """A host interface's wake-up condition (HSU line activity, SPI chip select, I2C
        address match) -> True when the chip is (now) awake."""
        if not self.asleep:
            return True
        if self.wake_sources is not None and not self.wake_sources & source:
            return False
        self.asleep = False
        self.stats["wakeups"] += 1
        return True

    def _field_off(self):
        self.rf_on = False
        self.targets.clear()
        self.rates.clear()
        self.piccs.clear()
        self.iso.clear()
        self.chain_in.clear()
        self.chain_out = b""

    def _mangle(self, frame, f, how):
        frame = bytearray(frame)
        if how in ("corrupt", "corrupt_always"):
            i = f.get("index", len(frame) - 3)  # by default a data byte, so the DCS fails
            frame[i % len(frame)] ^= f.get("xor", 0x01)
        elif how == "truncate":
            frame = frame[: f.get("keep", len(frame) // 2)]
        elif how == "garbage":
            frame = bytearray(self.rng.randrange(256) for _ in range(f.get("length", 12)))
        return bytes(frame)

    # -- commands ------------------------------------------------------------------------------
    def _run(self, cmd, p):
        handler = {
            0x00: self._diagnose,
            0x02: self._firmware,
            0x04: self._general_status,
            0x06: self._read_register,
            0x08: self._write_register,
            0x10: self._set_baud,
            0x12: self._set_parameters,
            0x14: self._sam_configuration,
            0x16: self._power_down,
            0x32: self._rf_configuration,
            0x40: self._in_data_exchange,
            0x42: self._in_communicate_thru,
            0x44: self._in_release,
            0x4A: self._in_list,
            0x4E: self._in_psl,
            0x52: self._in_release,
        }.get(cmd)
        if handler is None:
            return SYNTAX
        return handler(p)

    def _firmware(self, p):
        return bytes((0x32, 0x01, 0x06, self.support))

    def _sam_configuration(self, p):
        if not p or p[0] not in (1, 2, 3, 4):
            return SYNTAX
        self.sam_mode = p[0]
        self.irq_enabled = bool(p[2]) if len(p) > 2 else True
        self.low_vbat = False
        return b""

    def _set_parameters(self, p):
        if len(p) != 1:
            return SYNTAX
        self.params = p[0]
        return b""

    def _set_baud(self, p):
        if len(p) != 1 or p[0] >= len(BAUD_RATES):
            return SYNTAX
        self.pending_baud = BAUD_RATES[p[0]]
        return b""

    def _power_down(self, p):
        """PowerDown WakeUpEnable [GenerateIRQ]: status 00, then asleep (field off, targets
        gone, configuration kept) until one of the enabled sources wakes it."""
        if len(p) not in (1, 2):
            return SYNTAX
        self.wake_sources = p[0]
        self.sleep_after_answer = True
        return b"\x00"

    def _general_status(self, p):
        """Err, Field (an external field: none here), NbTg, per target Tg BrRx BrTx Type,
        SAM status."""
        if p:
            return SYNTAX
        out = bytearray((self.last_error, 0x00, len(self.targets)))
        for tg, card in sorted(self.targets.items()):
            rate = self.rates.get(tg, {}).get("chip", (0, 0))
            kind = 0x03 if getattr(card, "kind", "A") == "B" else 0x00
            out += bytes((tg, rate[0], rate[1], kind))
        return bytes(out) + b"\x00"

    def _reg(self, addr):
        if addr == CIU_TXCONTROL:
            return 0x80 | (0x03 if self.rf_on else 0x00)
        if addr == CIU_FIFODATA:
            return self.fifo_byte
        if addr == CIU_FIFOLEVEL:
            return 0
        return self.regs.get(addr, 0x00)

    def _read_register(self, p):
        if not p or len(p) % 2:
            return SYNTAX
        return bytes(self._reg((p[i] << 8) | p[i + 1]) for i in range(0, len(p), 2))

    def _write_register(self, p):
        if not p or len(p) % 3:
            return SYNTAX
        for i in range(0, len(p), 3):
            addr, value = (p[i] << 8) | p[i + 1], p[i + 2]
            if addr == CIU_TXCONTROL:
                if value & 0x03 and not self.rf_on:
                    self.rf_on = True
                elif not value & 0x03 and self.rf_on:
                    self._field_off()
            self.regs[addr] = value
        return b""

    def _rf_configuration(self, p):
        if not p or p[0] not in RF_ITEM_SIZES or len(p) != 1 + RF_ITEM_SIZES[p[0]]:
            return SYNTAX
        item, v = p[0], list(p[1:])
        if item == 0x01:
            self.auto_rfca = bool(v[0] & 0x02)
            if v[0] & 0x01:
                self.rf_on = True
            elif self.rf_on:
                self._field_off()
        elif item == 0x02:
            self.timings = v
        elif item == 0x05:
            self.retries = v
        return b""

    def _diagnose(self, p):
        """00 communication line (echoes NumTst and the data), 01 ROM and 02 RAM self tests
        and 07 antenna test (status 00: all fine here), 06 ISO 14443-4 card presence (00 there,
        01 after the RF timeout when it is gone). Others are not simulated: error frame."""
        if not p:
            return SYNTAX
        test = p[0]
        if test == 0x00:
            return bytes(p)
        if test in (0x01, 0x02):
            return b"\x00" if len(p) == 1 else SYNTAX
        if test == 0x07:
            return b"\x00" if len(p) == 2 else SYNTAX
        if test == 0x06:  # is the ISO 14443-4 target still there?
            card = self.targets.get(1)
            if card is not None and self._in_field(card):
                return b"\x00"
            self._spend_rf(rf_timeout_us(self.timings[2]))
            return b"\x01"
        return SYNTAX

    def _in_release(self, p):
        if len(p) != 1:
            return SYNTAX
        for tg in list(self.targets) if p[0] == 0 else [p[0]]:
            self.targets.pop(tg, None)
            self.rates.pop(tg, None)
            self.piccs.pop(tg, None)
            self.iso.discard(tg)
        self.chain_in.clear()
        self.chain_out = b""
        return b"\x00"

    def _in_field(self, card):
        return self.rf_on and card in self.field.cards

    def _in_psl(self, p):
        """InPSL Tg BRit BRti (0: 106, 1: 212, 2: 424 kbit/s): the chip sends the card a PPS
        request and, when the card answers, both move to the new rates. A card whose ATS TA(1)
        does not offer them stays silent: status 01, rates unchanged (fault ``psl_silent``: the
        same for a card that offers them). Fault ``psl_no_switch``: the card answers but keeps
        106 kbit/s, so the next exchange is lost."""
        if len(p) != 3 or p[1] > 2 or p[2] > 2:
            return SYNTAX
        tg, brit, brti = p
        card = self.targets.get(tg)
        if card is None or getattr(card, "kind", "A") != "A" or not card.iso_dep:
            return bytes((ERR_CONTEXT,))
        if not self._in_field(card):
            return self._lost(tg)
        ats = bytes(card.ats or DEFAULT_ATS)
        ta1 = ats[2] if len(ats) >= 3 and ats[1] & 0x10 else 0
        ok = (not brit or ta1 & (1 << (brit - 1))) and (not brti or ta1 & (0x08 << brti))
        if not ok or (ta1 & 0x80 and brit != brti) or self._take("psl_silent"):
            self.stats["psl_refused"] = self.stats.get("psl_refused", 0) + 1
            return bytes((ERR_TIMEOUT,))
        self.stats["psl_ok"] = self.stats.get("psl_ok", 0) + 1
        self.rates[tg] = {
            "chip": (brit, brti),
            "card": (0, 0) if self._take("psl_no_switch") else (brit, brti),
        }
        return b"\x00"

    def _in_list(self, p):
        if len(p) < 2 or p[0] not in (1, 2):
            return SYNTAX
        maxtg, brty = p[0], p[1]
        if brty == 0x00:
            kind = "A"
        elif brty == 0x03 and self.support & 0x02:
            kind = "B"
        else:
            return SYNTAX
        self.rf_on = True  # polling switches the field on, even after RFConfiguration 01 off
        self.targets.clear()
        self.rates.clear()
        self.piccs.clear()
        self.iso.clear()
        self.chain_in.clear()
        self.chain_out = b""
        found = []
        for card in self.field.cards:
            if getattr(card, "kind", "A") != kind or len(found) == maxtg:
                continue
            act = self._activate_a(card) if kind == "A" else (None, None)
            if act is not None:
                found.append((card, act))
        if not found:
            self.fifo_byte = 0x26  # the REQA it sent is still in the FIFO: nobody answered
            if self.retries[2] == 0xFF:
                self.pending = (maxtg, brty)  # retries forever, until a card or an ACK
                return PENDING
            return b"\x00"
        self.fifo_byte = 0x00
        out = bytearray((len(found),))
        for tg, (card, (picc, ats)) in enumerate(found, 1):
            self.targets[tg] = card
            if picc is not None:
                self.piccs[tg] = picc
            if kind == "A":
                out += bytes((tg,)) + card.atqa + bytes((card.sak, len(card.uid))) + card.uid
                if ats is not None:
                    self.iso.add(tg)
                    out += ats
            else:
                self.iso.add(tg)  # ATTRIB is part of the chip's type B activation
                out += bytes((tg,)) + card.atqb + b"\x01\x00"
        return bytes(out)

    def _activate_a(self, card):
        """WUPA, SELECT through the cascade levels and, with auto-RATS on and an ISO-DEP SAK,
        RATS (FSD 256), all as frames to the card's RF side -> (picc, ATS or None), or None
        when the card did not answer."""
        want_ats = bool(self.params & 0x10 and card.iso_dep and card.sak & 0x20)
        try:
            picc = piccmod.Picc(card)
        except ValueError:  # a UID length no card has: nothing to run frames with
            return None, (bytes(card.ats or DEFAULT_ATS) if want_ats else None)
        picc.power(True)
        if picc.receive(piccmod.to_bits(b"\x52", 7)) is None:
            return None
        for level, cl in enumerate(picc.levels):
            frame = bytes((piccmod.SEL_CODES[level], 0x70)) + cl
            if picc.receive(piccmod.to_bits(piccmod.with_crc(frame))) is None:
                return None
        if not want_ats:
            return picc, None
        got = picc.receive(piccmod.to_bits(piccmod.with_crc(b"\xe0\x80")))
        if got is None:
            return None
        ats = piccmod.from_bits(got[0])[0][:-2]
        return picc, bytes(ats or DEFAULT_ATS)

    def _thru(self, picc, data):
        """One frame to the card as the CIU sends it (CRC_A added and checked when TxMode /
        RxMode say so) -> answer bytes, None (nothing within the RF timeout) or ERR_CRC."""
        self.stats["thru_frames"] += 1
        tx = piccmod.with_crc(bytes(data)) if self._reg(CIU_TXMODE) & CRC_EN else bytes(data)
        got = picc.receive(piccmod.to_bits(tx)) if self.rf_on else None
        timeout = rf_timeout_us(self.timings[2])
        if got is None or (timeout and got[1] > timeout):
            self._spend_rf(timeout)
            self.last_error = ERR_TIMEOUT
            return None
        rx = piccmod.from_bits(got[0])[0]
        if self._reg(CIU_RXMODE) & CRC_EN:
            if len(rx) < 3 or not piccmod.crc.check_crc_a(rx):
                self.last_error = ERR_CRC
                return ERR_CRC
            rx = rx[:-2]
        return bytes(rx)

    def _in_communicate_thru(self, p):
        """InCommunicateThru: the host's frame to the current target as is (the host runs the
        protocol, e.g. RATS and ISO-DEP blocks itself) -> status + the card's answer."""
        if not p:
            return SYNTAX
        picc = self.piccs.get(1)
        if picc is None:
            self._spend_rf(rf_timeout_us(self.timings[2]))
            return bytes((ERR_TIMEOUT,))
        got = self._thru(picc, p)
        if got is None:
            return bytes((ERR_TIMEOUT,))
        if got == ERR_CRC:
            return bytes((ERR_CRC,))
        return b"\x00" + got

    def _field_changed(self):
        with self.lock:
            if self.pending is not None:
                maxtg, brty = self.pending
                self.pending = None
                result = self._in_list(bytes((maxtg, brty)))
                if result is not PENDING:
                    self._respond(0x4A, result)

    def _in_data_exchange(self, p):
        if not p:
            return SYNTAX
        self.stats["ide_frames"] += 1
        tg, more = p[0] & 0x3F, bool(p[0] & 0x40)
        card = self.targets.get(tg)
        if card is None:
            return bytes((ERR_CONTEXT,))
        leave = self._take("card_leave")
        if leave and leave.get("when", "before") == "before":
            self.field.remove(card)
        if not self._in_field(card):
            return self._lost(tg)
        rate = self.rates.get(tg)
        if rate and rate["chip"] != rate["card"]:
            # The chip sends at one rate, the card listens at another: no answer, ever.
            self.stats["rate_errors"] = self.stats.get("rate_errors", 0) + 1
            return self._lost(tg)
        data = p[1:]
        if tg not in self.iso:
            # The chip did not run RATS (auto-RATS off, or not an ISO-DEP SAK): the data goes
            # out as one plain frame, and a -4 card still waiting for RATS answers nothing.
            picc = self.piccs.get(tg)
            got = self._thru(picc, data) if picc is not None else None
            if got is None:
                if picc is None:
                    self._spend_rf(rf_timeout_us(self.timings[2]))
                return bytes((ERR_TIMEOUT,))
            if got == ERR_CRC:
                return bytes((ERR_CRC,))
            return b"\x00" + got
        if self.chain_out and not data and not more:
            chunk, self.chain_out = (
                self.chain_out[: self.max_resp],
                self.chain_out[self.max_resp :],
            )
            if leave:
                self.field.remove(card)
                return self._lost(tg)
            return bytes((0x40 if self.chain_out else 0x00,)) + chunk
        self.chain_out = b""
        self.chain_in += data
        if more:
            if leave:
                self.field.remove(card)
                return self._lost(tg)
            return b"\x00"
        apdu = bytes(self.chain_in)
        self.chain_in.clear()
        self.stats["apdus"] += 1
        resp = exchange(card, apdu)
        if leave:
            self.field.remove(card)
            resp = None
        if resp is None:
            return self._lost(tg)
        resp = bytes(resp)
        first, self.chain_out = resp[: self.max_resp], resp[self.max_resp :]
        return bytes((0x40 if self.chain_out else 0x00,)) + first

    def _lost(self, tg):
        # The chip only knows the card is gone when its RF timeout runs out.
        self._spend_rf(rf_timeout_us(self.timings[2]))
        self.last_error = ERR_TIMEOUT
        self.targets.pop(tg, None)
        self.rates.pop(tg, None)
        self.piccs.pop(tg, None)
        self.iso.discard(tg)
        self.chain_in.clear()
        self.chain_out = b""
        return bytes((ERR_TIMEOUT,))

    # -- output (transports) -------------------------------------------------------------------
    def _reset_output(self):
        pass

    def _cancel(self):
        self.pending = None

    def _emit(self, frame, delay):
        raise NotImplementedError

    def state(self):
        with self.lock:
            return {
                "asleep": self.asleep,
                "sam_mode": self.sam_mode,
                "irq_enabled": self.irq_enabled,
                "params": self.params,
                "retries": list(self.retries),
                "timings": list(self.timings),
                "rf_on": self.rf_on,
                "low_vbat": self.low_vbat,
                "wake_sources": self.wake_sources,
                "clock_us": self.clock_us,
                "iso_dep_targets": sorted(self.iso),
                "baud": self.baud,
                "targets": {str(k): c.uid.hex() for k, c in self.targets.items()},
                "rates": {str(k): v for k, v in self.rates.items()},
                "pending_poll": self.pending is not None,
                "stats": dict(self.stats, commands=dict(self.stats["commands"])),
            }


class _Queued(PN532Core):
    """Frames wait in the chip until the host reads them (I2C and SPI); IRQ low while one does."""

    def _reset_output(self):
        self.out = []  # [ready_at, frame]
        self._set_irq()

    def _cancel(self):
        PN532Core._cancel(self)
        self.out.clear()
        self._set_irq()

    def _emit(self, frame, delay):
        self.stats["frames_out"] += 1
        if delay:
            self.out.append([time.monotonic() + delay, frame])
            timer = threading.Timer(delay, self._irq_later)
            timer.daemon = True
            timer.start()
        else:
            self.out.append([0, frame])
        self._set_irq()

    def _irq_later(self):
        # Same lock order as the bus threads (hub, then chip), or the two deadlock.
        if self.hub is None:
            return
        with self.hub.lock, self.lock:
            self._set_irq()

    def ready_frame(self):
        if self.out and self.out[0][0] <= time.monotonic():
            return self.out[0][1]
        return None

    def _pop(self):
        self._left(self.out.pop(0)[1])
        self._set_irq()

    def _set_irq(self):
        if self.hub is not None and self.irq_pin:
            ready = self.irq_enabled and self.ready_frame() is not None
            self.hub.set_pin(self.irq_pin, 0 if ready else 1)


class _Timed:
    """Each frame becomes ready (status bit 0, IRQ low) some time after the command that caused
    it, as on the chip, which handles a frame before it answers: ``ack_ms`` for the ACK,
    ``resp_ms`` for a response (on top of any ``slow`` fault and RF time). Until then a status
    read says 00 (counted in ``not_ready``), so the driver's polling is exercised on every
    command. The chip's own times are not published; these are of the order the datasheet's
    timing diagrams suggest (nfcpy allows 15 ms for the ACK)."""

    ack_ms = 1.0
    resp_ms = 2.0

    def _emit(self, frame, delay):
        base = (self.ack_ms if frame == ACK else self.resp_ms) / 1000.0
        super()._emit(frame, delay + base)


class PN532I2CSim(_Timed, _Queued):
    """I2C at 0x24. Asleep (LowVbat, PowerDown with I2C in WakeUpEnable), the chip wakes on its
    address: it stretches SCL while it wakes, then takes the transaction (``i2c_wakes``);
    with I2C not among the wake-up sources it does not acknowledge its address at all."""

    ADDRESS = 0x24

    def _awake(self):
        if not self.asleep:
            return True
        if not self.wake(WAKE_I2C):
            return False
        self.stats["i2c_wakes"] = self.stats.get("i2c_wakes", 0) + 1
        return True

    def i2c_write(self, data):
        with self.lock:
            if self._take("nack_bus") or not self._awake():
                return False
            self.handle_host_bytes(bytearray(data))
            return True

    def i2c_read(self, n):
        with self.lock:
            if self._take("nack_bus") or not self._awake():
                return None
            frame = self.ready_frame()
            if frame is None:
                self.stats["not_ready"] = self.stats.get("not_ready", 0) + 1
                return bytes(n)  # status 00: not ready
            if n <= 1:
                return b"\x01"[:n]
            self._pop()
            return (b"\x01" + frame).ljust(n, b"\x00")[:n]


def _reverse_bits(data):
    return bytes(int("{:08b}".format(b)[::-1], 2) for b in data)


class PN532SPISim(_Timed, _Queued):
    """SPI. Asleep, the chip wakes on the chip-select falling edge; what is clocked in that
    first window is lost (the chip is still starting: MISO reads FF), so a host holds CS low
    for a while first (libnfc, our driver). With SPI not among PowerDown's wake-up sources
    every window is lost."""

    DW, SR, DR = 0x01, 0x02, 0x03

    def _reset_output(self):
        _Queued._reset_output(self)
        self.lost_window = False
        self.selected = False
        self.op = None
        self.dw = bytearray()
        self.dr_pos = 0

    def _cancel(self):
        _Queued._cancel(self)
        self.dr_pos = 0

    def _dr_advance(self, frame):
        self.dr_pos += 1
        if self.dr_pos == len(frame):
            self._pop()
            self.dr_pos = 0

    def spi_select(self, active):
        # Called from the pin thread: take the hub's lock first, as the bus and timer threads
        # do, since emitting a frame drives the IRQ pin through the hub.
        hub_lock = self.hub.lock if self.hub is not None else self.lock
        with hub_lock, self.lock:
            if active:
                self.selected, self.op = True, None
                self.dw = bytearray()
                self.lost_window = self.asleep
                if self.asleep:
                    self.wake(WAKE_SPI)
                return
            if self.lost_window:
                self.selected = self.lost_window = False
                self.op = None
                return
            self.selected = False
            if self.op == self.DW and self.dw:
                self.handle_host_bytes(self.dw)
            self.op = None

    def spi_exchange(self, data, config):
        with self.lock:
            lsb = config.get("firstbit") == "LSB"
            if not lsb:
                data = _reverse_bits(data)  # the chip shifts LSB first whatever the host thinks
            out = bytearray()
            if self.lost_window:
                self.stats["lost_bytes"] = self.stats.get("lost_bytes", 0) + len(data)
                return b"\xff" * len(data)
            for b in data:
                if not self.selected:
                    out.append(0xFF)
                elif self.op is None:
                    self.op = b
                    frame = self.ready_frame()
                    if b == self.DR and self.dr_pos and frame is not None:
                        # A resumed read: the chip shifts the next frame byte out while the DR
                        # byte comes in (libnfc pn532_spi.c, pn532_spi_receive_next_chunk).
                        out.append(frame[self.dr_pos])
                        self._dr_advance(frame)
                    else:
                        out.append(0xFF)
                elif self.op == self.DW:
                    self.dw.append(b)
                    out.append(0xFF)
                elif self.op == self.SR:
                    out.append(0x01 if self.ready_frame() is not None else 0x00)
                elif self.op == self.DR:
                    frame = self.ready_frame()
                    if frame is not None and self.dr_pos < len(frame):
                        out.append(frame[self.dr_pos])
                        self._dr_advance(frame)
                    else:
                        out.append(0x00)
                else:
                    out.append(0xFF)
            return bytes(out) if lsb else _reverse_bits(out)


class PN532HSUSim(PN532Core, UartDevice):
    """HSU. Asleep (LowVbat at power-up, or PowerDown with HSU in WakeUpEnable), the first
    byte's start bit wakes the chip, which then needs ``wake_us`` before it receives again:
    the bytes that start meanwhile (counted in line time at the host's baud rate) are lost.
    A host therefore sends a preamble first: 55 55 and zeros (libnfc, our driver) or ten zeros
    (nfcpy). A pause on the line does not count (the simulator has no line clock): the
    preamble must carry the time. Frames go out ``ack_ms`` / ``resp_ms`` after the command, in
    order, from one sender thread."""

    ack_ms = 1.0
    resp_ms = 2.0
    wake_us = 500  # not published; nfcpy's ten zeros (868 us at 115200) must cover it

    def __init__(self, **kw):
        UartDevice.__init__(self)
        self.rx = bytearray()
        self._wake_left = 0
        self._outq = []
        self._sender = None
        PN532Core.__init__(self, **kw)
        # PN532Core replaced UartDevice's lock: one lock for the UART thread, timers and ctl.
        self._cv = threading.Condition(self.lock)

    def _reset_output(self):
        self.rx = bytearray()
        self._wake_left = 0
        self._outq = []
        self.lost_bytes = 0

    def _line_ok(self):
        return self.config.get("baudrate", 115200) == self.baud

    def on_data(self, data):
        with self.lock:
            if self.asleep:
                if not self.wake(WAKE_HSU):
                    self.lost_bytes += len(data)
                    return
                byte_us = 10_000_000 / self.config.get("baudrate", 115200)
                self._wake_left = -(-self.wake_us // byte_us)  # the waking byte included
            if self._wake_left:
                k = int(min(self._wake_left, len(data)))
                self._wake_left -= k
                self.lost_bytes += k
                data = data[k:]
            if not self._line_ok():
                self.lost_bytes += len(data)
                return
            self.rx += data
            self.handle_host_bytes(self.rx)

    def _cancel(self):
        PN532Core._cancel(self)
        self._outq.clear()

    def _emit(self, frame, delay):
        self.stats["frames_out"] += 1
        delay += (self.ack_ms if frame == ACK else self.resp_ms) / 1000.0
        if not delay:
            self._send_line(frame)
            return
        due = time.monotonic() + delay
        if self._outq:
            due = max(due, self._outq[-1][0])  # in order, whatever the timers do
        self._outq.append((due, frame))
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_loop, daemon=True)
            self._sender.start()
        self._cv.notify()

    def _send_loop(self):
        with self._cv:
            while True:
                if not self._outq:
                    self._cv.wait()
                    continue
                due, frame = self._outq[0]
                left = due - time.monotonic()
                if left > 0:
                    self._cv.wait(left)
                    continue
                self._outq.pop(0)
                self._send_line(frame)

    def _send_line(self, frame):
        self._left(frame)
        if not self._line_ok():
            frame = bytes(b ^ 0xA5 for b in frame)  # wrong speed: the host reads noise
        self.send(frame)
