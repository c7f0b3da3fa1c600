# mpy: server=tools.sim.esp32_bench heapsize=1m timeout=300
# The on-board self-test (tools/board/selftest.py, `make board-check`) on the simulation board
# (boards/unix_sim) against the simulated chips: every line it prints, a T-Union card probed read
# only (the card's log of commands shows the SELECT and reads, no debit), and a missing RTC, a
# dead PSAM and a silent reader reported as findings while the other checks still run.
import sys

import mptest
from simlink import Control

sys.path.append(mptest.repo_root() + "/tools/board")

import selftest  # noqa: E402

CFG = {"modem": "sim7600", "apn": "cmnet"}


def _board():
    if "board" in sys.modules:
        del sys.modules["board"]
    import board

    # tools.sim.esp32_bench clocks its PSAM at the ESP32 boards' 4 MHz (boards/esp32_common.py)
    board.PSAM["clk_hz"] = 4000000
    return board


def _run(board=None):
    r = selftest.Run(board or _board(), dict(CFG))
    fails = r.all()
    return r, fails, {name: (st, found) for st, name, found, _hint in r.lines}


def test_a_healthy_board_passes_every_check():
    Control().call("bench_remove", reader="pn532_i2c")
    r, fails, got = _run()
    mptest.eq(fails, 0, r.lines)
    mptest.eq(got["micropython"][0], "OK")
    mptest.eq(got["partitions"][0], "SKIP", "no esp32 module on the unix port")
    mptest.eq(got["reader"][0], "OK")
    mptest.true(got["reader"][1].startswith("PN532 firmware 1.6"), got["reader"][1])
    mptest.eq(got["psam.atr"][0], "OK")
    mptest.eq(got["psam.pps"][0], "OK")
    mptest.eq(got["psam.terminal"][0], "OK")
    mptest.eq(got["rtc"][0], "OK")
    mptest.true(got["rtc"][1].startswith("ds3231: "), got["rtc"][1])
    for name in ("modem", "modem.sim", "modem.network", "modem.time"):
        mptest.eq(got[name][0], "OK", "%s: %s" % (name, got[name][1]))
    mptest.eq(got["display"][0], "OK")
    mptest.eq(got["feedback"][0], "OK")
    mptest.eq(got["card"], ("WARN", "no card on the reader"))


def test_a_card_is_probed_read_only():
    ctl = Control()
    ctl.call("bench_place", reader="pn532_i2c")
    r, fails, got = _run()
    mptest.eq(fails, 0, r.lines)
    mptest.eq(got["card"][0], "OK")
    mptest.true(got["card"][1].startswith("T-Union A000000632010105, card "), got["card"][1])
    mptest.eq(got["card.balance"][0], "OK")
    mptest.eq(got["card.validity"][0], "OK")
    mptest.eq(got["card.issuer"][0], "WARN", "no application running: no whitelist")
    card = ctl.call("bench_card", reader="pn532_i2c")
    mptest.eq(card["debits"], [], "nothing debited")
    mptest.eq(card["violations"], [])
    ctl.call("bench_remove", reader="pn532_i2c")


def test_the_modem_says_who_it_is_and_which_sim_it_holds():
    r, fails, got = _run()
    mptest.true("SIMCOM_SIM7600E-H" in got["modem"][1], got["modem"][1])
    mptest.true("ICCID 89860012345678901234" in got["modem.sim"][1], got["modem.sim"][1])


def test_a_missing_rtc_chip_is_a_finding_and_the_other_checks_run():
    board = _board()
    board.RTC = {"chip": "pcf8563", "bus": "i2c0"}  # the hub's RTC is a DS3231: no chip at 0x51
    r, fails, got = _run(board)
    mptest.eq(fails, 1, r.lines)
    st, found = got["rtc"]
    mptest.eq(st, "FAIL")
    mptest.true(found.startswith("pcf8563 does not answer: OSError"), found)
    mptest.eq(got["reader"][0], "OK")
    mptest.eq(got["display"][0], "OK")


def test_a_board_without_rtc_skips_it():
    board = _board()
    board.RTC = None
    r, fails, got = _run(board)
    mptest.eq(fails, 0, r.lines)
    mptest.eq(got["rtc"][0], "SKIP")


def test_a_reader_wired_to_the_wrong_bus_says_what_to_check():
    board = _board()

    def wrong():  # the PN532 looked for on the display's bus: nothing answers at 0x24
        import pn532
        from pn532_i2c import PN532I2C
        from sim_i2c import SimI2C

        reader = pn532.PN532(PN532I2C(SimI2C("i2c0")))
        reader.init()
        return reader

    board.make_reader = wrong
    r, fails, got = _run(board)
    st, found = got["reader"]
    mptest.eq(st, "FAIL")
    mptest.true(found.startswith("pn532 does not answer: "), found)
    hint = [ln[3] for ln in r.lines if ln[1] == "reader"]
    mptest.eq(hint, [selftest.HINT_I2C], "what to check: the I2C wiring, pull-ups, power")
    mptest.eq(got["card"][0], "SKIP", "no reader, no card probe")
    mptest.eq(fails, 1, r.lines)


def test_a_dead_psam_is_reported_and_nothing_else_fails():
    board = _board()
    board.PSAM = dict(board.PSAM, uart_id="echo")  # the I/O line answers nothing but the echo
    r, fails, got = _run(board)
    st, found = got["psam.atr"]
    mptest.eq(st, "FAIL")
    mptest.true(found.startswith("no ATR: "), found)
    mptest.true("psam.terminal" not in got)
    mptest.eq(fails, 1, r.lines)


def test_a_running_applications_parts_are_used_its_watchdog_fed_its_modem_left_open():
    board = _board()

    class Parts:
        pass

    class App:
        params = None
        feeds = 0

        def _feed(self):
            App.feeds += 1

    app = App()
    app.parts = Parts()
    app.parts.reader = board.make_reader()
    app.parts.transport = None  # down in the application: the check builds its own
    r = selftest.Run(board, dict(CFG), app)
    mptest.eq(r.all(), 0, r.lines)
    mptest.true(App.feeds >= len(r.lines), "fed at every line")
    mptest.true("reader" not in r.own, "the application's reader was used")
    mptest.true("transport" in r.own)
    mptest.eq(r.lines[-1][:2], ("OK", "application"))
