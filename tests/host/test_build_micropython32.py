"""tools/build_micropython32.py: where the source comes from, what it freezes, when it rebuilds."""

import os
import time

import pytest

from tools import build_micropython32 as b32


def test_no_source_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROPY_SRC", str(tmp_path / "nowhere"))
    with pytest.raises(b32.Unavailable) as e:
        b32.build(out=tmp_path / "out", quiet=True)
    assert "MICROPY_SRC" in str(e.value) and "gcc-multilib" in str(e.value)


def test_a_source_tree_of_another_version_is_refused(tmp_path):
    (tmp_path / "src" / "py").mkdir(parents=True)
    (tmp_path / "src" / "py" / "mpconfig.h").write_text(
        "#define MICROPY_VERSION_MAJOR 1\n#define MICROPY_VERSION_MINOR 22\n"
    )
    with pytest.raises(b32.Unavailable) as e:
        b32.source_tree(tmp_path / "src", tmp_path / "out")
    assert "not a MicroPython v1.27" in str(e.value) and "1.22" in str(e.value)


def test_the_stamp_follows_content_not_timestamps(tmp_path):
    a = tmp_path / "a.py"
    b = tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    h1 = b32.input_hash("src", [a, b])
    later = time.time() + 3600
    os.utime(a, (later, later))  # a fresh clone: new mtimes, same content
    assert b32.input_hash("src", [a, b]) == h1
    a.write_text("x = 3\n")
    assert b32.input_hash("src", [a, b]) != h1
    assert b32.input_hash("other source", [a, b]) != b32.input_hash("src", [a, b])


def _available():
    try:
        return b32.source_tree(b32.default_source(), b32.OUT)
    except b32.Unavailable as e:
        pytest.skip("micropython32 source not available: %s" % e)


def test_the_board_manifest_freezes_firmware_drivers_board_and_ssd1306():
    tree, _ident = _available()
    work = b32.OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    manifest, lib = b32.write_inputs(work)
    names = {p.name for p in b32.frozen_files(tree, manifest, lib)}
    for want in ("app.py", "purchase.py", "pn532.py", "atmodem.py", "board.py", "sim_uart.py"):
        assert want in names
    assert "ssd1306.py" in names, "require('ssd1306') answered from .venv/mplib"
    assert "esp32_common.py" in names and "manifest.py" in names
    assert any(p.parent.name == "asyncio" for p in b32.frozen_files(tree, manifest, lib))
    assert {"app_rig.py", "app_heap.py", "bench_fakes.py"} <= names, "the bench harness too"
    assert not {"boot.py", "main.py"} & names, "a depot replaces them on the file system"


def test_a_current_build_is_not_rebuilt(monkeypatch):
    _available()
    exe = b32.build(quiet=True)  # once per session at most (cached by the stamp)

    def no_make(*a, **k):
        raise AssertionError("rebuilt although nothing changed")

    monkeypatch.setattr(b32, "run_make", no_make)
    assert b32.build(quiet=True) == exe
    assert b32.is_current()
