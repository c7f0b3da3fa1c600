# mpy: heapsize=256k timeout=120 server=tools.collector.testserver
# The uplink under MicroPython with the real journal, the real socket transport
# (drivers/http_socket.py) and a real collector (SQLite) behind a fault-injecting proxy: every
# record reaches the database exactly once whatever the network does, and none is freed on the
# validator before the back office holds it.
import asyncio
import json
import os
import time

import log
import mptest
import uplink_proto as up
from http_socket import SocketTransport
from journal import Journal
from transport import ConnectionLost
from uplink import Uplink

SECRET = bytes(range(1, 33))
BASE = "http://127.0.0.1:" + (os.getenv("SIM_PORT") or "0")
T0 = 848000000  # validator time, late 2026
_dirs = [0]


class Counting:
    """Wraps a transport: counts bytes each way, for the wire figures."""

    def __init__(self, inner):
        self.inner = inner
        self.sent = 0
        self.got = 0
        self.calls = 0

    async def request(self, method, url, body=b"", headers=None, timeout_ms=30000):
        self.calls += 1
        self.sent += len(body)
        status, data = await self.inner.request(method, url, body, headers, timeout_ms)
        self.got += len(data)
        return status, data

    def status(self):
        return self.inner.status()


class Clk:
    def __init__(self, t=T0):
        self.t = t
        self.sets = []

    def now(self):
        return self.t

    def set(self, t):
        self.sets.append(t)
        self.t = t
        return 0


async def ctl(name, args=None, query=""):
    status, body = await SocketTransport().request(
        "POST", BASE + "/_test/" + name + query, json.dumps(args or {}).encode()
    )
    assert status == 200, (name, status, body)
    return json.loads(body)


_made = []


def new_journal():
    _dirs[0] += 1
    root = "/tmp/uplink-mpy-%d-%d" % (time.ticks_us() & 0xFFFFFF, _dirs[0])
    _made.append(root)
    return Journal(root, {"seg_records": 32})


def _rmtree(path):
    try:
        names = os.listdir(path)
    except OSError:
        names = None
    if names is None:
        try:
            os.remove(path)
        except OSError:
            pass
        return
    for name in names:
        _rmtree(path + "/" + name)
    os.rmdir(path)


def fill(j, n, t=T0):
    for i in range(n):
        j.append(
            {
                "kind": 1,
                "txn_type": 9,
                "time": t + i * 40,
                "psam_tid": b"\x00\x00\x12\x34\x56\x78",
                "psam_serial": 5000 + j.last_seq + 1,
                "card_no": b"\x31\x04\x00\x00\x00\x00\x00\x00\x12" + bytes((i % 30,)),
                "issuer": b"\x31\x04\x00\x00",
                "amount": 200,
                "balance_before": 5000 - i,
                "balance_after": 4800 - i,
                "card_atc": 10 + i,
                "tac": bytes((i, i >> 8, 7, 9)),
                "route": 52,
                "stop": i % 20,
            }
        )


def make(j, transport=None, **kw):
    clk = kw.pop("clk", None) or Clk()
    u = Uplink(
        transport or Counting(SocketTransport()),
        j,
        1,
        SECRET,
        BASE,
        clock=clk.now,
        on_time=clk.set,
        backoff_min_ms=20,
        backoff_max_ms=200,
        linger_ms=20,
        **kw,
    )
    return u, clk


async def held():
    st = await ctl("state", query="?device=1")
    return st


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()


def teardown():
    while _made:
        root = _made.pop()
        _rmtree(root)
        top = root[: root.rfind("/")]
        base = root[root.rfind("/") + 1 :]
        # the journal's files beside its directory; ilistdir, not listdir: the folder is /tmp,
        # which on a shared machine holds thousands of names (a list too big for the heap)
        for entry in os.ilistdir(top):
            if entry[0].startswith(base + "."):
                _rmtree(top + "/" + entry[0])


async def fresh(n, **kw):
    """An empty back office, a new log holding `n` records and an Uplink on it."""
    await ctl("reset")
    j = new_journal()
    fill(j, n)
    return j, make(j, **kw)[0]


async def reboot(more, epoch=None, sync_before=False, **kw):
    """The reboot cases: 10 records uploaded, `more` written (and uploaded too with
    `sync_before`), then a reboot: a new Uplink on the same log, its counter back at 0 and its
    epoch forced to `epoch` where given, syncs. Whatever the epochs, the back office holds every
    record once and the log is acknowledged to its end. Returns (before, after) the reboot."""
    j, u = await fresh(10, **kw)
    mptest.true(await u.sync())
    fill(j, more)
    if sync_before:
        mptest.true(await u.sync())
    again, _ = make(j, **kw)
    if epoch is not None:
        again.epoch = epoch
    mptest.true(await again.sync(), again.last_error)
    mptest.eq((await held())["seqs"], list(range(1, 11 + more)))
    mptest.eq(j.acked_seq, 10 + more)
    return u, again


async def test_batches_reach_the_collector_once_and_free_only_what_it_holds():
    j, u = await fresh(250)
    mptest.true(await u.sync(), u.last_error)
    st = await held()
    mptest.eq(st["count"], 250)
    mptest.eq(st["seqs"], list(range(1, 251)))
    mptest.eq((j.acked_seq, j.backlog), (250, 0))
    s = u.status()
    mptest.eq((s["backlog"], s["failures"], s["last_error"]), (0, 0, None))
    mptest.eq(s["last_ok"], u.clock())
    mptest.true(abs(u.clock() - T0) > 86400, "T0 is far from now: the server's time was adopted")
    # 8 batches of 32 (the last 26; a device new to the server needs no counter re-sync).
    mptest.eq(u.t.calls, 8)
    mptest.log("wire: %d records, %d body bytes up, %d down" % (250, u.t.sent, u.t.got))


async def test_a_rebooted_validator_starts_a_new_epoch_without_a_resync():
    # Protocol version 2: the epoch is the log's last sequence at the first request; the BOOT
    # record (here: any record) written since the last boot makes it grow, so the first request
    # after the reboot is taken at once: no 409, no stale log line.
    u, again = await reboot(5)
    mptest.eq(u.epoch, 10)
    mptest.eq((again.epoch, again.counter), (15, 1))
    mptest.eq(log.find("stale"), [])
    mptest.eq(again.t.calls, 1)


async def test_a_reboot_in_the_same_epoch_resyncs_and_sends_nothing_twice():
    # No record since the last boot (a BOOT record not written: a full log): the same epoch, the
    # counter back at 0. The signed 409 carries the server's (epoch, counter): adopted.
    u, again = await reboot(5, epoch=10, sync_before=True)  # as if the log had not grown
    mptest.eq(u.epoch, 10)
    mptest.true(len(log.find("stale")) >= 1)
    mptest.eq(again.epoch, 10)
    mptest.true(again.counter > u.counter, "continued above the server's counter")


async def test_a_version_1_validator_learns_the_counter_and_sends_nothing_twice():
    u, _ = await reboot(5, boot_epoch=False)
    mptest.eq(u.epoch, None)
    mptest.true(len(log.find("stale")) >= 1)


async def test_an_epoch_behind_the_servers_is_adopted():
    # The log was lost (a new flash): the epoch restarts low. The server's epoch is adopted
    # from the signed 409 and the device goes on; nothing is sent twice.
    _, again = await reboot(3, epoch=2)
    mptest.eq(again.epoch, 10)


async def test_connection_cut_before_the_request():
    j, u = await fresh(30)
    await ctl("fault", {"modes": ["drop_before"]})
    mptest.false(await u.sync())
    mptest.true("network" in u.last_error, u.last_error)
    mptest.eq((await held())["count"], 0)
    mptest.eq(j.acked_seq, 0)
    mptest.true(await u.sync(), u.last_error)
    mptest.eq((await held())["seqs"], list(range(1, 31)))
    mptest.eq(j.acked_seq, 30)


async def test_connection_cut_after_the_request_before_the_answer():
    j, u = await fresh(30)
    mptest.true(await u.sync())  # counter in step
    fill(j, 40)
    await ctl("fault", {"modes": ["drop_after"]})
    mptest.false(await u.sync())
    st = await held()
    mptest.eq(st["count"], 30 + u.batch)  # the collector stored the first batch...
    mptest.eq(j.acked_seq, 30)  # ...but the validator heard nothing: it keeps them
    mptest.eq(j.backlog, 40)
    mptest.true(await u.sync(), u.last_error)
    st = await held()
    mptest.eq(st["seqs"], list(range(1, 71)))  # re-sent, stored once
    mptest.eq(j.acked_seq, 70)


async def test_server_5xx_restart_and_garbled_answers():
    j, u = await fresh(20)
    for mode, why in (("status503", "HTTP 503"), ("restart", "network"), ("garble", "refused")):
        await ctl("fault", {"modes": [mode]})
        mptest.false(await u.sync(), mode)
        mptest.true(why in u.last_error, "%s: %s" % (mode, u.last_error))
        mptest.eq(j.acked_seq, 0)
    mptest.true(await u.sync(), u.last_error)
    st = await held()
    mptest.eq(st["seqs"], list(range(1, 21)))
    mptest.eq(j.backlog, 0)


async def test_back_office_restored_from_an_older_backup():
    j, u = await fresh(50)
    mptest.true(await u.sync())
    await ctl("restore", {"device": 1, "keep": 20})  # 21..50 lost by the back office
    fill(j, 10)
    mptest.true(await u.sync(), u.last_error)
    st = await held()
    mptest.eq(st["gaps"], [[21, 50]])
    mptest.eq(st["seqs"], list(range(1, 21)) + list(range(51, 61)))
    mptest.eq(j.acked_seq, 60)


async def test_clock_far_off_on_either_side():
    await ctl("reset")
    j = new_journal()
    clk = Clk(T0 + 20 * 365 * 86400)  # the validator's RTC thinks it is 2046
    u, _ = make(j, clk=clk)
    mptest.true(await u.sync())
    mptest.eq(len(clk.sets), 1)
    now = clk.t
    mptest.between(now, 800000000, 1100000000, "adopted the back office's time")
    await ctl("time", {"offset": -20 * 365 * 86400})  # the back office's clock says 2006
    clk.t = now + 1000
    mptest.true(await u.sync())
    mptest.eq(len(clk.sets), 1, "an implausible server time is not adopted")
    mptest.true(len(log.find("out of bounds")) >= 1)
    await ctl("time", {"offset": 0})


class JumpingClk(Clk):
    """A clock set by someone else while each request is out (network time, or the bench's
    virtual time jumping): each reading is 17 minutes after the previous one."""

    def now(self):
        self.t += 1020
        return self.t


async def test_server_time_ignored_when_the_clock_moved_during_the_exchange():
    await ctl("reset")
    j = new_journal()
    fill(j, 3)
    u, clk = make(j, clk=JumpingClk())
    mptest.true(await u.sync(), u.last_error)
    mptest.eq(clk.sets, [], "an answer from before the jump would set the clock back")
    mptest.true(log.find("the clock moved"))


async def test_parameters_full_delta_and_a_refused_bundle():
    await ctl("reset")
    j = new_journal()
    got = []

    def on_bundle(kind, version, base, data):
        got.append((kind, version, base, data))
        return data != b"broken"

    counting = Counting(SocketTransport())
    u, _ = make(j, transport=counting, on_bundle=on_bundle, params_version=2)
    mptest.true(await u.sync())
    mptest.eq(got, [])  # nothing newer on offer
    big = b"route 52 fare 200; " * 1000  # 19 kB, deflated by the collector (CPython zlib)
    await ctl("publish", {"version": 3, "data_hex": b"route 52 fare 200; ".hex(), "repeat": 1000})
    counting.got = 0
    mptest.true(await u.sync(), u.last_error)
    mptest.eq(len(got), 1)
    mptest.eq(got[0][:3], (up.P_FULL, 3, 0))
    mptest.true(got[0][3] == big, "the bundle inflated on MicroPython equals what was published")
    mptest.true(counting.got < len(big) // 5, "answers were compressed: %d bytes" % counting.got)
    mptest.eq(u.params_version, 3)
    await ctl("publish", {"version": 4, "data_hex": b"full4".hex()})
    await ctl("publish", {"version": 4, "base": 3, "data_hex": b"delta3to4".hex()})
    mptest.true(await u.sync())
    mptest.eq(got[-1], (up.P_DELTA, 4, 3, b"delta3to4"))
    await ctl("publish", {"version": 5, "data_hex": b"broken".hex()})
    mptest.true(await u.sync())
    mptest.eq(u.params_version, 4, "a refused bundle leaves the active one")
    n = len(got)
    mptest.true(await u.sync())
    mptest.eq(len(got), n, "a refused version is not downloaded again")


async def test_run_backs_off_then_delivers_everything_without_blocking_taps():
    await ctl("reset")
    j = new_journal()
    u, _ = make(j, interval_s=60)
    lateness = [0]
    stop = [False]

    async def taps():
        # A tap loop: each 60 ms a record is appended; measure how late the loop wakes.
        for _ in range(40):
            t0 = time.ticks_ms()
            await asyncio.sleep_ms(60)
            late = time.ticks_diff(time.ticks_ms(), t0) - 60
            if late > lateness[0]:
                lateness[0] = late
            fill(j, 5)
            u.kick()
        stop[0] = True

    await ctl("fault", {"modes": ["status503", "drop_before", "drop_after", "status503"]})
    task = asyncio.create_task(u.run())
    await taps()
    for _ in range(200):
        if j.backlog == 0:
            break
        await asyncio.sleep_ms(50)
    task.cancel()
    st = await held()
    mptest.eq(st["seqs"], list(range(1, 201)))
    mptest.eq(j.backlog, 0)
    mptest.eq(st["faults_left"], 0)
    mptest.log("worst tap-loop lateness while uploading: %d ms" % lateness[0])
    mptest.true(lateness[0] < 250, "taps kept running: %d ms late at worst" % lateness[0])


def test_backoff_is_exponential_capped_and_jittered():
    u, _ = make(new_journal())
    u.backoff_min_ms, u.backoff_max_ms = 1000, 60000
    seen = {}
    for f in range(1, 12):
        u.failures = f
        vals = [u.backoff_ms() for _ in range(40)]
        full = min(1000 << (f - 1), 60000)
        for v in vals:
            mptest.between(v, full // 2, full, "failure %d" % f)
        seen[f] = vals
    mptest.true(len(set(seen[3])) > 5, "jitter spreads the retries")
    mptest.true(max(seen[11]) <= 60000)


class Scripted:
    """A transport answering from a script: exceptions or (status, body) makers."""

    def __init__(self, steps):
        self.steps = steps

    async def request(self, method, url, body=b"", headers=None, timeout_ms=30000):
        step = self.steps.pop(0)
        if isinstance(step, BaseException):
            raise step
        req = up.decode_request(SECRET, body)
        return step(req)

    def status(self):
        return {}


def _ans(value, status=200):
    def make_answer(req):
        return status, up.encode_answer(
            SECRET,
            up.T_UPLOAD,
            0,
            1,
            req["counter"],
            req["counter"],
            T0,
            value=value,
            bind=req["mac"],
            server_epoch=_ep(req),
        )

    return make_answer


def _ep(req):
    """The answer's epoch field: version 2 requests get version 2 answers."""
    return req["epoch"] if req["version"] == up.VERSION_EPOCH else None


async def test_a_lying_or_broken_server_frees_nothing():
    j = new_journal()
    fill(j, 5)
    u, _ = make(
        j,
        transport=Scripted(
            [
                _ans(99),  # claims records never sent
                lambda req: (200, b"\x00" * 70),  # unsigned garbage
                lambda req: (
                    200,
                    up.encode_answer(
                        bytes(32), 1, 0, 1, req["counter"], 0, T0, value=5, server_epoch=_ep(req)
                    ),
                ),  # signed with another key
                ConnectionLost("reset by peer"),
                ValueError("a transport bug"),
                _ans(3),
                _ans(5),
            ]
        ),
    )
    for why in ("journal ends at 5", "bad MAC", "bad MAC", "network", "transport"):
        mptest.false(await u.sync())
        mptest.true(why in u.last_error, "%s: %s" % (why, u.last_error))
        mptest.eq(j.acked_seq, 0)
    mptest.true(await u.sync())  # held 3 of 5: frees 3, then sends 4..5 in the same round
    mptest.eq((j.acked_seq, j.backlog), (5, 0))


async def test_compressed_uploads_when_the_port_can_deflate():
    if not up.can_deflate():
        mptest.skip("this MicroPython build has no deflate compression (read-only DeflateIO)")
    j, u = await fresh(100)
    mptest.true(u.compress)
    mptest.true(await u.sync(), u.last_error)
    mptest.eq((await held())["seqs"], list(range(1, 101)))


def test_proto_refuses_corrupt_deflate_and_forged_answers_on_micropython():
    # What the collector (CPython zlib) sends is inflated here; anything broken is a ProtoError.
    packed = bytes.fromhex("2b4a2d2e1a080400")  # CPython zlib, wbits=-10: b"res" * 40
    mptest.eq(up.inflate(packed, 120), b"res" * 40)
    mptest.raises(up.ProtoError, up.inflate, packed, 119)  # longer than allowed
    mptest.raises(up.ProtoError, up.inflate, b"\xff\xff\xff\xff", 100)
    mptest.raises(up.ProtoError, up.inflate, packed[:3], 100)
    ans = up.encode_answer(SECRET, up.T_PARAMS, 0, 1, 7, 7, T0, 2, 0, up.P_FULL, b"x" * 500)
    mptest.eq(up.decode_answer(SECRET, ans, 1, 7, up.T_PARAMS)["payload"], b"x" * 500)
    bad = bytearray(ans)
    bad[40] ^= 1
    mptest.raises(up.ProtoError, up.decode_answer, SECRET, bytes(bad), 1, 7, up.T_PARAMS)
    mptest.raises(up.ProtoError, up.decode_answer, SECRET, ans, 1, 8, up.T_PARAMS)


async def test_every_record_once_through_random_faults():
    import random

    random.seed(9)
    await ctl("reset")
    j = new_journal()
    u, _ = make(j, batch=60)
    modes = ["drop_before", "drop_after", "status503", "restart", "garble", None, None]
    total = 0
    for _ in range(12):
        n = random.randint(1, 70)
        fill(j, n)
        total += n
        mode = modes[random.getrandbits(8) % len(modes)]
        if mode:
            await ctl("fault", {"modes": [mode]})
        await u.sync()
        mptest.true(j.acked_seq <= (await held())["device"]["contig"], "freed before stored")
    for _ in range(5):
        if await u.sync() and j.backlog == 0:
            break
    st = await held()
    mptest.eq(st["seqs"], list(range(1, total + 1)), "none lost, none doubled")
    mptest.eq((j.acked_seq, j.backlog), (total, 0))
    mptest.log("%d records through %d requests with random faults" % (total, st["requests"]))


class RottenJournal:
    """A journal whose records after the cursor all went bad (its reads skip them)."""

    def __init__(self, last, readable=()):
        self.last_seq = last
        self.acked_seq = 0
        self.readable = list(readable)
        self.acks = []

    @property
    def backlog(self):
        return self.last_seq - self.acked_seq

    def records_after(self, seq, limit=32):
        return [r for r in self.readable if int.from_bytes(r[6:10], "big") > seq][:limit]

    def ack(self, seq):
        self.acks.append(seq)
        self.acked_seq = seq


async def test_unreadable_records_are_declared_lost_not_retried_forever():
    import record

    await ctl("reset")
    j = RottenJournal(10, [record.encode({"kind": 6, "time": T0}, 8)])
    u, _ = make(j)
    mptest.true(await u.sync(), u.last_error)
    st = await held()
    # 1..7 unreadable: floor 7 (logged), 8 sent; then 9..10 unreadable: floor 10.
    mptest.eq(st["seqs"], [8])
    mptest.eq(st["gaps"], [[1, 7], [9, 10]])
    mptest.eq((j.acked_seq, j.backlog), (10, 0))
    mptest.true(len(log.find("unreadable here")) == 2)


async def test_a_back_office_that_does_not_advance_is_not_hammered():
    j = new_journal()
    fill(j, 250)
    t = Scripted([_ans(0)] * 20)
    u, _ = make(j, transport=t)
    mptest.false(await u.sync())  # answered, signed, but holds nothing of it: a failure
    mptest.eq(len(t.steps), 19, "one request this round, not max_batches of the same batch")
    mptest.eq(j.acked_seq, 0)
    mptest.true("holds none of 1..%d" % u.batch in u.last_error, u.last_error)


async def test_an_answer_recorded_before_a_reboot_is_refused():
    # Same device, same counter (it restarts after a reboot), a different request: an attacker
    # replaying the old answer must not move the journal or the clock.
    j = new_journal()
    fill(j, 5)
    old_req = up.encode_upload(SECRET, 1, 1, T0 - 600, 0, 1, j.records_after(0, 2), False, 5)
    old = up.decode_request(SECRET, old_req)
    replay = up.encode_answer(
        SECRET, up.T_UPLOAD, 0, 1, 1, 1, T0 + 10**8, value=5, bind=old["mac"], server_epoch=5
    )
    u, clk = make(j, transport=Scripted([lambda req: (200, replay)]))
    mptest.false(await u.sync())
    mptest.true("bad MAC" in u.last_error, u.last_error)
    mptest.eq((j.acked_seq, clk.sets), (0, []))
