"""A hub with an echo UART and a pin watcher: proves the simulation board's plumbing in tests."""

from tools.sim.buses import I2CBus, SPIBus
from tools.sim.hub import Hub, main_for
from tools.sim.uart import UartDevice


class EchoUart(UartDevice):
    def on_data(self, data):
        self.send(data.upper())

    def on_break(self):
        self.send(b"<break>")


class Memory:
    """I2C: a 16-byte register file with an address pointer; NACKs while `busy`."""

    def __init__(self):
        self.mem = bytearray(16)
        self.ptr = 0
        self.busy = False

    def i2c_write(self, data):
        if self.busy:
            return False
        if data:
            self.ptr = data[0] % 16
            for b in data[1:]:
                self.mem[self.ptr] = b
                self.ptr = (self.ptr + 1) % 16
        return True

    def i2c_read(self, n):
        if self.busy:
            return None
        out = bytes(self.mem[(self.ptr + i) % 16] for i in range(n))
        return out


class Inverter:
    """SPI: answers each byte inverted while selected, 0xFF otherwise."""

    def __init__(self):
        self.selected = False
        self.edges = []

    def spi_select(self, active):
        self.selected = active
        self.edges.append(active)

    def spi_exchange(self, data, config):
        if not self.selected:
            return b"\xff" * len(data)
        return bytes(b ^ 0xFF for b in data)


def build():
    hub = Hub()
    echo = EchoUart()
    hub.register("uart", "echo", echo.serve)
    hub.command("uart_config")(lambda: echo.config)
    seen = []
    hub.on_pin("reset", seen.append)
    hub.command("reset_edges")(lambda: list(seen))
    hub.command("drive")(lambda name, level: hub.set_pin(name, level))
    i2c = I2CBus(hub)
    mem = Memory()
    i2c.attach(0x50, mem)
    hub.register("i2c", "i2c0", i2c.serve)
    hub.command("i2c_busy")(lambda busy: setattr(mem, "busy", busy))
    inv = Inverter()
    spi = SPIBus(hub, inv, "cs")
    hub.register("spi", "spi2", spi.serve)
    hub.command("spi_state")(lambda: {"edges": inv.edges, "config": spi.config})
    return hub


if __name__ == "__main__":
    main_for(build)
