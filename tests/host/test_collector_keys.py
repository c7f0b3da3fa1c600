"""Secrets: the database holds no usable device key (each is derived from a master key kept
outside it), files with secrets are created 0600, no secret travels on a command line."""

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import uplink_proto as up

from tests.host.pg import pg_server  # noqa: F401  (fixture)
from tests.host.test_collector import db_url, recs  # noqa: F401
from tools.collector import cli
from tools.collector.app import create_app
from tools.collector.bench import SimDevice
from tools.collector.db import Store
from tools.collector.keys import KeyError_, KeySource, from_env, new_master_file

from .test_collector import TestClient

ROOT = Path(__file__).resolve().parents[2]
MASTER = bytes(range(200, 232))


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_derived_keys_work_and_the_database_holds_none(db_url):  # noqa: F811
    s = Store(db_url, keys=KeySource(MASTER))
    try:
        key = s.provision(3)
        assert len(key) == 32 and key == KeySource(MASTER).device_key(3, 1)
        with s._tx(write=False) as ex:
            stored, version, kcv = ex.one(
                "SELECT secret, key_version, kcv FROM devices WHERE device_id = 3"
            )
        assert bytes(stored) == b"" and version == 1 and len(bytes(kcv)) == 3
        assert key not in bytes(kcv) and bytes(kcv) not in key
        dev = SimDevice(3, key)
        c = TestClient(create_app(s))
        r = c.post("/v1/upload", content=dev.upload_body(1, recs(1, 3)))
        assert dev.answer(r.content)["value"] == 3
        assert s.check_keys() == (1, 0)
        # the same database under another master key: refused before it serves anyone
        other = Store(db_url, keys=KeySource(bytes(32)))
        with pytest.raises(RuntimeError, match="does not match"):
            other.check_keys()
        other.close()
        nokey = Store(db_url)
        with pytest.raises(RuntimeError, match="no master key"):
            nokey.check_keys()
        nokey.close()
    finally:
        s.close()


def test_reprovisioning_gives_a_new_key_and_unlocks_a_counter_at_its_end(db_url):  # noqa: F811
    s = Store(db_url, keys=KeySource(MASTER))
    try:
        old = s.provision(4)
        c = TestClient(create_app(s))
        dev = SimDevice(4, old)
        # a jump to the end of the range is refused: the device is told its real counter
        jump = dev.upload_body(1, recs(1, 2), counter=0xFFFFFFFF)
        r = c.post("/v1/upload", content=jump)
        assert r.status_code == 409 and dev.answer(r.content)["server_counter"] == 0
        assert s.count(4) == 0
        # a database whose counter reached the end anyway (an older collector let it): stuck
        with s._tx() as ex:
            ex.run("UPDATE devices SET counter = ? WHERE device_id = 4", (0xFFFFFFFF - 1,))
        c.app.state.service.cache.ttl = 0
        body = dev.upload_body(1, recs(1, 2), counter=0xFFFFFFFF)
        assert c.post("/v1/upload", content=body).status_code == 200
        stuck = dev.upload_body(3, recs(3, 4), counter=0xFFFFFFFF)
        assert c.post("/v1/upload", content=stuck).status_code == 409  # nothing is above it
        new = s.provision(4)
        assert new != old and s.device(4)["counter"] == 0  # a collector rereads within 5 s
        assert c.post("/v1/upload", content=body).status_code == 401  # the old key is dead
        dev = SimDevice(4, new)
        dev.acked = 2
        r = c.post("/v1/upload", content=dev.upload_body(3, recs(3, 4)))
        assert dev.answer(r.content)["value"] == 4
    finally:
        s.close()


def test_database_and_key_files_are_private(tmp_path):
    db = tmp_path / "c.sqlite3"
    s = Store("sqlite:///" + str(db))
    s.provision(1, bytes(range(32)))
    s.close()
    assert mode(db) == 0o600
    for extra in ("-wal", "-shm"):
        if os.path.exists(str(db) + extra):
            assert mode(str(db) + extra) == 0o600
    legacy = tmp_path / "old.sqlite3"
    legacy.write_bytes(b"")
    os.chmod(legacy, 0o644)
    Store("sqlite:///" + str(legacy)).close()
    assert mode(legacy) == 0o600
    mk = tmp_path / "mk"
    new_master_file(str(mk))
    assert mode(mk) == 0o600 and len(bytes.fromhex(mk.read_text().strip())) == 32
    with pytest.raises(FileExistsError):
        new_master_file(str(mk))  # never overwrites a master key
    os.chmod(mk, 0o640)
    with pytest.raises(KeyError_, match="readable by others"):
        from_env(str(mk), env={})
    os.chmod(mk, 0o600)
    assert isinstance(from_env(str(mk), env={}), KeySource)
    assert from_env(env={"COLLECTOR_MASTER_KEY": MASTER.hex()}).device_key(1, 1)
    assert from_env(env={}) is None
    for bad in ({"COLLECTOR_MASTER_KEY": "abcd"}, {"COLLECTOR_MASTER_KEY": "zz"}):
        with pytest.raises(KeyError_):
            from_env(env=bad)
    hsm = from_env(source="tests.host.test_collector_keys:FakeHsm", env={})
    assert hsm.device_key(1, 1) == KeySource(MASTER).device_key(1, 1)


class FakeHsm(KeySource):
    """What --key-source module:name loads: an object with device_key() and kcv()."""

    def __init__(self):
        super().__init__(MASTER)


def test_provision_tool_registers_without_a_secret_on_a_command_line(tmp_path):
    mk = tmp_path / "mk"
    new_master_file(str(mk))
    db = "sqlite:///" + str(tmp_path / "bo.sqlite3")
    out = tmp_path / "config.json"
    out.write_text("{}")
    os.chmod(out, 0o644)  # an older, readable file is tightened too
    args = ["--device", "9", "--route", "12", "--city", "2482"]
    args += ["--institution", "1200290000000000", "--collector", "http://127.0.0.1:8080"]
    args += ["--out", str(out), "--collector-db", db, "--master-key-file", str(mk)]
    proc = subprocess.run(
        [sys.executable, "-m", "tools.provision", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert mode(out) == 0o600
    cfg = json.loads(out.read_text())
    keys = from_env(str(mk), env={})
    assert bytes.fromhex(cfg["secret"]) == keys.device_key(9, 1)
    s = Store(db, keys=keys)
    assert s.secret(9) == bytes.fromhex(cfg["secret"])
    s.close()
    # nothing spawns a child with the secret in its argv any more
    src = (ROOT / "tools" / "provision.py").read_text()
    assert '"--secret"' not in src and "subprocess.run(cmd, check=True, cwd=ROOT)" not in src


def test_cli_secret_import_reads_stdin(tmp_path, monkeypatch, capsys):
    url = "sqlite:///" + str(tmp_path / "i.sqlite3")
    monkeypatch.setattr("sys.stdin", io.StringIO("00" * 32 + "\n"))
    assert cli.main(["provision", "--db", url, "--device", "2", "--secret-stdin"]) == 0
    assert "device 2 secret " + "00" * 32 in capsys.readouterr().out
    s = Store(url)
    assert s.check_keys() == (0, 1)  # reported at start: one secret still stored
    s.close()
    assert up.MAC_LEN == 32


def _cert(tmp_path, ca):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "back office CA")])
    now = datetime.datetime(2026, 1, 1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / ("ca.pem" if ca else "leaf.pem")
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path, cert.public_bytes(Encoding.DER)


def test_provision_writes_the_back_offices_ca_as_der(tmp_path):
    pem, der = _cert(tmp_path, True)
    leaf, _ = _cert(tmp_path, False)
    out = tmp_path / "dev" / "config.json"
    out.parent.mkdir()
    args = ["--device", "9", "--route", "12", "--city", "2482"]
    args += ["--institution", "1200290000000000", "--collector", "https://bo.example"]
    run = [sys.executable, "-m", "tools.provision", *args, "--out", str(out)]
    proc = subprocess.run(run + ["--ca-cert", str(pem)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out.parent / "ca.der").read_bytes() == der
    proc = subprocess.run(run + ["--ca-cert", str(leaf)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "not a CA certificate" in proc.stderr
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a certificate")
    proc = subprocess.run(run + ["--ca-cert", str(junk)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and "not an X.509 certificate" in proc.stderr
