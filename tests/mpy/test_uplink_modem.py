# mpy: heapsize=512k timeout=180 server=tools.collector.testserver_modem
# Validator -> simulated cellular modem (both AT dialects, the real drivers/modem.py on a SimUART)
# -> collector (SQLite and PostgreSQL) behind the fault proxy: the uplink is transport-agnostic,
# and a connection cut after the collector stored a batch still ends with every record stored once.
# 512k heap: the modem drivers, compiled here from source, fragment a smaller one; on a board they
# are frozen bytecode (tests/mpy/test_uplink_heap.py measures the uplink itself at 64k).
from sim_uart import SimUART

# The UART's receive buffer first, before the imports below fragment the heap (a board makes it
# at boot in the same way).
_uart = [SimUART("modem", timeout=0, rxbuf=12288)]

import json  # noqa: E402

import log  # noqa: E402
import modem_rig  # noqa: E402
import mptest  # noqa: E402
from http_socket import SocketTransport  # noqa: E402
from sim_pin import Pin  # noqa: E402
from simlink import Control  # noqa: E402
from uplink import Uplink  # noqa: E402

TIMING = modem_rig.timing(sim_ready_ms=300)


def the_uart():
    uart = _uart[0]
    while uart.any():
        uart.read(uart.any())
    return uart


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()
    the_uart()


SECRET = bytes(range(1, 33))
T0 = 848000000
_roots = []


def _rmtree(path):
    import os

    try:
        names = os.listdir(path)
    except OSError:
        os.remove(path)  # a file
        return
    for name in names:
        _rmtree(path + "/" + name)
    os.rmdir(path)


def teardown():
    import os

    while _roots:
        root = _roots.pop()
        _rmtree(root)
        top = root[: root.rfind("/")]
        base = root[root.rfind("/") + 1 :]
        # ilistdir: /tmp on a shared machine can hold more names than this heap's list
        for entry in os.ilistdir(top):
            name = entry[0]
            if name.startswith(base + "."):  # the journal's files beside its directory
                _rmtree(top + "/" + name)


def new_journal(tag):
    import time

    from journal import Journal

    root = "/tmp/uplink-modem-%s-%d" % (tag, time.ticks_us() & 0xFFFFFF)
    _roots.append(root)
    return Journal(root, {"seg_records": 32})


def fill(j, n):
    for i in range(n):
        j.append(
            {
                "kind": 1,
                "time": T0 + i,
                "psam_tid": b"\x00\x00\x12\x34\x56\x78",
                "psam_serial": 7000 + j.last_seq + 1,
                "amount": 150,
                "route": 52,
            }
        )


def modem(dialect):
    ctl = Control()
    ctl.call("modem_dialect", dialect=dialect)
    ctl.call("modem_timing", **TIMING)
    ctl.call("modem_clear")
    t = modem_rig.transport(the_uart(), Pin("modem_pwrkey", Pin.OUT), dialect)
    return ctl, t


def collector_base(ctl, db):
    try:
        return "http://127.0.0.1:%d" % ctl.call("collector_port", db=db)
    except Exception as e:  # no PostgreSQL binaries on this machine
        mptest.skip("no %s collector: %s" % (db, e))


async def collector(ctl, db, name, args=None, query=""):
    base = collector_base(ctl, db)
    status, body = await SocketTransport().request(
        "POST", base + "/_test/" + name + query, json.dumps(args or {}).encode()
    )
    mptest.eq(status, 200)
    return json.loads(body)


async def run_dialect(dialect, db):
    ctl, t = modem(dialect)
    base = collector_base(ctl, db)
    await collector(ctl, db, "reset")
    j = new_journal(dialect)
    fill(j, 150)
    u = Uplink(t, j, 1, SECRET, base, clock=lambda: T0, backoff_min_ms=20)
    mptest.true(await u.sync(), u.last_error)
    st = await collector(ctl, db, "state", query="?device=1")
    mptest.eq(st["seqs"], list(range(1, 151)))
    mptest.eq((j.acked_seq, j.backlog), (150, 0))
    fill(j, 30)
    await collector(ctl, db, "fault", {"modes": ["drop_after"]})
    mptest.false(await u.sync())
    mptest.eq(j.acked_seq, 150, "nothing freed without an answer")
    mptest.eq((await collector(ctl, db, "state", query="?device=1"))["count"], 180)
    mptest.true(await u.sync(), u.last_error)
    st = await collector(ctl, db, "state", query="?device=1")
    mptest.eq(st["seqs"], list(range(1, 181)))
    mptest.eq(j.acked_seq, 180)
    mptest.log("%s/%s: 180 records over the modem, %d bytes up" % (dialect, db, u.sent_bytes))


async def test_uplink_over_a_simcom_modem_to_sqlite():
    await run_dialect("simcom", "sqlite")


async def test_uplink_over_a_quectel_modem_to_sqlite():
    await run_dialect("quectel", "sqlite")


async def test_uplink_over_a_simcom_modem_to_postgres():
    await run_dialect("simcom", "postgres")


async def test_uplink_over_a_quectel_modem_to_postgres():
    await run_dialect("quectel", "postgres")
