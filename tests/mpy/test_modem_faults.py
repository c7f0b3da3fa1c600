# mpy: heapsize=256k timeout=180 server=tools.sim.modem_server
# Every fault the simulated modem can inject ends in the typed error of drivers/transport.py (or,
# where the uplink must not notice, in a plain success), and the very same modem works again on
# the next request. One modem per dialect is kept across the tests of that dialect, so a recovery
# that leaves anything behind fails the tests after it.
import asyncio

import log
import modem_rig
import mptest
from sim_pin import Pin
from sim_uart import SimUART
from simlink import Control
from transport import ConnectionLost, ModemFault, NetworkDown, TransportTimeout

TIMING = modem_rig.timing(sim_ready_ms=150, slow_ms=800)
_state = {}


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()
    if "uart" not in _state:
        _state["uart"] = SimUART("modem", timeout=0, rxbuf=12288)
        _state["ctl"] = Control()
        _state["pin"] = Pin("modem_pwrkey", Pin.OUT)


async def modem(dialect):
    """The kept modem of this dialect (switching dialect powers the simulated module off)."""
    ctl = _state["ctl"]
    m = _state.get(dialect)
    if m is None:
        ctl.call("modem_dialect", dialect=dialect)
        ctl.call("modem_timing", **TIMING)
        m = modem_rig.transport(
            _state["uart"],
            _state["pin"],
            dialect,
            cmd_ms=500,
            sim_timeout_ms=10000,  # the driver's default: the SIM is never the point here
            settle_ms=100,
            probe_ms=150,
        )
        _state[dialect] = m
        _state["base"] = "http://127.0.0.1:%d" % ctl.call("http_port")
    m.at.start()  # listen for URCs on this test's event loop
    return ctl, m


async def works(m, n=700):
    body = bytes((i * 7) & 0xFF for i in range(n))
    status, got = await m.request("POST", _state["base"] + "/echo", body, {"X-T": "1"}, 3000)
    mptest.eq(status, 200)
    mptest.hex_eq(got, body)


async def fails_with(m, exc, path="/echo", timeout_ms=3000):
    body = b"abc" if path == "/echo" else b""
    method = "POST" if path == "/echo" else "GET"
    e = await mptest.araises(exc, m.request(method, _state["base"] + path, body, {}, timeout_ms))
    mptest.eq(m.status()["last_error"].split(":")[0], type(e).__name__)
    return e


async def urc_mid(dialect):
    ctl, m = await modem(dialect)
    ctl.call("modem_fault", fault="urc_mid", count=1000)
    try:
        await works(m, 2000)
        await works(m, 10)
    finally:
        ctl.call("modem_clear", fault="urc_mid")
    mptest.eq(m.status()["errors"], 0)
    await m.close()


async def http_5xx(dialect):
    ctl, m = await modem(dialect)
    ctl.call("modem_fault", fault="http_5xx")
    status, body = await m.request("POST", _state["base"] + "/echo", b"x", {}, 3000)
    mptest.eq((status, body), (503, b"service unavailable"))  # an answer: returned, not raised
    await works(m)
    await m.close()


async def slow(dialect):
    ctl, m = await modem(dialect)
    ctl.call("modem_fault", fault="slow")
    await fails_with(m, TransportTimeout, timeout_ms=400)
    await works(m)
    await asyncio.sleep_ms(600)  # the abandoned answer would be due by now: it must not leak
    await works(m)
    await m.close()


async def reset_mid_body(dialect):
    ctl, m = await modem(dialect)
    ctl.call("modem_fault", fault="reset_mid_body")
    await fails_with(m, ConnectionLost, "/blob/3000", timeout_ms=800)
    await works(m)
    # The server itself drops the connection half-way through its body.
    await fails_with(m, ConnectionLost, "/reset/3000")
    await works(m)
    await m.close()


async def pdp_drop(dialect):
    ctl, m = await modem(dialect)
    ctl.call("modem_fault", fault="pdp_drop")  # between requests: re-activated unnoticed
    await asyncio.sleep_ms(50)
    mptest.false(m.status()["pdp"])
    await works(m)
    mptest.true(m.status()["pdp"])
    ctl.call("modem_fault", fault="slow")  # during a request: NetworkDown
    task = asyncio.create_task(fails_with(m, NetworkDown))
    await asyncio.sleep_ms(200)
    ctl.call("modem_fault", fault="pdp_drop")
    await task
    await works(m)
    await m.close()


async def reg_lost(dialect):
    ctl, m = await modem(dialect)
    ctl.call("modem_fault", fault="reg_lost")
    await asyncio.sleep_ms(50)
    st = m.status()
    mptest.false(st["registered"])
    mptest.eq(st["registration"], "searching")
    await fails_with(m, NetworkDown)
    ctl.call("modem_clear", fault="reg_lost")
    await works(m)
    mptest.eq(m.status()["registration"], "home")
    await m.close()


async def reboot(dialect):
    ctl, m = await modem(dialect)
    before = m.status()["restarts"]
    ctl.call("modem_fault", fault="reboot")  # between requests
    await asyncio.sleep_ms(250)
    mptest.eq(m.status()["restarts"], before + 1)
    await works(m)
    ctl.call("modem_fault", fault="slow")  # during a request
    task = asyncio.create_task(fails_with(m, ModemFault))
    await asyncio.sleep_ms(200)
    ctl.call("modem_fault", fault="reboot")
    e = await task
    mptest.true("restarted" in str(e), str(e))
    await works(m)
    await m.close()


async def garbage(dialect):
    ctl, m = await modem(dialect)
    cycles = m.status()["power_cycles"]
    ctl.call("modem_fault", fault="garbage", count=1)
    await fails_with(m, ModemFault)
    await works(m)
    mptest.eq(m.status()["power_cycles"], cycles)  # a probe was enough
    await m.close()


async def stuck(dialect):
    ctl, m = await modem(dialect)
    cycles = m.status()["power_cycles"]
    ctl.call("modem_fault", fault="stuck")
    await fails_with(m, ModemFault)
    await works(m)
    mptest.eq(m.status()["power_cycles"], cycles)  # escaped with +++, not power-cycled
    mptest.false(ctl.call("modem_state")["stuck"])
    await m.close()


async def no_answer(dialect):
    ctl, m = await modem(dialect)
    cycles = m.status()["power_cycles"]
    boots = ctl.call("modem_state")["boots"]
    ctl.call("modem_fault", fault="no_answer")
    await fails_with(m, ModemFault)
    await works(m)
    mptest.eq(m.status()["power_cycles"], cycles + 1)
    mptest.eq(ctl.call("modem_state")["boots"], boots + 1)
    await m.close()


async def test_simcom_urcs_mid_response():
    await urc_mid("simcom")


async def test_simcom_http_5xx():
    await http_5xx("simcom")


async def test_simcom_slow_answer_times_out():
    await slow("simcom")


async def test_simcom_reset_mid_body():
    await reset_mid_body("simcom")


async def test_simcom_pdp_drop():
    await pdp_drop("simcom")


async def test_simcom_registration_lost():
    await reg_lost("simcom")


async def test_simcom_reboot():
    await reboot("simcom")


async def test_simcom_garbage():
    await garbage("simcom")


async def test_simcom_stuck_in_data_mode():
    await stuck("simcom")


async def test_simcom_no_answer_power_cycles():
    await no_answer("simcom")


async def test_quectel_urcs_mid_response():
    await urc_mid("quectel")


async def test_quectel_http_5xx():
    await http_5xx("quectel")


async def test_quectel_slow_answer_times_out():
    await slow("quectel")


async def test_quectel_reset_mid_body():
    await reset_mid_body("quectel")


async def test_quectel_pdp_drop():
    await pdp_drop("quectel")


async def test_quectel_registration_lost():
    await reg_lost("quectel")


async def test_quectel_reboot():
    await reboot("quectel")


async def test_quectel_garbage():
    await garbage("quectel")


async def test_quectel_stuck_in_data_mode():
    await stuck("quectel")


async def test_quectel_no_answer_power_cycles():
    await no_answer("quectel")
