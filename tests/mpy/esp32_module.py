# A stand-in for the ESP32 port's `esp32` module (MicroPython v1.27): Partition and NVS, as the
# port implements them (ports/esp32/esp32_partition.c, esp32_nvs.c), over a simulated NOR flash.
#   use_table(rows) / use_csv(path)   the partition table of the module under test
# Partition: find(type, subtype, label, block_size), Partition(label | BOOT | RUNNING), info(),
# readblocks(block, buf, offset=0), writeblocks(block, buf) erases the 4 KiB sectors it covers
# first (so buf must cover whole sectors), writeblocks(block, buf, offset) only programs (NOR: bits
# go from 1 to 0, never back), ioctl 1-6 (6 erases one 4 KiB block; -EINVAL for other block sizes).
# Errors are the OSErrors of check_esp_err: ESP_ERR_INVALID_ARG for an unaligned erase,
# ESP_ERR_INVALID_SIZE past the partition's end. Flash content survives every reset and power cut.
# NVS: set_i32/get_i32/set_blob/get_blob/erase_key/commit; uncommitted changes die with a reset.
_SECTOR = 4096
_ESP_ERR_INVALID_ARG = 0x102
_ESP_ERR_INVALID_SIZE = 0x104
_ESP_ERR_NVS_NOT_FOUND = 0x1102

TYPES = {"app": 0, "data": 1}
SUBTYPES = {
    "factory": 0x00,
    "ota_0": 0x10,
    "ota_1": 0x11,
    "ota": 0x00,
    "phy": 0x01,
    "nvs": 0x02,
    "coredump": 0x03,
    "nvs_keys": 0x04,
    "efuse": 0x05,
    "undefined": 0x06,
    "esphttpd": 0x80,
    "fat": 0x81,
    "spiffs": 0x82,
    "littlefs": 0x83,
}


def _err(code, name):
    return OSError(-code, name)


def _num(text):
    text = text.strip()
    if not text:
        return None
    mult = 1
    if text[-1] in "Kk":
        mult, text = 1024, text[:-1]
    elif text[-1] in "Mm":
        mult, text = 1024 * 1024, text[:-1]
    return int(text, 0) * mult


class _Part:
    def __init__(self, label, ptype, subtype, address, size):
        self.label = label
        self.type = ptype
        self.subtype = subtype
        self.address = address
        self.size = size
        self.sectors = {}  # sector index -> bytearray; absent = erased (all 0xFF)


_table = []


def use_table(rows):
    """rows: (label, type, subtype, size) in flash order from 0x9000; replaces the flash."""
    del _table[:]
    addr = 0x9000
    for label, ptype, subtype, size in rows:
        if ptype == TYPES["app"]:
            addr = (addr + 0xFFFF) & ~0xFFFF  # apps sit on 64 KiB boundaries
        _table.append(_Part(label, ptype, subtype, addr, size))
        addr += size
    return _table


def use_csv(path, flash_size=None):
    """An ESP-IDF partition table CSV (name, type, subtype, offset, size, flags)."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            cells = [c.strip() for c in line.split(",")]
            ptype = TYPES.get(cells[1], None)
            ptype = _num(cells[1]) if ptype is None else ptype
            sub = SUBTYPES.get(cells[2], None)
            sub = _num(cells[2]) if sub is None else sub
            rows.append((cells[0], ptype, sub, _num(cells[3]), _num(cells[4])))
    del _table[:]
    addr = 0x9000
    for label, ptype, sub, offset, size in rows:
        if offset is None:
            align = 0x10000 if ptype == 0 else _SECTOR
            offset = (addr + align - 1) & ~(align - 1)
        _table.append(_Part(label, ptype, sub, offset, size))
        addr = offset + size
    if flash_size is not None and addr > flash_size:
        raise ValueError(
            "partition table ends at 0x%x, past the %d MB flash" % (addr, flash_size >> 20)
        )
    return _table


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=_SECTOR):
        if isinstance(id, int):
            if id not in (0, 1):
                raise ValueError
            apps = [p for p in _table if p.type == 0]
            part = apps[0] if apps else None
        else:
            part = None
            for want in (0, 1):
                for p in _table:
                    if p.type == want and p.label == id:
                        part = part or p
        if part is None:
            raise OSError(2)  # ENOENT
        self._p = part
        self.block_size = block_size
        # Smaller blocks than a sector use a sector cache from the heap, as the port does.
        self._cache = bytearray(_SECTOR) if block_size < _SECTOR else None

    @staticmethod
    def find(type=0, subtype=0xFF, label=None, block_size=_SECTOR):
        found = []
        for p in _table:
            if p.type != type or (subtype != 0xFF and p.subtype != subtype):
                continue
            if label is not None and p.label != label:
                continue
            found.append(Partition(p.label, block_size))
        return found

    def info(self):
        p = self._p
        return (p.type, p.subtype, p.address, p.size, p.label, False)

    def __repr__(self):
        p = self._p
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=0>" % (
            p.type,
            p.subtype,
            p.address,
            p.size,
            p.label,
        )

    # ---- the flash itself (esp_partition_read / write / erase_range) ----
    def _range(self, offset, n):
        if offset < 0 or offset + n > self._p.size:
            raise _err(_ESP_ERR_INVALID_SIZE, "ESP_ERR_INVALID_SIZE")

    def _read(self, offset, mv):
        n = len(mv)
        self._range(offset, n)
        i = 0
        while i < n:
            sec, off = divmod(offset + i, _SECTOR)
            k = min(n - i, _SECTOR - off)
            data = self._p.sectors.get(sec)
            if data is None:
                for j in range(i, i + k):
                    mv[j] = 0xFF
            else:
                mv[i : i + k] = data[off : off + k]
            i += k

    def _program(self, offset, buf):
        n = len(buf)
        self._range(offset, n)
        i = 0
        while i < n:
            sec, off = divmod(offset + i, _SECTOR)
            k = min(n - i, _SECTOR - off)
            data = self._p.sectors.get(sec)
            if data is None:
                data = self._p.sectors[sec] = bytearray(b"\xff" * _SECTOR)
            for j in range(k):
                data[off + j] &= buf[i + j]  # NOR: a program only clears bits
            i += k

    def _erase(self, offset, n):
        if offset % _SECTOR or n % _SECTOR:
            raise _err(_ESP_ERR_INVALID_ARG, "ESP_ERR_INVALID_ARG")
        self._range(offset, n)
        for sec in range(offset // _SECTOR, (offset + n) // _SECTOR):
            self._p.sectors.pop(sec, None)

    # ---- the block device interface ----
    def readblocks(self, block, buf, offset=0):
        self._read(block * self.block_size + offset, memoryview(buf))

    def writeblocks(self, block, buf, offset=None):
        addr = block * self.block_size
        if offset is None:
            n = len(buf)
            if self.block_size >= _SECTOR:
                self._erase(addr, n)
            else:
                # Sub-sector blocks: keep what shares the sectors around the write.
                a = addr - addr % _SECTOR
                while a < addr + n:
                    self._read(a, memoryview(self._cache))
                    self._erase(a, _SECTOR)
                    lo = max(addr - a, 0)
                    hi = min(addr + n - a, _SECTOR)
                    if lo:
                        self._program(a, memoryview(self._cache)[:lo])
                    if hi < _SECTOR:
                        self._program(a + hi, memoryview(self._cache)[hi:])
                    a += _SECTOR
        else:
            addr += offset
        self._program(addr, buf)

    def ioctl(self, op, arg):
        if op in (1, 2, 3):
            return 0
        if op == 4:
            return self._p.size // self.block_size
        if op == 5:
            return self.block_size
        if op == 6:
            if self.block_size != _SECTOR:
                return -22  # -EINVAL
            self._erase(arg * _SECTOR, _SECTOR)
            return 0
        return None

    def erased_sectors(self):
        """How many sectors hold data (tests)."""
        return len(self._p.sectors)


# ---- NVS ----
_nvs = {}  # namespace -> {key: value}, committed


class NVS:
    def __init__(self, namespace):
        self.ns = namespace
        self._pending = dict(_nvs.get(namespace, {}))

    def _get(self, key):
        if key not in self._pending:
            raise _err(_ESP_ERR_NVS_NOT_FOUND, "ESP_ERR_NVS_NOT_FOUND")
        return self._pending[key]

    def set_i32(self, key, value):
        if not -0x80000000 <= value <= 0x7FFFFFFF:
            raise OverflowError("overflow converting long int to machine word")
        self._pending[key] = value

    def get_i32(self, key):
        v = self._get(key)
        if not isinstance(v, int):
            raise _err(0x1104, "ESP_ERR_NVS_TYPE_MISMATCH")
        return v

    def set_blob(self, key, value):
        self._pending[key] = bytes(value)

    def get_blob(self, key, buf):
        v = self._get(key)
        if isinstance(v, int):
            raise _err(0x1104, "ESP_ERR_NVS_TYPE_MISMATCH")
        if len(buf) < len(v):
            raise _err(0x1105, "ESP_ERR_NVS_INVALID_LENGTH")
        buf[: len(v)] = v
        return len(v)

    def erase_key(self, key):
        self._get(key)
        del self._pending[key]

    def commit(self):
        _nvs[self.ns] = dict(self._pending)


def wipe():
    """A factory-fresh flash and NVS (tests)."""
    _nvs.clear()
    for p in _table:
        p.sectors = {}
