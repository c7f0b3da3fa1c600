# mpy: server=tools.sim.display_server timeout=60
# The passenger display through micropython-lib's ssd1306 driver on the simulated I2C bus.
import messages
import mptest
import ssd1306
from display import Display
from sim_i2c import SimI2C
from simlink import Control


def _display():
    oled = ssd1306.SSD1306_I2C(128, 64, SimI2C("i2c0"), 0x3C)
    return Display(oled)


def test_outcome_screen_reaches_the_panel():
    d = _display()
    ctl = Control()
    before = ctl.call("display_state")["frames"]
    d.outcome("OK", fare=200, balance=3550)
    state = ctl.call("display_state")
    mptest.true(state["on"], "init_display turned the panel on")
    mptest.eq(state["frames"], before + 1)
    mptest.eq(d.lines, ["扣款成功", "Paid", "票价 2.00元", "余额 35.50元"])
    mptest.eq(d.missing, 0)
    mptest.true(ctl.call("display_lit") > 200, "glyphs lit the panel")


def test_every_reason_renders_without_missing_glyphs():
    d = _display()
    for reason in messages.TEXTS:
        d.outcome(reason, fare=100, balance=5)
    d.outcome("SOMETHING_NEW")
    d.idle("12", "2026-11-30 08:00", "-71dBm", 3, warning="FULL")
    mptest.eq(d.missing, 0)


def test_blank_then_idle_changes_pixels():
    d = _display()
    ctl = Control()
    d.notice("", "")
    mptest.eq(ctl.call("display_lit"), 0)
    d.idle("12", "08:00", "-71dBm", 0)
    mptest.true(ctl.call("display_lit") > 0)
    # the first glyph of the idle screen (请) starts at the top-left corner area
    lit = 0
    for y in range(16):
        for x in range(16):
            lit += ctl.call("display_pixel", x=x, y=y)
    mptest.true(lit > 20)


def test_money_formatting_is_exact():
    mptest.eq(messages.yuan(0), "0.00")
    mptest.eq(messages.yuan(5), "0.05")
    mptest.eq(messages.yuan(123456), "1234.56")
    mptest.eq(messages.yuan(-150), "-1.50")
