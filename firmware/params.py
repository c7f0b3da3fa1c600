# Active parameters on littlefs: installs verified bundles and switches to them atomically
# (docs/parameters.md). The single commit point is renaming a fresh `state.tmp` over `state`;
# littlefs makes that rename atomic, so after a power cut the validator wakes with the old or
# the new parameters, never a mix. Files no state names are leftovers and are removed at load.
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

_log = log.get("params")


class ParamsError(ValueError):
    pass


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


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
    try:
        settings = _settings(cfg)
        engine = fare.from_config(cfg, terminal)
        if "whitelist" not in cfg or not isinstance(cfg["whitelist"], dict):
            raise ParamsError("config has no whitelist")
        wl = cardlists.Whitelist(cfg["whitelist"])
    except (fare.FareConfigError, cardlists.ListError) as e:
        raise ParamsError(str(e))
    return settings, engine, wl


class Params:
    """The validator's parameters. Properties: version, settings, fares, whitelist, blacklist.

    root: directory on littlefs; key: the device secret (HMAC-SHA256 key);
    on_event(name, info): gets PARAM_ACTIVATION with a dict so the app journals it.
    """

    def __init__(self, root, key, on_event=None, terminal=b"\x00" * 8):
        self.root = root.rstrip("/")
        self.key = key
        self.on_event = on_event
        self.terminal = terminal
        self.buf = bytearray(_BUF)
        self.blbuf = bytearray(cardlists.BLOCK)
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
        except (ValueError, TypeError) as e:
            _log.error("state file damaged (%s): no parameters", e)
            return None
        return st

    def _write_state(self, st):
        body = json.dumps(st).encode()
        with open(self._p(_TMP), "wb") as f:
            f.write(body + b"\n" + str(crc.crc32(body)).encode())
        os.rename(self._p(_TMP), self._p(_STATE))  # the commit point

    def _referenced(self, st):
        names = set()
        for slot in ("active", "pending"):
            e = st.get(slot) if st else None
            if e:
                for k in ("cfg", "bl", "ov", "delta_file"):
                    if e.get(k):
                        names.add(e[k])
        return names

    def _collect(self):
        keep = self._referenced(self.state)
        keep.add(_STATE)
        for name in os.listdir(self.root):
            if name not in keep:
                try:
                    os.remove(self._p(name))
                    _log.debug("removed leftover %s", name)
                except OSError as e:
                    _log.warning("could not remove %s: %s", name, e)

    # -- opening the active set ------------------------------------------------------------

    def _close(self):
        for f in self._files:
            try:
                f.close()
            except OSError:
                pass
        self._files = []

    def _open(self, entry):
        """Open the files an entry names; ParamsError if any is missing or damaged."""
        files = []
        try:
            f = open(self._p(entry["cfg"]), "rb")
            files.append(f)
            size = os.stat(self._p(entry["cfg"]))[6]
            hdr = bundle._parse_header(self._head(f), size)
            raw = self._section(f, hdr, bundle.CONFIG)
            if crc.crc32(raw) != entry["cfg_crc"]:
                raise ParamsError("config of %s changed on flash" % entry["cfg"])
            cfg = json.loads(raw)
            settings, engine, wl = check_config(cfg, self.terminal)
            bf = open(self._p(entry["bl"]), "rb")
            files.append(bf)
            bsize = os.stat(self._p(entry["bl"]))[6]
            bhdr = bundle._parse_header(self._head(bf), bsize)
            sec = bhdr.section(bundle.BLACKLIST)
            if sec is None:
                raise ParamsError("%s has no blacklist" % entry["bl"])
            overlay = None
            if entry.get("ov"):
                of = open(self._p(entry["ov"]), "rb")
                files.append(of)
                overlay = cardlists.Overlay(of, os.stat(self._p(entry["ov"]))[6])
            bl = cardlists.Blacklist(cardlists.FileBlocks(bf, sec[0], sec[1]), overlay, self.blbuf)
        except (OSError, ValueError, KeyError) as e:
            for f in files:
                f.close()
            raise ParamsError("cannot open parameters: %s" % e)
        self._close()
        self._files = files
        self.version = entry["version"]
        self.settings = settings
        self.fares = engine
        self.whitelist = wl
        self.blacklist = bl

    def _head(self, f):
        head = bytearray(bundle.HEADER)
        f.seek(0)
        if f.readinto(head) != bundle.HEADER:
            raise ParamsError("short header")
        return head

    def _section(self, f, hdr, kind):
        sec = hdr.section(kind)
        if sec is None:
            return None
        f.seek(sec[0])
        raw = f.read(sec[1])
        if len(raw) != sec[1]:
            raise ParamsError("short section")
        return raw

    def load(self, now=None):
        """Open the committed parameters (after boot). True when a parameter set is active."""
        self.state = self._read_state()
        self._collect()
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
        self.state["announced"] = e["version"]
        try:
            self._write_state(self.state)
        except OSError as ex:
            _log.warning("could not record the announcement: %s", ex)

    # -- installing ----------------------------------------------------------------------

    def install(self, path, now):
        """Verify the bundle at `path` (same file system) and activate it or keep it pending.

        Returns (True, "activated" | "pending") or (False, reason). A refused bundle changes
        nothing durable except that its file is deleted.
        """
        try:
            result = self._install(path, now)
        except (ParamsError, bundle.BundleError, cardlists.ListError) as e:
            _log.warning("bundle refused: %s", e)
            self._discard(path)
            return False, str(e)
        except OSError as e:
            _log.error("bundle install failed: %s", e)
            self._discard(path)
            return False, "storage error: %s" % e
        return True, result

    def _discard(self, path):
        try:
            os.remove(path)
        except OSError:
            pass

    def _install(self, path, now):
        size = os.stat(path)[6]
        with open(path, "rb") as f:
            hdr = bundle.verify_file(f, self.key, size, self.buf)
            st = self.state or {}
            active = st.get("active")
            pending = st.get("pending")
            newest = max(active["version"] if active else 0, pending["version"] if pending else 0)
            if hdr.version <= newest:
                raise ParamsError("version %d is not newer than %d" % (hdr.version, newest))
            cfg_raw = self._section(f, hdr, bundle.CONFIG)
            if cfg_raw is not None:
                try:
                    cfg = json.loads(cfg_raw)
                except ValueError as e:
                    raise ParamsError("config is not JSON: %s" % e)
                if not isinstance(cfg, dict):
                    raise ParamsError("config is not an object")
                check_config(cfg, self.terminal)
            elif not active:
                raise ParamsError("first bundle must carry a config")
            sec = hdr.section(bundle.BLACKLIST)
            if sec is not None:
                bl = cardlists.Blacklist(cardlists.FileBlocks(f, sec[0], sec[1]), None, self.blbuf)
                if bl.blocks * cardlists.BLOCK != sec[1]:
                    raise ParamsError("blacklist section size does not match its header")
            elif not active:
                raise ParamsError("first bundle must carry a full blacklist")
            delta = bundle.read_delta(f, hdr)
        name = "b%d.bnd" % hdr.version
        entry = {
            "version": hdr.version,
            "activation": hdr.activation,
            "cfg": name if cfg_raw is not None else None,
            "cfg_crc": crc.crc32(cfg_raw) if cfg_raw is not None else None,
            "bl": name if sec is not None else None,
            "bl_version": hdr.version if sec is not None else None,
            "ov": None,
            "delta": list(delta[0:1]) if delta else None,
        }
        if delta is not None:
            self._delta_base_ok(entry, delta[0], active, pending)
            entry["delta_file"] = name
        os.rename(path, self._p(name))
        st = dict(self.state or {})
        if hdr.activation <= now:
            return self._activate(st, entry, now)
        st["pending"] = entry
        self._write_state(st)
        self.state = st
        self._collect()
        _log.info("bundle %d pending until %d", hdr.version, hdr.activation)
        return "pending"

    def _delta_base_ok(self, entry, base, active, pending):
        if entry["bl"] is not None:
            raise ParamsError("bundle carries both a blacklist and a delta")
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
        for k in ("cfg", "cfg_crc", "bl", "bl_version", "ov"):
            if new.get(k) is None:
                new[k] = active.get(k)
        if entry.get("delta") is not None:
            base = entry["delta"][0]
            if active.get("bl_version") != base:
                raise ParamsError("delta base %d no longer matches" % base)
            with open(self._p(entry["delta_file"]), "rb") as f:
                size = os.stat(self._p(entry["delta_file"]))[6]
                hdr = bundle._parse_header(self._head(f), size)
                _, adds, removes = bundle.read_delta(f, hdr)
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
        elif entry.get("bl") is not None:
            new["ov"] = None  # a full list replaces every delta
        # A delta-only bundle's own file is not needed once its overlay exists.
        new.pop("delta", None)
        new.pop("delta_file", None)
        st["active"] = new
        if st.get("pending") and st["pending"]["version"] == entry["version"]:
            st["pending"] = None
        self._write_state(st)
        self.state = st
        _log.info("parameters %d active (blacklist %d)", new["version"], new["bl_version"])
        self._collect()
        try:
            self._open(new)
        except ParamsError as e:
            _log.error("%s", e)
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
            self.state = st
            self._collect()
            return False
        return True

    def install_bytes(self, data, now, name="incoming.tmp"):
        """Write `data` into the parameter directory, then install() it (tests, bench)."""
        path = self._p(name)
        with open(path, "wb") as f:
            f.write(data)
        return self.install(path, now)

    def close(self):
        self._close()
