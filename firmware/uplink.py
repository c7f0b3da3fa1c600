# The validator's uplink: an asyncio background task that sends journal records to the back office
# in signed batches (uplink_proto, docs/protocol.md), frees journal space only up to the sequence
# the back office says it holds, fetches newer parameter bundles and offers the server's time to
# the clock. It never blocks a tap: every wait is an await, and one batch costs a few ms of CPU.
#
#   up = Uplink(transport, journal, device_id, secret, "http://host:8080", clock=clk.now,
#               on_time=lambda t: clk.set(t, "backoffice"), on_bundle=params_cb, params_version=3)
#   asyncio.create_task(up.run())
#   up.kick()        # after each journal append: upload soon
#   up.status()      # backlog, last success, last error: for the display and the status page
import asyncio
import gc
import random
import time

import log
import record
import timeutil
import uplink_proto as up
from transport import TransportError

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_log = log.get("uplink")

TIME_MIN = const(788918400)  # 2025-01-01: an answer claiming earlier is broken
TIME_MAX = const(3155760000)  # 2100-01-01
_HEADERS = {"Content-Type": "application/octet-stream"}


def _port_clock():
    # The unix port counts from 1970, the ESP32 from 2000.
    t = int(time.time())
    return t - timeutil.EPOCH_OFFSET_UNIX if time.gmtime(0)[0] == 1970 else t


class Uplink:
    def __init__(
        self,
        transport,
        journal,
        device_id,
        secret,
        base_url,
        clock=None,
        on_time=None,
        on_bundle=None,
        params_version=0,
        on_chunked=None,
        interval_s=900,
        batch=32,
        max_batches=60,
        linger_ms=2000,
        backoff_min_ms=2000,
        backoff_max_ms=600000,
        timeout_ms=30000,
        compress=True,
        time_tolerance_s=2,
        max_rtt_ms=10000,
        sleep_ms=None,
        on_ack=None,
        boot_epoch=True,
    ):
        self.t = transport
        self.j = journal
        self.device = device_id
        self.secret = bytes(secret)
        base = base_url.rstrip("/")
        self._url_up = base + "/v1/upload"
        self._url_par = base + "/v1/params"
        self.clock = clock or _port_clock
        self.on_time = on_time  # fn(server_time) -> step or None (firmware/clock.py Clock.set)
        self.on_bundle = on_bundle  # fn(pkind, version, base, data) -> True when activated
        # async fn(version, total, fetch) -> True when activated (big bundles, by ranges)
        self.on_chunked = on_chunked
        self._base = base
        self.params_version = params_version
        self.interval_ms = interval_s * 1000
        self.batch = batch
        self.max_batches = max_batches
        self.linger_ms = linger_ms
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.timeout_ms = timeout_ms
        self.compress = compress and up.can_deflate()
        self.time_tolerance_s = time_tolerance_s
        self.max_rtt_ms = max_rtt_ms
        # The back-off's wait: asyncio.sleep_ms on a board; the bench passes one that waits on
        # its virtual clock, so a 10-minute back-off costs a test no 10 minutes.
        self._sleep_ms = sleep_ms or asyncio.sleep_ms
        self.on_ack = on_ack  # fn(seq): an answer holding up to seq was taken (bench events)
        # The upload buffer, made now and kept: build the Uplink at boot, before the heap
        # fragments, and every batch reuses this one block (2.1 kB for 32 records: batches stay
        # small so no block of a board's heap has to be large, and the bytes-per-record cost
        # of the headers is still under a fifth).
        self._buf = bytearray(up.upload_len(batch, record.SIZE, 0 if boot_epoch else None))
        self.counter = 0  # 0 after boot: the first answer (409) tells us the server's
        # Protocol version 2: (epoch, counter) instead of a counter alone. The epoch is the log's
        # last sequence number when the first request is built: the BOOT record written at every
        # boot makes it grow from boot to boot, with nothing new persisted (docs/protocol.md
        # section 2). None: not taken yet; boot_epoch=False sends version 1 (no epoch).
        self.epoch = None
        self._v2 = boot_epoch
        self.offer = 0  # newest parameter version the back office announced
        self._refused_version = 0  # a bundle our callback refused: not fetched again
        self._event = asyncio.Event()
        # Figures for status() and the tests.
        self.failures = 0
        self.last_ok = None  # validator time of the last successful exchange
        self.last_error = None
        self.next_try_ms = 0
        self.sent_records = 0
        self.sent_bytes = 0
        self.exchanges = 0

    # ---- what the rest of the validator calls -------------------------------------------------

    def kick(self):
        """A record was appended (or the operator asked): upload soon. Never blocks."""
        self._event.set()

    def status(self):
        return {
            "backlog": self.j.backlog,
            "acked_seq": self.j.acked_seq,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "failures": self.failures,
            "retry_in_ms": self.next_try_ms if self.failures else 0,
            "params_version": self.params_version,
            "params_offer": self.offer,
            "sent_records": self.sent_records,
            "sent_bytes": self.sent_bytes,
        }

    async def run(self):
        """Forever: sync, then wait for records (lingering to batch them) or the interval; on
        failure back off exponentially with jitter. Nothing here may end the task."""
        while True:
            try:
                ok = await self.sync()
            except Exception as e:  # a bug must not stop uploads for the rest of the day
                _log.error("sync failed unexpectedly: %r", e)
                self.last_error = "internal: %r" % (e,)
                ok = False
            if ok:
                self.failures = 0
                await self._idle()
            else:
                self.failures += 1
                self.next_try_ms = self.backoff_ms()
                _log.info("retry in %d ms (failure %d)", self.next_try_ms, self.failures)
                # A tap during the backoff does not cut it short: a busy bus must not hammer a
                # back office that is down.
                await self._sleep_ms(self.next_try_ms)

    def backoff_ms(self):
        """Exponential from backoff_min_ms, capped at backoff_max_ms, 'equal jitter': half the
        delay fixed, half random, so a fleet that lost the server together spreads out."""
        n = self.failures - 1 if self.failures > 0 else 0
        if n > 24:
            n = 24
        d = self.backoff_min_ms << n
        if d > self.backoff_max_ms:
            d = self.backoff_max_ms
        half = d // 2
        return half + (half * random.getrandbits(16)) // 65536

    async def sync(self):
        """One round: upload every waiting record in batches (or a heartbeat when none wait),
        then fetch parameters if newer ones are on offer. True when all exchanges succeeded."""
        for _ in range(self.max_batches):
            recs, floor, first = self._next_batch()
            before = self.j.acked_seq
            if not await self._upload(recs, floor, first):
                return False
            if recs and self.j.acked_seq == before:
                # It answered but holds none of the batch: count it as a failure so the retry
                # backs off instead of re-sending the same batch every linger.
                self._failed("back office holds none of %d..%d" % (first, first + len(recs) - 1))
                return False
            if not recs or self.j.backlog == 0:
                break
            await asyncio.sleep_ms(0)  # let a tap run between batches
        if self.offer > self.params_version and self.offer != self._refused_version:
            if not await self._fetch_params():
                return False
        return True

    # ---- internals ------------------------------------------------------------------------------

    async def _idle(self):
        if self.j.backlog:
            await asyncio.sleep_ms(self.linger_ms)
            return
        self._event.clear()
        if self._sleep_ms is asyncio.sleep_ms:
            try:
                await asyncio.wait_for_ms(self._event.wait(), self.interval_ms)
            except asyncio.TimeoutError:
                return  # the heartbeat: time, parameter offer, and proof of life
        elif await self._wait_or_kick(self.interval_ms):
            return
        # Taps at a stop come in bursts: gather them into one batch.
        await asyncio.sleep_ms(self.linger_ms)

    async def _wait_or_kick(self, ms):
        """The interval on the given sleep_ms (the bench's virtual clock): True when it ran out,
        False when kick() came first."""
        self._timed_out = False

        async def timer():
            await self._sleep_ms(ms)
            self._timed_out = True
            self._event.set()

        task = asyncio.create_task(timer())
        await self._event.wait()
        if not self._timed_out:
            task.cancel()
        return self._timed_out

    def _next_batch(self):
        """-> (records, floor, first_seq): a run of consecutive records after the cursor. A record
        the journal could not read is lost to the back office too: the floor says so."""
        acked = self.j.acked_seq
        if not self.j.backlog:
            return [], acked, acked + 1
        recs = self.j.records_after(acked, self.batch)
        if not recs:
            # Records wait but none can be read: without this they would be retried forever.
            last = self.j.last_seq
            _log.error("records %d..%d unreadable here: reported lost", acked + 1, last)
            return [], last, last + 1
        first = record.seq_of(recs[0])
        n = 1
        while n < len(recs) and record.seq_of(recs[n]) == first + n:
            n += 1
        if n < len(recs):
            recs = recs[:n]  # the rest after the gap goes in the next batch
        floor = acked
        if first > acked + 1:
            _log.error("records %d..%d unreadable here: reported lost", acked + 1, first - 1)
            floor = first - 1
        return recs, floor, first

    async def _exchange(self, kind, make_body):
        """Send a signed request; one immediate re-send when the server says our counter is stale
        (after a reboot). -> the verified answer dict, or None (reason logged and kept)."""
        if self._v2 and self.epoch is None:
            self.epoch = min(self.j.last_seq, up.EPOCH_MAX)
        for _ in range(2):
            if self.counter >= 0xFFFFFFFF and self.epoch is not None:
                self.epoch += 1  # the counter's end: a new epoch, from 1 again
                self.counter = 0
            self.counter = (self.counter + 1) & 0xFFFFFFFF
            counter = self.counter
            body = make_body(counter)
            bind = up.request_mac(body)  # copied: the body's buffer is reused by the next batch
            url = self._url_up if kind == up.T_UPLOAD else self._url_par
            t0 = time.ticks_ms()
            c0 = self.clock()
            try:
                status, data = await self.t.request("POST", url, body, _HEADERS, self.timeout_ms)
            except TransportError as e:
                return self._failed("network: %s %s" % (type(e).__name__, e))
            except Exception as e:  # a transport bug must not kill the uplink
                return self._failed("transport: %r" % (e,))
            rtt = time.ticks_diff(time.ticks_ms(), t0)
            self.exchanges += 1
            self.sent_bytes += len(body)
            if status not in (200, 409):
                text = bytes(data[:80]) if data else b""
                text = text.decode("utf-8", "replace").strip()
                return self._failed("HTTP %d %s" % (status, text))
            body = None  # the request may be large: let it go before inflating the answer
            try:
                if len(data) > up.ANS_LEN + up.MAC_LEN:
                    gc.collect()  # a payload (a bundle) may inflate to many kB
                ans = up.decode_answer(
                    self.secret, data, self.device, counter, kind, bind, self.epoch
                )
            except up.ProtoError as e:
                return self._failed("answer refused: %s" % e)
            except MemoryError:
                return self._failed("answer of %d bytes does not fit in RAM" % len(data))
            self._offer_time(ans["time"], rtt, self.clock() - c0)
            if ans["status"] == up.ST_STALE_COUNTER:
                _log.info(
                    "epoch %s counter %d stale, server at %d/%d: re-send",
                    self.epoch,
                    counter,
                    ans["server_epoch"],
                    ans["server_counter"],
                )
                self.counter = ans["server_counter"]
                if self.epoch is not None:
                    self.epoch = ans["server_epoch"]
                continue
            if status != 200 or ans["status"] != up.ST_OK:
                return self._failed("answer status %d/%d" % (status, ans["status"]))
            return ans
        return self._failed("counter still stale after re-sync")

    def _failed(self, why):
        self.last_error = why
        _log.warning("%s", why)
        return None

    async def _upload(self, recs, floor, first):
        now = self.clock()

        def body(counter):
            if self.compress and recs:
                return up.encode_upload(
                    self.secret, self.device, counter, now, floor, first, recs, True, self.epoch
                )
            # The common case (stock firmware cannot deflate): one buffer for every batch.
            return up.encode_upload_into(
                self._buf, self.secret, self.device, counter, now, floor, first, recs, self.epoch
            )

        ans = await self._exchange(up.T_UPLOAD, body)
        if ans is None:
            return False
        held = ans["value"]
        last = self.j.last_seq
        if held > last:
            # Never free what we never sent: a server claiming more is broken or lying.
            self._failed("server claims seq %d, the journal ends at %d" % (held, last))
            return False
        if held < floor:
            self._failed("server holds only up to %d, below our floor %d" % (held, floor))
            return False
        if held > self.j.acked_seq:
            try:
                self.j.ack(held)
            except Exception as e:  # AckError or a flash error: keep the records, retry later
                self._failed("journal ack %d failed: %r" % (held, e))
                return False
        if self.on_ack is not None:
            self.on_ack(held)  # what the back office holds is in the log (heartbeats too)
        if recs:
            self.sent_records += len(recs)
            if held < first + len(recs) - 1:
                # Stored, but not contiguous yet (the server waits for an earlier record).
                _log.info("server holds up to %d of %d..%d", held, first, first + len(recs) - 1)
        self.offer = ans["extra"]
        self.last_ok = self.clock()
        self.last_error = None
        return True

    async def _fetch_params(self):
        have = self.params_version
        now = self.clock()
        ans = await self._exchange(
            up.T_PARAMS,
            lambda c: up.encode_params(self.secret, self.device, c, now, have, self.epoch),
        )
        if ans is None:
            return False
        if ans["pkind"] == up.P_NONE:
            self.offer = ans["value"]
            return True
        version = ans["value"]
        ok = False
        if ans["pkind"] == up.P_CHUNKED:
            return await self._fetch_chunked(version, ans["payload"], have)
        if self.on_bundle is None:
            _log.warning("bundle %d offered but nobody takes bundles", version)
        else:
            try:
                ok = self.on_bundle(ans["pkind"], version, ans["extra"], ans["payload"])
            except Exception as e:  # a bad bundle must not stop uploads
                _log.error("bundle %d: handler failed: %r", version, e)
        if ok:
            _log.info("parameters %d -> %d", have, version)
            self.params_version = version
        else:
            _log.warning("bundle %d refused: keeping %d", version, have)
            self._refused_version = version
        return True

    async def _fetch_chunked(self, version, payload, have):
        if self.on_chunked is None or len(payload) != 4:
            _log.warning("bundle %d offered in chunks but nobody takes them", version)
            self._refused_version = version
            return True
        total = int.from_bytes(payload, "big")
        url = "%s/v1/bundle/%d?d=%d&t=%s" % (
            self._base,
            version,
            self.device,
            up.bundle_token(self.secret, self.device, version),
        )

        async def fetch(off, length, sink):
            hdr = {"Range": "bytes=%d-%d" % (off, off + length - 1)}
            status, n = await self.t.request("GET", url, b"", hdr, self.timeout_ms, sink=sink)
            if status != 206 or n != length:
                raise TransportError("range %d+%d: HTTP %d, %r bytes" % (off, length, status, n))

        try:
            ok = await self.on_chunked(version, total, fetch)
        except TransportError as e:  # the checkpoint stays: the next sync resumes
            return self._failed("bundle %d download: %s %s" % (version, type(e).__name__, e))
        except Exception as e:  # a bad bundle must not stop uploads
            _log.error("bundle %d: chunked handler failed: %r", version, e)
            ok = False
        if ok:
            _log.info("parameters %d -> %d (chunked)", have, version)
            self.params_version = version
        else:
            _log.warning("bundle %d refused: keeping %d", version, have)
            self._refused_version = version
        return True

    def _offer_time(self, server_time, rtt_ms, moved=0):
        if self.on_time is None:
            return
        if abs(moved) > rtt_ms // 1000 + 2:
            # The clock was set while the request was out (network time, a technician): the
            # answer's time belongs to before that (docs/time.md).
            _log.info("server time ignored: the clock moved %d s during the exchange", moved)
            return
        if not TIME_MIN <= server_time < TIME_MAX:
            _log.warning("server time %d refused: out of bounds", server_time)
            return
        if rtt_ms > self.max_rtt_ms:
            _log.info("server time ignored: answer took %d ms", rtt_ms)
            return
        t = server_time + rtt_ms // 2000  # the answer left the server about half the RTT ago
        if abs(t - self.clock()) < self.time_tolerance_s:
            return
        try:
            self.on_time(t)
        except Exception as e:
            _log.error("clock callback failed: %r", e)
