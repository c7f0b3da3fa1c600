"""The modem simulator (tools/sim/modem.py) and its hub server, driven byte by byte."""

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.sim import modem_server
from tools.sim.modem import ModemSim

FAST = {
    "on_pulse_ms": 20,
    "off_pulse_ms": 100,
    "boot_ms": 30,
    "sim_ready_ms": 60,
    "reg_ms": 30,
    "guard_ms": 50,
    "urc_ms": 5,
    "slow_ms": 300,
}


class Wire:
    """Stands in for the hub's FrameStream: collects what the modem sends to the firmware."""

    def __init__(self):
        self.buf = bytearray()
        self.cv = threading.Condition()

    def write_frame(self, kind, payload=b""):
        with self.cv:
            self.buf += payload
            self.cv.notify_all()

    def wait_for(self, token, timeout=3.0):
        """Everything up to and including `token`, consumed; AssertionError when it never comes."""
        end = time.monotonic() + timeout
        with self.cv:
            while token not in self.buf:
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("never got %r; have %r" % (token, bytes(self.buf[-200:])))
                self.cv.wait(left)
            cut = self.buf.index(token) + len(token)
            out = bytes(self.buf[:cut])
            del self.buf[:cut]
            return out

    def quiet(self, seconds=0.15):
        time.sleep(seconds)
        with self.cv:
            out = bytes(self.buf)
            self.buf.clear()
            return out


def make(dialect="simcom", on=True):
    sim = ModemSim(dialect, timing=FAST)
    wire = Wire()
    sim.stream = wire
    if on:
        press(sim, 0.03)
        wire.wait_for(b"PB DONE\r\n")
    return sim, wire


def press(sim, seconds):
    sim.on_pwrkey(1)
    time.sleep(seconds)
    sim.on_pwrkey(0)


def at(sim, wire, cmd, until=b"OK\r\n"):
    sim.on_data(cmd.encode() + b"\r")
    return wire.wait_for(until)


def registered(sim, wire):
    at(sim, wire, "ATE0")
    at(sim, wire, "AT+CEREG=1")
    deadline = time.monotonic() + 2
    while sim.reg_stat != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    wire.quiet(0.02)


@pytest.fixture(scope="module")
def http_server():
    log = []
    server = modem_server.start_http_server(log)
    yield "http://127.0.0.1:%d" % server.server_address[1], log
    server.shutdown()


@pytest.mark.parametrize(
    "dialect, boot, down",
    [
        ("simcom", [b"RDY", b"+CPIN: READY", b"SMS DONE", b"PB DONE"], b"NORMAL POWER DOWN"),
        ("quectel", [b"RDY", b"+CFUN: 1", b"+CPIN: READY", b"+QIND: PB DONE"], b"POWERED DOWN"),
    ],
)
def test_power_key_boot_urcs_and_power_down(dialect, boot, down):
    sim, wire = make(dialect, on=False)
    press(sim, 0.005)  # too short: nothing happens
    assert wire.quiet() == b"" and not sim.power
    sim.on_data(b"AT\r")
    assert wire.quiet() == b""  # off: deaf
    press(sim, 0.03)
    text = wire.wait_for(boot[-1])
    positions = [text.index(u) for u in boot]
    assert positions == sorted(positions)
    assert sim.boots == 1
    press(sim, 0.03)  # a short press while on does not switch off
    assert sim.power
    press(sim, 0.12)
    wire.wait_for(down)
    assert not sim.power


def test_echo_until_ate0_and_sim_busy_first():
    sim, wire = make(on=False)
    press(sim, 0.03)
    wire.wait_for(b"RDY\r\n")
    assert at(sim, wire, "AT+CPIN?", b"\r\n+CME ERROR: 14\r\n").startswith(b"AT+CPIN?\r")
    wire.wait_for(b"PB DONE\r\n")
    assert b"+CPIN: READY" in at(sim, wire, "AT+CPIN?")
    assert at(sim, wire, "ATE0").startswith(b"ATE0\r")
    reply = at(sim, wire, "AT+CSQ")
    assert not reply.startswith(b"AT") and b"+CSQ:" in reply
    assert b"ERROR" in at(sim, wire, "AT+NOSUCH", b"ERROR\r\n")
    assert b"ERROR" in at(sim, wire, "HELLO", b"ERROR\r\n")


@pytest.mark.parametrize(
    "dialect, own, foreign, ident",
    [
        (
            "simcom",
            ["AT+CICCID", 'AT+CSSLCFG="sslversion",0,4'],
            ["AT+QCCID", "AT+QPOWD=1", 'AT+QICSGP=1,1,"cmnet"', "AT+QHTTPSTOP"],
            b"SIMCOM_SIM7600E-H",
        ),
        (
            "quectel",
            ["AT+QCCID", 'AT+QSSLCFG="sslversion",1,4'],
            ["AT+CICCID", "AT+CPOF", "AT+HTTPINIT", 'AT+CSSLCFG="sslversion",0,4'],
            b"EC200U",
        ),
    ],
)
def test_each_dialect_knows_its_own_commands_and_not_the_others(dialect, own, foreign, ident):
    sim, wire = make(dialect)
    at(sim, wire, "ATE0")
    assert ident in at(sim, wire, "AT+CGMM")
    for cmd in own:
        assert b"ERROR" not in at(sim, wire, cmd), cmd
    for cmd in foreign:
        assert at(sim, wire, cmd, b"ERROR\r\n").strip() == b"ERROR", cmd
    assert sim.power, "the other module's power-down command did nothing"
    # the 3GPP commands both modules have
    assert b"+CGACT: 1,0" in at(sim, wire, "AT+CGACT?")


def test_sim_missing_pin_and_rejected_apn():
    sim, wire = make()
    at(sim, wire, "ATE0")
    at(sim, wire, "AT+CEREG=1")
    sim.set_network(sim_state="MISSING")
    wire.wait_for(b"+CEREG: 0\r\n")
    assert b"+CME ERROR: 10" in at(sim, wire, "AT+CPIN?", b"\r\n+CME ERROR: 10\r\n")
    sim.set_network(sim_state="SIM PIN")
    assert b"+CPIN: SIM PIN" in at(sim, wire, "AT+CPIN?")
    sim.set_network(sim_state="READY", operator_stat=3)
    wire.wait_for(b"+CEREG: 3\r\n")
    sim.set_network(operator_stat=1)
    wire.wait_for(b"+CEREG: 1\r\n")
    sim.apns = ["internet"]
    at(sim, wire, 'AT+CGDCONT=1,"IP","cmnet"')
    assert b"ERROR" in at(sim, wire, "AT+CGACT=1,1", b"ERROR\r\n")
    at(sim, wire, 'AT+CGDCONT=1,"IP","internet"')
    at(sim, wire, "AT+CGACT=1,1")
    assert sim.pdp


def test_ppp_dial_data_mode_and_escape():
    sim, wire = make("quectel")
    at(sim, wire, "ATE0")
    assert b"NO CARRIER" in at(sim, wire, "ATD*99#", b"NO CARRIER\r\n")  # no context yet
    registered(sim, wire)
    at(sim, wire, 'AT+QICSGP=1,1,"cmnet","","",0')
    assert b"CONNECT" in at(sim, wire, "ATD*99#", b"CONNECT\r\n")
    sim.on_data(b"\x7e\xff\x03AT\r\x7e")  # PPP, not commands
    time.sleep(0.06)
    sim.on_data(b"+++")
    wire.wait_for(b"OK\r\n")
    assert "AT" not in sim.commands[-1:] and sim.ppp_dials == 1
    assert b"OK" in at(sim, wire, "ATH")


def test_registration_urcs_signal_and_network_time():
    sim, wire = make()
    at(sim, wire, "ATE0")
    at(sim, wire, "AT+CEREG=1")
    wire.wait_for(b"+CEREG: 1\r\n")
    assert b"+CEREG: 1,1" in at(sim, wire, "AT+CEREG?")
    assert b"+CSQ: 21,99" in at(sim, wire, "AT+CSQ")
    sim.network_time = (2026, 11, 29, 20, 22, 0, 32)
    assert b'+CCLK: "26/11/29,20:22:00+32"' in at(sim, wire, "AT+CCLK?")
    sim.operator_stat = 5
    sim.inject("reg_lost")
    wire.wait_for(b"+CEREG: 2\r\n")
    assert not sim.pdp
    sim.clear("reg_lost")
    wire.wait_for(b"+CEREG: 5\r\n")


def test_simcom_http_post_reaches_the_real_server(http_server):
    url, log = http_server
    sim, wire = make("simcom")
    registered(sim, wire)
    at(sim, wire, 'AT+CGDCONT=1,"IP","cmnet"')
    at(sim, wire, "AT+CGACT=1,1")
    assert b"10.64.1.7" in at(sim, wire, "AT+CGPADDR=1")
    at(sim, wire, "AT+HTTPINIT")
    assert b"ERROR" in at(sim, wire, "AT+HTTPINIT", b"ERROR\r\n")  # one session at a time
    at(sim, wire, 'AT+HTTPPARA="URL","%s/echo"' % url)
    at(sim, wire, 'AT+HTTPPARA="USERDATA","X-Sig: abc\\r\\nX-Dev: 7"')
    body = bytes(range(256)) * 5
    sim.on_data(b"AT+HTTPDATA=%d,5000\r" % len(body))
    wire.wait_for(b"DOWNLOAD\r\n")
    sim.on_data(body[:100])
    sim.on_data(body[100:])
    wire.wait_for(b"OK\r\n")
    at(sim, wire, "AT+HTTPACTION=1")
    wire.wait_for(b"+HTTPACTION: 1,200,%d\r\n" % len(body))
    assert log[-1]["headers"]["X-Sig"] == "abc" and log[-1]["headers"]["X-Dev"] == "7"
    assert b"+HTTPREAD: LEN,1280" in at(sim, wire, "AT+HTTPREAD?")
    sim.on_data(b"AT+HTTPREAD=0,1280\r")
    text = wire.wait_for(b"+HTTPREAD: 0\r\n")
    first = text.index(b"+HTTPREAD: DATA,1024\r\n") + len(b"+HTTPREAD: DATA,1024\r\n")
    assert text[first : first + 1024] == body[:1024]
    second = text.index(b"+HTTPREAD: DATA,256\r\n") + len(b"+HTTPREAD: DATA,256\r\n")
    assert text[second : second + 256] == body[1024:]
    at(sim, wire, "AT+HTTPTERM")


def test_quectel_http_get_with_our_own_request_header(http_server):
    url, log = http_server
    sim, wire = make("quectel")
    registered(sim, wire)
    at(sim, wire, 'AT+QICSGP=1,1,"cmnet","","",0')
    at(sim, wire, "AT+QIACT=1")
    assert b'+QIACT: 1,1,1,"10.64.1.7"' in at(sim, wire, "AT+QIACT?")
    at(sim, wire, 'AT+QHTTPCFG="requestheader",1')
    full = (url + "/blob/3000").encode()
    sim.on_data(b"AT+QHTTPURL=%d,10\r" % len(full))
    wire.wait_for(b"CONNECT\r\n")
    sim.on_data(full)
    wire.wait_for(b"OK\r\n")
    req = b"GET /blob/3000 HTTP/1.1\r\nHost: x\r\nX-Sig: q\r\n\r\n"
    sim.on_data(b"AT+QHTTPGET=10,%d,10\r" % len(req) + req)  # prompt and payload in one chunk
    wire.wait_for(b"+QHTTPGET: 0,200,3000\r\n")
    assert log[-1]["headers"]["X-Sig"] == "q"
    sim.on_data(b"AT+QHTTPREAD=10\r")
    text = wire.wait_for(b"+QHTTPREAD: 0\r\n")
    start = text.index(b"CONNECT\r\n") + len(b"CONNECT\r\n")
    assert text[start : start + 3000] == modem_server.blob(3000)
    assert text[start + 3000 :].startswith(b"\r\nOK\r\n")


@pytest.mark.parametrize("dialect, code", [("simcom", b"715"), ("quectel", b"731")])
def test_https_without_tls_configuration_fails_in_the_module(http_server, dialect, code):
    url, _ = http_server
    sim, wire = make(dialect)
    registered(sim, wire)
    sim.pdp = True
    https = url.replace("http://", "https://") + "/blob/1"
    if dialect == "simcom":
        at(sim, wire, "AT+HTTPINIT")
        at(sim, wire, 'AT+HTTPPARA="URL","%s"' % https)
        at(sim, wire, "AT+HTTPACTION=0")
        assert code in wire.wait_for(b"\r\n", 2) + wire.wait_for(b"\r\n", 2)
    else:
        sim.on_data(b"AT+QHTTPURL=%d\r" % len(https))
        wire.wait_for(b"CONNECT\r\n")
        sim.on_data(https.encode())
        wire.wait_for(b"OK\r\n")
        at(sim, wire, "AT+QHTTPGET=10")
        assert code in wire.wait_for(b"+QHTTPGET: " + code)


def test_faults_no_answer_stuck_garbage_5xx(http_server):
    url, _ = http_server
    sim, wire = make()
    at(sim, wire, "ATE0")
    with pytest.raises(ValueError, match="unknown fault"):
        sim.inject("meteor")
    sim.inject("no_answer")
    sim.on_data(b"AT\r")
    assert wire.quiet() == b""
    press(sim, 0.12)  # the key still works on a hung module: off...
    press(sim, 0.03)  # ...and on again, healthy
    wire.wait_for(b"PB DONE\r\n")
    assert b"OK" in at(sim, wire, "AT")
    at(sim, wire, "ATE0")
    sim.inject("stuck")
    sim.on_data(b"AT\r")
    sim.on_data(b"+++")  # right after other bytes: just data, ignored
    assert wire.quiet(0.1) == b""
    sim.on_data(b"+++")  # after a guard time: answered OK after the trailing guard
    assert b"OK" in wire.wait_for(b"OK\r\n")
    assert b"OK" in at(sim, wire, "AT")
    sim.inject("garbage", count=1)
    burst = wire.quiet(0.05)
    assert len(burst) > 20
    sim.on_data(b"AT\r")
    assert b"OK\r\n" not in wire.quiet(0.05)
    assert b"OK" in at(sim, wire, "AT")
    sim.inject("http_5xx")
    sim.pdp = True
    at(sim, wire, "AT+HTTPINIT")
    at(sim, wire, 'AT+HTTPPARA="URL","%s/blob/5"' % url)
    at(sim, wire, "AT+HTTPACTION=0")
    wire.wait_for(b"+HTTPACTION: 0,503,19\r\n")
    assert sim.faults == {}


def test_server_reset_and_pdp_loss_become_module_error_codes(http_server):
    url, _ = http_server
    sim, wire = make("quectel")
    registered(sim, wire)
    at(sim, wire, 'AT+QICSGP=1,1,"cmnet","","",0')
    at(sim, wire, "AT+QIACT=1")
    for path, want in (("/reset/2000", b"+QHTTPGET: 717"), ("/blob/10", b"+CME ERROR: 709")):
        if path == "/blob/10":
            sim.inject("pdp_drop")
            wire.wait_for(b'+QIURC: "pdpdeact",1')
        full = (url + path).encode()
        sim.on_data(b"AT+QHTTPURL=%d\r" % len(full))
        wire.wait_for(b"CONNECT\r\n")
        sim.on_data(full)
        wire.wait_for(b"OK\r\n")
        sim.on_data(b"AT+QHTTPGET=10\r")
        wire.wait_for(want)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_break_the_command_line(noise):
    sim, wire = make(on=False)
    sim.power = True  # skip the boot: only the parser matters here
    sim.sim_ready = True
    sim.on_data(noise)
    sim.on_data(b"\x1b\rATE0\r")  # ESC and CR end whatever line the noise started
    sim.input = None
    sim.stuck = False
    wire.buf.clear()
    sim.on_data(b"AT\r")
    assert b"OK\r\n" in wire.wait_for(b"OK\r\n", 1)


def test_hub_server_commands():
    hub = modem_server.build()
    assert hub.call("modem_dialect", {"dialect": "quectel"}) == "quectel"
    with pytest.raises(ValueError):
        hub.call("modem_dialect", {"dialect": "nokia"})
    with pytest.raises(ValueError):
        hub.call("modem_timing", {"warp_ms": 1})
    assert hub.call("modem_timing", {"boot_ms": 10})["boot_ms"] == 10
    state = hub.call("modem_state", {})
    assert state["dialect"] == "quectel" and state["power"] is False
    assert hub.call("modem_fault", {"fault": "slow", "count": 2}) == {"slow": 2}
    assert hub.call("modem_clear", {}) == {}
    with pytest.raises(ValueError):
        hub.call("modem_set", {"sim_state": "LOCKED"})
    assert hub.call("modem_set", {"sim_state": "MISSING", "apns": ["cmnet"]}) is True
    assert hub.call("http_port", {}) > 0
    assert hub.call("http_log", {}) == []
    assert hub.call("modem_commands", {"clear": True}) == []
