# Transaction-log figures (firmware/txlog.py on boards/unix_sim/rawflash.py, which counts reads,
# programs, programmed bytes and erases) on the ESP32's geometry (4 KB sectors).
# argv: sales (taps writing an intent then its PURCHASE, the uplink acknowledging every 10 sales,
# idle time between taps), sectors of the steady-state partition (64 = 256 KiB), sectors of the
# large one (256 = 1 MiB), taps measured at each fill level.
#   tap_*: flash operations of the log in one tap (can_accept_purchase, append intent, append
#   outcome) at an empty log and at 95 % full, worst of `taps` taps with idle time between them
import gc
import time

import benchlib
import log
import rawflash
import record
import txlog

sales = benchlib.arg(1, 3000)
sectors = benchlib.arg(2, 64)
big = benchlib.arg(3, 256)
taps = benchlib.arg(4, 200)
CARD = b"\x31\x00\x00\x00\x12\x34\x56\x78\x90\x12"
log.set_level(log.ERROR, echo=False)


def sale(kind, i):
    return {
        "kind": kind,
        "time": 800000000 + i,
        "amount": 200,
        "balance_before": 5000,
        "balance_after": 4800,
        "psam_tid": b"\x01\x02\x03\x04\x05\x06",
        "psam_serial": 77,
        "card_no": CARD,
        "card_atc": i & 0xFFFF,
        "tac": b"\xde\xad\xbe\xef" if kind == record.PURCHASE else 0,
        "route": 12,
    }


def idle(lg):
    while lg.maintain():
        pass


def tap(lg, i):
    ok = lg.can_accept_purchase()
    lg.append(sale(record.DEBIT_INTENT, i))
    lg.append(sale(record.PURCHASE, i))
    return ok


def tap_ops(lg, dev, n, start):
    """Worst reads/programs/erases/bytes allocated over n taps (idle between them, not counted)."""
    worst = [0, 0, 0, 0]
    for i in range(start, start + n):
        idle(lg)
        fi = sale(record.DEBIT_INTENT, i)  # the purchase's dicts: not the log's allocation
        fo = sale(record.PURCHASE, i)
        gc.collect()
        gc.disable()
        r, p, e = dev.reads, dev.programs, dev.erases
        a = gc.mem_alloc()
        lg.can_accept_purchase()
        lg.append(fi)
        lg.append(fo)
        a = gc.mem_alloc() - a
        if i == start:
            a = 0  # the first encode into a log's buffer makes record.py's cached view
        got = (dev.reads - r, dev.programs - p, dev.erases - e, a)
        gc.enable()
        for k in range(4):
            if got[k] > worst[k]:
                worst[k] = got[k]
    return worst


# ---- steady state: a bus day with the uplink working -------------------------------------------
dev = rawflash.RawFlash(sectors)
lg = txlog.TxLog(dev)
for i in range(sectors * 63):  # two laps: every sector has been erased and reused once
    idle(lg)
    tap(lg, i)
    if i % 10 == 9:
        lg.ack(lg.last_seq - 4)
dev.reset_counters()
wear0 = list(dev.erase_counts)
rec0 = lg.last_seq
t0 = time.ticks_us()
for i in range(sales):
    idle(lg)
    tap(lg, i)
    if i % 10 == 9:
        lg.ack(lg.last_seq - 4)
dt = time.ticks_diff(time.ticks_us(), t0)
records = lg.last_seq - rec0
steady = (dev.programmed, dev.programs, dev.erases)
wear = [dev.erase_counts[k] - wear0[k] for k in range(sectors)]
wear_spread = max(wear) - min(wear)

# ---- tap cost at an empty log and at 95 % full (uplink down: nothing acknowledged) -------------
dev = rawflash.RawFlash(sectors)
lg = txlog.TxLog(dev)
empty = tap_ops(lg, dev, taps, 0)
i = taps
while lg.status()["used"] * 100 < lg.capacity * 95:
    idle(lg)
    tap(lg, i)
    i += 1
fill_pct = lg.status()["used"] * 100 / lg.capacity
full = tap_ops(lg, dev, 8, i)  # 8 taps: the reserve must not run out
dev.reset_counters()
txlog.TxLog(dev)
boot_reads_full = dev.reads
ratio = (full[0] / empty[0]) if empty[0] else (1.0 if full[0] == 0 else 99.0)

# ---- capacity: records until purchases are refused (nothing acknowledged) ----------------------
fills = {}
boots = {}
for n in (sectors, big):
    dev = rawflash.RawFlash(n)
    lg = txlog.TxLog(dev)
    k = 0
    while lg.can_accept_purchase():
        idle(lg)
        tap(lg, k)
        k += 1
    fills[n] = lg.last_seq
    dev.reset_counters()
    txlog.TxLog(dev)
    boots[n] = dev.reads
    del lg, dev

benchlib.emit(
    sales=sales,
    records=records,
    record_size=record.SIZE,
    journal_bytes_per_sale=steady[0] / sales,
    journal_bytes_per_record=steady[0] / records,
    journal_programs_per_record=steady[1] / records,
    journal_block_writes_per_record=steady[2] / records,
    append_us=dt / records,
    wear_spread=wear_spread,
    wear_min=min(wear),
    wear_max=max(wear),
    tap_reads_empty=empty[0],
    tap_programs_empty=empty[1],
    tap_erases_empty=empty[2],
    tap_reads_full=full[0],
    tap_programs_full=full[1],
    tap_erases_full=full[2],
    tap_alloc_bytes=max(empty[3], full[3]),
    tap_fill_pct=fill_pct,
    tap_reads_ratio_full_vs_empty=ratio,
    boot_reads_95pct=boot_reads_full,
    fill_sectors=sectors,
    fill_records=fills[sectors],
    fill_big_sectors=big,
    fill_big_records=fills[big],
    boot_reads_full=boots[sectors],
    boot_reads_full_big=boots[big],
    journal_records_per_mb=fills[big] / (big * 4096 / 1048576),
)
