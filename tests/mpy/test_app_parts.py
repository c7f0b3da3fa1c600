# Feedback patterns, the clock's rules and the vehicle configuration (MicroPython side).
import asyncio
import json
import os
import time

import clock
import config
import log
import mptest
from feedback import PATTERNS, Feedback
from sim_pin import PWM, Pin


def _feedback():
    green = Pin("g", Pin.OUT)
    red = Pin("r", Pin.OUT)
    buzzer = PWM(Pin("bz", Pin.OUT))
    return Feedback(green, red, buzzer, hold_ms=5), green, red, buzzer


async def test_accepted_tap_lights_green_and_beeps_once():
    fb, green, red, buzzer = _feedback()
    mptest.eq(fb.show("ok"), "beep")
    mptest.eq((green.value(), red.value()), (1, 0))
    await asyncio.sleep_ms(200)
    beeps = [f for f, duty in buzzer.history if duty]
    mptest.eq(beeps, [2700])
    mptest.eq(buzzer.duty_u16(), 0)
    mptest.eq((green.value(), red.value()), (0, 0), "LEDs go dark after the hold time")


async def test_refusal_is_red_with_a_long_beep_and_unknown_tones_refuse():
    fb, green, red, buzzer = _feedback()
    mptest.eq(fb.show("no-such-tone"), "long low beep")
    mptest.eq((green.value(), red.value()), (0, 1))
    mptest.eq(PATTERNS["refused"][0][1] >= 500, True)
    fb.show("again")  # a new tap cancels the running pattern
    await asyncio.sleep_ms(600)
    mptest.eq(fb.played, ["refused", "again"])
    mptest.eq(buzzer.duty_u16(), 0)


def test_clock_never_goes_before_the_last_record():
    rtc = [800000000]
    c = clock.Clock(lambda: rtc[0], floor=800000100)
    c.start()
    mptest.eq(c.now(), 800000100, "an RTC behind the journal is held at the floor")
    mptest.false(c.trusted, "the last record's time is an estimate, not trusted")
    mptest.eq(c.set(100, "network"), None, "before 2025 is an unset clock")
    mptest.true(log.find("implausible"))
    mptest.eq(c.set(800000050, "network"), -50, "a little behind the estimate: adopted")
    mptest.eq(c.now(), 800000100, "but the clock still reads no earlier than the last record")
    mptest.eq(c.set(800000900, "network"), 850, "measured from the clock's own reading")
    mptest.eq(c.now(), 800000900)
    rtc[0] += 10
    mptest.eq(c.now(), 800000910)
    mptest.eq(c.set(800000910 + 7200, "network"), None, "too large a step for the network")
    mptest.eq(c.set(800000910 + 60, "backoffice"), 60)
    mptest.eq(c.source, "backoffice")
    mptest.true(c.trusted)


def _good():
    return {
        "device_id": 1001,
        "secret": "00112233445566778899aabbccddeeff",
        "route": 12,
        "city": "2482",
        "institution": "1200290000000000",
        "collector_url": "http://127.0.0.1:8080",
    }


def test_config_validation_and_defaults():
    cfg = config.validate(_good())
    mptest.eq(cfg["stop_source"], "fixed")
    mptest.eq(len(cfg["secret_bytes"]), 16)
    for key, value, why in (
        ("secret", "zz", "hex"),
        ("secret", "0011", "16 bytes"),
        ("city", "24820", "4 digits"),
        ("institution", "12", "16 digits"),
        ("stop_source", "psychic", "stop_source"),
        ("device_id", "BUS-1", "device_id"),
        ("device_id", 0, "device_id"),
    ):
        bad = _good()
        bad[key] = value
        e = mptest.raises(config.ConfigError, config.validate, bad)
        mptest.true(why in str(e), str(e))
    bad = _good()
    del bad["route"]
    mptest.true("route" in str(mptest.raises(config.ConfigError, config.validate, bad)))


def test_low_balance_and_messages_are_the_companys_to_set():
    import messages

    mptest.eq(config.validate(_good())["low_balance_fen"], 500, "default 5.00 yuan")
    good = _good()
    good["low_balance_fen"] = 0
    good["messages"] = {
        "OK_LOW": ["请充值", "Top up soon"],
        "INSUFFICIENT": ["余额不足", "Top up"],
    }
    cfg = config.validate(good)
    mptest.eq(cfg["low_balance_fen"], 0)
    for key, value, why in (
        ("low_balance_fen", -1, "0 to 100000"),
        ("low_balance_fen", 100001, "0 to 100000"),
        ("low_balance_fen", "5.00", "number of fen"),
        ("low_balance_fen", True, "number of fen"),
        ("messages", ["OK_LOW"], "object"),
        ("messages", {"OK_LOWW": ["请充值", "x"]}, "unknown reason 'OK_LOWW'"),
        ("messages", {"OK_LOW": "请充值"}, "[Chinese, English]"),
        ("messages", {"OK_LOW": ["请充值", "Please top up your card"]}, "16 plain ASCII"),
        ("messages", {"OK_LOW": ["请充值", "Top up é"]}, "16 plain ASCII"),
        ("messages", {"OK_LOW": ["请您充值", "Top up"]}, "not in the display font"),
        ("messages", {"OK_LOW": ["请充值请充值请充值", "Top up"]}, "wider than the display"),
    ):
        bad = _good()
        bad[key] = value
        e = mptest.raises(config.ConfigError, config.validate, bad)
        mptest.true(why in str(e), str(e))
    messages.customise(cfg["messages"])
    try:
        mptest.eq(messages.text_for("OK_LOW"), ("请充值", "Top up soon", "ok_low"), "tone kept")
        mptest.eq(messages.text_for("OK"), messages.TEXTS["OK"], "the others unchanged")
    finally:
        messages.customise(None)
    mptest.eq(messages.text_for("OK_LOW"), messages.TEXTS["OK_LOW"])


def test_config_file_errors_are_clear():
    path = "/tmp/validator-test-config-%d.json" % (time.ticks_us() & 0xFFFFFF)
    with open(path, "w") as f:
        f.write("{not json")
    mptest.true("not valid JSON" in str(mptest.raises(config.ConfigError, config.load, path)))
    with open(path, "w") as f:
        json.dump(_good(), f)
    mptest.eq(config.load(path)["device_id"], 1001)
    e = mptest.raises(config.ConfigError, config.load, "/tmp/no-such-config.json")
    mptest.true("provision" in str(e))
    os.remove(path)
