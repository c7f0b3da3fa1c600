# The cross suite of issue 14 (money across power cuts, tears and re-taps), shared by
# tests/mpy/test_purchase_cross.py (a sample) and tools/bench_mpy/cross.py (the full sweep).
#
# One case: a validator on a fresh raw flash device (boards/unix_sim/rawflash.py) with the real
# transaction log (firmware/txlog.py) and purchase, an in-process card (tcard_fakes.py) that
# keeps its own list of debits and 0x18 history, and the PSAM (a separate chip: it keeps its
# serial across reboots).
# A card taps (pulled before or after DEBIT, EEPROM-torn at DEBIT with the write applied or not,
# or not at all; its 0x18 records keep the ATC INIT returned or the next one: both card
# variants of tools/sim/card.py this card can have); power is cut at the k-th flash
# operation of the whole case (the tap, the reboot's recovery, the re-tap's recovery), the cut
# operation torn as rawflash does it; the validator reboots (log re-opened from flash, purchaser
# and PSAM session new) and the case goes on: the card comes back, another card comes first, the
# card never returns, or the validator reboots twice first. Then the books are compared with the
# cards' own debits:
#   double bookings: a debit booked by more than one PURCHASE/PURCHASE_RECOVERED record, or a
#                    booking of a counter the card never debited
#   lost debits:     a debit with no booking and no open intent (a DEBIT_VOID of a debit counts)
#   unresolved:      an intent still open after its card came back (must be 0)
import purchase
import rawflash
import record
import timeutil
import txlog
from psam_app import PsamApp
from tcard_fakes import Card, Psam  # noqa: F401 (test_app_tap.py takes them from here)

NOW = timeutil.to_seconds(2026, 11, 29, 4, 30, 0)
FARE = {"debit": 100, "route": 12, "stop": 3}
CARD_FAULTS = (
    None,
    ("before", 0x54),
    ("after", 0x54),
    ("write", 0x54, True),  # the debit written, then 6581 (memory failure)
    ("write", 0x54, False),  # the write lost, then 6581
)
ATC18 = ("init", "next")  # the 0x18 record's counter: INIT's ATC, or the one after the debit
THEN = ("retap", "other", "never", "reboot2")
TEARS = ("clean", "prefix", "bits")
BLOCKS = 16


class Rig:
    """One validator: flash device, log, purchaser; `reboot()` is a power cycle."""

    def __init__(self, prefill=0, blocks=BLOCKS):
        self.dev = rawflash.RawFlash(blocks)
        self.psam = Psam()
        self.t = NOW
        self.cuts = 0
        self.boots = 0
        self._plan = []
        self._tears = []
        self._base = 0
        self._seed = 1
        self.log = None
        self.p = None
        self.power_on()
        for _ in range(prefill):
            self.t += 1
            self.log.append({"kind": record.BOOT, "time": self.t})

    def power_on(self):
        """Boot until it stays up: a cut while the log recovers is one more power cycle."""
        while True:
            self.boots += 1
            try:
                self.log = txlog.TxLog(self.dev)
                self.p = purchase.Purchaser(PsamApp(self.psam), self.log)
                if not self.p.boot():
                    raise AssertionError("PSAM boot")
                return
            except rawflash.PowerCut:
                self._cut()

    def plan(self, cuts, tears, seed=1):
        """Cut power at these flash operations (indexes from now, ascending; an index counts
        the operations completed before it), the i-th cut torn as tears[i]."""
        self._base = self.dev.ops
        self._plan = list(cuts)
        self._tears = list(tears)
        self._seed = seed
        self._arm()

    def _arm(self):
        if self._plan:
            k = self._plan.pop(0)
            tear = self._tears.pop(0) if self._tears else "clean"
            self.dev.arm(max(0, self._base + k - self.dev.ops), tear, self._seed + k)

    def _cut(self):
        self.cuts += 1
        self.dev.restore_power()
        self._arm()

    def reboot(self):
        self.power_on()

    def idle(self):
        """The idle loop between taps: the log erases ahead and rolls (flash work, cut too)."""
        try:
            while self.log.maintain():
                pass
        except rawflash.PowerCut:
            pass
        if self.dev.dead:
            self._cut()
            self.power_on()

    def tap(self, card, fault=None):
        """One tap; a power cut during it reboots the validator. -> the reason, or 'CUT'."""
        card.fault = fault
        self.t += 7
        try:
            reason = self.p.tap(card, FARE, self.t).reason
        except rawflash.PowerCut:
            reason = "CUT"
        card.fault = None
        if self.dev.dead:  # the log saw the cut (purchase turns write errors into reasons)
            reason = "CUT"
        if reason == "CUT":
            self._cut()
            self.power_on()
        return reason

    def records(self):
        out = []
        seq = 0
        while True:
            got = self.log.records_after(seq, 32)
            if not got:
                return out
            for raw in got:
                out.append(record.decode(raw))
            seq = out[-1]["seq"]

    def audit(self, cards, returned):
        """-> (double bookings, lost debits, unresolved intents of returned cards)."""
        recs = self.records()
        opens = self.log.open_intents()
        double = lost = unresolved = 0
        for card in cards:
            mine = [r for r in recs if r["card_no"] == card.card_no]
            booked = [r["card_atc"] for r in mine if r["kind"] in (1, 2)]
            still = [o["card_atc"] for o in opens if o["card_no"] == card.card_no]
            for atc in card.debits:
                n = booked.count(atc)
                if n > 1:
                    double += n - 1
                elif n == 0 and atc not in still:
                    lost += 1
            double += sum(1 for atc in booked if atc not in card.debits)
            if card in returned:
                unresolved += len(still)
        return double, lost, unresolved


def run_case(fault, then, cuts=(), tears=(), seed=1, prefill=0, atc18="init"):
    """One case; cuts = the indexes of the flash operations (from the first tap on) where power
    is cut, in order (a later one falls in the recovery after the earlier one), tears[i] how the
    i-th cut operation is left; atc18 the card variant. -> dict(ops, double, lost, unresolved,
    cuts)."""
    rig = Rig(prefill)
    a, b = Card(1, atc18), Card(2, atc18)
    ops0 = rig.dev.ops
    rig.plan(cuts, tears, seed)
    cards = [a]
    returned = [a]
    rig.tap(a, fault)
    rig.idle()
    if then == "retap":
        pass
    elif then == "other":
        cards.append(b)
        rig.tap(b)
        rig.idle()
    elif then == "never":
        returned = []
    elif then == "reboot2":
        rig.reboot()
        rig.reboot()
    if returned:
        for _ in range(3):  # the rider taps until the validator says yes
            if rig.tap(a) in (purchase.OK, purchase.MAC2_FAILED):
                break
            rig.idle()
    rig.dev.restore_power()
    double, lost, unresolved = rig.audit(cards, returned)
    return {
        "ops": rig.dev.ops - ops0,
        "double": double,
        "lost": lost,
        "unresolved": unresolved,
        "cuts": rig.cuts,
    }


def sweep(every=1, tears=TEARS, prefills=(0,), second=False, on_case=None, atc18s=ATC18):
    """Every card variant x card fault x continuation x prefill, uncut and with a cut at every
    `every`-th flash operation of the case, each tear; with `second`, also a second cut at every
    operation after the first (the recovery cut again). -> totals dict (points = cases run)."""
    tot = {"points": 0, "double": 0, "lost": 0, "unresolved": 0, "cuts": 0}
    for atc18 in atc18s:
        for prefill in prefills:
            for fault in CARD_FAULTS:
                for then in THEN:
                    _sweep_one(tot, every, tears, prefill, second, on_case, atc18, fault, then)
    return tot


def _sweep_one(tot, every, tears, prefill, second, on_case, atc18, fault, then):
    base = run_case(fault, then, prefill=prefill, atc18=atc18)
    _add(tot, base, on_case, (atc18, fault, then, (), (), prefill))
    for k in range(0, base["ops"], every):
        for tear in tears:
            got = run_case(fault, then, (k,), (tear,), k + 1, prefill, atc18)
            _add(tot, got, on_case, (atc18, fault, then, (k,), (tear,), prefill))
        if not second:
            continue
        ops = run_case(fault, then, (k,), ("clean",), k + 1, prefill, atc18)["ops"]
        for j in range(k, ops):
            cuts, how = (k, j), ("prefix", tears[j % len(tears)])
            got = run_case(fault, then, cuts, how, k + j + 1, prefill, atc18)
            _add(tot, got, on_case, (atc18, fault, then, cuts, how, prefill))


def _add(tot, got, on_case, what):
    tot["points"] += 1
    for key in ("double", "lost", "unresolved", "cuts"):
        tot[key] += got[key]
    if on_case is not None:
        on_case(what, got)
