# ISO/IEC 14443-4 (T=CL) half-duplex block protocol, reader side, for chips that only move frames
# (the RC522). The algorithm follows nfcpy's IsoDepInitiator.exchange (nfcpy src/nfc/tag/tt4.py),
# timings from ISO/IEC 14443-4 as nfcpy uses them (docs/sources.md): chained I-blocks both ways,
# R(NAK)/R(ACK) recovery with bounded retries, S(WTX) extending the wait for one exchange only,
# S(DESELECT). See docs/nfc-rc522.md.
#
# The link below is any object with
#     frame(data, timeout_us) -> bytes   one frame out with CRC_A, the answer without it
# raising LinkTimeout (no answer in time), ProtocolError (CRC, parity, collision, overflow: the
# frame was damaged) or ChipError (the chip itself failed, never retried here).
import time

import log
from linkerr import CardGone, LinkTimeout, ProtocolError
from micropython import const

_log = log.get("isodep")

FSD_TABLE = (16, 24, 32, 40, 48, 64, 96, 128, 256)
FWI_DEFAULT = const(4)
FSCI_DEFAULT = const(2)
_FWT_MAX_US = const(4949000)  # FWI 14: the longest wait ISO/IEC 14443-4 allows, WTX included
_DELTA_US = const(3625)  # 49152/fc: the margin nfcpy adds to every FWT
_ACTIVATION_US = const(5286)  # 71680/fc: FWT for the ATS
_MAX_WTX = const(40)  # a card asking for more time forever must not hang the validator
_MAX_BLOCKS = const(80)  # chained answer blocks: nor may a card that chains forever

_PCB_I = const(0x02)
_PCB_CHAIN = const(0x10)
_PCB_RACK = const(0xA2)
_PCB_RNAK = const(0xB2)
_PCB_DESELECT = const(0xC2)
_PCB_WTX = const(0xF2)


def fwt_us(fwi):
    """Frame waiting time for FWI in µs: 4096 * 2**FWI / fc (302 µs at FWI 0)."""
    return (1 << fwi) * 30206 // 100


def fsdi_for(max_frame):
    """Largest FSDI whose FSD fits a frame buffer of max_frame bytes (CRC included)."""
    fsdi = 0
    for i in range(len(FSD_TABLE)):
        if FSD_TABLE[i] <= max_frame:
            fsdi = i
    return fsdi


class Ats:
    """A parsed ATS (TL first, CRC removed); absent fields take the ISO defaults."""

    __slots__ = ("fsci", "fsc", "fwi", "sfgi", "ta1", "cid", "nad", "historical")

    def __init__(self, ats):
        n = len(ats)
        if n < 1 or ats[0] != n:
            raise ProtocolError(
                "ATS length byte %s does not match %d bytes"
                % ("%02x" % ats[0] if n else "missing", n)
            )
        self.fsci = FSCI_DEFAULT
        self.fwi = FWI_DEFAULT
        self.sfgi = 0
        self.ta1 = None
        self.cid = False
        self.nad = False
        self.historical = b""
        if n == 1:
            self.fsc = FSD_TABLE[self.fsci]
            return
        t0 = ats[1]
        if t0 & 0x80:
            raise ProtocolError("ATS T0 b8 must be 0 (T0=%02x)" % t0)
        self.fsci = t0 & 0x0F
        i = 2
        need = 2 + ((t0 >> 4) & 1) + ((t0 >> 5) & 1) + ((t0 >> 6) & 1)
        if n < need:
            raise ProtocolError("ATS too short for its T0=%02x (%d bytes)" % (t0, n))
        if t0 & 0x10:
            self.ta1 = ats[i]
            i += 1
        if t0 & 0x20:
            tb1 = ats[i]
            i += 1
            self.fwi = tb1 >> 4
            self.sfgi = tb1 & 0x0F
            if self.fwi == 15:  # RFU: the default, as nfcpy does
                self.fwi = FWI_DEFAULT
            if self.sfgi == 15:
                self.sfgi = 0
        if t0 & 0x40:
            tc1 = ats[i]
            i += 1
            self.nad = bool(tc1 & 0x01)
            self.cid = bool(tc1 & 0x02)
        self.historical = bytes(ats[i:])
        # FSCI above 8 is RFU in the 2001 text and means more than 256 in later ones: either
        # way, at least 256 bytes, which is more than any frame we send.
        self.fsc = FSD_TABLE[self.fsci] if self.fsci <= 8 else 256


class IsoDep:
    def __init__(self, link, max_frame=64, retries=3, max_answer=1024):
        self.link = link
        self.max_frame = max_frame
        self.retries = retries
        self.max_answer = max_answer  # bytes; T-Union answers are at most 258
        self.ats = None
        self.fwt = fwt_us(FWI_DEFAULT)
        self.pni = 0
        self.miu = 0
        # Counters for tests and the maintenance view.
        self.naks = 0
        self.wtx = 0
        self.resent = 0

    def activate(self, fsdi=None):
        """RATS -> raw ATS bytes (TL first). CID 0, so later blocks carry no CID byte."""
        if fsdi is None:
            fsdi = fsdi_for(self.max_frame)
        raw = None
        for attempt in range(2):  # ISO allows the RATS to be sent again once
            try:
                raw = self.link.frame(bytes((0xE0, fsdi << 4)), _ACTIVATION_US + _DELTA_US)
                break
            except (LinkTimeout, ProtocolError) as e:
                if attempt:
                    raise
                _log.debug("RATS retried: %s", e)
        ats = Ats(raw)
        self.ats = ats
        self.fwt = fwt_us(ats.fwi)
        self.miu = min(ats.fsc, self.max_frame) - 3  # PCB and CRC_A
        self.pni = 0
        if ats.sfgi:
            # The card may not listen before SFGT has passed since the ATS.
            us = fwt_us(ats.sfgi) + 400
            time.sleep_ms(us // 1000)
            time.sleep_us(us % 1000)
        return bytes(raw)

    # -- exchange ---------------------------------------------------------------------------

    def exchange(self, apdu):
        """Send one APDU (chaining as needed) -> the whole response APDU."""
        if self.ats is None:
            raise CardGone("ISO-DEP not activated")
        mv = memoryview(apdu)
        n = len(apdu)
        off = 0
        miu = self.miu
        while n - off > miu:
            block = bytes((_PCB_I | _PCB_CHAIN | self.pni,)) + mv[off : off + miu]
            resp = self._send(block, True)
            if (resp[0] & 0xF6) != _PCB_RACK or (resp[0] & 1) != self.pni:
                raise ProtocolError(
                    "chained block %d not acknowledged: %s" % (self.pni, _hex(resp))
                )
            self.pni ^= 1
            off += miu
        block = bytes((_PCB_I | self.pni,)) + mv[off:]
        resp = self._send(block, True)
        wtx_count = 0
        blocks = 0
        out = bytearray()
        while True:
            pcb = resp[0]
            if (pcb & 0xF7) == _PCB_WTX:
                wtx_count += 1
                if wtx_count > _MAX_WTX:
                    raise CardGone("card asked for more time %d times" % wtx_count)
                resp = self._wtx(resp)
                continue
            if (pcb & 0xE2) != _PCB_I:
                raise ProtocolError("expected an I-block, got %s" % _hex(resp))
            if (pcb & 1) != self.pni:
                raise ProtocolError("I-block number %d, expected %d" % (pcb & 1, self.pni))
            start = 1 + ((pcb >> 3) & 1) + ((pcb >> 2) & 1)  # skip CID and NAD if present
            out += resp[start:]
            self.pni ^= 1
            if not pcb & _PCB_CHAIN:
                return bytes(out)
            blocks += 1
            if len(out) > self.max_answer or blocks > _MAX_BLOCKS:
                raise ProtocolError("chained answer too long (%d bytes so far)" % len(out))
            resp = self._send(bytes((_PCB_RACK | self.pni,)), False)

    def _wtx(self, resp):
        if len(resp) < 2:
            raise ProtocolError("S(WTX) without WTXM")
        wtxm = resp[1] & 0x3F
        if not 1 <= wtxm <= 59:
            raise ProtocolError("S(WTX) with WTXM %d" % wtxm)
        self.wtx += 1
        # The extended wait holds for the answer to this S(WTX) response only.
        timeout = min(self.fwt * wtxm, _FWT_MAX_US) + _DELTA_US
        return self._send(bytes((_PCB_WTX, wtxm)), False, timeout)

    def _send(self, block, is_i_block, timeout=0):
        """One block out, a valid block back, recovering lost or damaged frames.

        Retries (R(NAK), or R(ACK) while receiving a chain) are bounded by `retries`; an R(ACK)
        with the other block number in answer to an R(NAK) means the card never got our
        I-block, which is then sent again.
        """
        frame = block
        timeout = timeout or self.fwt + _DELTA_US
        failures = 0
        while True:
            try:
                resp = self.link.frame(frame, timeout)
                err = None if resp else ProtocolError("empty frame")
            except (LinkTimeout, ProtocolError) as e:
                resp = None
                err = e
            if err is None:
                pcb = resp[0]
                if (pcb & 0xF6) == _PCB_RACK and frame is not block and (pcb & 1) != self.pni:
                    if not is_i_block:
                        raise ProtocolError("R(ACK) %s while receiving a chain" % _hex(resp))
                    err = ProtocolError("card missed block %s" % _hex(block[:1]))
                    self.resent += 1
                elif _valid_pcb(pcb):
                    return resp
                else:
                    err = ProtocolError("invalid block %s" % _hex(resp))
            failures += 1
            if failures > self.retries:
                raise CardGone("no valid answer after %d retries: %s" % (self.retries, err))
            _log.debug("block %s: %s, retry %d", _hex(block[:1]), err, failures)
            if resp and (resp[0] & 0xF6) == _PCB_RACK and frame is not block:
                frame = block  # the card never got our I-block: send it again
            elif is_i_block or (block[0] & 0xF7) == _PCB_WTX:
                frame = bytes((_PCB_RNAK | self.pni,))
                self.naks += 1
            else:
                frame = block  # receiving a chain: the same R(ACK) asks for the block again
            timeout = self.fwt + _DELTA_US

    # -- presence and deactivation ----------------------------------------------------------

    def present(self):
        """R(NAK) presence check: any valid answer means the card is still there."""
        if self.ats is None:
            return False
        for _ in range(2):
            try:
                resp = self.link.frame(bytes((_PCB_RNAK | self.pni,)), self.fwt + _DELTA_US)
            except (LinkTimeout, ProtocolError):
                continue
            if resp and ((resp[0] & 0xF6) == _PCB_RACK or (resp[0] & 0xE2) == _PCB_I):
                return True
        return False

    def deselect(self):
        """S(DESELECT) -> True when the card confirmed it. Never raises a link error."""
        if self.ats is None:
            return True
        self.ats = None
        for _ in range(2):
            try:
                resp = self.link.frame(bytes((_PCB_DESELECT,)), self.fwt + _DELTA_US)
            except (LinkTimeout, ProtocolError):
                continue
            if resp and (resp[0] & 0xF7) == _PCB_DESELECT:
                return True
        return False


def _valid_pcb(pcb):
    # I-block 000xxx1x, R-block 1010x01x (a card never sends R(NAK)), S-block 11xxx010.
    return (pcb & 0xE2) == 0x02 or (pcb & 0xF6) == 0xA2 or (pcb & 0xC7) == 0xC2


def _hex(data):
    return "".join("%02x" % b for b in data)
