# An asyncio AT command engine over a UART stream (SIM7600, EC2x/EC200, anything 3GPP-ish).
#
# One reader task owns the receive side: bytes land in a preallocated chunk, complete lines are
# matched against the command in flight (its info lines, its final result code, its prompt) and
# against the registered unsolicited result codes, which are routed whenever they arrive, also
# between the lines of another command's response. Raw payloads of announced length ("+HTTPREAD:
# DATA,<n>", or the bytes after a CONNECT) are copied straight into the caller's buffer.
# Nothing here busy-waits: every wait is an awaited event with a deadline. The deadlines are kept
# by one watch task, alive while a command or a URC waiter waits: it sets the waiter's event once
# the deadline has passed. (A wait_for_ms() per wait made a task and two coroutines, about 0.8 KB
# of garbage, for every wait of every command: docs/runtime.md.)
import asyncio
import time

import log
from micropython import const

_LF = const(10)
_CR = const(13)
_GT = const(62)
_SP = const(32)
_LINE_MAX = const(256)
_CHUNK = const(256)
_TICK_MS = const(20)  # how often the watch task looks at the deadlines while something waits
_IDLE_TICKS = const(50)  # it ends after 1 s with nothing waiting (a round's commands share it)

_log = log.get("at")

# Final result codes that fail a command (OK is handled apart).
_FAIL_EXACT = (b"ERROR", b"NO CARRIER", b"NO DIALTONE", b"BUSY", b"NO ANSWER")
_FAIL_PREFIX = (b"+CME ERROR:", b"+CMS ERROR:")


class AtError(OSError):
    """The modem answered a command with a failing final result code.
    `code` is the number of +CME/+CMS ERROR when numeric, its text otherwise, None for ERROR."""

    def __init__(self, line, code=None):
        super().__init__(line)
        self.line = line
        self.code = code


class AtTimeout(OSError):
    """No final result code (or prompt, or raw data) within the command's deadline."""


def parse_error(line):
    """A failing final line -> AtError with its code ('+CME ERROR: 14' -> code 14)."""
    text = line.decode() if isinstance(line, (bytes, bytearray)) else line
    code = None
    colon = text.find(":")
    if text.startswith("+CM") and colon > 0:
        rest = text[colon + 1 :].strip()
        try:
            code = int(rest)
        except ValueError:
            code = rest
    return AtError(text, code)


def fields(line, prefix):
    """'+CSQ: 21,99' with prefix b'+CSQ:' -> ['21', '99'] (quotes stripped, spaces trimmed)."""
    text = bytes(line[len(prefix) :]).decode().strip()
    out = []
    for part in text.split(","):
        part = part.strip()
        if len(part) >= 2 and part[0] == '"' and part[-1] == '"':
            part = part[1:-1]
        out.append(part)
    return out


class _Pending:
    # The command in flight: what it collects and how it ends.
    def __init__(self, cmd, prefix, prompt, raw, end):
        self.cmd = cmd
        self.prefix = prefix
        self.prompt = prompt  # b">", b"DOWNLOAD", b"CONNECT" or None
        self.prompt_seen = False
        self.raw = raw  # memoryview to fill (after CONNECT or a data header)
        self.sink = None  # or a function taking each piece (streamed reads)
        self.raw_got = 0
        self.raw_after_connect = 0  # bytes that follow the CONNECT line
        self.end = end  # a line prefix that ends the command after OK (e.g. b"+HTTPREAD: 0")
        self.ok = False
        self.lines = []
        self.error = None
        self.done = False
        self.deadline = 0  # ticks_ms
        self.ev = asyncio.Event()


class UrcWaiter:
    """One URC expected later (e.g. '+HTTPACTION:'): create it before sending the command that
    triggers it, so a fast answer cannot slip by, then `await waiter.wait(timeout_ms)`."""

    def __init__(self, engine, prefix):
        self.engine = engine
        self.prefix = prefix
        self.line = None
        self.error = None
        self.deadline = None  # ticks_ms while waiting
        self.ev = asyncio.Event()

    async def wait(self, timeout_ms):
        try:
            if self.line is None and self.error is None:
                self.deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
                self.engine._watch_start()
                await self.ev.wait()  # set by the line, by fail_waiters or by the watch task
                if self.line is None and self.error is None:
                    raise AtTimeout("no %s within %d ms" % (self.prefix.decode(), timeout_ms))
        finally:
            self.deadline = None
            self.cancel()
        if self.error is not None:
            raise AtError(self.error)
        return self.line

    def cancel(self):
        if self in self.engine._waiters:
            self.engine._waiters.remove(self)


class AtEngine:
    def __init__(self, stream, chunk=_CHUNK, pacer=None):
        """pacer: a txpace.TxPacer for a machine.UART (whose write() blocks once its TX buffer is
        full); without one, writes go through asyncio's StreamWriter (sockets, SimUART)."""
        self.stream = stream
        self.pacer = pacer
        self._rd = asyncio.StreamReader(stream)
        self._wr = asyncio.StreamWriter(stream, {})
        self._chunk = bytearray(chunk)  # what one read hands over, parsed in place
        self._line = bytearray(_LINE_MAX)
        self._lmv = memoryview(self._line)
        self._llen = 0
        self._overlong = False
        self._urcs = []  # (prefix, fn(line))
        self._data_hdrs = []  # line prefixes announcing raw data: b"+HTTPREAD: DATA,"
        self._waiters = []
        self._raw_left = 0  # raw bytes still to move (to the pending's buffer or discarded)
        self._cmd = None
        self._lock = asyncio.Lock()
        self._task = None
        self._watch = None  # the deadline task, while something waits
        self.echo = True  # until ATE0: the modem repeats each command line
        self.last_rx_ms = time.ticks_ms()
        self.discarded = 0  # raw bytes nobody asked for
        self.bad_lines = 0
        self.read_errors = 0

    # ---- life cycle -------------------------------------------------------------------------
    def start(self):
        if self._task is None:
            self._task = asyncio.create_task(self._reader())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _watch_start(self):
        if self._watch is None:
            self._watch = asyncio.create_task(self._watching())

    async def _watching(self):
        """Wake every wait whose deadline has passed (its waiter then raises AtTimeout); ends
        a second after the last wait, so an idle engine has no timer running."""
        idle = 0
        try:
            while True:
                now = time.ticks_ms()
                waiting = False
                p = self._cmd
                if p is not None and not p.done:
                    waiting = True
                    if time.ticks_diff(p.deadline, now) <= 0:
                        p.ev.set()
                for w in self._waiters:
                    if w.deadline is not None:
                        waiting = True
                        if time.ticks_diff(w.deadline, now) <= 0:
                            w.ev.set()
                idle = 0 if waiting else idle + 1
                if idle > _IDLE_TICKS:
                    return
                await asyncio.sleep_ms(_TICK_MS)
        finally:
            if self._watch is asyncio.current_task():  # not a newer one after a stop()
                self._watch = None

    def reset(self):
        """Forget partial input (after a power cycle or an escape)."""
        self._llen = 0
        self._overlong = False
        self._raw_left = 0
        self.echo = True

    def on_urc(self, prefix, fn):
        """Call fn(line: bytes) for every line starting with `prefix` that is not the response of
        the command in flight."""
        self._urcs.append((prefix, fn))

    def data_header(self, prefix):
        """Lines '<prefix><n>' announce n raw bytes, copied into the command's raw buffer."""
        self._data_hdrs.append(prefix)

    def fail_waiters(self, why):
        """Wake every URC waiter with an AtError (the modem restarted: nothing will come)."""
        for w in self._waiters:
            w.error = why
            w.ev.set()
        self._waiters.clear()

    def expect(self, prefix):
        w = UrcWaiter(self, prefix)
        self._waiters.append(w)
        return w

    # ---- receive side -----------------------------------------------------------------------
    async def _reader(self):
        rd = self._rd
        while True:
            try:
                n = await rd.readinto(self._chunk)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the stream failed (MemoryError, OSError): keep listening
                self.read_errors += 1
                _log.error("UART read failed: %r", e)
                await asyncio.sleep_ms(50)
                continue
            if not n:
                # A stream with nothing to read: let other tasks run rather than spin.
                await asyncio.sleep_ms(2)
                continue
            self._consume(self._chunk, n)

    def feed(self, data):
        """Parse received bytes (the reader task does this; tests may call it directly)."""
        data = bytes(data)
        self._consume(data, len(data))

    def _consume(self, buf, n):
        # Works on the reader's preallocated chunk with C-level find() and slice copies: a
        # per-byte Python loop would cost the loop milliseconds per KiB on an ESP32.
        self.last_rx_ms = time.ticks_ms()
        mv = memoryview(buf)
        i = 0
        while i < n:
            if self._raw_left:
                i = self._take_raw(mv, i, n)
                continue
            p = self._cmd
            if (
                self._llen == 0
                and p is not None
                and p.prompt == b">"
                and not p.prompt_seen
                and not p.done
            ):
                # '> ' comes without a line end: recognise it at the start of a line.
                b = buf[i]
                if b == _CR or b == _LF:
                    i += 1
                    continue
                if b == _GT:
                    i += 1
                    if i < n and buf[i] == _SP:
                        i += 1
                    p.prompt_seen = True
                    p.ev.set()
                    continue
            j = buf.find(b"\n", i, n)
            stop = n if j < 0 else j
            seg = stop - i
            if seg:
                if self._llen + seg <= _LINE_MAX:
                    self._line[self._llen : self._llen + seg] = mv[i:stop]
                    self._llen += seg
                else:
                    self._overlong = True
            if j < 0:
                return
            i = j + 1
            self._end_line()

    def _take_raw(self, mv, i, n):
        k = min(self._raw_left, n - i)
        p = self._cmd
        used = 0
        if p is not None and p.sink is not None and not p.done:
            # Streamed: the caller's sink takes each piece as it arrives (it must not raise).
            p.sink(mv[i : i + k])
            p.raw_got += k
            used = k
        elif p is not None and p.raw is not None and not p.done:
            used = min(k, len(p.raw) - p.raw_got)
            if used > 0:
                p.raw[p.raw_got : p.raw_got + used] = mv[i : i + used]
                p.raw_got += used
            else:
                used = 0
        # Bytes nobody asked for (or beyond the buffer) are dropped, and counted.
        self.discarded += k - used
        self._raw_left -= k
        if not self._raw_left and p is not None:
            p.ev.set()
        return i + k

    def _end_line(self):
        n = self._llen
        self._llen = 0
        if self._overlong:
            self._overlong = False
            self.bad_lines += 1
            _log.warning("line longer than %d bytes dropped", _LINE_MAX)
            return
        line = self._line
        a = 0
        while a < n and line[a] == _CR:
            a += 1
        while n > a and line[n - 1] == _CR:
            n -= 1
        if a == n:
            return
        line = bytes(self._lmv[a:n])  # one copy, no intermediate bytearray
        try:
            self._route(line)
        except Exception as e:  # a handler bug or a malformed line must not kill the reader
            self.bad_lines += 1
            _log.error("line %r refused: %r", line[:40], e)

    def _route(self, line):
        p = self._cmd
        active = p is not None and not p.done
        if active and self.echo and line == p.cmd:
            return
        for pre in self._data_hdrs:
            if line.startswith(pre):
                n = int(line[len(pre) :].strip().split(b",")[-1])
                if n < 0:
                    raise ValueError("negative length")
                self._raw_left = n
                if active and p.raw is None and p.sink is None:
                    _log.warning("%s data but no buffer: %d bytes dropped", pre.decode(), n)
                return
        if active:
            if p.prefix is not None and line.startswith(p.prefix):
                p.lines.append(line)
                p.ev.set()
                return
            if line == b"OK":
                p.ok = True
                if p.end is None:
                    self._finish(p, None)
                else:
                    p.ev.set()
                return
            if line in _FAIL_EXACT or line.startswith(_FAIL_PREFIX[0]):
                self._finish(p, parse_error(line))
                return
            if line.startswith(_FAIL_PREFIX[1]):
                self._finish(p, parse_error(line))
                return
            if p.prompt is not None and not p.prompt_seen and line == p.prompt:
                p.prompt_seen = True
                if line == b"CONNECT" and p.raw_after_connect:
                    self._raw_left = p.raw_after_connect
                p.ev.set()
                return
            if p.end is not None and line.startswith(p.end):
                p.lines.append(line)
                self._finish(p, None)
                return
        for w in self._waiters:
            if line.startswith(w.prefix):
                w.line = line
                self._waiters.remove(w)
                w.ev.set()
                return
        for pre, fn in self._urcs:
            if line.startswith(pre):
                fn(line)
                return
        if active and p.prefix is None:
            p.lines.append(line)
            return
        _log.debug("unsolicited %r", line[:60])

    def _finish(self, p, error):
        p.error = error
        p.done = True
        p.ev.set()

    # ---- send side --------------------------------------------------------------------------
    async def _wait(self, p, cond, deadline, what):
        while not cond():
            if p.done:
                return
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                raise AtTimeout("%s: no %s" % (p.cmd.decode(), what))
            p.ev.clear()
            self._watch_start()
            await p.ev.wait()  # set by the reader, or by the watch task at the deadline

    async def command(
        self,
        cmd,
        timeout_ms=1000,
        prefix=None,
        data=None,
        prompt=None,
        raw=None,
        raw_len=0,
        end=None,
    ):
        """Send `cmd` (str or bytes, without CR) and await its final result code.

        prefix:   info lines starting with it are the response (others are URCs or ignored);
                  None collects every line that is neither a URC nor a result code.
        data:     bytes (or a tuple of buffers, sent in turn: no joined copy) written once
                  `prompt` (b">", b"DOWNLOAD" or b"CONNECT") is seen.
        raw:      a memoryview/bytearray filled by data headers, or by `raw_len` bytes right
                  after a CONNECT prompt (reads); or a function called with each piece as it
                  arrives (streamed; it must not raise); `end`: a line that ends the command
                  after OK.
        Returns (info lines, raw bytes received). Raises AtError or AtTimeout."""
        if isinstance(cmd, str):
            cmd = cmd.encode()
        if not prefix:
            prefix = None  # b"" would claim every line
        sink = None
        if raw is not None and callable(raw):
            sink, raw = raw, None
        elif raw is not None and not isinstance(raw, memoryview):
            raw = memoryview(raw)
        if raw_len and prompt is None:
            prompt = b"CONNECT"
        async with self._lock:
            p = _Pending(cmd, prefix, prompt, raw, end)
            p.sink = sink
            p.raw_after_connect = raw_len
            self._cmd = p
            deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
            p.deadline = deadline
            try:
                await self._send(cmd + b"\r")
                if prompt is not None and data is not None:
                    await self._wait(p, lambda: p.prompt_seen, deadline, prompt.decode())
                    if p.done and p.error is not None:
                        raise p.error
                    for part in data if isinstance(data, tuple) else (data,):
                        await self._send(part)
                if raw_len:
                    await self._wait(p, lambda: p.prompt_seen, deadline, "CONNECT")
                    await self._wait(
                        p, lambda: p.raw_got >= raw_len and not self._raw_left, deadline, "data"
                    )
                await self._wait(p, lambda: p.done, deadline, "final result")
                if p.error is not None:
                    raise p.error
                return p.lines, p.raw_got
            finally:
                if self._raw_left and (p.raw is not None or p.sink) and not p.done:
                    # An unfinished raw read must not swallow the next command's answer.
                    self._raw_left = 0
                self._cmd = None

    async def send_raw(self, data):
        """Write bytes with no command around them (escape sequences, recovery)."""
        await self._send(data)

    async def _send(self, data):
        """Write data without holding the loop on a full TX buffer."""
        pacer = self.pacer
        if pacer is None:
            self._wr.write(data)
            await self._wr.drain()
            return
        await pacer.write(self.stream, data)
        await asyncio.sleep_ms(0)

    async def probe(self, tries=3, timeout_ms=300):
        """True when 'AT' gets OK within a few tries (the modem is alive and in command mode)."""
        for _ in range(tries):
            try:
                await self.command("AT", timeout_ms)
                return True
            except AtTimeout:
                pass
            except AtError:
                return True  # it answered, even if oddly
        return False


async def loop_block_probe(work, tick_ms=2):
    """Run coroutine `work` while a 'tap' task ticks every `tick_ms`; measure how late the ticks
    come. Returns (work's result, longest gap between ticks in ms, ticks counted).
    A gap much longer than tick_ms means something blocked the asyncio loop (the benchmark and
    the modem tests report it)."""
    state = [time.ticks_ms(), 0, 0]  # last tick, longest gap, ticks

    async def tap():
        while True:
            await asyncio.sleep_ms(tick_ms)
            now = time.ticks_ms()
            gap = time.ticks_diff(now, state[0])
            state[0] = now
            if gap > state[1]:
                state[1] = gap
            state[2] += 1

    ticker = asyncio.create_task(tap())
    try:
        state[0] = time.ticks_ms()
        result = await work
    finally:
        ticker.cancel()
    return result, state[1], state[2]
