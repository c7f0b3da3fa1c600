# A blacklist delta of any size merged with the active list into the free slot (docs/blacklist.md
# "Deltas"), without holding either in RAM. The list stores 64-bit hashes in ascending order
# (cardlists.py), and a merged delta lists its adds and its removes each in ascending hash order,
# so the new list is a merge walk over three sorted streams read through small windows:
#   pass 1  walk, check the delta against the list (an add already listed, a remove not listed,
#           order), count the new list's data blocks (the index size depends on it), and hash the
#           result: SHA-256 over its hashes (8 bytes each, ascending) must equal the digest the
#           signed delta carries. A tampered or mismatched delta stops here, nothing written.
#   pass 2  walk again, writing data blocks, index blocks and block 0 into the free slot.
#   pass 3  read the written list back and hash it again: what is on flash is what was signed.
# Heap: three 4 KB block buffers (read, write, remainders) and small windows; the index blocks are
# made at the end from the data blocks' heads read back.
import gc
import struct

try:
    import hashlib
except ImportError:  # pragma: no cover
    import uhashlib as hashlib

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import cardlists as cl
from cardlists import BLOCK, ListError

_DHEAD_BITS = const(96)
_PER_INDEX = const(1024)
_WIN = const(512)
DIGEST = const(32)


def _bits(buf, o, n):
    a = o >> 3
    shift = o & 7
    nbytes = (shift + n + 7) >> 3
    v = int.from_bytes(bytes(buf[a : a + nbytes]), "big")
    return (v >> (nbytes * 8 - shift - n)) & ((1 << n) - 1)


_ZERO = bytes(256)


def _clear(buf, n):
    mv = memoryview(buf)
    for i in range(0, n, 256):
        m = n - i if n - i < 256 else 256
        mv[i : i + m] = memoryview(_ZERO)[:m]


def _put(buf, pos, value, nbits):
    while nbits:
        room = 8 - (pos & 7)
        take = room if room < nbits else nbits
        part = (value >> (nbits - take)) & ((1 << take) - 1)
        buf[pos >> 3] |= part << (room - take)
        pos += take
        nbits -= take


def list_head(dev, buf):
    """(k, r, n, n_data, n_index) of the list on dev; ListError if block 0 is not one."""
    dev.readblocks(0, buf, 0)
    if bytes(buf[0:4]) != cl.MAGIC:
        raise ListError("not a blacklist")
    k, r, _, n, n_data, n_index = struct.unpack_from(">BBHIII", buf, 4)
    if k + r != 64 or k > 32 or n_data < 1 or n_index != (n_data + _PER_INDEX - 1) // _PER_INDEX:
        raise ListError("bad blacklist header")
    return k, r, n, n_data, n_index


def list_hashes(dev, buf, index=False):
    """Every hash of the list on dev, ascending (a generator reading one block at a time into
    buf, 4096 bytes). ListError on anything inconsistent; with index=True the index blocks and
    block 0's fences are checked against the data blocks too (4-byte reads: the read-back)."""
    k, r, n, n_data, n_index = list_head(dev, buf)
    w4 = bytearray(4) if index else None
    prev = -1
    seen = 0
    nxt = 0  # the bucket the next data block must start at
    top = 1 << k
    for j in range(n_data):
        dev.readblocks(1 + n_index + j, buf, 0)
        first, nb, ne, _ = struct.unpack_from(">IIHH", buf, 0)
        limit = _DHEAD_BITS + ne + nb
        if first != nxt or first + nb > top or limit + ne * r > BLOCK * 8:
            raise ListError("data block %d inconsistent" % j)
        if index:
            dev.readblocks(1 + j // _PER_INDEX, w4, 4 * (j % _PER_INDEX))
            bad = struct.unpack(">I", w4)[0] != first
            if j % _PER_INDEX == 0:
                dev.readblocks(0, w4, 64 + 4 * (j // _PER_INDEX))
                bad = bad or struct.unpack(">I", w4)[0] != first
            if bad:
                raise ListError("index of data block %d inconsistent" % j)
        pos = _DHEAD_BITS
        rpos = limit
        q = first
        e = 0
        while pos < limit:
            if (buf[pos >> 3] >> (7 - (pos & 7))) & 1:
                if e >= ne:
                    raise ListError("data block %d bitmap inconsistent" % j)
                h = (q << r) | _bits(buf, rpos, r)
                if h <= prev:
                    raise ListError("list out of order at block %d" % j)
                prev = h
                rpos += r
                e += 1
                yield h
            else:
                q += 1
            pos += 1
        if e != ne or q != first + nb:
            raise ListError("data block %d bitmap inconsistent" % j)
        nxt = q
        seen += ne
    if seen != n or nxt != top:
        raise ListError("list holds %d cards, its header says %d" % (seen, n))


class Cards:
    """n u64 card numbers at `off` in src (seek/readinto), ascending by hash: next() -> the next
    hash or None. Checks range and order."""

    def __init__(self, src, off, n, what):
        self.src = src
        self.off = off
        self.n = n
        self.i = 0
        self.what = what
        self.buf = bytearray(_WIN)
        self.have = 0
        self.at = 0
        self.prev = -1

    def next(self):
        if self.i >= self.n:
            return None
        if self.at >= self.have:
            want = min(_WIN, (self.n - self.i) * 8)
            self.src.seek(self.off + self.i * 8)
            if self.src.readinto(memoryview(self.buf)[:want]) != want:
                raise ListError("delta cut short")
            self.have = want
            self.at = 0
        c = int.from_bytes(bytes(self.buf[self.at : self.at + 8]), "big")
        self.at += 8
        self.i += 1
        if c > cl.MAX_CARD:
            raise ListError("delta card number out of range")
        h = cl.mix(c)
        if h <= self.prev:
            raise ListError("delta %s not in ascending hash order" % self.what)
        self.prev = h
        return h


def overlay_ops(f, length):
    """The overlay file's (hash, op) pairs, ascending by hash (at most OVERLAY_MAX: RAM)."""
    out = []
    rec = bytearray(cl.OVERLAY_REC)
    f.seek(0)
    for _ in range(length // cl.OVERLAY_REC):
        f.readinto(rec)
        key, op = struct.unpack_from(">QB", rec, 0)
        out.append((cl.mix(key), op))
    out.sort()
    return out


def _effective(old, ov):
    """The list at the delta's base: the slot's hashes with the overlay applied."""
    i = 0
    no = len(ov)
    h = next(old, None)
    while h is not None or i < no:
        o = ov[i][0] if i < no else None
        if o is None or (h is not None and h < o):
            yield h
            h = next(old, None)
        elif h is None or o < h:
            if ov[i][1]:
                yield o
            i += 1
        else:
            if ov[i][1]:
                yield h
            h = next(old, None)
            i += 1


def merged(base, adds, removes):
    """The hashes of (base - removes) + adds, ascending; ListError when the delta does not fit
    the base (an add already listed, a remove not listed)."""
    h = next(base, None)
    a = adds.next()
    r = removes.next()
    while True:
        if r is not None and (h is None or r < h):
            raise ListError("delta removes a card the list does not hold")
        if a is not None and (h is None or a < h):
            yield a
            a = adds.next()
            continue
        if h is None:
            return
        if a == h:
            raise ListError("delta adds a card the list holds already")
        if r == h:
            r = removes.next()
        else:
            yield h
        h = next(base, None)


class Writer:
    """Lays out a list of n hashes, fed in ascending order by bucket (add_bucket), the way
    cardlists.build_blacklist does: buckets never straddle blocks. With dev None it only counts
    the data blocks (pass 1); with a dev it writes them after the n_index index blocks."""

    def __init__(self, n, dev=None, n_index=0, bufs=None):
        self.n = n
        self.k = cl.choose_k(n)
        self.r = 64 - self.k
        self.top = 1 << self.k
        self.cap = BLOCK * 8 - _DHEAD_BITS
        self.dev = dev
        self.n_index = n_index
        self.j = 0  # data blocks closed
        self.first = 0
        self.bucket = 0
        self.used = 0
        self.ne = 0
        self.fences = []
        if dev is not None:
            # two zeroed 4 KB buffers (apply makes them before pass 1 fragments the heap)
            self.out, self.rems = bufs or (bytearray(BLOCK), bytearray(BLOCK))
            self.rp = 0
            for b in range(1 + n_index):  # in order: a file grows without holes
                dev.writeblocks(b, self.out)

    def _empties_to(self, q):
        while self.bucket < q:
            room = self.cap - self.used
            if room <= 0:
                self._close()
                continue
            take = q - self.bucket
            if take > room:
                take = room
            self.used += take
            self.bucket += take

    def add_bucket(self, q, hs):
        self._empties_to(q)
        c = len(hs)
        r = self.r
        cost = c * (r + 1) + 1
        if self.used + cost > self.cap:
            if self.bucket > self.first:
                self._close()
            if cost > self.cap:
                raise ListError("bucket %d holds too many cards for one block" % q)
        if self.dev is not None:
            pos = _DHEAD_BITS + self.ne + (self.bucket - self.first)
            for _ in range(c):
                self.out[pos >> 3] |= 0x80 >> (pos & 7)
                pos += 1
            mask = (1 << r) - 1
            for h in hs:
                _put(self.rems, self.rp, h & mask, r)
                self.rp += r
        self.ne += c
        self.used += cost
        self.bucket = q + 1

    def _close(self):
        nb = self.bucket - self.first
        if self.dev is not None:
            out = self.out
            struct.pack_into(">IIHH", out, 0, self.first, nb, self.ne, 0)
            at = _DHEAD_BITS + self.ne + nb
            a = at >> 3
            s = at & 7
            nbytes = (self.rp + 7) >> 3
            rems = self.rems
            if s == 0:
                # a memoryview: a slice of rems would copy up to 4 KB (one more block on the heap)
                out[a : a + nbytes] = memoryview(rems)[:nbytes]
            else:
                for i in range(nbytes):
                    x = rems[i]
                    out[a + i] |= x >> s
                    if a + i + 1 < BLOCK:
                        out[a + i + 1] |= (x << (8 - s)) & 0xFF
            self.dev.writeblocks(1 + self.n_index + self.j, out)
            _clear(out, BLOCK)
            _clear(rems, nbytes)
            self.rp = 0
        if self.j % _PER_INDEX == 0:
            self.fences.append(self.first)
        self.j += 1
        self.first = self.bucket
        self.used = 0
        self.ne = 0

    def finish(self):
        """Close the last block; with a dev write the last index block and block 0 (header and
        fences). -> data block count."""
        self._empties_to(self.top)
        if self.bucket > self.first:
            self._close()
        if self.dev is not None:
            if (self.j + _PER_INDEX - 1) // _PER_INDEX != self.n_index:
                raise ListError("index size changed between passes")
            self._index()
            head = self.out
            _clear(head, BLOCK)
            head[0:4] = cl.MAGIC
            struct.pack_into(">BBHIII", head, 4, self.k, self.r, 0, self.n, self.j, self.n_index)
            for x, f in enumerate(self.fences):
                struct.pack_into(">I", head, 64 + 4 * x, f)
            self.dev.writeblocks(0, head)
        return self.j

    def _index(self):
        # Each index block from the heads of the data blocks it covers, read back 4 bytes at a
        # time: no 4 KB index buffer held through the walk (the read-back checks it).
        out = self.out
        mv = memoryview(out)
        base = 1 + self.n_index
        for i in range(self.n_index):
            _clear(out, BLOCK)
            for x in range(min(_PER_INDEX, self.j - i * _PER_INDEX)):
                self.dev.readblocks(base + i * _PER_INDEX + x, mv[4 * x : 4 * x + 4], 0)
            self.dev.writeblocks(1 + i, out)


def feed(writer, hashes, digest=None, tick=None):
    """Group ascending hashes by the writer's bucket and feed them; -> count. tick() (the
    watchdog's feed) is called every TICK_CARDS cards: a merge of a large delta runs for minutes
    on an ESP32 (docs/blacklist.md), far longer than the watchdog waits."""
    r = writer.r
    q = -1
    group = []
    count = 0
    for h in hashes:
        if tick is not None and not count % TICK_CARDS:
            tick()
        if digest is not None:
            digest.update(h.to_bytes(8, "big"))
        b = h >> r
        if b != q:
            if group:
                writer.add_bucket(q, group)
            q = b
            group = []
        group.append(h)
        count += 1
    if group:
        writer.add_bucket(q, group)
    return count


def result_digest(cards):
    """(count, SHA-256) of a list of cards as a merged delta's trailer carries them (host side:
    params_compile; the device computes the same over what it merges)."""
    d = hashlib.sha256()
    hs = sorted(set(cl.mix(cl.card_key(c)) for c in cards))
    for h in hs:
        d.update(h.to_bytes(8, "big"))
    return len(hs), d.digest()


TICK_CARDS = const(2048)  # about 0.3 G instructions apart on micropython32: seconds on an ESP32


def apply(old_dev, ov, src, at, n_add, n_rem, result, new_dev, slot_blocks, feed_dog=None):
    """Merge the delta (n_add then n_rem cards at `at` in src) with the list on old_dev and the
    overlay pairs ov into new_dev. result: the signed (count, SHA-256) of the new list.
    -> (cards, bytes) of the new list. ListError (nothing activated) when the delta does not fit
    the list or the result is not what was signed."""
    n, want = result
    # All three 4 KB buffers now, on the heap the caller just collected: after pass 1's garbage
    # a 4 KB hole may no longer be found on an ESP32-sized heap.
    buf = bytearray(BLOCK)
    bufs = (bytearray(BLOCK), bytearray(BLOCK))

    def walk():
        base = _effective(list_hashes(old_dev, buf), ov)
        adds = Cards(src, at, n_add, "adds")
        removes = Cards(src, at + 8 * n_add, n_rem, "removes")
        return merged(base, adds, removes)

    d = hashlib.sha256()
    w = Writer(n)
    got = feed(w, walk(), d, feed_dog)
    if got != n:
        raise ListError("merged list holds %d cards, the delta says %d" % (got, n))
    if d.digest() != want:
        raise ListError("merged list does not match the signed digest")
    n_data = w.finish()
    n_index = (n_data + _PER_INDEX - 1) // _PER_INDEX
    blocks = 1 + n_index + n_data
    if blocks > slot_blocks:
        raise ListError("merged list: %d blocks, the slot has %d" % (blocks, slot_blocks))
    if feed_dog is not None:
        feed_dog()
    w = None
    gc.collect()
    w = Writer(n, new_dev, n_index, bufs)
    feed(w, walk(), None, feed_dog)
    w.finish()
    w = None
    if feed_dog is not None:
        feed_dog()
    d = hashlib.sha256()
    k = 0
    for h in list_hashes(new_dev, buf, True):
        d.update(h.to_bytes(8, "big"))
        k += 1
        if feed_dog is not None and not k % TICK_CARDS:
            feed_dog()
    if d.digest() != want:
        raise ListError("merged list read back differs from what was written")
    return n, blocks * BLOCK
