# How long the modem driver keeps the asyncio loop from a tap during an upload, on the strict
# stand-in of the ESP32 port (tests/mpy/esp32_machine.py): machine.UART.write() there blocks at
# 115,200 baud until all but txbuf bytes are on the wire, as on an ESP32. drivers/atmodem.py's
# loop_block_probe (a 2 ms 'tap' ticker beside the work, longest gap) around bring-up and a
# 6,500-byte POST (one 100-record upload batch), through the simulated SIM7600 / EC2x on the hub
# (tools/sim/modem_server.py, SIM_PORT), both dialects, with the boards' set-up (txbuf 2048 and
# paced writes, boards/esp32_common.py); once without the pacing, for comparison; and around an
# idle wait, the gap the machine's own load causes.
# argv: POSTs per dialect.
import asyncio
import sys

import benchlib
import esp32_machine
import log
from atmodem import loop_block_probe
from modem import ModemTransport
from modem_quectel import QuectelDialect
from modem_simcom import SimcomDialect
from simlink import Control

sys.modules["machine"] = esp32_machine

posts = benchlib.arg(1, 5)
BAUD = 115200
TXBUF = 2048
BODY = 6500
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
esp32_machine.use("wroom32")
esp32_machine.WIRING.update({("uart", 1): "modem", ("pin", 13): "modem_pwrkey"})
uart = esp32_machine.UART(1, baudrate=BAUD, tx=25, rx=26, rxbuf=12288, txbuf=TXBUF, timeout=0)


def make(ctl, dialect, paced=True):
    ctl.call("modem_dialect", dialect=dialect)
    ctl.call("modem_timing", **TIMING)
    ctl.call("modem_clear")
    ctl.call("modem_set", sim_state="READY", operator_stat=1, apns=None)
    while uart.any():
        uart.read(uart.any())
    dial = SimcomDialect(cmd_ms=600) if dialect == "simcom" else QuectelDialect(cmd_ms=600)
    return ModemTransport(
        uart,
        esp32_machine.Pin(13, esp32_machine.Pin.OUT),
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
        baudrate=BAUD if paced else None,
        txbuf=TXBUF,
    )


async def post(m, url, body):
    res, gap, _ticks = await loop_block_probe(m.request("POST", url, body), 2)
    if res[0] != 200 or len(res[1]) != len(body):
        raise RuntimeError("POST answered %r" % (res[0],))
    return gap


async def main():
    ctl = Control()
    url = "http://127.0.0.1:%d/echo" % ctl.call("http_port")
    body = bytes(i & 0xFF for i in range(BODY))
    out = {}
    for dialect in ("simcom", "quectel"):
        m = make(ctl, dialect)
        _, gap_up, _ = await loop_block_probe(m.start(), 2)
        blocked0 = uart.writes_blocked
        gaps = []
        for _ in range(posts):
            gaps.append(await post(m, url, body))
        out[dialect] = {
            "bringup_gap_ms": gap_up,
            "post_gaps_ms": gaps,
            "uart_writes_blocked": uart.writes_blocked - blocked0,
            "chunks": m.at.pacer.chunks,
        }
        await m.close()
    # The same POST with writes handed to the UART whole, as before the pacing.
    m = make(ctl, "simcom", paced=False)
    await m.start()
    unpaced = await post(m, url, body)
    await m.close()
    # The same probe around plain waiting: the gap the machine's own load causes (the floor).
    _, idle, _ = await loop_block_probe(asyncio.sleep_ms(1500), 2)
    worst = max(max(v["post_gaps_ms"]) for v in out.values())
    benchlib.emit(
        modem_loop_block_ms=worst,
        modem_loop_idle_gap_ms=idle,
        modem_loop_block_unpaced_ms=unpaced,
        modem_body_bytes=BODY,
        modem=out,
    )


asyncio.run(main())
