# Per-vehicle configuration, provisioned with tools/provision.py and kept on the device in
# /config.json, never in code. Loaded once at boot; a missing or bad file stops the validator
# with a clear message on the display rather than running with guessed values.
import json

import log

_log = log.get("config")

REQUIRED = ("device_id", "secret", "route", "city", "institution", "collector_url")
DEFAULTS = {
    "stop_source": "fixed",  # fixed | driver | gps
    "stop": 0,
    "operator": 1,
    "vehicle": "",
    "tz_seconds": 8 * 3600,
    "modem": "sim7600",  # sim7600 | quectel | socket
    "apn": "cmnet",
    "lock_blacklisted": True,
    "uplink_interval_s": 300,
    # Without trusted time (docs/time.md): "last_known" sells on the last known time plus the
    # board's count since the start, records flagged; "refuse" sells nothing until it is set.
    "clock_policy": "last_known",
}


class ConfigError(ValueError):
    pass


def validate(raw):
    if not isinstance(raw, dict):
        raise ConfigError("config is not an object")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ConfigError("config lacks " + ", ".join(missing))
    cfg = dict(DEFAULTS)
    cfg.update(raw)
    secret = cfg["secret"]
    try:
        cfg["secret_bytes"] = bytes.fromhex(secret)
    except (ValueError, TypeError):
        raise ConfigError("secret must be hex")
    if len(cfg["secret_bytes"]) < 16:
        raise ConfigError("secret must be at least 16 bytes")
    dev = cfg["device_id"]
    # The protocol carries the device number as an unsigned 32-bit field (docs/protocol.md).
    if not isinstance(dev, int) or isinstance(dev, bool) or not 0 < dev <= 0xFFFFFFFF:
        raise ConfigError("device_id must be a number from 1 to 4294967295")
    for key in ("city", "institution"):
        value = cfg[key]
        if not isinstance(value, str) or not value.isdigit():
            raise ConfigError(key + " must be a string of digits (BCD)")
    if len(cfg["city"]) != 4:
        raise ConfigError("city must be 4 digits")
    if len(cfg["institution"]) != 16:
        raise ConfigError("institution must be 16 digits (8 BCD bytes)")
    # Fleet parameter keys (docs/parameters.md "Fleet signature"): {"id": "04...hex"}, the
    # current and the next; with them only fleet-signed bundles install. groups: the device
    # groups a bundle's scope may name.
    keys = cfg.get("param_keys", {})
    if not isinstance(keys, dict):
        raise ConfigError("param_keys must be an object of key id -> public key hex")
    for kid, key in keys.items():
        if not str(kid).isdigit() or not 0 < int(kid) < 256:
            raise ConfigError("param_keys: key id %r is not 1..255" % kid)
        if not isinstance(key, str) or len(key) != 130 or not key.startswith("04"):
            raise ConfigError("param_keys %s: want 65 bytes (130 hex digits) starting 04" % kid)
    groups = cfg.get("groups", [])
    if not isinstance(groups, list) or not all(
        isinstance(g, int) and not isinstance(g, bool) and 0 < g <= 0xFFFFFFFF for g in groups
    ):
        raise ConfigError("groups must be a list of numbers from 1 to 4294967295")
    if cfg["stop_source"] not in ("fixed", "driver", "gps"):
        raise ConfigError("stop_source must be fixed, driver or gps")
    if cfg["clock_policy"] not in ("last_known", "refuse"):
        raise ConfigError("clock_policy must be last_known or refuse")
    return cfg


def load(path="/config.json"):
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError:
        raise ConfigError("no %s: provision this validator first" % path)
    except ValueError:
        raise ConfigError("%s is not valid JSON" % path)
    cfg = validate(raw)
    _log.info("device %s route %s", cfg["device_id"], cfg["route"])
    return cfg
