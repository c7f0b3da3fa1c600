"""PSAM: ATRs (drivers/iso7816.py parse_atr/expected_length) and the T=0 link
(drivers/psam_link.py: procedure bytes, NULLs, 61xx/6Cxx, GET RESPONSE) with psam_app.py on top,
against an in-process T=0 card on a fake UART (tests/mpy/t0_fakes.py's T0Card) whose every
utterance (ATR, procedure byte, data, status word) is steered by the input.

Input: first byte mod 3 picks the mode. 0: the ATR parser on the rest (and expected_length at
every prefix). 1: reset + up to four APDUs over the link. 2: PsamApp.boot + init_purchase.
In 1/2 each thing the card says is steered by one control byte: 0 honest, 1 busy NULLs first,
2 said twice, 3 cut to the next byte's length, 4 replaced by the next length-prefixed chunk.
Invariants: only AtrError and linkerr types (PsamError/ApduError from psam_app) escape; an
accepted ATR keeps its raw bytes; an answer has a status word; afterwards the same link gets the
honest ATR and the exact honest answers, and a fresh PsamApp boots and computes MAC1.
"""

import os
import sys

from tools.fuzz import shim

shim.install()
if os.path.join(shim.ROOT, "tests/mpy") not in sys.path:
    sys.path.append(os.path.join(shim.ROOT, "tests/mpy"))

import iso7816  # noqa: E402
from apdu import ApduError  # noqa: E402
from iso7816 import AtrError  # noqa: E402
from linkerr import LinkError  # noqa: E402
from psam_app import PsamApp, PsamError  # noqa: E402
from t0_fakes import APDUS, ATRS, HONEST_ATR, T0Card, new_link  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "psam"


class ScriptedT0Card(T0Card):
    """The honest T=0 card; while `script` has bytes each thing it says (its ATR too) is steered
    by one control byte (see the module's docstring)."""

    def __init__(self, script):
        T0Card.__init__(self)
        self.script = script
        self.pos = 0

    def _byte(self):
        if self.pos >= len(self.script):
            return 0
        self.pos += 1
        return self.script[self.pos - 1]

    def damage(self, data):
        if self.pos < len(self.script):
            op = self._byte() % 5
            if op == 1:
                data = b"\x60" * (1 + self._byte() % 3) + data
            elif op == 2:
                data = data + data
            elif op == 3:
                data = data[: self._byte() % (len(data) + 1)]
            elif op == 4:
                n = self._byte() % 48
                data = bytes(self.script[self.pos : self.pos + n])
                self.pos += n
        return data

    def atr(self):
        return self.damage(HONEST_ATR)


def _atr(data):
    for k in range(len(data) + 1):
        need, known = iso7816.expected_length(data, k)
        check(need >= 2, "expected length %d" % need)
    try:
        atr = iso7816.parse_atr(data)
    except AtrError:
        return
    check(bytes(atr.raw) == bytes(data), "raw ATR changed")
    check(atr.wi >= 0 and atr.guard_n >= 0 and len(atr.protocols) >= 1, "ATR fields")
    atr.fi, atr.di, atr.fmax_hz, atr.specific, atr.wwt_etu(2), repr(atr)


def one_input(data):
    if len(data) < 2:
        return
    mode = data[0] % 3
    if mode == 0:
        _atr(data[1:])
        return
    card = ScriptedT0Card(data[2:])
    lk = new_link(card)
    try:
        if mode == 1:
            lk.reset()
            for i in range(1 + data[1] % 4):
                resp = lk.transceive(APDUS[(data[1] >> 2) + i & 3])
                check(len(resp) >= 2, "answer without a status word")
        else:
            app = PsamApp(lk)
            lk.reset()
            check(len(app.boot()) == 6 and app.ready, "boot")
            serial, s4, mac1 = app.init_purchase(
                b"RAND", 7, 100, 9, bytes(7), 1, 0, bytes(8), bytes(8)
            )
            check((len(s4), len(mac1)) == (4, 4), "init_purchase answer")
    except (AtrError, LinkError, PsamError, ApduError):
        pass
    card.script = b""
    atr = lk.reset()
    check(bytes(atr.raw) == HONEST_ATR, "honest ATR")
    check(bytes(lk.transceive(APDUS[0])) == b"\x00\x00\x00\x00\x00\x07\x90\x00", "honest read")
    check(bytes(lk.transceive(APDUS[1])) == b"\x00\x00\x00\x2aMAC1\x90\x00", "honest MAC1")
    app = PsamApp(lk)
    check(app.boot() == b"\x00\x00\x00\x00\x00\x07", "honest boot")
    mac = app.init_purchase(b"RAND", 7, 100, 9, bytes(7), 1, 0, bytes(8), bytes(8))[2]
    check(mac == b"MAC1", "honest init_purchase")


SEEDS = tuple(b"\x00" + a for a in ATRS) + (
    b"\x01\x00",
    b"\x01\x07",
    b"\x01\x03\x01\x02\x00\x00\x03\x01",
    b"\x01\x05\x00\x00\x04\x02\x61\x04",
    b"\x02\x00",
    b"\x02\x00\x00\x00\x00\x01\x01\x00\x02",
)
