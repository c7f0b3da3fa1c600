"""Hub server carrying APDUs between MicroPython firmware and the virtual card and PSAM.

Links (firmware side: boards/unix_sim/apdu_link.py):
  ``apdu card`` / ``apdu psam``: frame 'A' + APDU -> 'R' + response (data || SW1 SW2), or
  'G' with no payload: no answer (card gone / not ISO 14443-4 / PSAM silent).
  Frame 'I' -> 'I' + JSON: the card in the field (uid, atqa, sak, ats, iso_dep) or the PSAM's ATR;
  'G' when no card is in the field.

Control commands (``ctl world``, JSON; card labels default to the profile name):
  profiles() -> [names] ; variants() -> [card variant names] (tools/sim/card.py VARIANTS)
  place_card(profile=None, label=None, overrides=None, variant=None) -> summary: put a card in
      the field (a new card from a profile, or the labelled card again: a re-tap keeps its
      state); variant: a tools/sim/card.py VARIANTS name or option dict
  remove_card() ; card(label=None) -> summary (balance, atc, debits, violations, ...)
  fault(when="before"|"after", ins=None, index=None, times=1, label=None)
  write_fault(ins=0x54, sw="6581"|None, applied=True, times=1, label=None): EEPROM tearing
  force(ins, sw=None, data=None, times=1, label=None): answer with a status word or raw hex
  clear_faults(label=None) ; audit(label=None) -> [entries, bytes as hex]
  record_1e(n=1, label=None) -> hex|None ; record_1a(rid, label=None) -> hex|None
  violations() -> {label: [texts]} over every card ever placed ; violation_count() -> their number
  psam() -> {serial, commands, terminal_id} ; psam_mute(n) ; psam_force(ins, sw, times=1)
  reset(terminal_id=None) : a fresh world (new PSAM, no cards)
"""

import json

from tools.sim.card import VARIANTS, VirtualCard, _jsonable, load_profile, profile_names
from tools.sim.hub import Hub, main_for
from tools.sim.psam import VirtualPsam


class World:
    def __init__(self, terminal_id="000000000001"):
        self.psam = VirtualPsam(terminal_id=terminal_id)
        self.cards = {}
        self.field = None  # label of the card in the field

    def card(self, label=None):
        label = label or self.field
        if label not in self.cards:
            raise KeyError("no card %r" % label)
        return self.cards[label]

    def place(self, profile=None, label=None, overrides=None, variant=None):
        label = label or profile
        if label is None:
            raise ValueError("place_card needs a profile or a label")
        if self.field and self.field != label:
            self.cards[self.field].remove()
        new = profile and (overrides is not None or variant is not None)
        if label not in self.cards or new:
            prof = load_profile(profile or label)
            if overrides:
                prof["tunion"] = dict(prof.get("tunion") or {}, **overrides)
            self.cards[label] = VirtualCard(prof, variant=variant)
        else:
            self.cards[label].place()
        self.field = label
        return self.cards[label].summary()

    def remove(self):
        if self.field:
            self.cards[self.field].remove()
        self.field = None

    def card_exchange(self, apdu):
        if self.field is None:
            return None
        card = self.cards[self.field]
        resp = card.exchange(apdu)
        if not card.present:
            self.field = None
        return resp

    def card_info(self):
        if self.field is None:
            return None
        c = self.cards[self.field]
        return {
            "uid": c.uid.hex(),
            "atqa": c.atqa.hex(),
            "sak": c.sak,
            "ats": c.ats.hex(),
            "iso_dep": c.iso_dep,
            "label": self.field,
        }


def _serve_apdu(hub, exchange, info):
    def serve(stream):
        while True:
            kind, payload = stream.read_frame()
            with hub.lock:
                if kind == b"A":
                    resp = exchange(payload)
                elif kind == b"I":
                    got = info()
                    resp = None if got is None else json.dumps(got).encode()
                    if resp is not None:
                        stream.write_frame(b"I", resp)
                        continue
                else:
                    resp = None
            if resp is None:
                stream.write_frame(b"G")
            else:
                stream.write_frame(b"R", resp)

    return serve


def build(terminal_id="000000000001"):
    hub = Hub()
    state = {"world": World(terminal_id)}

    def world():
        return state["world"]

    hub.register(
        "apdu",
        "card",
        _serve_apdu(hub, lambda a: world().card_exchange(a), lambda: world().card_info()),
    )
    hub.register(
        "apdu",
        "psam",
        _serve_apdu(
            hub, lambda a: world().psam.exchange(a), lambda: {"atr": world().psam.atr.hex()}
        ),
    )
    cmd = hub.command
    cmd("profiles")(profile_names)
    cmd("variants")(lambda: sorted(VARIANTS))
    cmd("place_card")(
        lambda profile=None, label=None, overrides=None, variant=None: world().place(
            profile, label, overrides, variant
        )
    )
    cmd("remove_card")(lambda: world().remove())
    cmd("card")(lambda label=None: world().card(label).summary())

    @cmd("fault")
    def _fault(when="before", ins=None, index=None, times=1, label=None):
        card = world().card(label)
        fn = card.fail_before if when == "before" else card.fail_after
        if when not in ("before", "after"):
            raise ValueError("when must be before or after")
        fn(ins=ins, index=index, times=times)

    @cmd("force")
    def _force(ins, sw=None, data=None, times=1, label=None):
        card = world().card(label)
        if sw is not None:
            card.force_sw(ins, int(sw, 16) if isinstance(sw, str) else sw, times)
        else:
            card.force_response(ins, bytes.fromhex(data or ""), times)

    @cmd("write_fault")
    def _write_fault(ins=0x54, sw="6581", applied=True, times=1, label=None):
        status = None if sw is None else (int(sw, 16) if isinstance(sw, str) else sw)
        world().card(label).fail_write(ins, status, applied, times)

    cmd("clear_faults")(lambda label=None: world().card(label).clear_faults())
    cmd("audit")(lambda label=None: _jsonable(world().card(label).audit))
    cmd("record_1e")(lambda n=1, label=None: _jsonable(world().card(label).record_1e(n)))
    cmd("record_1a")(lambda rid, label=None: _jsonable(world().card(label).record_1a(rid)))
    cmd("violations")(lambda: {k: list(c.violations) for k, c in world().cards.items()})
    cmd("violation_count")(lambda: sum(len(c.violations) for c in world().cards.values()))
    cmd("psam")(
        lambda: {
            "serial": world().psam.serial,
            "commands": len(world().psam.audit),
            "terminal_id": world().psam.terminal_id.hex(),
        }
    )
    cmd("psam_mute")(lambda n=1: setattr(world().psam, "mute", n))
    cmd("psam_force")(lambda ins, sw, times=1: world().psam.force_sw(ins, int(sw, 16), times))

    @cmd("reset")
    def _reset(terminal_id=None):
        state["world"] = World(terminal_id or "000000000001")

    hub.world = world
    return hub


if __name__ == "__main__":
    main_for(build)
