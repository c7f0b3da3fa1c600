"""Card side of ISO/IEC 14443-3 type A and ISO/IEC 14443-4 (T=CL), wrapped around an APDU card.

A ``Picc`` is what a reader simulator's RF field talks to. It takes frames as bit lists (ISO
14443-A sends each byte least significant bit first, and anticollision frames end mid-byte) and
answers with a bit list plus the delay after which the answer would start, or None for silence.

The wrapped card is anything with ``uid``, ``atqa``, ``sak``, ``ats`` (TL first), ``iso_dep`` and
either ``exchange(apdu) -> bytes | None`` (tools/sim/card.py VirtualCard: None = no answer) or
``process_apdu(apdu) -> bytes``. ``TestCard`` below is a small one for driver tests.

States follow ISO/IEC 14443-3 (IDLE, READY, ACTIVE, HALT, plus the -4 PROTOCOL state) and the
block rules of ISO/IEC 14443-4 as nfcpy's ``IsoDepInitiator`` (nfcpy src/nfc/tag/tt4.py) expects
a card to behave: an R(NAK) with the card's block number repeats its last block, any other
R(NAK) gets an R(ACK); an R(ACK) with a new block number fetches the next chained block.

Behaviour knobs (constructor keywords): ``wtx`` (WTXM values the card asks for before every
answer), ``processing_us`` (time to answer an APDU without WTX), ``chain_inf`` (largest INF per
chained answer block; default FSD - 3), ``ignore_fsd`` (send the whole answer in one block),
``mute_after`` (stop answering after this many -4 blocks, as a card pulled away mid-chain).

Bit rates (ISO/IEC 14443-4 PPS): ``receive(bits, kbps)`` takes the rate the reader sent at; a
frame at another rate than the card listens at is noise to it (no answer, ``rate_errors``
counted). ``tx_kbps_used`` is the rate of the answer just returned. Right after its ATS the card
takes a PPS request (``D0|CID 11 PPS1``, PPS1 = DSI << 2 | DRI) with divisors its ATS TA(1)
offers (same D both ways when TA(1) b8 is set): it answers ``D0|CID`` at the old rate, then
listens at fc/128·D_R and answers at fc/128·D_S. Values it does not offer get no answer. Back to
106 kbit/s when the card leaves the -4 state (DESELECT, field off, errors).
"""

import sys
from pathlib import Path

# CRC_A comes from the firmware's own module, so card and reader cannot disagree on it.
_FIRMWARE = str(Path(__file__).resolve().parents[2] / "firmware")
if _FIRMWARE not in sys.path:
    sys.path.append(_FIRMWARE)
import crc  # noqa: E402

STATE_OFF, STATE_IDLE, STATE_READY, STATE_ACTIVE, STATE_HALT, STATE_PROTOCOL = range(6)
STATE_NAMES = ("off", "idle", "ready", "active", "halt", "protocol")

REQA, WUPA = 0x26, 0x52
SEL_CODES = (0x93, 0x95, 0x97)
CASCADE_TAG = 0x88
FSD_TABLE = (16, 24, 32, 40, 48, 64, 96, 128, 256)
FDT_US = 90  # frame delay of simple answers: ~1236/fc, rounded up

FC = 13_560_000
KBPS = (106, 212, 424, 848)  # divisor index (DRI/DSI) 0..3
# ATS TA(1): b7..b5 DS = 8, 4, 2 (PICC -> PCD); b3..b1 DR = 8, 4, 2 (PCD -> PICC); b8 same D
_DS_BITS = {1: 0x10, 2: 0x20, 3: 0x40}
_DR_BITS = {1: 0x01, 2: 0x02, 3: 0x04}


def ats_ta1(ats):
    """TA(1) of an ATS (TL first), or None when absent."""
    if len(ats) >= 3 and ats[1] & 0x10:
        return ats[2]
    return None


def fwt_us(fwi):
    """ISO/IEC 14443-4 frame waiting time for FWI, in microseconds."""
    return (4096 << fwi) * 1_000_000 // FC


def to_bits(data, last_bits=0):
    """Bytes -> list of bits, LSB first; `last_bits` (1..7) keeps that many bits of the last."""
    bits = []
    for b in data:
        bits.extend((b >> i) & 1 for i in range(8))
    if last_bits and data:
        del bits[len(bits) - 8 + last_bits :]
    return bits


def from_bits(bits):
    """List of bits -> (bytes, number of valid bits in the last byte, 0 meaning 8)."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i >> 3] |= 1 << (i & 7)
    return bytes(out), len(bits) % 8


def with_crc(data):
    return crc.append_crc_a(bytes(data))


def parse_ats(ats):
    """-> (fsc, fwi) from an ATS (TL first), with the ISO defaults for what is absent."""
    fsci, fwi = 2, 4
    if len(ats) >= 2:
        t0 = ats[1]
        fsci = t0 & 0x0F
        i = 2
        if t0 & 0x10:
            i += 1
        if t0 & 0x20 and i < len(ats):
            fwi = ats[i] >> 4
    fsc = FSD_TABLE[min(fsci, 8)]
    return fsc, (4 if fwi == 15 else fwi)


class TestCard:
    """A stand-in APDU card for link tests.

    ``00 A4 04 00 Lc AID``   -> FCI 6F.. 9000 when AID is the T-Union AID, else 6A82
    ``80 CA hi lo``          -> (hi << 8 | lo) bytes counting 0, 1, 2... then 9000
    anything else            -> the command's data field echoed, then 9000
    Every APDU is logged in ``apdus`` so tests can prove a command ran exactly once.
    """

    AID = bytes.fromhex("A000000632010105")

    def __init__(self, uid, atqa=None, sak=0x20, ats=b"\x05\x78\x80\x40\x00", iso_dep=True):
        self.uid = bytes(uid)
        if atqa is None:  # MSB first, as card.py and the PN532 write it; UID size in b8..b7
            atqa = bytes((0x00, 0x04 | (0x40 * (len(self.uid) // 3 - 1))))
        self.atqa = bytes(atqa)
        self.sak = sak
        self.ats = bytes(ats)
        self.iso_dep = iso_dep
        self.present = True
        self.apdus = []

    def process_apdu(self, apdu):
        apdu = bytes(apdu)
        self.apdus.append(apdu)
        if apdu[:4] == b"\x00\xa4\x04\x00" and len(apdu) >= 5:
            name = apdu[5 : 5 + apdu[4]]
            if name == self.AID:
                return b"\x6f\x0a\x84\x08" + self.AID + b"\x90\x00"
            return b"\x6a\x82"
        if apdu[:2] == b"\x80\xca" and len(apdu) >= 4:
            n = apdu[2] << 8 | apdu[3]
            return bytes(i & 0xFF for i in range(n)) + b"\x90\x00"
        if len(apdu) > 5:
            return apdu[5 : 5 + apdu[4]] + b"\x90\x00"
        return b"\x90\x00"


class Picc:
    def __init__(
        self,
        card,
        wtx=(),
        processing_us=1000,
        chain_inf=None,
        ignore_fsd=False,
        mute_after=None,
    ):
        self.card = card
        self.uid = bytes(card.uid)
        if len(self.uid) not in (4, 7, 10):
            raise ValueError("UID must be 4, 7 or 10 bytes")
        self.levels = self._cascade(self.uid)
        self.wtx = list(wtx)
        # a slow card variant (tools/sim/card.py "slow") takes that many times longer
        self.processing_us = processing_us * int(getattr(card, "slowness", 1) or 1)
        self.chain_inf = chain_inf
        self.ignore_fsd = ignore_fsd
        self.mute_after = mute_after
        ats = bytes(card.ats or b"")
        self.fsc, self.fwi = parse_ats(ats)
        self.state = STATE_OFF
        self.halted = False  # woken from HALT: errors send it back there, not to IDLE
        self.log = []  # (direction, hex) of -4 blocks, for tests
        self.rate_errors = 0  # frames heard at a rate other than the card's
        self.pps_count = 0
        self.tx_kbps_used = 106
        self.apdu_count = 0
        self.blocks = 0
        self._reset_protocol()

    # -- field ------------------------------------------------------------------------------

    def power(self, on):
        """The RF field comes on (card powers up, IDLE) or goes off (everything volatile lost)."""
        if on and self.state == STATE_OFF:
            self.state = STATE_IDLE
        elif not on:
            self.state = STATE_OFF
            self.halted = False
        self._reset_protocol()

    @property
    def present(self):
        return bool(getattr(self.card, "present", True))

    def _reset_protocol(self):
        self.level = 0
        self.fsd = 16
        self.cid = 0
        self.bn = 1  # ISO/IEC 14443-4: the PICC's block number starts at 1
        self.rx_chain = bytearray()
        self.tx_chunks = []
        self.last = None  # the last block sent, for retransmission
        self.pending_wtx = []
        self.pending_answer = None
        self.rx_kbps = 106  # PCD -> PICC
        self.tx_kbps = 106  # PICC -> PCD
        self.pps_allowed = False

    @staticmethod
    def _cascade(uid):
        if len(uid) == 4:
            cls = [uid]
        elif len(uid) == 7:
            cls = [bytes((CASCADE_TAG,)) + uid[:3], uid[3:]]
        else:
            cls = [bytes((CASCADE_TAG,)) + uid[:3], bytes((CASCADE_TAG,)) + uid[3:6], uid[6:]]
        out = []
        for cl in cls:
            bcc = cl[0] ^ cl[1] ^ cl[2] ^ cl[3]
            out.append(cl + bytes((bcc,)))
        return out

    def _fail(self):
        self.state = STATE_HALT if self.halted else STATE_IDLE
        self._reset_protocol()

    # -- frames -----------------------------------------------------------------------------

    def receive(self, bits, kbps=106):
        """One frame from the reader, sent at `kbps` -> (answer bits, delay in µs) or None (no
        answer). The answer goes at tx_kbps_used."""
        if self.state == STATE_OFF or not self.present:
            return None
        if kbps != self.rx_kbps:
            self.rate_errors += 1  # noise at this card's rate: nothing decoded
            return None
        self.tx_kbps_used = self.tx_kbps  # a PPS or DESELECT answers at the rate in force
        n = len(bits)
        if n == 7:
            cmd = from_bits(bits)[0][0]
            return self._short(cmd)
        data, last = from_bits(bits)
        if self.state == STATE_READY and data and data[0] == SEL_CODES[self.level]:
            return self._anticollision(bits)
        if last:
            self._fail_unless_protocol()
            return None
        if len(data) < 3 or not crc.check_crc_a(data):
            self._fail_unless_protocol()
            return None
        frame = data[:-2]
        if self.state == STATE_ACTIVE:
            return self._active(frame)
        if self.state == STATE_PROTOCOL:
            return self._protocol(frame)
        if self.state == STATE_READY:
            self._fail()
        return None

    def _fail_unless_protocol(self):
        # A garbled frame in the -4 state is simply ignored (the reader will R(NAK)); in the
        # -3 states it throws the card back, as ISO/IEC 14443-3 says.
        if self.state in (STATE_READY, STATE_ACTIVE):
            self._fail()

    def _short(self, cmd):
        if cmd == WUPA and self.state in (STATE_IDLE, STATE_HALT):
            self.halted = self.state == STATE_HALT
        elif cmd == REQA and self.state == STATE_IDLE:
            self.halted = False
        else:
            if cmd in (REQA, WUPA) and self.state in (STATE_READY, STATE_ACTIVE):
                self._fail()
            return None
        self.state = STATE_READY
        self._reset_protocol()
        atqa = bytes(self.card.atqa)
        return to_bits(atqa[::-1]), FDT_US  # sent least significant byte first

    def _anticollision(self, bits):
        data, _ = from_bits(bits)
        if len(bits) < 16:
            return None
        nvb = data[1]
        known = ((nvb >> 4) - 2) * 8 + (nvb & 0x0F)
        cl = self.levels[self.level]
        if nvb == 0x70:
            if len(bits) != 72 or not crc.check_crc_a(data):
                self._fail()
                return None
            if data[2:7] != cl:
                self._fail()  # another card was chosen
                return None
            if self.level + 1 < len(self.levels):
                self.level += 1
                sak = 0x04
            else:
                self.state = STATE_ACTIVE
                sak = self.card.sak & ~0x04
            return to_bits(with_crc(bytes((sak,)))), FDT_US
        if known < 0 or known >= 40 or len(bits) != 16 + known:
            self._fail()
            return None
        mine = to_bits(cl)
        if bits[16:] != mine[:known]:
            return None  # not this card's prefix: it stays quiet but READY
        return mine[known:], FDT_US

    def _active(self, frame):
        if frame[:2] == b"\x50\x00":
            self.state = STATE_HALT
            self.halted = True
            return None
        if frame[0] == 0xE0 and len(frame) == 2 and self.card.iso_dep:
            fsdi, cid = frame[1] >> 4, frame[1] & 0x0F
            if cid == 15:
                self._fail()
                return None
            self.fsd = FSD_TABLE[min(fsdi, 8)]
            self.cid = cid
            self.state = STATE_PROTOCOL
            self.bn = 1
            self.pps_allowed = True
            ats = bytes(self.card.ats)
            return to_bits(with_crc(ats)), FDT_US
        self._fail()
        return None

    # -- ISO/IEC 14443-4 blocks -------------------------------------------------------------

    def _send(self, block, delay=FDT_US):
        self.last = (bytes(block), delay)
        self.log.append(("picc", bytes(block).hex()))
        return to_bits(with_crc(block)), delay

    def _resend(self):
        if self.last is None:
            return None
        block, _ = self.last
        self.log.append(("picc", block.hex() + " (again)"))
        return to_bits(with_crc(block)), FDT_US

    def _protocol(self, frame):
        self.log.append(("pcd", frame.hex()))
        if self.mute_after is not None and self.blocks >= self.mute_after:
            return None
        self.blocks += 1
        pcb = frame[0]
        if (pcb & 0xF0) == 0xD0:
            return self._pps(frame)
        self.pps_allowed = False
        i = 1
        if pcb & 0x08:  # CID follows
            if len(frame) < 2 or (frame[1] & 0x0F) != self.cid:
                return None
            i = 2
        elif self.cid:
            return None  # a card given a CID only answers blocks that carry it
        if (pcb & 0xE2) == 0x02:
            if pcb & 0x04:
                i += 1  # NAD: accepted and ignored
            if len(frame) > self.fsc - 2 and not self.ignore_fsd:
                return None  # longer than the card's FSC: an invalid block
            return self._i_block(pcb, frame[i:])
        if (pcb & 0xE6) == 0xA2:
            return self._r_block(pcb)
        if (pcb & 0xC7) == 0xC2:
            return self._s_block(pcb, frame[i:])
        return None

    def _pps(self, frame):
        """PPS request, only as the first block after the ATS; unsupported values: silence."""
        allowed, self.pps_allowed = self.pps_allowed, False
        if not allowed or (frame[0] & 0x0F) != self.cid or len(frame) not in (2, 3):
            return None
        pps0 = frame[1]
        if pps0 == 0x01 and len(frame) == 2:
            dsi = dri = 0
        elif pps0 == 0x11 and len(frame) == 3 and not frame[2] & 0xF0:
            dsi, dri = (frame[2] >> 2) & 3, frame[2] & 3
        else:
            return None
        ta1 = ats_ta1(bytes(self.card.ats or b""))
        if dsi or dri:
            if ta1 is None:
                return None
            if dsi and not ta1 & _DS_BITS[dsi] or dri and not ta1 & _DR_BITS[dri]:
                return None
            if ta1 & 0x80 and dsi != dri:
                return None
        self.pps_count += 1
        block = bytes(frame[:1])
        self.log.append(("picc", block.hex() + " (PPS)"))
        self.rx_kbps, self.tx_kbps = KBPS[dri], KBPS[dsi]
        return to_bits(with_crc(block)), FDT_US

    def _i_block(self, pcb, inf):
        self.bn = pcb & 1
        self.tx_chunks = []
        if pcb & 0x10:
            self.rx_chain += inf
            return self._send(bytes((0xA2 | self.bn,)))
        apdu = bytes(self.rx_chain) + bytes(inf)
        self.rx_chain = bytearray()
        self.apdu_count += 1
        if hasattr(self.card, "exchange"):
            answer = self.card.exchange(apdu)
        else:
            answer = self.card.process_apdu(apdu)
        if answer is None:  # the card left while working on it
            return None
        self.pending_answer = bytes(answer)
        self.pending_wtx = list(self.wtx)
        if self.pending_wtx:
            return self._send(bytes((0xF2, self.pending_wtx.pop(0))), fwt_us(self.fwi) // 2)
        return self._answer(self.processing_us)

    def _answer(self, delay):
        answer = self.pending_answer
        self.pending_answer = None
        size = len(answer) + 1 if self.ignore_fsd else (self.chain_inf or self.fsd - 3)
        self.tx_chunks = [answer[k : k + size] for k in range(0, len(answer), size)] or [b""]
        return self._next_chunk(delay)

    def _next_chunk(self, delay=FDT_US):
        chunk = self.tx_chunks.pop(0)
        pcb = 0x02 | self.bn | (0x10 if self.tx_chunks else 0)
        return self._send(bytes((pcb,)) + chunk, delay)

    def _r_block(self, pcb):
        n = pcb & 1
        if pcb & 0x10:  # NAK
            if n == self.bn:
                return self._resend()
            return self._send(bytes((0xA2 | self.bn,)))
        if n == self.bn:
            return self._resend()
        if self.tx_chunks:
            self.bn = n
            return self._next_chunk()
        return None

    def _s_block(self, pcb, inf):
        if (pcb & 0xF7) == 0xC2:  # DESELECT
            self.state = STATE_HALT
            self.halted = True
            block = bytes((pcb,)) + bytes(inf)
            self.log.append(("picc", block.hex()))
            self._reset_protocol()
            return to_bits(with_crc(block)), FDT_US
        if (pcb & 0xF7) == 0xF2 and self.pending_answer is not None and inf:
            wtxm = inf[0] & 0x3F
            if self.pending_wtx:
                return self._send(bytes((0xF2, self.pending_wtx.pop(0))), fwt_us(self.fwi) // 2)
            # Take most of the extended time, so a reader that did not extend its timer misses it
            return self._answer(max(self.processing_us, fwt_us(self.fwi) * wtxm * 3 // 4))
        return None
