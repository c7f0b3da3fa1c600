# Start-up figures (docs/boot.md): how long the transaction log's recovery and the parameters'
# load take when the log is full, the two start-up steps whose work grows with what the flash
# holds. The log on boards/unix_sim/rawflash.py (reads counted) at the ESP32's geometry, filled
# with sales (intent + PURCHASE) and nothing acknowledged, until purchases are refused and then
# until not even an event fits; parameters: a bundle on a RAM littlefs, Params.load().
# argv: sectors of the small partition (64 = 256 KiB), of the large one (256 = 1 MiB), reps.
import time

import benchlib
import log
import rawflash
import record
import txlog

sectors = benchlib.arg(1, 64)
big = benchlib.arg(2, 256)
reps = benchlib.arg(3, 5)
CARD = b"\x31\x00\x00\x00\x12\x34\x56\x78\x90\x12"
log.set_level(log.ERROR, echo=False)


def sale(kind, i):
    return {
        "kind": kind,
        "time": 800000000 + i,
        "amount": 200,
        "psam_tid": b"\x01\x02\x03\x04\x05\x06",
        "card_no": CARD,
        "card_atc": i & 0xFFFF,
        "tac": b"\xde\xad\xbe\xef" if kind == record.PURCHASE else 0,
        "route": 12,
    }


def fill(n):
    dev = rawflash.RawFlash(n)
    lg = txlog.TxLog(dev)
    i = 0
    while lg.can_accept_purchase():
        lg.append(sale(record.DEBIT_INTENT, i))
        lg.append(sale(record.PURCHASE, i))
        i += 1
    refused_at = lg.last_seq
    try:
        while True:  # then events into the reserve, until nothing fits
            lg.append({"kind": record.CLOCK_CHANGE, "time": 800000000 + i})
            i += 1
    except txlog.LogFull:
        pass
    return dev, refused_at, lg.last_seq


def open_us(dev):
    out = []
    for _ in range(reps):
        dev.reset_counters()
        t0 = time.ticks_us()
        lg = txlog.TxLog(dev)
        out.append(time.ticks_diff(time.ticks_us(), t0))
        lg.close()
    return benchlib.median(out), dev.reads


def params_us():
    import bundle
    import cardlists
    import params
    import ramdisk
    import vfs

    disk = ramdisk.RAMBlockDev(4096, 128)
    vfs.VfsLfs2.mkfs(disk)
    vfs.mount(vfs.VfsLfs2(disk, mtime=False), "/p")
    secret = bytes(range(32))
    cfg = {
        "settings": {"dup_tap_s": 60},
        "whitelist": {
            "local_issuers": ["09981001"],
            "local_city": "1001",
            "issuers": ["09981001"],
        },
        "fares": {
            "routes": {str(r): {"mode": "flat", "fare": 100 + r} for r in range(1, 40)},
            "card_types": {"1": {}, "2": {}, "3": {}},
        },
    }
    numbers = [3100000000000000 + i * 7 for i in range(20000)]
    data = bundle.build(secret, 1, 0, cfg, cardlists.blacklist_bytes(numbers))
    p = params.Params("/p/params", secret, terminal=b"\x00" * 8)
    ok, why = p.install_bytes(data, 800000000)
    if not ok:
        raise SystemExit("bundle refused: %s" % why)
    out = []
    for _ in range(reps):
        q = params.Params("/p/params", secret, terminal=b"\x00" * 8)
        t0 = time.ticks_us()
        q.load(800000000)
        out.append(time.ticks_diff(time.ticks_us(), t0))
    return benchlib.median(out), len(data)


figures = {}
for n in (sectors, big):
    dev, refused_at, last = fill(n)
    us, reads = open_us(dev)
    figures[n] = (refused_at, last, us, reads)
pus, psize = params_us()
benchlib.emit(
    boot_log_records_full=figures[sectors][1],
    boot_log_open_us_full=figures[sectors][2],
    boot_log_reads_full=figures[sectors][3],
    boot_log_records_full_big=figures[big][1],
    boot_log_open_us_full_big=figures[big][2],
    boot_log_reads_full_big=figures[big][3],
    boot_params_load_us=pus,
    boot_params_bundle_bytes=psize,
    mpy_loop_us=benchlib.busy_us(),
)
