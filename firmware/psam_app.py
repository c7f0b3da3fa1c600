# The T-Union PSAM application layer over any APDU link (the T=0 UART link on a board, the
# simulator's socket in tests). Boot once: terminal number at the MF, the T-Union PSAM application
# (by AID, else by FID 8011), and the key index from its 0x17 file. Then per purchase: 8070 (MAC1
# and the terminal transaction serial; sent as soon as the card's INIT answered and collected
# after its UPDATE CAPP DATA CACHE, when the link can split an exchange) and 8072 (MAC2 check);
# for a blacklist lock: 801A + 80FA.
# Facts: MZT, BJ-BUS, SH-AGM and TULAB docs/psamdata1 (docs/sources.md).
from apdu import ApduError, build, expect, sw_of

PSAM_AID = b"\xa0\x00\x00\x06\x32MOT.CPSAM01"
_H70 = b"\x80\x70\x00\x00\x24"  # INIT SAM FOR PURCHASE's header: 36 bytes of data follow
USAGE_LOCK = 0x45


class PsamError(Exception):
    """The PSAM refused or answered nonsense; the validator cannot sell until it is fixed."""


class PsamApp:
    def __init__(self, link):
        self.link = link
        self.terminal_id = None  # 6 bytes BCD
        self.key_index = None
        self.ready = False
        self.apdus = 0
        self.session = None  # what the last 8070 was for (the purchase layer's token)
        self._token = None
        self._started = False  # an 8070 sent with transceive_start, answer not yet collected
        self._ahead = False  # 8070's header sent by announce_purchase, its data not yet
        self._answer = None  # the 8070 answer of a link without the split exchange
        # 8070 and 8072 commands, made at the first sale and refilled by each (the link is done
        # with them when its exchange returns)
        self._c70 = None
        self._c72 = None

    def _x(self, apdu):
        self._ahead = False  # a header sent ahead is completed by the link first (logged)
        self.apdus += 1
        resp = self.link.transceive(apdu)
        sw = sw_of(resp)
        if sw >> 8 == 0x61:  # T=0: the data waits for GET RESPONSE
            resp = self.link.transceive(build(0x00, 0xC0, 0x00, 0x00, None, sw & 0xFF))
            self.apdus += 1
        return resp

    def _expect(self, resp, length, what):
        try:
            return expect(resp, length, what)
        except ApduError as e:
            raise PsamError(str(e))

    def boot(self):
        """Read terminal number, select the application, read the key index. PsamError on failure
        (link errors propagate: the caller resets the PSAM and retries)."""
        self.ready = False
        resp = self._x(build(0x00, 0xB0, 0x96, 0x00, None, 6))
        if sw_of(resp) != 0x9000:  # not at the MF after a warm start: go there and retry
            self._expect(self._x(build(0x00, 0xA4, 0x00, 0x00, b"\x3f\x00")), 0, "SELECT MF")
            resp = self._x(build(0x00, 0xB0, 0x96, 0x00, None, 6))
        self.terminal_id = bytes(self._expect(resp, 6, "PSAM terminal number"))
        resp = self._x(build(0x00, 0xA4, 0x04, 0x00, PSAM_AID))
        if sw_of(resp) != 0x9000:
            resp = self._x(build(0x00, 0xA4, 0x00, 0x00, b"\x80\x11"))
        self._expect(resp, None, "SELECT PSAM application")
        info = self._expect(self._x(build(0x00, 0xB0, 0x97, 0x00, None, 25)), 25, "PSAM 0x17")
        self.key_index = info[0]
        self.ready = True
        return self.terminal_id

    def init_purchase(self, *args):
        """INIT SAM FOR PURCHASE in one go -> (serial int, serial 4 bytes, MAC1 4 bytes)."""
        self.start_purchase(*args)
        return self.finish_purchase()

    def announce_purchase(self):
        """Send 8070's header ahead, before the card's INITIALIZE (a link with
        transceive_header only; else nothing): the PSAM's procedure byte waits in the UART
        buffer while the card answers, and start_purchase() sends only the data. A sale that
        stops before start_purchase() must call abandon_purchase(), which completes the command
        with filler data and drops its answer. Link errors propagate (the caller resets)."""
        send = getattr(self.link, "transceive_header", None)
        if send is None or getattr(self.link, "transceive_finish", None) is None:
            return
        self.apdus += 1
        self._ahead = True
        send(_H70)

    def start_purchase(
        self,
        random4,
        atc,
        amount,
        txn_type,
        datetime7,
        key_version,
        alg_id,
        serial_low8,
        issuer8,
        token=None,
    ):
        """Send INIT SAM FOR PURCHASE and return while the PSAM computes MAC1 (the card meanwhile
        works on its UPDATE CAPP DATA CACHE); finish_purchase() collects the answer. A link
        without transceive_start gets the whole exchange here (same result, no overlap)."""
        apdu = self._c70
        if apdu is None:
            apdu = self._c70 = bytearray(b"\x80\x70\x00\x00\x24" + bytes(36) + b"\x08")
        # slice stores of whole buffers: C copies, no allocation
        apdu[5:9] = random4
        apdu[9] = (atc >> 8) & 0xFF
        apdu[10] = atc & 0xFF
        for i in range(4):
            apdu[11 + i] = (amount >> (24 - 8 * i)) & 0xFF
        apdu[15] = txn_type
        apdu[16:23] = datetime7
        apdu[23] = key_version
        apdu[24] = alg_id
        apdu[25:33] = serial_low8
        apdu[33:41] = issuer8
        self.session = None
        self._token = token
        start = getattr(self.link, "transceive_start", None)
        if start is None or getattr(self.link, "transceive_finish", None) is None:
            self._answer = self._x(apdu)
            return
        if self._ahead:
            self._ahead = False  # counted when the header went; the link sends the data now
        else:
            self.apdus += 1
        self._answer = None
        self._started = True
        start(apdu)

    def finish_purchase(self):
        """-> (serial int, serial 4 bytes, MAC1 4 bytes) of the 8070 sent by start_purchase."""
        r = self.finish_raw()
        return int.from_bytes(r[0:4], "big"), bytes(r[0:4]), bytes(r[4:8])

    def finish_raw(self):
        """The 8070 answer sent by start_purchase: serial (bytes 0-3), MAC1 (4-7), 9000."""
        if self._started:
            self._started = False
            resp = self.link.transceive_finish()
            sw = sw_of(resp)
            if sw >> 8 == 0x61:  # T=0: the data waits for GET RESPONSE
                resp = self.link.transceive(build(0x00, 0xC0, 0x00, 0x00, None, sw & 0xFF))
                self.apdus += 1
        else:
            resp, self._answer = self._answer, None
            if resp is None:
                raise PsamError("INIT SAM: no exchange started")
        if sw_of(resp) != 0x9000 or len(resp) != 10:
            self._expect(resp, 8, "INIT SAM")  # raises PsamError
        self.session = self._token
        return resp

    def abandon_purchase(self):
        """The sale stopped between start and finish: drain the PSAM's answer so the link stays
        in step (errors say the PSAM needs a reset: not ready)."""
        if self._ahead:
            # Only the header went: the link completes the command with filler data; whatever
            # the PSAM answers to it is dropped (no sale follows). Only a link error matters.
            self._ahead = False
            try:
                self.link.transceive_finish()
            except Exception:  # noqa: BLE001 - any failure here only means: reset before a sale
                self.ready = False
        elif self._started or self._answer is not None:
            try:
                self.finish_purchase()
            except Exception:  # noqa: BLE001 - any failure here only means: reset before a sale
                self.ready = False
        self.session = None

    def credit(self, mac2, mac2_at=0):
        """CREDIT SAM FOR PURCHASE: True when MAC2 (mac2[mac2_at:mac2_at + 4]) verifies, False on
        9302; PsamError otherwise."""
        self.session = None
        c = self._c72
        if c is None:
            c = self._c72 = bytearray(b"\x80\x72\x00\x00\x04" + bytes(4))
        for i in range(4):
            c[5 + i] = mac2[mac2_at + i]
        resp = self._x(c)
        sw = sw_of(resp)
        if sw == 0x9302:
            return False
        if sw != 0x9000 or len(resp) != 2:
            self._expect(resp, 0, "CREDIT SAM")
        return True
