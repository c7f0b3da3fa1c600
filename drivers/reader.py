# The NFC reader interface the application sees, whatever chip is behind it (PN532, RC522).
# Both drivers subclass Reader and return Target objects, so the tap loop and the purchase
# never import a chip driver. Errors are only those of linkerr (see docs/nfc.md).
from linkerr import CardGone

KIND_A = "A"
KIND_B = "B"
KBPS = (106, 212, 424, 848)  # bit rate index: D = 1, 2, 4, 8 (ISO/IEC 14443-4 DRI/DSI)


def ats_bit_rate(ats, max_index=2):
    """Index into KBPS of the fastest bit rate a type A card's ATS (TL first) offers in both
    directions, at most max_index; 0 (106 kbit/s) when TA(1) is absent or offers nothing more.
    TA(1): b7..b5 the card can send at D 8, 4, 2; b3..b1 it can receive at D 8, 4, 2; one D for
    both ways suits b8 ("same D only") too."""
    if len(ats) < 3 or not ats[1] & 0x10:
        return 0
    ta1 = ats[2]
    for i in range(max_index, 0, -1):
        if ta1 & (0x08 << i) and ta1 & (1 << (i - 1)):
            return i
    return 0


class Target:
    """One activated card.

    kind     "A" (ISO 14443-A) or "B" (ISO 14443-B)
    uid      bytes: NFCID1 (4, 7 or 10 bytes) for A, the PUPI (4 bytes) for B
    atqa     bytes (2) for A, b"" for B
    sak      int for A (bit 0x20 = ISO 14443-4 compliant), None for B
    ats      bytes: for A the ATS as the card sent it (TL first), b"" if the card has none;
             for B the ATQB (12 or 13 bytes, 0x50 first)
    atqb     bytes: the ATQB for B (same as ats), b"" for A
    iso_dep  True when the card speaks ISO 14443-4 and transceive() may be used
    """

    __slots__ = ("kind", "uid", "atqa", "sak", "ats", "atqb", "iso_dep", "tg")

    def __init__(self, kind, uid, atqa=b"", sak=None, ats=b"", iso_dep=False, tg=1):
        self.kind = kind
        self.uid = bytes(uid)
        self.atqa = bytes(atqa)
        self.sak = sak
        self.ats = bytes(ats)
        self.atqb = self.ats if kind == KIND_B else b""
        self.iso_dep = iso_dep
        self.tg = tg  # the chip's logical target number (PN532 Tg); drivers only

    def uid_hex(self):
        return "".join("%02x" % b for b in self.uid)

    def __repr__(self):
        return "<Target %s uid=%s sak=%r iso_dep=%r>" % (
            self.kind,
            self.uid_hex(),
            self.sak,
            self.iso_dep,
        )


class Reader:
    """Base class of the NFC reader drivers.

    poll()          -> Target | None. Looks for one card (type A, and B where the chip and the
                       driver allow), activates it (ISO 14443-4 where the card supports it) and
                       returns it; None when no card answered in the poll's bounded time.
                       Any target held from before is released first. Raises ChipError or
                       LinkTimeout only when the chip itself is not answering.
    transceive(apdu)-> bytes: the response APDU (data then SW1 SW2). Needs a target with
                       iso_dep True. Raises LinkTimeout, CardGone (the command may have run),
                       ProtocolError, ChipError; never anything else.
    present()       -> bool: is the current target still in the field and answering? Never
                       raises; a False also drops the target.
    release()       -> None: deactivate the current target (DESELECT/HLTA) and forget it.
                       Never raises; after it, poll() works again.
    target          the current Target or None.
    """

    def __init__(self):
        self.target = None

    def poll(self):
        raise NotImplementedError

    def transceive(self, apdu):
        raise NotImplementedError

    def present(self):
        raise NotImplementedError

    def release(self):
        raise NotImplementedError

    @property
    def iso_dep(self):
        # The purchase checks link.iso_dep before sending any APDU.
        t = self.target
        return t is not None and t.iso_dep

    def _need_target(self):
        # Shared guard: transceive without an ISO-DEP card is a caller mistake, but the caller
        # only handles LinkErrors, so it is reported as a card that is not there.
        t = self.target
        if t is None:
            raise CardGone("no card activated")
        if not t.iso_dep:
            raise CardGone("card does not speak ISO 14443-4")
        return t
