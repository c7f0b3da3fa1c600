"""Card answers in the purchase flow: firmware/purchase.py (with tunion, apdu, psam_app and the
real firmware/txlog.py on a RAM flash device, tests/mpy/memlog.py) against an honest in-process
card and PSAM (tests/mpy/tcard_fakes.py, shared with tests/mpy/test_fuzz_card.py) whose answer
to one APDU per tap is replaced by bytes from the input, or lost before/after the command ran,
or timed out.

Input: up to four taps, each `ctl at len answer...`: ctl picks the card (of three), the damage
(replace, run-then-replace, gone before, gone after, timeout, protocol error after running) and
whether the PSAM is damaged instead; `at` the APDU; the answer is the next `len` bytes (a DEBIT
that ran and said 9000 keeps its 9000: a card that debits and then lies is not bookable).
Invariants (docs/robustness.md): tap() returns a known reason and nothing escapes; every
journaled record encodes; a purchase is booked only for a debit the card made (or flagged
MAC2-unverified) and each debit exactly once; the same card tapped honestly afterwards is sold
(or its torn purchase settled) and nothing stays pending.
"""

import os
import sys

from tools.fuzz import shim

shim.install()
for _d in ("tests/mpy", "boards/unix_sim"):
    if os.path.join(shim.ROOT, _d) not in sys.path:
        sys.path.append(os.path.join(shim.ROOT, _d))

import memlog  # noqa: E402
import purchase  # noqa: E402
import record  # noqa: E402
import tcard_fakes  # noqa: E402
import timeutil  # noqa: E402
from linkerr import CardGone, LinkTimeout, ProtocolError  # noqa: E402
from psam_app import PsamApp  # noqa: E402
from tcard_fakes import OK, Card, Psam  # noqa: E402

from tools.fuzz.shim import check  # noqa: E402

NAME = "purchase"
NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
FARE = {"debit": 100, "route": 12, "stop": 3}
MODES = ("replace", "replace_run", "gone_before", "gone_after", "timeout", "proto_run")


class Damaging:
    """Passes APDUs to `inner`; the `at`-th one is damaged by `mode`, its answer (when one is
    given) being `answer` from the input."""

    def __init__(self, inner, at, mode, answer):
        self.inner = inner
        self.at = at
        self.mode = mode
        self.answer = answer
        self.i = 0

    def transceive(self, a):
        i = self.i
        self.i += 1
        if i != self.at:
            return self.inner.transceive(a)
        m = self.mode
        if m == "gone_before":
            raise CardGone("fuzz")
        if m == "timeout":
            raise LinkTimeout("fuzz")
        if m == "replace":  # the device did not run the command; this came back instead
            return self.answer
        r = self.inner.transceive(a)
        if m == "gone_after":
            raise CardGone("fuzz")
        if m == "proto_run":
            raise ProtocolError("fuzz")
        if a[1] == 0x54 and r[-2:] == OK:
            return self.answer + OK  # a debit made: only the body is damaged
        return self.answer


def check_books(journal, cards, ctx):
    tcard_fakes.check_books(journal, cards, FARE["debit"], check, ctx)


def one_input(data):
    journal = []
    psam = Psam()
    p = purchase.Purchaser(PsamApp(psam), memlog.make(journal, intents=False))
    check(p.boot(), "boot")
    cards = [Card(k, balance=10000000) for k in range(3)]
    pos = 0
    for i in range(4):
        if pos + 3 > len(data):
            break
        ctl, at, n = data[pos], data[pos + 1], data[pos + 2] % 64
        answer = bytes(data[pos + 3 : pos + 3 + n])
        pos += 3 + n
        card = cards[ctl % 3]
        mode = MODES[(ctl >> 2) % len(MODES)]
        before = card.n_debits
        if ctl & 0x80:
            how = "replace_run" if ctl & 0x40 else "replace"
            p.psam.link = Damaging(psam, at % 4, how, answer)
            link = card
        else:
            link = Damaging(card, at % 10, mode, answer)
        res = p.tap(link, FARE, NOW + i)
        p.psam.link = psam
        check(res.reason in purchase.REASONS, "unknown reason %r" % (res.reason,))
        if res.reason == purchase.OK and card.n_debits == before:
            check(res.record["kind"] == record.PURCHASE_RECOVERED, "sold without a debit")
        res2 = p.tap(card, FARE, NOW + i)
        ctx = "tap %d: %s at %d answer %s: %r then %r" % (i, mode, at, answer.hex(), res, res2)
        check(res2.reason == purchase.OK, "honest re-tap: %s; %s" % (res2.detail, ctx))
        check(p.pending() == [], "left pending; " + ctx)
        check_books(journal, cards, ctx)


# One tap each of every damage mode at a few APDUs, and a two-tap input.
SEEDS = (
    b"",
    b"\x00\x00\x00",
    b"\x04\x06\x02\x90\x00",
    b"\x08\x06\x00",
    b"\x0c\x06\x00",
    b"\x10\x05\x00",
    b"\x14\x07\x00",
    b"\x80\x02\x02\x93\x02",
    b"\xc0\x03\x02\x90\x00\x05\x01\x04\x12\x34\x56\x78",
    b"\x00\x01\x0a" + bytes(range(10)) + b"\x01\x06\x00",
)
