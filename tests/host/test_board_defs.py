"""The validator's MicroPython board definitions (boards/micropython/VALIDATOR_*): partition
tables that parse, fit their flash and hold every partition the firmware asks for; sdkconfig that
sets what the board promises (240 MHz, no Bluetooth, flash size, our table); freeze manifests
that freeze the application but leave boot.py and main.py to the filesystem.

What needs ESP-IDF (the image, its size against `factory`) is not tested here; README says how
to build it.
"""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tools import build_firmware, partitions
from tools.partitions import TableError

ROOT = Path(__file__).resolve().parents[2]
BOARDS = ROOT / "boards"
DEFS = BOARDS / "micropython"
BOARD_DEFS = {"VALIDATOR_ESP32": "esp32", "VALIDATOR_ESP32_S3": "esp32s3"}
DEFAULT_PINS = {"VALIDATOR_ESP32": "esp32_pn532_i2c", "VALIDATOR_ESP32_S3": "esp32s3_pn532_hsu"}
# (table, flash bytes, transaction log size from CONTRACTS: 256 KiB on 4 MB, 1 MiB on 16 MB)
TABLES = {
    "partitions-4MiB-validator.csv": (4 << 20, 256 << 10),
    "partitions-16MiB-validator.csv": (16 << 20, 1 << 20),
}
# Labels the port itself opens: littlefs at / (ports/esp32/modules/flashbdev.py, label "vfs") and
# ESP-IDF's default NVS partition (nvs_flash_init in ports/esp32/main.c; esp32.NVS uses it).
PORT_LABELS = {"vfs": (1, 0x81), "nvs": (1, 0x02)}
# Partitions the firmware runs without (file-mode blacklist, docs/blacklist.md); a 16 MB table
# must still have them, the fleet-size list needs them.
OPTIONAL = {"blist_a", "blist_b"}
MILLION_CARD_LIST = 5_795_840  # bytes, docs/blacklist.md (1,415 blocks of 4096)
RAW_DATA_SUBTYPE = 0x40  # CONTRACTS: the txlog partition is data/0x40


# ---------------------------------------------------------------- the CSV reader itself


def test_reader_fills_offsets_and_reads_suffixes():
    parts = partitions.parse(
        "# comment\n"
        "nvs, data, nvs, , 24K,\n"
        "phy_init, data, phy, , 4K,\n"
        "factory, app, factory, , 1M,\n"
        "store, data, 0x40, , 0x1000, readonly\n"
    )
    got = [(p.name, p.type, p.subtype, p.offset, p.size, p.flags) for p in parts]
    assert got == [
        ("nvs", 1, 2, 0x9000, 0x6000, ()),
        ("phy_init", 1, 1, 0xF000, 0x1000, ()),
        ("factory", 0, 0, 0x10000, 0x100000, ()),  # an app is placed on the next 64 KiB
        ("store", 1, 0x40, 0x110000, 0x1000, ("readonly",)),
    ]
    partitions.check(parts, 2 << 20)


@pytest.mark.parametrize(
    "csv, flash, why",
    [
        ("a, data, nvs, 0x9000, 0x1000\na, data, phy, 0xa000, 0x1000\n", 4, "used twice"),
        ("f, app, factory, 0x10000, 0x3F0000\nv, data, fat, 0x3F0000, 0x20000\n", 4, "inside f"),
        ("f, app, factory, 0x18000, 0x100000\n", 4, "not aligned to 0x10000"),
        ("f, app, factory, 0x10000, 0x108000\n", 4, "app size"),
        ("f, app, factory, 0x10000, 0x100000\nd, data, fat, 0x110800, 0x1000\n", 4, "0x1000"),
        ("f, app, factory, 0x10000, 0x100000\nd, data, 0x40, 0x110000, 0x1800\n", 4, "sectors"),
        ("n, data, nvs, 0x8000, 0x1000\nf, app, factory, 0x10000, 0x1000\n", 4, "partition tab"),
        ("f, app, factory, 0x10000, 0x100000\nt, data, 0x40, 0x3C0000, 0x80000\n", 4, "past the"),
        ("n, data, nvs, 0x9000, 0x6000\n", 4, "no app partition"),
        ("", 4, "no partitions"),
        (
            "o1, data, ota, 0xd000, 0x2000\no2, data, ota, 0x20000, 0x2000\n"
            "f, app, factory, 0x30000, 0x10000\n",
            4,
            "otadata",
        ),
    ],
)
def test_reader_refuses_a_table_that_would_not_flash(csv, flash, why):
    with pytest.raises(TableError, match=why):
        partitions.check(partitions.parse(csv), flash << 20)


@pytest.mark.parametrize(
    "line, why",
    [
        ("averyveryverylongname, data, nvs, 0x9000, 0x1000", "longer than 16"),
        ("n, data, nvs, 0x9000, 0x1000, shiny", "unknown flag"),
        ("n, data, nvs, 0x9000, lots", "not a number"),
        ("n, data, nvs, 0x9000,", "empty size"),
        ("f, app, , 0x10000, 0x1000", "needs a subtype"),
        ("n, , nvs, 0x9000, 0x1000", "empty type"),
        ("n, data, 0x1FF, 0x9000, 0x1000", "out of range"),
        (", data, nvs, 0x9000, 0x1000", "empty name"),
        ("n, data, nvs, 0x9000, 0", "positive"),
    ],
)
def test_reader_names_the_bad_line(line, why):
    with pytest.raises(TableError, match="line 2: .*" + why):
        partitions.parse("# header\n" + line + "\n")


def test_reader_command_prints_the_table_and_fails_on_a_bad_one(tmp_path, capsys):
    assert partitions.main([str(BOARDS / "partitions-16MiB-validator.csv"), "--flash", "16M"]) == 0
    out = capsys.readouterr().out
    assert "txlog" in out and "flash used up to 0x1000000 of 0x1000000" in out
    # the 16 MB table does not fit a 4 MB flash
    assert partitions.main([str(BOARDS / "partitions-16MiB-validator.csv")]) == 1
    assert "past the 4 MiB flash" in capsys.readouterr().err
    assert partitions.main([str(tmp_path / "missing.csv")]) == 1


# ---------------------------------------------------------------- what the firmware looks for


def _const_strings(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        out = []
        for elt in node.elts:
            got = _const_strings(elt)
            if got is None:
                return None
            out += got
        return out
    return None


def _bindings(tree, name):
    """Constant strings a name is bound to anywhere in the module: `n = "x"`, `for n in (...)`,
    comprehensions over a constant tuple."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                found.append(_const_strings(node.value))
        elif isinstance(node, (ast.For, ast.comprehension)):
            if isinstance(node.target, ast.Name) and node.target.id == name:
                found.append(_const_strings(node.iter))
    if not found or any(f is None for f in found):
        return None
    return [s for f in found for s in f]


def _is_partition_find(call):
    f = call.func
    if not (isinstance(f, ast.Attribute) and f.attr == "find"):
        return False
    v = f.value
    return (isinstance(v, ast.Attribute) and v.attr == "Partition") or (
        isinstance(v, ast.Name) and v.id == "Partition"
    )


def firmware_partition_labels():
    """{label: [where]} of every esp32.Partition.find(...) in the firmware, drivers and boards,
    and the places whose label this scan cannot pin down (those fail the test below)."""
    labels, unresolved = {}, []
    for top in ("firmware", "drivers", "boards"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.name == "manifest.py" or path.name.startswith("manifest_"):
                continue
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and _is_partition_find(node)):
                    continue
                where = "%s:%d" % (path.relative_to(ROOT), node.lineno)
                arg = next((k.value for k in node.keywords if k.arg == "label"), None)
                if arg is None and len(node.args) >= 3:
                    arg = node.args[2]
                if arg is None:
                    unresolved.append(where + " (no label: finds by type only)")
                    continue
                names = _const_strings(arg)
                if names is None and isinstance(arg, ast.Name):
                    names = _bindings(tree, arg.id)
                if names is None:
                    unresolved.append(where)
                    continue
                for n in names:
                    labels.setdefault(n, []).append(where)
    return labels, unresolved


def test_the_scan_finds_the_blacklist_slots():
    # the scan itself: boards/esp32_common.py looks the A/B slots up in a loop over a tuple
    labels, _ = firmware_partition_labels()
    assert {"blist_a", "blist_b"} <= set(labels)


def test_every_partition_lookup_names_its_label_plainly():
    _, unresolved = firmware_partition_labels()
    assert not unresolved, (
        "cannot tell which partition label these esp32.Partition.find calls ask for; pass the "
        "label as a string literal, a name bound to one, or loop over a tuple of literals: %s"
        % unresolved
    )


def _tables():
    return {name: partitions.load(BOARDS / name, flash) for name, (flash, _) in TABLES.items()}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_table_parses_and_fits_its_flash(name):
    flash, _ = TABLES[name]
    parts = partitions.load(BOARDS / name, flash)  # raises with the reason if not
    apps = [p for p in parts if p.is_app]
    assert [(p.name, p.subtype) for p in apps] == [("factory", 0x00)]
    assert apps[0].offset == 0x10000 and apps[0].size >= 0x1F0000  # stock MicroPython's room
    assert max(p.end for p in parts) <= flash
    used = sum(p.size for p in parts)
    assert used <= flash - 0x9000  # bootloader and table take the first 36 KiB


@pytest.mark.parametrize("name", sorted(TABLES))
def test_table_holds_every_partition_the_firmware_opens(name):
    flash, txlog_size = TABLES[name]
    table = partitions.by_name(partitions.load(BOARDS / name, flash))
    found, _ = firmware_partition_labels()
    wanted = set(found) | set(PORT_LABELS) | {"txlog"}
    required = wanted - OPTIONAL
    missing = sorted(required - set(table))
    assert not missing, "%s lacks %s (looked up at %s)" % (
        name,
        missing,
        {m: found.get(m, ["the port"]) for m in missing},
    )
    for label, (ptype, subtype) in PORT_LABELS.items():
        assert (table[label].type, table[label].subtype) == (ptype, subtype), label
    txlog = table["txlog"]
    assert (txlog.type, txlog.subtype, txlog.size) == (1, RAW_DATA_SUBTYPE, txlog_size)
    assert table["vfs"].size >= 1 << 20  # parameters, config and the overlay on littlefs


def test_16mib_table_has_both_blacklist_slots_for_a_million_cards():
    table = partitions.by_name(_tables()["partitions-16MiB-validator.csv"])
    a, b = table["blist_a"], table["blist_b"]
    assert (a.type, a.subtype) == (b.type, b.subtype) == (1, RAW_DATA_SUBTYPE)
    assert a.size == b.size >= MILLION_CARD_LIST  # A/B: either slot takes the whole list
    assert a.size % 4096 == 0


def test_4mib_table_leaves_the_blacklist_on_littlefs():
    # a million-card list cannot fit twice in 4 MB; the firmware runs in file mode without slots
    table = partitions.by_name(_tables()["partitions-4MiB-validator.csv"])
    assert not OPTIONAL & set(table)


# ---------------------------------------------------------------- sdkconfig and cmake


def _sdkconfig(text):
    cfg = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            cfg[key.strip()] = value.strip()
    return cfg


def _unquote(v):
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v


def _combined_sdkconfig(board, variant, tmp_path):
    """Run the board's mpconfigboard.cmake (and variant) under cmake as ports/esp32/CMakeLists.txt
    does, and return the sdkconfig defaults it hands ESP-IDF, later lines winning."""
    cmake = shutil.which("cmake")
    if not cmake:
        pytest.skip("cmake not installed (apt-get install cmake): board cmake files not run")
    port = tmp_path / "port"
    (port / "boards").mkdir(parents=True)
    # the two lines of ports/esp32/boards/sdkconfig.base (v1.27) a board's settings override
    (port / "boards" / "sdkconfig.base").write_text(
        'CONFIG_ESPTOOLPY_FLASHSIZE_4MB=y\nCONFIG_PARTITION_TABLE_CUSTOM_FILENAME="partitions-4MiBplus.csv"\n'
    )
    build = tmp_path / "build"
    build.mkdir()
    driver = tmp_path / "driver.cmake"
    driver.write_text(
        "set(CMAKE_BINARY_DIR %s)\n"
        "set(MICROPY_BOARD_DIR %s)\n"
        "include(${MICROPY_BOARD_DIR}/mpconfigboard.cmake)\n"
        "if(VARIANT)\n  include(${MICROPY_BOARD_DIR}/mpconfigvariant_${VARIANT}.cmake)\nendif()\n"
        'file(WRITE %s/combined "")\n'
        "foreach(f ${SDKCONFIG_DEFAULTS})\n"
        "  file(READ ${f} CONTENTS)\n"
        '  file(APPEND %s/combined "${CONTENTS}")\n'
        "endforeach()\n"
        'message(STATUS "IDF_TARGET=${IDF_TARGET}")\n'
        'message(STATUS "MANIFEST=${MICROPY_FROZEN_MANIFEST}")\n'
        'message(STATUS "DEF_BOARD=${MICROPY_DEF_BOARD}")\n' % (build, DEFS / board, build, build)
    )
    proc = subprocess.run(
        [cmake, "-DVARIANT=" + (variant or ""), "-P", str(driver)],
        cwd=port,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = dict(re.findall(r"-- (\w+)=(.*)", proc.stdout))
    return _sdkconfig((build / "combined").read_text()), status


CASES = [
    (board, variant, target)
    for board, target in BOARD_DEFS.items()
    for variant in (None, "FLASH_16M")
]


@pytest.mark.parametrize("board, variant, target", CASES)
def test_board_sdkconfig_sets_what_it_promises(board, variant, target, tmp_path):
    cfg, status = _combined_sdkconfig(board, variant, tmp_path)
    assert status["IDF_TARGET"] == target
    assert cfg["CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ"] == "240"
    assert cfg["CONFIG_ESP_DEFAULT_CPU_FREQ_MHZ_240"] == "y"
    assert cfg.get("CONFIG_BT_ENABLED", "n") == "n"
    assert not any(k.startswith("CONFIG_BT_NIMBLE") for k in cfg)  # sdkconfig.ble not pulled in
    flash = 16 if variant == "FLASH_16M" else 4
    assert cfg["CONFIG_ESPTOOLPY_FLASHSIZE_%dMB" % flash] == "y"
    assert cfg.get("CONFIG_ESPTOOLPY_FLASHSIZE_%dMB" % (20 - flash), "n") == "n"
    assert cfg["CONFIG_PARTITION_TABLE_CUSTOM"] == "y"
    table = Path(_unquote(cfg["CONFIG_PARTITION_TABLE_CUSTOM_FILENAME"]))
    # absolute, since ESP-IDF resolves a relative name against ports/esp32
    assert table.is_absolute() and table.resolve() == BOARDS / (
        "partitions-%dMiB-validator.csv" % flash
    )
    partitions.load(table, flash << 20)
    manifest = Path(status["MANIFEST"])
    assert manifest.resolve() == (DEFS / board / "manifest.py").resolve() and manifest.exists()
    if variant:
        assert "%dMB" % flash in status["DEF_BOARD"]


@pytest.mark.parametrize("board", sorted(BOARD_DEFS))
def test_board_header_turns_bluetooth_off(board):
    header = (DEFS / board / "mpconfigboard.h").read_text()
    assert re.search(r"#define MICROPY_PY_BLUETOOTH\s+\(0\)", header)
    assert re.search(r"#define MICROPY_HW_MCU_NAME\s+\"%s\"" % BOARD_DEFS[board].upper(), header)


def test_s3_keeps_the_repl_off_uart0():
    # three UARTs for reader, PSAM and modem: the REPL is on the native USB port
    header = (DEFS / "VALIDATOR_ESP32_S3" / "mpconfigboard.h").read_text()
    assert re.search(r"#define MICROPY_HW_ENABLE_UART_REPL\s+\(0\)", header)


# ---------------------------------------------------------------- freeze manifests

SOURCE_HOWTO = (
    "MicroPython v1.27's tools/manifestfile.py is needed: set MICROPY_SRC=/path/to/micropython "
    "(git clone -b v1.27.0 https://github.com/micropython/micropython) or put "
    "shared/micropython/micropython-1.27.0-unix-src.tar.gz beside the repository"
)


def _manifestfile_module(tmp_path_factory):
    src = os.environ.get("MICROPY_SRC")
    candidates = [Path(src).expanduser()] if src else []
    candidates += [base / "shared" / "micropython" for base in (ROOT.parent, ROOT.parent.parent)]
    for cand in candidates:
        if (cand / "tools" / "manifestfile.py").exists():
            path = cand / "tools" / "manifestfile.py"
            break
        tars = sorted(cand.glob("micropython-1.27*-unix-src.tar.gz")) if cand.is_dir() else []
        if tars:
            out = tmp_path_factory.mktemp("mpsrc")
            with tarfile.open(tars[-1]) as t:
                member = next(
                    m for m in t.getmembers() if m.name.endswith("tools/manifestfile.py")
                )
                member.name = "manifestfile.py"
                t.extract(member, out, filter="data")
            path = out / "manifestfile.py"
            break
    else:
        pytest.skip(SOURCE_HOWTO)
    spec = importlib.util.spec_from_file_location("mp_manifestfile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def frozen_set(tmp_path_factory):
    """manifest path -> sorted target paths it freezes, evaluated by MicroPython's own manifest
    reader with a stand-in port manifest and micropython-lib (ssd1306 from .venv/mplib)."""
    mf = _manifestfile_module(tmp_path_factory)
    stub = tmp_path_factory.mktemp("stubs")
    (stub / "port" / "boards").mkdir(parents=True)
    (stub / "port" / "boards" / "manifest.py").write_text('module("_port_marker.py")\n')
    (stub / "port" / "boards" / "_port_marker.py").write_text("")
    lib = stub / "lib" / "micropython" / "drivers" / "display" / "ssd1306"
    lib.mkdir(parents=True)
    (lib / "manifest.py").write_text('module("ssd1306.py")\n')
    (lib / "ssd1306.py").write_text("# stand-in\n")

    def evaluate(manifest):
        m = mf.ManifestFile(
            mf.MODE_FREEZE,
            {
                "MPY_DIR": str(stub),
                "MPY_LIB_DIR": str(stub / "lib"),
                "PORT_DIR": str(stub / "port"),
                "BOARD_DIR": str(manifest.parent),
            },
        )
        m.execute(str(manifest))
        return sorted(f.target_path for f in m.files())

    return evaluate


def _expected_app():
    firmware = {p.name for p in (ROOT / "firmware").glob("*.py")}
    drivers = {p.name for p in (ROOT / "drivers").glob("*.py")}
    return (firmware - set(build_firmware.SOURCE_AT_ROOT)) | drivers | {"esp32_common.py"}


PIN_SETS = sorted(
    p.parent.name for p in BOARDS.glob("*/manifest.py") if (p.parent / "board.py").exists()
)
PIN_SETS = [b for b in PIN_SETS if b != "unix_sim"]


@pytest.mark.parametrize("pins", PIN_SETS)
def test_pin_set_manifest_freezes_the_application_but_not_boot_and_main(pins, frozen_set):
    got = frozen_set(BOARDS / pins / "manifest.py")
    want = _expected_app() | {"_port_marker.py", "ssd1306.py", "board.py"}
    assert sorted(want) == got
    assert not {"boot.py", "main.py"} & set(got)


@pytest.mark.parametrize("board", sorted(BOARD_DEFS))
def test_board_definition_manifest_freezes_port_and_application(board, frozen_set):
    # each defaults to a pin set of its chip: the same files, board.py included
    got = frozen_set(DEFS / board / "manifest.py")
    assert got == sorted(_expected_app() | {"_port_marker.py", "ssd1306.py", "board.py"})
    pins = DEFAULT_PINS[board]
    assert got == frozen_set(BOARDS / pins / "manifest.py")
    assert pins.startswith(BOARD_DEFS[board] + "_")  # esp32_..., esp32s3_...


def test_what_the_build_leaves_unfrozen_is_what_deploy_copies():
    # tools/build_firmware.py keeps boot.py/main.py as source at the root and the Makefile's
    # deploy copies them (and board.py) there: the same files the manifests leave out
    make = (ROOT / "Makefile").read_text()
    deploy = make[make.index("\ndeploy:") :].split("\n\n")[0]
    for name in build_firmware.SOURCE_AT_ROOT:
        assert (ROOT / "firmware" / name).exists()
        assert name in deploy
    assert "board.py" in deploy


# ---------------------------------------------------------------- frozen on micropython32


def _micropython32():
    """build/micropython32/micropython32 through the project's build tool (current, or built
    once: its stamp keeps later runs instant); skips with the tool's own how-to without a
    MicroPython v1.27 source or 32-bit compiler."""
    if importlib.util.find_spec("tools.build_micropython32") is None:
        pytest.skip("tools/build_micropython32.py is not in this tree")
    from tools import build_micropython32 as b32

    try:
        return b32.build(quiet=True)
    except b32.Unavailable as e:
        pytest.skip("micropython32 not available: %s" % e)


def test_application_part_freezes_on_micropython32(frozen_set):
    # The application part of every ESP32 manifest is boards/manifest_common.py; micropython32
    # freezes it through the simulation board's manifest (boards/unix_sim/manifest.py), built
    # by tools/build_micropython32.py with MicroPython v1.27's own freezing. Every module of the
    # validator's application part must be in it, and boot/main must not.
    validator = set(frozen_set(BOARDS / "esp32_pn532_i2c" / "manifest.py"))
    app_part = validator - {"_port_marker.py", "board.py"}
    sim = set(frozen_set(BOARDS / "unix_sim" / "manifest.py"))
    assert sim >= app_part
    assert not {n for n in sim if n.startswith("manifest")}  # manifests are not modules
    exe = _micropython32()
    proc = subprocess.run(
        [str(exe), "-c", "help('modules')"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MICROPYPATH": ".frozen"},
    )
    assert proc.returncode == 0, proc.stderr
    listed = set(proc.stdout.replace("Plus any modules on the filesystem", "").split())
    missing = sorted(n for n in app_part if n[:-3] not in listed)
    assert not missing, "not frozen in %s: %s" % (exe, missing)
    assert not {"boot", "main", "manifest", "manifest_common"} & listed


def test_readme_build_section_names_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### A validator build of MicroPython") :]
    section = section[: section.index("\n## ")]
    paths = set(re.findall(r"(?:\$REPO/|`)(boards/[\w./-]+?)[`\s,)]", section))
    assert paths, "README's build section names no boards/ paths"
    missing = sorted(p for p in paths if not (ROOT / p.rstrip(".")).exists())
    assert not missing, "README names %s" % missing
    for board in BOARD_DEFS:
        assert "boards/micropython/" + board in section


def test_simulated_txlog_partition_is_the_4mib_tables():
    # boards/unix_sim/board.py gives the laptop the txlog partition of a 4 MB validator
    tree = ast.parse((BOARDS / "unix_sim" / "board.py").read_text())
    blocks = _bindings_int(tree, "TXLOG_BLOCKS")
    txlog = partitions.by_name(_tables()["partitions-4MiB-validator.csv"])["txlog"]
    assert blocks * 4096 == txlog.size


def _bindings_int(tree, name):
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            value = node.value
            # int(os.getenv("...") or "64"): the default, which a bench may override
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "int":
                value = value.args[0]
                if isinstance(value, ast.BoolOp):
                    value = value.values[-1]
                return int(ast.literal_eval(value))
            return ast.literal_eval(value)
    raise AssertionError("%s not assigned" % name)
