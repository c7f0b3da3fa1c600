# Fare engine: what to charge, and what the card's real balance must cover (docs/parameters.md).
# Everything comes from the bundle's "fares" table; nothing about prices lives in code.
#
# Pipeline for one tap: duplicate check -> open trip on the card (stage/rail tap-off or an
# unfinished trip to charge at its marked amount) -> base fare -> time-of-day rule -> card-type
# concession (local or non-local) -> transfer discount from the card's recent 0x1E records ->
# sanity cap -> no-overdraft check against the real balance when the caller gives it.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import log
import timeutil

_log = log.get("fare")

OK = "OK"
DUPLICATE = "DUPLICATE"
REFUSED = "REFUSED"

# 0x1E transaction types (QT-TOOL, JTB-H; docs/sources.md)
TXN_BOARD = const(0x03)
TXN_ALIGHT = const(0x04)
TXN_SINGLE = const(0x06)
TXN_MAKEUP = const(0x08)
IND_METRO = const(0x01)
IND_BUS = const(0x02)

_MODES = ("flat", "stage", "rail")
_RECENT = const(32)  # cards remembered for duplicate taps


class FareConfigError(ValueError):
    pass


class FareResult:
    """What the purchase and the journal need. Amounts in fen."""

    def __init__(self, status, reason=""):
        self.reset(status, reason)

    def reset(self, status, reason=""):
        """Every field back to a new result's: a caller that decides every tap refills one
        (FareEngine.compute(into=...)) instead of making 19 attributes per tap."""
        self.status = status
        self.reason = reason
        self.debit = 0
        self.must_cover = 0
        self.txn_type = TXN_SINGLE
        self.industry = IND_BUS
        self.route = 0
        self.stop = 0
        self.fare_rule = 0
        self.discount = 0
        self.base = 0
        self.penalty = 0  # unfinished earlier trip charged at its marked amount
        self.marked = 0  # 0x1A marked amount (stage/rail boarding)
        self.board_stop = 0
        self.board_time = 0
        self.transfer = 0  # 1 = first transfer, 2.. = later ones, 0 = none
        self.card_type = 0
        self.local = True
        return self

    @property
    def ok(self):
        return self.status == OK

    def request(self):
        """The fare request as firmware/purchase.py reads it (debit, must_cover, txn_type...)."""
        return {
            "debit": self.debit,
            "must_cover": self.must_cover,
            "txn_type": self.txn_type,
            "industry": self.industry,
            "route": self.route,
            "stop": self.stop,
            "fare_rule": self.fare_rule,
            "discount": self.discount if self.discount < 0x10000 else 0xFFFF,
            "marked": self.marked,
            "board_stop": self.board_stop,
            "board_time": self.board_time,
        }

    def __repr__(self):
        return "<Fare %s %s debit=%d cover=%d rule=%d disc=%d txn=%02x>" % (
            self.status,
            self.reason,
            self.debit,
            self.must_cover,
            self.fare_rule,
            self.discount,
            self.txn_type,
        )


def _get(obj, name, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _int(d, key, lo, hi, default=None):
    v = d.get(key, default)
    if v is None:
        raise FareConfigError("missing %s" % key)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
        raise FareConfigError("%s=%r not an integer in [%d, %d]" % (key, v, lo, hi))
    return v


def _hhmm(text):
    try:
        hh, mm = text.split(":")
        hh = int(hh)
        mm = int(mm)
    except (AttributeError, ValueError):
        raise FareConfigError("time %r is not HH:MM" % (text,))
    if not (0 <= hh <= 24 and 0 <= mm <= 59) or hh * 60 + mm > 1440:
        raise FareConfigError("time %r out of range" % (text,))
    return (hh * 60 + mm) * 60


def _pct(amount, pct):
    # round half up to the fen
    return (amount * pct + 50) // 100


class _Ride:
    pass


def parse_record(rec, tz):
    """One 48-byte 0x1E record -> _Ride, or None when empty or malformed."""
    if not isinstance(rec, (bytes, bytearray, memoryview)) or len(rec) < 32:
        return None
    typ = rec[0]
    if typ == 0 or typ == 0xFF:
        return None
    r = _Ride()
    r.typ = typ
    r.terminal = bytes(rec[1:9])
    r.industry = rec[9]
    r.route = (rec[10] << 8) | rec[11]
    r.stop = (rec[12] << 8) | rec[13]
    r.amount = (rec[17] << 24) | (rec[18] << 16) | (rec[19] << 8) | rec[20]
    try:
        r.time = timeutil.parse_bcd_datetime(rec[25:32], tz)
    except ValueError:
        return None
    return r


class FareTable:
    """The validated "fares" object of a bundle's config. FareConfigError tells what is wrong."""

    def __init__(self, fares, settings=None):
        if not isinstance(fares, dict):
            raise FareConfigError("fares is not an object")
        settings = settings or {}
        if not isinstance(settings, dict):
            raise FareConfigError("settings is not an object")
        self.max_fare = _int(settings, "max_fare", 1, 1000000, 5000)
        self.dup_s = _int(settings, "dup_tap_s", 0, 86400, 60)
        self.tz = _int(settings, "tz_s", -14 * 3600, 14 * 3600, timeutil.DEFAULT_TZ_SECONDS)
        self.routes = {}
        rail_max = 0
        routes = fares.get("routes")
        if not isinstance(routes, dict) or not routes:
            raise FareConfigError("no routes")
        for key, r in routes.items():
            try:
                num = int(key)
            except ValueError:
                raise FareConfigError("route %r is not a number" % (key,))
            if not 0 <= num <= 0xFFFF or not isinstance(r, dict):
                raise FareConfigError("route %r out of range or not an object" % (key,))
            mode = r.get("mode", "flat")
            if mode not in _MODES:
                raise FareConfigError("route %d: unknown mode %r" % (num, mode))
            # rule ids are one byte in the journal record; 0 = "the route's own fare"
            rt = {"mode": mode, "rule": _int(r, "rule", 0, 255, 0)}
            if mode == "flat":
                rt["fare"] = _int(r, "fare", 0, 1000000)
                rt["max"] = rt["fare"]
            else:
                stages = r.get("stages")
                table = r.get("fares")
                if not isinstance(stages, list) or not isinstance(table, list) or not table:
                    raise FareConfigError("route %d: stages and fares must be lists" % num)
                for s in stages:
                    if not isinstance(s, int) or s < 0 or s > 255:
                        raise FareConfigError("route %d: stage %r" % (num, s))
                for f in table:
                    if not isinstance(f, int) or f < 0 or f > 1000000:
                        raise FareConfigError("route %d: fare %r" % (num, f))
                if len(stages) > 256:
                    # the 0x1A bus record keeps a stop in one byte
                    raise FareConfigError("route %d: more than 256 stops" % num)
                rt["stages"] = stages
                rt["fares"] = table
                rt["max"] = max(table)
                rt["max_trip_s"] = _int(r, "max_trip_s", 60, 86400, 7200)
                if mode == "rail":
                    rail_max = max(rail_max, rt["max"])
            rt["industry"] = IND_METRO if mode == "rail" else IND_BUS
            self.routes[num] = rt
        self.rail_max = _int(fares, "rail_max_fare", 0, 1000000, rail_max)
        if self.rail_max < rail_max:
            raise FareConfigError("rail_max_fare below a rail route's own maximum")
        self.card_types = {}
        types = fares.get("card_types")
        if not isinstance(types, dict) or not types:
            raise FareConfigError("no card_types")
        for key, c in types.items():
            if key == "default":
                num = -1
            else:
                try:
                    num = int(key)
                except ValueError:
                    raise FareConfigError("card type %r is not a number" % (key,))
                if not 0 <= num <= 255:
                    raise FareConfigError("card type %d out of range" % num)
            if not isinstance(c, dict):
                raise FareConfigError("card type %r is not an object" % (key,))
            local_pct = _int(c, "local_pct", 0, 100, 100)
            self.card_types[num] = {
                "name": str(c.get("name", key)),
                "accept": bool(c.get("accept", True)),
                "local_pct": local_pct,
                "nonlocal_pct": _int(c, "nonlocal_pct", 0, 100, 100),
                "dup_s": _int(c, "dup_tap_s", 0, 86400, self.dup_s),
                "transfer": bool(c.get("transfer", True)),
            }
        self.time_rules = []
        for t in fares.get("time_rules", ()):
            if not isinstance(t, dict):
                raise FareConfigError("time rule is not an object")
            rule = {
                "id": _int(t, "id", 1, 255),
                "start": _hhmm(t.get("start")),
                "end": _hhmm(t.get("end")),
                "days": t.get("days"),
                "routes": t.get("routes"),
                "card_types": t.get("card_types"),
            }
            if "pct" in t:
                rule["pct"] = _int(t, "pct", 0, 1000)
            elif "fare" in t:
                rule["fare"] = _int(t, "fare", 0, 1000000)
            else:
                raise FareConfigError("time rule %d needs pct or fare" % rule["id"])
            for name in ("days", "routes", "card_types"):
                v = rule[name]
                if v is not None and not (
                    isinstance(v, list) and all(isinstance(x, int) for x in v)
                ):
                    raise FareConfigError("time rule %d: %s must be a list" % (rule["id"], name))
            self.time_rules.append(rule)
        tr = fares.get("transfer")
        self.transfer = None
        if tr is not None:
            if not isinstance(tr, dict):
                raise FareConfigError("transfer is not an object")
            frm = tr.get("from", "previous")
            if frm not in ("previous", "first"):
                raise FareConfigError("transfer.from must be previous or first")
            inds = tr.get("industries", [IND_METRO, IND_BUS])
            if not isinstance(inds, list):
                raise FareConfigError("transfer.industries must be a list")
            self.transfer = {
                "window": _int(tr, "window_s", 0, 86400),
                "from": frm,
                "max": _int(tr, "max_count", 0, 100, 1),
                "first_off": _int(tr, "first_off", 0, 1000000, 0),
                "first_pct": _int(tr, "first_pct", 0, 100, 100),
                "later_off": _int(tr, "later_off", 0, 1000000, 0),
                "later_pct": _int(tr, "later_pct", 0, 100, 100),
                "industries": inds,
                "same_route": bool(tr.get("same_route", False)),
                "nonlocal": bool(tr.get("nonlocal", True)),
            }


class FareEngine:
    """Decides one tap. `terminal` is this validator's 8-byte terminal number (0x1E bytes 1-8)."""

    def __init__(self, table, terminal=b"\x00" * 8):
        self.t = table
        self.terminal = bytes(terminal)
        self._recent = {}  # card number -> (time, route, stop)

    def records_wanted(self, route):
        """How many recent 0x1E records compute() can use on this route (each is one APDU):
        the transfer chain's rides, plus the open boarding on stage and rail routes."""
        want = 0
        tr = self.t.transfer
        if tr is not None and tr["max"]:
            want = tr["max"] + 1
        rt = self.t.routes.get(route)
        if rt is not None and rt["mode"] != "flat":
            want += 1
        return want

    # -- duplicate taps --------------------------------------------------------------------

    def paid(self, res, card_no, now):
        """Call after a successful purchase so a re-tap is answered "already paid"."""
        if res.txn_type == TXN_MAKEUP:
            return  # the rider taps again to board; that tap is not a duplicate
        rec = self._recent
        if card_no not in rec and len(rec) >= _RECENT:
            oldest = None
            for k, v in rec.items():
                if oldest is None or v[0] < rec[oldest][0]:
                    oldest = k
            del rec[oldest]
        rec[card_no] = (now, res.route, res.stop)

    def _duplicate(self, card_no, ct, rt, route, stop, now, last):
        window = ct["dup_s"]
        if not window:
            return False
        same_stop_matters = rt["mode"] != "flat"
        seen = self._recent.get(card_no)
        if seen is not None and 0 <= now - seen[0] < window and seen[1] == route:
            if not same_stop_matters or seen[2] == stop:
                return True
        # The card's own newest record survives a reboot of this validator.
        if (
            last is not None
            and last.typ != TXN_MAKEUP
            and last.terminal == self.terminal
            and last.route == route
            and 0 <= now - last.time < window
        ):
            if not same_stop_matters or last.stop == stop:
                return True
        return False

    # -- building blocks -------------------------------------------------------------------

    def _time_rule(self, now, route, card_type):
        local = now + self.t.tz
        sod = local % 86400
        weekday = (local // 86400 + 5) % 7 + 1  # 2000-01-01 was a Saturday (ISO 6)
        for r in self.t.time_rules:
            start = r["start"]
            end = r["end"]
            inside = start <= sod < end if start <= end else (sod >= start or sod < end)
            if not inside:
                continue
            if r["days"] is not None and weekday not in r["days"]:
                continue
            if r["routes"] is not None and route not in r["routes"]:
                continue
            if r["card_types"] is not None and card_type not in r["card_types"]:
                continue
            return r
        return None

    def _transfer_index(self, rides, ref, route, industry):
        """How many earlier rides chain into this one within the window (0: not a transfer)."""
        tr = self.t.transfer
        if tr is None or not tr["max"]:
            return 0
        window = tr["window"]
        count = 0
        prev_time = ref
        prev_route = (industry, route)
        for r in rides:
            if r.typ not in (TXN_BOARD, TXN_SINGLE) or r.industry not in tr["industries"]:
                continue
            if r.time > ref:
                break  # a record from the future: do not reward a wrong clock
            since = (prev_time if tr["from"] == "previous" else ref) - r.time
            if since > window:
                break
            if not tr["same_route"] and (r.industry, r.route) == prev_route:
                break
            count += 1
            prev_time = r.time
            prev_route = (r.industry, r.route)
        return count

    def _price(self, res, base, now, route, ctn, ct, local, rides, ref):
        """Apply time rule, concession and transfer to `base`; fill res; return the amount."""
        amount = base
        rt = self.t.routes[route]
        res.fare_rule = rt["rule"]
        rule = self._time_rule(now, route, ctn)
        if rule is not None:
            amount = _pct(amount, rule["pct"]) if "pct" in rule else rule["fare"]
            res.fare_rule = rule["id"]
        amount = _pct(amount, ct["local_pct"] if local else ct["nonlocal_pct"])
        tr = self.t.transfer
        if tr is not None and ct["transfer"] and (local or tr["nonlocal"]):
            n = self._transfer_index(rides, ref, route, rt["industry"])
            if 0 < n <= tr["max"]:
                res.transfer = n
                if n == 1:
                    amount = _pct(amount, tr["first_pct"]) - tr["first_off"]
                else:
                    amount = _pct(amount, tr["later_pct"]) - tr["later_off"]
        return amount if amount > 0 else 0

    def _marked(self, rt, ct, local):
        # The most this card can owe on the route: what an unfinished trip is charged.
        return _pct(rt["max"], ct["local_pct"] if local else ct["nonlocal_pct"])

    # -- the decision ----------------------------------------------------------------------

    def compute(self, card, route, stop, now, local=True, balance=None, overdrawn=0, into=None):
        """See _compute. Whatever the input, this returns a FareResult and never raises.
        into: a FareResult to refill for a sale or a duplicate (refusals stay new results), so
        the caller's previous result is overwritten; None: a new one."""
        if (
            not isinstance(route, int)
            or not isinstance(stop, int)
            or not isinstance(now, int)
            or stop < 0
        ):
            _log.error("route, stop and time must be integers: %r %r %r", route, stop, now)
            return FareResult(REFUSED, "bad input")
        try:
            return self._compute(card, route, stop, now, local, balance, overdrawn, into)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
            _log.error("fare input refused: %r", e)
            return FareResult(REFUSED, "bad input")

    def _compute(self, card, route, stop, now, local, balance, overdrawn, into=None):
        """Decide a tap of `card` at (route, stop) at validator time `now`.

        card: parsed card (attributes or dict keys): card_no, card_type (0x17 byte 10),
        records (recent 48-byte 0x1E records, newest first). `local` comes from the whitelist
        check. When `balance` (the real balance, without overdraft) is given, a fare it cannot
        cover is refused, as is a card with `overdrawn` > 0. Never raises on bad card data.
        """
        t = self.t
        if isinstance(card, dict):  # the Decider's view: no helper call per field
            card_no = card.get("card_no")
            ctn = card.get("card_type")
            recs = card.get("records")
        else:
            card_no = _get(card, "card_no")
            ctn = _get(card, "card_type")
            recs = _get(card, "records", None)
        rt = t.routes.get(route)
        if rt is None:
            _log.error("route %r is not in the fare table", route)
            return FareResult(REFUSED, "route not in fare table")
        if not isinstance(ctn, int):
            _log.warning("card type %r is not a number", ctn)
            return FareResult(REFUSED, "bad card type")
        ct = t.card_types.get(ctn) or t.card_types.get(-1)
        if ct is None or not ct["accept"]:
            _log.info("card type %d not accepted", ctn)
            return FareResult(REFUSED, "card type not accepted")
        rides = ()  # a constant when the fare read no history: nothing allocated
        if recs:
            rides = []
            for rec in recs:
                r = parse_record(rec, t.tz)
                if r is not None:
                    rides.append(r)
                else:
                    _log.debug("0x1E record skipped (empty or malformed)")
        last = rides[0] if rides else None

        res = FareResult(OK) if into is None else into.reset(OK)
        res.route = route
        res.stop = stop
        res.card_type = ctn
        res.local = bool(local)
        res.industry = rt["industry"]

        if self._duplicate(card_no, ct, rt, route, stop, now, last):
            res.status = DUPLICATE
            res.reason = "already paid"
            res.txn_type = last.typ if last is not None else TXN_SINGLE
            return res

        # An open trip: the newest ride is a boarding on one of our stage/rail routes.
        open_trip = None
        if last is not None and last.typ == TXN_BOARD:
            ort = t.routes.get(last.route)
            if ort is not None and ort["mode"] != "flat" and ort["industry"] == last.industry:
                open_trip = (last, ort)

        mode = rt["mode"]
        if open_trip is not None:
            board, ort = open_trip
            if board.route == route and mode != "flat":
                if now - board.time <= rt["max_trip_s"]:
                    return self._alight(res, board, rt, ct, ctn, local, rides, balance, overdrawn)
                # Tap-off too late: the trip closes at its marked amount (0x08 make-up).
                res.txn_type = TXN_MAKEUP
                res.base = res.debit = res.must_cover = res.penalty = self._marked(rt, ct, local)
                res.fare_rule = rt["rule"]
                res.board_stop = board.stop
                res.board_time = board.time
                _log.info("late tap-off on route %d: marked amount %d", route, res.debit)
                return self._finish(res, balance, overdrawn)
            # Boarding something else with a trip still open: that trip is charged too.
            res.penalty = self._marked(ort, ct, local)
            _log.info("unfinished trip on route %d charged %d", board.route, res.penalty)

        if mode == "flat":
            res.base = rt["fare"]
            amount = self._price(res, rt["fare"], now, route, ctn, ct, local, rides, now)
            res.txn_type = TXN_SINGLE
            res.debit = amount + res.penalty
            res.must_cover = res.debit
            res.discount = res.base - amount
        else:
            # Boarding: nothing charged now (except an unfinished trip), the marked amount
            # goes to the 0x1A record, and the balance must cover the whole route.
            if stop >= len(rt["stages"]):
                _log.error("stop %d not on route %d", stop, route)
                return FareResult(REFUSED, "stop not on route")
            res.txn_type = TXN_BOARD
            res.marked = self._marked(rt, ct, local)
            res.board_stop = stop
            res.board_time = now
            res.fare_rule = rt["rule"]
            res.debit = res.penalty
            cover = t.rail_max if mode == "rail" else rt["max"]
            res.must_cover = res.penalty + (res.marked if mode != "rail" else cover)
        return self._finish(res, balance, overdrawn)

    def _alight(self, res, board, rt, ct, ctn, local, rides, balance, overdrawn):
        stages = rt["stages"]
        stop = res.stop
        if stop >= len(stages) or board.stop >= len(stages):
            _log.error("stop %d or %d not on route %d", stop, board.stop, res.route)
            return FareResult(REFUSED, "stop not on route")
        span = stages[stop] - stages[board.stop]
        if span < 0:
            span = -span
        table = rt["fares"]
        base = table[span if span < len(table) else len(table) - 1]
        res.base = base
        # Time-of-day and transfers are judged at boarding time; the boarding record itself
        # is not an earlier ride.
        amount = self._price(
            res, base, board.time, res.route, ctn, ct, local, rides[1:], board.time
        )
        res.txn_type = TXN_ALIGHT
        res.debit = amount
        res.must_cover = amount
        res.discount = base - amount
        res.board_stop = board.stop
        res.board_time = board.time
        res.marked = self._marked(rt, ct, local)
        return self._finish(res, balance, overdrawn)

    def _finish(self, res, balance, overdrawn):
        if res.debit > self.t.max_fare:
            _log.error("fare %d above the cap %d: table error?", res.debit, self.t.max_fare)
            return FareResult(REFUSED, "fare above cap")  # nothing a caller could debit
        if overdrawn:
            _log.info("card overdrawn by %d", overdrawn)
            res.status = REFUSED
            res.reason = "card overdrawn"
        elif balance is not None and balance < res.must_cover:
            _log.info("balance %d below %d", balance, res.must_cover)
            res.status = REFUSED
            res.reason = "insufficient balance"
        return res


def from_config(cfg, terminal=b"\x00" * 8):
    """FareEngine from a bundle config dict; FareConfigError when the table is unusable."""
    if not isinstance(cfg, dict) or "fares" not in cfg:
        raise FareConfigError("config has no fares")
    return FareEngine(FareTable(cfg["fares"], cfg.get("settings")), terminal)
