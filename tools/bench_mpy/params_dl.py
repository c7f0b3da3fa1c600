# A million-card fleet-signed bundle over the simulated SIM7600 (the hub of
# tools/params_dl_fixture.py, SIM_PORT) into params' slots, the way the uplink does it
# (firmware/uplink.py _fetch_chunked, firmware/chunkdl.py): once clean (bytes on the wire, heap
# above idle sampled after a collection at every body piece), once with dropped connections at
# seeded byte points and power cuts (littlefs remounted without what was not flushed).
# argv: cuts (0 = clean run), power cuts, slot directory, cards (1,000,000)
import gc
import os
import sys

from sim_uart import SimUART

_uart = SimUART("modem", timeout=0, rxbuf=12288)

import asyncio  # noqa: E402

import benchlib  # noqa: E402
import bundle  # noqa: E402
import chunkdl  # noqa: E402
import log  # noqa: E402
import params  # noqa: E402
import ramdisk  # noqa: E402
import vfs  # noqa: E402
from modem import ModemTransport  # noqa: E402
from modem_simcom import SimcomDialect  # noqa: E402
from sim_pin import Pin  # noqa: E402
from simlink import Control  # noqa: E402
from uplink import Uplink  # noqa: E402

CUTS = benchlib.arg(1, 0)
POWER = benchlib.arg(2, 0)
SLOTDIR = sys.argv[3]
CARDS = benchlib.arg(4, 1000000)
MP = "/pb"
_FF = b"\xff" * 4096
T0 = 848000000
log.set_level(log.WARNING, echo=False)


class FileSlot:
    def __init__(self, path, blocks):
        self.blocks = blocks
        self.f = open(path, "w+b")

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * 4096 + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=0):
        self.f.seek(n * 4096 + off)
        self.f.write(buf)
        self.f.flush()

    def ioctl(self, op, arg):
        if op == 6:  # erase: the bytes read 0xFF until programmed
            self.f.seek(arg * 4096)
            self.f.write(_FF)
            return 0
        return self.blocks if op == 4 else 4096 if op == 5 else 0


class Journal:
    backlog = 0
    acked_seq = 0
    last_seq = 0

    def records_after(self, seq, n):
        return []


class PowerCut(BaseException):
    pass


ctl = Control()
ctl.call("pdl_reset")
ctl.call("modem_dialect", dialect="simcom")
ctl.call(
    "modem_timing",
    on_pulse_ms=50,
    off_pulse_ms=300,
    boot_ms=100,
    sim_ready_ms=300,
    reg_ms=100,
    guard_ms=100,
    urc_ms=2,
)
ctl.call("modem_cut_bodies_at", points=[])
dev = ramdisk.RAMBlockDev(4096, 32)
vfs.VfsLfs2.mkfs(dev)
vfs.mount(vfs.VfsLfs2(dev), MP)
slots = [
    FileSlot(SLOTDIR + "/bench_slot_a.bin", 1472),
    FileSlot(SLOTDIR + "/bench_slot_b.bin", 1472),
]
base = ctl.call("pdl_publish", name="base", cards=5, version=3, publish=False)
trust = bundle.Trust({1: base["pubkey"]}, operator=1, city="2482", route=101)


def device():
    return params.Params(MP + "/params", b"unused-legacy-key", slots=slots, trust=trust)


p = device()
with open(base["path"], "rb") as f:
    p.install_bytes(f.read(), 1)
info = ctl.call("pdl_publish", name="list%d" % CARDS, cards=CARDS, version=5)
if CUTS:
    ctl.call("pdl_cuts", n=CUTS, total=info["total"], seed=20261205)
t = ModemTransport(
    _uart,
    Pin("modem_pwrkey", Pin.OUT),
    SimcomDialect(cmd_ms=600),
    apn="cmnet",
    on_pulse_ms=80,
    off_pulse_ms=350,
    rdy_timeout_ms=2000,
    sim_timeout_ms=3000,
    reg_timeout_ms=3000,
    reg_wait_ms=400,
    poll_ms=100,
    guard_ms=120,
)
secret = bytes.fromhex(ctl.call("pdl_secret", device=1))
state = {"peak": 0, "idle": 0, "pieces": 0, "fetches": 0, "bytes": 0, "result": None}
# Power cuts at 10%, 40% and 70% of the ranged GETs (about 6 bytes a card, 64 KiB a GET).
power_at = [max(2, int(f * (CARDS * 6 // 65536 + 2))) for f in (0.1, 0.4, 0.7)][:POWER]


async def on_chunked(version, total, fetch):
    async def sampling_fetch(off, length, sink):
        state["fetches"] += 1

        def measured(mv):
            sink(mv)
            state["pieces"] += 1
            if not CUTS:
                gc.collect()
                state["peak"] = max(state["peak"], gc.mem_alloc() - state["idle"])

        if power_at and state["fetches"] == power_at[0]:
            power_at.pop(0)
            half = [length // 2]

            def halfsink(mv):
                if half[0] > 0:
                    take = mv[: half[0]]
                    half[0] -= len(take)
                    sink(take)

            try:
                await fetch(off, length, halfsink)
            except Exception:  # noqa: BLE001
                pass
            raise PowerCut()
        await fetch(off, length, measured)

    dl = chunkdl.resume(p, sampling_fetch, T0, version)
    if dl is None:
        dl = chunkdl.Download(p, sampling_fetch, version, total, T0)
    ok, why = await dl.run(max_failures=20)
    state["bytes"] += dl.bytes
    state["result"] = (ok, why)
    return ok


async def main():
    global p
    await t.start()
    ctl.call("modem_wire_bytes", clear=True)
    st0 = ctl.call("modem_state")
    for _ in range(3000):
        up = Uplink(
            t,
            Journal(),
            1,
            secret,
            "http://127.0.0.1:%d" % ctl.call("pdl_collector"),
            clock=lambda: T0,
            on_chunked=on_chunked,
            params_version=p.version,
            timeout_ms=30000,  # the uplink's default: 64 KiB take 5.7 s of UART at 115,200
            backoff_min_ms=20,
        )
        gc.collect()
        state["idle"] = gc.mem_alloc()
        try:
            await up.sync()
        except PowerCut:
            ramdisk.remount(dev, MP)
            p = device()
            p.load(T0)
            continue
        if state["result"] is not None:
            break
    st1 = ctl.call("modem_state")
    ok = state["result"] == (True, "activated") and p.version == 5
    wrong = 0
    if ok:
        for card in ctl.call("pdl_sample", n=200, cards=CARDS):
            if not p.blacklist.contains(int(card)) or p.blacklist.contains(int(card) + 1):
                wrong += 1
    bl = p.blacklist.blocks * 4096 if ok else 0
    benchlib.emit(
        ok=ok,
        result=str(state["result"]),
        lookups_wrong=wrong,
        total=info["total"],
        list_bytes=bl,
        body_bytes=state["bytes"],
        wire_bytes=ctl.call("modem_wire_bytes"),
        uart_bytes=(st1["bytes_in"] - st0["bytes_in"]) + (st1["bytes_out"] - st0["bytes_out"]),
        fetches=state["fetches"],
        cuts=ctl.call("modem_cuts_done"),
        power_cuts=POWER,
        heap_peak=state["peak"],
        pieces=state["pieces"],
    )
    for s in slots:
        s.f.close()
    os.remove(SLOTDIR + "/bench_slot_a.bin")
    os.remove(SLOTDIR + "/bench_slot_b.bin")


asyncio.run(main())
