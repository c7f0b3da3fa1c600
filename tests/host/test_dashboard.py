"""The dashboard (tools/collector/web) over HTTP: logins, sessions, CSRF, roles, the pages'
figures against the database, the summary tables (rollup) and the user command. The browser
run is tests/host/test_dashboard_browser.py."""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashboard_data  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from tests.host.pg import pg_server  # noqa: E402, F401  (the fixture)
from tools.collector import cli  # noqa: E402
from tools.collector.db import Store  # noqa: E402
from tools.collector.web import auth, rollup  # noqa: E402
from tools.collector.web.pages import create_web_app  # noqa: E402

PW = "correct horse battery"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    """The same small back office on SQLite (make sim's) and PostgreSQL (a city's)."""
    if request.param == "sqlite":
        store = Store("sqlite:///%s/c.sqlite3" % tmp_path_factory.mktemp("dash"))
    else:
        store = Store(request.getfixturevalue("pg_server").create_db("dashboard"))
    rows = dashboard_data.fill(store)
    for name, role in (("ada", "administrator"), ("otto", "operator"), ("vic", "viewer")):
        auth.add_user(store, name, PW, role)
    app = create_web_app(store, roll_every=0)
    yield store, app, rows
    store.close()


def client(app):
    return TestClient(app, base_url="https://testserver", follow_redirects=True)


def csrf_of(html):
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login(app, name, password=PW):
    c = client(app)
    r = c.get("/login")
    r = c.post("/login", data={"csrf": csrf_of(r.text), "user": name, "password": password})
    return c, r


def test_pages_need_a_login(world):
    _store, app, _ = world
    c = client(app)
    for path in ("/fleet", "/device/1001", "/money", "/params"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_login_sets_a_secure_session_cookie(world):
    _store, app, _ = world
    c = client(app)
    r = c.get("/login")
    r = c.post(
        "/login",
        data={"csrf": csrf_of(r.text), "user": "ada", "password": PW, "next": "/money"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/money"
    cookie = [v for k, v in r.headers.multi_items() if k == "set-cookie" and "tu_session" in v][0]
    for attr in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert attr.lower() in cookie.lower()
    assert "content-security-policy" in r.headers


def test_wrong_password_and_unknown_user_get_the_same_answer(world):
    _store, app, _ = world
    _c, r1 = login(app, "ada", "wrong password!!")
    _c, r2 = login(app, "nobody", "wrong password!!")
    assert r1.status_code == r2.status_code == 401
    assert 'id="bad-login"' in r1.text and 'id="bad-login"' in r2.text


def test_login_without_its_csrf_token_is_refused(world):
    _store, app, _ = world
    c = client(app)
    c.get("/login")
    r = c.post("/login", data={"csrf": "forged", "user": "ada", "password": PW})
    assert r.status_code == 403


def test_the_database_keeps_no_session_token(world):
    store, app, _ = world
    c, _ = login(app, "vic")
    token = c.cookies.get("tu_session")
    with store._tx(write=False) as ex:
        held = [r[0] for r in ex.all("SELECT token FROM web_sessions")]
    assert token and token not in held


def test_logout_ends_the_session(world):
    _store, app, _ = world
    c, r = login(app, "vic")
    token = c.cookies.get("tu_session")
    r = c.post("/logout", data={"csrf": csrf_of(r.text)})
    assert "/login" in str(r.url)
    c2 = client(app)
    c2.cookies.set("tu_session", token, domain="testserver.local")
    assert c2.get("/fleet", follow_redirects=False).status_code == 303


def test_a_device_secret_opens_no_page(world):
    _store, app, _ = world
    c = client(app)
    c.cookies.set("tu_session", bytes(32).hex())
    assert c.get("/fleet", follow_redirects=False).status_code == 303
    r = c.get(
        "/fleet", headers={"Authorization": "Bearer " + bytes(32).hex()}, follow_redirects=False
    )
    assert r.status_code == 303


def test_fleet_shows_every_device_and_filters_by_route(world):
    store, app, _ = world
    c, _ = login(app, "vic")
    r = c.get("/fleet?lang=en")
    assert 'data-device="1001"' in r.text and 'data-device="1002"' in r.text
    assert "watchdog" in r.text and "PSAM failed" in r.text  # the start of bus 1
    assert re.search(r"clock-unset\">1</span> untrusted records", r.text)  # bus 2: unset clock
    r = c.get("/fleet?route=88")
    assert 'data-device="1002"' in r.text and 'data-device="1001"' not in r.text


def test_money_figures_match_the_database(world):
    store, app, _ = world
    c, _ = login(app, "otto")
    r = c.get("/money?from=2026-01-01&to=2026-12-31")
    with store._tx(write=False) as ex:
        n, total = ex.one(
            "SELECT COUNT(*), SUM(amount) FROM records WHERE kind IN (1, 2) AND tsn_dup = 0"
        )
        by_route = {}
        for raw, amt in ex.all("SELECT raw, amount FROM records WHERE kind IN (1, 2)"):
            k = int.from_bytes(bytes(raw)[53:55], "big")
            by_route[k] = by_route.get(k, 0) + amt
    assert re.search(r'id="total-amount">%.2f<' % (total / 100), r.text)
    assert re.search(r'id="total-n">%d<' % n, r.text)
    for route, amt in by_route.items():
        assert re.search(
            r'data-route="%d"><td>%d</td><td class="num">\d+</td><td class="num">%.2f<'
            % (route, route, amt / 100),
            r.text,
        )
    assert 'data-key="1001/3"' in r.text and 'data-key="1002/3"' in r.text
    assert '<small id="open-count">1<' in r.text  # the intent of bus 1
    assert "<svg" in r.text


def test_viewer_sees_card_numbers_masked(world):
    _store, app, _ = world
    c, _ = login(app, "vic")
    r = c.get("/money?lang=en")
    assert "31040000000000000003" not in r.text and "3104…0003" in r.text


def test_only_an_administrator_changes_anything(world):
    store, app, _ = world
    for name in ("vic", "otto"):
        c, r = login(app, name)
        r = c.get("/money")
        assert "/money/review" not in r.text
        r = c.post(
            "/money/review",
            data={"csrf": csrf_of(r.text), "device": 1001, "seq": 3, "status": "accepted"},
        )
        assert r.status_code == 403
    c, r = login(app, "ada")
    r = c.get("/money")
    # Without the CSRF token: refused, nothing written.
    r2 = c.post("/money/review", data={"device": 1001, "seq": 3, "status": "accepted"})
    assert r2.status_code == 403
    r = c.post(
        "/money/review",
        data={"csrf": csrf_of(r.text), "device": 1001, "seq": 3, "status": "written_off"},
    )
    assert r.status_code == 200
    with store._tx(write=False) as ex:
        assert ex.one(
            "SELECT status, by_user FROM web_review WHERE seq = 3 AND device_id = 1001"
        ) == ("written_off", "ada")
    r = c.post(
        "/money/review", data={"csrf": csrf_of(r.text), "device": 1001, "seq": 2, "status": "x"}
    )
    assert r.status_code == 400


def test_device_page_shows_its_history(world):
    _store, app, _ = world
    c, _ = login(app, "otto")
    r = c.get("/device/1001?lang=en")
    assert 'id="device-amount">7.50<' not in r.text  # the bad-TAC purchase is still revenue
    assert 'id="device-n">4<' in r.text and "cause=watchdog" in r.text
    assert c.get("/device/999").status_code == 404
    assert c.get("/device/abc").status_code == 404


def test_parameters_page_lists_bundles_and_rollout(world):
    store, app, _ = world
    store.publish(3, b"bundle bytes", target=1001)
    c, _ = login(app, "vic")
    r = c.get("/params?lang=en")
    assert 'data-version="3"' in r.text and "Validator 1001" in r.text
    assert 'id="param-devices"' in r.text
    # A fleet version rolled out to group 7, where bus 1002 is and says it holds it.
    from tools.collector import bundles

    bundles.set_groups(store, 1002, [7])
    with store._tx() as ex:
        ex.run(
            "INSERT INTO bundles (target, version, base, data, published) VALUES (0, 5, 0, ?, 1)",
            (b"fleet",),
        )
        ex.run("INSERT INTO param_rollout (version, grp, started) VALUES (5, 7, 1)")
        ex.run("DELETE FROM device_params WHERE device_id = 1002")
        ex.run("INSERT INTO device_params (device_id, have, asked) VALUES (1002, 5, 1)")
    r = c.get("/params?lang=en")
    row = re.search(r'<tr data-version="5" data-group="7"[^>]*>(.*?)</tr>', r.text).group(1)
    assert re.findall(r'class="num[^"]*">(\d+)<', row) == ["5", "7", "1", "1"]


def test_chinese_by_default_english_on_request(world):
    _store, app, _ = world
    c, _ = login(app, "vic")
    assert "车队" in c.get("/fleet").text
    assert "Fleet" in c.get("/fleet?lang=en").text
    assert "Fleet" in c.get("/fleet").text  # kept in a cookie


def test_rollup_counts_each_record_once(world):
    store, _app, rows = world
    assert rollup.rollup(store) == 0  # nothing new
    with store._tx(write=False) as ex:
        n, amt = ex.one("SELECT SUM(n), SUM(amount) FROM web_daily_fleet")
    money = [r for dev in rows.values() for r in dev if r[1] in (1, 2)]
    assert (n, amt) == (len(money), sum(r[2] for r in money))
    assert rollup.rebuild(store) == sum(len(v) for v in rows.values())
    with store._tx(write=False) as ex:
        assert ex.one("SELECT SUM(n), SUM(amount) FROM web_daily_fleet") == (n, amt)


def test_rollup_waits_for_a_gap_to_be_filled(tmp_path):
    from tools.collector import synth

    store = Store("sqlite:///%s/g.sqlite3" % tmp_path)
    store.provision(5, secret=bytes(32))
    raw = synth.purchase(2)
    f = dashboard_data._fields(raw)
    store.ingest(5, 1, 0, 2, [(2, raw, f)])  # seq 1 missing
    assert rollup.rollup(store) == 0
    raw1 = synth.purchase(1)
    store.ingest(5, 2, 0, 1, [(1, raw1, dashboard_data._fields(raw1))])
    assert rollup.rollup(store) == 2
    store.close()


def test_user_command(tmp_path, capsys, monkeypatch):
    import io

    db = "sqlite:///%s/u.sqlite3" % tmp_path
    monkeypatch.setattr("sys.stdin", io.StringIO(PW + "\n"))
    assert cli.main(["user", "--db", db, "kim", "--role", "operator", "--password-stdin"]) == 0
    assert cli.main(["user", "--db", db, "--list"]) == 0
    assert "kim\toperator" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["user", "--db", db, "kim", "--role", "operator", "--password-stdin"]) == 2
    assert "at least 10" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["user", "--db", db, "kim", "--role", "boss", "--password-stdin"])
    assert cli.main(["user", "--db", db, "kim", "--remove"]) == 0
    assert cli.main(["rollup", "--db", db]) == 0
    assert cli.main(["rollup", "--db", db, "--rebuild"]) == 0
    assert "0 records summarised" in capsys.readouterr().out


def test_open_intents_close_whichever_arrives_first(tmp_path):
    import record

    from tools.collector import synth

    store = Store("sqlite:///%s/o.sqlite3" % tmp_path)
    for dev in (1, 2, 3, 4):
        store.provision(dev, secret=bytes(32))

    def send(dev, seq, kind, card, atc):
        raw = synth.debit(seq, kind, card=card, atc=atc, psam_serial=dev * 100 + seq)
        store.ingest(dev, seq, 0, seq, [(seq, raw, dashboard_data._fields(raw))])

    def open_keys():
        with store._tx(write=False) as ex:
            return sorted(tuple(r) for r in ex.all("SELECT card_no, card_atc FROM web_open"))

    # The intent first (bus 1), its outcome later on another bus (2).
    send(1, 1, record.DEBIT_INTENT, 9, 5)
    rollup.rollup(store)
    assert open_keys() == [("31040000000000000009", 5)]
    send(2, 1, record.PURCHASE_RECOVERED, 9, 5)
    rollup.rollup(store)
    assert open_keys() == []
    # The outcome first (a void on bus 3), the intent summarised after it (bus 4): never open.
    send(3, 1, record.DEBIT_VOID, 8, 3)
    rollup.rollup(store)
    send(4, 1, record.DEBIT_INTENT, 8, 3)
    rollup.rollup(store)
    assert open_keys() == []
    store.close()


def test_failed_logins_are_throttled(world):
    _store, app, _ = world
    for _ in range(5):
        _c, r = login(app, "otto", "not the password")
        assert r.status_code == 401
    _c, r = login(app, "otto")  # the right password, too late
    assert r.status_code == 429 and "too many failed logins" in r.text
    _c, r = login(app, "vic")  # another user is not locked out
    assert r.status_code == 200 and 'id="who"' in r.text
    app.state.web.throttle = auth.Throttle()  # (as after THROTTLE_S)
    _c, r = login(app, "otto")
    assert r.status_code == 200


def test_throttle_forgets_old_failures():
    now = [0.0]
    t = auth.Throttle(clock=lambda: now[0])
    for _ in range(auth.THROTTLE_N):
        t.failed("eve", "10.0.0.9")
    assert t.blocked("EVE", "10.0.0.1")  # names compared without case
    now[0] += auth.THROTTLE_S + 1
    assert not t.blocked("eve", "10.0.0.9")
    for i in range(4 * auth.THROTTLE_N):
        t.failed("u%d" % i, "10.0.0.9")  # one address guessing many names
    assert t.blocked("someone", "10.0.0.9") and not t.blocked("someone", "10.0.0.8")


def test_clock_off_by():
    from tools.collector.web.pages import off_by

    assert off_by(None) == off_by(0) == off_by(-300) == ""
    assert off_by(-471316) == "-5.5 d" and off_by(7200) == "+2.0 h" and off_by(301) == "+5.0 min"
