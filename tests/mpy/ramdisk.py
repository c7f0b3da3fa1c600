# A RAM block device with the extended interface littlefs needs (vfs.VfsLfs2), plus power cuts:
# after `cut_after` program/erase operations every further one fails as if power were gone, and
# the interrupted program can leave its block half-written (`tear=True`), as a real cut does.
# "Power returns" with restore_power(); the data stays as the cut left it, then remount.
#
# For sweeping every cut point of a long run without re-running it once per point, the device can
# log each completed program/erase (record_ops); apply_op() then rebuilds the image as a cut after
# any number of operations leaves it (the software is deterministic, so the operations before a
# cut are the same as in the uninterrupted run). Use mtime=False so littlefs writes no timestamps.
import vfs

ERASED = 0xFF


class PowerCut(OSError):
    pass


# A file object left open may be finalised by the garbage collector and try to write to a dead
# device with the heap locked: it gets this instance, since a new one cannot be made then.
_DEAD = PowerCut(5)


def _cut():
    try:
        return PowerCut(5)  # EIO
    except MemoryError:
        return _DEAD


class RAMBlockDev:
    def __init__(self, block_size=4096, num_blocks=64):
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.data = bytearray(b"\xff" * (block_size * num_blocks))
        self.ops = 0  # program + erase operations so far
        self.programs = 0
        self.programmed = 0  # bytes
        self.erases = 0
        self.reads = 0
        self.cut_after = None
        self.tear = False
        self.dead = False
        self.oplog = None  # list of (address, bytes written) while recording

    def arm(self, cut_after, tear=False):
        """Cut power at the cut_after-th program/erase from now (0: the very next one)."""
        self.cut_after = self.ops + cut_after
        self.tear = tear
        self.dead = False

    def restore_power(self):
        self.cut_after = None
        self.dead = False

    def record_ops(self, on=True):
        self.oplog = [] if on else None

    def _op(self):
        if self.dead:
            raise _cut()
        if self.cut_after is not None and self.ops >= self.cut_after:
            self.dead = True
            return False
        self.ops += 1
        return True

    def readblocks(self, block_num, buf, offset=0):
        self.reads += 1
        addr = block_num * self.block_size + offset
        buf[:] = self.data[addr : addr + len(buf)]

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:
            # Simple interface: erase then program whole blocks.
            for i in range(len(buf) // self.block_size):
                self.ioctl(6, block_num + i)
            offset = 0
        addr = block_num * self.block_size + offset
        if not self._op():
            if self.tear:
                half = len(buf) // 2
                self.data[addr : addr + half] = buf[:half]
            raise _cut()
        self.programs += 1
        self.programmed += len(buf)
        self.data[addr : addr + len(buf)] = buf
        if self.oplog is not None:
            self.oplog.append((addr, bytes(buf)))

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.num_blocks
        if op == 5:  # block size
            return self.block_size
        if op == 6:  # erase
            start = arg * self.block_size
            if not self._op():
                if self.tear:
                    half = self.block_size // 2
                    self.data[start : start + half] = b"\xff" * half
                raise _cut()
            self.erases += 1
            self.data[start : start + self.block_size] = b"\xff" * self.block_size
            if self.oplog is not None:
                self.oplog.append((start, None))
            return 0
        return 0

    def apply_op(self, image, i, torn=False):
        """Apply logged operation i to `image` (a bytearray), or with torn=True only the half of
        it that a cut during that operation leaves (as arm(..., tear=True) does live)."""
        addr, chunk = self.oplog[i]
        n = self.block_size if chunk is None else len(chunk)
        if torn:
            n //= 2
        if chunk is None:
            image[addr : addr + n] = b"\xff" * n
        else:
            image[addr : addr + n] = chunk[:n]


def fresh_fs(block_size=4096, num_blocks=64, mount_point=None, mtime=True):
    """Format a new RAM device with littlefs v2; mount it if a mount point is given."""
    dev = RAMBlockDev(block_size, num_blocks)
    vfs.VfsLfs2.mkfs(dev)
    fs = vfs.VfsLfs2(dev, mtime=mtime)
    if mount_point:
        vfs.mount(fs, mount_point)
    return dev, fs


def remount(dev, mount_point, mtime=True):
    """After a cut: power back, unmount the old instance if mounted, mount a fresh one."""
    dev.restore_power()
    try:
        vfs.umount(mount_point)
    except OSError:
        pass
    fs = vfs.VfsLfs2(dev, mtime=mtime)
    vfs.mount(fs, mount_point)
    return fs


def FileBlockDev(path, block_size=4096, num_blocks=64):
    """A block device kept in a host file, so a big device costs no MicroPython heap (for tests
    run with an ESP32-sized heap). No power cuts. The simulation board's flash image device,
    started erased."""
    from flashdev import FileBlockDev as _FileBlockDev

    return _FileBlockDev(path, block_size, num_blocks, fresh=True)
