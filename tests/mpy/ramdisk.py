# A RAM block device with the extended interface littlefs needs (vfs.VfsLfs2), plus power cuts:
# after `cut_after` program/erase operations every further one fails as if power were gone, and
# the interrupted program can leave its block half-written (`tear=True`), as a real cut does.
# "Power returns" with restore_power(); the data stays as the cut left it, then remount.
import vfs

ERASED = 0xFF


class PowerCut(OSError):
    pass


class RAMBlockDev:
    def __init__(self, block_size=4096, num_blocks=64):
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.data = bytearray(b"\xff" * (block_size * num_blocks))
        self.ops = 0  # program + erase operations so far
        self.programs = 0
        self.erases = 0
        self.reads = 0
        self.cut_after = None
        self.tear = False
        self.dead = False

    def arm(self, cut_after, tear=False):
        """Cut power at the cut_after-th program/erase from now (0: the very next one)."""
        self.cut_after = self.ops + cut_after
        self.tear = tear
        self.dead = False

    def restore_power(self):
        self.cut_after = None
        self.dead = False

    def _op(self):
        if self.dead:
            raise PowerCut(5)  # EIO
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
            raise PowerCut(5)
        self.programs += 1
        self.data[addr : addr + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.num_blocks
        if op == 5:  # block size
            return self.block_size
        if op == 6:  # erase
            if not self._op():
                if self.tear:
                    start = arg * self.block_size
                    half = self.block_size // 2
                    self.data[start : start + half] = b"\xff" * half
                raise PowerCut(5)
            self.erases += 1
            start = arg * self.block_size
            self.data[start : start + self.block_size] = b"\xff" * self.block_size
            return 0
        return 0


def fresh_fs(block_size=4096, num_blocks=64, mount_point=None):
    """Format a new RAM device with littlefs v2; mount it if a mount point is given."""
    dev = RAMBlockDev(block_size, num_blocks)
    vfs.VfsLfs2.mkfs(dev)
    fs = vfs.VfsLfs2(dev)
    if mount_point:
        vfs.mount(fs, mount_point)
    return dev, fs


def remount(dev, mount_point):
    """After a cut: power back, unmount the old instance if mounted, mount a fresh one."""
    dev.restore_power()
    try:
        vfs.umount(mount_point)
    except OSError:
        pass
    fs = vfs.VfsLfs2(dev)
    vfs.mount(fs, mount_point)
    return fs
