"""Hub with the SSD1306 display on I2C bus "i2c0" at 0x3C, for display tests."""

from tools.sim.buses import I2CBus
from tools.sim.hub import Hub, main_for
from tools.sim.ssd1306 import SSD1306


def add_display(hub, bus_name="i2c0", addr=0x3C, bus=None):
    """Attach an SSD1306 to `bus` (or a new I2C bus named bus_name) and its ctl commands."""
    panel = SSD1306()
    if bus is None:
        bus = I2CBus(hub)
        hub.register("i2c", bus_name, bus.serve)
    bus.attach(addr, panel)
    hub.command("display_state")(
        lambda: {"on": panel.on, "frames": panel.frames, "commands": panel.commands}
    )
    hub.command("display_pixel")(lambda x, y: panel.pixel(x, y))
    hub.command("display_lit")(lambda: sum(bin(b).count("1") for b in panel.ram))
    hub.command("display_snapshot")(lambda path: panel.snapshot(path))
    return panel


def build():
    hub = Hub()
    add_display(hub)
    return hub


if __name__ == "__main__":
    main_for(build)
