# A flash image in a host file as a littlefs block device, for the unix-port simulation board.
# Unlike a RAM device it survives the process: killing micropython mid-run is a power cut, and
# the next run mounts what the "flash" held at that instant (each program/erase is one write()).
import os


class FileBlockDev:
    """fresh=True starts from an erased image even if the file exists (tests); otherwise an
    image of the right size is kept, as flash keeps its content across a power cut."""

    _ERASED = b"\xff" * 256  # erase in small pieces: tests run this under ESP32-sized heaps

    def __init__(self, path, block_size=4096, num_blocks=512, fresh=False):
        self.path = path
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.fresh = fresh
        if not fresh:
            try:
                self.fresh = os.stat(path)[6] != block_size * num_blocks
            except OSError:
                self.fresh = True
        if self.fresh:
            with open(path, "wb") as f:
                for _ in range(num_blocks * block_size // len(self._ERASED)):
                    f.write(self._ERASED)
        self.f = open(path, "r+b")
        self.programs = 0
        self.programmed = 0  # bytes
        self.erases = 0

    def readblocks(self, block_num, buf, offset=0):
        self.f.seek(block_num * self.block_size + offset)
        self.f.readinto(buf)

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:
            for i in range(len(buf) // self.block_size):
                self.ioctl(6, block_num + i)
            offset = 0
        self.f.seek(block_num * self.block_size + offset)
        self.f.write(buf)
        self.f.flush()
        self.programs += 1
        self.programmed += len(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.num_blocks
        if op == 5:
            return self.block_size
        if op == 6:
            self.f.seek(arg * self.block_size)
            for _ in range(self.block_size // len(self._ERASED)):
                self.f.write(self._ERASED)
            self.f.flush()
            self.erases += 1
            return 0
        return 0

    def close(self):
        self.f.close()


def mount(path, mount_point="/flash", block_size=4096, num_blocks=512):
    """Mount the image at mount_point, formatting it the first time (as the ESP32's inisetup)."""
    import vfs

    dev = FileBlockDev(path, block_size, num_blocks)
    if dev.fresh:
        vfs.VfsLfs2.mkfs(dev)
    try:
        fs = vfs.VfsLfs2(dev)
    except OSError:
        # A blank-but-sized image (never formatted) is formatted; anything else is an error.
        vfs.VfsLfs2.mkfs(dev)
        fs = vfs.VfsLfs2(dev)
    vfs.mount(fs, mount_point)
    return dev
