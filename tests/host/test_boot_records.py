"""BOOT records at the back office: the reset cause (brown-out included) and the parts that
failed to start, as the validator writes them (firmware/app.py), read by the collector's `boots`
report and by tools/journal_decode (docs/record-format.md, docs/boot.md)."""

import bootmode
import record

from tools import journal_decode
from tools.collector import cli, synth
from tools.collector.bench import SimDevice
from tools.collector.db import Store

SECRET = bytes(range(1, 33))


def test_boot_info_names_the_cause_and_the_parts():
    d = record.decode(synth.boot(4, cause=6, faults=0x01 | 0x04, flags=0x01, pending=2))
    assert bootmode.boot_info(d) == {
        "reset_cause": "brownout",
        "faults": ["reader", "modem"],
        "psam_ok": False,
        "unconfirmed": 2,
    }
    assert bootmode.boot_info(record.decode(synth.boot(1)))["reset_cause"] == "other"
    odd = record.decode(synth.boot(2, cause=200, faults=0x80))
    assert bootmode.boot_info(odd)["reset_cause"] == "other"
    assert bootmode.boot_info(odd)["faults"] == [], "unknown bits are not named"
    assert bootmode.CAUSE_NAMES[1:4] == ("power-on", "hard", "watchdog")


def test_journal_decode_shows_the_boot_fields():
    d = record.decode(synth.boot(3, cause=3, faults=0x02))
    v = journal_decode.record_view(d)
    assert (v["reset_cause"], v["faults"], v["psam_ok"]) == ("watchdog", ["psam"], True)
    report = {"source": "x", "records": [d], "problems": [], "format": "dir", "last_seq": 3,
              "acked_seq": 0, "backlog": 3, "hwm": 3, "segments": [], "pending": None}
    table = journal_decode.format_table(report)
    assert "reset: watchdog; failed: psam" in table


def test_collector_reports_boots_per_device_and_cause(tmp_path, capsys):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as tests/host/test_collector.py: the pinned httpx
        from starlette.testclient import TestClient

    from tools.collector.app import create_app

    url = "sqlite:///" + str(tmp_path / "c.sqlite3")
    store = Store(url)
    store.provision(1, SECRET)
    client = TestClient(create_app(store))
    dev = SimDevice(1, SECRET)
    batch = [
        synth.boot(1, cause=1),
        synth.purchase(2),
        synth.boot(3, cause=6),  # the modem's burst sagged the supply
        synth.boot(4, cause=6, faults=0x04),
        synth.boot(5, cause=3, faults=0x01, flags=0x01),
    ]
    r = client.post("/v1/upload", content=dev.upload_body(1, batch))
    assert r.status_code == 200
    boots = store.boots(1)
    store.close()
    assert [(b["seq"], b["reset_cause"], b["faults"]) for b in boots] == [
        (1, "power-on", []),
        (3, "brownout", []),
        (4, "brownout", ["modem"]),
        (5, "watchdog", ["reader"]),
    ]
    assert cli.main(["boots", "--db", url, "--device", "1"]) == 0
    out, err = capsys.readouterr()
    assert "1 5 " in out and "watchdog reader FAILED 0" in out
    assert "device 1: 2 brownout" in err and "device 1: 1 watchdog" in err
    assert cli.main(["boots", "--db", url, "--device", "1", "--lang", "zh"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("设备 序号 本地时间 复位原因 故障 PSAM 未确认扣款\n")
    assert "watchdog reader 故障 0" in out and "设备 1: 2 次 brownout" in err
