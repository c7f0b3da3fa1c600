"""The MFRC522 simulator (tools/sim/rc522.py) at register level, and its hub server."""

import json
import socket

import crc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.sim import picc as pm
from tools.sim import rc522 as r
from tools.sim import rc522_server

MODE0 = {"firstbit": "MSB", "polarity": 0, "phase": 0}


def xfer(sim, data, config=MODE0):
    sim.spi_select(True)
    out = sim.spi_exchange(bytes(data), config)
    sim.spi_select(False)
    return out


def wr(sim, reg, *values):
    xfer(sim, bytes(((reg << 1) & 0x7E,)) + bytes(values))


def rd(sim, *regs):
    out = xfer(sim, bytes(0x80 | (reg << 1) for reg in regs) + b"\x00")
    return out[1:] if len(regs) > 1 else out[1]


def ready_chip(*uids):
    sim = r.RC522Sim()
    wr(sim, r.TXASK, 0x40)
    wr(sim, r.COLL, 0x00)
    wr(sim, r.TMODE, 0x80)
    wr(sim, r.TPRESCALER, 169)
    wr(sim, r.TRELOAD_H, 0)
    wr(sim, r.TRELOAD_L, 40)  # ~1 ms
    wr(sim, r.TXCONTROL, 0x83)
    for i, uid in enumerate(uids):
        sim.place("c%d" % i, pm.Picc(pm.TestCard(bytes.fromhex(uid))))
    return sim


def transceive(sim, data, last_bits=0, align=0):
    wr(sim, r.COMMAND, r.CMD_IDLE)
    wr(sim, r.COMIRQ, 0x7F)
    wr(sim, r.FIFOLEVEL, 0x80)
    wr(sim, r.FIFODATA, *data)
    wr(sim, r.COMMAND, r.CMD_TRANSCEIVE)
    wr(sim, r.BITFRAMING, 0x80 | (align << 4) | last_bits)
    for _ in range(4):  # as a driver: until RxIRq or TimerIRq (ErrIRq may come first)
        irq, err, level, control = rd(sim, r.COMIRQ, r.ERROR, r.FIFOLEVEL, r.CONTROL)
        if irq & (r.IRQ_RX | r.IRQ_TIMER):
            break
    fifo = rd(sim, *([r.FIFODATA] * level)) if level > 1 else bytes((rd(sim, r.FIFODATA),))
    return irq, err, fifo[:level], control & 7


def test_registers_reset_values_and_version():
    sim = r.RC522Sim()
    assert rd(sim, r.VERSION) == 0x92
    assert rd(sim, r.MODE) == 0x3F
    wr(sim, r.MODE, 0x3D)
    assert rd(sim, r.MODE) == 0x3D
    wr(sim, r.VERSION, 0x00)  # read-only
    assert rd(sim, r.VERSION, r.MODE) == b"\x92\x3d"  # two registers in one select
    wr(sim, r.COMMAND, r.CMD_SOFTRESET)
    assert rd(sim, r.MODE) == 0x3F


def test_spi_mode_select_and_dead_chip():
    sim = r.RC522Sim()
    assert sim.spi_exchange(b"\xee\x00", MODE0) == b"\xff\xff"  # not selected
    assert xfer(sim, b"\xee\x00", dict(MODE0, firstbit="LSB")) == b"\xff\xff"
    assert sim.errors
    sim.inject("dead")
    assert xfer(sim, b"\xee\x00") == b"\x00\x00"
    sim.inject("alive")
    assert rd(sim, r.VERSION) == 0x92


def test_fifo_write_read_flush_and_overflow():
    sim = r.RC522Sim()
    wr(sim, r.FIFODATA, *range(10))
    assert rd(sim, r.FIFOLEVEL) == 10
    assert rd(sim, *([r.FIFODATA] * 10)) == bytes(range(10))
    assert rd(sim, r.FIFODATA) == 0  # empty FIFO reads 0
    wr(sim, r.FIFODATA, *range(70))
    assert rd(sim, r.FIFOLEVEL) == 64
    assert rd(sim, r.ERROR) & r.ERR_OVFL
    wr(sim, r.FIFOLEVEL, 0x80)
    assert rd(sim, r.FIFOLEVEL) == 0 and not rd(sim, r.ERROR) & r.ERR_OVFL


def test_irq_registers_set_and_clear():
    sim = r.RC522Sim()
    wr(sim, r.COMIRQ, 0x7F)
    assert rd(sim, r.COMIRQ) == 0
    wr(sim, r.COMIRQ, 0x80 | 0x21)
    assert rd(sim, r.COMIRQ) == 0x21
    wr(sim, r.COMIRQ, 0x01)
    assert rd(sim, r.COMIRQ) == 0x20


@given(st.binary(max_size=64), st.sampled_from([0, 1, 2, 3]))
def test_crc_coprocessor(data, preset):
    sim = r.RC522Sim()
    wr(sim, r.MODE, 0x3C | preset)
    wr(sim, r.DIVIRQ, 0x7F)
    if data:
        wr(sim, r.FIFODATA, *data)
    wr(sim, r.COMMAND, r.CMD_CALCCRC)
    assert rd(sim, r.DIVIRQ) & 0x04
    value = rd(sim, r.CRCRESULT_L) | rd(sim, r.CRCRESULT_H) << 8
    if preset == 1:
        assert value == crc.crc_a(data)


def test_timer_period():
    sim = r.RC522Sim()
    assert sim.timer_us() is None  # TAuto off
    wr(sim, r.TMODE, 0x80)
    wr(sim, r.TPRESCALER, 169)
    wr(sim, r.TRELOAD_H, 0x03)
    wr(sim, r.TRELOAD_L, 0xE8)
    assert 25000 <= sim.timer_us() <= 25200  # the Arduino library's 25 ms
    wr(sim, r.TMODE, 0x8F)
    wr(sim, r.TPRESCALER, 0xFF)
    wr(sim, r.TRELOAD_H, 0xFF)
    wr(sim, r.TRELOAD_L, 0xFF)
    assert 39_000_000 < sim.timer_us() < 40_000_000


def test_reqa_answer_and_timeouts():
    sim = ready_chip("04a1b2c3")
    irq, err, fifo, last = transceive(sim, b"\x26", last_bits=7)
    assert irq & r.IRQ_RX and not err and fifo == b"\x04\x00" and last == 0
    irq, err, fifo, last = transceive(sim, b"\x26", last_bits=7)  # card now READY: silent
    assert irq & r.IRQ_TIMER and not irq & r.IRQ_RX
    assert sim.timer_log[-1] is not None


def test_rf_needs_antenna_and_100_percent_ask():
    sim = ready_chip("04a1b2c3")
    wr(sim, r.TXASK, 0x00)
    assert transceive(sim, b"\x26", last_bits=7)[0] & r.IRQ_TIMER
    wr(sim, r.TXASK, 0x40)
    wr(sim, r.TXCONTROL, 0x80)  # antenna off: card powered down
    assert sim.field["c0"].state == pm.STATE_OFF
    assert transceive(sim, b"\x26", last_bits=7)[0] & r.IRQ_TIMER
    wr(sim, r.TXCONTROL, 0x83)
    assert transceive(sim, b"\x26", last_bits=7)[2] == b"\x04\x00"


def test_two_cards_collide_with_position():
    sim = ready_chip("11223344", "11223355")
    irq, err, fifo, last = transceive(sim, b"\x26", last_bits=7)
    assert fifo == b"\x04\x00"  # same ATQA: no collision
    irq, err, fifo, last = transceive(sim, b"\x93\x20")
    assert err & r.ERR_COLL and irq & r.IRQ_ERR
    coll = rd(sim, r.COLL)
    # 0x44 ^ 0x55 = 0x11: first differing bit is bit 0 of byte 3 -> received bit 25
    assert coll & 0x1F == 25 and not coll & 0x20
    assert fifo[:3] == bytes.fromhex("112233") and fifo[3] & 1 == 0  # zeros after collision
    # Resolve with 1 at bit 24 (RxAlign 1): only 11223355 matches.
    irq, err, fifo, last = transceive(sim, b"\x93\x51\x11\x22\x33\x01", last_bits=1, align=1)
    assert not err & r.ERR_COLL
    assert fifo[0] & 0xFE == 0x55 & 0xFE


def test_coll_pos_counts_rx_align_as_nxp_reader_library():
    # 11223340 / 13223340 / 13223341: the first collision is bit 1 of byte 0; after choosing 1
    # there, the next round starts with RxAlign 2 and meets the collision at bit 24.
    sim = ready_chip("11223340", "13223340", "13223341")
    transceive(sim, b"\x26", last_bits=7)
    irq, err, fifo, last = transceive(sim, b"\x93\x20")
    assert err & r.ERR_COLL and rd(sim, r.COLL) & 0x3F == 2  # bit 1 -> CollPos 2
    irq, err, fifo, last = transceive(sim, b"\x93\x22\x03", last_bits=2, align=2)
    assert err & r.ERR_COLL and irq & r.IRQ_RX
    coll = rd(sim, r.COLL)
    # received bit 23 (bit 24 of the level) with RxAlign 2: CollPos 25, not 23
    assert coll & 0x3F == 25
    assert fifo[0] & 0xFC == 0x13 & 0xFC and fifo[1:3] == b"\x22\x33"
    # known bits 8 * (2 // 8) + 25 - 1 = 24: choose 1 there, only 13223341 answers
    irq, err, fifo, last = transceive(sim, b"\x93\x51\x13\x22\x33\x01", last_bits=1, align=1)
    assert not err and fifo[0] & 0xFE == 0x40


def test_err_irq_at_the_collision_before_the_frame_ends():
    sim = ready_chip("11223344", "11223355")
    transceive(sim, b"\x26", last_bits=7)
    wr(sim, r.COMMAND, r.CMD_IDLE)
    wr(sim, r.COMIRQ, 0x7F)
    wr(sim, r.FIFODATA, 0x93, 0x20)
    wr(sim, r.COMMAND, r.CMD_TRANSCEIVE)
    wr(sim, r.BITFRAMING, 0x80)
    irq, err, level = rd(sim, r.COMIRQ, r.ERROR, r.FIFOLEVEL)
    assert irq & r.IRQ_ERR and not irq & r.IRQ_RX and err & r.ERR_COLL
    assert level == 3  # 11 22 33 in, the colliding byte not yet
    irq, level = rd(sim, r.COMIRQ, r.FIFOLEVEL)
    assert irq & r.IRQ_RX and level == 5
    # A command written while the frame is still coming stops the receiver: no RxIRq.
    sim = ready_chip("11223344", "11223355")
    transceive(sim, b"\x26", last_bits=7)
    wr(sim, r.COMMAND, r.CMD_IDLE)
    wr(sim, r.COMIRQ, 0x7F)
    wr(sim, r.FIFOLEVEL, 0x80)
    wr(sim, r.FIFODATA, 0x93, 0x20)
    wr(sim, r.COMMAND, r.CMD_TRANSCEIVE)
    wr(sim, r.BITFRAMING, 0x80)
    wr(sim, r.COMMAND, r.CMD_IDLE)
    assert rd(sim, r.COMIRQ) & (r.IRQ_RX | r.IRQ_ERR) == r.IRQ_ERR
    assert rd(sim, r.COMIRQ) & r.IRQ_RX == 0 and rd(sim, r.FIFOLEVEL) == 3
    # "end": everything when the frame ends, as before.
    sim = ready_chip("11223344", "11223355")
    sim.coll_irq = "end"
    transceive(sim, b"\x26", last_bits=7)
    wr(sim, r.COMMAND, r.CMD_IDLE)
    wr(sim, r.COMIRQ, 0x7F)
    wr(sim, r.FIFODATA, 0x93, 0x20)
    wr(sim, r.COMMAND, r.CMD_TRANSCEIVE)
    wr(sim, r.BITFRAMING, 0x80)
    irq, level = rd(sim, r.COMIRQ, r.FIFOLEVEL)
    assert irq & r.IRQ_RX and irq & r.IRQ_ERR and level == 5


def test_faults_parity_overflow_stuck():
    sim = ready_chip("04a1b2c3")
    sim.inject("parity_resp")
    irq, err, fifo, _ = transceive(sim, b"\x26", last_bits=7)
    assert err & r.ERR_PARITY
    sim = ready_chip("04a1b2c3")
    sim.inject("overflow")
    irq, err, fifo, _ = transceive(sim, b"\x26", last_bits=7)
    assert err & r.ERR_OVFL and len(fifo) == 64
    sim = ready_chip("04a1b2c3")
    sim.inject("stuck")
    irq, err, fifo, _ = transceive(sim, b"\x26", last_bits=7)
    assert irq == 0
    wr(sim, r.COMMAND, r.CMD_SOFTRESET)
    assert not sim.stuck
    with pytest.raises(ValueError):
        sim.inject("no-such-fault")


def test_faults_are_consumed_per_frame():
    sim = ready_chip("04a1b2c3")
    sim.inject("lose_resp", at=1)
    assert transceive(sim, b"\x26", last_bits=7)[2] == b"\x04\x00"
    assert transceive(sim, b"\x93\x20")[0] & r.IRQ_TIMER  # lost, but the card acted
    assert sim.faults == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=70), max_size=25))
def test_random_spi_traffic_never_crashes(transactions):
    sim = ready_chip("04a1b2c3", "0811223344556677889a")
    for data in transactions:
        out = xfer(sim, data)
        assert len(out) == len(data)
    assert len(sim.fifo) <= 64


def test_hub_server_commands_and_spi():
    hub = rc522_server.build()
    port = hub.start_in_thread()
    try:
        ctl = socket.create_connection(("127.0.0.1", port))
        f = ctl.makefile("rb")
        ctl.sendall(b"ctl world\n")
        assert f.readline() == b"OK\n"

        def call(cmd, **args):
            body = json.dumps({"cmd": cmd, "args": args}).encode()
            ctl.sendall(b"C" + len(body).to_bytes(2, "big") + body)
            head = f.read(3)
            return json.loads(f.read(int.from_bytes(head[1:], "big")))

        assert call("rc522_place", name="x", uid="04112233445566", wtx=[2])["ok"]
        assert call("rc522_knobs", name="x", processing_us=5)["ok"]
        assert not call("rc522_knobs", name="x", colour="red")["ok"]
        assert not call("rc522_fault", kind="meteor")["ok"]
        assert call("rc522_fault", kind="lose_cmd", at=2)["ok"]
        st_ = call("rc522_state")["result"]
        assert st_["cards"]["x"]["state"] == "off" and st_["faults_pending"] == 1
        assert call("rc522_remove", name="x")["result"] is True
        assert call("rc522_retap", name="x")["ok"]
        assert call("rc522_clear")["ok"]
        assert call("rc522_state")["result"]["cards"] == {}
        ctl.close()
    finally:
        hub.stop()
