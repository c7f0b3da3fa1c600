"""Where the bench puts its faults: a card pulled or the power cut at a card command (a trap on
the card's exchange, so a cut lands inside that exchange), where a cut at a random moment fell,
and power cuts at a stage of an upload or parameter download (an ASGI middleware in front of the
collector)."""

import uplink_proto

from tools.simbench_load import COMMANDS, parse_command


def command_name(apdu):
    for name, (ins, p2, long) in COMMANDS.items():
        if len(apdu) > 3 and apdu[1] == ins and (p2 is None or apdu[3] == p2):
            return name, long
    return None, "%02X %02X" % (apdu[0], apdu[1]) if len(apdu) > 1 else "?"


def _matches(name, apdu):
    ins, p2, _ = COMMANDS[name]
    return len(apdu) > 3 and apdu[1] == ins and (p2 is None or apdu[3] == p2)


class CardTrap:
    """One fault armed on a card: at the n-th command `name` of the tap, `before` the card runs
    it or `after` (the answer is lost), either the card leaves the field (`pull`) or `fire` is
    called (a power cut: it kills the firmware there, in the hub's thread, so the cut lands
    exactly at that command)."""

    def __init__(self, spec, action, fire=None):
        self.when, self.name, self.n = parse_command(spec)
        self.action = action
        self.fire = fire
        self.seen = 0
        self.fired = False
        self.landed = None

    def describe(self):
        return "%s %s%s" % (
            self.when,
            COMMANDS[self.name][2],
            " (#%d)" % self.n if self.n > 1 else "",
        )


def install_traps(card):
    """Route the card's exchanges through its armed trap (card.trap, None when none)."""
    card.trap = None
    inner = card.exchange

    def exchange(apdu):
        trap = card.trap
        apdu = bytes(apdu)
        if trap is None or not card.present or not card.iso_dep or not _matches(trap.name, apdu):
            return inner(apdu)
        trap.seen += 1
        if trap.seen < trap.n:
            return inner(apdu)
        card.trap = None
        if trap.when == "after":
            inner(apdu)
        trap.fired = True
        trap.landed = "%s %s (%s) ran on card %s" % (
            "after" if trap.when == "after" else "before",
            COMMANDS[trap.name][2],
            apdu[:4].hex().upper(),
            card.name,
        )
        if trap.action == "pull":
            card.audit.append({"event": "gone " + trap.when, "apdu": apdu, "resp": None})
            card.remove()
        elif trap.fire is not None:
            trap.fire()
        return None

    card.exchange = exchange


def where_cut_landed(card, since):
    """Where a power cut at a random moment fell, from the card's own audit trail."""
    last = None
    for a in card.audit[since:]:
        if "apdu" in a:
            last = a
    if last is None:
        return "before the first command reached card %s" % card.name
    name, long = command_name(last["apdu"])
    got = "answered" if last.get("resp") is not None else "unanswered"
    return "after %s (%s, %s), the last command card %s ran" % (
        long,
        last["apdu"][:4].hex().upper(),
        got,
        card.name,
    )


class NetTrap:
    """A power cut armed at a stage of a validator's upload or parameter download."""

    def __init__(self, unit, what, stage, version=None):
        self.unit = unit
        self.what = what
        self.stage, _, n = stage.partition("#")
        self.n = int(n or 1)  # chunk#n: the n-th ranged answer
        self.seen = 0
        self.version = version
        self.fired = False
        self.landed = None

    def fire(self, detail):
        if self.fired:
            return
        self.fired = True
        self.landed = "%s %s: %s" % (self.what, self.stage, detail)
        self.unit.fw.cut()


class CutPoint:
    """ASGI middleware in front of the collector: cuts a validator's power while its request is
    in flight (`sent`, `requested`: the back office never gets it) or after the back office
    handled it and before the answer leaves (`stored`, `downloaded`). The device is the one the
    request names (uplink_proto header)."""

    def __init__(self, app, bench):
        self.app = app
        self.bench = bench

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.bench.net_traps:
            return await self.app(scope, receive, send)
        msgs = []
        body = b""
        while True:
            m = await receive()
            msgs.append(m)
            body += m.get("body", b"")
            if m["type"] != "http.request" or not m.get("more_body"):
                break
        it = iter(msgs)

        async def replay():
            try:
                return next(it)
            except StopIteration:
                return await receive()

        trap = None
        path = scope.get("path", "")
        if path.startswith("/v1/bundle/"):
            # A range of a big fleet-signed bundle: GET /v1/bundle/<v>?d=<device>&t=<token>
            query = dict(
                kv.split("=", 1)
                for kv in scope.get("query_string", b"").decode().split("&")
                if "=" in kv
            )
            device = int(query["d"]) if query.get("d", "").isdigit() else None
            trap = self.bench.net_trap_for(device, "params")
            if trap is not None and trap.stage != "chunk":
                trap = None
        elif len(body) >= uplink_proto.REQ_LEN and body[:2] == uplink_proto.MAGIC_REQ:
            device = int.from_bytes(body[4:8], "big")
            what = {uplink_proto.T_UPLOAD: "upload", uplink_proto.T_PARAMS: "params"}.get(body[3])
            trap = self.bench.net_trap_for(device, what)
        if trap is not None and trap.stage in ("sent", "requested"):
            trap.fire("power lost while the request of %d bytes was on its way" % len(body))
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"validator gone"})
            return
        if trap is None or trap.stage not in ("stored", "downloaded", "chunk"):
            return await self.app(scope, replay, send)
        held = []

        async def hold(m):
            held.append(m)

        await self.app(scope, replay, hold)
        status = next((m.get("status") for m in held if "status" in m), None)
        want = 206 if trap.stage == "chunk" else 200
        if status == want:
            trap.seen += 1
        if status != want or trap.seen < trap.n:
            # a 409 (stale counter after a boot) stored nothing; an earlier range: not yet
            for m in held:
                await send(m)
            return
        trap.fire(
            "the back office answered HTTP %s%s; power lost before the answer arrived"
            % (status, " (range %d)" % trap.seen if trap.stage == "chunk" else "")
        )
        for m in held:
            await send(m)
