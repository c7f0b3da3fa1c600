# Whitelist of card issuers and the fleet-scale blacklist of card numbers (docs/blacklist.md).
# Imported by MicroPython (lookups) and CPython (tools/params_compile.py builds the same format).
#
# Blacklist layout, in 4096-byte blocks so a lookup touches a known number of flash blocks:
#   block 0           header: magic, k, r, counts, one u32 "fence" per index block (kept in RAM)
#   index blocks      u32 first bucket of every data block, sorted
#   data blocks       12-byte head, a unary bitmap of bucket sizes, then r-bit remainders
# A card number (19 digits, < 2**64) is mixed by a bijection on 64 bits so structured numbers
# spread evenly; the top k bits pick the bucket, the low r = 64 - k bits are stored. Nothing is
# lost (the mix is invertible), so the list is exact: no false positives. k ~ log2(1.44 n) puts
# about 0.7 entries in a bucket, which costs 1 + 1.44 bits of bitmap and 64 - k bits of remainder:
# about 5.8 bytes per entry at a million cards. A lookup reads one index block and one data block.
import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import log

BLOCK = const(4096)
MAGIC = b"TBL1"
_HEAD = const(64)  # fixed part of block 0; fences follow
_DHEAD = const(12)  # data block head: first bucket u32, n buckets u32, n entries u16, pad u16
_PER_INDEX = const(1024)  # u32 entries per index block
_MAX_FENCES = (BLOCK - _HEAD) // 4
M64 = (1 << 64) - 1
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB
MAX_CARD = 10**19 - 1  # 19 decimal digits
OVERLAY_REC = const(9)  # u64 card number + op byte
OVERLAY_MAX = BLOCK // 9  # one block, so the overlay adds at most one read per lookup

_log = log.get("cardlists")

# popcount of every byte value, to count bitmap zeros a byte at a time
_POP = bytes(bin(i).count("1") for i in range(256))


class ListError(ValueError):
    pass


def mix(x):
    """splitmix64's finaliser: a bijection on 64-bit ints (so distinct cards never collide)."""
    x ^= x >> 30
    x = (x * _C1) & M64
    x ^= x >> 27
    x = (x * _C2) & M64
    x ^= x >> 31
    return x


def card_key(card_no):
    """19-digit string, int, or 10-byte BCD (first nibble the pad 0) -> int; ListError if not."""
    if isinstance(card_no, int):
        value = card_no
    else:
        if isinstance(card_no, str):
            text = card_no
        else:
            text = bytes(card_no).hex()
            if len(text) != 20:
                raise ListError("card number must be 10 BCD bytes, got %d" % (len(text) // 2))
        if not text or len(text) > 20 or not text.isdigit():
            raise ListError("card number is not decimal: %r" % (text,))
        value = int(text)
    if value < 0 or value > MAX_CARD:
        raise ListError("card number out of range")
    return value


def choose_k(n):
    """Bucket bits for n entries: about log2(1.44 n), the size that minimises bits per entry."""
    # no int.bit_length() on MicroPython
    m = n * 144 // 100
    k = -1
    while m:
        m >>= 1
        k += 1
    if k < 0:
        k = 0
    return 32 if k > 32 else k


# ---- building (host compiler, and MicroPython tests with seeded lists) ----------------------


class _BitWriter:
    def __init__(self, nbytes):
        self.buf = bytearray(nbytes)
        self.pos = 0

    def put(self, value, nbits):
        # Write most significant bit first, whole bytes at a time where possible.
        pos = self.pos
        end = pos + nbits
        while nbits:
            room = 8 - (pos & 7)
            take = room if room < nbits else nbits
            part = (value >> (nbits - take)) & ((1 << take) - 1)
            self.buf[pos >> 3] |= part << (room - take)
            pos += take
            nbits -= take
        self.pos = end


def _data_block(first, nb, counts, rems, r):
    w = _BitWriter(BLOCK)
    struct.pack_into(">IIHH", w.buf, 0, first, nb, len(rems), 0)
    w.pos = _DHEAD * 8
    for c in counts:
        if c:
            w.put((1 << c) - 1, c)
        w.pos += 1  # the zero that ends the bucket
    for v in rems:
        w.put(v, r)
    return w.buf


def build_blacklist(cards, write, progress=None):
    """Write the blacklist of `cards` (ints or card numbers) through write(bytes), block by block.

    Returns (entries, blocks). `progress(n)` is called with entries written so far (host tqdm).
    Duplicates are dropped. Raises ListError on a bad card number.
    """
    hashes = sorted(set(mix(card_key(c)) for c in cards))
    n = len(hashes)
    k = choose_k(n)
    r = 64 - k
    mask = (1 << r) - 1
    cap = BLOCK * 8 - _DHEAD * 8
    blocks = []  # (first bucket, n buckets, start, end) in hashes
    i = 0
    bucket = 0
    nbuckets = 1 << k
    while bucket < nbuckets:
        first = bucket
        start = i
        used = 0
        while bucket < nbuckets:
            j = i
            while j < n and hashes[j] >> r == bucket:
                j += 1
            cost = (j - i) * (r + 1) + 1
            if used + cost > cap:
                if bucket == first:
                    raise ListError("bucket %d holds too many cards for one block" % bucket)
                break
            used += cost
            i = j
            bucket += 1
            # Jump over a long empty stretch in one step when the next entry is far away.
            if i < n:
                nxt = hashes[i] >> r
                gap = nxt - bucket
                if gap > 1 and used + gap <= cap:
                    used += gap
                    bucket = nxt
            elif bucket < nbuckets and used + (nbuckets - bucket) <= cap:
                used += nbuckets - bucket
                bucket = nbuckets
        blocks.append((first, bucket - first, start, i))
    n_data = len(blocks)
    n_index = (n_data + _PER_INDEX - 1) // _PER_INDEX
    if n_index > _MAX_FENCES:
        raise ListError("blacklist too large")
    head = bytearray(BLOCK)
    head[0:4] = MAGIC
    struct.pack_into(">BBHIII", head, 4, k, r, 0, n, n_data, n_index)
    for x in range(n_index):
        struct.pack_into(">I", head, _HEAD + 4 * x, blocks[x * _PER_INDEX][0])
    write(bytes(head))
    for x in range(n_index):
        idx = bytearray(BLOCK)
        part = blocks[x * _PER_INDEX : (x + 1) * _PER_INDEX]
        for y, b in enumerate(part):
            struct.pack_into(">I", idx, 4 * y, b[0])
        write(bytes(idx))
    for x, (first, nb, start, end) in enumerate(blocks):
        if progress and not x & 15:
            progress(start)
        counts = [0] * nb
        rems = []
        for h in hashes[start:end]:
            counts[(h >> r) - first] += 1
            rems.append(h & mask)
        write(bytes(_data_block(first, nb, counts, rems, r)))
    if progress:
        progress(n)
    return n, 1 + n_index + n_data


def blacklist_bytes(cards):
    out = []
    build_blacklist(cards, out.append)
    return b"".join(out)


# ---- block sources ------------------------------------------------------------------------


class FileBlocks:
    """A file (or a region of one, from `base`) seen as a read-only block device."""

    def __init__(self, f, base=0, length=None):
        self.f = f
        self.base = base
        self.length = length

    def readblocks(self, num, buf, offset=0):
        pos = num * BLOCK + offset
        if self.length is not None and pos + len(buf) > self.length:
            raise ListError("read past the end of the list")
        self.f.seek(self.base + pos)
        got = self.f.readinto(buf)
        if got != len(buf):
            raise ListError("short read at block %d" % num)


class CountingBlocks:
    """Wraps a block source and records which blocks each lookup touched (tests, bench)."""

    def __init__(self, dev):
        self.dev = dev
        self.touched = set()
        self.reads = 0

    def reset(self):
        self.touched = set()
        self.reads = 0

    def readblocks(self, num, buf, offset=0):
        self.reads += 1
        self.touched.add(num)
        self.dev.readblocks(num, buf, offset)


# ---- lookups ------------------------------------------------------------------------------


LOOKUP_BUF = const(512)  # bytes of a block a lookup reads at a time (the window below)


class Blacklist:
    """Exact membership over the block layout above; reads from at most two blocks per lookup.

    `dev` is anything with readblocks(num, buf, offset): an esp32.Partition, a FileBlocks over
    the bundle file, a RAM device in tests. Only block 0's fences stay in RAM. A lookup reads
    its two blocks through a window of len(buf) bytes (LOOKUP_BUF by default): a few more small
    reads instead of a 4 KB buffer held in the heap all day.
    `overlay` is an optional Overlay (the blacklist delta applied since the full list).
    """

    def __init__(self, dev, overlay=None, buf=None):
        self.dev = dev
        self.overlay = overlay
        self.buf = buf if buf is not None else bytearray(LOOKUP_BUF)
        w = len(self.buf)
        if w < _HEAD or w > BLOCK or w & 3:
            raise ValueError("lookup buffer of %d bytes" % w)
        head = self.buf
        dev.readblocks(0, head, 0)
        if bytes(head[0:4]) != MAGIC:
            raise ListError("not a blacklist (magic %r)" % bytes(head[0:4]))
        k, r, _, n, n_data, n_index = struct.unpack_from(">BBHIII", head, 4)
        if k + r != 64 or k > 32 or n_data < 1:
            raise ListError("bad blacklist header k=%d r=%d blocks=%d" % (k, r, n_data))
        if n_index != (n_data + _PER_INDEX - 1) // _PER_INDEX or n_index > _MAX_FENCES:
            raise ListError("index size does not match %d data blocks" % n_data)
        self.k = k
        self.r = r
        self.count = n
        self.n_data = n_data
        self.n_index = n_index
        self.blocks = 1 + n_index + n_data
        fences = []
        wo = -1
        for x in range(n_index):
            o = _HEAD + 4 * x
            if wo < 0 or o + 4 > wo + w:
                wo = self._window(0, o)
            fences.append(struct.unpack_from(">I", head, o - wo)[0])
        self.fences = fences

    def _window(self, block, at):
        """Read the window holding byte `at` of `block` (from `at`, or ending at the block's
        end); -> the window's offset in the block."""
        off = BLOCK - len(self.buf)
        if at < off:
            off = at
        self.dev.readblocks(block, self.buf, off)
        return off

    def _index_search(self, block, count, q):
        """Index of the last u32 of the index block's first `count` that is <= q."""
        buf = self.buf
        w = len(buf)
        lo = 0
        hi = count - 1
        wo = -1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            o = mid * 4
            if wo < 0 or o < wo or o + 4 > wo + w:
                # centred on the probe, so the last steps of the search stay in one window
                at = o - (w >> 1)
                wo = self._window(block, at if at > 0 else 0)
            o -= wo
            v = (buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3]
            if v <= q:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _base_contains(self, key):
        h = mix(key)
        r = self.r
        q = h >> r
        rem = h & ((1 << r) - 1)
        fences = self.fences
        x = len(fences) - 1
        while x > 0 and fences[x] > q:
            x -= 1
        buf = self.buf
        w = len(buf)
        in_index = self.n_data - x * _PER_INDEX
        if in_index > _PER_INDEX:
            in_index = _PER_INDEX
        j = x * _PER_INDEX + self._index_search(1 + x, in_index, q)
        blk = 1 + self.n_index + j
        wo = self._window(blk, 0)
        first, nb, ne, _ = struct.unpack_from(">IIHH", buf, 0)
        d = q - first
        if d < 0 or d >= nb:
            raise ListError("data block %d does not cover bucket %d" % (j, q))
        # Walk the bitmap (each bucket: its entries' ones, then a zero) past d zeros.
        pos = _DHEAD * 8
        limit = (_DHEAD * 8) + ne + nb
        if limit + ne * r > BLOCK * 8:
            raise ListError("data block %d claims %d entries in %d buckets" % (j, ne, nb))
        before = 0  # entries in earlier buckets of this block
        zeros = 0
        while zeros < d:
            if pos >= limit:
                raise ListError("data block %d bitmap is inconsistent" % j)
            a = pos >> 3
            if a - wo >= w:
                wo = self._window(blk, a)
            if pos & 7 == 0:
                z = 8 - _POP[buf[a - wo]]
                if zeros + z < d:
                    zeros += z
                    before += 8 - z
                    pos += 8
                    continue
            if (buf[a - wo] >> (7 - (pos & 7))) & 1:
                before += 1
            else:
                zeros += 1
            pos += 1
        if pos > limit:
            raise ListError("data block %d bitmap is inconsistent" % j)
        # pos is at the first bit of bucket d: count its ones
        count = 0
        while pos < limit:
            a = pos >> 3
            if a - wo >= w:
                wo = self._window(blk, a)
            if not (buf[a - wo] >> (7 - (pos & 7))) & 1:
                break
            count += 1
            pos += 1
        if before + count > ne:
            raise ListError("data block %d bitmap is inconsistent" % j)
        base = limit
        for e in range(before, before + count):
            o = base + e * r
            a = o >> 3
            shift = o & 7
            nbytes = (shift + r + 7) >> 3
            if a < wo or a + nbytes > wo + w:
                wo = self._window(blk, a)
            v = int.from_bytes(bytes(buf[a - wo : a - wo + nbytes]), "big")
            v = (v >> (nbytes * 8 - shift - r)) & ((1 << r) - 1)
            if v == rem:
                return True
            if v > rem:
                return False
        return False

    def contains(self, card_no):
        """True when the card is blacklisted. ListError on a bad number or a damaged list."""
        key = card_key(card_no)
        if self.overlay is not None:
            op = self.overlay.get(key)
            if op is not None:
                return op == 1
        return self._base_contains(key)


def empty_blacklist_bytes():
    return blacklist_bytes(())


# ---- overlay: the deltas applied since the full list ------------------------------------------


def overlay_records(adds, removes):
    """Sorted 9-byte records (card u64, op 1 add / 0 remove) as bytes; adds win over removes."""
    ops = {}
    for c in removes:
        ops[card_key(c)] = 0
    for c in adds:
        ops[card_key(c)] = 1
    out = bytearray(len(ops) * OVERLAY_REC)
    o = 0
    for key in sorted(ops):
        struct.pack_into(">QB", out, o, key, ops[key])
        o += OVERLAY_REC
    return bytes(out)


def merge_overlay(old, adds, removes):
    """Apply a delta (lists of ints) to overlay bytes `old`; the later delta wins per card."""
    ops = {}
    for o in range(0, len(old), OVERLAY_REC):
        key, op = struct.unpack_from(">QB", old, o)
        ops[key] = op
    for c in removes:
        ops[c] = 0
    for c in adds:
        ops[c] = 1
    if len(ops) > OVERLAY_MAX:
        raise ListError("delta overlay would hold %d cards (max %d)" % (len(ops), OVERLAY_MAX))
    out = bytearray(len(ops) * OVERLAY_REC)
    o = 0
    for key in sorted(ops):
        struct.pack_into(">QB", out, o, key, ops[key])
        o += OVERLAY_REC
    return bytes(out)


class Overlay:
    """Sorted 9-byte records in a file (at most one block): one read per lookup."""

    def __init__(self, f, length):
        if length % OVERLAY_REC or length > OVERLAY_MAX * OVERLAY_REC:
            raise ListError("bad overlay length %d" % length)
        self.f = f
        self.n = length // OVERLAY_REC
        self._rec = bytearray(OVERLAY_REC)

    def get(self, key, buf=None):
        """1 (added), 0 (removed) or None (not in the overlay). Reads one record at a time."""
        n = self.n
        if not n:
            return None
        rec = self._rec
        f = self.f
        lo = 0
        hi = n - 1
        while lo <= hi:
            mid = (lo + hi) >> 1
            f.seek(mid * OVERLAY_REC)
            if f.readinto(rec) != OVERLAY_REC:
                raise ListError("short overlay read")
            k, op = struct.unpack_from(">QB", rec, 0)
            if k == key:
                return op
            if k < key:
                lo = mid + 1
            else:
                hi = mid - 1
        return None


# ---- whitelist ----------------------------------------------------------------------------

OK = const(0)
NOT_WHITELISTED = const(1)
NOT_INTERCONNECTED = const(2)
BAD_CARD = const(3)
BLACKLISTED = const(4)
LIST_UNAVAILABLE = const(5)

REASONS = {
    OK: "ok",
    NOT_WHITELISTED: "issuer not on the whitelist",
    NOT_INTERCONNECTED: "card not interconnected",
    BAD_CARD: "malformed card data",
    BLACKLISTED: "card blacklisted",
    LIST_UNAVAILABLE: "blacklist unreadable",
}


def _hex_field(value, nbytes, what):
    if isinstance(value, str):
        text = value.lower()
    elif isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).hex()
    else:
        # An int here would become bytes(int): a negative one raises, a huge one exhausts RAM.
        raise ListError("%s must be hex text or bytes: %r" % (what, value))
    if len(text) != nbytes * 2:
        raise ListError("%s must be %d bytes: %r" % (what, nbytes, value))
    try:
        bytes.fromhex(text)
    except ValueError:
        raise ListError("%s is not hex: %r" % (what, value))
    return text


class Whitelist:
    """Issuer codes (first 4 bytes of the 0x15 issuer id) that this city accepts.

    config: {"local_issuers": ["05212482"], "local_city": "2482", "issuers": ["02002900", ...]}
    A card whose issuer code is local is local; any other issuer must be on the list, and a card
    from another city must also carry the interconnection flag 0001 (0x17 bytes 8-9).
    """

    def __init__(self, config):
        try:
            self.local = set(_hex_field(x, 4, "local issuer") for x in config["local_issuers"])
            self.city = _hex_field(config["local_city"], 2, "local city")
            codes = sorted(set(_hex_field(x, 4, "issuer") for x in config.get("issuers", ())))
        except (KeyError, TypeError) as e:
            raise ListError("whitelist config incomplete: %r" % (e,))
        if not self.local:
            raise ListError("whitelist needs at least one local issuer")
        # 4 bytes per issuer, sorted, searched by halves: a thousand issuers cost 4 KB of heap
        # where a set of strings would take ten times that.
        self.issuers = b"".join(bytes.fromhex(c) for c in codes)
        self.count = len(codes)
        # The same facts as raw bytes for check()'s path that allocates nothing.
        self._local = b"".join(bytes.fromhex(c) for c in sorted(self.local))
        self._n_local = len(self.local)
        self._city = bytes.fromhex(self.city)

    def listed(self, code):
        """True when the 4-byte issuer code (8 hex digits) is on the list."""
        key = bytes.fromhex(code)
        lo = 0
        hi = self.count - 1
        data = self.issuers
        while lo <= hi:
            mid = (lo + hi) >> 1
            v = data[mid * 4 : mid * 4 + 4]
            if v == key:
                return True
            if v < key:
                lo = mid + 1
            else:
                hi = mid - 1
        return False

    def check(self, issuer, city, interconnect):
        """(code, is_local) for the card's issuer id (first 4 of 0x15 bytes 0-7 are used),
        city (0x17 bytes 6-7) and interconnection flag (0x17 bytes 8-9, bytes or int)."""
        if (
            isinstance(issuer, _RAW)
            and len(issuer) >= 4
            and isinstance(city, _RAW)
            and len(city) == 2
            and isinstance(interconnect, int)
            and 0 <= interconnect <= 0xFFFF
        ):
            # What a card read gives (tunion.py): compared byte by byte, no heap on the tap.
            if _find4(self._local, self._n_local, issuer, False):
                return OK, True
            if not _find4(self.issuers, self.count, issuer, True):
                _log.info("issuer %s not on the whitelist", bytes(issuer[:4]).hex())
                return NOT_WHITELISTED, False
            if city[0] == self._city[0] and city[1] == self._city[1]:
                return OK, True
            if interconnect != 1:
                _log.info(
                    "issuer %s city %s: interconnection flag %04x",
                    bytes(issuer[:4]).hex(),
                    bytes(city).hex(),
                    interconnect,
                )
                return NOT_INTERCONNECTED, False
            return OK, False
        return self._check_any(issuer, city, interconnect)

    def _check_any(self, issuer, city, interconnect):
        # Any other form (hex text, memoryview, an int flag out of range): checked and
        # converted field by field, a clear refusal for what is malformed.
        try:
            code = _hex_field(bytes(issuer)[:4], 4, "issuer")
            city = _hex_field(city, 2, "city")
            if isinstance(interconnect, int):
                interconnect = bytes(((interconnect >> 8) & 0xFF, interconnect & 0xFF))
            flag = _hex_field(interconnect, 2, "interconnect flag")
        except (ListError, TypeError, ValueError) as e:
            _log.warning("card refused: %s", e)
            return BAD_CARD, False
        if code in self.local:
            return OK, True
        if not self.listed(code):
            _log.info("issuer %s not on the whitelist", code)
            return NOT_WHITELISTED, False
        if city == self.city:
            return OK, True
        if flag != "0001":
            _log.info("issuer %s city %s: interconnection flag %s", code, city, flag)
            return NOT_INTERCONNECTED, False
        return OK, False


_RAW = (bytes, bytearray)


def _find4(data, count, key, is_sorted):
    """True when the first 4 bytes of key are one of the count 4-byte entries of data. Compared
    as two 16-bit halves (small integers on a 32-bit runtime, no call per entry)."""
    kh = (key[0] << 8) | key[1]
    kl = (key[2] << 8) | key[3]
    if not is_sorted:
        o = 0
        for _ in range(count):
            if ((data[o] << 8) | data[o + 1]) == kh and ((data[o + 2] << 8) | data[o + 3]) == kl:
                return True
            o += 4
        return False
    lo = 0
    hi = count - 1
    while lo <= hi:
        mid = (lo + hi) >> 1
        o = mid * 4
        d = ((data[o] << 8) | data[o + 1]) - kh
        if not d:
            d = ((data[o + 2] << 8) | data[o + 3]) - kl
            if not d:
                return True
        if d < 0:
            lo = mid + 1
        else:
            hi = mid - 1
    return False


def check_blacklist(blacklist, card_no):
    """BLACKLISTED, OK, BAD_CARD or LIST_UNAVAILABLE, logging why; never raises."""
    if blacklist is None:
        return OK
    try:
        hit = blacklist.contains(card_no)
    except ListError as e:
        if "card number" in str(e):
            _log.warning("card refused: %s", e)
            return BAD_CARD
        _log.error("blacklist lookup failed: %s", e)
        return LIST_UNAVAILABLE
    except OSError as e:
        _log.error("blacklist read failed: %s", e)
        return LIST_UNAVAILABLE
    return BLACKLISTED if hit else OK
