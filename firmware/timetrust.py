# The time-trust rules (docs/time.md): which source may set the validator's clock, and when.
# Pure decisions, no I/O: firmware/clock.py asks judge() about every proposed time and applies
# what it accepts. Sources, weakest first:
#   last_known  the last time this validator knew (saved) plus what its own RTC counted since
#               the start: an estimate, never "trusted"; records sold on it carry FLAG_CLOCK_UNSET
#   rtc         the battery-backed RTC chip at start-up, when its lost-power flag is clear
#   kept        the ESP32's own RTC after a soft, watchdog or brown-out reset, vouched for by the
#               marker the last trusted setting left in RTC memory
#   network     NITZ through the modem, only after the network really sent it
#   backoffice  the collector's time in an authenticated answer
#   agreed      two different sources that agree (or the back office twice, confirm_s apart)
# Rules, in order:
#   1. a time outside 2025-01-01 .. 2069-12-31 is refused (a modem's build date, a dead chip);
#   2. a clock that never knew the time takes the first plausible source; only the back office
#      or the RTC chip make it trusted (a first network time stays unconfirmed, and a higher
#      source replaces it whatever the step);
#   3. an untrusted estimate takes a single source from its step limit behind to forward_s ahead
#      (the bus may have been parked for weeks; time never ran backwards while it was off);
#   4. a trusted clock takes a step within the source's limit (max_step_s; backoffice_step_s for
#      the authenticated back office) from a source ranked at least as high as the one that set
#      it (or any, once that setting is older than stale_s); a weaker source only agrees;
#   5. anything else is held: it is adopted only when a different source proposes a time within
#      agree_s of it, or when the back office proposes it again at least confirm_s later and the
#      step is at most confirm_max_s. So no single source moves the clock by years.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import timeutil

MIN_VALID = const(788918400)  # 2025-01-01 00:00:00 UTC
MAX_VALID = const(2208988800)  # 2070-01-01: the chips count 2000-2099; a modem's 2080 is noise
SOURCES = ("none", "last_known", "rtc", "kept", "network", "backoffice", "agreed")
RANK = {
    "none": 0,
    "last_known": 0,
    "rtc": 1,
    "kept": 1,
    "network": 2,
    "backoffice": 3,
    "agreed": 4,
}
ACCEPT = "accept"
HOLD = "hold"
REFUSE = "refuse"
AGREE = "agree"  # within the rules but no change: a weaker source that agrees

DEFAULTS = {
    "max_step_s": 900,
    "backoffice_step_s": 86400,
    "agree_s": 120,
    "forward_s": 45 * 86400,
    "stale_s": 6 * 3600,
    "confirm_s": 600,
    "confirm_max_s": 400 * 86400,
}


def code(source):
    """The source's number (the CLOCK_CHANGE record's `reason`); 0 when unknown."""
    return SOURCES.index(source) if source in SOURCES else 0


def rules_from(cfg):
    """The rules with a configuration's `clock_*` overrides (config.json, docs/time.md)."""
    r = dict(DEFAULTS)
    for key in DEFAULTS:
        v = cfg.get("clock_" + key) if cfg else None
        if isinstance(v, int) and v >= 0:
            r[key] = v
    return r


class Trust:
    def __init__(self, rules=None):
        self.rules = rules or dict(DEFAULTS)
        self.trusted = False
        self.source = "none"
        self.set_at = 0  # monotonic seconds of the last accepted setting
        self.held = {}  # source -> (time - monotonic, monotonic when proposed)

    def judge(self, est, t, source, mono):
        """Decide on `t` proposed by `source` when the clock reads `est` and the monotonic count
        is `mono` (seconds). -> (verdict, why, source to record). Changes only the held list;
        adopt() records an accepted decision."""
        if not MIN_VALID <= t < MAX_VALID:
            return REFUSE, "implausible time %s" % _date(t), source
        r = self.rules
        step = t - est
        limit = r["backoffice_step_s"] if source == "backoffice" else r["max_step_s"]
        if not self.trusted:
            if est < MIN_VALID:
                return ACCEPT, "first known time", source
            if self.source not in ("none", "last_known") and RANK.get(source, 0) > RANK.get(
                self.source, 0
            ):
                # An unconfirmed first time (the network's, on a validator that never knew the
                # time) is no estimate: a higher source replaces it whatever the step.
                return ACCEPT, "outranks the unconfirmed %s time" % self.source, source
            if self.source == "network" and source == "network":
                return AGREE, "the network does not confirm itself", source
            if -limit <= step <= max(r["forward_s"], limit):
                return ACCEPT, "within the untrusted window", source
        elif abs(step) <= limit:
            if RANK.get(source, 0) >= RANK.get(self.source, 0):
                return ACCEPT, "step within %d s" % limit, source
            if mono - self.set_at >= r["stale_s"]:
                return ACCEPT, "%s setting is stale" % self.source, source
            return AGREE, "weaker than %s, within %d s" % (self.source, limit), source
        base = t - mono
        for other, (obase, omono) in self.held.items():
            if abs(base - obase) > r["agree_s"]:
                continue
            if other != source:
                return ACCEPT, "%s agrees with %s" % (source, other), "agreed"
            if (
                source == "backoffice"
                and mono - omono >= r["confirm_s"]
                and abs(step) <= r["confirm_max_s"]
            ):
                return ACCEPT, "back office confirmed after %d s" % (mono - omono), "agreed"
        old = self.held.get(source)
        if old is None or abs(base - old[0]) > r["agree_s"]:
            self.held[source] = (base, mono)  # a new proposal restarts the confirmation wait
        return HOLD, "step %d s needs a second source" % step, source

    @staticmethod
    def confirms(source, first):
        """Whether adopting `source` makes the clock trusted: always, except a network time
        taken as the first known time (rule 2)."""
        return not (first and source == "network")

    def adopt(self, source, mono, trusted=True):
        self.trusted = trusted
        self.source = source
        self.set_at = mono
        self.held = {}


def _date(t):
    if t < -(10**9) or t > 10**10:
        return str(t)
    y, m, d, _, _, _ = timeutil.from_seconds(t)
    return "%04d-%02d-%02d" % (y, m, d)
