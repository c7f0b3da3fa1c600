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
    if cfg["stop_source"] not in ("fixed", "driver", "gps"):
        raise ConfigError("stop_source must be fixed, driver or gps")
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
