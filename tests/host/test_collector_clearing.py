"""Clearing on by default: every purchase's TAC checked (or reported when it cannot be), the
impossible ones stored for audit but kept out of settlement and listed in the exceptions report,
duplicates by (card number, card counter) detected, on SQLite and a real PostgreSQL."""

import json
import os
import time

import pytest
import record
import uplink_proto as up

from tests.host.pg import pg_server  # noqa: F401  (fixture)
from tests.host.test_collector import SECRET_A, SECRET_B, db_url, old_device, store  # noqa: F401
from tools.collector import cli, synth
from tools.collector.app import create_app
from tools.collector.bench import SimDevice
from tools.collector.clearing import Clearing, load_key_file, load_keys, simulator_keys, tac_of
from tools.collector.db import Store
from tools.sim import crypto

from .test_collector import TestClient

NOW = int(time.time()) - 946684800  # validator time


@pytest.fixture
def client(store):  # noqa: F811
    return TestClient(create_app(store, clearing=Clearing(simulator_keys())))


def sale(seq, card=None, atc=None, bb=5000, amount=200, ba=None, t=None, flags=0, tac=None, **kw):
    """A purchase of the synthetic card `card` with a genuine TAC unless `tac` is given."""
    fields = {
        "kind": record.PURCHASE,
        "card_type": 1,
        "txn_type": 6,
        "flags": flags,
        "time": NOW - 3600 + seq if t is None else t,
        "psam_tid": synth.PSAM,
        "psam_serial": 7000 + seq,
        "card_no": bytes.fromhex("31040000%012d" % (seq if card is None else card)),
        "issuer": synth.ISSUER,
        "amount": amount,
        "balance_before": bb,
        "balance_after": bb - amount if ba is None else ba,
        "card_atc": seq if atc is None else atc,
        "route": 52,
        "reason": 160,
    }
    fields.update(kw)
    fields["tac"] = tac if tac is not None else tac_of(synth.test_key(), fields)
    return record.encode(fields, seq)


def send(client, dev, first, batch):
    r = client.post("/v1/upload", content=dev.upload_body(first, batch))
    assert r.status_code == 200, r.text
    return dev.answer(r.content)


def test_impossible_purchases_are_stored_but_excluded_and_reported(client, store, caplog):  # noqa: F811
    dev = SimDevice(1, SECRET_A)
    batch = [
        sale(1),  # clean
        sale(2, amount=250, tac=bytes.fromhex("01020304")),  # TAC does not verify
        sale(3, amount=16777215, bb=16777215),  # 167,772.15 yuan: beyond the fare tables
        sale(4, t=3124137600),  # 2099
        sale(5, bb=5000, amount=200, ba=4900),  # balance arithmetic does not hold
        sale(6, flags=record.FLAG_CLOCK_UNSET),  # reported, settles
        sale(7, flags=record.FLAG_TEST),  # a bench record: never money
        sale(8, issuer=b"\x77\x77\x00\x00"),  # no key for that issuer: reported, held
        sale(9, card=1, atc=1),  # the same card counter as seq 1: a double booking
    ]
    assert send(client, dev, 1, batch)["value"] == 9
    assert store.count(1) == 9  # everything stored for audit
    got = {r["seq"]: r["reasons"] for r in store.exceptions()}
    assert got == {
        2: ["tac_bad"],
        3: ["amount"],
        4: ["date"],
        5: ["balance"],
        6: ["clock_unset"],
        7: ["test"],
        8: ["tac_nokey"],
        9: ["atc_dup"],
    }
    settles = {r["seq"]: r["settles"] for r in store.exceptions()}
    assert settles[6] and not any(v for k, v in settles.items() if k != 6)
    totals = store.settlement()
    assert totals["records"] == 2 and totals["amount"] == 400  # seq 1 and seq 6
    assert totals["excluded"] == 7 and totals["reported"] == 1
    assert any("held out of settlement" in m for m in caplog.messages)
    assert any("repeats a held purchase (atc_dup" in m for m in caplog.messages)
    # the flags are an export column
    cols = Store.EXPORT_COLUMNS
    flags = {row[1]: row[cols.index("flags")] for row in store.export(1)}
    assert flags[7] == record.FLAG_TEST and flags[1] == 0


def test_a_card_counter_booked_twice_across_devices_is_detected(client, store):  # noqa: F811
    a, b = SimDevice(1, SECRET_A), SimDevice(2, SECRET_B)
    send(client, a, 1, [sale(1, card=5, atc=40)])
    other = sale(1, card=5, atc=40, psam_tid=b"\x00\x00\x00\x00\x00\x02", psam_serial=1)
    send(client, b, 1, [other])
    reasons = {(r["device_id"], r["seq"]): r["reasons"] for r in store.exceptions()}
    assert reasons == {(2, 1): ["atc_dup"]}


def test_a_balance_that_rises_without_a_load_is_an_exception_until_the_load_is_known(
    client,
    store,  # noqa: F811
    tmp_path,
):
    dev = SimDevice(1, SECRET_A)
    # card 3: counter 10 leaves 4800; counter 11 starts from 9800: 5000 fen appeared
    send(client, dev, 1, [sale(1, card=3, atc=10, bb=5000), sale(2, card=3, atc=11, bb=9800)])
    rise = store.balance_rises()
    assert [(r["seq"], r["rise"], r["loaded"]) for r in rise] == [(2, 5000, 0)]
    assert store.settlement()["records"] == 1
    # the top-up system's load of 50 yuan between the two taps explains it
    csv_path = tmp_path / "loads.csv"
    csv_path.write_text(
        "card_no,time,amount,source\n%s,%d,5000,kiosk 7\n"
        % ("31040000" + "%012d" % 3, NOW - 3600 + 1)
    )
    assert cli.main(["loads", "--db", store.url, str(csv_path)]) == 0
    assert store.balance_rises() == [] and store.exceptions() == []
    assert store.settlement()["records"] == 2


def test_cli_exceptions_report(tmp_path, capsys):
    url = "sqlite:///" + str(tmp_path / "e.sqlite3")
    s = Store(url)
    s.provision(1, SECRET_A)
    s.register_psam(1, synth.PSAM)
    c = TestClient(create_app(s, clearing=Clearing(simulator_keys())))
    dev = SimDevice(1, SECRET_A)
    intent = synth.debit(3, record.DEBIT_INTENT, card=9, atc=2, t=NOW - 60)
    send(c, dev, 1, [sale(1), sale(2, tac=bytes(4)), intent])
    s.close()
    assert cli.main(["exceptions", "--db", url]) == 0
    got = capsys.readouterr()
    lines = got.out.strip().splitlines()
    assert lines[1].startswith("1 2 ") and lines[1].endswith("bad NO tac_bad")
    assert lines[2].startswith("1 3 ") and lines[2].endswith("NO unconfirmed_debit")
    assert "settles: 1 purchases, 2.00 yuan; excluded: 1 purchases, 2.00 yuan" in got.err
    assert "unconfirmed debits: 1" in got.err
    # the same report in Chinese: column names, yes/no, reasons and the summary
    assert cli.main(["exceptions", "--db", url, "--lang", "zh"]) == 0
    zh = capsys.readouterr()
    lines = zh.out.strip().splitlines()
    assert lines[0] == "设备 序号 本地时间 卡号 卡计数器 金额(元) TAC 结算 原因"
    assert lines[1].startswith("1 2 ") and lines[1].endswith("bad 否 TAC 校验失败")
    assert lines[2].endswith("否 未确认扣款")
    assert "结算: 1 笔, 2.00 元; 不结算: 1 笔, 2.00 元" in zh.err and "未确认扣款: 1" in zh.err


def test_serve_refuses_to_start_without_tac_keys_and_a_readable_key_file(tmp_path, capsys):
    url = "sqlite:///" + str(tmp_path / "k.sqlite3")
    env = os.environ.pop("COLLECTOR_TAC_KEYS", None)
    try:
        assert cli.main(["serve", "--db", url, "--port", "0"]) == 2
    finally:
        if env is not None:
            os.environ["COLLECTOR_TAC_KEYS"] = env
    assert "clearing needs the issuers' TAC keys" in capsys.readouterr().err
    keys = tmp_path / "keys.json"
    root = crypto.TEST_ROOT_KEYS["tac"].hex()
    keys.write_text(
        json.dumps(
            {
                "31040000": {
                    "3des": {"root": root, "issuer8": "3104000000000000"},
                    "sm4": {"root": root, "issuer8": "3104000000000000"},
                }
            }
        )
    )
    os.chmod(keys, 0o644)
    with pytest.raises(ValueError, match="readable by others"):
        load_key_file(str(keys))
    assert cli.main(["serve", "--db", url, "--port", "0", "--tac-keys", str(keys)]) == 2
    assert "chmod 600" in capsys.readouterr().err
    os.chmod(keys, 0o600)
    loaded = load_key_file(str(keys))
    assert [k.alg for k in loaded[synth.ISSUER]] == ["3des", "sm4"]
    rec = record.decode(synth.purchase(1, genuine=True))
    assert Clearing(loaded).verdict(rec) == "ok"
    # an SM4 card of the same issuer verifies under the same file
    sm4 = load_keys({"31040000": {"sm4": {"root": root, "issuer8": "3104000000000000"}}})
    rec["tac"] = tac_of(sm4[synth.ISSUER][0], rec)
    assert Clearing(loaded).verdict(rec) == "ok"
    for bad in ({"31": {}}, {"31040000": {"aes": {"root": root, "issuer8": "00" * 8}}}, []):
        with pytest.raises(ValueError):
            load_keys(bad)


def test_migration_4_marks_older_double_bookings_and_backfills_exceptions(db_url):  # noqa: F811
    from tools.collector import db as dbmod

    old = dbmod.MIGRATIONS
    try:
        dbmod.MIGRATIONS = old[:3]
        dbmod.SCHEMA_VERSION = 3
        s = Store(db_url)
        old_device(s, 1, SECRET_A)
        rows = []
        for seq, serial, tac in ((1, 11, "ok"), (2, 12, "ok"), (3, 13, "unchecked")):
            raw = synth.debit(seq, record.PURCHASE, card=4, atc=77, psam_serial=serial)
            rows.append((1, seq, seq, raw, 1, 1, synth.PSAM.hex(), serial, "x", 200, tac, 0, 77))
        with s._tx() as ex:
            ex.many(
                "INSERT INTO records (device_id, seq, received, raw, kind, rtime, psam_tid, "
                "psam_serial, card_no, amount, tac_status, tsn_dup, card_atc) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        s.close()
    finally:
        dbmod.MIGRATIONS = old
        dbmod.SCHEMA_VERSION = old[-1][0]
    s = Store(db_url)
    try:
        got = {r["seq"]: r["reasons"] for r in s.exceptions()}
        assert got == {2: ["atc_dup"], 3: ["tac_nokey", "atc_dup"]}
        cols = Store.EXPORT_COLUMNS
        assert [r[cols.index("tsn_dup")] for r in s.export(1)] == [0, 1, 1]
        # migration 5 learnt the PSAM registry from the purchases held
        assert s.psams() == {synth.PSAM.hex(): 1}
    finally:
        s.close()


def test_answer_still_acknowledges_every_record_whatever_clearing_says(client, store):  # noqa: F811
    dev = SimDevice(1, SECRET_A)
    bad = [sale(i, tac=bytes(4)) for i in range(1, 6)]
    ans = send(client, dev, 1, bad)
    assert ans["status"] == up.ST_OK and ans["value"] == 5  # the validator frees them
    assert len(store.exceptions()) == 5


def test_recheck_clears_purchases_once_their_issuers_key_is_given(tmp_path, capsys):
    url = "sqlite:///" + str(tmp_path / "r.sqlite3")
    s = Store(url)
    s.provision(1, SECRET_A)
    s.register_psam(1, synth.PSAM)
    dev = SimDevice(1, SECRET_A)
    c = TestClient(create_app(s, clearing=Clearing({})))  # no key yet: held, reported
    send(c, dev, 1, [sale(1), sale(2), sale(3, tac=bytes.fromhex("01020304"))])
    assert {r["seq"]: r["reasons"] for r in s.exceptions()} == {
        1: ["tac_nokey"],
        2: ["tac_nokey"],
        3: ["tac_nokey"],
    }
    s.close()
    assert cli.main(["recheck", "--db", url, "--tac-keys", "test"]) == 0
    assert "3 purchases checked again, 3 changed, 2 now settle" in capsys.readouterr().out
    s = Store(url)
    assert {r["seq"]: r["reasons"] for r in s.exceptions()} == {3: ["tac_bad"]}
    assert s.settlement()["records"] == 2
    s.close()


def test_unconfirmed_debits_are_settled_from_the_cards_next_counter(client, store, capsys):  # noqa: F811
    dev = SimDevice(1, SECRET_A)
    In = record.DEBIT_INTENT
    batch = [
        synth.debit(1, In, card=4, atc=1, psam_serial=11, t=NOW - 600),  # 5000 -> 4800?
        synth.debit(2, In, card=5, atc=1, psam_serial=12, t=NOW - 600),
        synth.debit(3, In, card=6, atc=1, psam_serial=13, t=NOW - 600),  # card not back yet
        sale(4, card=4, atc=2, bb=4800),  # the card came back 200 fen lighter: debited
        sale(5, card=5, atc=2, bb=5000),  # the same balance: the DEBIT never happened
    ]
    send(client, dev, 1, batch)
    got = {r["seq"]: r["by_counter"] for r in store.unconfirmed()}
    assert got[1] == {"verdict": "debited", "device_id": 1, "seq": 4}
    assert got[2] == {"verdict": "not_debited", "device_id": 1, "seq": 5}
    assert got[3] is None
    assert cli.main(["unconfirmed", "--db", store.url]) == 0
    out = capsys.readouterr().out
    assert "UNCONFIRMED DEBITED (card counter +1 at device 1 seq 4)" in out
    assert "UNCONFIRMED NOT_DEBITED (card counter +1 at device 1 seq 5)" in out
    assert cli.main(["unconfirmed", "--db", store.url, "--lang", "zh"]) == 0
    zh = capsys.readouterr()
    head = "设备 序号 本地时间 卡号 卡计数器 金额(元) PSAM终端号 PSAM流水 结果"
    assert zh.out.startswith(head + "\n")
    assert "未确认 已扣款 (卡计数器+1: 设备 1 序号 4)" in zh.out and "未确认扣款 3 笔" in zh.err
