# Large parameter bundles over the air (docs/parameters.md "Chunked download"): a fleet-signed
# bundle is fetched with ranged requests and streamed through params' Receiver (the blacklist
# into the inactive slot, the rest into a littlefs file) without ever being held in RAM.
#
# The manifest comes first and is checked (signature, key, scope, window, version against the
# floor) before a single body byte is taken; then every 4 KiB chunk is hashed as it streams and
# compared with its manifest hash at its last byte. A bad chunk is fetched again; a lost
# connection or a power cut resumes from the last verified chunk: a checkpoint (`dl.state`,
# written every few chunks after flushing the file) names where the download was, and resuming
# re-hashes what was stored after it, so nothing verified is fetched twice. The finished file
# goes through params' ordinary install (everything verified once more, then the atomic switch).
#
#   dl = chunkdl.resume(p, fetch, now) or chunkdl.Download(p, fetch, version, total, now)
#   ok, why = await dl.run()
# fetch(offset, length, sink) -> awaitable: calls sink(memoryview) with the bytes of that range,
# in order, any piece size; raises on a lost connection (transport errors) or short data.
import hashlib
import json
import os

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import bundle
import log
import params

_log = log.get("chunkdl")

DL_STATE = params.DL_STATE
_CHECKPOINT = const(16)  # chunks between checkpoints (64 KiB)
WINDOW = const(65536)  # bytes per ranged request: headers stay under 1% of the bytes moved
_BUF = const(512)
_BLOCK = const(4096)


class ChunkError(ValueError):
    """Chunk i did not match its hash: fetch again from its start."""

    def __init__(self, i, end=0):
        super().__init__("chunk %d does not match its hash" % i)
        self.chunk = i
        self.end = end  # where it was found: failures count until a fetch gets past it


class _Refused(ValueError):
    """The bundle itself is refused (manifest, scope, version): no point fetching more."""


class ChunkReceiver(params.Receiver):
    """A Receiver that checks the manifest as soon as it is complete and every chunk as it
    completes, and can be checkpointed and resumed."""

    def __init__(self, p, total, now, resume=False):
        self.p = p
        self.total = total
        self.now = now
        self.pos = 0
        self.head = bytearray(bundle.HEADER)
        self.mhead = bytearray(bundle.MHEAD)
        self.body_at = None
        self.failed = None
        self.hole = None
        self.slot = None
        self.blk = None
        self.fill = 0
        self.nblk = 0
        self.m = None
        self.sha = None
        self.want = bytearray(bundle.HASH_LEN)
        self.buf = None  # 512 bytes while the manifest or stored chunks are checked
        self.plan_failed = None  # the body header's refusal, until its chunk's hash confirms it
        self.f = open(p._p(params.INCOMING), "r+b" if resume else "w+b")

    # -- positions ------------------------------------------------------------------------

    def _fpos(self, pos):
        """Where logical byte `pos` lives in the littlefs file (the hole is not there)."""
        if self.hole and pos >= self.hole[0] + self.hole[1]:
            return pos - self.hole[1]
        return pos

    # -- streaming ------------------------------------------------------------------------

    def write(self, data):
        """Take bytes at self.pos. Raises ChunkError (fetch again from self.pos, which was
        rewound to the bad chunk's start) or _Refused (the bundle is refused)."""
        mv = memoryview(data)
        while len(mv):
            if self.failed:
                raise _Refused(self.failed)
            pos = self.pos
            if self.m is None:
                n = min(len(mv), self._manifest_len() - pos)
                self._put(mv[:n])
                if self.pos == self._manifest_len() and self.body_at is not None:
                    self._check_manifest()
            else:
                i = (pos - self.m.len) // self.m.chunk
                start, length = self.m.chunk_span(i)
                n = min(len(mv), start + length - pos)
                if pos == start:
                    self.sha = hashlib.sha256()
                self.sha.update(mv[:n])
                self._put(mv[:n])
                if self.pos == start + length:
                    self._end_chunk(i, start)
            mv = mv[n:]

    def _manifest_len(self):
        return self.body_at if self.body_at else bundle.MHEAD

    def _put(self, mv):
        # params.Receiver.write routes to the file or the slot; keep the file position right
        # (it is also read for chunk hashes).
        self.f.seek(self._fpos(self.pos))
        params.Receiver.write(self, mv)
        if self.body_at == 0 and not self.failed:
            self.failed = "a legacy bundle cannot be fetched in chunks"

    def _check_manifest(self):
        self.f.flush()
        try:
            m = bundle.verify_manifest(self.f, self.total, self.p.trust, self.now, bytearray(_BUF))
            self.p._check_version(m.version, m.key_id)
        except (bundle.BundleError, params.ParamsError) as e:
            if str(e).startswith("bad signature"):
                # Damaged on the way as likely as forged: fetch it again (a few times).
                end = self.pos
                self.rewind(0)
                self.body_at = None
                raise ChunkError(-1, end)
            self.failed = str(e)
            raise _Refused(self.failed)
        self.m = m
        _log.info(
            "manifest %d: %d chunks, %d bytes, %s", m.version, m.n_chunks, m.total, m.scope()
        )

    def _end_chunk(self, i, start):
        self.f.seek(bundle.MHEAD + bundle.HASH_LEN * i)
        if self.f.readinto(self.want) != bundle.HASH_LEN or self.sha.digest() != self.want:
            end = self.pos
            self.rewind(start)
            raise ChunkError(i, end)
        self.sha = None
        if self.plan_failed:
            # the body header was in this chunk and the hash says it came as signed: refuse
            self.failed = self.plan_failed
            raise _Refused(self.failed)

    def _plan(self):
        # The body header routes the blacklist (params.Receiver._plan); a header that fails
        # there may be damage in transit, which the hash of its chunk tells: refuse only then.
        params.Receiver._plan(self)
        self.plan_failed = self.failed
        self.failed = None

    def rewind(self, pos):
        """Back to `pos` (a chunk start): the slot block being filled restarts there too."""
        self.pos = pos
        self.sha = None
        self.plan_failed = None
        if self.hole and self.hole[0] <= pos < self.hole[0] + self.hole[1]:
            rel = pos - self.hole[0]
            self.nblk = rel // 4096
            self.fill = 0

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, version):
        m = self.m
        if m is None or self.pos < sum(m.chunk_span(0)):
            # The body header's chunk is not verified yet: the plan routed by it (hole, slot)
            # may come from damaged bytes, and a resume would trust it. No checkpoint yet.
            return
        self.f.flush()
        st = {
            "v": version,
            "total": self.total,
            "pos": self.pos,
            "body_at": self.body_at,
            "hole": list(self.hole) if self.hole else None,
            "slot": self.slot,
        }
        tmp = self.p._p(DL_STATE + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(st))
        os.rename(tmp, self.p._p(DL_STATE))

    def restore(self, st):
        """Continue after a checkpoint: re-read the heads, re-check the manifest, then take every
        chunk stored after the checkpoint that still matches its hash."""
        self.f.seek(0)
        self.f.readinto(self.mhead)
        self.body_at = st["body_at"]
        self.hole = tuple(st["hole"]) if st["hole"] else None
        self.slot = st["slot"]
        self.pos = self.body_at
        self._check_manifest()
        self.f.seek(self.body_at)
        if self.f.readinto(self.head) != bundle.HEADER:
            raise _Refused("stored header lost")
        m = self.m
        pos = max(st["pos"], m.len)
        pos = m.chunk_span((pos - m.len) // m.chunk)[0] if pos < m.total else m.total
        dev = self.p.slots[self.slot] if self.hole else None
        src = params._Logical(self.f, dev, *(self.hole or (0, 0)))
        buf = bytearray(_BUF)
        size = os.stat(self.p._p(params.INCOMING))[6]
        while pos < m.total:
            i = (pos - m.len) // m.chunk
            start, length = m.chunk_span(i)
            if self._fpos(start + length) > size and not self._in_hole(start):
                break
            if not bundle.chunk_ok(src, m, i, buf):
                break
            pos = start + length
        self.rewind(pos)
        return pos

    def _block_buffer(self):
        return None

    def _to_slot(self, mv):
        # No 4 KB block buffer: erase a block when its first byte comes, then program each
        # piece where it belongs (esp32.Partition: ioctl 6 erases, writeblocks with an offset
        # only programs), so the download's heap stays small.
        dev = self.p.slots[self.slot]
        if self.fill == 0:
            dev.ioctl(6, self.nblk)
        n = min(len(mv), _BLOCK - self.fill)
        dev.writeblocks(self.nblk, mv[:n], self.fill)
        self.fill += n
        if self.fill == _BLOCK:
            self.nblk += 1
            self.fill = 0
        return n

    def _in_hole(self, pos):
        return bool(self.hole) and self.hole[0] <= pos < self.hole[0] + self.hole[1]


class Download:
    def __init__(self, p, fetch, version, total, now, rx=None, window=WINDOW):
        self.p = p
        self.fetch = fetch
        self.version = version
        self.total = total
        self.now = now
        self.window = window
        self.rx = rx
        self.bytes = 0  # bytes taken from the network (the ratio figure)
        self.retries = 0
        self.err = None

    async def run(self, max_failures=8):
        """Fetch until done. -> (True, "activated" | "pending"), (False, reason) when refused,
        or raises the transport's error after `max_failures` failures in a row (resume later:
        the checkpoint stays)."""
        p = self.p
        if self.rx is None:
            if self.total > bundle.MAX_BODY + 65536:
                return False, "bundle of %d bytes is too large" % self.total
            self.rx = ChunkReceiver(p, self.total, self.now)
        rx = self.rx
        failures = 0  # network failures in a row: past max_failures the error is raised
        bad = 0  # hash failures since a fetch got past the bad chunk: past it, refused
        bad_end = 0  # a fetch ending before this did not get past the last bad chunk
        since = 0
        while rx.pos < self.total:
            start = rx.pos
            length = min(self.window, self.total - start)

            self.err = None
            try:
                await self.fetch(start, length, self._sink)
                if self.err is None and rx.pos != start + length:
                    raise ValueError("range %d+%d: %d bytes" % (start, length, rx.pos - start))
                if self.err is not None:
                    raise self.err
                failures = 0
                if rx.pos >= bad_end:
                    bad = 0
            except _Refused as e:
                return self._give_up(str(e))
            except ChunkError as e:
                _log.warning("%s: fetched again", e)
                bad_end = max(bad_end, e.end)
                bad += 1
                self.retries += 1
                if bad > max_failures:
                    return self._give_up("chunk %d keeps failing its hash" % e.chunk)
                continue
            except Exception as e:  # noqa: BLE001 - the network: resume from the verified chunk
                failures += 1
                self.retries += 1
                self._back_to_verified()
                if failures > max_failures:
                    if rx.m is not None:
                        rx.checkpoint(self.version)
                    raise
                _log.info("download %d cut at %d (%r): resuming", self.version, rx.pos, e)
                continue
            since += 1
            if rx.m is not None and since >= max(1, _CHECKPOINT * rx.m.chunk // self.window):
                rx.checkpoint(self.version)
                since = 0
        # The checkpoint stays until the install is over: a cut while it verifies (or merges a
        # delta, firmware/blmerge.py) resumes with the stored bundle, not a new download.
        out = rx.finish(self.now)
        self._drop_state()
        return out

    def _sink(self, mv):
        # Called by the transport while it reads (maybe inside the modem's reader): it never
        # raises; the first error stops taking bytes and is raised once the fetch returns.
        if self.err is not None:
            return
        self.bytes += len(mv)
        try:
            self.rx.write(mv)
        except Exception as e:  # noqa: BLE001 - handed to run()
            self.err = e

    def _back_to_verified(self):
        rx = self.rx
        m = rx.m
        if m is None:
            rx.rewind(0)
            rx.body_at = None
            return
        if rx.pos > m.len:
            i = (rx.pos - m.len) // m.chunk
            start = m.chunk_span(i)[0]
            if rx.pos != start:
                rx.rewind(start)

    def _give_up(self, why):
        _log.warning("bundle %d refused: %s", self.version, why)
        self.rx.abort()
        self._drop_state()
        return False, why

    def _drop_state(self):
        try:
            os.remove(self.p._p(DL_STATE))
        except OSError:
            pass


def pending(p):
    """The checkpoint of an unfinished download, or None."""
    try:
        with open(p._p(DL_STATE)) as f:
            st = json.loads(f.read())
        os.stat(p._p(params.INCOMING))
        return st
    except (OSError, ValueError):
        return None


def resume(p, fetch, now, version=None):
    """A Download continuing the checkpointed one (None when there is none, or it is for
    another version than `version`, or its stored part no longer checks: then it is dropped)."""
    st = pending(p)
    if st is None or (version is not None and st.get("v") != version):
        _discard(p)
        return None
    try:
        if st["slot"] is not None and p._slot_of((p.state or {}).get("active")) == st["slot"]:
            raise ValueError("its slot became the active one")
        rx = ChunkReceiver(p, st["total"], now, resume=True)
        try:
            rx.restore(st)
        except Exception:
            rx.f.close()
            raise
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint: start again
        _log.warning("download %s not resumed: %r", st.get("v"), e)
        _discard(p)
        return None
    _log.info("download %d resumes at %d of %d", st["v"], rx.pos, st["total"])
    return Download(p, fetch, st["v"], st["total"], now, rx)


def _discard(p):
    for name in (DL_STATE, params.INCOMING):
        try:
            os.remove(p._p(name))
        except OSError:
            pass
