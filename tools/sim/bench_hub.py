"""The simulated bench's world: one hub carrying every chip the validator talks to.

    world = BenchWorld(reader="pn532_i2c", dialect="simcom", start=validator_seconds)
    port = world.start()            # firmware gets SIM_PORT=port
    world.place(card) / world.remove(card)
    world.time += 60                # the virtual RTC the firmware reads (ctl "now"), and the
                                    # virtual time its uplink back-off waits on ("world_time")

Time (docs/time.md): `world.time` is the scenario's clock. The RTC chip (`rtc_chip`: "ds3231"
or "pcf8563", None for none) sits on the display's bus "i2c0" and counts it; the ESP32's own RTC
(ctl "esp_rtc", "esp_rtc_mem") counts it too, restarts at 2000-01-01 and loses its memory on
`power_cut()`, and is what `rtc_offset` (a scenario's "rtc_jump") moves.

Devices: the NFC reader chosen by `reader` (PN532 on I2C "nfc_i2c", SPI "nfc_spi" or HSU UART
"nfc_hsu"; RC522 on SPI "rc522"), the SSD1306 display on I2C "i2c0", the character-level PSAM
on UART "psam" (reset pin "psam_rst") running a VirtualPsam, the modem on UART "modem" (power key
"modem_pwrkey") forwarding HTTP to the real collector, and a watchdog line on pin "wdt".
"""

import threading
import time

from tools.sim.buses import I2CBus
from tools.sim.display_server import add_display
from tools.sim.hub import Hub
from tools.sim.modem_server import add_modem
from tools.sim.nfc_server import add_pn532
from tools.sim.psam import VirtualPsam
from tools.sim.psam_server import add_psam
from tools.sim.rc522_server import add_rc522
from tools.sim.rtc_chip import add_rtc_commands
from tools.sim.rtc_server import add_rtc

READERS = ("pn532_i2c", "pn532_spi", "pn532_hsu", "rc522_spi")
# The modem's boot and registration delays, shortened so a bench run takes seconds.
FAST_MODEM = {"boot_ms": 100, "sim_ready_ms": 50, "reg_ms": 50, "urc_ms": 5}


def add_reader(hub, kind):
    """Put a reader chip of `kind` on the hub (nfc_server.add_pn532, rc522_server.add_rc522);
    -> (chip, field) where field is None for the RC522 (its simulator keeps its own named
    field)."""
    if kind == "rc522_spi":
        return add_rc522(hub)[0], None
    if kind not in READERS:
        raise ValueError("reader must be one of " + ", ".join(READERS))
    chip, _bus = add_pn532(hub, kind[len("pn532_") :])
    return chip, chip.field


class BenchWorld:
    def __init__(
        self,
        reader="pn532_i2c",
        dialect="simcom",
        start=0,
        terminal_id="000000000101",
        rtc_chip="ds3231",
    ):
        if reader not in READERS:
            raise ValueError("reader must be one of " + ", ".join(READERS))
        self.reader = reader
        self.time = start
        self.rtc_offset = 0  # the validator's RTC error (a scenario's "rtc_jump")
        self.hub = hub = Hub()
        hub.command("now")(lambda: self.time + self.rtc_offset)
        # The bench's virtual time itself (no RTC error): what the board's back-off waits on.
        hub.command("world_time")(lambda: self.time)
        self.wake_at = None  # the world time the firmware's virtual wait ends at (the bench
        hub.command("sleep_until")(self._sleep_until)  # jumps there when nothing else runs)
        self.lock = threading.RLock()
        self._placed = {}  # card -> label, for the RC522's named field
        self._make_reader()
        self.i2c0 = I2CBus(hub)  # the display and the RTC chip share it, as on the boards
        hub.register("i2c", "i2c0", self.i2c0.serve)
        self.panel = add_display(hub, bus=self.i2c0)
        self._add_time(rtc_chip)
        self.psam_app = VirtualPsam(terminal_id=terminal_id)
        self.psam = add_psam(hub, self.psam_app, clk_hz=3571200)
        # NITZ and AT+CCLK: the scenario's time
        self.modem = add_modem(hub, dialect, FAST_MODEM, clock=lambda: self.time)
        self.wdt_last = None
        self.wdt_feeds = 0
        hub.on_pin("wdt", self._wdt_fed)
        self.port = None

    def _sleep_until(self, t, done=False):
        if not done:
            self.wake_at = int(t)
        elif self.wake_at == int(t):
            self.wake_at = None
        return True

    # ---- time -----------------------------------------------------------------------------------

    def _add_time(self, rtc_chip):
        self.esp_rtc_off = 0  # the ESP32 RTC = world time + rtc_offset + this
        self.esp_rtc_mem = b""
        self.rtc_chips = {}
        if rtc_chip:
            self.rtc = add_rtc(self.i2c0, rtc_chip, lambda: self.time)
            self.rtc_chips[rtc_chip] = self.rtc
        else:
            self.rtc = None
        add_rtc_commands(self.hub, self.rtc_chips)

        @self.hub.command("esp_rtc")
        def _esp_rtc(set=None, shift=None):
            if set is not None:
                self.esp_rtc_off = int(set) - self.time - self.rtc_offset
            if shift is not None:  # the board sets it relative to its last reading
                self.esp_rtc_off += int(shift)
            return self.time + self.rtc_offset + self.esp_rtc_off

        @self.hub.command("esp_rtc_mem")
        def _esp_rtc_mem(data=None):
            if data is not None:
                self.esp_rtc_mem = bytes.fromhex(data)
            return self.esp_rtc_mem.hex()

    def power_cut(self):
        """The ESP32 lost power: its RTC restarts at 2000-01-01, RTC memory is gone. (The RTC
        chip runs on its battery: rtc.power_loss() when that is flat too.)"""
        self.esp_rtc_off = -(self.time + self.rtc_offset)
        self.esp_rtc_mem = b""

    def _make_reader(self):
        self.chip, self.field = add_reader(self.hub, self.reader)
        if self.field is None:
            from tools.sim import picc

            self._picc = picc.Picc

    def _wdt_fed(self, level):
        self.wdt_last = time.monotonic()
        self.wdt_feeds += 1

    # ---- the field ------------------------------------------------------------------------------

    def place(self, card, label=None):
        with self.hub.lock:
            if self.reader == "rc522_spi":
                label = label or "card%d" % id(card)
                self._placed[card] = label
                self.chip.remove(label)
                self.chip.removed.pop(label, None)
                if hasattr(card, "place"):
                    card.place()
                self.chip.place(label, self._picc(card))
            else:
                self.field.add(card)

    def remove(self, card):
        with self.hub.lock:
            if self.reader == "rc522_spi":
                label = self._placed.pop(card, None)
                if label is not None:
                    self.chip.remove(label)
                    if hasattr(card, "remove"):
                        card.remove()
            else:
                self.field.remove(card)

    def clear_field(self):
        with self.hub.lock:
            if self.reader == "rc522_spi":
                for card in list(self._placed):
                    self.remove(card)
            else:
                self.field.clear()

    # ---- life ---------------------------------------------------------------------------------

    def start(self):
        self.port = self.hub.start_in_thread()
        return self.port

    def stop(self):
        self.hub.stop()


def build_all_readers():
    """A bench world with every reader chip on the hub at once (ESP32 board parts tests), and
    ctl commands to put a profile's card on one of them."""
    from tools.sim.card import VirtualCard

    world = BenchWorld(reader="pn532_i2c", start=849300000)
    # The ESP32 boards clock the PSAM at 4 MHz (boards/esp32_common.py).
    world.psam.clk_hz = 4000000
    fields = {"pn532_i2c": world.field}
    pn532s = [world.chip]  # the PN532 on I2C
    for kind in ("pn532_spi", "pn532_hsu", "rc522_spi"):
        chip, field = add_reader(world.hub, kind)
        fields[kind] = field if field is not None else chip
        if kind == "pn532_spi":
            pn532s.append(chip)  # the HSU driver does not wait on the IRQ line
    # The boards wire the PN532's IRQ output to one GPIO (tests/mpy/test_esp32_boards.py maps it
    # to "reader_irq"): the chip a board talks to drives it (low = a frame is ready), the idle
    # ones leave it alone. Undriven, the line read "ready" at once and the driver read frames
    # before the chip had them.
    for chip in pn532s:
        chip.irq_pin = "reader_irq"
        with world.hub.lock, chip.lock:
            chip._set_irq()
    cards = {}

    @world.hub.command("bench_place")
    def _place(reader, profile="tunion_plain"):
        card = VirtualCard.from_profile(profile)
        cards[reader] = card
        target = fields[reader]
        # A fresh card replaces the one placed before (each board test sells to its own card).
        if reader == "rc522_spi":
            from tools.sim import picc

            target.remove("card")
            target.place("card", picc.Picc(card))
        else:
            target.clear()
            target.add(card)
        return card.uid.hex()

    @world.hub.command("bench_card")
    def _card(reader):
        return cards[reader].summary()

    @world.hub.command("bench_remove")
    def _remove(reader):
        target = fields[reader]
        if reader == "rc522_spi":
            target.remove("card")
        else:
            target.clear()
        return True

    return world.hub


if __name__ == "__main__":
    from tools.sim.hub import main_for

    main_for(build_all_readers)
