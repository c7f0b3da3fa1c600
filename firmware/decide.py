# The validator's decision for one card, between reading it and debiting it: blacklist,
# whitelist/interconnection, then the fare engine. Called by the purchase (firmware/purchase.py)
# as its fare callback, so it returns a fare request, or a reason code string to refuse.
import cardlists
import fare
import log
import tunion
from apdu import ApduError

_log = log.get("decide")

# Reason codes the decision adds to the purchase's own (firmware/messages.py shows them).
ALREADY_PAID = "ALREADY_PAID"
NOT_WHITELISTED = "NOT_WHITELISTED"
NOT_INTERCONNECTED = "NOT_INTERCONNECTED"
BLACKLISTED = "BLACKLISTED"
INSUFFICIENT = "INSUFFICIENT"
FARE_CAP = "FARE_CAP"
NO_FARE = "NO_FARE"
JOURNAL_FULL = "JOURNAL_FULL"
CARD_ERROR = "CARD_ERROR"


def _refusal(reason):
    if "insufficient" in reason or "overdrawn" in reason:
        return INSUFFICIENT
    if "cap" in reason:
        return FARE_CAP
    return NO_FARE


class Decider:
    """decide(card_info) for one tap; built per tap with the link and the time."""

    def __init__(self, params, route, stop, lock_blacklisted=True):
        self.params = params
        self.route = route
        self.stop = stop
        self.lock_blacklisted = lock_blacklisted
        self.accept = True  # False when the journal cannot take another purchase
        self.link = None
        self.now = 0
        self.last = None  # the FareResult of the last decision, for engine.paid()
        self.local = None
        # What the fare engine reads of the card, refilled by every decision: no dict per tap.
        self._view = {"card_no": None, "card_type": None, "records": ()}
        # The fare engine refills this one result every decision (fare.FareResult.reset).
        self._fare = fare.FareResult(fare.OK)

    def prepare(self, link, now, accept=True):
        self.link = link
        self.now = now
        self.accept = accept
        self.last = None
        self.local = None

    def _history(self, engine):
        """Recent 0x1E records, newest first, only as many as the fare rules can use on this
        route: each is one more card APDU, and a flat fare without transfers needs none."""
        want = engine.records_wanted(self.route)
        if not want:
            return ()  # a constant: nothing allocated when the fare needs no history
        out = []
        card = tunion.Card(self.link)
        for n in range(1, want + 1):
            try:
                rec = card.read_record(tunion.SFI_1E, n, tunion.LEN_1E)
            except ApduError as e:
                _log.warning("0x1E record %d unreadable: %s", n, e)
                break
            if rec is None:
                break  # fewer records than asked (6A83): the history ends here
            out.append(rec)
        return out

    def __call__(self, info):
        if not self.accept:
            return JOURNAL_FULL
        p = self.params
        verdict = cardlists.check_blacklist(p.blacklist, info["card_no"])
        if verdict == cardlists.BLACKLISTED:
            if self.lock_blacklisted:
                return {"lock": True, "route": self.route, "stop": self.stop}
            return BLACKLISTED
        if verdict == cardlists.BAD_CARD:
            return CARD_ERROR
        # LIST_UNAVAILABLE is logged by cardlists: ride on (an unreadable list must not stop
        # the bus), the back office sees the record.
        if p.whitelist is not None:
            code, local = p.whitelist.check(
                info["issuer"], info.get("city", b"\x00\x00"), info.get("interconnect", 0)
            )
            if code == cardlists.BAD_CARD:
                return CARD_ERROR
            if code == cardlists.NOT_WHITELISTED:
                return NOT_WHITELISTED
            if code != cardlists.OK:
                return NOT_INTERCONNECTED
        else:
            local = True
        self.local = local
        engine = p.fares
        if engine is None:
            return NO_FARE
        view = self._view
        view["card_no"] = info["card_no"]
        view["card_type"] = info.get("card_type")
        # A LinkError here (the card left during a history read) reaches the purchase, which
        # says "tap again".
        view["records"] = self._history(engine)
        res = engine.compute(view, self.route, self.stop, self.now, local=local, into=self._fare)
        if res.status == fare.DUPLICATE:
            return ALREADY_PAID
        if res.status != fare.OK:
            _log.info("fare refused: %s", res.reason)
            return _refusal(res.reason)
        self.last = res
        return res
