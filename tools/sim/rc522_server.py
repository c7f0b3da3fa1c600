"""Hub server with a simulated MFRC522 on SPI bus "rc522", chip select pin "rc522_cs", IRQ
output on pin "rc522_irq".

Firmware side: ``SimSPI("rc522")``, ``Pin("rc522_cs", Pin.OUT)`` and optionally
``Pin("rc522_irq", Pin.IN)`` passed to drivers/rc522.py.

ctl commands (JSON args):
  rc522_place   name, and either profile (a tools/sim/profiles name: a VirtualCard, with an
                optional card variant, tools/sim/card.py VARIANTS) or
                uid/atqa/sak/ats (hex)/iso_dep for the small TestCard; Picc knobs wtx (list of
                WTXM), processing_us, chain_inf, ignore_fsd, mute_after
  rc522_remove  name                          -> bool (was it there)
  rc522_knobs   name, any Picc knob            change a card's behaviour in place
  rc522_fault   kind, at (frames from now), arg  (see tools/sim/rc522.py)
  rc522_state   blocks (bool), frames (how many) -> cards (state, last APDUs, block log when
                asked, VirtualCard summary), spi counters, last timers, last RF frames
  rc522_retap   name: the same card (same balance, counters) leaves and enters the field again
  rc522_card_fault  name, when ("before"/"after"), ins: the VirtualCard leaves around that command
  rc522_violations  -> {name: [texts]} of every VirtualCard placed
  psam_reset    terminal_id: a fresh VirtualPsam on "apdu psam" (for full purchases)
  rc522_chip    coll_irq ("mid"/"end"), coll_irq_reads: when ErrIRq rises for a bit collision
  rc522_clear   no cards, no faults, chip healthy, ErrIRq at the collision (tests call it
                between cases)
  rc522_counters_reset
"""

from tools.sim import picc as piccmod
from tools.sim.apdu_server import _serve_apdu
from tools.sim.buses import SPIBus
from tools.sim.hub import Hub, main_for
from tools.sim.psam import VirtualPsam
from tools.sim.rc522 import RC522Sim

KNOBS = ("wtx", "processing_us", "chain_inf", "ignore_fsd", "mute_after")


def make_card(
    profile=None, uid="04a1b2c3", atqa=None, sak=0x20, ats=None, iso_dep=True, variant=None
):
    if profile:
        from tools.sim.card import VirtualCard

        card = VirtualCard.from_profile(profile, variant=variant)
        if ats is not None:
            card.ats = bytes.fromhex(ats)  # e.g. a small FSC, to force chaining
        return card
    return piccmod.TestCard(
        bytes.fromhex(uid),
        atqa=bytes.fromhex(atqa) if atqa else None,
        sak=sak,
        ats=bytes.fromhex("0578804000" if ats is None else ats),
        iso_dep=iso_dep,
    )


def _card_state(p, blocks=False):
    # Kept small: the MicroPython side parses this JSON inside an ESP32-sized heap.
    card = p.card
    out = {
        "state": piccmod.STATE_NAMES[p.state],
        "apdu_count": p.apdu_count,
        "kbps": [p.rx_kbps, p.tx_kbps],
        "pps": p.pps_count,
        "rate_errors": p.rate_errors,
    }
    if blocks:
        out["blocks"] = p.log[-40:]
    if hasattr(card, "apdus"):
        out["apdus"] = [a.hex() for a in card.apdus[-12:]]
    if hasattr(card, "summary"):
        out["summary"] = card.summary()
    return out


def add_rc522(hub):
    """An MFRC522 on SPI bus "rc522", chip select "rc522_cs", IRQ output on pin "rc522_irq"; its
    RF field is its own (named cards: chip.place / chip.remove). -> (chip, bus)."""
    chip = RC522Sim(irq_line=lambda level: hub.set_pin("rc522_irq", level))
    bus = SPIBus(hub, chip, "rc522_cs")
    hub.register("spi", "rc522", bus.serve)
    return chip, bus


def build():
    hub = Hub()
    chip, bus = add_rc522(hub)
    world = {"psam": VirtualPsam(terminal_id="000000000042")}
    hub.register(
        "apdu",
        "psam",
        _serve_apdu(
            hub, lambda a: world["psam"].exchange(a), lambda: {"atr": world["psam"].atr.hex()}
        ),
    )
    knobs_of = {}  # name -> knobs given at placement, reused on a re-tap

    @hub.command("rc522_place")
    def place(name="card", **kw):
        knobs = {k: kw.pop(k) for k in list(kw) if k in KNOBS}
        picc = piccmod.Picc(make_card(**kw), **knobs)
        chip.remove(name)
        chip.removed.pop(name, None)
        chip.place(name, picc)
        knobs_of[name] = knobs
        return True

    @hub.command("rc522_retap")
    def retap(name="card"):
        old = chip.field.get(name) or chip.removed.get(name)
        if old is None:
            raise KeyError("no card %r" % name)
        chip.remove(name)
        chip.removed.pop(name, None)
        if hasattr(old.card, "place"):
            old.card.place()
        chip.place(name, piccmod.Picc(old.card, **knobs_of.get(name, {})))
        return True

    @hub.command("rc522_card_fault")
    def card_fault(name="card", when="after", ins=None, times=1):
        card = chip.field[name].card
        fn = card.fail_before if when == "before" else card.fail_after
        fn(ins=ins, times=times)
        return True

    @hub.command("rc522_violations")
    def violations():
        out = {}
        for group in (chip.removed, chip.field):
            for n, p in group.items():
                if hasattr(p.card, "violations"):
                    out[n] = list(p.card.violations)
        return out

    @hub.command("psam_reset")
    def psam_reset(terminal_id="000000000042"):
        world["psam"] = VirtualPsam(terminal_id=terminal_id)
        return True

    @hub.command("rc522_remove")
    def remove(name="card"):
        return chip.remove(name)

    @hub.command("rc522_knobs")
    def knobs(name="card", **kw):
        picc = chip.field[name]
        for k, v in kw.items():
            if k not in KNOBS:
                raise ValueError("unknown knob %r" % k)
            setattr(picc, k, list(v) if k == "wtx" else v)
        return True

    @hub.command("rc522_fault")
    def fault(kind, at=0, arg=None):
        chip.inject(kind, at, arg)
        return True

    @hub.command("rc522_state")
    def state(blocks=False, frames=0):
        cards = {n: _card_state(p, blocks) for n, p in chip.field.items()}
        gone = {n: _card_state(p, blocks) for n, p in chip.removed.items() if n not in cards}
        return {
            "cards": cards,
            "removed": gone,
            "spi": {"transactions": bus.transactions, "bytes": bus.bytes},
            "timers": chip.timer_log[-20:],
            "frames": chip.frames[-frames:] if frames else [],
            "frame_count": chip.frame_count,
            "rate_errors": chip.rate_errors,
            "antenna": chip.antenna_on(),
            "errors": chip.errors[-20:],
            "faults_pending": len(chip.faults),
        }

    @hub.command("rc522_chip")
    def chip_config(coll_irq=None, coll_irq_reads=None):
        if coll_irq is not None:
            if coll_irq not in ("mid", "end"):
                raise ValueError("coll_irq is 'mid' or 'end'")
            chip.coll_irq = coll_irq
        if coll_irq_reads is not None:
            chip.coll_irq_reads = int(coll_irq_reads)
        return {"coll_irq": chip.coll_irq, "coll_irq_reads": chip.coll_irq_reads}

    @hub.command("rc522_clear")
    def clear():
        chip.coll_irq = "mid"
        chip.coll_irq_reads = 1
        for name in list(chip.field):
            chip.remove(name)
        chip.removed.clear()
        chip.faults.clear()
        chip.stuck = False
        chip.dead = False
        chip.noise = 0
        return True

    @hub.command("rc522_counters_reset")
    def counters_reset():
        bus.transactions = 0
        bus.bytes = 0
        chip.frame_count = 0
        chip.timer_log.clear()
        chip.frames.clear()
        return True

    hub.rc522 = chip  # for in-process host tests
    hub.rc522_bus = bus
    return hub


if __name__ == "__main__":
    main_for(build)
