"""The bench's scenario format (docs/scenarios.md): the names a scenario may use, the table of
event kinds (EVENTS: tools/simbench.py registers each kind's handler with @step), the checks that
refuse a scenario with a misspelled key, an unknown rider, profile, validator, command or
outcome before anything runs, and the generated long days of [generate]."""

import datetime
import random
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import messages  # noqa: E402
import record  # noqa: E402
import timeutil  # noqa: E402

from tools.sim.bench_hub import READERS  # noqa: E402
from tools.sim.card import PROFILE_DIR, load_profile  # noqa: E402

# Virtual seconds `wait = "upload"` allows by default: beyond a 10-minute back-off.
WAIT_UPLOAD_S = 900
TZ = timeutil.DEFAULT_TZ_SECONDS


# Card commands a scenario can pull the card or cut the power at: name -> (INS, P2 or None,
# what the operator calls it). `read18` is the recovery's READ RECORD of the 0x18 history,
# `prove` its GET TRANSACTION PROVE (805A).
COMMANDS = {
    "select": (0xA4, None, "SELECT"),
    "read": (0xB0, None, "READ BINARY"),
    "balance": (0x5C, None, "GET BALANCE"),
    "init": (0x50, None, "INITIALIZE FOR CAPP PURCHASE"),
    "update": (0xDC, None, "UPDATE CAPP DATA CACHE"),
    "debit": (0x54, None, "DEBIT FOR CAPP PURCHASE"),
    "read18": (0xB2, 0xC4, "READ RECORD 0x18"),
    "prove": (0x5A, None, "GET TRANSACTION PROVE"),
    "challenge": (0x84, None, "GET CHALLENGE"),
    "block": (0x1E, None, "APPLICATION BLOCK"),
    "get_response": (0xC0, None, "GET RESPONSE"),
}


STEPS = COMMANDS  # the older name


# Stages of the network exchanges a power cut can be placed at (`power_cut = "upload:stored"`).
# upload: sent (the request is on its way: power dies before the back office has it), stored
# (the back office stored it, its answer never arrives), acknowledged (the validator wrote the
# acknowledgement to its log). params: requested, downloaded (served, never received), chunk#n
# (the n-th ranged answer of a big fleet-signed bundle served, never received), activated (the
# validator switched to the new bundle).
NET_STAGES = {
    "upload": ("sent", "stored", "acknowledged"),
    "params": ("requested", "downloaded", "chunk", "activated"),
}


FLAG_NAMES = {
    "mac2_unverified": record.FLAG_MAC2_UNVERIFIED,
    "tac_missing": record.FLAG_TAC_MISSING,
    "clock_unset": record.FLAG_CLOCK_UNSET,
    "test": record.FLAG_TEST,
    "app_locked": record.FLAG_APP_LOCKED,
}


REASON_NAMES = {
    "blacklist": record.REASON_BLACKLIST,
    "locked": record.REASON_LOCKED,
    "expired": record.REASON_EXPIRED,
    "not_whitelisted": record.REASON_NOT_WHITELISTED,
    "insufficient": record.REASON_INSUFFICIENT,
    "not_enabled": record.REASON_NOT_ENABLED,
    "other": record.REASON_OTHER,
}


KINDS = {name: k for k, name in record.KIND_NAMES.items()}


TAP_REASONS = set(messages.TEXTS) | {"any"}


TOP_KEYS = {
    "name",
    "description",
    "start",
    "seed",
    "upload_timeout_s",
    "validator",
    "validators",
    "cards",
    "events",
    "generate",
    "expect",
}


VALIDATOR_KEYS = {
    "device",
    "secret",
    "route",
    "stop",
    "reader",
    "modem",
    "city",
    "institution",
    "params",
    "params_version",
    "watchdog_ms",
    "upload_interval_s",
    "terminal_id",
    "txlog_sectors",
    "signed",
    "rtc_chip",  # docs/time.md
    "clock_policy",
}


CARD_KEYS = {"profile", "uid", "variant", "apps"}


GENERATE_KEYS = {"seed", "taps", "power_cuts", "pulls", "cards", "validators", "upload_every"}


EXPECT_KEYS = {"balances", "revenue", "unconfirmed", "records", "cards", "held"}


EXPECT_RECORD_KEYS = {
    "validator",
    "kind",
    "reason",
    "flags",
    "amount",
    "card",
    "time",
    "after",
    "before",
    "count",
}


EXPECT_CARD_KEYS = {"balance", "lock", "used_overdraft", "atc", "apps", "debits"}


COMMON_KEYS = {"at", "validator"}


class ScenarioError(ValueError):
    pass


def validator_time(text):
    """ISO 8601 with offset -> validator seconds (since 2000-01-01 UTC)."""
    dt = datetime.datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone(datetime.timedelta(seconds=TZ)))
    epoch = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    return int((dt - epoch).total_seconds())


def parse_duration(text):
    """'90s', '5m', '1h' or a number of seconds -> seconds; None if it is none of these."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    m = re.fullmatch(r"(\d+)(s|m|h)?", str(text))
    if not m:
        return None
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def parse_command(spec):
    """'after:debit', 'before:read18', 'debit' (after), 'after:update#2' (its 2nd time in the
    tap) -> (when, name, n). ScenarioError when it names no card command."""
    text = str(spec)
    when, _, rest = text.partition(":") if ":" in text else ("after", "", text)
    name, _, n = rest.partition("#")
    if when not in ("before", "after") or name not in COMMANDS or (n and not n.isdigit()):
        raise ScenarioError(
            "%r is not a card command: [before:|after:]NAME[#n], NAME one of %s"
            % (spec, ", ".join(COMMANDS))
        )
    return when, name, int(n or 1)


# ---- the table of event kinds: tools/simbench.py registers each handler with @step ------------

EVENTS = {}  # key -> Step


class Step:
    def __init__(self, key, run, keys, check):
        self.key = key
        self.run = run  # fn(bench, unit, ev)
        self.keys = frozenset(keys) | {key} | COMMON_KEYS
        self.check = check  # fn(ev, scenario) raising ScenarioError, or None


def step(key, keys=(), check=None):
    """Register fn(bench, unit, ev) as the event whose key is `key`; `keys` are the other keys
    it takes; `check(ev, scenario)` runs when the scenario is loaded (ScenarioError if wrong)."""

    def deco(fn):
        EVENTS[key] = Step(key, fn, keys, check)
        return fn

    return deco


def event_kind(ev):
    """The step an event is: of the steps whose key it carries, the first that takes all its
    keys (a tap with a power cut is a tap; a power cut alone is a power cut)."""
    found = [EVENTS[key] for key in EVENTS if key in ev]
    for st in found:
        if set(ev) <= st.keys:
            return st
    return found[0] if found else None


def _check_tap(ev, sc):
    names = ev["tap"] if isinstance(ev["tap"], list) else [ev["tap"]]
    for n in names:
        if n not in sc["cards"]:
            raise ScenarioError(
                "tap: no rider %r among the cards (%s)" % (n, ", ".join(sc["cards"]))
            )
    if ev.get("pull") is not None:
        parse_command(ev["pull"])
    cut = ev.get("power_cut")
    if cut is not None and cut != "random":
        parse_command(cut)
    if ev.get("pull") is not None and cut is not None:
        raise ScenarioError("tap: pull and power_cut together: one fault per tap")
    want = ev.get("expect")
    for w in want if isinstance(want, list) else ([want] if want is not None else []):
        if w not in TAP_REASONS:
            raise ScenarioError(
                "tap: expect %r is no outcome (%s)" % (w, ", ".join(sorted(TAP_REASONS)))
            )


def _check_power_cut(ev, sc):
    cut = ev["power_cut"]
    if cut is True:
        return
    what, _, stage = str(cut).partition(":")
    if what == "params":
        raise ScenarioError("power_cut %r: a parameter cut goes with its params_push" % cut)
    if what != "upload" or stage not in NET_STAGES["upload"]:
        raise ScenarioError(
            "power_cut %r: true, a card command (with tap), or upload:%s"
            % (cut, "|".join(NET_STAGES["upload"]))
        )


def _check_updown(ev, sc):
    key = "modem" if "modem" in ev else "server"
    if ev[key] not in ("up", "down"):
        raise ScenarioError("%s = %r: 'up' or 'down'" % (key, ev[key]))


def _check_params(ev, sc):
    p = ev["params_push"]
    if not isinstance(p, dict) or "version" not in p:
        raise ScenarioError(
            "params_push needs {version = n, dir = ..., blacklist = [...], cards = n}"
        )
    extra = set(p) - {"version", "dir", "blacklist", "cards"}
    if extra:
        raise ScenarioError("params_push: unknown key(s) %s" % ", ".join(sorted(extra)))
    if not (ROOT / p.get("dir", "tools/params/example") / "fares.toml").exists():
        raise ScenarioError("params_push: no fares.toml in %s" % p.get("dir"))
    cut = ev.get("power_cut")
    if cut is not None:
        what, _, stage = str(cut).partition(":")
        stage, _, n = stage.partition("#")
        if what != "params" or stage not in NET_STAGES["params"] or (n and not n.isdigit()):
            raise ScenarioError(
                "params_push with power_cut %r: params:%s (chunk#n: the n-th range)"
                % (cut, "|".join(NET_STAGES["params"]))
            )


def _check_wait(ev, sc):
    w = ev["wait"]
    if w != "upload" and parse_duration(w) is None:
        raise ScenarioError("wait = %r: 'upload' or a duration ('90s', '5m', '1h')" % (w,))
    if "within" in ev and parse_duration(ev["within"]) is None:
        raise ScenarioError("wait: within = %r is no duration" % (ev["within"],))


def generate_events(sc):
    """[generate]: a long random day, reproducible from its seed: taps by random riders, some
    pulled at a random step, some cut by a power loss at a random step or moment; after each,
    the rider taps again (as riders do when the validator says so)."""
    g = sc["generate"]
    rng = random.Random(int(g.get("seed", 1)))
    names = g.get("cards") or [
        n
        for n, c in sorted(sc["cards"].items())
        if c.get("profile", "tunion_plain") not in ("unionpay_only", "mifare_classic")
    ]
    units = g.get("validators")
    steps = ["select", "read", "init", "update", "debit"]
    n_taps = int(g.get("taps", 40))
    every = int(g.get("upload_every", 0))
    cuts = set(rng.sample(range(n_taps), min(n_taps, int(g.get("power_cuts", 0)))))
    rest = [i for i in range(n_taps) if i not in cuts]
    pulls = set(rng.sample(rest, min(len(rest), int(g.get("pulls", 0)))))
    events = []
    for i in range(n_taps):
        name = rng.choice(names)
        ev = {"at": "+%ds" % rng.randint(20, 120), "tap": name, "expect": "any", "_generated": 1}
        if units:
            ev["validator"] = rng.choice(units)
        if i in cuts:
            ev["power_cut"] = rng.choice(steps + ["random"])
        elif i in pulls:
            ev["pull"] = rng.choice(("before", "after")) + ":" + rng.choice(steps)
        events.append(ev)
        if i in cuts or i in pulls:
            again = {"at": "+%ds" % rng.randint(3, 15), "tap": name, "expect": "any"}
            if units:
                again["validator"] = ev["validator"]
            events.append(again)
        if every and (i + 1) % every == 0:
            events.append({"wait": "upload"})  # a stop at the terminus: idle, uploads done
    return events


def validators_of(sc):
    """{name: settings}: [validator] is one named "validator"; [validators.NAME] are several."""
    if "validators" in sc:
        return dict(sc["validators"])
    return {"validator": sc.get("validator", {})}


def _unknown(where, given, allowed):
    extra = sorted(set(given) - set(allowed))
    if extra:
        raise ScenarioError(
            "%s: unknown key%s %s (known: %s)"
            % (
                where,
                "s" if len(extra) > 1 else "",
                ", ".join(map(repr, extra)),
                ", ".join(sorted(allowed)),
            )
        )


def check_scenario(sc, path="scenario"):
    """Every key spelled as the format has it, every rider, profile, validator, command and
    outcome known: a scenario is refused before anything runs, with what is wrong in it."""
    _unknown(path, sc, TOP_KEYS)
    if ("validator" in sc) == ("validators" in sc) or "cards" not in sc:
        raise ScenarioError("%s: needs [validator] (or [validators.NAME]) and [cards]" % path)
    units = validators_of(sc)
    if not units:
        raise ScenarioError("%s: [validators] names no validator" % path)
    devices = set()
    for i, (name, v) in enumerate(units.items()):
        where = "%s: [validator%s]" % (path, "s." + name if "validators" in sc else "")
        if not isinstance(v, dict):
            raise ScenarioError("%s is not a table" % where)
        _unknown(where, v, VALIDATOR_KEYS)
        if v.get("reader", "pn532_i2c") not in READERS:
            raise ScenarioError(
                "%s: reader %r is none of %s" % (where, v["reader"], ", ".join(READERS))
            )
        if v.get("modem", "sim7600") not in ("sim7600", "quectel", "socket"):
            raise ScenarioError("%s: modem %r: sim7600, quectel or socket" % (where, v["modem"]))
        device = int(v.get("device", 1001 + i))
        if device in devices:
            raise ScenarioError("%s: device %d is another validator's" % (where, device))
        devices.add(device)
        if not (ROOT / v.get("params", "tools/params/example") / "fares.toml").exists():
            raise ScenarioError("%s: no fares.toml in %s" % (where, v.get("params")))
    for name, c in sc["cards"].items():
        where = "%s: [cards.%s]" % (path, name)
        profile = c.get("profile", "tunion_plain")
        try:
            prof = load_profile(profile)
        except (OSError, ValueError):
            known = sorted(p.stem for p in PROFILE_DIR.glob("*.json"))
            raise ScenarioError("%s: no card profile %r (%s)" % (where, profile, ", ".join(known)))
        fields = set((prof.get("tunion") or {}).keys())
        _unknown(where, c, CARD_KEYS | fields)
        kinds = {a["kind"] for a in prof.get("apps", [])}
        for kind in c.get("apps", {}):
            if kind not in kinds:
                raise ScenarioError("%s: apps: the card has no %r application" % (where, kind))
    _check_generate(sc, path, units)
    for i, ev in enumerate(sc.get("events", [])):
        where = "%s: event %d (%s)" % (
            path,
            i + 1,
            ", ".join("%s=%r" % kv for kv in list(ev.items())[:3]),
        )
        kind = event_kind(ev)
        if kind is None:
            raise ScenarioError("%s: no known event in it (%s)" % (where, ", ".join(EVENTS)))
        _unknown(where, ev, kind.keys)
        if "validator" in ev and ev["validator"] not in units:
            raise ScenarioError(
                "%s: no validator %r (%s)" % (where, ev["validator"], ", ".join(units))
            )
        if "at" in ev:
            _check_at(where, ev["at"])
        if kind.check is not None:
            try:
                kind.check(ev, sc)
            except ScenarioError as e:
                raise ScenarioError("%s: %s" % (where, e))
    _check_expect(sc, path, units)


def _check_at(where, at):
    at = str(at)
    if re.fullmatch(r"\+\d+(s|m|h)?|\d\d:\d\d(:\d\d)?", at):
        return
    try:
        validator_time(at)
    except ValueError:
        raise ScenarioError(
            "%s: at = %r: 'HH:MM[:SS]', '+90s'/'+5m'/'+1h' or ISO date-time" % (where, at)
        )


def _check_generate(sc, path, units):
    g = sc.get("generate")
    if g is None:
        return
    _unknown("%s: [generate]" % path, g, GENERATE_KEYS)
    for n in g.get("cards", []):
        if n not in sc["cards"]:
            raise ScenarioError("%s: [generate] cards: no rider %r" % (path, n))
    for n in g.get("validators", []):
        if n not in units:
            raise ScenarioError("%s: [generate] validators: no validator %r" % (path, n))


def _check_expect(sc, path, units):
    e = sc.get("expect", {})
    where = "%s: [expect]" % path
    _unknown(where, e, EXPECT_KEYS)
    for n in e.get("balances", {}):
        if n not in sc["cards"]:
            raise ScenarioError("%s balances: no rider %r" % (where, n))
    for n, want in e.get("cards", {}).items():
        if n not in sc["cards"]:
            raise ScenarioError("%s cards: no rider %r" % (where, n))
        _unknown("%s cards.%s" % (where, n), want, EXPECT_CARD_KEYS)
        if want.get("lock") not in (None, "none", False, "temporary", "permanent"):
            raise ScenarioError(
                "%s cards.%s: lock %r: none, temporary or permanent" % (where, n, want["lock"])
            )
    for i, r in enumerate(e.get("records", [])):
        w = "%s records %d" % (where, i + 1)
        _unknown(w, r, EXPECT_RECORD_KEYS)
        if "kind" in r and r["kind"] not in KINDS:
            raise ScenarioError("%s: kind %r is none of %s" % (w, r["kind"], ", ".join(KINDS)))
        if "card" in r and r["card"] not in sc["cards"]:
            raise ScenarioError("%s: no rider %r" % (w, r["card"]))
        if "validator" in r and r["validator"] not in units:
            raise ScenarioError("%s: no validator %r" % (w, r["validator"]))
        if isinstance(r.get("reason"), str) and r["reason"] not in REASON_NAMES:
            raise ScenarioError(
                "%s: reason %r is none of %s" % (w, r["reason"], ", ".join(REASON_NAMES))
            )
        for f in r.get("flags", []) if isinstance(r.get("flags"), list) else []:
            if f not in FLAG_NAMES:
                raise ScenarioError("%s: flag %r is none of %s" % (w, f, ", ".join(FLAG_NAMES)))
        for key in ("time", "after", "before"):
            if key in r:
                _check_at(w, r[key])


def load_scenario(path):
    import tools.simbench  # noqa: F401 - its handlers fill the table of event kinds (EVENTS)

    with open(path, "rb") as f:
        try:
            sc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ScenarioError("%s: %s" % (path, e))
    check_scenario(sc, str(path))
    if "generate" in sc:
        sc["events"] = list(sc.get("events", [])) + generate_events(sc)
    return sc
