"""Hub server with three simulated PN532 chips, one per transport, each with its own RF field,
plus everything tools/sim/apdu_server.py offers (the virtual PSAM on ``apdu psam``).

Devices (firmware side: boards/unix_sim sim_i2c / sim_spi / sim_uart / sim_pin):
  i2c  bus ``nfc_i2c``, PN532 at 0x24, IRQ pin ``nfc_i2c_irq``
  spi  bus ``nfc_spi``, chip select ``nfc_cs``, IRQ pin ``nfc_spi_irq``
  uart ``nfc_hsu``
Control commands (``ctl world``); ``chip`` is "i2c", "spi" or "hsu":
  pn532_place(chip, label, profile=None, **card) -> label: put a card in the field. ``profile``
      names a tools/sim/profiles card (VirtualCard); otherwise a field.SimpleApduCard built from
      ``uid``/``atqa``/``ats`` (hex), ``sak``, ``iso_dep``, ``kind`` ("A"/"B"). Placing a known
      label again brings the same card back (a re-tap keeps its state).
  pn532_remove(chip, label=None): one card, or all, leave the field
  pn532_fault(chip, name, count=1, **params); pn532_clear_faults(chip)
  pn532_card_fault(label, when="before"|"after", ins=None, index=None, times=1)  (VirtualCard)
  pn532_config(chip, support=None, max_resp=None, time_scale=None): time_scale > 0 sleeps the
      chip's RF time (a card that left: the RF timeout) for real, times that factor
  pn532_reset(chip): power-on state, no cards, no faults, bus counters at zero
  pn532_state(chip) -> chip state and counters; pn532_bus(chip) -> bus transactions and bytes
  pn532_reset_counters(chip): bus counters at zero
  pn532_card(label) -> the card's summary (VirtualCard) or its APDU log (SimpleApduCard)
"""

from tools.sim import apdu_server
from tools.sim.buses import I2CBus, SPIBus
from tools.sim.field import Field, SimpleApduCard
from tools.sim.hub import main_for
from tools.sim.pn532 import PN532HSUSim, PN532I2CSim, PN532SPISim


def _card(label, profile=None, variant=None, **spec):
    if profile:
        from tools.sim.card import VirtualCard

        card = VirtualCard.from_profile(profile, variant=variant)
        card.label = label
        return card
    kw = {}
    for key in ("uid", "atqa", "ats", "atqb", "aid", "fci"):
        if key in spec:
            kw[key] = bytes.fromhex(spec.pop(key))
    for key in ("sak", "iso_dep", "kind"):
        if key in spec:
            kw[key] = spec.pop(key)
    if spec:
        raise ValueError("unknown card settings %s" % sorted(spec))
    return SimpleApduCard(**kw)


def add_pn532(hub, transport, field=None, irq_pin=None):
    """A PN532 on the hub over `transport`: "i2c" on bus "nfc_i2c" at 0x24, "spi" on bus
    "nfc_spi" with chip select "nfc_cs", "hsu" on UART "nfc_hsu"; its RF field `field` (a new
    one by default), its IRQ output on pin `irq_pin` (none by default).
    -> (chip, bus), bus None for HSU (the chip counts its own bytes)."""
    field = field if field is not None else Field()
    if transport == "i2c":
        chip = PN532I2CSim(field=field, hub=hub, irq_pin=irq_pin)
        bus = I2CBus(hub)
        bus.attach(PN532I2CSim.ADDRESS, chip)
        hub.register("i2c", "nfc_i2c", bus.serve)
    elif transport == "spi":
        chip = PN532SPISim(field=field, hub=hub, irq_pin=irq_pin)
        bus = SPIBus(hub, chip, "nfc_cs")
        hub.register("spi", "nfc_spi", bus.serve)
    elif transport == "hsu":
        chip = PN532HSUSim(field=field, hub=hub, irq_pin=irq_pin)
        bus = None
        hub.register("uart", "nfc_hsu", chip.serve)
    else:
        raise ValueError("transport is i2c, spi or hsu, not %r" % (transport,))
    return chip, bus


def build():
    # Built on the APDU server so a purchase test finds the virtual PSAM (``apdu psam``).
    hub = apdu_server.build()
    chips = {}
    buses = {}
    cards = {}
    for transport, irq_pin in (("i2c", "nfc_i2c_irq"), ("spi", "nfc_spi_irq"), ("hsu", None)):
        chips[transport], bus = add_pn532(hub, transport, irq_pin=irq_pin)
        if bus is not None:
            buses[transport] = bus

    def chip(name):
        if name not in chips:
            raise KeyError("no chip %r (i2c, spi, hsu)" % name)
        return chips[name]

    @hub.command("pn532_place")
    def place(chip_name, label, profile=None, **spec):
        c = chip(chip_name)
        card = cards.get(label)
        if card is None or profile or spec:
            card = cards[label] = _card(label, profile, **spec)
        c.field.add(card)
        return label

    @hub.command("pn532_remove")
    def remove(chip_name, label=None):
        c = chip(chip_name)
        if label is None:
            c.field.clear()
            return True
        return c.field.remove(cards[label])

    @hub.command("pn532_fault")
    def fault(chip_name, name, count=1, **params):
        chip(chip_name).fault(name, count, **params)

    hub.command("pn532_clear_faults")(lambda chip_name: chip(chip_name).clear_faults())

    @hub.command("pn532_card_fault")
    def card_fault(label, when="before", ins=None, index=None, times=1):
        card = cards[label]
        fn = card.fail_before if when == "before" else card.fail_after
        fn(ins=ins, index=index, times=times)

    @hub.command("pn532_config")
    def config(chip_name, support=None, max_resp=None, time_scale=None):
        c = chip(chip_name)
        if time_scale is not None:
            c.time_scale = float(time_scale)
        if support is not None:
            c.support = support
        if max_resp is not None:
            c.max_resp = max_resp

    @hub.command("pn532_reset")
    def reset(chip_name):
        c = chip(chip_name)
        c.field.clear()
        c.power_on()
        c.time_scale = 0.0
        c.support = 0x07
        c.max_resp = 261
        reset_counters(chip_name)

    @hub.command("pn532_reset_counters")
    def reset_counters(chip_name):
        c = chip(chip_name)
        if chip_name in buses:
            buses[chip_name].transactions = buses[chip_name].bytes = 0
        else:
            c.bytes_in = c.bytes_out = 0

    hub.command("pn532_state")(lambda chip_name: chip(chip_name).state())

    @hub.command("pn532_bus")
    def bus(chip_name):
        c = chip(chip_name)
        if chip_name in buses:
            b = buses[chip_name]
            return {"transactions": b.transactions, "bytes": b.bytes}
        return {
            "bytes_in": c.bytes_in,
            "bytes_out": c.bytes_out,
            "bytes": c.bytes_in + c.bytes_out,
        }

    @hub.command("pn532_card")
    def card_info(label):
        card = cards[label]
        if hasattr(card, "summary"):
            return card.summary()
        return {"present": card.present, "apdus": [a.hex() for a in card.apdus]}

    return hub


if __name__ == "__main__":
    main_for(build)
