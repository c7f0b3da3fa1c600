# A flash image in a host file as a littlefs block device, for the unix-port simulation board.
# Unlike a RAM device it survives the process: killing micropython mid-run is a power cut, and
# the next run mounts what the "flash" held at that instant (each program/erase is one write()).
import os


class FileBlockDev:
    def __init__(self, path, block_size=4096, num_blocks=512):
        self.path = path
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.fresh = False
        try:
            size = os.stat(path)[6]
        except OSError:
            size = -1
        if size != block_size * num_blocks:
            with open(path, "wb") as f:
                blank = b"\xff" * block_size
                for _ in range(num_blocks):
                    f.write(blank)
            self.fresh = True
        self._f = open(path, "r+b")
        self.programs = 0
        self.erases = 0

    def readblocks(self, block_num, buf, offset=0):
        self._f.seek(block_num * self.block_size + offset)
        self._f.readinto(buf)

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:
            for i in range(len(buf) // self.block_size):
                self.ioctl(6, block_num + i)
            offset = 0
        self._f.seek(block_num * self.block_size + offset)
        self._f.write(buf)
        self._f.flush()
        self.programs += 1

    def ioctl(self, op, arg):
        if op == 4:
            return self.num_blocks
        if op == 5:
            return self.block_size
        if op == 6:
            self._f.seek(arg * self.block_size)
            self._f.write(b"\xff" * self.block_size)
            self._f.flush()
            self.erases += 1
            return 0
        return 0


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
