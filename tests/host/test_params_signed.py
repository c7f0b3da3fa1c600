"""Fleet-signed bundles (docs/parameters.md "Fleet signature", "Rollback") through the validator's
own firmware/params.py under CPython, signed with `cryptography` as the operator's offline
machine does (tools/params_sign.py): every refusal leaves the active set and its files alone."""

import os
import struct

import bundle
import cardlists as cl
import p256
import params
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.host.test_params_host import CFG, MemSlot
from tools import params_sign

LOST = 3104991585000011383
NEW = 2482000000000000017
SCOPE = {"operator": 7, "city": "2482", "route": 12, "group": 3}
K1 = ec.derive_private_key(0x1111_2222_3333, ec.SECP256R1())
K2 = ec.derive_private_key(0x4444_5555_6666, ec.SECP256R1())
K3 = ec.derive_private_key(0x7777_8888_9999, ec.SECP256R1())


def pub(k):
    return params_sign.public_bytes(k).hex()


def trust(keys=None):
    keys = keys if keys is not None else {1: pub(K1), 2: pub(K2)}
    return bundle.Trust(keys, operator=7, city="2482", route=12, groups=(3, 9))


def signed(version, cards=(LOST,), key=K1, kid=1, scope=None, cfg=CFG, **kw):
    body = bundle.build_body(version, 0, cfg, cl.blacklist_bytes(list(cards)))
    return params_sign.sign(key, kid, body, SCOPE if scope is None else scope, **kw)


def make(tmp_path, slots=None, keys=None):
    return params.Params(
        str(tmp_path / "params"), b"legacy-secret-16", slots=slots, trust=trust(keys)
    )


@pytest.fixture(params=[False, True], ids=["file", "slot"])
def slots(request):
    return [MemSlot(4), MemSlot(4)] if request.param else None


def installed(tmp_path, slots):
    p = make(tmp_path, slots)
    assert p.install_bytes(signed(3), 100) == (True, "activated")
    return p


def still(p, version=3):
    assert p.version == version
    assert p.blacklist.contains(LOST) and not p.blacklist.contains(NEW)


def test_p256_matches_cryptography_on_many_signatures():
    q = p256.public_key(params_sign.public_bytes(K1))
    for i in range(40):
        msg = b"m%d" % i
        sig = params_sign.sign_raw(K1, msg)
        import hashlib

        d = hashlib.sha256(msg).digest()
        assert p256.verify_digest(q, d, sig)
        assert not p256.verify_digest(q, hashlib.sha256(msg + b".").digest(), sig)
        bad = bytearray(sig)
        bad[i % 64] ^= 1 << (i % 8)
        assert not p256.verify_digest(q, d, bytes(bad))
    assert not p256.verify_digest(q, d, b"\x00" * 64)
    assert not p256.verify_digest(q, d, b"\xff" * 64)
    with pytest.raises(ValueError):
        p256.public_key(b"\x04" + b"\x01" * 64)  # not on the curve


def test_signed_bundle_installs_in_both_modes_and_survives_reload(tmp_path, slots):
    p = installed(tmp_path, slots)
    still(p)
    p.close()
    q = make(tmp_path, slots)
    assert q.load(200)
    still(q)
    assert q.install_bytes(signed(4, (NEW,)), 300) == (True, "activated")
    assert q.blacklist.contains(NEW)


@pytest.mark.parametrize(
    "what",
    [
        "chunk",
        "manifest",
        "hash",
        "signature",
        "truncated-manifest",
        "truncated-body",
        "padded",
        "unknown-key",
        "other-operator",
        "other-city",
        "other-route",
        "other-group",
        "expired",
        "not-yet",
        "old-version",
        "same-version",
        "too-big-version",
        "jump",
        "legacy-hmac",
        "body-version-lie",
    ],
)
def test_refused_and_active_set_kept(tmp_path, slots, what):
    p = installed(tmp_path, slots)
    data = bytearray(signed(4, (NEW,)))
    m = bundle.Manifest(data[: bundle.MHEAD])
    if what == "chunk":
        data[m.len + 5000] ^= 1
    elif what == "manifest":
        data[8 + 3] ^= 1  # the version
    elif what == "hash":
        data[bundle.MHEAD + 40] ^= 0x80
    elif what == "signature":
        data[m.signed_len + 10] ^= 4
    elif what == "truncated-manifest":
        data = data[: m.signed_len - 7]
    elif what == "truncated-body":
        data = data[:-1]
    elif what == "padded":
        data += b"\x00"
    elif what == "unknown-key":
        data = bytearray(signed(4, (NEW,), key=K3, kid=3))
    elif what.startswith("other-"):
        field = what.split("-")[1]
        sc = dict(
            SCOPE, **{field: {"operator": 8, "city": "2483", "route": 13, "group": 4}[field]}
        )
        data = bytearray(signed(4, (NEW,), scope=sc))
    elif what == "expired":
        data = bytearray(signed(4, (NEW,), not_after=150))
    elif what == "not-yet":
        data = bytearray(signed(4, (NEW,), not_before=5000))
    elif what == "old-version":
        data = bytearray(signed(2, (NEW,)))
    elif what == "same-version":
        data = bytearray(signed(3, (NEW,)))
    elif what == "too-big-version":
        data = bytearray(signed(0xFFFFFFFF, (NEW,)))
    elif what == "jump":
        data = bytearray(signed(3 + bundle.MAX_STEP + 1, (NEW,)))
    elif what == "legacy-hmac":
        data = bytearray(bundle.build(b"legacy-secret-16", 4, 0, CFG, cl.blacklist_bytes([NEW])))
    elif what == "body-version-lie":
        body = bytearray(bundle.build_body(4, 0, CFG, cl.blacklist_bytes([NEW])))
        struct.pack_into(">I", body, 8, 5)  # body says 5, the manifest will say 4
        unsigned = bundle.manifest_unsigned(bytes(body), 1, 4, 0, 0, 0, 7, 0x2482, 12, 3)
        data = bytearray(unsigned + params_sign.sign_raw(K1, unsigned) + bytes(body))
    ok, why = p.install_bytes(bytes(data), 200)
    assert not ok, what
    assert why
    still(p)
    assert sorted(os.listdir(tmp_path / "params")) == ["b3.bnd", "floor", "state"]
    if slots:
        # the inactive slot may hold rejected bytes; the active one is untouched
        p.close()
        q = make(tmp_path, slots)
        assert q.load(300)
        still(q)


def test_scope_zero_fields_mean_any_and_groups_match_any_of_the_device(tmp_path):
    p = make(tmp_path)
    assert p.install_bytes(signed(3, scope={"group": 9}), 1)[0]
    assert p.install_bytes(signed(4, scope={}), 1)[0]
    assert p.version == 4


def test_legacy_device_refuses_signed_and_takes_hmac(tmp_path):
    p = params.Params(str(tmp_path / "params"), b"legacy-secret-16")
    ok, why = p.install_bytes(signed(3), 1)
    assert not ok and "no fleet key" in why
    assert p.install_bytes(
        bundle.build(b"legacy-secret-16", 3, 0, CFG, cl.blacklist_bytes([LOST])), 1
    )[0]


@pytest.mark.parametrize("damaged", ["state", "floor"])
def test_version_floor_survives_damage_to_either_file(tmp_path, damaged):
    p = installed(tmp_path, None)
    assert p.install_bytes(signed(5, (NEW,)), 200)[0]
    p.close()
    path = tmp_path / "params" / damaged
    raw = bytearray(path.read_bytes())
    raw[2] ^= 0x55
    path.write_bytes(bytes(raw))
    q = make(tmp_path)
    q.load(300)
    assert q.floor["version"] == 5
    ok, why = q.install_bytes(signed(4), 400)
    assert not ok and ("rollback" in why or "not newer" in why), why
    if damaged == "state":
        # no parameters now, but the floor's own version may come again, and newer ones
        assert q.version == 0
        assert q.install_bytes(signed(5, (NEW,)), 400) == (True, "activated")
    else:
        assert q.version == 5
        assert sorted(os.listdir(tmp_path / "params")) == ["b5.bnd", "floor", "state"]


def test_both_floor_files_removed_still_leaves_the_active_entry_as_floor(tmp_path):
    p = installed(tmp_path, None)
    p.close()
    os.remove(tmp_path / "params" / "floor")
    q = make(tmp_path)
    assert q.load(10)
    assert q.floor["version"] == 3
    assert (tmp_path / "params" / "floor").exists(), "rewritten at load"


@pytest.mark.parametrize("damaged", ["state", "floor", "log", "state+floor"])
def test_version_and_key_floor_in_the_transaction_log_too(tmp_path, damaged):
    # The log (raw flash, outside littlefs) is the floor's third home: any one home, or both
    # littlefs files, may be damaged and bundle 4 is still refused after 5 (docs/parameters.md).
    import txlog

    dev = MemSlot(6)
    p = params.Params(
        str(tmp_path / "params"), b"legacy-secret-16", trust=trust(), floor_log=txlog.TxLog(dev)
    )
    p.load(1)
    assert p.install_bytes(signed(3), 100) == (True, "activated")
    assert p.install_bytes(signed(5, (NEW,), key=K2, kid=2), 200)[0]
    assert p.floor_log.param_floor == (2, 5)
    p.close()
    for name in ("state", "floor"):
        if name in damaged:
            path = tmp_path / "params" / name
            raw = bytearray(path.read_bytes())
            raw[2] ^= 0x55
            path.write_bytes(bytes(raw))
    if damaged == "log":
        dev.data[:] = b"\xff" * len(dev.data)
    j = txlog.TxLog(dev)
    q = params.Params(str(tmp_path / "params"), b"legacy-secret-16", trust=trust(), floor_log=j)
    q.load(300)
    assert q.floor == {"version": 5, "key": 2}
    ok, why = q.install_bytes(signed(4, key=K2, kid=2), 400)
    assert not ok and ("rollback" in why or "not newer" in why), why
    ok, why = q.install_bytes(signed(6, key=K1, kid=1), 400)
    assert not ok and "retired key" in why, why
    assert j.param_floor == (2, 5), "every home brought up at load"


def test_key_rotation_next_key_retires_the_old_one(tmp_path):
    # Provisioned with keys 1 (current) and 2 (next). Bundle 4, signed with key 2, brings key 3
    # as the new "next"; key 1 is retired from then on, also after a reboot.
    p = installed(tmp_path, None)
    cfg = dict(CFG, param_keys={"3": pub(K3)})
    assert p.install_bytes(signed(4, key=K2, kid=2, cfg=cfg), 10)[0]
    ok, why = p.install_bytes(signed(5, key=K1, kid=1), 20)
    assert not ok and "retired" in why, why
    p.close()
    q = make(tmp_path)
    assert q.load(30)
    ok, why = q.install_bytes(signed(5, key=K1, kid=1), 40)
    assert not ok and "retired" in why, why
    assert q.install_bytes(signed(5, key=K3, kid=3), 50)[0], "the next key from the bundle"


def test_bad_param_keys_in_a_config_are_refused(tmp_path):
    p = installed(tmp_path, None)
    cfg = dict(CFG, param_keys={"3": "04" + "00" * 64})
    ok, why = p.install_bytes(signed(4, cfg=cfg), 10)
    assert not ok and "param_keys" in why
    still(p)


def test_sign_cli_round_trip_and_legacy_migration(tmp_path, capsys):
    key = tmp_path / "fleet.pem"
    assert params_sign.main(["keygen", "--out", str(key)]) == 0
    pubhex = capsys.readouterr().out.strip()
    legacy = tmp_path / "legacy.bnd"
    legacy.write_bytes(bundle.build(b"whatever-secret!", 3, 0, CFG, cl.blacklist_bytes([LOST])))
    out = tmp_path / "signed.bnd"
    args = ["sign", str(legacy), "--key", str(key), "--key-id", "1", "-o", str(out)]
    assert params_sign.main(args + ["--operator", "7", "--city", "2482"]) == 0
    data = out.read_bytes()
    m = params_sign.check_signature(data, bytes.fromhex(pubhex))
    assert (m.version, m.operator, m.city) == (3, 7, 0x2482)
    p = params.Params(
        str(tmp_path / "p"), b"x" * 16, trust=bundle.Trust({1: pubhex}, 7, "2482", 12)
    )
    assert p.install_bytes(data, 1) == (True, "activated")
    assert (
        params_sign.main(
            ["sign", str(tmp_path / "nope"), "--key", str(key), "--key-id", "1", "-o", str(out)]
        )
        == 2
    )
