"""The character-level PSAM simulator (tools/sim/psam_uart.py) driven over a real hub socket."""

import json
import socket
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.sim.hub import FrameStream
from tools.sim.psam_server import build
from tools.sim.psam_uart import INVERSE, StandinPsamApp, build_atr

CLK = 3571200


class Reader:
    """The firmware's side of the wire, by hand: a UART link and the reset pin."""

    def __init__(self, port):
        self.uart = self._open(port, "uart psam")
        self.pins = self._open(port, "pin board")
        self.raw = bytearray()  # frames not yet parsed
        self.rx = bytearray()  # data bytes not yet read
        self.config(9600)

    @staticmethod
    def _open(port, hello):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(hello.encode() + b"\n")
        stream = FrameStream(sock)
        assert stream.rfile.readline() == b"OK\n"
        return stream

    def close(self):
        self.uart.sock.close()
        self.pins.sock.close()

    def config(self, baud, parity=0, stop=2, bits=8):
        cfg = {"baudrate": baud, "bits": bits, "parity": parity, "stop": stop}
        self.uart.write_frame(b"C", json.dumps(cfg).encode())

    def reset(self):
        for level in (0, 1):
            self.pins.write_frame(b"S", b"psam_rst=%d" % level)
            assert self.pins.read_frame()[0] == b"A"

    def write(self, data, echo=True):
        self.uart.write_frame(b"D", bytes(data))
        if echo:
            assert self.read(len(data)) == bytes(data)

    def read(self, n, timeout=10.0):
        """Up to n data bytes from the card, waiting at most `timeout` seconds for them."""
        deadline = time.monotonic() + timeout
        sock = self.uart.sock
        while len(self.rx) < n:
            while len(self.raw) >= 3 and len(self.raw) >= 3 + int.from_bytes(self.raw[1:3]):
                size = 3 + int.from_bytes(self.raw[1:3])
                assert self.raw[:1] == b"D"
                self.rx += self.raw[3:size]
                del self.raw[:size]
            if len(self.rx) >= n:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            assert chunk, "hub closed the link"
            self.raw += chunk
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def quiet(self, timeout=0.15):
        return self.read(1, timeout) == b""


@pytest.fixture(scope="module")
def hub():
    hub = build()
    hub.port = hub.start_in_thread()
    yield hub
    hub.stop()


@pytest.fixture()
def sim(hub):
    card = hub.psam
    card.clear(settings=True)
    card.app = StandinPsamApp()
    reader = Reader(hub.port)
    time.sleep(0.2)  # let the config frame land before the reset edge (a busy machine)
    yield hub, card, reader
    reader.close()


def test_atr_only_after_a_reset_edge(sim):
    hub, card, rd = sim
    assert rd.quiet()
    rd.reset()
    atr = build_atr()
    assert rd.read(len(atr)) == atr
    assert atr == bytes.fromhex("3B17" + "13") + b"PSAMSIM"
    stats = card.snapshot()
    assert (stats["resets"], stats["atrs"], stats["chars_out"]) == (1, 1, len(atr))


def test_inverse_convention_on_the_wire(sim):
    hub, card, rd = sim
    card.configure(inverse=True)
    rd.reset()
    atr = build_atr(inverse=True)
    wire = rd.read(len(atr))
    assert wire[0] == 0x03  # TS 0x3F as a direct-convention UART reads it
    assert bytes(INVERSE[b] for b in wire) == atr
    # Still at even parity: every ATR character was a parity error for this UART.
    assert card.snapshot()["parity_errors_out"] == len(atr)
    rd.write(bytes(INVERSE[b] for b in bytes.fromhex("80E0000000")))
    assert card.snapshot()["config_errors"] == 5  # even parity in the inverse convention: lost
    assert rd.quiet()
    rd.config(9600, parity=1)
    rd.write(bytes(INVERSE[b] for b in bytes.fromhex("80E0000000")))
    assert bytes(INVERSE[b] for b in rd.read(2)) == b"\x90\x00"
    assert card.snapshot()["parity_errors_out"] == len(atr)


def test_uart_settings_are_checked(sim):
    hub, card, rd = sim
    rd.reset()
    rd.read(len(build_atr()))
    for kw, words in (
        ({"baud": 9000}, "baud 9000"),
        ({"baud": 9600, "stop": 1}, "stop bits 1"),
        ({"baud": 9600, "parity": None}, "parity None"),
        ({"baud": 9600, "bits": 7}, "data bits 7"),
    ):
        rd.config(**kw)
        rd.write(bytes.fromhex("80E0000000"))
        assert rd.quiet()
        assert words in card.snapshot()["last_config_error"]
    rd.config(9700)  # within the 2 % a card tolerates
    rd.write(bytes.fromhex("80E0000000"))
    assert rd.read(2) == b"\x90\x00"


def test_echo_can_be_off(sim):
    hub, card, rd = sim
    card.configure(echo=False)
    rd.reset()
    rd.read(len(build_atr()))
    rd.write(bytes.fromhex("80E0000000"), echo=False)
    assert rd.read(2) == b"\x90\x00"
    assert card.snapshot()["echo"] == 0


def pps(pps1):
    return bytes((0xFF, 0x10, pps1, 0xFF ^ 0x10 ^ pps1))


def test_pps_changes_the_rate_and_is_first_only(sim):
    hub, card, rd = sim
    rd.reset()
    rd.read(len(build_atr()))
    rd.write(pps(0x13))
    assert rd.read(4) == pps(0x13)
    assert card.snapshot()["baud"] == pytest.approx(38400)
    rd.write(bytes.fromhex("80E0000000"))  # still at 9600: lost
    assert rd.quiet()
    rd.config(38400)
    rd.write(bytes.fromhex("80E0000000"))
    assert rd.read(2) == b"\x90\x00"
    rd.write(pps(0x11)[:1])  # 0xFF after a command is a header byte (INS FF is invalid)
    rd.reset()
    assert rd.read(len(build_atr())) != build_atr()  # reader still at 38400: garbled ATR
    assert card.snapshot()["baud"] == pytest.approx(9600)


def test_pps_unsupported_values_get_the_default_answer(sim):
    hub, card, rd = sim
    rd.reset()
    rd.read(len(build_atr()))
    rd.write(pps(0x18))  # D = 12 is beyond TA1 0x13
    assert rd.read(3) == bytes((0xFF, 0x00, 0xFF))
    assert card.snapshot()["baud"] == pytest.approx(9600)
    rd.write(bytes.fromhex("80E0000000"))
    assert rd.read(2) == b"\x90\x00"


@pytest.mark.parametrize("how", ["silent", "mismatch", "default"])
def test_pps_refusals(sim, how):
    hub, card, rd = sim
    card.inject("pps_refuse", how=how)
    rd.reset()
    rd.read(len(build_atr()))
    rd.write(pps(0x13))
    answer = rd.read(4, 0.2)
    assert answer == {"silent": b"", "mismatch": pps(0x11), "default": b"\xff\x00\xff"}[how]
    rd.write(bytes.fromhex("80E0000000"))
    assert (rd.read(2, 0.2) == b"\x90\x00") == (how == "default")
    rd.reset()  # a reset always recovers, PPS included
    rd.read(len(build_atr()))
    rd.write(pps(0x13))
    assert rd.read(4) == pps(0x13)


def test_t0_cases_with_each_procedure_style(sim):
    hub, card, rd = sim
    for how in ("ack", "single", "mixed"):
        card.configure(procedure=how)
        rd.reset()
        rd.read(len(build_atr()))
        # Case 1: no data either way.
        rd.write(bytes.fromhex("80E0000000"))
        assert rd.read(2) == b"\x90\x00"
        # Case 3: the card asks for the data with INS or ~INS per byte.
        rd.write(bytes.fromhex("8072000004"))
        data = b"\x01\x02\x03\x04"
        if how == "ack":
            assert rd.read(1) == b"\x72"
            rd.write(data)
        else:
            assert rd.read(1) == b"\x8d"
            rd.write(data[:1])
            for i in range(1, 4):
                if how == "mixed":
                    assert rd.read(1) == b"\x72"
                    rd.write(data[1:])
                    break
                assert rd.read(1) == b"\x8d"
                rd.write(data[i : i + 1])
        assert rd.read(2) == b"\x90\x00"
        # Case 2: GET CHALLENGE 4 bytes.
        rd.write(bytes.fromhex("0084000004"))
        n = {"ack": 7, "single": 10, "mixed": 8}[how]
        got = rd.read(n + 1, 0.2)
        assert len(got) == n, how
        assert got[0] == (0x84 if how == "ack" else 0x7B)
        assert got[-2:] == b"\x90\x00"


def test_case4_61xx_get_response_and_6cxx(sim):
    hub, card, rd = sim
    rd.reset()
    rd.read(len(build_atr()))
    rd.write(bytes.fromhex("80EE000003"))
    assert rd.read(1) == b"\xee"
    rd.write(b"abc")
    assert rd.read(2) == b"\x61\x03"
    rd.write(bytes.fromhex("00C0000005"))  # too long: the card says how much there is
    assert rd.read(2) == b"\x6c\x03"
    rd.write(bytes.fromhex("00C0000003"))
    assert rd.read(6) == b"\xc0abc\x90\x00"
    rd.write(bytes.fromhex("00C0000003"))  # nothing left
    assert rd.read(2) == b"\x69\x85"
    rd.write(bytes.fromhex("00B0960008"))  # terminal number is 6 bytes
    assert rd.read(2) == b"\x6c\x06"
    # Past 256 bytes: 61 00, then chained GET RESPONSEs.
    rd.write(bytes.fromhex("80EC0300C8"))
    assert rd.read(1) == b"\xec"
    rd.write(bytes(200))
    assert rd.read(2) == b"\x61\x00"
    rd.write(bytes.fromhex("00C0000000"))
    got = rd.read(259)
    assert got[0] == 0xC0 and got[-2:] == b"\x61\x00"  # 344 left: "256 or more"
    rd.write(bytes.fromhex("00C0000000"))
    assert rd.read(259)[-2:] == b"\x61\x58"  # 88 left
    rd.write(bytes.fromhex("00C0000058"))
    assert rd.read(91)[-2:] == b"\x90\x00"


def test_nulls_for_slow_commands(sim):
    hub, card, rd = sim
    card.configure(nulls=3, null_ms=60)
    rd.reset()
    rd.read(len(build_atr()))
    rd.write(bytes.fromhex("8070000024"))
    assert rd.read(1) == b"\x70"
    t0 = time.monotonic()
    rd.write(bytes(36))
    assert rd.read(5, 2.0) == b"\x60\x60\x60\x61\x08"
    assert time.monotonic() - t0 >= 0.2
    assert card.snapshot()["nulls"] == 3


def test_a_reset_cancels_a_slow_answer(sim):
    hub, card, rd = sim
    card.configure(nulls=3, null_ms=100)
    rd.reset()
    rd.read(len(build_atr()))
    rd.write(bytes.fromhex("8070000024"))
    rd.read(1)
    rd.write(bytes(36))
    rd.reset()
    atr = build_atr()
    assert rd.read(len(atr)) == atr
    assert rd.quiet(0.5)  # no stale NULL or status from before the reset


@pytest.mark.parametrize(
    "kind,params,want",
    [
        ("no_atr", {}, b""),
        ("short_atr", {}, build_atr()[:5]),
        ("corrupt_atr", {}, b"\x35" + build_atr()[1:]),
    ],
)
def test_atr_faults(sim, kind, params, want):
    hub, card, rd = sim
    card.inject(kind, **params)
    rd.reset()
    assert rd.read(len(build_atr()), 0.3) == want
    rd.write(bytes.fromhex("80E0000000"))
    # Mute until the next reset, unless the ATR was only garbled.
    assert rd.read(2, 0.15) == (b"\x90\x00" if kind == "corrupt_atr" else b"")
    rd.reset()
    assert rd.read(len(build_atr())) == build_atr()


def test_corrupt_atr_breaks_tck_when_there_is_one(sim):
    hub, card, rd = sim
    card.configure(t1=True)
    card.inject("corrupt_atr")
    rd.reset()
    atr = build_atr(t1=True)
    got = rd.read(len(atr))
    assert got[:-1] == atr[:-1] and got[-1] == atr[-1] ^ 1


def test_late_atr(sim):
    hub, card, rd = sim
    card.inject("late_atr", ms=150)
    rd.reset()
    assert rd.read(1, 0.1) == b""
    assert rd.read(len(build_atr()), 1.0) == build_atr()


def test_line_faults_then_reset_recovers(sim):
    hub, card, rd = sim
    cases = [
        ("garbage", {}, b"\x00\x13\xa5"),
        ("parity", {"to": "reader"}, b"\xf2"),  # ACK 0x72 with bit 7 flipped
        ("silence", {"at": "header"}, b""),
        ("silence", {"at": "data"}, b"\x72"),
    ]
    for kind, params, want in cases:
        rd.reset()
        rd.read(len(build_atr()))
        card.inject(kind, **params)
        rd.write(bytes.fromhex("8072000004"))
        assert rd.read(3, 0.2) == want, kind
        if want[-1:] == b"\x72":
            rd.write(b"\x01\x02\x03\x04")
            assert rd.quiet(), kind
        assert card.snapshot()["mode"] in ("dead", "data", "header"), kind
    rd.reset()
    rd.read(len(build_atr()))
    card.inject("parity", to="card")
    rd.uart.write_frame(b"D", bytes.fromhex("8072000004"))
    echo = rd.read(5)
    assert echo[0] == 0x81 and echo[1:] == bytes.fromhex("72000004")
    assert rd.quiet()
    rd.reset()
    rd.read(len(build_atr()))
    rd.write(bytes.fromhex("8072000004"))
    assert rd.read(1) == b"\x72"


def test_stats_count_each_direction(sim):
    hub, card, rd = sim
    rd.reset()
    rd.read(len(build_atr()))
    card.clear()
    rd.write(bytes.fromhex("8072000004"))
    rd.read(1)
    rd.write(b"\x01\x02\x03\x04")
    rd.read(2)
    stats = card.snapshot()
    assert (stats["chars_in"], stats["chars_out"], stats["echo"]) == (9, 3, 9)
    assert stats["commands"] == ["8072000004"]
    with pytest.raises(KeyError):
        card.inject("meteor")
    with pytest.raises(KeyError):
        card.configure(colour="red")


def test_app_errors_become_a_status_word(sim):
    hub, card, rd = sim

    class Broken:
        def process_apdu(self, apdu):
            raise RuntimeError("bug")

    card.app = Broken()
    rd.reset()
    rd.read(len(build_atr()))
    rd.write(bytes.fromhex("80E0000000"))
    assert rd.read(2) == b"\x6f\x00"
    rd.write(bytes.fromhex("8060000000"))  # INS 6x is invalid in T=0
    assert rd.read(2) == b"\x6d\x00"


def test_specific_mode_atr_and_rate(sim):
    hub, card, rd = sim
    assert build_atr(ta1=0x13, hist=b"", ta2=0x00) == bytes.fromhex("3B90131000")
    assert build_atr(ta1=0x13, hist=b"", ta2=0x00, wi=5, t1=True)[:7] == bytes.fromhex(
        "3B9013D0000501"
    )
    card.configure(ta2=0x00)
    rd.reset()
    atr = build_atr(ta2=0x00)
    assert rd.read(len(atr)) == atr
    assert card.snapshot()["baud"] == pytest.approx(38400)  # TA1's rate, no PPS
    rd.config(38400)
    rd.write(bytes.fromhex("80E0000000"))
    assert rd.read(2) == b"\x90\x00"


# The simulator's ATR builder against the driver's parser (drivers/iso7816.py also runs under
# CPython), and the line-time model the benchmark work reuses.
sys.path.append(str(Path(__file__).resolve().parents[2] / "drivers"))
import iso7816  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(
    ta1=st.one_of(st.none(), st.integers(0, 255)),
    wi=st.one_of(st.none(), st.integers(1, 255)),
    hist=st.binary(max_size=15),
    t1=st.booleans(),
    inverse=st.booleans(),
    ta2=st.one_of(st.none(), st.integers(0, 255)),
)
def test_simulator_atrs_parse_in_the_driver(ta1, wi, hist, t1, inverse, ta2):
    raw = build_atr(ta1, wi, hist, t1, inverse, ta2)
    atr = iso7816.parse_atr(raw)
    assert atr.inverse == inverse
    assert atr.ta.get(1) == ta1
    assert atr.ta.get(2) == ta2 and atr.specific == (ta2 is not None)
    assert atr.wi == (wi or 10)
    assert atr.hist == hist
    assert atr.protocols == ([0, 1] if t1 else [0])
    assert (atr.tck is not None) == t1
    assert iso7816.expected_length(raw) == (len(raw), True)
    wire = bytes(INVERSE[b] for b in raw) if inverse else raw
    assert wire[0] == (0x03 if inverse else 0x3B)
    assert bytes(iso7816.inverse_table()) == INVERSE


@given(st.integers(0, 255), st.one_of(st.none(), st.integers(1, 256)))
def test_line_time_model_under_cpython(lc, le):
    tx, rx = iso7816.t0_chars(lc, le)
    assert tx == 5 + lc + (5 if lc and le is not None else 0)
    assert rx >= 2
    us = iso7816.line_time_us(tx + rx, 9600)
    assert abs(us - (tx + rx) * 12 / 9600 * 1e6) <= 1
