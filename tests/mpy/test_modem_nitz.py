# mpy: heapsize=256k timeout=180 server=tools.sim.modem_server
# Network time only when the network sent it (docs/time.md): the driver asks for time zone
# reports (AT+CTZR: +CTZV on SIMCom, +CTZE with the local time on Quectel, 3GPP TS 27.007 8.41)
# and reads AT+CCLK only after one came; a network without NITZ leaves the module's own clock,
# which is never offered as the network's time. A module that restarts forgets it.
import log
import modem_rig
import mptest
import timeutil
from modem import parse_ctz
from sim_pin import Pin
from sim_uart import SimUART
from simlink import Control

TIMING = modem_rig.timing(sim_ready_ms=100)
ctl = Control()
_uart = []


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()
    if not _uart:
        _uart.append(SimUART("modem", timeout=0, rxbuf=12288))
    while _uart[0].any():
        _uart[0].read(_uart[0].any())


def teardown():
    ctl.call("modem_set", nitz=True, time_offset=0)


def make(dialect):
    ctl.call("modem_dialect", dialect=dialect)
    ctl.call("modem_timing", **TIMING)
    ctl.call("modem_clear")
    ctl.call("modem_set", sim_state="READY", operator_stat=1, apns=None)
    m = modem_rig.transport(_uart[0], Pin("modem_pwrkey", Pin.OUT), dialect, probe_ms=150)
    times = []
    m.on_time = times.append
    return m, times


def test_parse_ctz_both_forms():
    want = timeutil.to_seconds(2026, 11, 29, 12, 22, 0)
    mptest.eq(parse_ctz(b"+CTZV: +32"), None, "a time zone alone carries no time")
    mptest.eq(parse_ctz(b"+CTZV: +32,26/11/29,20:22:00"), want)
    mptest.eq(parse_ctz(b'+CTZE: "+32",0,"2026/11/29,20:22:00"'), want)
    mptest.eq(parse_ctz(b'+CTZE: "-08",0,"2026/11/29,10:22:00"'), want)
    mptest.eq(parse_ctz(b'+CTZE: "+32",0,"1980/01/06,00:00:05"'), None, "implausible")
    mptest.raises(ValueError, parse_ctz, b"+CTZV: zone")


async def test_network_time_after_nitz_in_both_dialects():
    for dialect, mode in (("simcom", 1), ("quectel", 2)):
        m, times = make(dialect)
        ctl.call("modem_set", network_time=[2026, 11, 29, 20, 22, 0, 32])
        await m.start()
        mptest.true(m.status()["nitz"], dialect)
        mptest.true("AT+CTZR=%d" % mode in ctl.call("modem_commands", clear=True))
        mptest.eq(times, [timeutil.to_seconds(2026, 11, 29, 12, 22, 0)], dialect)
        await m.close()


async def test_no_nitz_no_network_time_however_the_module_clock_reads():
    for dialect in ("simcom", "quectel"):
        m, times = make(dialect)
        ctl.call("modem_set", nitz=False)
        await m.start()
        mptest.false(m.status()["nitz"])
        mptest.eq(await m.network_time(), None)
        mptest.eq(times, [])
        mptest.true(log.find("no NITZ"))
        mptest.false("AT+CCLK?" in ctl.call("modem_commands", clear=True), "not even asked")
        await m.close()


async def test_a_wrong_network_time_is_passed_on_for_the_rules_to_judge():
    # The driver reports what the network says; firmware/timetrust.py decides (years off: held).
    m, times = make("quectel")
    ctl.call("modem_set", network_time=[], time_offset=10 * 365 * 86400)
    await m.start()
    mptest.eq(len(times), 1)
    mptest.true(times[0] > timeutil.to_seconds(2035, 1, 1), times)
    await m.close()


async def test_a_module_restart_forgets_nitz():
    m, times = make("simcom")
    await m.start()
    mptest.true(m.nitz)
    m._on_rdy(b"RDY")
    mptest.false(m.nitz)
    await m.close()
