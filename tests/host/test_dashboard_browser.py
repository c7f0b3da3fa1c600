"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright logs in and
opens every page against the back office of a `make sim` run (the two-routes scenario: two buses,
routes 101 and 102, an unconfirmed debit), checks the figures against that database and saves
screenshots under bench/out/dashboard/. One browser session for the module.

Skips (saying why) when Chromium is not installed: apt-get install -y chromium chromium-driver."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "bench" / "out" / "dashboard"
PW = "correct horse battery"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not os.path.exists(CHROMIUM):
    pytest.skip(
        "Chromium not installed (apt-get install -y chromium chromium-driver): "
        "the dashboard's browser tests need it",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from tools.collector.bench import ServerThread
    from tools.collector.db import Store
    from tools.collector.web import auth
    from tools.collector.web.pages import create_web_app

    tmp = tmp_path_factory.mktemp("dashboard")
    out = tmp / "sim"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.simbench",
            "--quiet",
            "--out",
            str(out),
            "--scenario",
            str(ROOT / "tools" / "scenarios" / "two-routes.toml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dashboard: http://127.0.0.1:" in proc.stdout  # make sim's last line
    store = Store("sqlite:///%s" % (out / "collector.sqlite3"))
    auth.add_user(store, "ada", PW, "administrator")
    auth.add_user(store, "vic", PW, "viewer")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with ServerThread(create_web_app(store, roll_every=0)) as srv:
        with sync_api.sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                str(tmp / "profile"),  # a fresh --user-data-dir
                executable_path=CHROMIUM,
                headless=True,
                args=FLAGS,
                viewport={"width": 1280, "height": 900},
            )
            try:
                page = ctx.new_page()
                yield "http://127.0.0.1:%d" % srv.port, page, store
            finally:
                ctx.close()
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)


def login(base, page, name):
    page.goto(base + "/login?lang=en")
    page.fill("#user", name)
    page.fill("#password", PW)
    page.click("#submit")
    page.wait_for_load_state()


def as_user(base, page, name):
    """Each test starts as the user it needs, whichever test ran before (or none)."""
    page.goto(base + "/fleet?lang=en")
    who = page.locator("#who")
    if who.count() and who.inner_text().startswith(name + " "):
        return
    if who.count():
        page.click("#logout")
        page.wait_for_url(re.compile(r".*/login.*"))
    login(base, page, name)


def test_login_and_fleet(site):
    base, page, store = site
    page.context.clear_cookies()  # logged out, whatever ran before
    page.goto(base + "/fleet")
    assert "/login" in page.url  # not logged in
    page.fill("#user", "ada")
    page.fill("#password", "wrong password")
    page.click("#submit")
    assert page.locator("#bad-login").is_visible()
    login(base, page, "ada")
    assert page.url.endswith("/fleet")
    with store._tx(write=False) as ex:
        devices = [r[0] for r in ex.all("SELECT device_id FROM devices ORDER BY 1")]
    rows = page.locator("#fleet tbody tr")
    assert rows.count() == len(devices) == 2
    routes = {
        int(rows.nth(i).get_attribute("data-device")): rows.nth(i).locator(".route").inner_text()
        for i in range(rows.count())
    }
    assert sorted(routes.values()) == ["101", "102"]
    page.screenshot(path=str(SHOTS / "fleet.png"), full_page=True)
    # The route filter (app.js submits the form when the choice changes).
    page.select_option("#route", "102")
    page.wait_for_url(re.compile(r".*route=102.*"))
    assert page.locator("#fleet tbody tr").count() == 1


def test_device_page(site):
    base, page, store = site
    as_user(base, page, "ada")
    with store._tx(write=False) as ex:
        dev, n, amt = ex.one(
            "SELECT device_id, COUNT(*), SUM(amount) FROM records WHERE kind IN (1, 2) "
            "AND tsn_dup = 0 GROUP BY device_id ORDER BY device_id LIMIT 1"
        )
    page.goto(base + "/device/%d?lang=en" % dev)
    assert page.locator("#device-id").inner_text() == str(dev)
    assert page.locator("#device-n").inner_text() == str(n)
    assert page.locator("#device-amount").inner_text() == "%.2f" % (amt / 100)
    assert page.locator("#history tbody tr").count() >= 1  # its starts at least
    page.screenshot(path=str(SHOTS / "device.png"), full_page=True)


def test_money_matches_the_database(site):
    base, page, store = site
    as_user(base, page, "ada")
    with store._tx(write=False) as ex:
        n, amt = ex.one(
            "SELECT COUNT(*), SUM(amount) FROM records WHERE kind IN (1, 2) AND tsn_dup = 0"
        )
        n_exc = ex.one(
            "SELECT COUNT(*) FROM records WHERE exceptions IS NOT NULL AND kind IN (1, 2)"
        )[0]
    open_intents = [i for i in store.unconfirmed()]
    page.goto(base + "/money?lang=en&from=2026-01-01&to=2026-12-31")
    assert page.locator("#total-n").inner_text() == str(n)
    assert page.locator("#total-amount").inner_text() == "%.2f" % (amt / 100)
    assert page.locator("#by-route tbody tr").count() == 2
    assert page.locator("svg.chart").count() == 3
    assert page.locator("#exceptions tbody tr").count() == n_exc
    assert page.locator("#open-count").inner_text() == str(len(open_intents))
    page.screenshot(path=str(SHOTS / "money.png"), full_page=True)


def test_administrator_reviews_an_exception(site):
    base, page, store = site
    as_user(base, page, "ada")
    page.goto(base + "/money?lang=en")
    first = page.locator("#exceptions tbody tr").first
    key = first.get_attribute("data-key")
    first.locator("select[name=status]").select_option("accepted")
    first.locator("button").click()
    page.wait_for_load_state()
    dev, seq = map(int, key.split("/"))
    with store._tx(write=False) as ex:
        assert ex.one(
            "SELECT status FROM web_review WHERE device_id = ? AND seq = ?", (dev, seq)
        ) == ("accepted",)
    assert "accepted" in page.locator('tr[data-key="%s"] .status' % key).inner_text()


def test_parameters_page(site):
    base, page, store = site
    as_user(base, page, "vic")
    page.goto(base + "/params?lang=en")
    with store._tx(write=False) as ex:
        versions = {r[0] for r in ex.all("SELECT version FROM bundles")}
    shown = {
        int(v)
        for v in page.locator("#bundles tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.version)"
        )
    }
    assert shown == versions and versions
    assert page.locator("#param-devices tbody tr").count() == 2
    page.screenshot(path=str(SHOTS / "params.png"), full_page=True)


def test_viewer_in_chinese_cannot_change_anything(site):
    base, page, _store = site
    as_user(base, page, "vic")
    page.goto(base + "/money?lang=zh")
    assert "收入" in page.title() or "收入" in page.content()
    assert page.locator("form[action='/money/review']").count() == 0
    page.screenshot(path=str(SHOTS / "money-zh-viewer.png"), full_page=True)
