"""Hub server with the character-level PSAM: ``uart psam``, reset pin ``psam_rst``.

Control commands (``ctl world``):
  psam_config(**settings)  ATR and behaviour (ta1, wi, hist, t1, atr, inverse, echo, procedure,
                           slow_ins, nulls, null_ms); answers the settings in force
  psam_fault(kind, count=1, **params)   inject a fault (see tools/sim/psam_uart.py)
  psam_clear()             drop pending faults, zero the statistics
  psam_stats()             counters (chars each way, echo, resets, PPS, config errors, ...)
  psam_app(name, own_atr=False)  "standin" (tools/sim/psam_uart.StandinPsamApp) or
                           "virtual" (tools/sim/psam.VirtualPsam); own_atr sends the app's ATR

The hub also carries tools/sim/nfc_server.py's PN532 chips and cards (and its commands) when
that module is present, for purchases through a reader and this PSAM together.

Run: ``python -m tools.sim.psam_server --port 0``.
"""

from tools.sim.hub import Hub, main_for
from tools.sim.psam_uart import PsamUart, StandinPsamApp

CLK_HZ = 3571200  # boards/unix_sim/board.py PSAM["clk_hz"]


def virtual_app():
    from tools.sim.psam import VirtualPsam

    return VirtualPsam()


def base_hub():
    """The PN532 world (chips, virtual cards) when it is there, so a whole purchase can run with
    this PSAM on the card side's reader; a bare hub otherwise."""
    try:
        from tools.sim import nfc_server
    except ImportError:
        return Hub()
    return nfc_server.build()


def add_psam(hub, app=None, clk_hz=CLK_HZ):
    """The character-level PSAM on UART "psam" with its reset pin "psam_rst", running `app`
    (StandinPsamApp by default) on a clock of `clk_hz`; -> the PsamUart."""
    card = PsamUart(app or StandinPsamApp(), clk_hz=clk_hz)
    hub.register("uart", "psam", card.serve)
    hub.on_pin("psam_rst", card.on_reset_pin)
    return card


def build(hub=None, clk_hz=CLK_HZ):
    hub = hub or base_hub()
    card = add_psam(hub, clk_hz=clk_hz)
    hub.command("psam_config")(card.configure)
    hub.command("psam_fault")(card.inject)
    hub.command("psam_clear")(card.clear)
    hub.command("psam_stats")(card.snapshot)

    @hub.command("psam_app")
    def _app(name, own_atr=False):
        with card.lock:
            if name == "standin":
                card.app = StandinPsamApp()
            elif name == "virtual":
                card.app = virtual_app()
            else:
                raise KeyError("unknown PSAM application %r" % name)
            # The character layer builds its ATR from the settings unless told to use the app's.
            atr = getattr(card.app, "atr", b"") if own_atr else b""
            card.settings["atr"] = bytes(atr).hex()
        return {"app": name, "atr": card.current_atr().hex()}

    hub.psam = card
    return hub


if __name__ == "__main__":
    main_for(build)
