# How long the modem driver keeps the asyncio loop from a tap: drivers/atmodem.py's
# loop_block_probe (a 2 ms 'tap' ticker beside the work, longest gap) around bring-up and a
# 4000-byte POST (one 60-record upload), through the simulated SIM7600 / EC2x on the hub
# (tools/sim/modem_server.py, SIM_PORT), both dialects, as tests/mpy/test_modem.py sets them up.
# argv: POSTs per dialect.
import asyncio

import benchlib
import log
from atmodem import loop_block_probe
from modem import ModemTransport
from modem_quectel import QuectelDialect
from modem_simcom import SimcomDialect
from sim_pin import Pin
from sim_uart import SimUART
from simlink import Control

posts = benchlib.arg(1, 5)
TIMING = {
    "on_pulse_ms": 50,
    "off_pulse_ms": 300,
    "boot_ms": 100,
    "sim_ready_ms": 200,
    "reg_ms": 100,
    "guard_ms": 100,
    "urc_ms": 10,
    "slow_ms": 1500,
}
log.set_level(log.WARNING, echo=False)
uart = SimUART("modem", timeout=0, rxbuf=12288)


def make(ctl, dialect):
    ctl.call("modem_dialect", dialect=dialect)
    ctl.call("modem_timing", **TIMING)
    ctl.call("modem_clear")
    ctl.call("modem_set", sim_state="READY", operator_stat=1, apns=None)
    while uart.any():
        uart.read(uart.any())
    dial = SimcomDialect(cmd_ms=600) if dialect == "simcom" else QuectelDialect(cmd_ms=600)
    return ModemTransport(
        uart,
        Pin("modem_pwrkey", Pin.OUT),
        dial,
        apn="cmnet",
        on_pulse_ms=80,
        off_pulse_ms=350,
        rdy_timeout_ms=2000,
        sim_timeout_ms=3000,
        reg_timeout_ms=3000,
        reg_wait_ms=400,
        poll_ms=100,
        guard_ms=120,
        probe_ms=150,
    )


async def main():
    ctl = Control()
    url = "http://127.0.0.1:%d/echo" % ctl.call("http_port")
    body = bytes(4000)
    out = {}
    for dialect in ("simcom", "quectel"):
        m = make(ctl, dialect)
        _, gap_up, _ = await loop_block_probe(m.start(), 2)
        gaps = []
        for _ in range(posts):
            res, gap, _ticks = await loop_block_probe(m.request("POST", url, body), 2)
            if res[0] != 200:
                raise RuntimeError("POST answered %r" % (res[0],))
            gaps.append(gap)
        out[dialect] = {"bringup_gap_ms": gap_up, "post_gaps_ms": gaps}
        await m.close()
    worst = max(max(v["post_gaps_ms"]) for v in out.values())
    benchlib.emit(modem_loop_block_ms=worst, modem=out)


asyncio.run(main())
