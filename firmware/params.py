# Active parameters: installs verified bundles and switches to them atomically
# (docs/parameters.md). The single commit point is renaming a fresh `state.tmp` over `state` on
# littlefs, which littlefs makes atomic: after a power cut the validator wakes with the old or
# the new parameters, never a mix. Files no state names are leftovers and are removed at load.
#
# Where the full blacklist lives:
# - slot mode (a board): two raw flash partitions (A/B). A received bundle's blacklist section
#   is streamed straight into the inactive slot and everything else into a small littlefs file;
#   the MAC is checked over both before the state names them. A lookup then reads exactly two
#   flash blocks (littlefs would add its metadata and skip-list reads, 6 or more).
# - file mode (no slots given: bench, tests): the whole bundle file stays on littlefs.
import gc
import json
import os

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import bundle
import cardlists
import crc
import fare
import log

PARAM_ACTIVATION = "PARAM_ACTIVATION"
_STATE = "state"
_TMP = "state.tmp"
_FLOOR = "floor"  # the version floor's second home (docs/parameters.md "Rollback")
_FLOOR_TMP = "floor.tmp"
INCOMING = "incoming.tmp"
DL_STATE = "dl.state"  # a chunked download's checkpoint (firmware/chunkdl.py)
_SETTINGS = {
    # name: (min, max, default)
    "dup_tap_s": (0, 86400, 60),
    "journal_warn": (0, 10000000, 50000),
    "journal_full": (0, 10000000, 58000),
    "upload_interval_s": (10, 86400, 300),
    "max_fare": (1, 1000000, 5000),
    "tz_s": (-50400, 50400, 28800),
}
_BUF = const(1024)
_BLOCK = const(4096)

_log = log.get("params")


class ParamsError(ValueError):
    pass


def _settings(cfg):
    raw = cfg.get("settings", {})
    if not isinstance(raw, dict):
        raise ParamsError("settings is not an object")
    out = {}
    for name in raw:
        if name not in _SETTINGS:
            raise ParamsError("unknown setting %r" % name)
    for name, (lo, hi, default) in _SETTINGS.items():
        v = raw.get(name, default)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ParamsError("setting %s=%r outside [%d, %d]" % (name, v, lo, hi))
        out[name] = v
    if out["journal_warn"] > out["journal_full"]:
        raise ParamsError("journal_warn above journal_full")
    return out


def check_config(cfg, terminal=b"\x00" * 8):
    """(settings, FareEngine, Whitelist) from a config dict, or ParamsError with the reason."""
    if not isinstance(cfg, dict):
        raise ParamsError("config is not an object")
    try:
        settings = _settings(cfg)
        engine = fare.from_config(cfg, terminal)
        if "whitelist" not in cfg or not isinstance(cfg["whitelist"], dict):
            raise ParamsError("config has no whitelist")
        wl = cardlists.Whitelist(cfg["whitelist"])
    except (fare.FareConfigError, cardlists.ListError) as e:
        raise ParamsError(str(e))
    keys = cfg.get("param_keys", {})
    if not isinstance(keys, dict):
        raise ParamsError("param_keys is not an object")
    try:
        t = bundle.Trust()
        for kid, raw in keys.items():
            t.add_key(kid, raw)
    except (bundle.BundleError, ValueError, TypeError) as e:
        raise ParamsError("param_keys: %s" % e)
    return settings, engine, wl


class _Logical:
    """The received bundle as one byte stream over its two homes: the littlefs file holds every
    byte except the blacklist section (the hole), which sits in a raw slot from block 0."""

    def __init__(self, f, slot=None, hole_off=0, hole_len=0):
        self.f = f
        self.slot = slot
        self.off = hole_off
        self.len = hole_len if slot is not None else 0
        self.pos = 0

    def seek(self, pos):
        self.pos = pos

    def readinto(self, buf):
        mv = memoryview(buf)
        done = 0
        while done < len(mv):
            pos = self.pos
            if self.len and self.off <= pos < self.off + self.len:
                rel = pos - self.off
                blk = rel // _BLOCK
                within = rel % _BLOCK
                n = min(len(mv) - done, _BLOCK - within, self.off + self.len - pos)
                self.slot.readblocks(blk, mv[done : done + n], within)
            else:
                fpos = pos if pos < self.off or not self.len else pos - self.len
                n = len(mv) - done
                if self.len and pos < self.off:
                    n = min(n, self.off - pos)
                self.f.seek(fpos)
                n = self.f.readinto(mv[done : done + n])
                if not n:
                    break
            done += n
            self.pos += n
        return done

    def read(self, n):
        buf = bytearray(n)
        got = self.readinto(buf)
        return bytes(buf[:got])


class _FileDev:
    """A littlefs file as the block device a merged list is written to (file mode)."""

    def __init__(self, f):
        self.f = f

    def writeblocks(self, num, buf):
        self.f.seek(num * _BLOCK)
        self.f.write(buf)

    def readblocks(self, num, buf, offset=0):
        self.f.seek(num * _BLOCK + offset)
        if self.f.readinto(buf) != len(buf):
            raise cardlists.ListError("short read at block %d" % num)


class Receiver:
    """Takes a bundle as it arrives (any chunking): params.receiver(total), write(), finish(now).

    In slot mode the blacklist section goes to the inactive raw slot as it streams; the section
    table it routes by is not trusted yet, but the bytes are checked in their original order,
    so a lie only fails the MAC.
    """

    def __init__(self, params, total):
        self.p = params
        self.total = total
        self.pos = 0
        self.head = bytearray(bundle.HEADER)
        self.mhead = bytearray(bundle.MHEAD)
        self.body_at = None  # where the body header starts: 0, or after a signed manifest
        self.failed = None
        self.hole = None  # (offset, length) of the blacklist section
        self.slot = None
        self.blk = None
        self.fill = 0
        self.nblk = 0
        self.f = open(params._p(INCOMING), "wb")

    def _format(self):
        # The first 64 bytes say which format: a signed manifest or a legacy header.
        if bytes(self.mhead[0:4]) == bundle.MMAGIC:
            try:
                m = bundle.Manifest(self.mhead)
            except bundle.BundleError as e:
                self.failed = str(e)
                return
            if m.total != self.total:
                self.failed = "truncated or padded: manifest says %d bytes, %d announced" % (
                    m.total,
                    self.total,
                )
                return
            self.body_at = m.len
        else:
            self.body_at = 0
            self.head[0 : bundle.MHEAD] = self.mhead

    def _plan(self):
        # Route by the (still unverified) section table: find the blacklist section.
        p = self.p
        said = (self.head[20] << 24) | (self.head[21] << 16) | (self.head[22] << 8) | self.head[23]
        if said != self.total - self.body_at:
            self.failed = "truncated or padded: header says %d bytes, %d announced" % (
                said,
                self.total - self.body_at,
            )
            return
        if not p.slots:
            return
        try:
            fmt = bundle.FORMAT_SIGNED if self.body_at else bundle.FORMAT
            hdr = bundle._parse_header(self.head, said, fmt, self.body_at)
        except bundle.BundleError as e:
            self.failed = str(e)
            return
        sec = hdr.section(bundle.BLACKLIST)
        if sec is None:
            return
        slot = p._free_slot()
        size = p.slots[slot].ioctl(4, 0) * _BLOCK
        if sec[1] > size:
            self.failed = "blacklist of %d bytes exceeds the %d-byte slot" % (sec[1], size)
            return
        self.hole = (sec[0], sec[1])
        self.slot = slot
        self.blk = self._block_buffer()

    def write(self, data):
        mv = memoryview(data)
        if self.pos + len(mv) > self.total:
            self.failed = "longer than the announced %d bytes" % self.total
        while len(mv) and not self.failed:
            pos = self.pos
            if self.body_at is None:
                n = min(len(mv), bundle.MHEAD - pos)
                self.mhead[pos : pos + n] = mv[:n]
                self.f.write(mv[:n])
                if pos + n == bundle.MHEAD:
                    self._format()
            elif self.body_at <= pos < self.body_at + bundle.HEADER:
                rel = pos - self.body_at
                n = min(len(mv), bundle.HEADER - rel)
                self.head[rel : rel + n] = mv[:n]
                self.f.write(mv[:n])
                if rel + n == bundle.HEADER:
                    self._plan()
            elif self.hole and self.hole[0] <= pos < self.hole[0] + self.hole[1]:
                n = self._to_slot(mv[: min(len(mv), self.hole[0] + self.hole[1] - pos)])
            else:
                n = len(mv)
                if self.hole and pos < self.hole[0]:
                    n = min(n, self.hole[0] - pos)
                if pos < self.body_at:
                    n = min(n, self.body_at - pos)
                self.f.write(mv[:n])
            self.pos += n
            mv = mv[n:]

    def _block_buffer(self):
        return bytearray(_BLOCK)

    def _to_slot(self, mv):
        # Whole blocks through a 4 KB buffer (writeblocks without offset erases, then programs).
        n = min(len(mv), _BLOCK - self.fill)
        self.blk[self.fill : self.fill + n] = mv[:n]
        self.fill += n
        if self.fill == _BLOCK:
            self.p.slots[self.slot].writeblocks(self.nblk, self.blk)
            self.nblk += 1
            self.fill = 0
        return n

    def abort(self):
        try:
            self.f.close()
        except OSError:
            pass
        self.p._discard(self.p._p(INCOMING))

    def finish(self, now):
        """(True, "activated" | "pending") or (False, reason), as Params.install()."""
        try:
            self.f.close()
        except OSError as e:
            self.failed = self.failed or "storage error: %s" % e
        if not self.failed and self.pos != self.total:
            self.failed = "truncated: %d of %d bytes" % (self.pos, self.total)
        if self.failed:
            _log.warning("bundle refused: %s", self.failed)
            self.p._discard(self.p._p(INCOMING))
            return False, self.failed
        return self.p._install_guarded(self.p._p(INCOMING), self.total, self.hole, self.slot, now)


class Params:
    """The validator's parameters. Properties: version, settings, fares, whitelist, blacklist.

    root: directory on littlefs; key: the device secret (HMAC-SHA256 key);
    on_event(name, info): gets PARAM_ACTIVATION with a dict so the app journals it;
    terminal: 8-byte terminal number as the 0x1E records carry it (00 00 + PSAM terminal id);
    slots: None (file mode) or two block devices for the blacklist (esp32.Partition A and B);
    trust: a bundle.Trust (fleet public keys and this validator's scope). With keys, only
    fleet-signed bundles install; without, legacy bundles under `key` (docs/parameters.md).
    floor_log: None or the transaction log (txlog.TxLog: `param_floor`, `note_param_floor()`),
    the version floor's third home, on raw flash outside littlefs.
    feed_dog: None or the watchdog's feed, called while a long install works (a merged delta).
    """

    def __init__(
        self,
        root,
        key,
        on_event=None,
        terminal=b"\x00" * 8,
        slots=None,
        trust=None,
        floor_log=None,
        feed_dog=None,
    ):
        self.root = root.rstrip("/")
        self.feed_dog = feed_dog
        self.key = key
        self.floor_log = floor_log
        self.trust = trust if trust is not None else bundle.Trust()
        self.floor = {"version": 0, "key": 0}
        self.on_event = on_event
        self.terminal = terminal
        self.slots = slots
        # The blacklist's lookup window is kept (every tap looks up; 512 bytes, not a 4 KB
        # block); the 1 KB buffer for installs is made per install: a rare moment.
        self.blbuf = bytearray(cardlists.LOOKUP_BUF)
        self.state = None
        self.version = 0
        self.settings = None
        self.fares = None
        self.whitelist = None
        self.blacklist = None
        self._files = []
        try:
            os.mkdir(self.root)
        except OSError:
            pass

    def _p(self, name):
        return self.root + "/" + name

    # -- state ---------------------------------------------------------------------------

    def _read_state(self):
        try:
            with open(self._p(_STATE), "rb") as f:
                raw = f.read()
        except OSError:
            return None
        try:
            body, check = raw.rsplit(b"\n", 1)
            if int(check) != crc.crc32(body):
                raise ValueError("crc")
            st = json.loads(body)
            if not isinstance(st, dict):
                raise ValueError("not an object")
        except (ValueError, TypeError) as e:
            _log.error("state file damaged (%s): no parameters", e)
            self._damaged = True
            return None
        return st

    # -- the version floor (docs/parameters.md "Rollback") -----------------------------------
    # Kept in the state, in its own file and in the transaction log (floor_log, raw flash),
    # written after each state change: damage to any one (or both littlefs files) leaves another,
    # and the active and pending entries count too. At load the floor is the highest of them all
    # and each home that says less is brought up. Versions only go up; the key floor (the newest
    # signing key seen) retires older keys. Both as (key, version).

    def _rank_of(self, e):
        return (e.get("key", 0), e["version"]) if e else (0, 0)

    def _load_floor(self):
        key = version = 0
        st = self.state or {}
        f = self._read_floor_file()
        logged = self._log_floor()
        for e in (st.get("floor"), st.get("active"), st.get("pending"), f, logged):
            if e:
                try:
                    k, v = self._rank_of(e)
                    key = max(key, k)
                    version = max(version, v)
                except (KeyError, TypeError):
                    pass
        self.floor = {"key": key, "version": version}
        self.trust.key_floor = max(self.trust.key_floor, key)
        if not f or self._rank_of(f) != (key, version):
            self._write_floor()
        elif logged is not None and self._rank_of(logged) != (key, version):
            self._note_floor()

    def _log_floor(self):
        if self.floor_log is None:
            return None
        k, v = self.floor_log.param_floor
        return {"key": k, "version": v}

    def _note_floor(self):
        if self.floor_log is None:
            return
        try:
            self.floor_log.note_param_floor(self.floor["key"], self.floor["version"])
        except Exception as e:  # noqa: BLE001 - a full or failing log: the two files still hold it
            _log.warning("could not keep the version floor in the log: %r", e)

    def _read_floor_file(self):
        try:
            with open(self._p(_FLOOR), "rb") as f:
                raw = f.read()
            body, check = raw.rsplit(b"\n", 1)
            if int(check) != crc.crc32(body):
                raise ValueError("crc")
            e = json.loads(body)
            self._rank_of(e)
            return e
        except OSError:
            return None
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            _log.error("floor file damaged (%s): the state's floor stands", e)
            return None

    def _write_floor(self):
        body = json.dumps(self.floor).encode()
        try:
            with open(self._p(_FLOOR_TMP), "wb") as f:
                f.write(body + b"\n" + str(crc.crc32(body)).encode())
            os.rename(self._p(_FLOOR_TMP), self._p(_FLOOR))
        except OSError as e:
            _log.warning("could not write the version floor file: %s", e)
        self._note_floor()

    def _raise_floor(self, st, entry):
        k, v = self._rank_of(entry)
        self.floor = {"key": max(k, self.floor["key"]), "version": max(v, self.floor["version"])}
        st["floor"] = dict(self.floor)

    def _check_version(self, version, key_id):
        """ParamsError unless (key_id, version) may follow what this validator holds."""
        if not 0 < version <= bundle.VERSION_MAX:
            raise ParamsError("version %d outside 1..%d" % (version, bundle.VERSION_MAX))
        st = self.state or {}
        newest = max(self._rank_of(st.get("active"))[1], self._rank_of(st.get("pending"))[1])
        floor = self.floor["version"]
        if version <= newest:
            raise ParamsError("version %d is not newer than %d" % (version, newest))
        if version < floor:
            # After a damaged state the floor's own version may come again, not an older one.
            raise ParamsError("version %d is below the floor %d (rollback)" % (version, floor))
        if floor and version > floor + bundle.MAX_STEP:
            raise ParamsError(
                "version %d jumps more than %d above %d" % (version, bundle.MAX_STEP, floor)
            )
        if key_id and key_id < self.floor["key"]:
            raise ParamsError("signed by retired key %d" % key_id)

    def _write_state(self, st):
        body = json.dumps(st).encode()
        with open(self._p(_TMP), "wb") as f:
            f.write(body + b"\n" + str(crc.crc32(body)).encode())
        os.rename(self._p(_TMP), self._p(_STATE))  # the commit point
        self.state = st

    def _referenced(self, st):
        names = set()
        for slot in ("active", "pending"):
            e = st.get(slot) if st else None
            if e:
                for k in ("cfg", "ov", "delta_file"):
                    if e.get(k):
                        names.add(e[k])
                if e.get("bl") and e["bl"].get("file"):
                    names.add(e["bl"]["file"])
        return names

    def _collect(self, at_boot=False):
        keep = self._referenced(self.state)
        keep.add(_STATE)
        keep.add(_FLOOR)
        if not at_boot or DL_STATE in os.listdir(self.root):
            keep.add(INCOMING)  # a download may be under way, or resume after a cut
            keep.add(DL_STATE)
        for name in os.listdir(self.root):
            if name not in keep:
                try:
                    os.remove(self._p(name))
                    _log.debug("removed leftover %s", name)
                except OSError as e:
                    _log.warning("could not remove %s: %s", name, e)

    def _slot_of(self, e):
        if e and e.get("bl") and e["bl"].get("slot") is not None:
            return e["bl"]["slot"]
        return None

    def _free_slot(self):
        """The slot the active set does not use; a pending bundle holding it is dropped."""
        st = self.state or {}
        used = self._slot_of(st.get("active"))
        free = 1 if used == 0 else 0
        if self._slot_of(st.get("pending")) == free:
            _log.info("pending bundle %d superseded by a new download", st["pending"]["version"])
            st = dict(st)
            st["pending"] = None
            self._write_state(st)
        return free

    # -- opening the active set ------------------------------------------------------------

    def _close(self):
        for f in self._files:
            try:
                f.close()
            except OSError:
                pass
        self._files = []

    def _source(self, name, hole, slot):
        f = open(self._p(name), "rb")
        if hole is not None:
            return f, _Logical(f, self.slots[slot], hole[0], hole[1])
        return f, _Logical(f)

    def _open(self, entry):
        """Open the files an entry names; ParamsError if any is missing or damaged."""
        files = []
        try:
            f, src = self._source(entry["cfg"], entry["cfg_hole"], entry.get("cfg_slot"))
            files.append(f)
            hdr = bundle.file_header(src, entry["cfg_size"])
            raw = self._section(src, hdr, bundle.CONFIG)
            if raw is None or crc.crc32(raw) != entry["cfg_crc"]:
                raise ParamsError("config of %s changed on flash" % entry["cfg"])
            cfg = json.loads(raw)
            settings, engine, wl = check_config(cfg, self.terminal)
            for kid, key in cfg.get("param_keys", {}).items():
                self.trust.add_key(kid, key)  # the rotation's next key (docs/parameters.md)
            bl = entry["bl"]
            if bl.get("slot") is not None:
                if not self.slots:
                    raise ParamsError("blacklist is in a slot but no slots are configured")
                dev = self.slots[bl["slot"]]
            else:
                bf = open(self._p(bl["file"]), "rb")
                files.append(bf)
                dev = cardlists.FileBlocks(bf, bl["off"], bl["len"])
            overlay = None
            if entry.get("ov"):
                of = open(self._p(entry["ov"]), "rb")
                files.append(of)
                overlay = cardlists.Overlay(of, os.stat(self._p(entry["ov"]))[6])
            blist = cardlists.Blacklist(dev, overlay, self.blbuf)
            if blist.blocks * _BLOCK != bl["len"]:
                raise ParamsError("blacklist header does not match its %d bytes" % bl["len"])
        except (OSError, ValueError, KeyError, TypeError, bundle.BundleError) as e:
            for f in files:
                f.close()
            raise ParamsError("cannot open parameters: %s" % e)
        self._close()
        self._files = files
        self.version = entry["version"]
        self.settings = settings
        self.fares = engine
        self.whitelist = wl
        self.blacklist = blist

    def _head(self, src):
        head = bytearray(bundle.HEADER)
        src.seek(0)
        if src.readinto(head) != bundle.HEADER:
            raise ParamsError("short header")
        return head

    def _section(self, src, hdr, kind):
        sec = hdr.section(kind)
        if sec is None:
            return None
        src.seek(sec[0])
        raw = src.read(sec[1])
        if len(raw) != sec[1]:
            raise ParamsError("short section")
        return raw

    def load(self, now=None):
        """Open the committed parameters (after boot). True when a parameter set is active."""
        self._damaged = False
        self.state = self._read_state()
        self._load_floor()
        if not self._damaged:
            # leftovers go; after damage the files stay for whoever investigates
            self._collect(at_boot=True)
        if not self.state or not self.state.get("active"):
            _log.warning("no parameters installed")
            return False
        try:
            self._open(self.state["active"])
        except ParamsError as e:
            _log.error("%s", e)
            return False
        if self.state.get("announced") != self.version:
            self._announce(now)
        if now is not None:
            self.tick(now)
        return True

    def _announce(self, now):
        e = self.state["active"]
        info = {
            "version": e["version"],
            "bl_version": e["bl_version"],
            "activation": e["activation"],
            "time": now,
        }
        if self.on_event is not None:
            try:
                self.on_event(PARAM_ACTIVATION, info)
            except Exception as ex:  # the journal's problem must not undo an activation
                _log.error("activation event handler failed: %r", ex)
                return
        st = dict(self.state)
        st["announced"] = e["version"]
        try:
            self._write_state(st)
        except OSError as ex:
            _log.warning("could not record the announcement: %s", ex)

    # -- installing ----------------------------------------------------------------------

    def receiver(self, total):
        """A Receiver for a bundle of `total` bytes arriving in chunks (the uplink's download)."""
        return Receiver(self, total)

    def install(self, path, now):
        """Verify the bundle file at `path` (same file system) and activate it or keep it
        pending. Returns (True, "activated" | "pending") or (False, reason). A refused bundle
        changes nothing durable; its file is deleted."""
        if self.slots:
            # stream it through a receiver so the blacklist lands in a slot
            try:
                if path == self._p(INCOMING):
                    os.rename(path, self._p("download.tmp"))
                    path = self._p("download.tmp")
                size = os.stat(path)[6]
                rx = Receiver(self, size)
                buf = bytearray(_BUF)
                with open(path, "rb") as f:
                    while True:
                        n = f.readinto(buf)
                        if not n:
                            break
                        rx.write(memoryview(buf)[:n])
                buf = None
            except OSError as e:
                _log.error("bundle install failed: %s", e)
                self._discard(path)
                return False, "storage error: %s" % e
            self._discard(path)
            return rx.finish(now)
        try:
            size = os.stat(path)[6]
        except OSError:
            return False, "no such file"
        return self._install_guarded(path, size, None, None, now)

    def install_bytes(self, data, now):
        """Install a bundle held in memory (tests, bench)."""
        rx = Receiver(self, len(data))
        try:
            rx.write(data)
        except OSError as e:
            rx.abort()
            return False, "storage error: %s" % e
        return rx.finish(now)

    def _discard(self, path):
        try:
            os.remove(path)
        except OSError:
            pass

    def _install_guarded(self, path, size, hole, slot, now):
        try:
            return True, self._install(path, size, hole, slot, now)
        except (ParamsError, bundle.BundleError, cardlists.ListError) as e:
            _log.warning("bundle refused: %s", e)
            self._discard(path)
            return False, str(e)
        except OSError as e:
            _log.error("bundle install failed: %s", e)
            self._discard(path)
            return False, "storage error: %s" % e

    def _install(self, path, size, hole, slot, now):
        f = open(path, "rb")
        try:
            src = _Logical(f, self.slots[slot], hole[0], hole[1]) if hole else _Logical(f)
            key_id = self._verify(src, size, now)
            hdr = bundle.file_header(src, size)
            self._check_version(hdr.version, key_id)
            st = self.state or {}
            active = st.get("active")
            pending = st.get("pending")
            cfg_raw = self._section(src, hdr, bundle.CONFIG)
            if cfg_raw is not None:
                try:
                    cfg = json.loads(cfg_raw)
                except ValueError as e:
                    raise ParamsError("config is not JSON: %s" % e)
                check_config(cfg, self.terminal)
            elif not active:
                raise ParamsError("first bundle must carry a config")
            sec = hdr.section(bundle.BLACKLIST)
            if sec is not None:
                if hole is not None and (sec[0], sec[1]) != hole:
                    raise ParamsError("blacklist section moved")  # cannot pass the MAC
                if hole is None and self.slots:
                    raise ParamsError("blacklist not placed in a slot")
                dev = self.slots[slot] if hole else cardlists.FileBlocks(src, sec[0], sec[1])
                bl = cardlists.Blacklist(dev, None, self.blbuf)
                if bl.blocks * _BLOCK != sec[1]:
                    raise ParamsError("blacklist section size does not match its header")
            elif not active:
                raise ParamsError("first bundle must carry a full blacklist")
            delta = bundle.delta_info(src, hdr)
            merged = None
            if delta is not None:
                self._delta_base_ok(delta[0], active, pending)
                if delta[4] is not None:
                    merged = self._merge_delta(src, delta, hdr.version)
                elif delta[1] + delta[2] > cardlists.OVERLAY_MAX:
                    raise ParamsError(
                        "delta of %d cards without a merge digest (overlay max %d)"
                        % (delta[1] + delta[2], cardlists.OVERLAY_MAX)
                    )
        finally:
            f.close()
        name = "b%d.bnd" % hdr.version
        entry = {
            "version": hdr.version,
            "key": key_id,
            "activation": hdr.activation,
            "cfg": None,
            "bl": None,
            "bl_version": None,
            "ov": None,
        }
        if cfg_raw is not None:
            entry["cfg"] = name
            entry["cfg_crc"] = crc.crc32(cfg_raw)
            entry["cfg_size"] = size
            entry["cfg_hole"] = list(hole) if hole else None
            entry["cfg_slot"] = slot if hole else None
        if sec is not None:
            entry["bl_version"] = hdr.version
            if hole:
                entry["bl"] = {"slot": slot, "len": sec[1]}
            else:
                entry["bl"] = {"file": name, "off": sec[0], "len": sec[1]}
        if merged is not None:
            # a merged delta installs as a full list would: its own list, no overlay
            entry["bl"] = merged
            entry["bl_version"] = hdr.version
        elif delta is not None:
            entry["delta"] = delta[0]
            entry["delta_file"] = name
        os.rename(path, self._p(name))
        st = dict(self.state or {})
        self._raise_floor(st, entry)
        if hdr.activation <= now:
            return self._activate(st, entry, now)
        st["pending"] = entry
        self._write_state(st)
        self._write_floor()
        self._collect()
        _log.info("bundle %d pending until %d", hdr.version, hdr.activation)
        return "pending"

    def _merge_delta(self, src, delta, version):
        """Merge a delta of any size with the active list (and its overlay) into the free slot,
        or a new littlefs file in file mode (firmware/blmerge.py). -> the new entry's "bl"."""
        import blmerge

        st = self.state or {}
        active = st.get("active") or {}
        base, n_add, n_rem, at, result = delta
        if active.get("bl_version") != base:
            raise ParamsError(
                "merged delta applies on blacklist %d, the active one is %s"
                % (base, active.get("bl_version"))
            )
        files = []
        try:
            bl = active["bl"]
            if bl.get("slot") is not None:
                old = self.slots[bl["slot"]]
            else:
                bf = open(self._p(bl["file"]), "rb")
                files.append(bf)
                old = cardlists.FileBlocks(bf, bl["off"], bl["len"])
            ov = []
            if active.get("ov"):
                of = open(self._p(active["ov"]), "rb")
                files.append(of)
                ov = blmerge.overlay_ops(of, os.stat(self._p(active["ov"]))[6])
            if self.slots:
                slot = self._free_slot()
                dev = self.slots[slot]
                size = dev.ioctl(4, 0)
                out = {"slot": slot}
            else:
                name = "l%d.bl" % version
                nf = open(self._p(name), "w+b")
                files.append(nf)
                dev = _FileDev(nf)
                size = 1 << 20  # blocks: littlefs refuses when full (OSError)
                out = {"file": name, "off": 0}
            gc.collect()
            n, length = blmerge.apply(
                old, ov, src, at, n_add, n_rem, result, dev, size, self.feed_dog
            )
        except (OSError, KeyError, cardlists.ListError) as e:
            for x in files:
                x.close()
            files = []
            if not self.slots:
                self._discard(self._p("l%d.bl" % version))
            if isinstance(e, cardlists.ListError):
                raise
            raise ParamsError("merge failed: %s" % e)
        finally:
            for x in files:
                x.close()
        out["len"] = length
        _log.info("delta %d merged: %d cards, %d bytes", version, n, length)
        return out

    def _verify(self, src, size, now):
        """Check the signature of a received file; -> the signing key id (0: legacy HMAC)."""
        magic = bytearray(4)
        src.seek(0)
        src.readinto(magic)
        buf = bytearray(_BUF)
        if bytes(magic) == bundle.MMAGIC:
            if not self.trust.signed_mode():
                raise ParamsError("fleet-signed bundle, but no fleet key is provisioned")
            m, _ = bundle.verify_signed_file(src, size, self.trust, now, buf)
            return m.key_id
        if self.trust.signed_mode():
            raise ParamsError(
                "legacy HMAC bundle refused: this validator takes fleet-signed bundles only"
            )
        bundle.verify_file(src, self.key, size, buf)
        return 0

    def _delta_base_ok(self, base, active, pending):
        current = None
        if pending and pending.get("bl_version"):
            current = pending["bl_version"]
        elif active:
            current = active["bl_version"]
        if current != base:
            raise ParamsError("delta applies on blacklist %d, this one is at %s" % (base, current))

    def _activate(self, st, entry, now):
        """Complete `entry` from the active set, write derived files, commit, announce."""
        active = st.get("active") or {}
        new = dict(entry)
        if new["cfg"] is None:
            for k in ("cfg", "cfg_crc", "cfg_size", "cfg_hole", "cfg_slot"):
                new[k] = active.get(k)
        if new["bl"] is None:
            new["bl"] = active.get("bl")
            new["bl_version"] = active.get("bl_version")
            new["ov"] = active.get("ov")
        if entry.get("delta") is not None:
            base = entry["delta"]
            if active.get("bl_version") != base:
                raise ParamsError("delta base %d no longer matches" % base)
            path = self._p(entry["delta_file"])
            with open(path, "rb") as f:
                src = _Logical(f)
                hdr = bundle.file_header(src, os.stat(path)[6])
                _, adds, removes = bundle.read_delta(src, hdr)
            old = b""
            if active.get("ov"):
                with open(self._p(active["ov"]), "rb") as f:
                    old = f.read()
            merged = cardlists.merge_overlay(old, adds, removes)
            ov = "o%d.ovl" % entry["version"]
            with open(self._p(ov), "wb") as f:
                f.write(merged)
            new["ov"] = ov
            new["bl_version"] = entry["version"]
        new.pop("delta", None)
        new.pop("delta_file", None)  # its overlay now holds what the delta said
        st["active"] = new
        if st.get("pending") and st["pending"]["version"] == entry["version"]:
            st["pending"] = None
        self._raise_floor(st, new)
        self._write_state(st)
        self._write_floor()
        if new.get("key", 0) > self.trust.key_floor:
            self.trust.key_floor = new["key"]
            _log.info("signing keys below %d retired", new["key"])
        _log.info("parameters %d active (blacklist %d)", new["version"], new["bl_version"])
        self._collect()
        try:
            try:
                self._open(new)
            except MemoryError:
                # Old and new sets side by side are an update's peak: on a small, fragmented
                # heap let the old one go and open the new one (committed already) again.
                self._close()
                self.settings = self.fares = self.whitelist = self.blacklist = None
                gc.collect()
                self._open(new)
        except (ParamsError, MemoryError) as e:
            _log.error("parameters %d committed but not opened: %s", new["version"], e)
        self._announce(now)
        return "activated"

    def tick(self, now):
        """Activate a pending bundle whose time has come. True when one was activated."""
        st = self.state
        if not st or not st.get("pending") or st["pending"]["activation"] > now:
            return False
        try:
            self._activate(dict(st), st["pending"], now)
        except (ParamsError, cardlists.ListError, OSError) as e:
            _log.error("pending bundle %d dropped: %s", st["pending"]["version"], e)
            st = dict(st)
            st["pending"] = None
            self._write_state(st)
            self._collect()
            return False
        return True

    def close(self):
        self._close()
