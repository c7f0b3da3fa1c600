# The power-cut RAM block device itself: littlefs mounts on it and a cut stops writes.
import os

import mptest
import ramdisk


def test_littlefs_on_ram_device_round_trip():
    dev, _ = ramdisk.fresh_fs(num_blocks=32, mount_point="/rd1")
    with open("/rd1/a.bin", "wb") as f:
        f.write(b"hello")
    ramdisk.remount(dev, "/rd1")
    with open("/rd1/a.bin", "rb") as f:
        mptest.hex_eq(f.read(), b"hello")
    os.umount("/rd1") if hasattr(os, "umount") else __import__("vfs").umount("/rd1")


def test_power_cut_keeps_last_synced_state():
    dev, _ = ramdisk.fresh_fs(num_blocks=32, mount_point="/rd2")
    with open("/rd2/a.bin", "wb") as f:
        f.write(b"old")
    dev.arm(0, tear=True)
    try:
        with open("/rd2/a.bin", "wb") as f:
            f.write(b"new-content")
    except OSError:
        pass
    mptest.true(dev.dead)
    ramdisk.remount(dev, "/rd2")
    with open("/rd2/a.bin", "rb") as f:
        data = f.read()
    mptest.true(data in (b"old", b"new-content", b""), "littlefs keeps a consistent file")
    __import__("vfs").umount("/rd2")
