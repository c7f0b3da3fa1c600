# mpy: heapsize=256k timeout=60
# The uplink on a small heap: a full batch is built in the buffer made at start-up, and what
# one upload round allocates is measured (reported in the test log) and bounded; many rounds leave
# the free heap where it was. The heap is 256k because compiling the journal, the uplink and this
# file from source fragments a smaller one (at 128k a large buffer may not find a block); on a
# board they are frozen bytecode. The figures are allocations, independent of the heap size.
import gc
import os
import time

import mptest
import uplink_proto as up
from journal import Journal
from uplink import Uplink

SECRET = bytes(range(1, 33))
T0 = 848000000


class Answering:
    """A transport that is its own back office: checks the request, acknowledges every record."""

    def __init__(self):
        self.held = 0
        self.sizes = []

    async def request(self, method, url, body=b"", headers=None, timeout_ms=30000):
        self.sizes.append(len(body))
        # Decoding here would allocate and spoil the figure: read the header fields only.
        counter = int.from_bytes(bytes(body[8:12]), "big")
        hl = 20 if body[2] == up.VERSION_EPOCH else 16  # version 2: the boot epoch at 16
        first = int.from_bytes(bytes(body[hl + 4 : hl + 8]), "big")
        n = int.from_bytes(bytes(body[hl + 8 : hl + 10]), "big")
        if n:
            self.held = first + n - 1
        ep = int.from_bytes(bytes(body[16:20]), "big") if hl == 20 else None
        ans = up.encode_answer(
            SECRET,
            up.T_UPLOAD,
            0,
            1,
            counter,
            counter,
            T0,
            value=self.held,
            bind=body[-32:],
            server_epoch=ep,
        )
        return 200, ans

    def status(self):
        return {}


_root = "/tmp/uplink-heap-%d" % (time.ticks_us() & 0xFFFFFF)


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
    # The journal's files (their layout is its business): the root and anything beside it.
    _rmtree(_root)
    top = _root[: _root.rfind("/")]
    base = _root[_root.rfind("/") + 1 :]
    # ilistdir, not listdir: the folder is /tmp, which on a shared machine holds thousands of
    # names (a list of them would need a block bigger than this test's heap has free).
    for entry in os.ilistdir(top):
        if entry[0].startswith(base + "."):
            _rmtree(top + "/" + entry[0])


def fill(j, n):
    for i in range(n):
        j.append({"kind": 1, "time": T0 + i, "psam_serial": j.last_seq + 1, "amount": 200})


async def test_one_batch_allocates_little_and_nothing_leaks():
    j = Journal(_root, {"seg_records": 64})
    t = Answering()
    u = Uplink(t, j, 1, SECRET, "http://backoffice", clock=lambda: T0, compress=False)
    n = u.batch
    fill(j, n)
    mptest.true(await u.sync(), u.last_error)  # warm-up: first-use allocations
    free = []
    per_round = []
    reads = []
    for _ in range(8):
        fill(j, n)
        gc.collect()
        before = gc.mem_alloc()
        gc.disable()
        try:
            j.records_after(j.acked_seq, n)  # what the journal's read costs on its own
            reads.append(gc.mem_alloc() - before)
        finally:
            gc.enable()
        gc.collect()
        before = gc.mem_alloc()
        gc.disable()
        try:
            ok = await u.sync()
            used = gc.mem_alloc() - before
        finally:
            gc.enable()
        mptest.true(ok, u.last_error)
        per_round.append(used)
        gc.collect()
        free.append(gc.mem_free())
    mptest.eq(t.sizes[-1], up.upload_len(n, epoch=u.epoch), "a full batch in one request")
    mptest.true(len(u._buf) <= 4096, "no block of the heap above 4 KB for the batch buffer")
    mptest.eq((j.acked_seq, j.backlog), (9 * n, 0))
    own = max(per_round) - min(reads)
    mptest.log(
        "one %d-record upload round allocates %d bytes: %d reading the journal, %d the uplink "
        "itself (answer check, HMAC, ack); free heap after each round: %s"
        % (n, max(per_round), min(reads), own, free)
    )
    # No copies of the body: the uplink's own share stays a few kB.
    mptest.true(own < 12000, "the uplink allocated %d bytes beyond the journal read" % own)
    mptest.true(max(free) - min(free) < 1024, "free heap drifts: %s" % free)
