# mpy: heapsize=2m timeout=120
# The raw flash stand-in (boards/unix_sim/rawflash.py) behaves as esp32.Partition and NOR flash:
# programs only clear bits, erases are per sector, ranges are checked, cuts tear as configured.
import os

import mptest
import rawflash


def test_geometry_and_ioctls():
    d = rawflash.RawFlash(4)
    mptest.eq(d.ioctl(4, 0), 4)
    mptest.eq(d.ioctl(5, 0), 4096)
    mptest.eq(d.ioctl(1, 0), 0)
    mptest.eq(d.ioctl(3, 0), 0)
    mptest.eq(d.ioctl(99, 0), None)


def test_program_ands_bits_and_erase_restores():
    d = rawflash.RawFlash(4)
    d.writeblocks(1, b"\xf0\x0f", 10)
    d.writeblocks(1, b"\x3c\xff", 10)  # re-programming is not refused: bits only go to 0
    b = bytearray(3)
    d.readblocks(1, b, 10)
    mptest.hex_eq(b, b"\x30\x0f\xff")
    mptest.eq((d.programs, d.programmed, d.reads, d.read_bytes), (2, 4, 1, 3))
    d.ioctl(6, 1)
    d.readblocks(1, b, 10)
    mptest.hex_eq(b, b"\xff\xff\xff")
    mptest.eq(d.erases, 1)
    mptest.eq(d.erase_counts, [0, 1, 0, 0])


def test_simple_writeblocks_erases_first():
    d = rawflash.RawFlash(4)
    d.writeblocks(2, b"\x00" * 16, 0)
    d.writeblocks(2, b"\x55" * 4096)  # littlefs-style: erase then program
    b = bytearray(16)
    d.readblocks(2, b)
    mptest.hex_eq(b, b"\x55" * 16)
    mptest.eq(d.erase_counts[2], 1)
    mptest.raises(OSError, d.writeblocks, 2, b"\x00" * 100)  # not whole sectors


def test_reads_and_programs_cross_blocks_inside_the_partition():
    d = rawflash.RawFlash(2)
    d.writeblocks(0, b"\x01\x02", 4095)
    b = bytearray(2)
    d.readblocks(0, b, 4095)
    mptest.hex_eq(b, b"\x01\x02")
    mptest.raises(OSError, d.readblocks, 1, bytearray(2), 4095)
    mptest.raises(OSError, d.writeblocks, 2, b"\x00", 0)
    mptest.raises(OSError, d.ioctl, 6, 2)
    mptest.raises(OSError, d.ioctl, 6, -1)


def test_cut_clean_stops_everything_until_power_returns():
    d = rawflash.RawFlash(2)
    d.arm(1)
    d.writeblocks(0, b"\x00", 0)
    e = mptest.raises(rawflash.PowerCut, d.writeblocks, 0, b"\x00", 1)
    mptest.true(isinstance(e, OSError))
    mptest.raises(rawflash.PowerCut, d.readblocks, 0, bytearray(1))
    mptest.raises(rawflash.PowerCut, d.ioctl, 6, 0)
    d.restore_power()
    b = bytearray(2)
    d.readblocks(0, b)
    mptest.hex_eq(b, b"\x00\xff")  # the cut program left nothing ("clean")
    mptest.eq(d.ops, 1)


def test_torn_program_prefix_and_bits():
    seen = set()
    for seed in range(1, 40):
        d = rawflash.RawFlash(2)
        d.arm(0, "prefix", seed)
        mptest.raises(rawflash.PowerCut, d.writeblocks, 0, b"\x00" * 64, 0)
        b = bytearray(64)
        d.restore_power()
        d.readblocks(0, b)
        k = 0
        while k < 64 and b[k] == 0:
            k += 1
        mptest.hex_eq(b[k:], b"\xff" * (64 - k), "a prefix, then untouched")
        seen.add(k)
        d = rawflash.RawFlash(2)
        d.writeblocks(0, b"\x0f" * 64, 0)
        d.arm(0, "bits", seed)
        mptest.raises(rawflash.PowerCut, d.writeblocks, 0, b"\x00" * 64, 0)
        d.restore_power()
        d.readblocks(0, b)
        for x in b:
            mptest.eq(x & 0xF0, 0, "bits never go 0 -> 1 in a program")
        mptest.true(b != b"\x0f" * 64 and b != bytes(64), "some bits changed, not all")
    mptest.true(len(seen) > 10, "prefix lengths vary")


def test_torn_erase_leaves_sector_partly_erased():
    for tear in ("prefix", "bits"):
        d = rawflash.RawFlash(2)
        d.writeblocks(1, bytes(4096), 0)
        d.arm(0, tear, 5)
        mptest.raises(rawflash.PowerCut, d.ioctl, 6, 1)
        d.restore_power()
        b = bytearray(4096)
        d.readblocks(1, b)
        mptest.true(b != bytes(4096) and b != b"\xff" * 4096, tear + ": partly erased")
        mptest.eq(d.erases, 0)


def test_replay_equals_live_run():
    def run(d):
        d.writeblocks(0, b"\x12" * 64, 0)
        d.ioctl(6, 1)
        d.writeblocks(1, b"\x34" * 64, 64)
        d.ioctl(6, 0)
        d.writeblocks(0, b"\x56" * 64, 128)

    rec = rawflash.RawFlash(2)
    rec.record_ops()
    run(rec)
    mptest.eq(len(rec.oplog), 5)
    for n in range(5):
        for tear in ("clean", "prefix", "bits"):
            live = rawflash.RawFlash(2)
            live.arm(n, tear, 9)
            mptest.raises(rawflash.PowerCut, run, live)
            img = bytearray(b"\xff" * 8192)
            for i in range(n):
                rec.apply_op(img, i)
            rec.apply_op(img, n, tear, 9)
            mptest.hex_eq(img, live.data, "op %d %s" % (n, tear))


def test_file_flash_persists_and_tears():
    path = "/tmp/rawflash-test-%d.img" % os.getpid() if hasattr(os, "getpid") else "/tmp/rf.img"
    d = rawflash.FileFlash(path, 2, fresh=True)
    d.writeblocks(1, b"\xa5" * 64, 64)
    d.writeblocks(1, b"\x0f" * 64, 64)
    d.close()
    d = rawflash.FileFlash(path, 2)
    b = bytearray(64)
    d.readblocks(1, b, 64)
    mptest.hex_eq(b, b"\x05" * 64)
    d.arm(0, "prefix", 3)
    mptest.raises(rawflash.PowerCut, d.ioctl, 6, 1)
    d.restore_power()
    d.ioctl(6, 1)
    d.readblocks(1, b, 64)
    mptest.hex_eq(b, b"\xff" * 64)
    mptest.eq(d.erase_counts[1], 1)
    d.close()
    os.remove(path)


def test_flaky_tear_leaves_marginal_bits_until_programmed_or_erased():
    data = bytes(range(64))
    for seed in range(1, 20):
        d = rawflash.RawFlash(2)
        d.arm(0, "flaky", seed)
        mptest.raises(rawflash.PowerCut, d.writeblocks, 0, data, 64)
        d.restore_power()
        mptest.true(len(d.weak) <= 3, "a few marginal bytes")
        if not d.weak:
            continue  # the chosen bits were already 1 in the data: a clean program
        b = bytearray(64)
        seen = set()
        for _ in range(40):
            d.readblocks(0, b, 64)
            seen.add(bytes(b))
            for i in range(64):
                mptest.eq(b[i] | (data[i] ^ 0xFF), 0xFF, "bits the data keeps at 1 stay 1")
        mptest.true(data in seen and len(seen) > 1, "reads back sometimes right, sometimes not")
        d.writeblocks(0, data, 64)  # the same bits again settle them
        mptest.eq(d.weak, {})
        d.readblocks(0, b, 64)
        mptest.hex_eq(b, data)
        d.arm(0, "flaky", seed)
        mptest.raises(rawflash.PowerCut, d.writeblocks, 1, data, 64)
        d.restore_power()
        d.ioctl(6, 1)
        mptest.eq(d.weak, {}, "an erase clears them")
