# PN532 NFC front end: host frame layer, commands a validator needs, and the Reader interface.
# The transport (pn532_i2c, pn532_spi, pn532_uart) moves whole frames; everything above it lives
# here so the three buses behave alike. Protocol facts: docs/nfc.md (after nfcpy and libnfc).
#
# Transport interface (duck-typed):
#   wake()                          bring the chip out of power-down / LowVbat
#   send(frame)                     write one host frame (bytes or memoryview)
#   receive(buf, timeout_ms, hint) -> n   one chip frame into buf (n bytes, leading junk
#                                   allowed), 0 on timeout; ProtocolError on a broken header;
#                                   hint = expected length (6 for an ACK) or 0
#   irq                             the P70_IRQ Pin or None (SAMConfiguration enables it)
import time

import log
from linkerr import CardGone, ChipError, LinkError, LinkTimeout, ProtocolError
from micropython import const
from reader import KBPS, KIND_A, KIND_B, Reader, Target, ats_bit_rate

_log = log.get("pn532")

TFI_HOST = const(0xD4)
TFI_CHIP = const(0xD5)
ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"

CMD_DIAGNOSE = const(0x00)
CMD_GET_FIRMWARE_VERSION = const(0x02)
CMD_SET_SERIAL_BAUD_RATE = const(0x10)
CMD_SET_PARAMETERS = const(0x12)
CMD_SAM_CONFIGURATION = const(0x14)
CMD_RF_CONFIGURATION = const(0x32)
CMD_IN_DATA_EXCHANGE = const(0x40)
CMD_IN_LIST_PASSIVE_TARGET = const(0x4A)
CMD_IN_PSL = const(0x4E)
CMD_IN_RELEASE = const(0x52)

NORMAL_MAX = const(254)  # LEN of a normal frame (TFI + PD); longer goes in an extended frame
EXTENDED_MAX = const(264)  # libnfc PN53x_EXTENDED_FRAME__DATA_MAX_LEN
FRAME_BUF = const(EXTENDED_MAX + 12)  # preamble, start, ext. header, DCS, postamble, slack

# Frame kinds returned by parse_frame()
FRAME_ACK = const(1)
FRAME_NACK = const(2)
FRAME_DATA = const(3)
FRAME_ERROR = const(4)

SUPPORT_TYPE_A = const(0x01)
SUPPORT_TYPE_B = const(0x02)

# Status byte (InDataExchange, InRelease, Diagnose): bit 6 = MI, low 6 bits = error.
_MI = const(0x40)
_ERR_MASK = const(0x3F)
# The card did not answer, or it left: the command may have run (tearing).
_GONE = (0x01, 0x0A, 0x29, 0x2B)
# The chip itself is unwell or refuses the command.
_CHIP = (0x0D, 0x10, 0x12, 0x26, 0x27, 0x2D)

BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1288000)


def build_frame(buf, cmd, head=b"", body=b""):
    """Write the host frame D4 cmd head body into buf; return its length."""
    n = 2 + len(head) + len(body)
    if n > EXTENDED_MAX:
        raise ValueError("frame data too long: %d" % n)
    buf[0] = 0
    buf[1] = 0
    buf[2] = 0xFF
    if n <= NORMAL_MAX:
        buf[3] = n
        buf[4] = (-n) & 0xFF
        i = 5
    else:
        buf[3] = 0xFF
        buf[4] = 0xFF
        buf[5] = n >> 8
        buf[6] = n & 0xFF
        buf[7] = (-(buf[5] + buf[6])) & 0xFF
        i = 8
    buf[i] = TFI_HOST
    buf[i + 1] = cmd
    s = TFI_HOST + cmd
    i += 2
    for part in (head, body):
        m = len(part)
        buf[i : i + m] = part
        for b in part:
            s += b
        i += m
    buf[i] = (-s) & 0xFF
    buf[i + 1] = 0
    return i + 2


def _find_start(buf, n):
    for i in range(n - 1):
        if buf[i] == 0 and buf[i + 1] == 0xFF:
            return i + 2
    return -1


def frame_size(buf, n):
    """Bytes from buf[0] up to the end of the first frame in buf[:n] (leading junk included);
    -1 when the header is not complete yet. Raises ProtocolError when the length checksum is
    wrong, so a reader never waits for bytes a broken header promised."""
    p = _find_start(buf, n)
    if p < 0 or p + 2 > n:
        return -1
    ln = buf[p]
    lcs = buf[p + 1]
    if (ln == 0 and lcs == 0xFF) or (ln == 0xFF and lcs == 0):
        return p + 3  # ACK / NACK: LEN, LCS, postamble
    if ln == 0xFF and lcs == 0xFF:
        if p + 5 > n:
            return -1
        ln = (buf[p + 2] << 8) | buf[p + 3]
        if (buf[p + 2] + buf[p + 3] + buf[p + 4]) & 0xFF:
            raise ProtocolError("extended frame length checksum")
        if ln > EXTENDED_MAX + 1 or ln == 0:
            raise ProtocolError("extended frame length %d" % ln)
        return p + 5 + ln + 2
    if (ln + lcs) & 0xFF:
        raise ProtocolError("frame length checksum")
    return p + 2 + ln + 2


def parse_frame(buf, n):
    """-> (kind, offset, length). For FRAME_DATA, buf[offset:offset+length] is TFI + PD."""
    size = frame_size(buf, n)
    if size < 0 or size > n:
        raise ProtocolError("truncated frame (%d bytes)" % n)
    p = _find_start(buf, n)
    ln = buf[p]
    lcs = buf[p + 1]
    if ln == 0 and lcs == 0xFF:
        return FRAME_ACK, 0, 0
    if ln == 0xFF and lcs == 0:
        return FRAME_NACK, 0, 0
    if ln == 0xFF and lcs == 0xFF:  # the extended-frame marker; LEN FF LCS 01 is a normal frame
        ln = (buf[p + 2] << 8) | buf[p + 3]
        off = p + 5
    else:
        off = p + 2
    s = 0
    for i in range(off, off + ln + 1):
        s += buf[i]
    if s & 0xFF:
        raise ProtocolError("frame data checksum")
    if ln == 1 and buf[off] == 0x7F:
        return FRAME_ERROR, off, 1
    if buf[off] != TFI_CHIP:
        raise ProtocolError("frame identifier %02x" % buf[off])
    if ln < 2:
        raise ProtocolError("frame without a response code")
    return FRAME_DATA, off, ln


def status_error(status, what):
    """Map a nonzero status byte's error code to the linkerr type the callers expect."""
    code = status & _ERR_MASK
    text = "%s: PN532 status %02x" % (what, code)
    if code in _GONE:
        return CardGone(text)
    if code in _CHIP:
        return ChipError(text)
    return ProtocolError(text)


def _bytes_hex(b):
    return "".join("%02x" % x for x in b)


def parse_target_a(data):
    """InListPassiveTarget type A answer (after D5 4B): NbTg Tg ATQA(2) SAK len UID [ATS]."""
    if len(data) < 1:
        raise ProtocolError("empty target list")
    if data[0] == 0:
        return None
    if len(data) < 6:
        raise ProtocolError("short type A target data")
    tg = data[1]
    atqa = bytes(data[2:4])
    sak = data[4]
    uid_len = data[5]
    if uid_len not in (4, 7, 10) or len(data) < 6 + uid_len:
        raise ProtocolError("type A UID length %d" % uid_len)
    uid = bytes(data[6 : 6 + uid_len])
    ats = bytes(data[6 + uid_len :])
    iso_dep = False
    if sak & 0x20:
        if ats and ats[0] == len(ats) and len(ats) >= 1:
            iso_dep = True
        else:
            _log.warning("card %s: SAK says ISO 14443-4 but ATS is %s", _bytes_hex(uid), ats)
            ats = b""
    return Target(KIND_A, uid, atqa=atqa, sak=sak, ats=ats, iso_dep=iso_dep, tg=tg)


def parse_target_b(data):
    """Type B answer: NbTg Tg ATQB(12) ATTRIB_RES-len ATTRIB_RES."""
    if len(data) < 1:
        raise ProtocolError("empty target list")
    if data[0] == 0:
        return None
    if len(data) < 15 or data[2] != 0x50:
        raise ProtocolError("short or malformed ATQB")
    atqb = bytes(data[2:14])
    attr_len = data[14]
    if len(data) < 15 + attr_len:
        raise ProtocolError("truncated ATTRIB answer")
    # ProtocolInfo bit 0 of its second byte: the PICC is ISO 14443-4 compliant.
    iso_dep = bool(atqb[10] & 0x01)
    return Target(KIND_B, atqb[1:5], ats=atqb, iso_dep=iso_dep, tg=data[1])


class PN532(Reader):
    """PN532 reader on any transport. Create, call init(), then poll()/transceive().
    kinds: "A" polls type A only (T-Union cards are type A; a type B round costs a second
    InListPassiveTarget per poll); "AB" adds type B where the chip's firmware supports it.
    max_kbps: fastest bit rate asked of a type A card whose ATS offers more than 106 kbit/s
    (InPSL; the PN532 goes to 424); 106 never asks."""

    def __init__(
        self,
        transport,
        kinds="A",
        passive_retries=2,
        rf_timeout_index=0x0D,
        ack_timeout_ms=50,
        command_timeout_ms=300,
        exchange_timeout_ms=1500,
        chunk=251,
        max_response=512,
        resend_limit=2,
        presence_timeout_ms=700,
        max_kbps=424,
    ):
        Reader.__init__(self)
        self.max_rate = min(KBPS.index(max_kbps), 2) if max_kbps in KBPS else 0
        self.psl_refused = 0
        self.t = transport
        self.kinds = kinds
        self.passive_retries = passive_retries
        self.rf_timeout_index = rf_timeout_index
        self.ack_timeout_ms = ack_timeout_ms
        self.command_timeout_ms = command_timeout_ms
        self.exchange_timeout_ms = exchange_timeout_ms
        self.chunk = min(chunk, EXTENDED_MAX - 3)
        self.max_response = max_response
        self.resend_limit = resend_limit
        self.presence_timeout_ms = presence_timeout_ms
        self.firmware = None  # (ic, ver, rev, support)
        self.commands = 0  # frames sent, for the bus cost figures
        self._tx = bytearray(FRAME_BUF)
        self._txv = memoryview(self._tx)
        self._rx = bytearray(FRAME_BUF)
        self._rxv = memoryview(self._rx)
        self._resp = bytearray(self.max_response)

    # ---- frame level -------------------------------------------------------------------
    def _cancel(self):
        # An ACK from the host aborts whatever the chip is doing (nfcpy does this on timeout).
        try:
            self.t.send(ACK)
        except OSError as e:
            _log.warning("cancel ACK not sent: %s", e)

    def _receive(self, timeout_ms, hint=0):
        try:
            return self.t.receive(self._rx, timeout_ms, hint)
        except LinkError:
            raise
        except OSError as e:
            raise ChipError("bus error: %s" % e)

    def _send(self, frame):
        try:
            self.t.send(frame)
        except LinkError:
            raise
        except OSError as e:
            raise ChipError("bus error: %s" % e)

    def _wait_ack(self, cmd):
        """-1 on silence, 0 on ACK, n > 0 when the response itself came first (ACK lost) and
        sits in the receive buffer. Stale responses are skipped."""
        deadline = time.ticks_add(time.ticks_ms(), self.ack_timeout_ms)
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return -1
            try:
                n = self._receive(left, 6)
                if not n:
                    return -1
                kind, off, _ = parse_frame(self._rx, n)
            except ProtocolError as e:
                # Something came back, so the chip got the command: do not send it again.
                _log.warning("damaged frame while waiting for ACK: %s", e)
                return 0
            if kind == FRAME_ACK:
                return 0
            if kind == FRAME_ERROR:
                raise ChipError("PN532 error frame for command %02x" % cmd)
            if kind == FRAME_DATA and self._rx[off + 1] == cmd + 1:
                return n
            _log.warning("stale frame while waiting for ACK, skipped")

    def command(self, cmd, head=b"", body=b"", timeout_ms=None, resend=True):
        """Send one command and return its response parameters (a memoryview into the receive
        buffer, valid until the next command). Resends a command that got no ACK only when
        `resend` (never for InDataExchange: the card might see it twice)."""
        n = build_frame(self._tx, cmd, head, body)
        frame = self._txv[:n]
        tries = 0
        while True:
            self._send(frame)
            self.commands += 1
            got = self._wait_ack(cmd)
            if got >= 0:
                break
            self._cancel()
            if not resend or tries >= self.resend_limit:
                raise LinkTimeout("PN532 did not acknowledge command %02x" % cmd)
            tries += 1
            _log.warning("no ACK for command %02x, sending it again", cmd)
        return self._response(cmd, timeout_ms or self.command_timeout_ms, got)

    def _response(self, cmd, timeout_ms, first=0):
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        nacks = 0
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            try:
                if first:
                    n, first = first, 0
                else:
                    n = self._receive(left) if left > 0 else 0
                if not n:
                    self._cancel()
                    raise LinkTimeout("PN532 response to %02x timed out" % cmd)
                kind, off, ln = parse_frame(self._rx, n)
            except ProtocolError as e:
                # A damaged response is asked for again with a NACK: the chip resends the
                # same frame and the command is not executed twice.
                if nacks >= self.resend_limit:
                    self._cancel()
                    raise ProtocolError("PN532 response to %02x: %s" % (cmd, e))
                nacks += 1
                _log.warning("damaged response to %02x (%s), NACK", cmd, e)
                self._send(NACK)
                continue
            if kind == FRAME_ERROR:
                raise ChipError("PN532 error frame (syntax error) for command %02x" % cmd)
            if kind != FRAME_DATA:
                continue  # a repeated ACK
            if self._rx[off + 1] != cmd + 1:
                _log.warning("response %02x to command %02x skipped", self._rx[off + 1], cmd)
                continue
            return self._rxv[off + 2 : off + ln]

    # ---- chip set-up -------------------------------------------------------------------
    def init(self):
        """Wake the chip, configure it and return its firmware (ic, ver, rev, support)."""
        self.t.wake()
        irq = 1 if getattr(self.t, "irq", None) is not None else 0
        # Normal mode leaves LowVbat; timeout 0x14 x 50 ms only matters in virtual-card mode.
        self.command(CMD_SAM_CONFIGURATION, bytes((0x01, 0x14, irq)))
        fw = self.command(CMD_GET_FIRMWARE_VERSION)
        if len(fw) < 4 or fw[0] != 0x32:
            raise ChipError("not a PN532: firmware %s" % _bytes_hex(fw))
        self.firmware = (fw[0], fw[1], fw[2], fw[3])
        # Auto ATR_RES and auto RATS: the chip activates ISO-DEP and runs the block protocol.
        self.command(CMD_SET_PARAMETERS, b"\x14")
        # Bounded passive activation, so InListPassiveTarget answers "no card" on its own.
        self.command(CMD_RF_CONFIGURATION, bytes((0x05, 0xFF, 0x01, self.passive_retries)))
        self.command(CMD_RF_CONFIGURATION, bytes((0x02, 0x00, 0x0B, self.rf_timeout_index)))
        self.target = None
        _log.info("PN532 firmware %d.%d support %02x", *self.firmware[1:])
        return self.firmware

    def supports_b(self):
        return bool(self.firmware and self.firmware[3] & SUPPORT_TYPE_B)

    def rf_field(self, on):
        self.command(CMD_RF_CONFIGURATION, bytes((0x01, 0x01 if on else 0x00)))

    def set_serial_baudrate(self, baud):
        """HSU only: move chip and host to `baud` (SetSerialBaudRate, then ACK, then switch).
        -> True when both now talk at `baud`; False when the chip stayed at the old speed (the
        host went back to it, logged). Raises a LinkError when it answers at neither."""
        if baud not in BAUD_RATES:
            raise ValueError("unsupported baud rate %d" % baud)
        old = self.t.baudrate
        self.command(CMD_SET_SERIAL_BAUD_RATE, bytes((BAUD_RATES.index(baud),)))
        self._send(ACK)  # the chip changes speed once it has this ACK
        self.t.set_baudrate(baud)
        try:
            self.command(CMD_GET_FIRMWARE_VERSION)
            return True
        except LinkError as e:
            _log.warning("no answer at %d baud (%s), back to %d", baud, e, old)
        self.t.set_baudrate(old)
        self.command(CMD_GET_FIRMWARE_VERSION)
        return False

    # ---- Reader interface ----------------------------------------------------------------
    def poll(self):
        if self.target is not None:
            self.release()
        t = None
        if "A" in self.kinds:
            t = self._list(b"\x01\x00", parse_target_a)
            if t is not None and t.iso_dep:
                t = self._psl(t)
        if t is None and "B" in self.kinds and self.supports_b():
            t = self._list(b"\x01\x03\x00", parse_target_b)  # AFI 0: all PICCs
        self.target = t
        return t

    def _psl(self, t):
        """InPSL to the fastest bit rate the card's ATS offers both ways (the chip runs the PPS
        exchange with the card). A refusal leaves both at 106 kbit/s: logged, the card is kept.
        -> the target, or None when the card left meanwhile."""
        i = ats_bit_rate(t.ats, self.max_rate)
        if not i:
            return t
        data = self.command(CMD_IN_PSL, bytes((t.tg, i, i)))
        status = data[0] & _ERR_MASK if len(data) else 0xFF
        if status:
            self.psl_refused += 1
            _log.warning("InPSL to %d kbit/s: status %02x, staying at 106", KBPS[i], status)
            if status in _GONE and status != 0x01:
                self._release_tg(t.tg)  # the card left: no target
                return None
        return t

    def _list(self, head, parse):
        data = self.command(CMD_IN_LIST_PASSIVE_TARGET, head)
        try:
            return parse(data)
        except ProtocolError as e:
            # A card that answered badly is no card; the chip is fine.
            _log.warning("activation answer refused: %s", e)
            self._release_tg(0)
            return None

    def transceive(self, apdu):
        t = self._need_target()
        try:
            return self._exchange(t.tg, apdu)
        except CardGone:
            self.target = None
            raise

    def _exchange(self, tg, apdu):
        total = len(apdu)
        if total < 4:
            # An empty InDataExchange means "send the rest of your answer" to the chip.
            _log.error("refused APDU of %d bytes", total)
            raise ProtocolError("APDU shorter than 4 bytes")
        view = memoryview(apdu)
        head = bytearray(1)
        pos = 0
        # Host-side chaining: all but the last chunk carry MI; the chip chains to the card.
        while True:
            end = min(pos + self.chunk, total)
            more = end < total
            head[0] = tg | (_MI if more else 0)
            data = self.command(
                CMD_IN_DATA_EXCHANGE,
                head,
                view[pos:end],
                self.exchange_timeout_ms,
                resend=False,
            )
            if len(data) < 1:
                raise ProtocolError("InDataExchange answer without status")
            status = data[0]
            if status & _ERR_MASK:
                raise status_error(status, "InDataExchange")
            if not more:
                break
            if len(data) > 1 or status & _MI:
                raise ProtocolError("card answered in the middle of a chained command")
            pos = end
        # Response chaining: while MI is set, an InDataExchange with no data fetches more.
        out = self._resp
        got = 0
        head[0] = tg
        while True:
            n = len(data) - 1
            if got + n > self.max_response:
                raise ProtocolError("response longer than %d bytes" % self.max_response)
            out[got : got + n] = data[1:]
            got += n
            if not (status & _MI):
                break
            if not n:
                raise ProtocolError("empty piece of a chained answer")
            data = self.command(
                CMD_IN_DATA_EXCHANGE, head, b"", self.exchange_timeout_ms, resend=False
            )
            if len(data) < 1:
                raise ProtocolError("InDataExchange answer without status")
            status = data[0]
            if status & _ERR_MASK:
                raise status_error(status, "InDataExchange (chained answer)")
        if got < 2:
            raise ProtocolError("response APDU shorter than SW1 SW2")
        return bytes(out[:got])

    def present(self):
        t = self.target
        if t is None:
            return False
        try:
            # Diagnose test 0x06: the chip checks the ISO 14443-4 card still answers. libnfc
            # (pn53x_initiator_target_is_present) allows 700 ms: a gone card is slow to report.
            data = self.command(CMD_DIAGNOSE, b"\x06", timeout_ms=self.presence_timeout_ms)
            ok = len(data) >= 1 and not (data[0] & _ERR_MASK)
        except LinkError as e:
            _log.info("presence check failed: %s", e)
            ok = False
        if not ok:
            self.target = None
        return ok

    def release(self):
        t = self.target
        self.target = None
        if t is not None:
            self._release_tg(t.tg)

    def _release_tg(self, tg):
        try:
            self.command(CMD_IN_RELEASE, bytes((tg,)))
        except LinkError as e:
            _log.info("InRelease failed: %s", e)
