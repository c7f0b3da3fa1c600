# mpy: heapsize=128k timeout=60
# The AT engine against a scripted in-process UART: result codes, prompts, raw data of exact
# length, URCs anywhere (also split across reads), timeouts and recovery of the parser.
import asyncio
import io

import log
import mptest
from atmodem import AtEngine, AtError, AtTimeout, fields, loop_block_probe, parse_error

_POLL = 3
_RD = 1
_WR = 4


class ScriptUart(io.IOBase):
    """A UART whose far end is a function: answer(line_or_bytes) -> bytes to receive.
    `frag` limits how many bytes one read returns, to split lines and payloads anywhere."""

    def __init__(self, answer=None, frag=256):
        self.rx = bytearray()
        self.tx = bytearray()
        self.writes = []
        self.answer = answer
        self.frag = frag

    def ioctl(self, req, arg):
        if req == _POLL:
            ready = 0
            if arg & _RD and self.rx:
                ready |= _RD
            if arg & _WR:
                ready |= _WR
            return ready
        return 0

    def readinto(self, buf, n=None):
        n = min(len(buf), len(self.rx), self.frag)
        if not n:
            return None
        buf[:n] = self.rx[:n]
        self.rx[:] = self.rx[n:]
        return n

    def write(self, data):
        data = bytes(data)
        self.tx += data
        self.writes.append(data)
        if self.answer is not None:
            out = self.answer(data)
            if out:
                self.rx += out
        return len(data)

    def push(self, data):
        self.rx += data


def table(replies):
    """answer() from a dict: command bytes (without CR) -> reply bytes."""

    def answer(data):
        return replies.get(data.rstrip(b"\r"), b"")

    return answer


def setup():
    log.set_level(log.DEBUG, echo=False)
    log.clear()


def engine(uart):
    at = AtEngine(uart)
    at.echo = False
    at.start()
    return at


async def test_ok_with_info_lines_and_prefix():
    uart = ScriptUart(table({b"AT+CSQ": b"\r\n+CSQ: 21,99\r\n\r\nOK\r\n"}))
    at = engine(uart)
    lines, raw = await at.command("AT+CSQ", 500, prefix=b"+CSQ:")
    mptest.eq(lines, [b"+CSQ: 21,99"])
    mptest.eq(raw, 0)
    mptest.eq(fields(lines[0], b"+CSQ:"), ["21", "99"])
    mptest.hex_eq(uart.tx, b"AT+CSQ\r")
    at.stop()


async def test_every_failing_result_code():
    cases = [
        (b"ERROR", None),
        (b"+CME ERROR: 14", 14),
        (b"+CME ERROR: SIM busy", "SIM busy"),
        (b"+CMS ERROR: 500", 500),
        (b"NO CARRIER", None),
        (b"BUSY", None),
        (b"NO ANSWER", None),
        (b"NO DIALTONE", None),
    ]
    for final, code in cases:
        uart = ScriptUart(table({b"AT+X": b"\r\n" + final + b"\r\n"}))
        at = engine(uart)
        e = await mptest.araises(AtError, at.command("AT+X", 500))
        mptest.eq(e.code, code, final)
        mptest.eq(e.line, final.decode())
        at.stop()
    mptest.eq(parse_error(b"+CME ERROR: 3").code, 3)


async def test_timeout_then_the_engine_still_works():
    replies = {b"AT+SLOW": b"", b"AT": b"\r\nOK\r\n"}
    uart = ScriptUart(table(replies))
    at = engine(uart)
    await mptest.araises(AtTimeout, at.command("AT+SLOW", 100))
    lines, _ = await at.command("AT", 500)
    mptest.eq(lines, [])
    # A late answer to the timed-out command is not taken for the next one's.
    uart.push(b"\r\n+SLOW: 1\r\n\r\nOK\r\n")
    await asyncio.sleep_ms(20)
    replies[b"AT+Y"] = b"\r\nERROR\r\n"
    await mptest.araises(AtError, at.command("AT+Y", 300))
    at.stop()


async def test_echo_is_skipped_until_ate0():
    def answer(data):
        return data + b"\r\n+CGMR: 1.0\r\n\r\nOK\r\n"  # echo on: the command comes back

    uart = ScriptUart(answer)
    at = AtEngine(uart)
    at.start()
    lines, _ = await at.command("AT+CGMR", 500)
    mptest.eq(lines, [b"+CGMR: 1.0"])
    at.stop()


async def test_urcs_anywhere_even_split_byte_by_byte():
    seen = []
    reply = b'\r\n+CREG: 1,5\r\n\r\n+CMTI: "SM",3\r\n\r\nRING\r\n\r\nOK\r\n\r\n+CEREG: 2\r\n'
    uart = ScriptUart(table({b"AT+CREG?": reply}), frag=1)
    at = engine(uart)
    at.on_urc(b"+CMTI:", seen.append)
    at.on_urc(b"+CEREG:", seen.append)
    at.on_urc(b"RING", seen.append)
    lines, _ = await at.command("AT+CREG?", 2000, prefix=b"+CREG:")
    mptest.eq(lines, [b"+CREG: 1,5"])
    await asyncio.sleep_ms(100)
    mptest.eq(seen, [b'+CMTI: "SM",3', b"RING", b"+CEREG: 2"])
    # A URC with no command in flight, and a line nobody knows (logged, dropped).
    uart.push(b'\r\n+CMTI: "SM",4\r\n\r\nWHATEVER\r\n')
    await asyncio.sleep_ms(50)
    mptest.eq(seen[-1], b'+CMTI: "SM",4')
    mptest.true(log.find("unsolicited"))
    at.stop()


async def test_urc_that_is_also_the_response_goes_to_the_command():
    seen = []
    uart = ScriptUart(table({b"AT+CEREG?": b"\r\n+CEREG: 1,1\r\n\r\nOK\r\n"}))
    at = engine(uart)
    at.on_urc(b"+CEREG:", seen.append)
    lines, _ = await at.command("AT+CEREG?", 500, prefix=b"+CEREG:")
    mptest.eq(lines, [b"+CEREG: 1,1"])
    mptest.eq(seen, [])
    at.stop()


async def test_gt_prompt_then_data_exactly_once():
    got = []

    def answer(data):
        if data == b"AT+CMGS=5\r":
            return b"\r\n> "
        got.append(data)
        return b"\r\n+CMGS: 7\r\n\r\nOK\r\n"

    uart = ScriptUart(answer)
    at = engine(uart)
    lines, _ = await at.command("AT+CMGS=5", 1000, prompt=b">", data=b"hello", prefix=b"+CMGS:")
    mptest.eq(got, [b"hello"])
    mptest.eq(lines, [b"+CMGS: 7"])
    at.stop()


async def test_download_and_connect_prompts():
    for prompt in (b"DOWNLOAD", b"CONNECT"):
        got = []

        def answer(data, prompt=prompt, got=got):
            if data.startswith(b"AT+"):
                return b"\r\n" + prompt + b"\r\n"
            got.append(data)
            return b"\r\nOK\r\n"

        uart = ScriptUart(answer, frag=3)
        at = engine(uart)
        await at.command("AT+HTTPDATA=4,1000", 1000, prompt=prompt, data=b"\x00\r\nO")
        mptest.eq(got, [b"\x00\r\nO"])
        del got[:]
        await at.command("AT+X=4", 1000, prompt=prompt, data=(b"\x00\r", memoryview(b"\nO")))
        mptest.eq(b"".join(got), b"\x00\r\nO")  # the parts in turn, not joined first
        at.stop()


async def test_prompt_never_comes_data_not_sent():
    uart = ScriptUart(table({b"AT+HTTPDATA=4,1000": b"\r\n+CME ERROR: 3\r\n"}))
    at = engine(uart)
    cmd = at.command("AT+HTTPDATA=4,1000", 500, prompt=b"DOWNLOAD", data=b"x")
    e = await mptest.araises(AtError, cmd)
    mptest.eq(e.code, 3)
    mptest.eq(uart.writes, [b"AT+HTTPDATA=4,1000\r"])
    uart.answer = table({})
    await mptest.araises(
        AtTimeout, at.command("AT+HTTPDATA=4,1000", 100, prompt=b"DOWNLOAD", data=b"x")
    )
    mptest.eq(len(uart.writes), 2)
    at.stop()


async def test_data_header_copies_exact_bytes_even_crlf_ok_inside():
    body = b"\r\nOK\r\n+HTTPREAD: 0\r\n\xff\x00"
    reply = b"\r\nOK\r\n\r\n+HTTPREAD: DATA,%d\r\n" % len(body) + body + b"\r\n+HTTPREAD: 0\r\n"
    uart = ScriptUart(table({b"AT+HTTPREAD=0,100": reply}), frag=5)
    at = engine(uart)
    at.data_header(b"+HTTPREAD: DATA,")
    buf = bytearray(100)
    lines, got = await at.command("AT+HTTPREAD=0,100", 1000, raw=buf, end=b"+HTTPREAD: 0")
    mptest.eq(got, len(body))
    mptest.hex_eq(buf[:got], body)
    mptest.eq(lines, [b"+HTTPREAD: 0"])
    at.stop()


async def test_data_in_two_pieces_and_data_nobody_wants():
    reply = (
        b"\r\nOK\r\n\r\n+HTTPREAD: DATA,3\r\nabc\r\n+HTTPREAD: DATA,2\r\nde\r\n+HTTPREAD: 0\r\n"
    )
    uart = ScriptUart(table({b"AT+HTTPREAD=0,5": reply}))
    at = engine(uart)
    at.data_header(b"+HTTPREAD: DATA,")
    buf = bytearray(5)
    _, got = await at.command("AT+HTTPREAD=0,5", 1000, raw=buf, end=b"+HTTPREAD: 0")
    mptest.hex_eq(buf, b"abcde")
    mptest.eq(got, 5)
    # Announced data with no reader is dropped without derailing the next lines.
    uart.push(b"\r\n+HTTPREAD: DATA,4\r\nOK\r\n")
    await asyncio.sleep_ms(30)
    mptest.eq(at.discarded, 4)
    uart.answer = table({b"AT": b"\r\nOK\r\n"})
    await at.command("AT", 500)
    at.stop()


async def test_connect_then_raw_length_then_end_line():
    body = bytes(range(256)) * 3
    reply = b"\r\nCONNECT\r\n" + body + b"\r\nOK\r\n\r\n+QHTTPREAD: 0\r\n"
    uart = ScriptUart(table({b"AT+QHTTPREAD=10": reply}), frag=97)
    at = engine(uart)
    buf = bytearray(len(body))
    lines, got = await at.command(
        "AT+QHTTPREAD=10", 2000, raw=buf, raw_len=len(body), end=b"+QHTTPREAD:"
    )
    mptest.eq(got, len(body))
    mptest.hex_eq(buf, body)
    mptest.eq(lines, [b"+QHTTPREAD: 0"])
    at.stop()


async def test_raw_cut_short_times_out_and_next_command_is_clean():
    uart = ScriptUart(table({b"AT+QHTTPREAD=10": b"\r\nCONNECT\r\nabc"}))
    at = engine(uart)
    buf = bytearray(10)
    await mptest.araises(
        AtTimeout, at.command("AT+QHTTPREAD=10", 150, raw=buf, raw_len=10, end=b"+QHTTPREAD:")
    )
    uart.answer = table({b"AT": b"\r\nOK\r\n"})
    await at.command("AT", 500)
    at.stop()


async def test_waiter_catches_an_urc_that_beats_the_wait():
    uart = ScriptUart(table({b"AT+HTTPACTION=0": b"\r\nOK\r\n\r\n+HTTPACTION: 0,200,5\r\n"}))
    at = engine(uart)
    w = at.expect(b"+HTTPACTION:")
    await at.command("AT+HTTPACTION=0", 500)
    await asyncio.sleep_ms(20)
    line = await w.wait(10)
    mptest.eq(fields(line, b"+HTTPACTION:"), ["0", "200", "5"])
    w2 = at.expect(b"+HTTPACTION:")
    await mptest.araises(AtTimeout, w2.wait(50))
    mptest.eq(at._waiters, [])
    at.stop()


async def test_overlong_line_and_failing_handler_do_not_kill_the_reader():
    uart = ScriptUart(table({b"AT": b"\r\nOK\r\n"}))
    at = engine(uart)

    def broken(line):
        raise ValueError("handler bug")

    at.on_urc(b"+BAD:", broken)
    uart.push(b"x" * 700 + b"\r\n\xff\xfe garbage\r\n+BAD: 1\r\n")
    await asyncio.sleep_ms(50)
    mptest.eq(at.bad_lines, 2)
    mptest.true(log.find("longer than", log.WARNING))
    mptest.true(log.find("refused", log.ERROR))
    await at.command("AT", 500)
    at.stop()


async def test_more_data_than_the_buffer_is_dropped_and_counted():
    reply = b"\r\nOK\r\n\r\n+HTTPREAD: DATA,8\r\n12345678\r\n+HTTPREAD: 0\r\n"
    uart = ScriptUart(table({b"AT+HTTPREAD=0,4": reply, b"AT": b"\r\nOK\r\n"}), frag=3)
    at = engine(uart)
    at.data_header(b"+HTTPREAD: DATA,")
    buf = bytearray(4)
    _, got = await at.command("AT+HTTPREAD=0,4", 1000, raw=buf, end=b"+HTTPREAD: 0")
    mptest.eq((got, bytes(buf), at.discarded), (4, b"1234", 4))
    await at.command("AT", 500)
    at.stop()


def test_feed_parses_without_a_reader_task():
    seen = []
    at = AtEngine(ScriptUart())
    at.on_urc(b"+CREG:", seen.append)
    at.feed(b"\r\n+CR")
    at.feed(b"EG: 5\r")
    mptest.eq(seen, [])
    at.feed(memoryview(b"\n\r\r\n+CREG: 1\r\n"))
    mptest.eq(seen, [b"+CREG: 5", b"+CREG: 1"])


async def test_loop_block_probe_sees_a_blocking_call():
    import time

    async def blocking():
        await asyncio.sleep_ms(20)
        time.sleep_ms(60)  # what a busy-wait driver would do
        await asyncio.sleep_ms(20)
        return 7

    result, gap, ticks = await loop_block_probe(blocking(), 2)
    mptest.eq(result, 7)
    mptest.between(gap, 55, 500)
    mptest.true(ticks > 3)

    async def polite():
        for _ in range(20):
            await asyncio.sleep_ms(5)

    # No upper bound in ms here: a busy machine stretches any sleep. The blocking call's gap
    # has a floor the load cannot lower; the polite one must simply stay below it.
    _, polite_gap, _ = await loop_block_probe(polite(), 2)
    mptest.true(polite_gap < gap, "polite %d ms vs blocking %d ms" % (polite_gap, gap))
