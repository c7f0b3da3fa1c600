"""Publishing parameters (tools/collector/bundles.py, docs/parameters.md "Publishing"): the CLI
checks a bundle before storing it, nothing published can turn upload answers into errors (the
4294967296 case of issue 19), and a rollout goes to a group first, then to everyone, with its
state visible."""

import sqlite3

import bundle
import cardlists as cl
import pytest
import uplink_proto as up
from starlette.testclient import TestClient

from tests.host.pg import pg_server  # noqa: F401  (fixture)
from tests.host.test_collector import SECRET_A, SECRET_B, db_url, upload  # noqa: F401
from tests.host.test_params_host import CFG
from tests.host.test_params_signed import K1, K2, SCOPE, pub, signed
from tools import params_sign
from tools.collector import bundles, cli
from tools.collector.app import create_app
from tools.collector.bench import SimDevice
from tools.collector.db import Store


@pytest.fixture
def url(tmp_path):
    u = "sqlite:///" + str(tmp_path / "p.sqlite3")
    s = Store(u)
    s.provision(1, SECRET_A, "bus 1")
    s.provision(2, SECRET_B, "bus 2")
    s.close()
    return u


def put(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def publish(url, path, *extra):
    return cli.main(["publish", "--db", url, path, "--param-key", "1:" + pub(K1), *extra])


def ask(client, dev, have):
    r = client.post("/v1/params", content=dev.params_body(have))
    assert r.status_code == 200, r.text
    return dev.answer(r.content, up.T_PARAMS)


def test_rollout_to_a_group_first_then_everyone_with_state_visible(url, tmp_path, capsys):
    assert cli.main(["groups", "--db", url, "--device", "1", "--group", "3"]) == 0
    assert publish(url, put(tmp_path, "v3", signed(3)), "--all") == 0
    assert (
        publish(
            url,
            put(tmp_path, "v4", signed(4, (cl.card_key("2482000000000000017"),))),
            "--group",
            "3",
        )
        == 0
    )
    capsys.readouterr()
    store = Store(url)
    client = TestClient(create_app(store))
    d1, d2 = SimDevice(1, SECRET_A), SimDevice(2, SECRET_B)
    assert upload(client, d1, 1, 1)["extra"] == 4  # group 3: the new version
    assert upload(client, d2, 1, 1)["extra"] == 3  # the rest: still 3
    ans = ask(client, d2, 0)
    # 16.6 KB: above INLINE_MAX, so the answer says "by ranges" and how long
    assert (ans["pkind"], ans["value"]) == (up.P_CHUNKED, 3)
    assert int.from_bytes(ans["payload"], "big") == len(signed(3))
    assert ask(client, d1, 3)["value"] == 4
    assert cli.main(["rollout-status", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "version 3: rolled out to all; 2 of 2 devices hold it" not in out  # they said 0 / 3
    assert "version 4: rolled out to 3; 0 of 1 devices hold it; waiting: 1" in out
    ask(client, d1, 4)
    assert cli.main(["rollout", "--db", url, "--version", "4", "--all"]) == 0
    out = capsys.readouterr().out
    assert "version 4: rolled out to all, 3; 1 of 2 devices hold it; waiting: 2" in out
    assert upload(client, d2, 2, 2)["extra"] == 4
    st = bundles.status(store)
    assert [r["version"] for r in st] == [3, 4]
    store.close()


@pytest.mark.parametrize(
    "what,why",
    [
        ("junk", "not a parameter bundle"),
        ("tampered-chunk", "does not match its hash"),
        ("tampered-manifest", "bad signature"),
        ("other-key", "signed by key 2"),
        ("truncated", "truncated"),
        ("old", "not above the published"),
        ("jump", "jumps more than"),
        ("too-big", "exceeds"),
        ("bad-config", "no routes"),
        ("legacy-for-fleet", "one device"),
        ("no-group", "--group"),
    ],
)
def test_publish_refuses_and_stores_nothing(url, tmp_path, capsys, what, why):
    assert publish(url, put(tmp_path, "v3", signed(3)), "--all") == 0
    data = bytearray(signed(5))
    m = bundle.Manifest(data[: bundle.MHEAD])
    extra = ["--all"]
    if what == "junk":
        data = b"params" * 10
    elif what == "tampered-chunk":
        data[m.len + 300] ^= 1
    elif what == "tampered-manifest":
        data[bundle.MHEAD + 3] ^= 1
    elif what == "other-key":
        data = signed(5, key=K2, kid=2)
    elif what == "truncated":
        data = data[: m.len - 3]
    elif what == "old":
        data = signed(3)
    elif what == "jump":
        data = signed(4 + bundle.MAX_STEP)
    elif what == "too-big":
        extra += ["--max-size", "1000"]
    elif what == "bad-config":
        body = bundle.build_body(
            5, 0, {"settings": {}, "whitelist": {}, "fares": {}}, cl.blacklist_bytes([1])
        )
        data = params_sign.sign(K1, 1, body, SCOPE)
    elif what == "legacy-for-fleet":
        data = bundle.build(SECRET_A, 5, 0, CFG, cl.blacklist_bytes([1]))
    elif what == "no-group":
        extra = []
    capsys.readouterr()
    assert publish(url, put(tmp_path, "x", bytes(data)), *extra) == 2
    assert why in capsys.readouterr().err
    con = sqlite3.connect(url[len("sqlite:///") :])
    assert con.execute("SELECT version FROM bundles").fetchall() == [(3,)]
    con.close()


def test_version_4294967296_never_reaches_the_store_and_a_bad_row_cannot_fail_uploads(
    url, tmp_path, capsys
):
    junk = put(tmp_path, "junk", b"junk" * 100)
    assert cli.main(["publish", "--db", url, junk, "--version", "4294967296", "--all"]) == 2
    store = Store(url)
    for v in (0, 4294967296, 0xFFFFFFFF, bundle.VERSION_MAX + 1):
        with pytest.raises(ValueError):
            store.publish(v, b"x")
    # A row an older collector let in (or a hand edit): uploads are still acknowledged.
    bundles.ensure(store)
    with store._tx() as ex:
        ex.run(
            "INSERT INTO bundles (target, version, base, data, published) "
            "VALUES (0, 4294967296, 0, ?, 0)",
            (b"x",),
        )
        ex.run("INSERT INTO param_rollout (version, grp, started) VALUES (4294967296, 0, 0)")
    client = TestClient(create_app(store))
    dev = SimDevice(1, SECRET_A)
    ans = upload(client, dev, 1, 3)
    assert (ans["value"], ans["extra"]) == (3, 0)
    assert ask(client, dev, 0)["pkind"] == up.P_NONE
    # and a bundle table that cannot be read at all
    with store._tx() as ex:
        ex.run("DROP TABLE param_rollout")
    ans = upload(client, dev, 4, 5)
    assert (ans["value"], ans["extra"]) == (5, 0)
    store.close()


def test_published_signed_bundle_installs_on_a_validator(url, tmp_path):
    import params

    assert publish(url, put(tmp_path, "v3", signed(3)), "--all") == 0
    store = Store(url)
    kind, version, _, data = store.bundle_for(1, 0)
    assert (kind, version) == ("chunked", 3)
    total = int.from_bytes(data, "big")
    token = up.bundle_token(SECRET_A, 1, 3)
    parts = []
    for a in range(0, total, 5000):
        b = min(total, a + 5000) - 1
        status, headers, body = bundles.serve(store, 3, 1, token, "bytes=%d-%d" % (a, b))
        assert status == 206 and headers["Content-Range"] == "bytes %d-%d/%d" % (a, b, total)
        parts.append(body)
    data = b"".join(parts)
    with store._tx(write=False) as ex:
        assert data == bytes(ex.one("SELECT data FROM bundles WHERE version = 3")[0])
    # what the endpoint refuses
    assert bundles.serve(store, 3, 1, "00" * 16, "bytes=0-9")[0] == 401
    # an unknown device: the same answer as a wrong token (no device ids given away)
    assert bundles.serve(store, 3, 9, token, "bytes=0-9") == bundles.serve(
        store, 3, 1, "00" * 16, "bytes=0-9"
    )
    assert bundles.serve(store, 4, 1, up.bundle_token(SECRET_A, 1, 4), "bytes=0-9")[0] == 404
    assert bundles.serve(store, 3, 1, token, None)[0] == 416
    assert bundles.serve(store, 3, 1, token, "bytes=0-%d" % total)[0] == 416
    assert bundles.serve(store, 3, 1, token, "bytes=0-%d" % bundles.MAX_RANGE)[0] == 416
    client = TestClient(create_app(store))
    r = client.get("/v1/bundle/3?d=1&t=%s" % token, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert client.get("/v1/bundle/3?d=x&t=%s" % token).status_code == 400
    p = params.Params(
        str(tmp_path / "params"),
        b"x" * 16,
        trust=bundle.Trust({1: pub(K1)}, 7, "2482", 12, (3,)),
    )
    assert p.install_bytes(data, 1) == (True, "activated")
    store.close()


def test_ranges_come_from_the_database_on_sqlite_and_postgres(db_url):  # noqa: F811
    store = Store(db_url)
    store.provision(1, SECRET_A, "bus 1")
    data = signed(3)
    store.publish(3, data)
    token = up.bundle_token(SECRET_A, 1, 3)
    got = b"".join(
        bundles.serve(store, 3, 1, token, "bytes=%d-%d" % (a, min(len(data), a + 4099) - 1))[2]
        for a in range(0, len(data), 4099)
    )
    assert got == data
    assert bundles.serve(store, 3, 1, token, "bytes=5-4")[0] == 416
    store.close()
