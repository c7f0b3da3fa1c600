# PSAM link: ISO/IEC 7816-3 T=0 over a plain UART (docs/psam-link.md).
# The card clock comes from a PWM pin, the reset line is a GPIO and the single I/O wire is a UART
# whose TX and RX are joined, so every character sent comes back on RX and is checked there.
# After reset() the link offers transceive(apdu) -> data + SW1 SW2 like every APDU link and
# raises only drivers/linkerr.py errors; after one of them the PSAM needs reset() again.
import time

import iso7816
import log
from iso7816 import DI, FI, AtrError
from linkerr import ChipError, LinkError, LinkTimeout, ProtocolError
from micropython import const

_log = log.get("psam")

_NULL = const(0x60)
_ATR_CLOCKS = const(40000)  # the first ATR character comes within 40 000 clock cycles
_ATR_CHAR_ETU = const(9600)  # initial waiting time between ATR characters
_RST_LOW_US = const(500)  # >= 400 clocks even at 1 MHz
_TURN_ETU = const(16)  # direction switch: wait 16 etu after the card's last character
_MAX_CHAIN = const(8)  # GET RESPONSE rounds before the card is declared broken
_POLL_MS = const(10)  # UART read timeout per call; deadlines are kept by the driver
_BUF = const(261)  # 256 data + procedure bytes + SW, and the longest command echo (5 + 255)

_inv = iso7816.inverse_table()


class PsamLink:
    """uart: machine.UART (or SimUART) wired to the I/O line; rst: output Pin; clk: PWM on the
    clock pin, or None when the board clocks the card itself; clk_hz: requested clock; echo: TX
    comes back on RX (joined wire); max_baud: a cap on the rate after PPS (None: the fastest the
    card offers that the UART, clocked at uart_clk_hz, generates within ISO 7816-3's tolerance);
    pps: False keeps the default rate; margin_ms: slack on every ISO deadline for UART/host
    latency; busy_ms: longest a card may keep answering NULL before the command is abandoned."""

    def __init__(
        self,
        uart,
        rst,
        clk=None,
        clk_hz=3571200,
        echo=True,
        max_baud=None,
        pps=True,
        margin_ms=50,
        busy_ms=5000,
        uart_clk_hz=iso7816.UART_SCLK_HZ,
    ):
        self.uart = uart
        self.rst = rst
        self.clk = clk
        self.clk_req = clk_hz  # asked of the PWM; clk_hz becomes what it really generates
        self.clk_hz = clk_hz
        self.echo = echo
        self.max_baud = max_baud
        self.uart_clk_hz = uart_clk_hz
        self.rate_error_ppm = 0  # of the UART's real rate against the card's, after PPS
        self.use_pps = pps
        self.margin_ms = margin_ms
        self.busy_ms = busy_ms
        self.atr = None
        self.ready = False
        self.inverse = False
        self.baud = iso7816.baud_for(clk_hz)
        self.d = 1
        self.wwt_ms = 1000
        self.pps_result = None  # None, "ok", "default", "failed"
        self._rx = bytearray(_BUF)
        self._rxv = memoryview(self._rx)
        self._tx = bytearray(_BUF)
        self._txv = memoryview(self._tx)
        self._last_rx = 0  # ticks_us of the last character received, for the turnaround
        # Characters sent whose echo has not been read and checked yet: the last data of a
        # command, and a header sent ahead (transceive_header), are written without waiting for
        # their echo; the echo waits in the RX buffer and is checked before anything else is
        # read or sent (_check_echo).
        self._echo = 0
        self._early = False  # a header sent by transceive_header, its data not yet
        # The command in flight between transceive_start() and transceive_finish().
        self._pending = False
        self._p_hdr = bytearray(5)
        self._p_lc = self._p_le = self._p_ins = self._p_sent = self._p_ne = self._p_got = 0
        self._p_data = None
        self._p_out = b""
        self._p_sw = -1
        self._p_busy = 0
        self.reset_stats()

    # ---- statistics: characters on the line and their modelled time -----------------------------
    def reset_stats(self):
        self.chars_tx = 0
        self.chars_rx = 0
        self.line_us = 0
        self.apdus = 0
        self.nulls = 0

    def _count(self, tx, rx):
        self.chars_tx += tx
        self.chars_rx += rx
        self.line_us += iso7816.line_time_us(tx + rx, self.baud)

    # ---- the physical layer ---------------------------------------------------------------------
    def _uart_rate(self, baud, parity):
        # timeout_char=0: the ESP32 port then sets the RX FIFO threshold to one byte and a
        # one-character RX timeout (ports/esp32/machine_uart.c), so each character reaches the
        # driver about one character time after it ends; the driver keeps its own deadlines.
        self.uart.init(
            baudrate=baud, bits=8, parity=parity, stop=2, timeout=_POLL_MS, timeout_char=0
        )

    def _drain(self):
        n = 0
        while self.uart.any():
            got = self.uart.readinto(self._rxv)
            if not got:
                break
            n += got
        return n

    def _clock(self, on):
        if self.clk is None:
            return
        if on:
            self.clk.freq(self.clk_req)
            self.clk.duty_u16(32768)
            actual = self.clk.freq()
            if actual and actual != self.clk_hz:
                # The LEDC rounds the frequency: the card's bit rate follows the real clock.
                _log.info("clock %d Hz asked, %d Hz generated", self.clk_req, actual)
                self.clk_hz = actual
        else:
            self.clk.duty_u16(0)

    def _read(self, n, timeout_ms, what):
        """n characters into self._rx, each within timeout_ms of the previous; decoded."""
        if self._echo:
            self._check_echo()
        got = 0
        view = self._rxv
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while got < n:
            k = self.uart.readinto(view[got:n])
            if k:
                got += k
                deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
            elif time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise LinkTimeout(
                    "PSAM: no %s after %d of %d byte(s) within %d ms (margin_ms %d)"
                    % (what, got, n, timeout_ms, self.margin_ms)
                )
        if self.inverse:
            buf = self._rx
            for i in range(n):
                buf[i] = _inv[buf[i]]
        self._last_rx = time.ticks_us()
        self._count(0, n)
        return view[:n]

    def _byte(self, timeout_ms, what):
        return self._read(1, timeout_ms, what)[0]

    def _send(self, data, defer=False):
        """Write data; its echo is read and compared now, or with defer=True before the next
        read or send (the UART shifts the characters out meanwhile: the caller may talk to the
        card while they go)."""
        if self._echo:
            self._check_echo()
        n = len(data)
        tx = self._tx
        if self.inverse:
            for i in range(n):
                tx[i] = _inv[data[i]]
        else:
            tx[:n] = data
        # The card needs a quiet line before it listens again after its own characters. A
        # negative gap means the ticks wrapped after a long idle: no wait then.
        turn = _TURN_ETU * 1000000 // self.baud
        since = time.ticks_diff(time.ticks_us(), self._last_rx)
        if 0 <= since < turn:
            time.sleep_us(turn - since)
        self.uart.write(self._txv[:n])
        self._count(n, 0)
        if not self.echo:
            return
        self._echo = n
        if not defer:
            self._check_echo()

    def _check_echo(self):
        """Read back the self._echo characters last sent (still in self._tx) and compare."""
        n = self._echo
        self._echo = 0
        tx = self._tx
        ms = iso7816.line_time_us(n, self.baud) // 1000 + self.margin_ms
        view = self._rxv
        got = 0
        deadline = time.ticks_add(time.ticks_ms(), ms)
        while got < n:
            k = self.uart.readinto(view[got:n])
            if k:
                got += k
            elif time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise ChipError(
                    "PSAM: %d of %d echo byte(s) within %d ms (line time + margin_ms %d): I/O"
                    " line not joined?" % (got, n, ms, self.margin_ms)
                )
        rx = self._rx
        for i in range(n):
            if rx[i] != tx[i]:
                # A collision or the card's error signal (a parity error on its side).
                raise ProtocolError("PSAM: echo differs from what was sent at byte %d" % i)

    # ---- activation -----------------------------------------------------------------------------
    def off(self):
        """Deactivate: reset low, clock stopped."""
        self.ready = False
        self._pending = self._early = False
        self._echo = 0
        self.rst.value(0)
        self._clock(False)

    def reset(self, warm=False):
        """Cold (clock restarted) or warm reset, ATR, PPS. -> iso7816.Atr. Raises LinkTimeout
        (no ATR), AtrError (a ProtocolError: malformed or short ATR) or ChipError."""
        self.ready = False
        self._pending = self._early = False
        self._echo = 0
        try:
            atr = self._activate(warm)
            self._negotiate(atr)
        except LinkError as e:
            _log.error("reset failed: %s", e)
            raise
        self.ready = True
        return atr

    def _activate(self, warm):
        self.rst.value(0)
        self.inverse = False
        self.d = 1
        self.rate_error_ppm = 0
        if not warm:
            # Without a VCC switch a cold reset is a restarted clock under a low RST.
            self._clock(False)
            self._clock(True)
        self.baud = iso7816.baud_for(self.clk_hz)  # from the clock really generated
        self._uart_rate(self.baud, 0)
        time.sleep_us(_RST_LOW_US)
        stale = self._drain()
        if stale:
            _log.warning("dropped %d stale byte(s) before reset", stale)
        self.rst.value(1)
        atr = self._capture_atr()
        self.atr = atr
        return atr

    def _capture_atr(self):
        first_ms = _ATR_CLOCKS * 1000 // self.clk_hz + 1 + self.margin_ms
        char_ms = _ATR_CHAR_ETU * 1000 // self.baud + 1 + self.margin_ms
        try:
            ts = self._byte(first_ms, "ATR")
        except LinkTimeout:
            raise LinkTimeout(
                "PSAM: no ATR within %d ms of reset (margin_ms %d)" % (first_ms, self.margin_ms)
            )
        if ts == iso7816.TS_INVERSE_RAW:
            self.inverse = True
            ts = iso7816.TS_INVERSE
            self._uart_rate(self.baud, 1)  # inverse convention seen through a direct UART
        elif ts != iso7816.TS_DIRECT:
            raise AtrError("bad TS 0x%02x" % ts)
        buf = bytearray(iso7816.ATR_MAX)
        buf[0] = ts
        got = 1
        while True:
            need, known = iso7816.expected_length(buf, got)
            if known and got >= need:
                break
            if need > iso7816.ATR_MAX:
                raise AtrError("ATR longer than %d bytes" % iso7816.ATR_MAX)
            try:
                buf[got] = self._byte(char_ms, "ATR byte")
            except LinkTimeout:
                raise AtrError("ATR truncated: %d byte(s), at least %d expected" % (got, need))
            got += 1
        atr = iso7816.parse_atr(buf[:got])
        _log.info("ATR %s%s", atr.raw.hex(), " (inverse)" if self.inverse else "")
        if 0 not in atr.protocols:
            raise ChipError("PSAM offers no T=0 (protocols %r)" % (atr.protocols,))
        return atr

    def _rate_for(self, atr):
        """(pps1, baud, d) of the fastest rate TA1 offers that the clock, the board's cap and the
        UART's divider allow: F is TA1's Fi, D any defined value up to Di, the clock within
        Fi's f_max, and the UART's real rate within RATE_TOLERANCE_PPM of f * D / F."""
        fi = atr.ta1 >> 4
        f = FI[fi]
        dmax = atr.di
        best = None
        if not f or not dmax or self.clk_hz > atr.fmax_hz:
            return None
        default = iso7816.baud_for(self.clk_hz)
        for di in range(1, 10):
            d = DI[di]
            if not d or d > dmax:
                continue
            baud = iso7816.baud_for(self.clk_hz, f, d)
            if baud <= default or (self.max_baud and baud > self.max_baud):
                continue
            err = iso7816.rate_error_ppm(self.clk_hz, f, d, self.uart_clk_hz)
            if err is None or abs(err) > iso7816.RATE_TOLERANCE_PPM:
                _log.info("PPS: D %d (%d baud) out of the UART's reach (%r ppm)", d, baud, err)
                continue
            if best is None or baud > best[1]:
                best = ((fi << 4) | di, baud, d, err)
        return best

    def _set_rate(self, baud, d):
        self.baud = baud
        self.d = d
        self._uart_rate(baud, 1 if self.inverse else 0)

    def _negotiate(self, atr, allow_pps=True):
        self.pps_result = None
        if atr.specific:
            # TA2 present: no PPS. b5 clear means TA1's values apply straight away.
            if not atr.ta[2] & 0x10 and atr.ta1 != 0x11:
                if not atr.fi or not atr.di:
                    raise ChipError("PSAM in specific mode with RFU TA1 0x%02x" % atr.ta1)
                baud = iso7816.baud_for(self.clk_hz, atr.fi, atr.di)
                if self.max_baud and baud > self.max_baud:
                    raise ChipError("PSAM fixed at %d baud, board max %d" % (baud, self.max_baud))
                err = iso7816.rate_error_ppm(self.clk_hz, atr.fi, atr.di, self.uart_clk_hz)
                if err is None or abs(err) > iso7816.RATE_TOLERANCE_PPM:
                    raise ChipError("PSAM fixed at %d baud, out of the UART's reach" % baud)
                self._set_rate(baud, atr.di)
                self.rate_error_ppm = err
        elif self.use_pps and allow_pps:
            choice = self._rate_for(atr)
            if choice is not None:
                self._pps(atr, *choice)
        self.wwt_ms = iso7816.wwt_ms(atr.wi, self.d, self.baud, self.margin_ms)

    def _pps(self, atr, pps1, baud, d, err):
        req = bytearray((0xFF, 0x10, pps1, 0))
        req[3] = req[0] ^ req[1] ^ req[2]
        wait = iso7816.wwt_ms(atr.wi, 1, self.baud, self.margin_ms)
        problem = None
        try:
            self._send(req)
            resp = bytearray(self._read(3, wait, "PPS answer"))
            if resp[1] & 0x10:
                resp.append(self._byte(wait, "PPS answer"))
        except LinkTimeout as e:
            problem = str(e)
        except ProtocolError as e:
            problem = str(e)
        if problem is None:
            if resp == req:
                self._set_rate(baud, d)
                self.rate_error_ppm = err
                self.pps_result = "ok"
                _log.info("PPS 0x%02x: %d baud (UART %+d ppm)", pps1, baud, err)
                return
            if resp == b"\xff\x00\xff":
                self.pps_result = "default"
                _log.info("PPS 0x%02x declined: default rate", pps1)
                return
            problem = "answer %s to %s" % (bytes(resp).hex(), bytes(req).hex())
        # A failed PPS leaves the card in an unknown state: a cold reset, then the default rate.
        _log.warning("PPS failed (%s): cold reset at the default rate", problem)
        atr = self._activate(False)
        self._negotiate(atr, allow_pps=False)
        self.pps_result = "failed"

    # ---- T=0 ------------------------------------------------------------------------------------
    def transceive(self, apdu):
        """apdu (short, cases 1-4) -> response data + SW1 SW2."""
        self.transceive_start(apdu)
        return self.transceive_finish()

    def transceive_start(self, apdu):
        """Send a command (header, procedure bytes, data out) and return while the PSAM works;
        transceive_finish() collects the status (and GET RESPONSE). The PSAM's answer waits in
        the UART's receive buffer meanwhile, so the caller may talk to the card in between.
        A command still pending here is finished first and its answer dropped (logged)."""
        lc, le = _cases(apdu)  # a bad APDU is the caller's fault: the link stays up
        if not self.ready:
            raise ChipError("PSAM link not reset")
        try:
            if self._early and lc and _same_header(apdu, self._p_hdr):
                # Its header went ahead (transceive_header): only the data goes now.
                self._early = False
                self._p_data = memoryview(apdu)[5 : 5 + lc]
                self._tpdu_data()
                return
            if self._pending:
                _log.warning("APDU %s never collected: finishing it first", self._p_hdr.hex())
                self._finish()
            self._start(apdu, lc, le)
        except LinkError as e:
            self._fail(apdu, e)

    def transceive_header(self, header):
        """Send the 5-byte header (CLA INS P1 P2 Lc) of a command with data out ahead of its
        data, and return at once: the header's echo and the PSAM's procedure byte wait in the
        UART's buffer while the caller works out the data (for 8070: while the card answers
        INITIALIZE). transceive_start() with an APDU of the same header then sends only the
        data. A command that never comes is completed with Lc zero bytes as data by whatever
        comes next (transceive_finish, or another command: logged), its answer dropped, so the
        PSAM is never left waiting for data (docs/psam-link.md *Header ahead*)."""
        if len(header) != 5 or not header[4]:
            _bad("transceive_header: a 5-byte header with Lc > 0, not %d bytes" % len(header))
        if not self.ready:
            raise ChipError("PSAM link not reset")
        try:
            if self._pending:
                _log.warning("APDU %s never collected: finishing it first", self._p_hdr.hex())
                self._finish()
            stale = self._drain()
            if stale:
                _log.warning("dropped %d stale byte(s) before a command", stale)
            self.apdus += 1
            h = self._p_hdr
            h[:] = header
            self._p_lc = header[4]
            self._p_le = 0
            self._early = True
            self._tpdu_head(h, None, 0, True)
        except LinkError as e:
            self._fail(header, e)

    def transceive_finish(self):
        """-> response data + SW1 SW2 of the command transceive_start() sent."""
        if not self._pending:
            raise ChipError("PSAM: no command started")
        try:
            return self._finish()
        except LinkError as e:
            self._fail(self._p_hdr, e)

    def _fail(self, apdu, e):
        self.ready = False
        self._pending = self._early = False
        self._echo = 0
        _log.error("APDU %s failed: %s", bytes(apdu[:5]).hex(), e)
        raise e

    def _start(self, apdu, lc, le):
        stale = self._drain()
        if stale:
            _log.warning("dropped %d stale byte(s) before a command", stale)
        self.apdus += 1
        header = self._p_hdr
        header[:4] = apdu[:4]
        self._p_lc = lc
        self._p_le = le
        if lc:
            header[4] = lc
            self._tpdu_send(header, memoryview(apdu)[5 : 5 + lc], 0)
        elif le:
            header[4] = le & 0xFF
            self._tpdu_send(header, None, le)
        else:
            header[4] = 0
            self._tpdu_send(header, None, 0)

    def _finish(self):
        if self._early:
            # The data never came: complete the command with zeros, its answer dropped below
            # by the caller (the PSAM must not be left waiting for data).
            self._early = False
            self._p_data = bytes(self._p_lc)
            self._tpdu_data()
        data, sw1, sw2 = self._tpdu_end()
        if sw1 == 0x6C and self._p_le and not self._p_lc:
            # Wrong Le: the card says how many bytes it has; ask again for exactly those.
            header = self._p_hdr
            header[4] = sw2
            data, sw1, sw2 = self._tpdu(header, None, sw2 or 256)
            if sw1 == 0x6C:
                raise ProtocolError("PSAM answered 6C%02x twice" % sw2)
        if sw1 == 0x61:
            data, sw1, sw2 = self._get_response(data, sw2)
        out = bytearray(data)
        out.append(sw1)
        out.append(sw2)
        return bytes(out)

    def _get_response(self, data, avail):
        out = bytearray(data)
        get = bytearray(b"\x00\xc0\x00\x00\x00")
        for _ in range(_MAX_CHAIN):
            get[4] = avail
            part, sw1, sw2 = self._tpdu(get, None, avail or 256)
            if sw1 == 0x6C:
                get[4] = sw2
                part, sw1, sw2 = self._tpdu(get, None, sw2 or 256)
            out += part
            if sw1 != 0x61:
                return out, sw1, sw2
            avail = sw2
        raise ProtocolError("PSAM kept answering 61xx after %d GET RESPONSE" % _MAX_CHAIN)

    def _tpdu(self, header, data, ne):
        """One T=0 command: header, then data out (data) or ne bytes in, steered by procedure
        bytes. -> (received bytes, SW1, SW2)."""
        self._tpdu_send(header, data, ne)
        return self._tpdu_end()

    def _tpdu_send(self, header, data, ne):
        """The first half of a T=0 command: the header, and for a command with data out every
        data byte the procedure bytes ask for. Returns before the card's computation; a status
        word that comes instead (a refusal) is kept for _tpdu_end()."""
        self._tpdu_head(header, data, ne, False)
        self._tpdu_data()

    def _tpdu_head(self, header, data, ne, defer):
        self._pending = True
        self._p_ins = header[1]
        self._p_data = data
        self._p_sent = 0
        self._p_ne = ne
        self._p_got = 0
        self._p_out = bytearray(ne) if ne else b""
        self._p_sw = -1
        self._p_busy = time.ticks_add(time.ticks_ms(), self.busy_ms)
        self._send(header, defer)

    def _tpdu_data(self):
        """Data out as the procedure bytes ask (none for a command without data)."""
        data = self._p_data
        lc = len(data) if data is not None else 0
        while self._p_sent < lc:
            if self._step():
                return

    def _tpdu_end(self):
        """The second half: procedure bytes until the status. -> (received bytes, SW1, SW2)."""
        while self._p_sw < 0:
            self._step()
        self._pending = False
        sw = self._p_sw
        return bytes(self._p_out[: self._p_got]) if self._p_ne else b"", sw >> 8, sw & 0xFF

    def _step(self):
        """Read one procedure byte and move the data it asks for. -> True once SW1 SW2 came."""
        wwt = self.wwt_ms
        ins = self._p_ins
        pb = self._byte(wwt, "procedure byte")
        if pb == _NULL:
            self.nulls += 1
            if time.ticks_diff(self._p_busy, time.ticks_ms()) <= 0:
                raise LinkTimeout("PSAM busy (NULL) for over %d ms" % self.busy_ms)
            return False
        if (pb & 0xF0) == 0x90 or (pb & 0xF0) == 0x60:
            self._p_sw = (pb << 8) | self._byte(wwt, "SW2")
            return True
        data = self._p_data
        lc = len(data) if data is not None else 0
        ne = self._p_ne
        if pb == ins:
            step = lc - self._p_sent if lc else ne - self._p_got
        elif pb == ins ^ 0xFF:
            step = 1
        else:
            raise ProtocolError("unexpected procedure byte 0x%02x (INS 0x%02x)" % (pb, ins))
        if lc:
            sent = self._p_sent
            if sent >= lc:
                raise ProtocolError("PSAM asked for more than the %d data byte(s)" % lc)
            step = min(step, lc - sent)
            # The last data leave without waiting for their echo: the PSAM starts computing
            # once they are in, and the caller may turn to the card meanwhile.
            self._send(data[sent : sent + step], sent + step >= lc)
            self._p_sent = sent + step
        elif ne:
            got = self._p_got
            if got >= ne:
                raise ProtocolError("PSAM offered more than the %d byte(s) asked" % ne)
            step = min(step, ne - got)
            self._p_out[got : got + step] = self._read(step, wwt, "data")
            self._p_got = got + step
        else:
            raise ProtocolError("procedure byte 0x%02x with no data to move" % pb)
        return False


def _same_header(apdu, header):
    for i in range(5):
        if apdu[i] != header[i]:
            return False
    return True


def _cases(apdu):
    """-> (Lc, Le) of a short APDU; Le 0 means no data expected, 256 for a 00 Le byte."""
    n = len(apdu)
    if n < 4:
        return _bad("APDU too short (%d bytes)" % n)
    if n == 4:
        return 0, 0
    if n == 5:
        return 0, apdu[4] or 256
    lc = apdu[4]
    if lc == 0:
        return _bad("extended-length APDU: not in T=0")
    if n == 6 + lc:
        return lc, apdu[n - 1] or 256
    if n != 5 + lc:
        return _bad("APDU length %d does not match Lc %d" % (n, lc))
    return lc, 0


def _bad(reason):
    _log.error("refused: %s", reason)
    raise ProtocolError(reason)


def from_board(cfg, UART, Pin, PWM):
    """Build a PsamLink from a board's PSAM dict (boards/*/board.py): uart_id, tx, rx, clk,
    clk_hz, reset, and optionally echo, max_baud (a cap on the PPS rate; none by default). The
    simulation board names its devices (UART "psam", pins "psam_rst" and "psam_clk") where an
    ESP32 board gives numbers."""
    kw = {}
    if "tx" in cfg:
        kw["tx"] = cfg["tx"]
        kw["rx"] = cfg["rx"]
    clk_hz = cfg.get("clk_hz", 3571200)
    uart = UART(
        cfg.get("uart_id", "psam"),
        baudrate=iso7816.baud_for(clk_hz),
        bits=8,
        parity=0,
        stop=2,
        rxbuf=512,
        **kw,
    )
    rst = Pin(cfg.get("reset", "psam_rst"), Pin.OUT, value=0)
    clk = PWM(Pin(cfg.get("clk", "psam_clk")), freq=clk_hz, duty_u16=0)
    return PsamLink(
        uart,
        rst,
        clk,
        clk_hz,
        echo=cfg.get("echo", True),
        max_baud=cfg.get("max_baud"),
        margin_ms=cfg.get("margin_ms", 50),
    )
