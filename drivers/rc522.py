# MFRC522 (RC522) reader driver over SPI: ISO/IEC 14443-3 type A activation (REQA/WUPA,
# anticollision with bit-collision resolution over 1-3 cascade levels, SELECT, HLTA) and
# ISO/IEC 14443-4 through isodep.py, behind the common reader interface (reader.py).
#
# Register facts: NXP MFRC522 data sheet, register map as in miguelbalboa/rfid src/MFRC522.h
# (docs/sources.md). Why our own driver and what we learned from whom: docs/nfc-rc522.md.
#
# Design points:
# * The chip's timer is programmed from the wanted timeout (FWT, WTX) before every frame, so the
#   chip, not a loop count, decides "no answer". A software deadline behind it catches a chip
#   that never raises an IRQ (ChipError, and a full re-initialisation on the next poll).
# * CRC_A is computed by the MCU (crc.py): one less chip round trip per frame, and the check
#   covers the bytes we actually read.
# * Frames never exceed the 64-byte FIFO: RATS asks for FSD 64, and we send at most 64 bytes
#   per frame (isodep.py chains the rest). A longer answer is a BufferOvfl, a ProtocolError.
# * Several registers are read in one SPI transaction (the chip takes the next address on each
#   byte), and the timer registers are written only when the timeout changes.
import time

import crc
import log
from isodep import IsoDep
from linkerr import CardGone, ChipError, LinkError, LinkTimeout, ProtocolError
from micropython import const
from reader import KBPS, KIND_A, Reader, Target, ats_bit_rate

_log = log.get("rc522")

# Registers
_COMMAND = const(0x01)
_COMIEN = const(0x02)
_DIVIEN = const(0x03)
_COMIRQ = const(0x04)
_ERROR = const(0x06)
_FIFODATA = const(0x09)
_FIFOLEVEL = const(0x0A)
_CONTROL = const(0x0C)
_BITFRAMING = const(0x0D)
_COLL = const(0x0E)
_MODE = const(0x11)
_TXMODE = const(0x12)
_RXMODE = const(0x13)
_TXCONTROL = const(0x14)
_TXASK = const(0x15)
_MODWIDTH = const(0x24)
_RFCFG = const(0x26)
_TMODE = const(0x2A)
_TPRESCALER = const(0x2B)
_TRELOADH = const(0x2C)
_TRELOADL = const(0x2D)
_VERSION = const(0x37)

# Commands
_IDLE = const(0x00)
_TRANSCEIVE = const(0x0C)
_SOFTRESET = const(0x0F)

# ComIrqReg and ErrorReg bits
_IRQ_RX = const(0x20)
_IRQ_ERR = const(0x02)
_IRQ_TIMER = const(0x01)
_ERR_PROTOCOL = const(0x01)
_ERR_PARITY = const(0x02)
_ERR_COLL = const(0x08)
_ERR_OVFL = const(0x10)

_FIFO = const(64)
_REQA = const(0x26)
_WUPA = const(0x52)
_SEL = (0x93, 0x95, 0x97)
_CASCADE_TAG = const(0x88)
_SHORT_US = const(1000)  # REQA, anticollision, SELECT: the card answers within ~100 µs
_HLTA_US = const(1000)
_IRQ_SLACK_MS = const(30)  # beyond the chip's own timer, before we call the chip stuck
# While a frame is on air or the card works: 8 looks back to back, then the IRQ line every
# 100 us or ComIrqReg over SPI every 250 us (half a period per wait is charged by
# docs/tap-model.md).
_IRQ_LOOK_US = const(100)
_POLL_US = const(250)
# ModWidthReg per bit rate 106/212/424/848 kbit/s (miguelbalboa/rfid MFRC522Extended PICC_PPS)
_MODWIDTH_FOR = b"\x26\x15\x0a\x05"

VERSIONS = {0x88: "FM17522", 0x90: "v0.0", 0x91: "v1.0", 0x92: "v2.0", 0x12: "clone 0x12"}


class RC522(Reader):
    def __init__(self, spi, cs, reset=None, gain=None, irq=None, kinds="A", max_kbps=424):
        super().__init__()
        self.kinds = "A"
        # Fastest bit rate to ask a card for by PPS when its ATS offers it (106 never asks).
        self.max_rate = KBPS.index(max_kbps) if max_kbps in KBPS else 0
        self._rate = 0  # the chip's bit rate index now
        self.pps_refused = 0
        if "B" in kinds:
            # The MFRC522 modulates and demodulates ISO/IEC 14443 type A only.
            _log.warning("RC522 cannot poll type B cards: type A only")
        self.spi = spi
        self.cs = cs
        self.reset_pin = reset
        self.irq = irq  # optional IRQ input (active low): wait on it instead of polling SPI
        self.gain = gain  # RxGain 0..7 (RFCfgReg bits 6:4); None keeps the chip's default
        self.wakeup = False  # poll with REQA: a card halted after its tap stays quiet
        self.version = None
        self.isodep = None
        self._ok = False
        self._dirty = False  # a card may be left mid-protocol: reset the field before polling
        self._failed = False  # the last exchange failed: release() resets the field
        self._timer = -1
        self._w2 = bytearray(2)
        self._r2 = bytearray(2)
        self._tx = bytearray(_FIFO + 1)  # FIFODataReg address, then the frame
        self._tx[0] = _FIFODATA << 1
        self._rdcmd = bytearray(b"\x92" * (_FIFO + 1))  # read FIFODataReg n times, then 0
        self._rx = bytearray(_FIFO + 1)
        self._rxmv = memoryview(self._rx)
        # One read transaction per IRQ poll: ComIrqReg, then ErrorReg, FIFOLevelReg and
        # ControlReg, which are final once ComIrqReg (read first) shows the frame is in.
        self._status_cmd = bytes(
            (
                0x80 | (_COMIRQ << 1),
                0x80 | (_ERROR << 1),
                0x80 | (_FIFOLEVEL << 1),
                0x80 | (_CONTROL << 1),
                0,
            )
        )
        self._status = bytearray(5)
        cs.value(1)

    # -- registers --------------------------------------------------------------------------

    def _write(self, reg, value):
        b = self._w2
        b[0] = (reg << 1) & 0x7E
        b[1] = value
        self.cs.value(0)
        try:
            self.spi.write(b)
        finally:
            self.cs.value(1)

    def _read(self, reg):
        b = self._w2
        b[0] = 0x80 | ((reg << 1) & 0x7E)
        b[1] = 0
        self.cs.value(0)
        try:
            self.spi.write_readinto(b, self._r2)
        finally:
            self.cs.value(1)
        return self._r2[1]

    def _xfer(self, out, into):
        self.cs.value(0)
        try:
            self.spi.write_readinto(out, into)
        finally:
            self.cs.value(1)

    def _read_fifo(self, n):
        cmd = self._rdcmd
        cmd[n] = 0
        try:
            self._xfer(memoryview(cmd)[: n + 1], self._rxmv[: n + 1])
        finally:
            cmd[n] = 0x92
        return self._rxmv[1 : n + 1]

    # -- chip set-up ------------------------------------------------------------------------

    def init(self):
        """Reset the chip and set it up for ISO/IEC 14443-A at 106 kbit/s. Raises ChipError."""
        self._ok = False
        self._timer = -1
        if self.reset_pin is not None:
            self.reset_pin.value(0)
            time.sleep_ms(1)
            self.reset_pin.value(1)
            time.sleep_ms(1)
        self._write(_COMMAND, _SOFTRESET)
        deadline = time.ticks_add(time.ticks_ms(), 50)
        while self._read(_COMMAND) & 0x10:  # PowerDown stays set until the oscillator runs
            if time.ticks_diff(deadline, time.ticks_ms()) < 0:
                raise ChipError("RC522 not answering: still powered down after soft reset")
            time.sleep_ms(1)
        version = self._read(_VERSION)
        if version in (0x00, 0xFF):
            raise ChipError("RC522 not answering on SPI (version register reads %02x)" % version)
        if version not in VERSIONS:
            _log.warning("unknown RC522 version %02x, trying anyway", version)
        self.version = version
        self._set_rate(0)  # 106 kbit/s, no hardware CRC
        self._write(_TXASK, 0x40)  # Force100ASK: type A cards need 100 % ASK
        self._write(_MODE, 0x3D)  # CRC preset 6363h as ISO/IEC 14443-3
        self._write(_COLL, 0x00)  # ValuesAfterColl = 0: bits after a collision read as 0
        if self.gain is not None:
            self._write(_RFCFG, (self.gain & 7) << 4)
        if self.irq is not None:
            # IRqInv (active low), then the frame's ends: RxIRq, ErrIRq, TimerIRq. Push-pull
            # output, so the line needs no pull-up.
            self._write(_COMIEN, 0x80 | _IRQ_RX | _IRQ_ERR | _IRQ_TIMER)
            self._write(_DIVIEN, 0x80)
        if self._read(_TXASK) != 0x40:
            raise ChipError("RC522 register write did not stick")
        self._antenna(True)
        self._ok = True

    def _set_rate(self, i):
        # TxSpeed/RxSpeed in bits 6..4, CRC off (crc.py does it); the pause width to match.
        self._write(_TXMODE, i << 4)
        self._write(_RXMODE, i << 4)
        self._write(_MODWIDTH, _MODWIDTH_FOR[i])
        self._rate = i

    def _pps(self, ats):
        """Ask the card for the fastest rate its ATS offers (ISO/IEC 14443-4 PPS, CID 0): PPSS D0,
        PPS0 11, PPS1 DSI << 2 | DRI; the card answers D0 at the old rate and then switches.
        No answer or a wrong one: it kept 106 kbit/s (or it is gone), so the chip stays there."""
        i = ats_bit_rate(ats, self.max_rate)
        if not i:
            return
        try:
            answer = self.frame(bytes((0xD0, 0x11, (i << 2) | i)), self.isodep.fwt + 3625)
        except (LinkTimeout, ProtocolError) as e:
            self.pps_refused += 1
            _log.warning("PPS to %d kbit/s not answered (%s): staying at 106", KBPS[i], e)
            return
        if answer != b"\xd0":
            self.pps_refused += 1
            _log.warning("PPS answered %s: staying at 106 kbit/s", _hex(answer))
            return
        self._set_rate(i)
        _log.debug("card at %d kbit/s", KBPS[i])

    def _antenna(self, on):
        value = self._read(_TXCONTROL)
        self._write(_TXCONTROL, (value | 0x03) if on else (value & 0xFC))

    def _field_reset(self):
        # Field off for more than t_RESET (5 ms) powers every card down: whatever state an
        # interrupted exchange left a card in, it comes back IDLE.
        self._antenna(False)
        time.sleep_ms(6)
        self._antenna(True)
        time.sleep_ms(6)
        self._dirty = False

    def _set_timer(self, us):
        # f_timer = 13.56 MHz / (2 * prescaler + 1); TAuto starts it at the end of sending.
        if us <= 1600000:
            prescaler = 169  # 25.07 µs per tick, up to 1.64 s
            ticks = us * 100 // 2507 + 1
        else:
            prescaler = 4095  # 604.1 µs per tick, up to 39.6 s
            ticks = us * 10 // 6041 + 1
        if ticks > 0xFFFF:
            ticks = 0xFFFF
        key = (prescaler << 16) | ticks
        if key == self._timer:
            return
        self._write(_TMODE, 0x80 | (prescaler >> 8))
        self._write(_TPRESCALER, prescaler & 0xFF)
        self._write(_TRELOADH, ticks >> 8)
        self._write(_TRELOADL, ticks & 0xFF)
        self._timer = key

    # -- one frame --------------------------------------------------------------------------

    def _transceive(self, n, timeout_us, tx_last_bits=0, rx_align=0):
        """Send self._tx[1:n+1]; -> (bytes received, valid bits in the last byte, collision).

        Raises LinkTimeout (the chip's timer ran out), ProtocolError (parity, protocol,
        overflow, garbage level) or ChipError (no IRQ at all)."""
        if n > _FIFO:
            raise ProtocolError("frame of %d bytes does not fit the 64-byte FIFO" % n)
        self._set_timer(timeout_us)
        self._write(_COMMAND, _IDLE)
        self._write(_COMIRQ, 0x7F)
        self._write(_FIFOLEVEL, 0x80)
        self.cs.value(0)
        try:
            self.spi.write(memoryview(self._tx)[: n + 1])
        finally:
            self.cs.value(1)
        self._write(_COMMAND, _TRANSCEIVE)
        self._write(_BITFRAMING, 0x80 | (rx_align << 4) | tx_last_bits)
        deadline = time.ticks_add(time.ticks_ms(), timeout_us // 1000 + _IRQ_SLACK_MS)
        polls = 0
        st = self._status
        while True:
            if self.irq is not None:
                # Nothing on SPI while we wait: the pin says when ComIrqReg has news.
                while self.irq.value():
                    if time.ticks_diff(deadline, time.ticks_ms()) < 0:
                        break
                    polls += 1
                    if polls > 8:
                        time.sleep_us(_IRQ_LOOK_US)
            self._xfer(self._status_cmd, st)
            irq = st[1]
            # ErrIRq for a bit collision may come at the colliding bit, before the frame
            # ends: wait for RxIRq then (ErrorReg and the FIFO are not final before it).
            if irq & _IRQ_RX or (irq & _IRQ_ERR and st[2] & ~_ERR_COLL):
                break
            if irq & _IRQ_TIMER:
                raise LinkTimeout("no answer within %d us" % timeout_us)
            if time.ticks_diff(deadline, time.ticks_ms()) < 0:
                self._ok = False
                self._dirty = True
                raise ChipError("RC522 raised no IRQ (ComIrqReg %02x)" % irq)
            polls += 1
            if polls > 8:
                time.sleep_us(_POLL_US)
        # The chip stays in Transceive until the next frame's Idle: no write needed here.
        err, level, control = st[2], st[3], st[4]
        if err & (_ERR_OVFL | _ERR_PARITY | _ERR_PROTOCOL):
            self._write(_FIFOLEVEL, 0x80)
            raise ProtocolError("RC522 receive error %02x" % err)
        if level > _FIFO:
            self._write(_FIFOLEVEL, 0x80)
            raise ProtocolError("FIFO level %d out of range" % level)
        if level:
            self._read_fifo(level)
        return level, control & 0x07, bool(err & _ERR_COLL)

    def frame(self, data, timeout_us):
        """One standard frame with CRC_A -> the answer without its CRC (isodep.py's link)."""
        n = len(data)
        if n + 2 > _FIFO:
            raise ProtocolError("frame of %d bytes too long for the FIFO" % (n + 2))
        tx = self._tx
        tx[1 : n + 1] = data
        c = crc.crc_a(data)
        tx[n + 1] = c & 0xFF
        tx[n + 2] = c >> 8
        got, last, coll = self._transceive(n + 2, timeout_us)
        if coll:
            raise ProtocolError("collision: more than one card answered")
        if last or got < 3:
            raise ProtocolError("short frame (%d bytes, %d bits)" % (got, last))
        rx = self._rxmv[1 : got + 1]
        if not crc.check_crc_a(rx):
            raise ProtocolError("CRC_A error")
        return bytes(rx[:-2])

    # -- ISO/IEC 14443-3 ------------------------------------------------------------------

    def _request(self, cmd):
        """REQA/WUPA -> ATQA (2 bytes, MSB first) or None. A collision here just means several
        cards."""
        self._tx[1] = cmd
        try:
            got, last, _ = self._transceive(1, _SHORT_US, tx_last_bits=7)
        except LinkTimeout:
            return None
        except ProtocolError as e:
            _log.warning("bad answer to %s: %s", "WUPA" if cmd == _WUPA else "REQA", e)
            self._dirty = True  # some card answered and now sits READY: reset it next time
            return None
        if got != 2 or last:
            _log.warning("ATQA of %d bytes/%d bits ignored", got, last)
            self._dirty = True
            return None
        rx = self._rxmv
        return bytes((rx[2], rx[1]))  # MSB first, as the PN532 reports SENS_RES

    def _anticollision(self, sel):
        """One cascade level: -> the 5 bytes CLn (4 UID bytes or CT + 3, then BCC)."""
        cl = bytearray(5)
        known = 0  # UID bits of this level already fixed
        for _ in range(34):
            if known >= 32:
                break
            full = known >> 3
            extra = known & 7
            tx = self._tx
            tx[1] = sel
            tx[2] = ((2 + full) << 4) | extra
            nbytes = full + (1 if extra else 0)
            tx[3 : 3 + nbytes] = cl[:nbytes]
            got, last, coll = self._transceive(2 + nbytes, _SHORT_US, extra, extra)
            if got + full != 5 or (last and not coll):
                raise ProtocolError("anticollision answer of %d bytes" % got)
            rx = self._rxmv[1 : got + 1]
            keep = (1 << extra) - 1
            cl[full] = (cl[full] & keep) | (rx[0] & ~keep & 0xFF)
            for i in range(1, got):
                cl[full + i] = rx[i]
            if not coll:
                if cl[0] ^ cl[1] ^ cl[2] ^ cl[3] != cl[4]:
                    raise ProtocolError("BCC mismatch in %s" % _hex(cl))
                return cl
            reg = self._read(_COLL)
            if reg & 0x20:
                raise ProtocolError("collision outside the UID (CollReg %02x)" % reg)
            pos = (reg & 0x1F) or 32
            # CollPos counts from bit 0 of the first FIFO byte, RxAlign included (NXP's
            # reader library: known bits = 8 * (known // 8) + CollPos - 1).
            bit = (known & ~7) + pos - 1
            if bit < known or bit >= 32:
                raise ProtocolError("collision position %d out of range" % bit)
            # Both values were seen: take 1 and forget every bit after it.
            i = bit >> 3
            cl[i] = (cl[i] & ((1 << (bit & 7)) - 1)) | (1 << (bit & 7))
            for j in range(i + 1, 5):
                cl[j] = 0
            known = bit + 1
            _log.debug("collision at bit %d, continuing with %s", bit, _hex(cl[:4]))
        cl[4] = cl[0] ^ cl[1] ^ cl[2] ^ cl[3]
        return cl

    def _select(self):
        """Anticollision and SELECT through the cascade levels -> (uid bytes, SAK)."""
        uid = bytearray()
        for level in range(3):
            sel = _SEL[level]
            cl = self._anticollision(sel)
            answer = self.frame(bytes((sel, 0x70)) + cl, _SHORT_US)
            if len(answer) != 1:
                raise ProtocolError("SAK of %d bytes" % len(answer))
            sak = answer[0]
            if sak & 0x04:
                if cl[0] != _CASCADE_TAG or level == 2:
                    raise ProtocolError(
                        "SAK %02x asks for another level after %s" % (sak, _hex(cl))
                    )
                uid += cl[1:4]
                continue
            uid += cl[:4]
            return bytes(uid), sak
        raise ProtocolError("UID longer than three cascade levels")

    def _halt(self):
        # HLTA gets no answer when it works; an answer means the card did not take it.
        tx = self._tx
        tx[1] = 0x50
        tx[2] = 0x00
        c = crc.crc_a(b"\x50\x00")
        tx[3] = c & 0xFF
        tx[4] = c >> 8
        try:
            self._transceive(4, _HLTA_US)
        except LinkTimeout:
            return True
        except ProtocolError:
            pass
        return False

    # -- the reader interface -------------------------------------------------------------

    def poll(self):
        self.release()
        try:
            return self._poll()
        except LinkError as e:
            if isinstance(e, ChipError):
                self._ok = False
                raise
            _log.warning("activation failed: %s", e)
            self._dirty = True
            return None
        except OSError as e:  # the SPI bus itself failed
            self._ok = False
            raise ChipError("SPI: %s" % e)

    def _poll(self):
        if not self._ok:
            self.init()
        if self._dirty:
            self._field_reset()
        if self._rate:
            self._set_rate(0)  # every card is found and activated at 106 kbit/s
        atqa = self._request(_WUPA if self.wakeup else _REQA)
        if atqa is None:
            return None
        uid, sak = self._select()
        iso = (sak & 0x24) == 0x20
        ats = b""
        if iso:
            self.isodep = IsoDep(self, _FIFO)
            self._dirty = True  # until the card is deselected
            ats = self.isodep.activate()
            self._pps(ats)
        else:
            self._dirty = True  # the card is ACTIVE: HLTA it on release
        t = Target(KIND_A, uid, atqa, sak, ats, iso)
        self.target = t
        return t

    def transceive(self, apdu):
        self._need_target()
        try:
            return self.isodep.exchange(apdu)
        except LinkError as e:
            # Power the card down on release instead of deselecting it: if it is still there
            # (the re-tap after a torn purchase), the next poll finds it IDLE, not HALTed.
            self._failed = True
            if isinstance(e, ChipError):
                self._ok = False
            elif isinstance(e, CardGone):
                self.target = None  # as the PN532 driver: a gone card is no target
            _log.warning("exchange failed: %s", e)
            raise
        except OSError as e:
            self._ok = False
            raise ChipError("SPI: %s" % e)

    def present(self):
        t = self.target
        if t is None:
            return False
        try:
            if t.iso_dep:
                ok = self.isodep.present()
            else:
                # No presence check below ISO-DEP: halt it and wake it again by its UID.
                ok = self._halt() and self._request(_WUPA) is not None
                ok = ok and self._select()[0] == t.uid
        except OSError as e:
            _log.warning("presence check failed: %s", e)
            ok = False
        if not ok:
            self.target = None
            self._dirty = True
        return ok

    def release(self):
        t = self.target
        self.target = None
        if not self._dirty:
            return
        try:
            if not self._ok:
                return  # the next poll re-initialises the chip, field included
            clean = False
            if self._failed:
                self._failed = False
            elif t is not None and t.iso_dep and self.isodep is not None:
                clean = self.isodep.deselect()
            elif t is not None:
                clean = self._halt()
            if clean:
                self._dirty = False
            else:
                self._field_reset()
        except Exception as e:  # release() never raises: the next poll starts from scratch
            _log.warning("release: %s", e)
            self._ok = False


def _hex(data):
    return "".join("%02x" % b for b in data)
