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
    # An accepted tap leaving less than this (fen) also says "top up soon" (OK_LOW: its own
    # text and a double beep). 500 = 5.00 yuan; 0 never says it (docs/operators.md).
    "low_balance_fen": 500,
}
_LOW_BALANCE_MAX = 100000  # 1000.00 yuan: anything above is a typo (yuan meant as fen x100)
_EN_MAX = 16  # the 8x8 font: 16 characters across the 128-pixel display
_ROW_PX = 128


def _check_messages(msgs):
    """config "messages": {reason: [Chinese, English]} replacing the passenger texts of
    firmware/messages.py. Every Chinese character must be in the display font."""
    if not isinstance(msgs, dict):
        raise ConfigError("messages must be an object of reason -> [Chinese, English]")
    import font_zh16  # here: loaded by the display anyway, by nobody else
    import messages

    for reason, pair in msgs.items():
        if reason not in messages.TEXTS:
            raise ConfigError(
                "messages: unknown reason %r (the reasons: docs/operators.md)" % reason
            )
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(x, str) for x in pair)
        ):
            raise ConfigError("messages %s: want [Chinese, English]" % reason)
        zh, en = pair
        if len(en) > _EN_MAX or any(ord(c) >= 0x80 for c in en):
            raise ConfigError(
                "messages %s: English %r: at most 16 plain ASCII characters" % (reason, en)
            )
        width = 0
        for c in zh:
            if ord(c) < 0x80:
                width += 8
            elif font_zh16.CHARS.find(c) < 0:
                raise ConfigError(
                    "messages %s: %r is not in the display font (add it: python -m tools.fontgen)"
                    % (reason, c)
                )
            else:
                width += 16
        if width > _ROW_PX:
            raise ConfigError("messages %s: Chinese %r is wider than the display" % (reason, zh))


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
    low = cfg["low_balance_fen"]
    if not isinstance(low, int) or isinstance(low, bool) or not 0 <= low <= _LOW_BALANCE_MAX:
        raise ConfigError("low_balance_fen must be a number of fen from 0 to 100000 (1000 yuan)")
    if "messages" in cfg:
        _check_messages(cfg["messages"])
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
