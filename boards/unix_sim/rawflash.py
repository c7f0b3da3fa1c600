# Raw NOR flash with the interface of MicroPython's esp32.Partition (ports/esp32/esp32_partition.c
# of v1.27): the device firmware/txlog.py writes on, in RAM (tests) or in a host file (the
# simulation board, where killing the process is a power cut). What the real partition does:
#   readblocks(block, buf, offset=0)   any length, may cross blocks, must stay inside the partition
#   writeblocks(block, buf)            erases len(buf) bytes (whole 4 KB sectors) first,
#                                      then programs
#   writeblocks(block, buf, offset)    programs only, at block * size + offset, any length
#   ioctl(4) block count, ioctl(5) block size, ioctl(6, block) erases one sector; 1/2/3 (init,
#   deinit, sync) return 0, anything else None.
# Errors come from esp-idf's esp_partition_* checks (a range outside the partition, an erase not
# on sector boundaries) as OSError, which this device raises the same way.
#
# A program ANDs the data into the cells (NOR: bits only go from 1 to 0; an erase sets them back
# to 1). Programming over programmed bytes is NOT refused: the real partition does not refuse it
# (esp-idf writes whatever it is given), and the log uses it on purpose to zero a torn slot, so a
# stand-in that refused would hide exactly the behaviour the log depends on.
#
# Counters: reads, read_bytes, programs, programmed (bytes), erases, erase_counts[block] (wear).
# Power cuts: arm(n) cuts at the n-th program/erase from now; the cut operation leaves a partial
# effect chosen by `tear`: "clean" (nothing written), "prefix" (a random-length prefix of the
# program / of the erase), "bits" (random bits of the range: a program leaves some 1-bits that
# should have gone 0, an erase sets some bits back to 1), "flaky" (a program cut at its very
# end: done but for 1-3 marginal bits that read back 0 or 1 at random on every read until a
# program settles them or an erase clears them; RAM device, live cuts only, not replayable
# from an image), "any" (clean, prefix or bits at random). After
# the cut every operation raises PowerCut until restore_power(), as the chip has no power.
# record_ops() logs every completed operation so a run can be replayed up to any cut point
# (apply_op), which sweeps thousands of cut points without re-running the workload.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_SECTOR = const(4096)
_ESP_ERR_INVALID_ARG = const(0x102)
_ESP_ERR_INVALID_SIZE = const(0x104)
_EIO = const(5)
_CHUNK = const(256)  # the file device's staging buffer


class PowerCut(OSError):
    """The device lost power: the operation did not (fully) happen."""


_DEAD = None


def _cut():
    global _DEAD
    try:
        return PowerCut(_EIO)
    except MemoryError:  # heap locked (a finaliser): hand out one made earlier
        if _DEAD is None:
            raise
        return _DEAD


_DEAD = PowerCut(_EIO)


class Rng:
    """xorshift32: deterministic tears for a given seed on both runtimes."""

    def __init__(self, seed=1):
        self.s = (seed & 0xFFFFFFFF) or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def below(self, n):
        return self.next() % n if n > 0 else 0


def tear_into(image, addr, data, length, mode, rng):
    """Apply the partial effect of an operation cut by power loss to `image` (bytearray):
    data is the program's bytes, or None for an erase of `length` bytes at addr."""
    if mode == "any":
        mode = ("clean", "prefix", "bits")[rng.below(3)]
    if mode == "clean":
        return mode
    if mode == "prefix":
        k = rng.below(length + 1)
        if data is None:
            for i in range(addr, addr + k):
                image[i] = 0xFF
        else:
            for i in range(k):
                image[addr + i] &= data[i]
        return mode
    # "bits": each byte keeps a random subset of the change
    for i in range(length):
        r = rng.next() & 0xFF
        if data is None:
            image[addr + i] |= r
        else:
            image[addr + i] &= data[i] | r
    return mode


class RawFlash:
    """NOR flash in RAM (`data` is the bytearray)."""

    def __init__(self, num_blocks=64, block_size=_SECTOR, data=None, _ram=True):
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.size = block_size * num_blocks
        if not _ram:
            pass
        elif data is None:
            data = bytearray(b"\xff" * self.size)
        elif len(data) != self.size:
            raise ValueError("image of %d bytes for a %d-byte device" % (len(data), self.size))
        self.data = data
        self.reads = 0
        self.read_bytes = 0
        self.programs = 0
        self.programmed = 0
        self.erases = 0
        self.erase_counts = [0] * num_blocks
        self.ops = 0  # programs + erases completed
        self.cut_at = None
        self.tear = "clean"
        self.rng = Rng(1)
        self.dead = False
        self.last_tear = None
        self.oplog = None
        self.weak = {}  # address -> mask of marginal bits ("flaky" tears): read back at random

    # ---- test controls ----------------------------------------------------------------------

    def arm(self, n, tear="clean", seed=1):
        """Cut power at the n-th program/erase from now (0: the next one)."""
        self.cut_at = self.ops + n
        self.tear = tear
        self.rng = Rng(seed)
        self.dead = False

    def restore_power(self):
        self.cut_at = None
        self.dead = False

    def record_ops(self, on=True):
        self.oplog = [] if on else None

    def reset_counters(self):
        self.reads = self.read_bytes = self.programs = self.programmed = self.erases = 0

    def apply_op(self, image, i, tear=None, seed=1):
        """Apply logged operation i to `image`, whole, or as a cut during it leaves it."""
        addr, chunk = self.oplog[i]
        n = self.block_size if chunk is None else len(chunk)
        if tear is not None:
            return tear_into(image, addr, chunk, n, tear, Rng(seed))
        if chunk is None:
            for j in range(addr, addr + n):
                image[j] = 0xFF
        else:
            for j in range(n):
                image[addr + j] &= chunk[j]
        return None

    # ---- storage (the file-backed device overrides these) -----------------------------------

    def _load(self, addr, buf):
        n = len(buf)
        buf[:] = self.data[addr : addr + n]

    def _and(self, addr, data):
        d = self.data
        for i in range(len(data)):
            d[addr + i] &= data[i]

    def _erase(self, addr):
        self.data[addr : addr + self.block_size] = b"\xff" * self.block_size

    def _tear(self, addr, data, length):
        if self.tear == "flaky" and data is not None:
            # the program almost finished: all done but 1-3 bits left marginal
            d = self.data
            for i in range(length):
                d[addr + i] &= data[i]
            for _ in range(1 + self.rng.below(3)):
                i = self.rng.below(length)
                bit = 1 << self.rng.below(8)
                if not data[i] & bit:  # a bit the program was taking to 0
                    d[addr + i] |= bit
                    self.weak[addr + i] = self.weak.get(addr + i, 0) | bit
            self.last_tear = "flaky"
            return
        mode = "bits" if self.tear == "flaky" else self.tear
        self.last_tear = tear_into(self.data, addr, data, length, mode, self.rng)

    # ---- the esp32.Partition interface ------------------------------------------------------

    def _range(self, addr, n):
        if addr < 0 or addr > self.size:
            raise OSError(-_ESP_ERR_INVALID_ARG)
        if addr + n > self.size:
            raise OSError(-_ESP_ERR_INVALID_SIZE)

    def _op(self):
        if self.dead:
            raise _cut()
        if self.cut_at is not None and self.ops >= self.cut_at:
            self.dead = True
            return False
        self.ops += 1
        return True

    def readblocks(self, block, buf, offset=0):
        if self.dead:
            raise _cut()
        addr = block * self.block_size + offset
        self._range(addr, len(buf))
        self.reads += 1
        self.read_bytes += len(buf)
        self._load(addr, buf)
        if self.weak:
            for a in self.weak:
                if addr <= a < addr + len(buf):
                    buf[a - addr] &= ~(self.weak[a] & self.rng.next()) & 0xFF

    def writeblocks(self, block, buf, offset=None):
        addr = block * self.block_size
        if offset is None:
            # the simple form erases first, sector by sector, as esp_partition_erase_range
            if len(buf) % self.block_size:
                raise OSError(-_ESP_ERR_INVALID_SIZE)
            self._range(addr, len(buf))
            for i in range(len(buf) // self.block_size):
                self.ioctl(6, block + i)
        else:
            addr += offset
        self._range(addr, len(buf))
        if not self._op():
            self._tear(addr, buf, len(buf))
            raise _cut()
        self._and(addr, buf)
        if self.weak:
            for i in range(len(buf)):
                w = self.weak.get(addr + i)
                if w is not None:
                    w &= buf[i]  # a 0 programmed over a marginal bit settles it
                    if w:
                        self.weak[addr + i] = w
                    else:
                        del self.weak[addr + i]
        self.programs += 1
        self.programmed += len(buf)
        if self.oplog is not None:
            self.oplog.append((addr, bytes(buf)))

    def ioctl(self, op, arg):
        if op in (1, 2, 3):  # init, deinit, sync
            return 0
        if op == 4:
            return self.num_blocks
        if op == 5:
            return self.block_size
        if op == 6:
            if not 0 <= arg < self.num_blocks:
                raise OSError(-_ESP_ERR_INVALID_ARG)
            addr = arg * self.block_size
            if not self._op():
                self._tear(addr, None, self.block_size)
                raise _cut()
            self._erase(addr)
            if self.weak:
                for a in [a for a in self.weak if addr <= a < addr + self.block_size]:
                    del self.weak[a]
            self.erases += 1
            self.erase_counts[arg] += 1
            if self.oplog is not None:
                self.oplog.append((addr, None))
            return 0
        return None


class FileFlash(RawFlash):
    """The same device kept in a host file: it survives the process (the simulation board's
    txlog partition; killing micropython mid-run is a power cut). fresh=True starts erased."""

    def __init__(self, path, num_blocks=64, block_size=_SECTOR, fresh=False):
        import os

        self.path = path
        size = num_blocks * block_size
        if not fresh:
            try:
                fresh = os.stat(path)[6] != size
            except OSError:
                fresh = True
        if fresh:
            with open(path, "wb") as f:
                ff = b"\xff" * _CHUNK
                for _ in range(size // _CHUNK):
                    f.write(ff)
        self.f = open(path, "r+b")
        self._tmp = bytearray(_CHUNK)
        RawFlash.__init__(self, num_blocks, block_size, _ram=False)  # nothing in RAM

    def _load(self, addr, buf):
        self.f.seek(addr)
        self.f.readinto(buf)

    def _and(self, addr, data):
        # read-modify-write in chunks: the file holds what the cells hold
        done = 0
        n = len(data)
        while done < n:
            k = min(_CHUNK, n - done)
            t = memoryview(self._tmp)[:k]
            self.f.seek(addr + done)
            self.f.readinto(t)
            for i in range(k):
                t[i] &= data[done + i]
            self.f.seek(addr + done)
            self.f.write(t)
            done += k
        self.f.flush()

    def _erase(self, addr):
        ff = b"\xff" * _CHUNK
        self.f.seek(addr)
        for _ in range(self.block_size // _CHUNK):
            self.f.write(ff)
        self.f.flush()

    def _tear(self, addr, data, length):
        img = bytearray(length)
        self._load(addr, img)
        self.last_tear = tear_into(img, 0, data, length, self.tear, self.rng)
        self.f.seek(addr)
        self.f.write(img)
        self.f.flush()

    def close(self):
        self.f.close()
