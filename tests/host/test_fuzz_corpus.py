"""Coverage-guided fuzz targets (issue 26, tools/fuzz/): every committed corpus seed and every
regression input of every target runs through its one_input() here, so `make test` keeps each
finding fixed and each seed honest without atheris running. `make fuzz` runs the fuzzer itself
(python -m tools.fuzz.run, bench/fuzz.json). docs/robustness.md."""

import importlib
import os

import pytest

from tools.fuzz import run, shim
from tools.fuzz.targets import NAMES

CASES = [(n, p) for n in NAMES for p in run.inputs_of(n)]


@pytest.fixture(scope="module", autouse=True)
def _close_targets():
    yield
    for name in NAMES:
        close = getattr(importlib.import_module("tools.fuzz.targets." + name), "close", None)
        if close is not None:
            close()


def test_every_target_has_a_corpus():
    for name in NAMES:
        assert any(n == name for n, _ in CASES), "no corpus for " + name


@pytest.mark.parametrize(
    "name,path", CASES, ids=["%s/%s" % (n, os.path.basename(p)) for n, p in CASES]
)
def test_committed_input(name, path):
    target = importlib.import_module("tools.fuzz.targets." + name)
    with open(path, "rb") as f:
        target.one_input(f.read())


# The checks are not vacuous: a parser made to lie is caught by its target.
def test_a_lying_frame_parser_is_caught(monkeypatch):
    target = importlib.import_module("tools.fuzz.targets.pn532")
    monkeypatch.setattr(target.pn532, "parse_frame", lambda buf, n: (3, 0, n + 5))
    with pytest.raises(shim.Escape):
        target.one_input(b"\x00\x00\x00\xff\x00\xff\x00")


def test_a_debit_booked_twice_is_caught(monkeypatch):
    target = importlib.import_module("tools.fuzz.targets.purchase")
    real = target.check_books

    def twice(journal, cards, ctx):
        journal.extend([dict(r) for r in journal if r["kind"] == target.record.PURCHASE])
        real(journal, cards, ctx)

    monkeypatch.setattr(target, "check_books", twice)
    with pytest.raises(shim.Escape):
        target.one_input(b"\x10\x05\x00")


def test_an_unexpected_server_error_is_caught(monkeypatch):
    target = importlib.import_module("tools.fuzz.targets.collector")

    def broken(self, *a):
        raise KeyError("bug")

    monkeypatch.setattr(target.HttpServer, "_health", broken)
    with pytest.raises(shim.Escape):
        target.one_input(b"\x02GET /v1/health HTTP/1.1\r\n\r\n")


def test_an_rc522_driver_losing_bytes_is_caught(monkeypatch):
    target = importlib.import_module("tools.fuzz.targets.rc522")
    real = target.RC522.transceive
    monkeypatch.setattr(target.RC522, "transceive", lambda self, apdu: real(self, apdu)[:-1])
    with pytest.raises(shim.Escape):
        target.one_input(b"\x00")


def test_a_refused_bundle_left_on_the_store_is_caught(monkeypatch):
    target = importlib.import_module("tools.fuzz.targets.params")
    monkeypatch.setattr(target.params.Params, "_discard", lambda self, path: None)
    with pytest.raises(shim.Escape):
        target.one_input(b"\x00\x00\x00\x05\x07")  # unsigned damage: refused, file kept


def test_a_download_that_skips_chunk_hashes_is_caught(monkeypatch):
    target = importlib.import_module("tools.fuzz.targets.chunkdl")
    monkeypatch.setattr(target.chunkdl.ChunkReceiver, "_end_chunk", lambda self, i, start: None)
    with pytest.raises(shim.Escape):
        target.one_input(b"\x00\x00\x07\x02\x20\x01")  # body byte 512 damaged in transit


def test_a_verifier_taking_any_signature_is_caught(monkeypatch):
    target = importlib.import_module("tools.fuzz.targets.signed")
    monkeypatch.setattr(target.p256, "verify_digest", lambda key, digest, sig: len(sig) == 64)
    with pytest.raises(shim.Escape):
        target.one_input(b"\x00" + bytes(64) + b"m")
    with pytest.raises(shim.Escape):
        target.one_input(b"\x04\x00\x1b\x01")  # the manifest's created time, not re-signed


def test_a_body_over_the_limit_is_caught(monkeypatch):
    target = importlib.import_module("tools.fuzz.targets.http")

    async def until_close(self, reader):
        return await reader.read(1 << 20)  # the limit not checked

    monkeypatch.setattr(target.http_socket.SocketTransport, "_until_close", until_close)
    with pytest.raises(shim.Escape):
        target.one_input(b"\x38HTTP/1.1 200 OK\r\n\r\n" + bytes(100))
