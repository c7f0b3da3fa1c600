"""An MFRC522 (RC522) chip simulator, as an SPI device for tools/sim/buses.py SPIBus.

What it models (facts: NXP MFRC522 data sheet, register map as in miguelbalboa/rfid
src/MFRC522.h; docs/sources.md):

* SPI framing: the first byte after chip select is ``(addr << 1) | 0x80`` to read or
  ``addr << 1`` to write. A write transaction sends every further byte to the same register (the
  FIFO is filled this way); a read transaction treats every further byte as the next address and
  answers the previous one, so several registers (or many FIFO bytes) come back in one select.
  Mode 0, MSB first: any other SPI setting reads back as 0xFF garbage.
* The register file with its reset values, write-one-to-clear IRQ registers (Set1/Set2), the
  64-byte FIFO (FlushBuffer, BufferOvfl on overflow, reads of an empty FIFO give 0), the
  version register (0x92).
* Commands: Idle, Mem, GenerateRandomID, CalcCRC (the CRC coprocessor with ModeReg's preset),
  Transmit, Receive, Transceive (started by BitFramingReg StartSend), SoftReset. MFAuthent
  is refused with ProtocolErr.
* The IRQ pin: ComIEnReg/DivIEnReg enables, IRqInv (active low after reset), driven through
  ``irq_line(level)`` (the hub server wires it to pin "rc522_irq").
* The timer: TAuto start at the end of a transmission, period from TPrescaler and TReload. Time
  is virtual: each card answer carries its delay, and an answer later than the timer is lost
  (TimerIRq). Every programmed period is kept in ``timer_log`` so tests can check FWT and WTX.
* The RF side: antenna (TxControlReg Tx1/Tx2), 100 % ASK required (TxASKReg), as real type A
  cards need. Bit rates: TxModeReg/RxModeReg TxSpeed/RxSpeed (106, 212, 424, 848 kbit/s) with
  the ModWidthReg that goes with the transmit rate (0x26, 0x15, 0x0A, 0x05); a frame sent with a
  ModWidth that does not fit, at a rate the card does not listen at, or answered at a rate the
  receiver is not set for, is lost (``rate_errors``). Cards switch rates by PPS
  (tools/sim/picc.py). Frames go to every ``Picc`` in the field as bit lists
  (TxLastBits, RxAlign, RxLastBits); two cards answering differently give a bit collision
  (CollErr, ValuesAfterColl). CollReg's CollPos counts the RxAlign offset in, as NXP's
  reader library reads it (known bits = 8 * (known // 8) + CollPos - 1; the MFRC631 data
  sheet, RxColl, says so in words): with RxAlign 2 a collision in the first received bit is
  CollPos 3. Past bit 32 of that count, CollPosNotValid.
* ErrIRq at the collision (``coll_irq = "mid"``, the default): the chip flags CollErr and
  ErrIRq when the colliding bit comes in, with only the bytes before it in the FIFO; the rest
  of the frame and RxIRq come later (after ``coll_irq_reads`` more ComIrqReg reads, a virtual
  clock), unless a command write stops the receiver first. ``coll_irq = "end"``: everything at
  the end of the frame.
* Faults, consumed one per RF frame from ``inject()``: ``lose_cmd`` (the card never hears the
  frame), ``lose_resp`` (the card acts, the answer is lost), ``corrupt_resp`` (a flipped bit the
  chip cannot see: CRC must catch it), ``parity_resp`` (ParityErr), ``garbage`` (random bytes),
  ``truncate`` (answer cut to `arg` bytes), ``remove`` (the card leaves before answering),
  ``overflow`` (more than 64 bytes arrive). Chip-wide: ``stuck`` (no IRQ ever rises until a
  SoftReset), ``dead`` (MISO reads 0x00 until cleared) and ``noise`` (the next `arg` register
  reads return random bytes: a garbled bus).

Not modelled: hardware TxCRCEn/RxCRCEn (the driver computes CRC_A itself), MIFARE Crypto1,
FIFO water-level refills during a transmission.
"""

import random

from tools.sim import picc as piccmod

# Registers
COMMAND, COMIEN, DIVIEN, COMIRQ, DIVIRQ, ERROR, STATUS1, STATUS2 = 0x01, 2, 3, 4, 5, 6, 7, 8
FIFODATA, FIFOLEVEL, WATERLEVEL, CONTROL, BITFRAMING, COLL = 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E
MODE, TXMODE, RXMODE, TXCONTROL, TXASK = 0x11, 0x12, 0x13, 0x14, 0x15
CRCRESULT_H, CRCRESULT_L, MODWIDTH, RFCFG = 0x21, 0x22, 0x24, 0x26
# ModWidthReg per transmit bit rate (miguelbalboa/rfid MFRC522Extended PICC_PPS).
MODWIDTH_FOR = {106: 0x26, 212: 0x15, 424: 0x0A, 848: 0x05}
TMODE, TPRESCALER, TRELOAD_H, TRELOAD_L, VERSION = 0x2A, 0x2B, 0x2C, 0x2D, 0x37

CMD_IDLE, CMD_MEM, CMD_RANDOM, CMD_CALCCRC, CMD_TRANSMIT = 0x00, 0x01, 0x02, 0x03, 0x04
CMD_NOCHANGE, CMD_RECEIVE, CMD_TRANSCEIVE, CMD_MFAUTHENT, CMD_SOFTRESET = (
    0x07,
    0x08,
    0x0C,
    0x0E,
    0x0F,
)

IRQ_TX, IRQ_RX, IRQ_IDLE, IRQ_ERR, IRQ_TIMER = 0x40, 0x20, 0x10, 0x02, 0x01
ERR_PROTOCOL, ERR_PARITY, ERR_CRC, ERR_COLL, ERR_OVFL = 0x01, 0x02, 0x04, 0x08, 0x10
FIFO_SIZE = 64
FC = 13_560_000

RESET_VALUES = {
    COMMAND: 0x20,
    COMIEN: 0x80,
    COMIRQ: 0x14,
    STATUS1: 0x21,
    WATERLEVEL: 0x08,
    CONTROL: 0x10,
    COLL: 0x80,
    MODE: 0x3F,
    TXCONTROL: 0x80,
    MODWIDTH: 0x26,
    RFCFG: 0x48,
    0x16: 0x10,  # TxSelReg
    0x17: 0x84,  # RxSelReg
    0x18: 0x84,  # RxThresholdReg
    0x19: 0x4D,  # DemodReg
    CRCRESULT_H: 0xFF,
    CRCRESULT_L: 0xFF,
    0x28: 0x88,  # GsNReg
    0x29: 0x20,  # CWGsPReg
    0x2A: 0x00,
    VERSION: 0x92,
}

FAULT_KINDS = (
    "lose_cmd",
    "lose_resp",
    "corrupt_resp",
    "parity_resp",
    "garbage",
    "truncate",
    "remove",
    "overflow",
)


class RC522Sim:
    def __init__(self, seed=1, irq_line=None):
        self.irq_line = irq_line  # fn(level) driving the IRQ pin, called when it changes
        self._irq_level = None
        self.field = {}  # name -> Picc
        self.removed = {}  # name -> Picc, cards that left (kept for audits)
        self.faults = []  # [frames from now, kind, arg]
        self.stuck = False
        self.dead = False
        self.noise = 0  # this many more register reads return random bytes
        self.rng = random.Random(seed)
        self.frames = []  # (direction, hex, bits) of the RF side, most recent last
        self.timer_log = []  # µs the timer was programmed for, per transceive
        self.frame_count = 0
        self.rate_errors = 0  # frames lost to a bit rate or ModWidth mismatch
        self.errors = []  # things the driver did that a real chip would not like
        self._selected = False
        self._addr = None
        self._reading = False
        self.coll_irq = "mid"  # or "end": when ErrIRq rises for a bit collision
        self.coll_irq_reads = 1  # ComIrqReg reads that see ErrIRq before the frame ends
        self._rx_rest = None  # the part of a colliding frame still on the air
        self.reset()

    # -- chip state -------------------------------------------------------------------------

    def reset(self):
        self.regs = bytearray(64)
        for reg, value in RESET_VALUES.items():
            self.regs[reg] = value
        self.fifo = bytearray()
        self.stuck = False
        self._rx_rest = None
        self._antenna(False)
        self._update_irq()

    def irq_active(self):
        return bool(
            (self.regs[COMIRQ] & self.regs[COMIEN] & 0x7F)
            or (self.regs[DIVIRQ] & self.regs[DIVIEN] & 0x14)
        )

    def _update_irq(self):
        # ComIEnReg bit 7 (IRqInv) makes the pin active low, as it is after reset.
        active = self.irq_active()
        level = int(not active) if self.regs[COMIEN] & 0x80 else int(active)
        if level != self._irq_level:
            self._irq_level = level
            if self.irq_line is not None:
                self.irq_line(level)

    def antenna_on(self):
        return (self.regs[TXCONTROL] & 0x03) != 0

    def _antenna(self, on):
        for p in self.field.values():
            p.power(on)

    def place(self, name, picc):
        self.field[name] = picc
        if self.antenna_on():
            picc.power(True)

    def remove(self, name):
        picc = self.field.pop(name, None)
        if picc is not None:
            picc.power(False)
            if hasattr(picc.card, "remove"):
                picc.card.remove()
            self.removed[name] = picc
        return picc is not None

    def inject(self, kind, at=0, arg=None):
        if kind == "stuck":
            self.stuck = True
        elif kind == "dead":
            self.dead = True
        elif kind == "alive":
            self.dead = False
        elif kind == "noise":
            self.noise = 100 if arg is None else int(arg)
        elif kind in FAULT_KINDS:
            self.faults.append([int(at), kind, arg])
        else:
            raise ValueError("unknown fault %r" % kind)

    def timer_us(self):
        if not self.regs[TMODE] & 0x80:
            return None  # TAuto off: the timer never starts by itself
        prescaler = ((self.regs[TMODE] & 0x0F) << 8) | self.regs[TPRESCALER]
        reload = (self.regs[TRELOAD_H] << 8) | self.regs[TRELOAD_L]
        return (reload + 1) * (2 * prescaler + 1) * 1_000_000 // FC

    # -- SPI --------------------------------------------------------------------------------

    def spi_select(self, active):
        self._selected = active
        self._addr = None

    def spi_exchange(self, data, config):
        if self.dead:
            return b"\x00" * len(data)
        if not self._selected:
            return b"\xff" * len(data)
        if (
            config.get("firstbit", "MSB") != "MSB"
            or config.get("polarity", 0)
            or config.get("phase", 0)
        ):
            self.errors.append("SPI must be mode 0, MSB first")
            return b"\xff" * len(data)
        out = bytearray(len(data))
        for i, b in enumerate(data):
            if self._addr is None:
                self._addr = (b >> 1) & 0x3F
                self._reading = bool(b & 0x80)
            elif self._reading:
                out[i] = self.read_reg(self._addr)
                if self.noise > 0:
                    self.noise -= 1
                    out[i] = self.rng.randrange(256)
                self._addr = (b >> 1) & 0x3F
            else:
                self.write_reg(self._addr, b)
        self._update_irq()
        return bytes(out)

    def read_reg(self, reg):
        if reg == COMIRQ and self._rx_rest is not None:
            if self._rx_rest[0] > 0:
                self._rx_rest[0] -= 1
            else:
                self._finish_rx()
        if reg == FIFODATA:
            return self.fifo.pop(0) if self.fifo else 0
        if reg == FIFOLEVEL:
            return len(self.fifo)
        if reg == STATUS1:
            lo = len(self.fifo) <= (self.regs[WATERLEVEL] & 0x3F)
            hi = FIFO_SIZE - len(self.fifo) <= (self.regs[WATERLEVEL] & 0x3F)
            irq = bool(self.regs[COMIRQ] & self.regs[COMIEN] & 0x7F)
            return 0x20 | (0x10 if irq else 0) | (0x02 if hi else 0) | (0x01 if lo else 0)
        return self.regs[reg]

    def write_reg(self, reg, value):
        if reg == COMMAND:
            self._rx_rest = None  # a new command (Idle too) stops the receiver
            self.regs[COMMAND] = (self.regs[COMMAND] & 0xE0) | (value & 0x3F)
            self._command(value & 0x0F)
        elif reg == COMIRQ:
            self._irq_write(COMIRQ, value, 0x7F)
        elif reg == DIVIRQ:
            self._irq_write(DIVIRQ, value, 0x14)
        elif reg == FIFODATA:
            if len(self.fifo) >= FIFO_SIZE:
                self.regs[ERROR] |= ERR_OVFL
            else:
                self.fifo.append(value)
        elif reg == FIFOLEVEL:
            if value & 0x80:
                self.fifo = bytearray()
                self.regs[ERROR] &= ~ERR_OVFL
        elif reg == BITFRAMING:
            self.regs[BITFRAMING] = value & 0x7F
            if value & 0x80 and (self.regs[COMMAND] & 0x0F) == CMD_TRANSCEIVE:
                self._transceive()
        elif reg == TXCONTROL:
            was = self.antenna_on()
            self.regs[TXCONTROL] = value
            if was != self.antenna_on():
                self._antenna(self.antenna_on())
        elif reg in (ERROR, STATUS1, FIFOLEVEL, VERSION, CRCRESULT_H, CRCRESULT_L):
            pass  # read-only
        elif reg == CONTROL:
            self.regs[CONTROL] = (self.regs[CONTROL] & 0x07) | (value & 0x38)
        elif reg == COLL:
            self.regs[COLL] = (self.regs[COLL] & 0x3F) | (value & 0x80)
        else:
            self.regs[reg] = value

    def _irq_write(self, reg, value, mask):
        if value & 0x80:
            self.regs[reg] |= value & mask
        else:
            self.regs[reg] &= ~(value & mask) & 0xFF

    # -- commands ---------------------------------------------------------------------------

    def _command(self, cmd):
        if cmd == CMD_SOFTRESET:
            self.reset()
            return
        if cmd == CMD_CALCCRC:
            preset = (0x0000, 0x6363, 0xA671, 0xFFFF)[self.regs[MODE] & 0x03]
            value = preset
            for byte in self.fifo:
                value ^= byte
                for _ in range(8):
                    value = (value >> 1) ^ 0x8408 if value & 1 else value >> 1
            self.fifo = bytearray()
            self.regs[CRCRESULT_L] = value & 0xFF
            self.regs[CRCRESULT_H] = value >> 8
            if not self.stuck:
                self.regs[DIVIRQ] |= 0x04
        elif cmd == CMD_TRANSMIT:
            bits = self._take_tx_bits()
            self._rf_exchange(bits)
            if not self.stuck:
                self.regs[COMIRQ] |= IRQ_TX | IRQ_IDLE
            self.regs[COMMAND] &= 0xF0
        elif cmd == CMD_MFAUTHENT:
            self.regs[ERROR] |= ERR_PROTOCOL
            if not self.stuck:
                self.regs[COMIRQ] |= IRQ_ERR | IRQ_IDLE
            self.regs[COMMAND] &= 0xF0
        elif cmd in (CMD_MEM, CMD_RANDOM):
            if not self.stuck:
                self.regs[COMIRQ] |= IRQ_IDLE
            self.regs[COMMAND] &= 0xF0
        elif cmd == CMD_TRANSCEIVE and self.regs[BITFRAMING] & 0x80:
            self._transceive()

    def _take_tx_bits(self):
        data = bytes(self.fifo)
        self.fifo = bytearray()
        return piccmod.to_bits(data, self.regs[BITFRAMING] & 0x07)

    def _next_fault(self):
        hit = None
        for f in self.faults:
            if f[0] == 0 and hit is None:
                hit = f
        for f in self.faults:
            f[0] -= 1
        self.faults = [f for f in self.faults if f[0] >= 0 and f is not hit]
        return hit

    def _rf_exchange(self, bits):
        """Send `bits` to every card; -> list of (answer bits, delay µs)."""
        self.frame_count += 1
        fault = self._next_fault()
        self._log("pcd", bits)
        if not self.antenna_on():
            return [], fault
        tx_speed = (self.regs[TXMODE] >> 4) & 7
        rx_speed = (self.regs[RXMODE] >> 4) & 7
        if not self.regs[TXASK] & 0x40 or tx_speed > 3 or rx_speed > 3:
            return [], fault  # type A cards need 100 % ASK; speeds above 848 kbit/s are RFU
        tx_kbps, rx_kbps = piccmod.KBPS[tx_speed], piccmod.KBPS[rx_speed]
        if self.regs[MODWIDTH] != MODWIDTH_FOR[tx_kbps]:
            self.rate_errors += 1
            return [], fault  # the pause width does not fit the bit rate: no card decodes it
        if fault and fault[1] == "remove":
            for name in list(self.field):
                self.remove(name)
            return [], fault
        if fault and fault[1] == "lose_cmd":
            return [], fault
        answers = []
        for p in list(self.field.values()):
            got = p.receive(bits, tx_kbps)
            if got is None:
                continue
            if p.tx_kbps_used != rx_kbps:
                self.rate_errors += 1  # the card answered at another rate: nothing decoded
                continue
            answers.append(got)
        return answers, fault

    def _transceive(self):
        self.regs[BITFRAMING] &= 0x7F
        bits = self._take_tx_bits()
        timeout = self.timer_us()
        self.timer_log.append(timeout)
        del self.timer_log[:-500]
        answers, fault = self._rf_exchange(bits)
        if self.stuck:
            return
        self.regs[ERROR] &= ERR_OVFL
        self.regs[COMIRQ] |= IRQ_TX
        self.regs[CONTROL] &= 0xF8
        if timeout is not None:
            answers = [a for a in answers if a[1] < timeout]
        kind = fault[1] if fault else None
        if not answers or kind == "lose_resp":
            if timeout is not None:
                self.regs[COMIRQ] |= IRQ_TIMER
            self._log("picc", None)
            return
        rx, collision = self._merge([a[0] for a in answers])
        err = 0
        align = (self.regs[BITFRAMING] >> 4) & 0x07
        if collision is not None:
            err |= ERR_COLL
            pos = align + collision + 1  # RxAlign counts: the bit's place in its FIFO byte
            self.regs[COLL] = (self.regs[COLL] & 0x80) | (0x20 if pos > 32 else pos & 0x1F)
        else:
            self.regs[COLL] |= 0x20
        data_bits = rx
        if kind == "corrupt_resp" and rx:
            data_bits = list(rx)
            k = self.rng.randrange(len(data_bits))
            data_bits[k] ^= 1
        elif kind == "parity_resp":
            err |= ERR_PARITY
        elif kind == "garbage":
            n = int(arg_or(fault, 5))
            data_bits = piccmod.to_bits(bytes(self.rng.randrange(256) for _ in range(n)))
        elif kind == "truncate":
            data_bits = rx[: 8 * int(arg_or(fault, 1))]
        elif kind == "overflow":
            data_bits = rx + piccmod.to_bits(b"\x55" * FIFO_SIZE)
        self._log("picc", data_bits)
        data, last = piccmod.from_bits([0] * align + data_bits)
        if collision is not None and self.coll_irq == "mid":
            # CollErr and ErrIRq now, with the bytes completed before the colliding bit; the
            # rest of the frame, its error bits and RxIRq when the frame ends.
            cut = min((align + collision) // 8, len(data))
            err |= self._store(data[:cut])
            self.regs[ERROR] |= ERR_COLL
            self.regs[COMIRQ] |= IRQ_ERR
            self._rx_rest = [self.coll_irq_reads, data[cut:], last, err]
            return
        err |= self._store(data)
        self._end_rx(last, err)

    def _store(self, data):
        room = FIFO_SIZE - len(self.fifo)
        self.fifo += data[:room]
        return ERR_OVFL if len(data) > room else 0

    def _end_rx(self, last, err):
        self.regs[CONTROL] = (self.regs[CONTROL] & 0xF8) | last
        self.regs[ERROR] |= err
        self.regs[COMIRQ] |= IRQ_RX | (IRQ_ERR if err else 0)

    def _finish_rx(self):
        _, rest, last, err = self._rx_rest
        self._rx_rest = None
        self._end_rx(last, err | self._store(rest))

    def _merge(self, answers):
        """Overlay answers bit by bit -> (bits, index of the first collision or None)."""
        if len(answers) == 1:
            return list(answers[0]), None
        n = max(len(a) for a in answers)
        out, first = [], None
        after_coll = bool(self.regs[COLL] & 0x80)
        for i in range(n):
            seen = {a[i] for a in answers if i < len(a)}
            if len(seen) > 1 or any(i >= len(a) for a in answers):
                if first is None:
                    first = i
            if first is not None and i >= first:
                out.append((1 if 1 in seen else 0) if after_coll else 0)
            else:
                out.append(seen.pop())
        return out, first

    def _log(self, direction, bits):
        if bits is None:
            self.frames.append((direction, None, 0))
        else:
            data, last = piccmod.from_bits(bits)
            self.frames.append((direction, data.hex(), len(bits)))
        del self.frames[:-400]


def arg_or(fault, default):
    return fault[2] if fault and fault[2] is not None else default
