# A scratch transaction log on the board's own flash, for `make board-bench` (issue 21 point 2:
# the log's writes timed on the board). The bench must never leave anything the validator's log
# would read as its own, even if the power goes in the middle of it, so:
# - it only uses sectors of the "txlog" partition that are wholly erased (a run of them, found by
#   reading), and erases them again at the end;
# - the bench's log sees sectors of 63 slots, each written one slot along (its slot k at the
#   sector's slot k+1): the sector's slot 0, where the validator's log keeps its header, stays
#   erased. The validator's log then takes such a sector for one it has not looked at yet, reads
#   it whole before its first use, finds it not erased and erases it (firmware/txlog.py
#   _UNKNOWN, _prepare); it never reads the bench's records as its own, and never counts their
#   sequence numbers (it does that only for sectors with something in slot 0). Program sizes
#   and counts are the log's own, so the times are.
import time

_SLOT = 64
_SECTOR = 4096
_SLOTS = _SECTOR // _SLOT - 1  # the bench log's slots in a sector: all but slot 0
_BLOCK_SIZE = 5
_BLOCK_COUNT = 4
_BLOCK_ERASE = 6


class Window:
    """A block device over `count` sectors of `part` from `first`: blocks of 63 slots, each at
    the sector's next slot (slot 0 never written)."""

    def __init__(self, part, first, count, erase_us=None):
        self.part = part
        self.first = first
        self.count = count
        self.erase_us = erase_us if erase_us is not None else []

    def readblocks(self, block, buf, offset=0):
        self._check(block, offset, len(buf))
        self.part.readblocks(self.first + block, buf, offset + _SLOT)

    def writeblocks(self, block, buf, offset=0):
        # Always the port's program form (three arguments): never an implicit erase.
        self._check(block, offset, len(buf))
        self.part.writeblocks(self.first + block, buf, offset + _SLOT)

    def ioctl(self, op, arg):
        if op == _BLOCK_COUNT:
            return self.count
        if op == _BLOCK_SIZE:
            return _SLOTS * _SLOT
        if op == _BLOCK_ERASE:
            self._check(arg, 0, 0)
            t0 = time.ticks_us()
            self.part.ioctl(_BLOCK_ERASE, self.first + arg)
            self.erase_us.append(time.ticks_diff(time.ticks_us(), t0))
            return 0
        return None

    def _check(self, block, offset, n):
        if not 0 <= block < self.count or offset < 0 or offset + n > _SLOTS * _SLOT:
            raise OSError(22)  # EINVAL: outside the window

    def erase_all(self):
        """Give the sectors back as the bench found them: erased (timed)."""
        for b in range(self.count):
            self.ioctl(_BLOCK_ERASE, b)


def _erased(part, sector, buf):
    part.readblocks(sector, buf, 0)
    for b in buf:
        if b != 0xFF:
            return False
    return True


def find(count=3):
    """-> (Window, None) over `count` wholly erased sectors of the "txlog" partition (the
    highest such run), or (None, the reason the log's flash cannot be timed)."""
    try:
        import esp32

        found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="txlog")
    except (ImportError, AttributeError, OSError) as e:
        return None, "no esp32.Partition on this port (%s)" % e
    if not found:
        return None, "no \"txlog\" partition in this board's table (the validator's have one)"
    part = found[0]
    n = part.ioctl(_BLOCK_COUNT, 0)
    if part.ioctl(_BLOCK_SIZE, 0) != _SECTOR:
        return None, "txlog partition block size is not 4096"
    buf = bytearray(_SECTOR)
    run = 0
    for s in range(n - 1, -1, -1):
        run = run + 1 if _erased(part, s, buf) else 0
        if run == count:
            return Window(part, s, count), None
    return None, "the txlog partition has no %d erased sectors in a row" % count
