"""`python -m tools.collector export --sheet`: the back office's records as a spreadsheet reads
them (tools/record_sheet.py), from records uploaded over the collector's real HTTP route."""

import csv
import io
import warnings

import record

from tests.host.test_journal_decode import mixed_dir
from tools.collector import cli
from tools.collector.app import create_app
from tools.collector.bench import SimDevice
from tools.collector.db import Store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SECRET = bytes(range(1, 33))


def stored(tmp_path):
    """A SQLite collector holding device 5's journal of every kind (mixed_dir)."""
    url = "sqlite:///" + str(tmp_path / "c.sqlite3")
    s = Store(url)
    s.provision(5, SECRET, "bus 5")
    raws = (mixed_dir(tmp_path / "journal") / "00000001.seg").read_bytes()
    raws = [raws[i : i + 64] for i in range(0, len(raws), 64)]
    dev = SimDevice(5, SECRET)
    r = TestClient(create_app(s)).post("/v1/upload", content=dev.upload_body(1, raws))
    assert dev.answer(r.content)["value"] == len(raws)
    s.close()
    return url, raws


def test_sheet_export_reads_like_the_journal(tmp_path, capsys):
    url, raws = stored(tmp_path)
    out = tmp_path / "records.csv"
    assert cli.main(["export", "--db", url, "--sheet", "--out", str(out)]) == 0
    assert "7 records exported" in capsys.readouterr().err
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [r["seq"] for r in rows] == [str(i) for i in range(1, 8)]
    assert {r["device"] for r in rows} == {"5"}
    sale = rows[2]
    assert sale["kind"] == "purchase" and sale["card number"] == "0310 4991 5850 0001 1383"
    assert (sale["local time"], sale["zone"], sale["UTC time"]) == (
        "2026-12-31 06:20:00",
        "UTC+08:00",
        "2026-12-30T22:20:00Z",
    )
    assert (sale["amount (yuan)"], sale["route"], sale["stop"]) == ("2.00", "12", "7")
    # received: the upload's wall-clock time, shown in the device's zone, not Unix seconds
    assert sale["received (local)"][:2] == "20" and ":" in sale["received (local)"]
    assert sale["TAC check"] and "back-office exceptions" in rows[0]
    assert rows[3]["reason"] == "issuer not on the whitelist"
    assert (rows[5]["parameter version"], rows[5]["balance after (yuan)"]) == ("7", "")
    # the raw export is unchanged: same records, raw bytes last
    assert cli.main(["export", "--db", url]) == 0
    raw_rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert raw_rows[0][:2] == ["device_id", "seq"]
    assert [bytes.fromhex(r[-1]) for r in raw_rows[1:]] == raws
    assert record.decode(raws[2])["kind"] == record.PURCHASE


def test_sheet_export_in_chinese_and_other_zone(tmp_path, capsys):
    url, _ = stored(tmp_path)
    assert cli.main(["export", "--db", url, "--sheet", "--lang", "zh", "--tz=-05:00"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    head = rows[0]
    assert "卡号" in head and "本地时间" in head and "金额(元)" in head
    zone = head.index("时区")
    assert rows[1][zone] == "UTC-05:00", "the boot before any sale: the zone asked for"
    assert rows[3][zone] == "UTC+08:00", "a sale keeps the zone it recorded"
    assert rows[3][head.index("类型")] == "消费"


def test_export_refuses_bad_requests_and_keeps_files(tmp_path, capsys):
    url, _ = stored(tmp_path)
    out = tmp_path / "records.csv"
    out.write_text("last month's export")
    assert cli.main(["export", "--db", url, "--sheet", "--out", str(out)]) == 2
    assert "exists; not overwritten" in capsys.readouterr().err
    assert cli.main(["export", "--db", url, "--out", str(out)]) == 2
    assert out.read_text() == "last month's export"
    assert cli.main(["export", "--db", url, "--sheet", "--tz", "Beijing"]) == 2
    assert "want an offset such as +08:00" in capsys.readouterr().err


def test_reports_print_local_time_and_yuan(tmp_path, capsys):
    url, _ = stored(tmp_path)
    assert cli.main(["boots", "--db", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[2] == "local_time"
    assert out[1].split()[2] == "2026-12-31T06:10:00+08:00", "the boot at 06:10 Beijing time"
    assert cli.main(["unconfirmed", "--db", url, "--all", "--tz=-05:00"]) == 0
    got = capsys.readouterr()
    rows = got.out.splitlines()
    assert rows[0].split()[5] == "yuan"
    intent = rows[1].split()
    assert intent[2] == "2026-12-30T17:20:00-05:00" and intent[5] == "2.00"
    assert "(0.00 yuan)" in got.err
    assert cli.main(["exceptions", "--db", url, "--tz", "Beijing"]) == 2
    assert "want an offset such as +08:00" in capsys.readouterr().err
