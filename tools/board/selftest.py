# On-board self-test of a wired validator (issue 21): `make board-check PORT=...` runs this file on
# the board with `mpremote run` (tools/board_check.py); the unix port runs it against the
# simulation board in tests/mpy/test_board_selftest.py. Read only: nothing is written to the
# PSAM, the card or the flash; no command goes to a card application other than T-Union's.
#
# One line per check, for the host tool to parse:
#   @@CHECK <status>|<name>|<what was found>|<what to check>
# status: OK, FAIL (a part that should work does not), WARN (a finding: no card on the reader,
# no parameters), SKIP (not on this board). A missing part is a finding, never a crash: every
# check runs inside its own try, and the run ends with "@@DONE <n fails>".
import gc
import sys

MARK = "@@CHECK "
OK = "OK"
FAIL = "FAIL"
WARN = "WARN"
SKIP = "SKIP"

HINT_I2C = "wiring SDA/SCL, pull-ups, 3.3 V power, the chip's I2C mode switches"
HINT_SPI = "wiring SCK/MOSI/MISO/CS, 3.3 V power, the chip's SPI mode switches"
HINT_UART = "wiring TX->RX and RX->TX, common ground, 3.3 V levels, baud rate"
HINT_PSAM = (
    "PSAM seated, I/O line (TX/RX joined through the resistor), CLK and RST pins, 3.3/5 V VCC"
)
HINT_MODEM = (
    "power (the SIM7600 draws 2 A bursts: a 5 V/2 A supply, a big capacitor), PWRKEY pin, "
    "TX/RX crossed, level shifting of 1.8 V UART lines"
)
HINT_SIM = "SIM seated, PIN off, SIM holder contacts"
HINT_RTC = "RTC on the display's I2C bus (SDA/SCL, pull-ups), its backup cell"


def line(status, name, found, hint=""):
    # "|" separates the fields: keep it out of what the parts say
    print(MARK + "|".join((status, name, str(found).replace("|", "/"), hint.replace("|", "/"))))
    return status


def _err(e):
    return "%s: %s" % (type(e).__name__, e)


def _hint_for_reader(r):
    if r.get("chip") == "rc522" or r.get("bus") == "spi":
        return HINT_SPI
    if r.get("bus") == "i2c":
        return HINT_I2C
    return HINT_UART


class Run:
    """The checks of one board. board: the board module (board.py); cfg: the configuration
    (config.json) or a minimal one; app: the running Validator, or None."""

    def __init__(self, board, cfg, app=None):
        self.board = board
        self.cfg = cfg
        self.app = app
        self.fails = 0
        self.lines = []
        self.feed = app._feed if app is not None else (lambda: None)
        self.sim = getattr(board, "NAME", "") == "unix_sim"
        self.own = []  # attrs of the parts this check built (the application's stay open)

    def say(self, status, name, found, hint=""):
        self.feed()
        if status == FAIL:
            self.fails += 1
        self.lines.append((status, name, str(found), hint))
        return line(status, name, found, hint)

    def part(self, attr, make):
        """The running application's part, else a new one: (part, None) or (None, error)."""
        if self.app is not None:
            got = getattr(self.app.parts, attr, None)
            if got is not None:
                return got, None
        try:
            got = make()
        except Exception as e:  # noqa: BLE001 - any driver's start-up error is a finding
            return None, e
        self.own.append(attr)
        return got, None

    def guard(self, name, fn, hint=""):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a check that breaks is reported, the rest run
            self.say(FAIL, name, "check failed: " + _err(e), hint)

    # ---- the board ------------------------------------------------------------------------
    def system(self):
        impl = sys.implementation
        ver = ".".join(str(v) for v in impl.version[:3])
        words = [getattr(impl, "_build", "") or ""]  # the board name of the build (v1.25+)
        try:
            import os

            u = os.uname()
            words += [u.version, u.machine]
        except (ImportError, AttributeError):
            words.append(sys.platform)
        self.say(OK, "micropython", "v%s %s" % (ver, ", ".join(w for w in words if w)))
        try:
            import machine

            mhz = machine.freq()
            mhz = mhz[0] if isinstance(mhz, tuple) else mhz
            st = OK if mhz >= 160000000 else WARN
            self.say(st, "cpu", "%d MHz" % (mhz // 1000000), "" if st == OK else "machine.freq")
        except (ImportError, AttributeError):
            self.say(SKIP, "cpu", "no machine.freq on this port")
        gc.collect()
        free = gc.mem_free()
        st = OK if free >= 40000 else WARN
        self.say(st, "heap", "%d bytes free" % free, "" if st == OK else "firmware without PSRAM?")

    def partitions(self):
        try:
            import esp32
        except ImportError:
            self.say(SKIP, "partitions", "no esp32 module (not an ESP32 port)")
            return
        P = esp32.Partition
        try:
            running = P(P.RUNNING).info()[4]
        except (AttributeError, OSError, ValueError):
            running = "?"
        self.say(OK, "part.app", "running from %s" % running)

        def one(name, labels, hint, need=True):
            found = []
            for label in labels:
                f = P.find(P.TYPE_DATA, label=label)
                if f:
                    info = f[0].info()
                    found.append("%s at 0x%x, %d KiB" % (label, info[2], info[3] // 1024))
            if len(found) == len(labels):
                return self.say(OK, name, "; ".join(found))
            miss = ",".join(lb for lb in labels if not P.find(P.TYPE_DATA, label=lb))
            return self.say(FAIL if need else WARN, name, "no %s partition" % miss, hint)

        fs = P.find(P.TYPE_DATA, label="vfs") or P.find(P.TYPE_DATA, label="ffat")
        if fs:
            info = fs[0].info()
            self.say(OK, "part.littlefs", "%s, %d KiB" % (info[4], info[3] // 1024))
        else:
            self.say(FAIL, "part.littlefs", "no vfs partition", "flash the validator's firmware")
        one("part.txlog", ("txlog",), "flash the validator's firmware (its partition table)")
        one(
            "part.blacklist",
            ("blist_a", "blist_b"),
            "16 MiB table only: the list stays in the bundle file",
            need=False,
        )

    # ---- parts ----------------------------------------------------------------------------
    def _make(self, what):
        b = self.board
        if self.sim:
            return {
                "reader": b.make_reader,
                "psam": b.make_psam_link,
                "modem": lambda: b.make_transport(self.cfg),
                "display": b.make_display,
                "feedback": b.make_feedback,
                "rtc": b.make_rtc_chip,
            }[what]
        import esp32_common as c

        if what == "reader":
            return lambda: c.make_reader(b.READER)
        if what == "psam":
            import machine
            from psam_link import from_board

            return lambda: from_board(b.PSAM, machine.UART, machine.Pin, machine.PWM)
        if what == "modem":
            return lambda: c.make_transport(b.MODEM, self.cfg)
        if what == "display":
            return lambda: c.make_display(b.DISPLAY)
        if what == "feedback":
            return lambda: c.make_feedback(b.FEEDBACK)
        return lambda: c.make_rtc(b.RTC, b.DISPLAY)

    def reader(self):
        r = getattr(self.board, "READER", {})
        hint = _hint_for_reader(r)
        reader, e = self.part("reader", self._make("reader"))
        if reader is None:
            self.say(FAIL, "reader", "%s does not answer: %s" % (r.get("chip"), _err(e)), hint)
            return None
        if getattr(reader, "version", 0) is None:  # the RC522 starts at its first poll
            try:
                reader.init()
            except Exception as e:  # noqa: BLE001 - ChipError: the version register reads 00/FF
                self.say(FAIL, "reader", "%s does not answer: %s" % (r.get("chip"), _err(e)), hint)
                return None
        fw = getattr(reader, "firmware", None)
        if fw:
            self.say(OK, "reader", "PN532 firmware %d.%d, support %02x" % fw[1:])
        else:
            ver = getattr(reader, "version", None)
            self.say(OK, "reader", "%s%s" % (r.get("chip"), " version %02x" % ver if ver else ""))
        return reader

    def psam(self):
        link, e = self.part("psam_link", self._make("psam"))
        if link is None:
            self.say(FAIL, "psam.link", "PSAM slot not set up: " + _err(e), HINT_PSAM)
            return None
        try:
            atr = link.reset()
        except Exception as e:  # noqa: BLE001 - LinkTimeout, AtrError, ChipError
            self.say(FAIL, "psam.atr", "no ATR: " + _err(e), HINT_PSAM)
            return None
        raw = getattr(atr, "raw", None) or link.atr
        self.say(OK, "psam.atr", _hex(raw) if isinstance(raw, (bytes, bytearray)) else str(raw))
        pps = link.pps_result
        self.say(
            WARN if pps == "failed" else OK,
            "psam.pps",
            "%s, %d baud, clock %d Hz" % (pps, link.baud, link.clk_hz),
            "the CLK pin's frequency, the UART clock" if pps == "failed" else "",
        )
        from psam_app import PsamApp

        app = PsamApp(link)
        try:
            tid = app.boot()  # READ BINARY and SELECT only
        except Exception as e:  # noqa: BLE001 - PsamError or a link error
            self.say(FAIL, "psam.terminal", _err(e), "a PSAM of this system (T-Union purchase)")
            return None
        self.say(OK, "psam.terminal", "%s, key index %d" % (_hex(tid), app.key_index))
        return app

    def rtc(self):
        r = getattr(self.board, "RTC", None)
        if not r:
            self.say(SKIP, "rtc", "the board has no RTC chip (board.RTC = None)")
            return
        try:
            import rtcchip  # noqa: F401
        except ImportError:
            self.say(WARN, "rtc", "no RTC driver in this firmware", "deploy a current build")
            return
        chip, e = self.part("rtc_chip", self._make("rtc"))
        if chip is None:
            self.say(FAIL, "rtc", "%s does not answer: %s" % (r["chip"], _err(e)), HINT_RTC)
            return
        secs, lost = chip.read()
        import timeutil

        when = "%04d-%02d-%02d %02d:%02d:%02d" % timeutil.from_seconds(secs)
        if lost:
            self.say(
                WARN,
                "rtc",
                "%s: lost power, time %s untrusted" % (r["chip"], when),
                "its backup cell; the clock is set again from the network",
            )
        else:
            self.say(OK, "rtc", "%s: %s UTC, kept its time" % (r["chip"], when))

    def modem(self):
        if self.cfg.get("modem") == "socket":
            self.say(SKIP, "modem", "configured for a socket link (no modem)")
            return
        t, e = self.part("transport", self._make("modem"))
        if t is None:
            self.say(FAIL, "modem", "not set up: " + _err(e), HINT_MODEM)
            return
        import asyncio

        asyncio.run(self._modem(t))

    async def _modem(self, t):
        if not t.ready:
            t.reg_timeout_ms = min(t.reg_timeout_ms, 30000)
            try:
                await t.start()
            except Exception as e:  # noqa: BLE001 - NetworkDown, AtError, timeouts
                self.feed()
                st = t.status()
                msg = _err(e)
                sim = "SIM" in msg
                self.say(FAIL, "modem", msg, HINT_SIM if sim else HINT_MODEM)
                if not sim and st["registration"]:
                    self.say(WARN, "modem.network", "registration %s" % st["registration"])
                return
        self.feed()
        ident = []
        for cmd in ("AT+CGMI", "AT+CGMM", "AT+CGMR"):
            ident.append(await _at_text(t, cmd))
        self.say(OK, "modem", " ".join(x for x in ident if x) or "answers AT (no identity)")
        imei = await _at_text(t, "AT+CGSN")
        ccid = await _at_text(t, "AT+CICCID") or await _at_text(t, "AT+QCCID")
        self.say(
            OK, "modem.sim", "ready%s%s" % (ccid and ", ICCID " + ccid, imei and ", IMEI " + imei)
        )
        st = t.status()
        dbm = st["rssi_dbm"]
        weak = dbm is None or dbm < -105
        self.say(
            WARN if weak else OK,
            "modem.signal",
            "%s dBm" % dbm,
            "antenna connected, position" if weak else "",
        )
        self.say(OK, "modem.network", "%s, ip %s" % (st["registration"], st["ip"]))
        nt = st["net_time"]
        if nt:
            import timeutil

            self.say(
                OK, "modem.time", "%04d-%02d-%02d %02d:%02d:%02d UTC" % timeutil.from_seconds(nt)
            )
        else:
            self.say(
                WARN,
                "modem.time",
                "the network gave no time",
                "NITZ comes at registration: power the modem off and on, try again",
            )
        if "transport" not in self.own:
            return
        try:
            await t.close()
        except Exception:  # noqa: BLE001, S110 - closing is best effort
            pass

    def display(self):
        d, e = self.part("display", self._make("display"))
        if d is None:
            self.say(
                FAIL, "display", "SSD1306 not found%s" % (e and ": " + _err(e) or ""), HINT_I2C
            )
            return
        o = d.oled
        o.fill(0)
        o.rect(0, 0, d.width, d.height, 1)
        for x in range(0, d.width, 8):
            o.fill_rect(x, 8 + (x // 8 % 2) * 8, 4, 4, 1)
        o.text("SELFTEST", 4, 40, 1)
        o.show()
        self.say(OK, "display", "test pattern shown: a frame, a checker row, SELFTEST (look)")

    def feedback(self):
        f, e = self.part("feedback", self._make("feedback"))
        if f is None:
            self.say(FAIL, "feedback", _err(e), "LED and buzzer pins")
            return
        import time

        for pin in (f.green, f.red):
            pin.value(1)
            time.sleep_ms(300)
            pin.value(0)
        f.buzzer.freq(2700)
        f.buzzer.duty_u16(32768)
        time.sleep_ms(150)
        f.buzzer.duty_u16(0)
        self.say(OK, "feedback", "green, red LED lit 0.3 s each, one beep (look, listen)")

    def card(self, reader):
        if reader is None:
            self.say(SKIP, "card", "no reader")
            return
        target = reader.poll()
        if target is None:
            self.say(WARN, "card", "no card on the reader", "place a T-Union card for the probe")
            return
        try:
            self._probe(reader, target)
        finally:
            try:
                reader.release()
            except Exception:  # noqa: BLE001, S110 - the card may have left
                pass

    def _probe(self, reader, target):
        import tunion
        from apdu import sw_of

        if not getattr(target, "iso_dep", False):
            self.say(WARN, "card", "card is not ISO 14443-4 (not a T-Union card)")
            return
        card = tunion.Card(reader)
        resp = None
        aid = None
        for name in tunion.DEFAULT_AIDS:  # SELECT of the transit application only
            resp = card.select_answer(name)
            if sw_of(resp) == 0x9000:
                aid = name
                break
        if aid is None:
            self.say(WARN, "card", "no T-Union application (SELECT: %04X)" % sw_of(resp))
            return
        at = tunion.fci_15(resp, len(resp) - 2, aid)
        if at < 0:
            resp = card.read_answer(tunion.SFI_15, tunion.LEN_15)
            at = 0
        info = tunion.parse_15(resp, tunion.new_info(), at)
        no = tunion.card_number(info["card_no"])
        self.say(OK, "card", "T-Union %s, card %s" % (_hex(aid), no))
        bal = card.balance(0x00)  # GET BALANCE: read only
        self.say(OK, "card.balance", "%d.%02d yuan" % (bal // 100, bal % 100))
        st = OK if info["enabled"] == 1 else WARN
        self.say(
            st,
            "card.validity",
            "%d to %d, enabled %02x" % (info["start"], info["expiry"], info["enabled"]),
        )
        wl = None
        if self.app is not None and self.app.params is not None:
            wl = getattr(self.app.params, "whitelist", None)
        if wl is None:
            self.say(
                WARN,
                "card.issuer",
                "issuer %s: no whitelist loaded" % _hex(info["issuer"]),
                "the verdict needs the application running with its parameters (not safe mode)",
            )
            return
        import cardlists

        code, local = wl.check(info["issuer"], info["city"], info.get("interconnect", 0))
        self.say(
            OK if code == cardlists.OK else WARN,
            "card.issuer",
            "issuer %s: %s%s" % (_hex(info["issuer"]), code, ", local" if local else ""),
        )

    def all(self):
        self.guard("system", self.system)
        self.guard("partitions", self.partitions)
        rd = [None]

        def reader():
            rd[0] = self.reader()

        self.guard("reader", reader, _hint_for_reader(getattr(self.board, "READER", {})))
        self.guard("psam", self.psam, HINT_PSAM)
        self.guard("rtc", self.rtc, HINT_RTC)
        self.guard("modem", self.modem, HINT_MODEM)
        self.guard("display", self.display, HINT_I2C)
        self.guard("feedback", self.feedback)
        self.guard("card", lambda: self.card(rd[0]), "hold the card still on the antenna")
        if self.app is not None:
            # The PSAM was reset and the card field used under the application's feet.
            self.say(OK, "application", "stopped for this check: reset the board to sell again")
        print("@@DONE %d" % self.fails)
        return self.fails


async def _at_text(t, cmd):
    """The first answer line of an AT query, or "" when the modem refuses it."""
    try:
        lines, _ = await t.at.command(cmd, 1000)
    except Exception:  # noqa: BLE001 - AtError or a timeout: the identity is optional
        return ""
    for ln in lines:
        s = ln.decode() if isinstance(ln, (bytes, bytearray)) else str(ln)
        s = s.strip()
        if s and s != "OK":
            return s.split(":", 1)[-1].strip()
    return ""


def _hex(b):
    return "".join("%02X" % x for x in b)


def _config(board):
    import json

    try:
        with open(board.CONFIG_PATH) as f:
            cfg = json.load(f)
    except (OSError, ValueError, AttributeError):
        cfg = {}
    cfg.setdefault("modem", "sim7600")
    cfg.setdefault("apn", "")
    return cfg


def main(board=None, cfg=None):
    if board is None:
        import board  # noqa: F811 - the board's own pin map
    running = None
    try:
        import app

        running = app.current()
    except Exception:  # noqa: BLE001, S110 - no application on this board yet
        pass
    return Run(board, cfg if cfg is not None else _config(board), running).all()


if __name__ == "__main__":
    main()
