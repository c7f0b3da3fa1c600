"""A hub with an echo UART and a pin watcher: proves the simulation board's plumbing in tests."""

from tools.sim.hub import Hub, main_for
from tools.sim.uart import UartDevice


class EchoUart(UartDevice):
    def on_data(self, data):
        self.send(data.upper())

    def on_break(self):
        self.send(b"<break>")


def build():
    hub = Hub()
    echo = EchoUart()
    hub.register("uart", "echo", echo.serve)
    hub.command("uart_config")(lambda: echo.config)
    seen = []
    hub.on_pin("reset", seen.append)
    hub.command("reset_edges")(lambda: list(seen))
    hub.command("drive")(lambda name, level: hub.set_pin(name, level))
    return hub


if __name__ == "__main__":
    main_for(build)
