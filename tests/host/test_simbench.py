"""The simulated bench end to end: the default morning, a long day of random power cuts on the
RC522 and a Quectel modem, and a small smoke run. Each is the real firmware (compiled to .mpy,
under the MicroPython unix port) against the simulators and a real collector; the bench itself
checks that every card debit reached the back office exactly once, that the device journal and
the back office hold the same records, and every expectation the scenario writes."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_scenario(name, tmp_path, *extra):
    path = name if isinstance(name, Path) else ROOT / "tools" / "scenarios" / (name + ".toml")
    out = tmp_path / path.stem
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.simbench",
            "--scenario",
            str(path),
            "--out",
            str(out),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = (
        json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    )
    return proc, report, out


def test_smoke_scenario(tmp_path):
    proc, report, out = run_scenario("smoke", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["outcomes"] == {"OK": 1, "ALREADY_PAID": 1, "INSUFFICIENT": 1}
    assert report["revenue_fen"] == 200
    assert report["device_records"] == report["backoffice_records"]
    assert "扣款成功 | Paid | 票价 2.00元 | 余额 48.00元" in proc.stdout
    assert len(list((out / "frames").glob("*.png"))) == 3
    # the overview sheet: every frame in one picture, named in the summary
    from PIL import Image

    with Image.open(out / "overview.png") as sheet:
        assert sheet.width > 3 * 192 // 2 and sheet.height > 96 // 2
    assert "overview: %s" % (out / "overview.png") in proc.stdout
    # report.json: Chinese as written, the taps' local time beside the seconds since 2000
    raw = (out / "report.json").read_text(encoding="utf-8")
    assert "扣款成功" in raw and "\\u" not in raw
    assert report["taps_detail"][0]["time_local"] == "2026-11-30 07:31:00 UTC+08:00"
    assert report["time_zone"] == "UTC+08:00"
    assert "a sale writes two records (intent, then purchase)" in proc.stdout
    assert "times are local, UTC+08:00; amounts in yuan" in proc.stdout
    # bob's refusal in the operator's words, then the firmware's detail
    assert "operator: the balance does not cover the fare; firmware: " in proc.stdout


def test_a_wrong_expectation_is_told_in_yuan(tmp_path):
    text = (ROOT / "tools" / "scenarios" / "smoke.toml").read_text()
    text = text.replace("balances = { alice = 4800, bob = 150 }", "balances = { alice = 120 }")
    path = tmp_path / "wrong.toml"
    path.write_text(text)
    proc, report, _ = run_scenario(path, tmp_path, "--lang", "zh")
    assert proc.returncode != 0
    assert "运营: 余额不足以支付票价; 固件: " in proc.stdout
    assert "== 小结: " in proc.stdout and "每笔消费写两条记录" in proc.stdout
    assert "RESULT: 1 FAILED (1 项失败)" in proc.stdout
    assert "card alice ends with 48.00 yuan (4800 fen), expected 1.20 yuan (120 fen)" in (
        proc.stdout + proc.stderr
    )


def test_default_morning_scenario(tmp_path):
    proc, report, _ = run_scenario("morning", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["failures"] == []
    assert report["watchdog_resets"] == 1
    assert report["firmware_starts"] == 4  # power on, two power cuts, one watchdog reset
    assert report["card_debits"] > 8
    assert report["tac_checked"] == report["card_debits"]
    for reason in ("OK", "ALREADY_PAID", "BLACKLISTED", "NOT_TUNION", "NO_ISO_DEP", "TAP_AGAIN"):
        assert reason in report["outcomes"], reason


@pytest.mark.parametrize("scenario", ["power-cuts"])
def test_random_power_cuts_lose_and_double_nothing(scenario, tmp_path):
    proc, report, _ = run_scenario(scenario, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["firmware_starts"] >= 9  # eight power cuts
    # the report says where each cut landed: the command it came at, or for a random moment
    # the last command the card ran
    assert len(report["cuts"]) == 8
    for cut in report["cuts"]:
        assert re.match(r"(after|before) |after the tap", cut["landed"]), cut
    assert report["device_records"] == report["backoffice_records"]
    assert report["tac_checked"] == report["card_debits"]


CUTS = """
name = "cuts at commands"
start = "2026-11-30T07:25:00+08:00"
[validator]
reader = "pn532_i2c"
[cards.alice]
profile = "tunion_plain"
balance = 5000
[[events]]
at = "07:31:00"
tap = "alice"
power_cut = "select"
[[events]]
at = "+20s"
tap = "alice"
power_cut = "before:update"
[[events]]
at = "+20s"
tap = "alice"
power_cut = "after:init"
[[events]]
at = "+20s"
tap = "alice"
expect = "OK"
fare = 200
[[events]]
at = "07:40:00"
tap = "bob"
pull = "after:debit"
expect = "TAP_AGAIN"
[[events]]
at = "+5s"
tap = "bob"
power_cut = "after:read18"
[[events]]
at = "+20s"
tap = "bob"
power_cut = "before:prove"
[[events]]
at = "+20s"
tap = "bob"
expect = ["OK", "ALREADY_PAID"]
[cards.bob]
profile = "tunion_plain"
card_no = "3105228000000000025"
balance = 5000
[expect.cards.alice]
balance = 4800
debits = 1
[expect.cards.bob]
balance = 4800
debits = 1
[[expect.records]]
kind = "purchase_recovered"
card = "bob"
count = 1
"""


def test_a_power_cut_at_a_command_lands_at_that_command(tmp_path):
    """The cut kills the firmware in the middle of the exchange with the card: after SELECT ran,
    before UPDATE ran, after INITIALIZE ran (the cut once waited for an audit key the card never
    wrote, and landed after the tap), and in the recovery of a torn purchase after the 0x18
    history read and before GET TRANSACTION PROVE; the purchase is then recovered once."""
    path = tmp_path / "cuts.toml"
    path.write_text(CUTS)
    proc, report, _ = run_scenario(path, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    landed = [c["landed"] for c in report["cuts"]]
    assert landed[0].startswith("after SELECT (00A40400) ran"), landed
    assert landed[1].startswith("before UPDATE CAPP DATA CACHE"), landed
    assert landed[2].startswith("after INITIALIZE FOR CAPP PURCHASE"), landed
    # the recovery of bob's torn purchase, cut during its history read, then before 805A
    assert landed[3].startswith("after READ RECORD 0x18 (00B201C4) ran"), landed
    assert landed[4].startswith("before GET TRANSACTION PROVE"), landed
    assert report["validators"]["validator"]["firmware_starts"] == 6
    o = report["outcomes"]
    assert o["TAP_AGAIN"] == 1 and o.get("OK", 0) + o.get("ALREADY_PAID", 0) == 2, o


def test_two_routes_share_one_back_office(tmp_path):
    """Two validators (PN532 and RC522, each its own PSAM) on routes 101 and 102: a transfer
    between them, a torn purchase finished after pulls at the recovery's 0x18 read and 805A, one
    finished at the first bus after the rider paid on the second (booked without TAC, by the
    card's history), one left unconfirmed by a rider who never came back, a social security
    card whose bank and medical balances never move."""
    proc, report, _ = run_scenario("two-routes", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    v = report["validators"]
    assert {x["route"] for x in v.values()} == {101, 102}
    assert len({x["terminal_id"] for x in v.values()}) == 2
    assert report["tac_missing"] == 1
    # lee's debit on bus101 stays an unconfirmed debit: he finished his journey on bus102
    assert report["unconfirmed_debits"] == 1 and report["unconfirmed_fen"] == 200
    # ... which the back office settles from his next counter (bus102's sale) as debited
    assert report["unconfirmed_verdicts"] == {"debited": 1}
    assert report["tac_checked"] == report["card_debits"] - 2
    assert report["cards"]["bob"]["apps"] == {"unionpay": 125000, "medical": 38000}


def test_a_long_day_on_a_small_log_compares_what_the_device_ever_held(tmp_path):
    """Four txlog sectors and some 270 records: acknowledged sectors are erased for reuse, so
    the image at the end holds a fraction; the back office must match every record the device
    held (it was once compared with what was left on flash, and failed past 64 records)."""
    proc, report, _ = run_scenario("long-day", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["device_records"] == report["backoffice_records"] > 200
    assert report["on_flash_at_end"] < report["device_records"] // 2
    assert "JOURNAL_FULL" not in report["outcomes"]
    assert report["tac_checked"] == report["card_debits"]


def test_a_broken_scenario_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[validator]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.simbench", "--scenario", str(bad), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "needs [validator] (or [validators.NAME]) and [cards]" in proc.stderr


# ---- the loader: a scenario is refused before anything runs, saying what is wrong ---------------

GOOD = """
name = "x"
[validator]
route = 101
[cards.alice]
profile = "tunion_plain"
balance = 500
[[events]]
at = "07:31"
tap = "alice"
expect = "OK"
"""


def _load(tmp_path, text):
    from tools import simbench

    p = tmp_path / "s.toml"
    p.write_text(text)
    return simbench.load_scenario(p)


def test_the_loader_takes_a_good_scenario(tmp_path):
    sc = _load(tmp_path, GOOD)
    assert sc["events"][0]["tap"] == "alice"


@pytest.mark.parametrize(
    "change, message",
    [
        (("route = 101", "rout = 101"), "unknown key 'rout'"),
        (("balance = 500", "balence = 500"), "unknown key 'balence'"),
        (('tap = "alice"', 'tap = "alcie"'), "no rider 'alcie'"),
        (('profile = "tunion_plain"', 'profile = "tunion_plan"'), "no card profile 'tunion_plan'"),
        (('expect = "OK"', 'expect = "PAID"'), "expect 'PAID' is no outcome"),
        (('expect = "OK"', 'expext = "OK"'), "unknown key 'expext'"),
        (
            ('tap = "alice"', 'tap = "alice"\npull = "after:debt"'),
            "'after:debt' is not a card command",
        ),
        (('tap = "alice"', 'tapp = "alice"'), "no known event"),
        (('at = "07:31"', 'at = "7h31"'), "at = '7h31'"),
        (('name = "x"', 'name = "x"\nseeed = 3'), "unknown key 'seeed'"),
        (('expect = "OK"', 'validator = "b"'), "no validator 'b'"),
        (("route = 101", 'route = 101\nreader = "pn533"'), "reader 'pn533'"),
        (('expect = "OK"', 'power_cut = "upload:stored"'), "pull and power_cut|card command"),
    ],
)
def test_the_loader_refuses_mistakes_with_a_clear_error(tmp_path, change, message):
    import re

    from tools import simbench

    assert change[0] in GOOD
    with pytest.raises(simbench.ScenarioError) as e:
        _load(tmp_path, GOOD.replace(*change, 1))
    assert re.search(message, str(e.value)), str(e.value)


def test_the_loader_refuses_expectations_it_cannot_check(tmp_path):
    from tools import simbench

    for extra, message in (
        ("[expect]\nbalance = {alice = 1}", "unknown key 'balance'"),
        ('[expect.cards.bob]\nlock = "none"', "no rider 'bob'"),
        ('[expect.cards.alice]\nlocked = "none"', "unknown key 'locked'"),
        ('[[expect.records]]\nkind = "purchse"', "kind 'purchse'"),
        ('[[expect.records]]\nflags = ["mac2"]', "flag 'mac2'"),
        ("[cards.alice.apps]\nunionpay = 5", "no 'unionpay' application"),
    ):
        with pytest.raises(simbench.ScenarioError, match=message):
            _load(tmp_path, GOOD + extra + "\n")


def test_clearing_holds_a_3des_and_an_sm4_key_of_one_issuer():
    """Two cards of one issuer, one 3DES and one SM4: the back office's keys hold both, and a
    TAC of each clears (keyed by issuer only, one of them was flagged 'bad')."""
    import record
    import timeutil

    from tools import simbench
    from tools.collector.clearing import Clearing
    from tools.sim import crypto
    from tools.sim.card import VirtualCard

    des = VirtualCard.from_profile("tunion_plain")
    sm4 = VirtualCard.from_profile("tunion_sm4", issuer=des.tu["issuer"].hex().upper())
    assert des.tu["suite"].name != sm4.tu["suite"].name
    keys = simbench.tac_keys([des, sm4])
    assert len(keys) == 1 and len(next(iter(keys.values()))) == 2
    clearing = Clearing(keys)
    t = 880000000
    tid = bytes.fromhex("000000000101")
    for card in (des, sm4):
        tu = card.tu
        when = timeutil.bcd_datetime(t, 28800)
        tac = crypto.tac(
            tu["suite"],
            tu["dtk"],
            (200).to_bytes(4, "big"),
            0x09,
            tid,
            (7).to_bytes(4, "big"),
            when[:4],
            when[4:7],
        )
        rec = {
            "kind": record.PURCHASE,
            "issuer": bytes(tu["issuer"][:4]),
            "tac": tac,
            "card_no": bytes(tu["serial"]),
            "amount": 200,
            "psam_tid": tid,
            "psam_serial": 7,
            "time": t,
            "reason": record.tz_code(28800),
            "seq": 1,
        }
        assert clearing.verdict(rec) == "ok", card.tu["suite"].name
        rec["amount"] = 201
        assert clearing.verdict(rec) == "bad"


def test_power_cuts_at_each_stage_of_an_upload_and_a_parameter_download(tmp_path):
    """sent / stored / acknowledged, requested / downloaded / activated: each cut lands at its
    stage (the report says where), nothing is lost or booked twice, and the bundle activated
    just before the cut blacklists a card after the restart."""
    proc, report, out = run_scenario("upload-cuts", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    landed = [c["landed"] for c in report["cuts"]]
    assert [x.split(":")[0] for x in landed] == [
        "upload sent",
        "upload stored",
        "upload acknowledged",
        "params requested",
        "params downloaded",
        "params activated",
    ]
    assert "HTTP 200" in landed[1] and "HTTP 200" in landed[4]
    assert report["device_records"] == report["backoffice_records"]
    assert report["tac_checked"] == report["card_debits"] == 4
    # 40 virtual minutes without a back office: the back-off reached its 10-minute cap (at
    # least 5 minutes with its jitter), and the wait for the upload followed it (it once gave
    # up after a fixed 60 s).
    retries = [
        int(m) for m in re.findall(r"retry in (\d+) ms", (out / "firmware.log").read_text())
    ]
    assert max(retries) >= 300000, retries
    wait = report["waits"][-1]
    assert wait["ok"] and wait["virtual_s"] <= 600, wait


def test_a_cut_in_the_middle_of_a_ranged_bundle_download_resumes(tmp_path):
    """A fleet-signed bundle of 20,000 extra cards goes by ranges; the power dies after the
    third range was served: after the restart the download resumes from its checkpoint (it does
    not start over), activates, and the card the bundle lists is refused and locked."""
    proc, report, out = run_scenario("chunked-params", tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["cuts"][0]["landed"].startswith(
        "params chunk: the back office answered HTTP 206"
    )
    log = (out / "firmware.log").read_text()
    m = re.search(r"download 2 resumes at (\d+) of (\d+)", log)
    assert m and 0 < int(m.group(1)) < int(m.group(2)), log[-2000:]
