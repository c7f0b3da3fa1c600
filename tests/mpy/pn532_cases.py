# Driver-against-simulator cases shared by the runs of test_pn532_transports.py (one per bus):
# the same PN532 driver code over each bus, the chip simulated at bus level by
# tools/sim/nfc_server.py. `env` gives: name ("i2c"/"spi"/"hsu"), make(**reader_kw) -> reader,
# bus() -> driver-side transaction count, ctl (simlink.Control).
import time

import log
import mptest
import pn532
from linkerr import CardGone, ChipError, LinkError, LinkTimeout, ProtocolError

SELECT = bytes.fromhex("00a4040008a000000632010105")
READ_256 = b"\x00\xb0\x00\x00\x00"
# Short enough for quick failure tests, long enough for a loaded CI machine (2 cores, busy).
# Timeouts far above what the simulated chip needs, so a machine busy with other work (the chip
# simulator is a CPython process) never turns a slow answer into a failure; the cases that test
# a timeout make the chip slower than these on purpose.
FAST = {"ack_timeout_ms": 1000, "command_timeout_ms": 2000, "exchange_timeout_ms": 2500}
SLOWER_THAN_FAST_MS = 4000


class Env:
    def __init__(self, name, make_transport, bus_count):
        from simlink import Control

        self.name = name
        self.make_transport = make_transport
        self.bus = bus_count
        self.ctl = Control()
        self.transport = None

    def call(self, cmd, **kw):
        return self.ctl.call(cmd, chip_name=self.name, **kw)

    def fresh(self, **kw):
        """Chip at power-on, no cards; a new, initialised reader."""
        self.call("pn532_reset")
        log.set_level(log.DEBUG, echo=False)
        log.clear()
        return self.make(**kw)

    def make(self, init=True, **kw):
        args = dict(FAST)
        args.update(kw)
        if self.transport is None:
            self.transport = self.make_transport()
        r = pn532.PN532(self.transport, **args)
        if init:
            r.init()
        return r

    def place(self, label="c1", **card):
        """A new card under `label` (a SimpleApduCard unless card settings say otherwise)."""
        if not card:
            card = {"uid": "04112233"}
        return self.call("pn532_place", label=label, **card)

    def remove(self, label=None):
        return self.call("pn532_remove", label=label)

    def fault(self, name, count=1, **params):
        self.call("pn532_fault", name=name, count=count, **params)

    def state(self):
        return self.ctl.call("pn532_state", chip_name=self.name)

    def stat(self, key, want, wait_ms=5000):
        """A chip counter, waiting a little for `want`: a UART's bytes travel on another socket
        than the control channel, so the chip may not have seen them yet."""
        deadline = time.ticks_add(time.ticks_ms(), wait_ms)
        while True:
            got = self.state()["stats"][key]
            if got == want or time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                return got
            time.sleep_ms(5)

    def until(self, fn, wait_ms=5000):
        deadline = time.ticks_add(time.ticks_ms(), wait_ms)
        while not fn() and time.ticks_diff(deadline, time.ticks_ms()) > 0:
            time.sleep_ms(5)
        return fn()

    def apdus(self, label="c1"):
        return self.ctl.call("pn532_card", label=label)["apdus"]


def init_configures_the_chip(env):
    r = env.fresh()
    mptest.eq(r.firmware, (0x32, 1, 6, 7))
    st = env.state()
    mptest.eq(st["sam_mode"], 1)
    mptest.eq(st["retries"], [0xFF, 0x01, 2], "bounded passive activation")
    mptest.eq(st["params"], 0x14, "auto RATS")
    mptest.eq(st["timings"], [0x00, 0x0B, 0x0D])
    mptest.false(st["asleep"])


def poll_without_card_is_none_and_bounded(env):
    r = env.fresh()
    t0 = time.ticks_ms()
    mptest.eq(r.poll(), None)
    took = time.ticks_diff(time.ticks_ms(), t0)
    mptest.true(took < 20000, "limit: an empty poll took %d ms, more than 20 s" % took)
    mptest.eq(r.target, None)
    mptest.false(r.present())


def activate_select_read_and_release(env):
    r = env.fresh()
    env.place(uid="04a1a2a3a4a5a6", atqa="0044")
    t = r.poll()
    mptest.eq((t.kind, t.uid_hex(), t.sak, t.iso_dep), ("A", "04a1a2a3a4a5a6", 0x20, True))
    mptest.hex_eq(t.ats, bytes.fromhex("0578807002"))
    mptest.hex_eq(r.transceive(SELECT), b"\x6f\x03\x84\x01\x00\x90\x00")
    got = r.transceive(READ_256)  # 258 bytes: an extended frame from the chip
    mptest.eq(len(got), 258)
    mptest.hex_eq(got[:4] + got[-2:], b"\x00\x01\x02\x03\x90\x00")
    long_cmd = b"\x80\xee\x00\x00\x00\x01\x2c" + bytes(i & 0xFF for i in range(300))
    got = r.transceive(long_cmd)  # host chaining (MI) over two InDataExchange frames
    mptest.hex_eq(got[:3] + got[-2:], b"\x2b\x2a\x29\x90\x00")
    mptest.eq(len(got), 302)
    mptest.true(r.present())
    r.release()
    mptest.eq(env.state()["targets"], {})
    mptest.false(r.present())
    mptest.raises(CardGone, r.transceive, SELECT)
    mptest.eq(len(env.apdus()), 3)


def chained_answers_from_the_chip(env):
    r = env.fresh()
    env.call("pn532_config", max_resp=40)
    env.place()
    r.poll()
    got = r.transceive(READ_256)
    mptest.eq(len(got), 258)
    mptest.hex_eq(got[250:], bytes((250, 251, 252, 253, 254, 255)) + b"\x90\x00")
    mptest.eq(env.state()["stats"]["ide_frames"], 7)


def type_b_where_the_firmware_allows(env):
    r = env.fresh()  # type A only unless configured: one InListPassiveTarget per poll
    env.place(kind="B", uid="aabbccdd")
    before = env.state()["stats"]["commands"].get("4a", 0)
    mptest.eq(r.poll(), None)
    mptest.eq(env.state()["stats"]["commands"].get("4a", 0), before + 1, "type A only")
    r = env.make(kinds="AB")
    t = r.poll()
    mptest.eq((t.kind, t.uid_hex(), t.iso_dep, t.sak), ("B", "aabbccdd", True, None))
    mptest.eq(t.atqb[0], 0x50)
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00")
    env.call("pn532_config", support=0x05)  # a PN532 without type B
    r.init()
    mptest.false(r.supports_b())
    before = env.state()["stats"]["commands"].get("4a", 0)
    mptest.eq(r.poll(), None)
    mptest.eq(env.state()["stats"]["commands"].get("4a", 0), before + 1, "type B not tried")


def damaged_and_lost_frames_are_recovered(env):
    r = env.fresh()
    env.place()
    r.poll()
    env.fault("corrupt")
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00", "NACK brings the clean copy")
    mptest.eq(env.stat("nacks_from_host", 1), 1)
    env.fault("drop_ack")
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00", "response without ACK")
    env.fault("slow", ms=80)
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00", "slow ready within the timeout")
    env.fault("ignore")  # the poll command is lost: sent again
    mptest.true(r.poll() is not None)
    mptest.eq(len(env.apdus()), 3)


def failures_are_typed_and_the_next_command_works(env):
    r = env.fresh()
    env.place()
    r.poll()
    n0 = len(env.apdus())
    acks0 = env.state()["stats"]["acks_from_host"]
    env.fault("drop_response")
    mptest.raises(LinkTimeout, r.transceive, SELECT)
    mptest.eq(env.stat("acks_from_host", acks0 + 1), acks0 + 1, "cancelled with an ACK")
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00")
    env.fault("ignore")  # an InDataExchange is never sent twice
    mptest.raises(LinkTimeout, r.transceive, SELECT)
    mptest.eq(len(env.apdus()), n0 + 2)
    env.fault("error_frame")
    mptest.raises(ChipError, r.transceive, SELECT)
    env.fault("slow", ms=SLOWER_THAN_FAST_MS)
    mptest.raises(LinkTimeout, r.transceive, SELECT)  # the driver's ACK cancels the late answer
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00")
    env.fault("corrupt_always", count=5)  # every copy damaged: NACKs give up
    mptest.raises(ProtocolError, r.transceive, SELECT)
    env.call("pn532_clear_faults")
    mptest.true(r.poll() is not None)
    for name in ("garbage", "truncate", "corrupt"):
        # Damage on the wire: recovered by a NACK where the transport can tell, else a typed
        # error; either way the next exchange works.
        env.fault(name)
        try:
            mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00", name)
            what = "recovered"
        except LinkError as e:
            what = type(e).__name__
            mptest.true(r.poll() is not None, "poll after " + name)
        mptest.log("%s %s -> %s" % (env.name, name, what))
        mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00", "after " + name)
    mptest.true(log.find("pn532", log.WARNING))


def card_leaving_between_exchanges(env):
    r = env.fresh()
    env.place()
    r.poll()
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00")
    env.remove("c1")
    mptest.raises(CardGone, r.transceive, SELECT)
    mptest.eq(r.target, None)
    mptest.eq(r.poll(), None)
    env.place()
    mptest.true(r.poll() is not None)
    mptest.true(r.present())
    env.remove("c1")
    mptest.false(r.present())


def card_leaving_mid_chain(env):
    r = env.fresh(chunk=64)
    env.place()
    r.poll()
    env.fault("card_leave", after=1)  # during the second piece of the command
    mptest.raises(CardGone, r.transceive, b"\x80\xee\x00\x00\x96" + bytes(150))
    mptest.eq(env.apdus(), [], "the card never got the whole command")
    env.place()
    r.poll()
    env.call("pn532_config", max_resp=64)
    env.fault("card_leave", after=2)  # while the chip hands over a chained answer
    mptest.raises(CardGone, r.transceive, READ_256)
    mptest.eq(len(env.apdus()), 1, "it ran; the answer was lost")
    mptest.eq(r.poll(), None)


def second_card_appearing(env):
    r = env.fresh()
    env.place("c1", uid="01020304")
    t = r.poll()
    mptest.eq(t.uid_hex(), "01020304")
    r.transceive(SELECT)
    env.place("c2", uid="05060708")
    mptest.eq(r.transceive(READ_256)[-2:], b"\x90\x00")
    mptest.eq(len(env.apdus("c1")), 2)
    mptest.eq(env.apdus("c2"), [], "the newcomer is left alone")
    mptest.true(r.present())
    env.remove("c1")
    mptest.raises(CardGone, r.transceive, SELECT)
    mptest.eq(r.poll().uid_hex(), "05060708")
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00")


def blocked_poll_is_cancelled(env):
    r = env.fresh()
    r.command(pn532.CMD_RF_CONFIGURATION, b"\x05\xff\x01\xff")  # the chip's default: forever
    acks = env.state()["stats"]["acks_from_host"]
    mptest.raises(LinkTimeout, r.poll)
    mptest.eq(env.stat("acks_from_host", acks + 1), acks + 1)
    mptest.false(env.state()["pending_poll"], "ACK cancelled the waiting command")
    r.init()
    mptest.eq(r.poll(), None)


def mifare_card_is_not_iso_dep(env):
    r = env.fresh()
    env.place(sak=0x08, iso_dep=False)
    t = r.poll()
    mptest.eq((t.sak, t.iso_dep, t.ats), (0x08, False, b""))
    mptest.false(r.iso_dep)
    mptest.raises(CardGone, r.transceive, SELECT)


def measure_exchange_cost(env, r=None):
    """Bus transactions and bytes for: poll, then SELECT + READ BINARY 0x17 + GET BALANCE."""
    if r is None:
        r = env.fresh()
    env.place("t", profile="tunion_plain")
    env.call("pn532_reset_counters")
    b0 = env.bus()
    t = r.poll()
    mptest.true(t is not None and t.iso_dep)
    a = env.call("pn532_bus")
    b1 = env.bus()
    sel = r.transceive(SELECT)
    mptest.eq(sel[-2:], b"\x90\x00")
    mptest.true(b"\x9f\x0c" in sel, "0x15 file in the FCI")
    mptest.eq(r.transceive(b"\x00\xb0\x97\x00\x00")[-2:], b"\x90\x00")  # SFI 0x17
    mptest.eq(r.transceive(b"\x80\x5c\x00\x02\x04")[-2:], b"\x90\x00")  # GET BALANCE
    c = env.call("pn532_bus")
    b2 = env.bus()
    card = env.ctl.call("pn532_card", label="t")
    mptest.eq(card["violations"], [])
    mptest.log(
        "%s cost: poll %d transactions %d bytes; SELECT+READ 0x17+GET BALANCE %d transactions "
        "%d bytes (hub-side %s)"
        % (env.name, b1 - b0, a["bytes"], b2 - b1, c["bytes"] - a["bytes"], c)
    )
    return (b1 - b0, a["bytes"], b2 - b1, c["bytes"] - a["bytes"])


def bit_rate_from_the_ats(env):
    # InPSL to 424 kbit/s for a card whose ATS offers it (TA(1) b3), none for a 106-only one.
    r = env.fresh()
    env.place(uid="04112233", ats="0578b37002")
    t = r.poll()
    mptest.true(t is not None and t.iso_dep)
    st = env.state()
    mptest.eq(st["stats"]["commands"].get("4e"), 1)
    mptest.eq(st["rates"]["1"], {"chip": [2, 2], "card": [2, 2]})
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00")
    env.place("c2", uid="04445566", ats="0578807002")
    env.remove("c1")
    r.poll()
    mptest.eq(env.state()["stats"]["commands"].get("4e"), 1, "106-only card: no InPSL")
    r = env.make(max_kbps=212)
    env.remove()
    env.place("c3", uid="04778899", ats="0578b37002")
    r.poll()
    mptest.eq(env.state()["rates"]["1"]["chip"], [1, 1])
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00")


def bit_rate_failures(env):
    # A card that does not answer the PPS: status 01, both stay at 106, the card is kept. A card
    # that answers but does not switch: the next exchange is lost (a typed error), and the next
    # poll starts over at 106. A card offering 424 one way only gets the rate both ways offer.
    r = env.fresh()
    env.place(uid="04112233", ats="0578b37002")
    env.fault("psl_silent")
    t = r.poll()
    mptest.true(t is not None and t.iso_dep)
    mptest.eq((r.psl_refused, env.state()["rates"]), (1, {}))
    mptest.true(log.find("staying at 106", log.WARNING), "logged")
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00")
    env.fault("psl_no_switch")
    mptest.true(r.poll() is not None)
    mptest.raises(CardGone, r.transceive, SELECT)
    mptest.eq(env.state()["stats"]["rate_errors"], 1)
    mptest.true(r.poll() is not None)
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00")
    env.place("c2", uid="04445566", ats="0578b17002")  # DS 4 and 2, DR 2 only
    env.remove("c1")
    mptest.true(r.poll() is not None)
    mptest.eq(env.state()["rates"]["1"]["chip"], [1, 1])
    mptest.eq(r.transceive(SELECT)[-2:], b"\x90\x00")
