"""tools/params_inspect.py: a bundle read as a fare table, and the changes between two bundles,
on bundles compiled from the example sources by tools/params_compile.py."""

import pytest

from tools import params_compile as pc
from tools import params_inspect as pi

KEY = b"host-test-device-secret"
EX = pc.EXAMPLE


def compiled(tmp_path, name, edit=lambda t: t, blacklist=True):
    toml = tmp_path / (name + ".toml")
    toml.write_text(edit((EX / "fares.toml").read_text()))
    out = tmp_path / (name + ".bin")
    args = ["--fares", str(toml), "--whitelist", str(EX / "whitelist.csv"), "--quiet"]
    args += ["--key-hex", KEY.hex(), "-o", str(out)]
    if blacklist:
        args += ["--blacklist", str(EX / "blacklist.csv")]
    assert pc.main(args) == 0
    return out  # params_compile printed "wrote ...": callers read it away


def newer(text):
    text = text.replace("version = 1\n", "version = 2\n", 1)
    text = text.replace('mode = "flat"\nfare = 200', 'mode = "flat"\nfare = 250')
    text = text.replace("pct = 50                   # early", "pct = 40  # early")
    text = text.replace('[fares.card_types.8]\nname = "test"\naccept = false\n', "")
    text = text.replace(
        "[fares.routes.301]",
        '[fares.routes.202]\nmode = "flat"\nfare = 100\n[fares.routes.301]',
    )
    return text


def test_a_bundle_reads_as_a_fare_table(tmp_path, capsys):
    b = compiled(tmp_path, "a")
    assert pi.main([str(b), "--key-hex", KEY.hex()]) == 0
    out = capsys.readouterr().out
    assert "MAC: ok" in out and "version: 1" in out
    # local time with its zone first, UTC beside it
    assert "activation: 2026-01-01 00:00:00 UTC+08:00 (2025-12-31T16:00:00Z)" in out
    assert "route 101   flat   2.00 yuan" in out
    assert "route 102   flat   1.50 yuan (fare rule 21)" in out
    assert "by stages crossed 0: 1.00, 1: 2.00, 2: 3.00, 3+: 4.00 yuan" in out
    assert "a trip ends after 2 h" in out
    assert "no single fare above 20.00 yuan" in out
    assert "student        pays 50% (local card) / 100% (other cities' cards)" in out
    assert "card type 8       test           not accepted" in out
    assert "time rule 91: 05:00-07:00 local, Mon-Fri, all routes, all card types: 50%" in out
    assert (
        "transfer: within 90 min of the previous ride, up to 2 transfers; first 1.00 yuan" in out
    )
    assert "{" not in out, "no Python dicts"
    assert "blacklist: 3 cards" in out


def test_diff_names_every_change(tmp_path, capsys):
    old = compiled(tmp_path, "old")
    new = compiled(tmp_path, "new", newer)
    capsys.readouterr()
    assert pi.main([str(new), "--diff", str(old), "--key-hex", KEY.hex()]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "changes from version 1 to version 2"
    assert "~ route 101   flat   2.00 yuan" in out and "  -> route 101   flat   2.50 yuan" in out
    assert "+ route 202   flat   1.00 yuan" in out
    assert any(x.startswith("- card type 8 ") for x in out)
    assert any(x.startswith("  -> time rule 91") and "40% of the fare" in x for x in out)
    assert out[-1] == "4 changes"
    assert not any("route 301" in x for x in out), "unchanged lines are not shown"
    # the same bundle: nothing changed, and a version not above the old one is pointed out
    assert pi.main([str(old), "--diff", str(old), "--key-hex", KEY.hex()]) == 0
    out = capsys.readouterr().out
    assert "no changes in fares" in out and "version 1 is not above 1" in out
    # a blacklist emptied
    nobl = compiled(tmp_path, "nobl", newer, blacklist=False)
    capsys.readouterr()
    assert pi.main([str(nobl), "--diff", str(old)]) == 0
    out = capsys.readouterr().out
    assert "~ blacklist: 3 cards\n  -> blacklist: 0 cards" in out and "MAC: NOT CHECKED" in out


def test_bad_input_is_refused_clearly(tmp_path, capsys):
    good = compiled(tmp_path, "a")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a bundle" * 20)
    before = good.read_bytes()
    capsys.readouterr()
    assert pi.main([str(good), "--diff", str(tmp_path / "missing.bin")]) == 2
    assert "missing.bin" in capsys.readouterr().err
    assert pi.main([str(good), "--diff", str(junk)]) == 1
    err = capsys.readouterr().err
    assert "junk.bin refused" in err and "not a bundle" in err
    assert pi.main([str(good), "--diff", str(good), "--key-hex", "00"]) == 1
    assert "refused" in capsys.readouterr().err
    assert pi.main([str(junk)]) == 1
    assert pi.main([str(good), "--key-hex", "zz"]) == 2
    assert "error" in capsys.readouterr().err
    assert good.read_bytes() == before, "reading never changes a bundle"
    with pytest.raises(SystemExit) as e:
        pi.main([str(good), "--diff"])
    assert e.value.code == 2


def test_chinese_for_operators_in_china(tmp_path, capsys):
    old = compiled(tmp_path, "old")
    new = compiled(tmp_path, "new", newer)
    capsys.readouterr()
    assert pi.main([str(old), "--key-hex", KEY.hex(), "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert "MAC: 校验通过" in out and "启用时间: 2026-01-01 00:00:00 UTC+08:00" in out
    assert "线路 101   一票制 2.00元" in out and "分段" in out and "轨道" in out
    assert "时段规则 91: 本地时间 05:00-07:00, 周一-周五" in out
    assert "换乘: 90分钟内 (自上一次乘车起), 最多换乘2次; 首次减1.00元" in out
    assert "单次票价不超过20.00元" in out and "黑名单: 3张卡" in out
    assert pi.main([str(new), "--diff", str(old), "--key-hex", KEY.hex(), "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("从版本1到版本2的变化") and "4处变化" in out
    assert "+ 线路 202   一票制 1.00元" in out
    # and back to English: the language is per run, not sticky
    assert pi.main([str(old), "--key-hex", KEY.hex()]) == 0
    assert "route 101   flat   2.00 yuan" in capsys.readouterr().out
