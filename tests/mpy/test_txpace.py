# mpy: heapsize=128k timeout=60
# Paced UART writes (drivers/txpace.py) and the AT engine's use of them (drivers/atmodem.py): what
# is written, in which pieces and order, and what happens when the stream fails. No durations are
# asserted (the speed figure is `modem_loop_block_ms` in make bench).
import asyncio

import mptest
from atmodem import AtEngine
from txpace import TxPacer


class Recorder:
    """A stream that takes what it is given (or part of it, or fails) and keeps every write."""

    def __init__(self, take=None, fail_at=None):
        self.writes = []
        self.take = take  # None: everything; n: at most n bytes per call; 0: nothing (None)
        self.fail_at = fail_at

    def write(self, buf):
        if self.fail_at is not None and len(self.writes) == self.fail_at:
            raise OSError(5)
        if self.take == 0:
            self.writes.append(b"")
            self.take = None  # takes everything from the next call on
            return None
        n = len(buf) if self.take is None else min(self.take, len(buf))
        self.writes.append(bytes(buf[:n]))
        return n

    def ioctl(self, req, arg):
        return 0

    def data(self):
        return b"".join(self.writes)


def test_the_pacer_splits_into_chunks_that_fit_three_quarters_of_the_buffer():
    p = TxPacer(115200, 2048)
    mptest.eq(p.char_us, 87)  # 10 bits at 115,200 baud, rounded up
    mptest.eq((p.room, p.chunk), (1536, 768))
    mptest.eq(TxPacer(115200, 0).room, 96, "txbuf=0: the 128-byte FIFO")
    mptest.eq(p.wait_ms(1536), 0, "an idle line takes a full buffer at once")
    slow = TxPacer(300, 2048)  # 33 ms a byte: what is written stays in the buffer for this test
    slow.sent(slow.room)
    slow.sent(slow.room)  # beyond the buffer (a caller that did not ask)
    mptest.true(slow.wait_ms(1) > 0, "an over-full buffer makes the next byte wait")
    mptest.true(slow.backlog() > slow.room)
    mptest.raises(ValueError, TxPacer, 0)


async def test_a_large_write_goes_out_whole_in_order_in_chunks():
    data = bytes(i & 0xFF for i in range(6500))
    s = Recorder()
    p = TxPacer(115200, 512)  # a chunk is 17 ms of line: the next one always has to wait
    await p.write(s, data)
    mptest.eq(s.data(), data)
    mptest.true(max(len(w) for w in s.writes) <= p.chunk)
    mptest.eq(len(s.writes), (6500 + p.chunk - 1) // p.chunk)
    mptest.true(p.waits > 0, "it awaited the line between chunks")


async def test_a_stream_that_takes_part_or_nothing_gets_the_rest_later():
    data = bytes(range(200))
    s = Recorder(take=0)
    await TxPacer(921600, 1024).write(s, data)
    mptest.eq(s.data(), data)
    s = Recorder(take=7)
    await TxPacer(921600, 1024).write(s, data)
    mptest.eq(s.data(), data)
    mptest.eq(len(s.writes), 29)


async def test_a_failing_write_raises_and_the_engine_stays_usable():
    s = Recorder(fail_at=0)
    at = AtEngine(s, pacer=TxPacer(921600, 256))
    e = await mptest.araises(OSError, at.command("AT+X", 100))
    mptest.eq(e.args[0], 5, "the UART's error, not a timeout")
    at.stream.fail_at = None

    async def answer():
        await asyncio.sleep_ms(5)
        at.feed(b"\r\nOK\r\n")

    asyncio.create_task(answer())
    await at.command("AT", 500)  # the lock was released: the next command goes through
    mptest.eq(s.data(), b"AT\r")


async def test_command_data_follows_its_prompt_in_order_and_in_chunks():
    s = Recorder()
    at = AtEngine(s, pacer=TxPacer(921600, 512))
    body = bytes(i & 0xFF for i in range(3000))

    async def modem():
        await asyncio.sleep_ms(5)
        at.feed(b"\r\nDOWNLOAD\r\n")
        while len(s.data()) < 17 + 3000:
            await asyncio.sleep_ms(2)
        at.feed(b"\r\nOK\r\n")

    asyncio.create_task(modem())
    await at.command("AT+HTTPDATA=3000", 2000, data=(body[:100], body[100:]), prompt=b"DOWNLOAD")
    mptest.eq(s.data(), b"AT+HTTPDATA=3000\r" + body)
    mptest.true(max(len(w) for w in s.writes) <= at.pacer.chunk)


async def test_without_a_pacer_writes_go_through_the_stream_writer():
    s = Recorder()
    at = AtEngine(s)

    async def answer():
        await asyncio.sleep_ms(5)
        at.feed(b"\r\nOK\r\n")

    asyncio.create_task(answer())
    await at.command("ATE0", 500)
    mptest.eq(s.data(), b"ATE0\r")
