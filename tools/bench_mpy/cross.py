# The cross suite, every point (tests/mpy/crosslib.py; the test run takes a sample): a card pulled
# before or after DEBIT or not at all, power cut at every flash operation of the purchase and of
# its recovery (each tear mode), then a second cut at every operation after the first, with the
# log empty and with a sector boundary inside the purchase; then a re-tap, another card first, no
# return, or two reboots first. Then the tap's flash work at an empty log and at 95% full,
# through the real purchase (Purchaser.tap only: the idle loop's maintain() is not the tap's).
# argv: full (1: every prefill and the second cut; 0: a quick subset), taps per flash measurement.
import benchlib
import crosslib
import log
import purchase
import rawflash
import record
import txlog
from psam_app import PsamApp

log.set_level(log.ERROR + 10, echo=False)  # the cuts log errors on purpose
FULL = benchlib.arg(1, 1)
TAPS = benchlib.arg(2, 40)

if FULL:
    tot = crosslib.sweep(prefills=(0, 60, 61, 62, 63), second=True)
else:
    tot = crosslib.sweep(prefills=(0,))
benchlib.emit(
    cross_points_tested=tot["points"],
    double_bookings=tot["double"],
    lost_debits=tot["lost"],
    cross_unresolved=tot["unresolved"],
    cross_power_cuts=tot["cuts"],
)

# --- flash work inside the tap ------------------------------------------------------------------
dev = rawflash.RawFlash(64)  # 256 KB: the txlog partition of a 4 MB board
lg = txlog.TxLog(dev)
p = purchase.Purchaser(PsamApp(crosslib.Psam()), lg)
assert p.boot()
card = crosslib.Card(1)
clock = [crosslib.NOW]


def idle():
    while lg.maintain():
        pass


def measure(n):
    """Per tap: (erases, programs, reads, read bytes) inside Purchaser.tap; idle work between."""
    e = pr = r = rb = 0
    for _ in range(n):
        idle()
        clock[0] += 97
        e0, p0, r0, b0 = dev.erases, dev.programs, dev.reads, dev.read_bytes
        res = p.tap(card, crosslib.FARE, clock[0])
        assert res.reason == purchase.OK, res.detail
        e += dev.erases - e0
        pr += dev.programs - p0
        r += dev.reads - r0
        rb += dev.read_bytes - b0
    return e / n, pr / n, r / n, rb / n


def fill_pct():
    st = lg.status()
    return 100 * st["used"] / st["capacity"] if st.get("capacity") else 0


measure(5)  # warm-up
empty = measure(TAPS)
empty_pct = fill_pct()
# Fill to 95% with records nobody acknowledges (an offline bus), as long as purchases are taken.
while fill_pct() < 95 and lg.can_accept_purchase():
    clock[0] += 1
    lg.append({"kind": record.REFUSED, "time": clock[0], "reason": record.REASON_OTHER})
full_pct = fill_pct()
full = None
if lg.can_accept_purchase():
    full = measure(min(TAPS, 8))  # each tap takes two records of what is left


def ratio(i):
    if full is None:
        return None
    if empty[i] == 0:
        return 1.0 if full[i] == 0 else float(full[i])  # none at all when empty: the count itself
    return full[i] / empty[i]


benchlib.emit(
    tap_flash_fill_pct_empty=empty_pct,
    tap_flash_fill_pct_full=full_pct,
    tap_flash_empty=list(empty),
    tap_flash_full=list(full) if full else None,
    tap_flash_erases_critical=max(empty[0], full[0] if full else 0),
    tap_flash_programs_critical=max(empty[1], full[1] if full else 0),
    tap_flash_reads_ratio_full_vs_empty=ratio(2),
    tap_flash_read_bytes_ratio_full_vs_empty=ratio(3),
)
