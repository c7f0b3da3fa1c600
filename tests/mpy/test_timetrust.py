# mpy: heapsize=256k timeout=60
# The time-trust rules (firmware/timetrust.py) and the clock that applies them (firmware/clock.py):
# ranked sources, a far step held until a second source agrees, the back office's confirmation,
# the untrusted start on the last known time, the RTC chip read at start-up and written back,
# RTC memory across resets. Plain functions stand in for the chip and the board's RTC here; the
# drivers against their simulators are tests/mpy/test_rtcchip.py.
import clock
import log
import mptest
import timetrust as tt
import timeutil

T = timeutil.to_seconds(2026, 11, 30, 6, 0, 0)  # a Monday morning
DAY = 86400
YEAR = 365 * DAY


class Board:
    """The ESP32's own RTC: restarts at 0 after a power cut, written by the clock."""

    def __init__(self, t=0):
        self.t = t
        self.writes = []
        self.memory = b""

    def rtc(self):
        return self.t

    def set_rtc(self, t):
        self.writes.append(t)
        self.t = t

    def mem(self, data=None):
        if data is None:
            return self.memory
        self.memory = bytes(data)
        return None


class Chip:
    def __init__(self, t, lost=False, fail=None):
        self.t = t
        self.lost = lost
        self.fail = fail
        self.writes = []

    def read(self):
        if self.fail:
            raise self.fail
        return self.t, self.lost

    def write(self, t):
        if self.fail:
            raise self.fail
        self.writes.append(t)
        self.t = t
        self.lost = False


def _clock(board, floor=0, rules=None):
    c = clock.Clock(board.rtc, floor=floor, set_rtc=board.set_rtc, rules=rules)
    c.mem = board.mem
    return c


def setup():
    log.set_level(log.INFO, echo=False)
    log.clear()


def test_implausible_times_are_refused_by_every_source():
    tr = tt.Trust()
    for t in (0, tt.MIN_VALID - 1, tt.MAX_VALID, -5):
        for src in ("rtc", "network", "backoffice"):
            mptest.eq(tr.judge(T, t, src, 0)[0], tt.REFUSE)


def test_a_clock_that_never_knew_the_time_takes_the_first_plausible_source():
    tr = tt.Trust()
    mptest.eq(tr.judge(0, T, "network", 10)[:2], (tt.ACCEPT, "first known time"))


def test_untrusted_window_forward_weeks_not_backward_nor_years():
    tr = tt.Trust()
    mptest.eq(tr.judge(T, T + 30 * DAY, "network", 0)[0], tt.ACCEPT, "parked for a month")
    mptest.eq(tr.judge(T, T - 600, "network", 0)[0], tt.ACCEPT, "the last known time ran ahead")
    mptest.eq(tr.judge(T, T - DAY, "network", 0)[0], tt.HOLD, "a day behind the last known time")
    mptest.eq(tr.judge(T, T + 10 * YEAR, "network", 0)[0], tt.HOLD, "ten years ahead")


def test_a_trusted_clock_follows_small_steps_from_an_equal_or_higher_source_only():
    tr = tt.Trust()
    tr.adopt("backoffice", 100)
    mptest.eq(tr.judge(T, T + 30, "backoffice", 200)[0], tt.ACCEPT)
    mptest.eq(tr.judge(T, T + 30, "network", 200)[0], tt.AGREE, "weaker: agrees, no change")
    stale = 100 + tt.DEFAULTS["stale_s"]
    mptest.eq(tr.judge(T, T + 30, "network", stale)[0], tt.ACCEPT, "the setting is stale")
    mptest.eq(tr.judge(T, T + 3600, "network", 200)[0], tt.HOLD, "an hour needs agreement")
    mptest.eq(tr.judge(T, T + 3600, "backoffice", 200)[0], tt.ACCEPT, "the back office: a day")
    mptest.eq(tr.judge(T, T + 2 * DAY, "backoffice", 200)[0], tt.HOLD)


def test_network_years_off_is_held_and_never_adopted_alone():
    tr = tt.Trust()
    tr.adopt("rtc", 0)
    for mono in (0, 3600, 7200, 90000):
        mptest.eq(tr.judge(T + mono, T + mono + 10 * YEAR, "network", mono)[0], tt.HOLD)
    # The back office agrees with the estimate, not with the network: no agreement.
    mptest.eq(tr.judge(T + 90000, T + 90010, "backoffice", 90000)[0], tt.ACCEPT)


def test_two_sources_that_agree_move_the_clock():
    tr = tt.Trust()
    tr.adopt("rtc", 0)  # the chip was 2 days off without its flag
    mptest.eq(tr.judge(T, T + 2 * DAY, "backoffice", 100)[0], tt.HOLD)
    verdict, why, src = tr.judge(T + 50, T + 2 * DAY + 50 + 30, "network", 150)
    mptest.eq((verdict, src), (tt.ACCEPT, "agreed"), why)
    mptest.true("agrees" in why)
    # Outside agree_s they do not agree.
    tr = tt.Trust()
    tr.adopt("rtc", 0)
    tr.judge(T, T + 2 * DAY, "backoffice", 100)
    mptest.eq(tr.judge(T, T + 2 * DAY + 500, "network", 100)[0], tt.HOLD)


def test_the_back_office_confirms_itself_after_confirm_s_but_never_by_years():
    tr = tt.Trust()
    tr.adopt("rtc", 0)
    mptest.eq(tr.judge(T, T + 3 * DAY, "backoffice", 100)[0], tt.HOLD)
    mptest.eq(tr.judge(T + 60, T + 3 * DAY + 60, "backoffice", 160)[0], tt.HOLD, "too soon")
    verdict, why, src = tr.judge(T + 700, T + 3 * DAY + 700, "backoffice", 800)
    mptest.eq((verdict, src), (tt.ACCEPT, "agreed"), why)
    tr = tt.Trust()
    tr.adopt("rtc", 0)
    tr.judge(T, T + 3 * YEAR, "backoffice", 100)
    mptest.eq(tr.judge(T + 700, T + 3 * YEAR + 700, "backoffice", 800)[0], tt.HOLD)
    mptest.eq(tr.judge(T + 700, T + 3 * YEAR + 700, "network", 800)[0], tt.ACCEPT, "two agree")
    # ...but the network is not "the back office twice": the same network never confirms.
    tr = tt.Trust()
    tr.adopt("rtc", 0)
    tr.judge(T, T + 7200, "network", 100)
    mptest.eq(tr.judge(T + 900, T + 8100, "network", 1000)[0], tt.HOLD)


def test_rules_come_from_the_configuration():
    r = tt.rules_from({"clock_max_step_s": 60, "clock_forward_s": 3600, "clock_agree_s": "x"})
    mptest.eq((r["max_step_s"], r["forward_s"], r["agree_s"]), (60, 3600, 120))
    mptest.eq(tt.code("backoffice"), 5)
    mptest.eq(tt.code("martian"), 0)


def test_start_with_a_good_chip_is_trusted_and_writes_the_board_rtc():
    b = Board(0)  # power-up: the ESP32 reads 2000-01-01
    c = _clock(b)
    chip = Chip(T)
    mptest.eq(c.start(last_known=T - 3600, chip=chip), "rtc")
    mptest.true(c.trusted)
    mptest.eq(c.now(), T)
    mptest.eq(b.writes[-1], T, "machine.RTC in step")
    mptest.eq(chip.writes, [], "nothing written back to the chip it came from")
    b.t += 10
    mptest.eq(c.now(), T + 10)
    mptest.eq(c.mono(), 10, "the board's own count since the start")
    mptest.eq(c.status()["chip"], "ok")


def test_start_with_a_chip_that_lost_power_runs_untrusted_on_the_last_known_time():
    b = Board(0)
    c = _clock(b, floor=T - 7200)
    chip = Chip(0, lost=True)
    mptest.eq(c.start(last_known=T - 600, chip=chip), "last_known")
    mptest.false(c.trusted)
    mptest.eq(c.now(), T - 600)
    b.t += 300
    mptest.eq(c.now(), T - 300, "the board's RTC vouches for the time since the start")
    mptest.eq(c.status()["chip"], "lost power")
    mptest.true(log.find("lost power"))
    # Coverage an hour later: the back office's time is within the window: adopted, written.
    mptest.eq(c.set(T + 10 * YEAR, "network"), None, "a network ten years off is held")
    b.t += 3600
    step = c.set(T + 3600 + 120, "backoffice")
    mptest.eq(step, 420)
    mptest.true(c.trusted)
    mptest.eq(chip.writes, [T + 3720], "the chip corrected (and its flag cleared)")
    mptest.eq(c.last["verdict"], tt.ACCEPT)


def test_start_without_chip_or_last_known_time_waits_for_the_first_source():
    b = Board(0)
    c = _clock(b)
    mptest.eq(c.start(), "none")
    mptest.false(c.trusted)
    mptest.eq(c.set(T, "backoffice"), T - 0)
    mptest.eq(c.source, "backoffice")
    mptest.true(c.trusted)


def test_a_first_network_time_stays_unconfirmed_and_the_back_office_replaces_it():
    # A new validator without chip or saved time: the network says 2036 first.
    b = Board(0)
    c = _clock(b)
    c.chip = Chip(0, lost=True)
    c.start()
    mptest.eq(c.set(T + 10 * YEAR, "network"), T + 10 * YEAR)
    mptest.false(c.trusted, "a first network time is not trusted: records flagged")
    mptest.eq(c.set(T + 10 * YEAR + 5, "network"), None, "nor confirmed by itself")
    mptest.false(c.trusted)
    mptest.eq(c.chip.writes, [], "nor written to the chip")
    mptest.eq(c.set(T, "backoffice"), -10 * YEAR, "the back office outranks it")
    mptest.true(c.trusted)
    mptest.eq(c.chip.writes, [T])
    mptest.eq(c.set(T + 10 * YEAR, "network"), None, "and the network cannot take it back")


def test_a_chip_that_fails_is_reported_and_comes_back():
    b = Board(0)
    c = _clock(b)
    c.start(last_known=T)
    c.chip_down(OSError(19))
    mptest.eq(c.status()["chip"], "missing")
    mptest.eq(c.chip_up(Chip(T + 5)), 5, "the chip's time adopted when it comes back")
    mptest.eq(c.source, "rtc")
    c2 = _clock(Board(0))
    c2.start(last_known=T, chip=Chip(T, fail=ValueError("not BCD")))
    mptest.eq(c2.status()["chip"], "error")
    mptest.false(c2.trusted)


def test_a_chip_far_behind_the_last_known_time_is_not_trusted():
    c = _clock(Board(0))
    c.start(last_known=T, chip=Chip(T - 2 * DAY))
    mptest.false(c.trusted)
    mptest.eq(c.last["verdict"], tt.HOLD)


def test_rtc_memory_keeps_a_trusted_time_across_a_watchdog_reset_not_a_power_cut():
    b = Board(0)
    c = _clock(b)
    c.start(chip=Chip(T))
    mptest.eq(b.memory[0], 0x54)
    b.t += 500  # the watchdog resets the board: RTC and RTC memory kept
    c2 = _clock(b)
    mptest.eq(c2.start(last_known=T - 100, chip=Chip(0, lost=True), kept=True), "kept")
    mptest.true(c2.trusted)
    mptest.eq(c2.now(), T + 500)
    mptest.eq(c2.status()["chip"], "lost power")
    b2 = Board(0)  # a power cut: nothing kept
    b2.memory = b
    c3 = _clock(b2)
    c3.mem = lambda data=None: b""
    mptest.eq(c3.start(last_known=T, kept=True), "last_known")


def test_floor_holds_and_an_agreed_time_before_it_resets_it():
    b = Board(T + YEAR)  # a network year off was adopted once (an older firmware)
    c = _clock(b, floor=T + YEAR + 100)
    c.start(chip=Chip(T + YEAR))
    mptest.eq(c.now(), T + YEAR + 100, "held at the last record")
    mptest.eq(c.set(T, "backoffice"), None)
    mptest.eq(c.set(T + 10, "network"), -YEAR + 10, "from the clock's own reading")
    mptest.eq(c.last["why"], "network agrees with backoffice")
    mptest.eq(c.source, "agreed")
    mptest.eq(c.floor, T + 10)
    mptest.eq(c.now(), T + 10)


def test_a_board_rtc_that_cannot_be_written_falls_back_to_an_offset():
    b = Board(0)

    def broken(t):
        raise OSError(5)

    c = clock.Clock(b.rtc, set_rtc=broken)
    c.start()
    c.set(T, "network")
    mptest.eq(c.now(), T)
    mptest.true(log.find("board RTC not written"))


def test_saved_last_known_time():
    path = "/tmp/rtc_test_last_known"
    clock.save_last_known(path, T)
    mptest.eq(clock.load_last_known(path), T)
    with open(path, "w") as f:
        f.write("garbage")
    mptest.eq(clock.load_last_known(path), 0)
    import os

    os.remove(path)
    mptest.eq(clock.load_last_known(path), 0)
