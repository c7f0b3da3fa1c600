# Journal figures on the ESP32's geometry (4 KB littlefs blocks, MicroPython's littlefs defaults)
# with firmware/journal.py on tests/mpy/ramdisk.py, which counts programs and erases.
# argv: appends (acknowledged every 20, as the uplink does while the bus runs), fs_blocks for
# the fill (256 blocks = 1 MB: records accepted before purchases are refused).
import time

import benchlib
import log
import ramdisk
import record
import vfs
from journal import Journal

appends = benchlib.arg(1, 1500)
fill_blocks = benchlib.arg(2, 256)
FIELDS = {
    "kind": record.PURCHASE,
    "time": 800000000,
    "amount": 200,
    "balance_before": 5000,
    "balance_after": 4800,
    "psam_tid": b"\x01\x02\x03\x04\x05\x06",
    "card_no": b"\x31\x00\x00\x00\x12\x34\x56\x78\x90\x12",
    "tac": b"\xde\xad\xbe\xef",
    "route": 12,
}
log.set_level(log.INFO, echo=False)

dev = ramdisk.RAMBlockDev(4096, 512)
vfs.VfsLfs2.mkfs(dev)
vfs.mount(vfs.VfsLfs2(dev), "/jf")
j = Journal("/jf/journal")
for _ in range(200):  # past the first segments and the first mark write
    j.append(FIELDS)
e0, p0, b0 = dev.erases, dev.programs, dev.programmed
t0 = time.ticks_us()
for i in range(appends):
    j.append(FIELDS)
    if i % 20 == 19:
        j.ack(j.last_seq - 5)
dt = time.ticks_diff(time.ticks_us(), t0)
erases = dev.erases - e0
programs = dev.programs - p0
programmed = dev.programmed - b0
j.close()
vfs.umount("/jf")
del dev

dev = ramdisk.RAMBlockDev(4096, fill_blocks)
vfs.VfsLfs2.mkfs(dev)
vfs.mount(vfs.VfsLfs2(dev), "/jf")
j = Journal("/jf/journal")
n = 0
while j.can_accept_purchase():
    j.append(FIELDS)
    n += 1
cap = j.capacity
j.close()
vfs.umount("/jf")
mb = fill_blocks * 4096 / 1048576
benchlib.emit(
    appends=appends,
    record_size=record.SIZE,
    journal_bytes_per_record=programmed / appends,
    journal_block_writes_per_record=erases / appends,
    journal_programs_per_record=programs / appends,
    append_us=dt / appends,
    fill_fs_bytes=fill_blocks * 4096,
    fill_records=n,
    fill_capacity=cap,
    journal_records_per_mb=n / mb,
)
