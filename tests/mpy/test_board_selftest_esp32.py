# mpy: server=tools.sim.esp32_bench heapsize=1m timeout=300
# The on-board self-test (tools/board/selftest.py) on each ESP32 board's own factory code and pin
# map, on the strict stand-ins of the ESP32 port (tests/mpy/esp32_machine.py as `machine`,
# esp32_module.py as `esp32`): partitions from the validator's tables, every part over the bus the
# board wires, and the findings a bench meets: a PN532 wired to the wrong bus, a dead PSAM, a
# missing RTC chip, a display that does not answer, a stock partition table.
import sys

import esp32_module
import esp32_rig
import mptest
from simlink import Control

esp32_rig.install()  # machine, esp32 and time: the stand-ins, before selftest is imported
sys.path.append(mptest.repo_root() + "/tools/board")

import selftest  # noqa: E402

CFG = {"modem": "sim7600", "apn": "cmnet"}


def _board(name, wiring=None, table=esp32_rig.TABLE_4MB, size=4 << 20, module="wroom32"):
    return esp32_rig.power_on(name, module, wiring, table, size)


def _run(board):
    r = selftest.Run(board, dict(CFG))
    fails = r.all()
    return r, fails, {name: (st, found, hint) for st, name, found, hint in r.lines}


def test_a_healthy_pn532_board_passes_with_its_partitions_and_a_card_probed():
    ctl = Control()
    ctl.call("bench_place", reader="pn532_i2c")
    r, fails, got = _run(_board("esp32_pn532_i2c"))
    mptest.eq(fails, 0, r.lines)
    mptest.eq(got["cpu"][:2], ("OK", "160 MHz"), "the port's default")
    mptest.eq(got["part.app"][:2], ("OK", "running from factory"))
    mptest.eq(got["part.littlefs"][:2], ("OK", "vfs, 1792 KiB"))
    mptest.eq(got["part.txlog"][:2], ("OK", "txlog at 0x3c0000, 256 KiB"))
    st, found, hint = got["part.blacklist"]
    mptest.eq((st, found), ("WARN", "no blist_a,blist_b partition"), "the 4 MB table has none")
    mptest.true(hint.startswith("16 MiB table only"), hint)
    mptest.true(got["reader"][1].startswith("PN532 firmware 1.6"), got["reader"][1])
    for name in ("psam.atr", "psam.pps", "psam.terminal", "rtc", "modem", "modem.sim"):
        mptest.eq(got[name][0], "OK", "%s: %s" % (name, got[name][1]))
    mptest.eq(got["psam.terminal"][1][:12], "000000000101")
    mptest.eq(got["card"][0], "OK")
    mptest.eq(got["card.balance"][0], "OK")
    card = ctl.call("bench_card", reader="pn532_i2c")
    mptest.eq((card["debits"], card["violations"]), ([], []), "read only: nothing debited")
    ctl.call("bench_remove", reader="pn532_i2c")


def test_the_16mb_table_shows_both_blacklist_slots():
    r, fails, got = _run(_board("esp32_pn532_i2c", table=esp32_rig.TABLE_16MB, size=16 << 20))
    mptest.eq(fails, 0, r.lines)
    st, found, _ = got["part.blacklist"]
    mptest.eq(st, "OK")
    mptest.eq(found, "blist_a at 0x380000, 5888 KiB; blist_b at 0x940000, 5888 KiB")


def test_an_rc522_board_reports_its_chip_version():
    r, fails, got = _run(_board("esp32_rc522_spi"))
    mptest.eq(fails, 0, r.lines)
    st, found, _ = got["reader"]
    mptest.eq(st, "OK")
    mptest.true(found.startswith("rc522 version "), found)


def test_a_pn532_on_the_wrong_bus_is_a_reader_finding_with_the_i2c_hint():
    # I2C1's pins go to the display's bus: nothing answers at the PN532's address.
    r, fails, got = _run(_board("esp32_pn532_i2c", {("i2c", 1): "i2c0"}))
    st, found, hint = got["reader"]
    mptest.eq(st, "FAIL")
    mptest.true(found.startswith("pn532 does not answer: "), found)
    mptest.eq(hint, selftest.HINT_I2C)
    mptest.eq(got["card"][0], "SKIP")
    mptest.eq(fails, 1, r.lines)
    mptest.eq(got["psam.terminal"][0], "OK", "the other parts are still checked")


def test_a_dead_psam_is_a_finding_and_the_rest_runs():
    # UART 2 reaches a line that only echoes: no ATR ever comes.
    r, fails, got = _run(_board("esp32_pn532_i2c", {("uart", 2): "echo"}))
    st, found, hint = got["psam.atr"]
    mptest.eq(st, "FAIL")
    mptest.true(found.startswith("no ATR: "), found)
    mptest.eq(hint, selftest.HINT_PSAM)
    mptest.true("psam.terminal" not in got)
    mptest.eq(fails, 1, r.lines)
    mptest.eq(got["modem"][0], "OK")


def test_a_missing_rtc_chip_and_display_are_findings():
    board = _board("esp32_pn532_i2c")
    board.RTC = {"chip": "pcf8563"}  # not on the bus (the hub's is a DS3231)
    board.DISPLAY = dict(board.DISPLAY, addr=0x3D)  # nothing at 0x3D
    r, fails, got = _run(board)
    st, found, hint = got["rtc"]
    mptest.eq(st, "FAIL")
    mptest.true(found.startswith("pcf8563 does not answer: OSError"), found)
    mptest.eq(hint, selftest.HINT_RTC)
    mptest.eq(got["display"][0], "FAIL")
    mptest.eq(fails, 2, r.lines)


def test_a_modem_on_a_uart_the_board_does_not_wire_is_a_finding():
    board = _board("esp32_pn532_i2c")
    board.MODEM = dict(board.MODEM, uart_id=0)  # UART0 is the REPL's on a classic ESP32
    r, fails, got = _run(board)
    st, found, hint = got["modem"]
    mptest.eq(st, "FAIL")
    mptest.true(found.startswith("not set up: "), found)
    mptest.eq(hint, selftest.HINT_MODEM)
    mptest.eq(fails, 1, r.lines)


def test_the_tap_bench_sells_test_fares_and_times_every_apdu():
    import purchase
    import tapbench

    ctl = Control()
    ctl.call("bench_place", reader="pn532_i2c")
    out = tapbench.run(_board("esp32_pn532_i2c"), dict(CFG), n=3, fare=1, now=849300000)
    mptest.true("error" not in out, out.get("error"))
    mptest.eq(out["reasons"], [purchase.OK] * 3)
    mptest.eq((out["board"], out["reader"]), ("esp32_pn532_i2c", "pn532_i2c"), "the model's name")
    card = ctl.call("bench_card", reader="pn532_i2c")
    mptest.eq(len(card["debits"]), 3, "three test fares sold")
    mptest.eq(card["violations"], [])
    for ins in ("A4", "50", "54"):
        mptest.eq(len(out["card_us"][ins]), 3, ins)
    mptest.true("70" in out["psam_us"], sorted(out["psam_us"]))
    mptest.eq(len(out["activation_us"]), 3)
    mptest.eq(len(out["tap_us"]), 3)
    mptest.eq(len(out["result_shown_us"]), 3)
    mptest.true(len(out["log_append_us"]) >= 3, "an intent and an outcome per sale")
    ctl.call("bench_remove", reader="pn532_i2c")


def test_the_tap_bench_without_a_card_says_so():
    import tapbench

    Control().call("bench_remove", reader="pn532_i2c")
    out = tapbench.run(_board("esp32_pn532_i2c"), dict(CFG), n=2, now=849300000)
    mptest.eq(out["error"], "no card on the reader at tap 1")
    mptest.eq(out["tap_us"], [])


# ---- the log's flash and the decision, timed on the board (tools/board/flashwin.py) ----------


_ERASED = 0  # the CRC-32 below of an erased sector, set at first use


def _txlog_bytes():
    """-> (the txlog partition, a CRC-32 per sector): its content without holding 256 KB."""
    from crc import crc32

    global _ERASED
    if not _ERASED:
        _ERASED = crc32(b"\xff" * 4096)
    part = esp32_module.Partition.find(esp32_module.Partition.TYPE_DATA, label="txlog")[0]
    buf = bytearray(4096)
    out = []
    for s in range(part.ioctl(4, 0)):
        part.readblocks(s, buf, 0)
        out.append(crc32(buf))
    return part, out


def _all_erased(sectors):
    return all(c == _ERASED for c in sectors)


def test_the_tap_bench_times_log_appends_on_erased_txlog_sectors_and_erases_them_again():
    import tapbench

    ctl = Control()
    ctl.call("bench_place", reader="pn532_i2c")
    board = _board("esp32_pn532_i2c")
    _part, before = _txlog_bytes()
    mptest.true(_all_erased(before), "a fresh table's log is erased")
    out = tapbench.run(board, dict(CFG), n=3, fare=1, now=849300000)
    ctl.call("bench_remove", reader="pn532_i2c")
    mptest.true("error" not in out, out.get("error"))
    flash = out["log_flash"]
    mptest.eq((flash["partition"], flash["sectors"]), ("txlog", 3), flash)
    mptest.eq(flash["first_sector"], len(before) - 3, "the highest erased run")
    mptest.true(len(out["log_append_us"]) >= 6, "an intent and an outcome per sale, on flash")
    mptest.eq(len(out["flash_erase_us"]), 3, "each sector given back erased")
    _part, after = _txlog_bytes()
    mptest.true(_all_erased(after), "nothing of the bench stays in the log's partition")
    mptest.eq(out["decide_skipped"], "the validator application is not loaded on the board")


def test_a_live_log_is_left_byte_for_byte_and_a_full_partition_means_a_ram_log():
    import tapbench
    import txlog

    ctl = Control()
    ctl.call("bench_place", reader="pn532_i2c")
    board = _board("esp32_pn532_i2c")
    part, _b = _txlog_bytes()
    live = txlog.TxLog(part)
    for i in range(5):
        live.append({"kind": 1, "time": 849300000 + i, "amount": 100 + i})
    n = part.ioctl(4, 0)
    # Only sectors 10, 11 and 12 of the rest stay erased: the bench must pick exactly them.
    for s in range(1, n):
        if s not in (10, 11, 12):
            part.writeblocks(s, b"\x00" * 64, 128)
    _p, before = _txlog_bytes()
    out = tapbench.run(board, dict(CFG), n=2, fare=1, now=849300000)
    mptest.true("error" not in out, out.get("error"))
    mptest.eq(out["log_flash"]["first_sector"], 10)
    _p, after = _txlog_bytes()
    mptest.true(before == after, "the validator's log and the rest of the partition unchanged")
    mptest.eq(txlog.TxLog(part).last_seq, 5, "the live log reopens as it was")
    # No three erased sectors in a row left: the appends go to a RAM log and the reason is said.
    part.writeblocks(11, b"\x00" * 64, 128)
    out = tapbench.run(board, dict(CFG), n=1, fare=1, now=849300100)
    ctl.call("bench_remove", reader="pn532_i2c")
    mptest.true("error" not in out, out.get("error"))
    mptest.true("no 3 erased sectors" in out["log_flash"]["skipped"], out["log_flash"])
    mptest.true(len(out["log_append_us"]) >= 2)
    mptest.eq(out["flash_erase_us"], [])


def test_a_bench_cut_by_a_power_loss_leaves_nothing_the_validators_log_takes_as_its_own():
    import flashwin
    import txlog

    _board("esp32_pn532_i2c")
    win, why = flashwin.find()
    mptest.true(win is not None, why)
    bench = txlog.TxLog(win, {"purchase_reserve": 4})
    for i in range(70):  # past a whole sector: a slot lands at a sector's slot 0 too
        bench.append({"kind": 1, "time": 849300000 + i, "amount": 1})
    part, cut = _txlog_bytes()
    mptest.false(_all_erased(cut), "the cut left the bench's records on the flash")
    log = txlog.TxLog(part)  # the validator's boot after the cut
    mptest.eq((log.last_seq, log.open_intents()), (0, []), "no record of the bench is counted")
    for i in range(200):  # the validator writes over the bench's sectors, erasing them first
        log.append({"kind": 1, "time": 849400000 + i, "amount": 2})
        log.maintain()
    mptest.eq(log.last_seq, 200)
    mptest.eq(txlog.TxLog(part).last_seq, 200, "its records read back after a reboot")


def test_the_decision_runs_with_the_boards_parameters_and_the_sale_stays_the_test_fare():
    import cardlists
    import decide
    import fare
    import tapbench

    class RamBlocks:
        def __init__(self, data):
            self.data = data

        def readblocks(self, num, buf, offset=0):
            at = num * cardlists.BLOCK + offset
            buf[:] = self.data[at : at + len(buf)]

    class Params:
        whitelist = None
        blacklist = cardlists.Blacklist(RamBlocks(cardlists.blacklist_bytes([1234567890123456])))
        fares = fare.from_config(
            {
                "settings": {"tz_s": 28800},
                "fares": {
                    "card_types": {str(t): {"name": "t%d" % t} for t in range(1, 8)},
                    "routes": {"101": {"mode": "flat", "fare": 200}},
                },
            }
        )

    class Parts:  # nothing running: the bench builds the reader and the PSAM link itself
        pass

    class App:  # what the bench uses of a loaded Validator (firmware/app.py)
        decider = decide.Decider(Params(), 101, 3)
        parts = Parts()

        def _feed(self):
            pass

    ctl = Control()
    ctl.call("bench_place", reader="pn532_i2c")
    out = tapbench.run(_board("esp32_pn532_i2c"), dict(CFG), n=2, fare=1, now=849300000, app=App())
    card = ctl.call("bench_card", reader="pn532_i2c")
    ctl.call("bench_remove", reader="pn532_i2c")
    mptest.true("error" not in out, out.get("error"))
    mptest.eq(len(out["decide_us"]), 2)
    mptest.eq(out["decide_verdicts"], ["fare 200", "fare 200"], "the route's real fare decided")
    mptest.eq([d["amount"] for d in card["debits"]], [1, 1], "the test fare sold, not the 2 yuan")
    mptest.true("decide_skipped" not in out)
