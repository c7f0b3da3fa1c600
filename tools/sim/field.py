"""The RF field of a simulated reader: which virtual cards are in it.

A card is anything with ``uid``, ``atqa``, ``sak``, ``ats`` (TL first), ``iso_dep`` and
``process_apdu(apdu) -> bytes`` (tools/sim/card.py VirtualCard, or SimpleApduCard below); it may
also have ``exchange(apdu) -> bytes | None`` (None: no answer reached the reader), ``present``
(False once the card removed itself, as VirtualCard's tearing faults do), ``place()`` and
``remove()``. Type B cards carry ``kind = "B"`` and ``atqb`` (12 bytes, 0x50 first).
"""

import threading


class Field:
    def __init__(self):
        self._cards = []
        self.lock = threading.RLock()
        self.listeners = []  # fn() called after every add/remove (a blocked poll wakes up)

    @property
    def cards(self):
        """Cards in the field that still answer, in the order they entered."""
        with self.lock:
            return [c for c in self._cards if getattr(c, "present", True)]

    def add(self, card):
        with self.lock:
            if card in self._cards:
                self._cards.remove(card)
            self._cards.append(card)
            if hasattr(card, "place"):
                card.place()  # powered afresh: volatile card state starts over
        self._changed()

    def remove(self, card):
        with self.lock:
            if card not in self._cards:
                return False
            self._cards.remove(card)
            if hasattr(card, "remove"):
                card.remove()
        self._changed()
        return True

    def clear(self):
        for card in list(self._cards):
            self.remove(card)

    def _changed(self):
        for fn in list(self.listeners):
            fn()


def exchange(card, apdu):
    """Send an APDU to a card the way a reader does: bytes, or None for no answer."""
    if not getattr(card, "present", True) or not card.iso_dep:
        return None
    if hasattr(card, "exchange"):
        return card.exchange(apdu)
    return card.process_apdu(apdu)


# A typical ATS: TL 05, T0 78 (TA TB TC present, FSCI 8 = 256 bytes), TA 80, TB 70 (FWI 7),
# TC 02 (CID supported).
DEFAULT_ATS = bytes.fromhex("0578807002")


class SimpleApduCard:
    """A small ISO 14443-4 card for reader tests, with VirtualCard's attributes.

    SELECT (00 A4 04 00) of its `aid` answers the `fci` + 9000 (6A82 for another name);
    READ BINARY (00 B0) answers `Le` bytes (256 when Le is 00) of a counting pattern + 9000;
    80 EE 00 00 Lc data answers the data reversed + 9000 (echo, for long commands);
    anything else 6D00. Every APDU is kept in `apdus`.
    """

    def __init__(
        self,
        uid=b"\x04\x11\x22\x33",
        atqa=b"\x00\x04",
        sak=0x20,
        ats=DEFAULT_ATS,
        iso_dep=True,
        aid=bytes.fromhex("A000000632010105"),
        fci=b"\x6f\x03\x84\x01\x00",
        kind="A",
        atqb=None,
    ):
        self.uid = bytes(uid)
        self.atqa = bytes(atqa)
        self.sak = sak
        self.ats = bytes(ats) if iso_dep else b""
        self.iso_dep = iso_dep
        self.aid = bytes(aid)
        self.fci = bytes(fci)
        self.kind = kind
        if kind == "B" and atqb is None:
            # 50 PUPI(4) AppData(4) ProtocolInfo(3): 106 kbps, FSCI 8, ISO 14443-4 compliant.
            atqb = b"\x50" + self.uid[:4] + b"\x00\x00\x00\x00" + b"\x00\x81\x71"
        self.atqb = bytes(atqb) if atqb else b""
        self.present = True
        self.apdus = []

    def place(self):
        self.present = True

    def remove(self):
        self.present = False

    def process_apdu(self, apdu):
        apdu = bytes(apdu)
        self.apdus.append(apdu)
        if len(apdu) < 4:
            return b"\x67\x00"
        cla, ins = apdu[0], apdu[1]
        if cla == 0x00 and ins == 0xA4:
            name = apdu[5 : 5 + apdu[4]] if len(apdu) > 5 else b""
            return self.fci + b"\x90\x00" if name == self.aid else b"\x6a\x82"
        if cla == 0x00 and ins == 0xB0:
            le = apdu[4] if len(apdu) > 4 else 0
            le = le or 256
            return bytes((apdu[3] + i) & 0xFF for i in range(le)) + b"\x90\x00"
        if cla == 0x80 and ins == 0xEE:
            data = apdu[5 : 5 + apdu[4]] if len(apdu) > 5 else b""
            if len(apdu) > 7 and apdu[4] == 0:  # extended Lc
                n = (apdu[5] << 8) | apdu[6]
                data = apdu[7 : 7 + n]
            return bytes(reversed(data)) + b"\x90\x00"
        return b"\x6d\x00"
