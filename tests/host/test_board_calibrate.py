"""tools.board_calibrate: a board's timings turned into the tap model's parameters."""

import copy
import json
from pathlib import Path

import pytest

from tools import board_calibrate

bench_model = board_calibrate.bench_model  # imported there, after drivers/ is on the path

ROOT = Path(__file__).resolve().parents[2]
DETAILS = json.loads((ROOT / "bench" / "results.json").read_text())["details"]
READER = "pn532_i2c"
BIT_US = 128 / 13.56  # ISO/IEC 14443-2 at 106 kbit/s
FDT_US = 1172 / 13.56


def _rf_ms(cmd_hex, resp_hex):
    # one command and its answer on air: 9 bits a byte, 6 bytes of framing and CRC, two frames
    nbytes = len(cmd_hex) // 2 + len(resp_hex or "") // 2 + 6
    return (nbytes * 9 * BIT_US + 2 * (2 * BIT_US + FDT_US)) / 1000


def _link_ms():
    terms = DETAILS["tap_model"]["configs"][READER]["terms"]
    return terms["reader_link_ms"] / (len(DETAILS["exchange_card"]) + 1)


def _board_as_the_model_says():
    """What a board would measure if every published figure were exact."""
    p = bench_model.PARAMS
    card = {}
    for cmd, resp, _e in DETAILS["exchange_card"]:
        ins = cmd[2:4].upper()
        if ins not in card:
            card[ins] = round(p["card_ms"][ins] + _rf_ms(cmd, resp) + _link_ms(), 4)
    return {
        "board": "esp32_pn532_i2c",
        "reader": READER,
        "date": "2026-12-05T12:00Z",
        "taps": 10,
        "cpu_mhz": 240,
        "card_ms": card,
        "psam_ms": {},
        "total_ms": 170.0,
    }


def test_a_board_that_measures_the_published_figures_calibrates_to_them():
    before = copy.deepcopy(bench_model.PARAMS)
    board = _board_as_the_model_says()
    rows, params = board_calibrate.calibrate(board, DETAILS)
    for ins, ms in params["card_ms"].items():
        assert ms == pytest.approx(bench_model.PARAMS["card_ms"][ins], abs=0.01), ins
    after = board_calibrate.remodel(DETAILS, params)["by_reader"][READER]
    assert after == pytest.approx(DETAILS["tap_model"]["by_reader"][READER], abs=0.2)
    assert bench_model.PARAMS == before, "PARAMS itself is left as it was"


def test_a_slower_debit_and_a_slower_cpu_move_the_model_by_what_they_cost():
    board = _board_as_the_model_says()
    board["card_ms"]["54"] += 20.0  # DEBIT 20 ms slower than published
    n32 = DETAILS["tap_instructions_32"]
    board["cpu"] = {"tap_cpu_us": n32 * 3.0 / 240}  # 3 cycles an instruction at 240 MHz
    rows, params = board_calibrate.calibrate(board, DETAILS)
    assert params["card_ms"]["54"] == pytest.approx(bench_model.PARAMS["card_ms"]["54"] + 20, 0.01)
    assert params["cpu_cycles_per_instruction"] == pytest.approx(3.0, abs=0.001)
    model = DETAILS["tap_model"]
    cpu_before = model["configs"][READER]["terms"]["firmware_cpu_ms"]
    after = board_calibrate.remodel(DETAILS, params)["configs"][READER]
    assert after["terms"]["firmware_cpu_ms"] == pytest.approx(cpu_before * 2, rel=0.02)
    grown = after["total_ms"] - model["by_reader"][READER]
    assert grown == pytest.approx(20 + cpu_before, abs=0.3)


def test_psam_and_flash_figures_and_what_could_not_be_calibrated():
    board = _board_as_the_model_says()
    board["psam_ms"] = {"70": 60.0}
    board["log_flash"] = {"skipped": 'no "txlog" partition in this board\'s table'}
    board["cpu"] = {"error": "MemoryError"}
    rows, params = board_calibrate.calibrate(board, DETAILS)
    by_name = {r[0]: r for r in rows}
    assert 0 < params["psam_ms"]["70"] < 60.0, "less the T=0 line time"
    assert "upper bound" in by_name["psam_ms[70]"][3]
    assert by_name["cpu_cycles_per_instruction"][2:] == (None, "MemoryError")
    assert by_name["flash_program_ms"][2] is None and "txlog" in by_name["flash_program_ms"][3]
    board["log_flash"] = {"partition": "txlog", "first_sector": 61, "sectors": 3}
    board.update(log_append_ms=0.9, flash_erase_ms=38.0)
    _rows, params = board_calibrate.calibrate(board, DETAILS)
    assert (params["flash_program_ms"], params["flash_erase_ms"]) == (0.9, 38.0)


def test_a_reading_below_the_bus_share_is_flagged_not_made_negative():
    board = _board_as_the_model_says()
    board["card_ms"]["A4"] = 0.1
    rows, params = board_calibrate.calibrate(board, DETAILS)
    assert params["card_ms"]["A4"] == 0.0
    assert "check the reader" in {r[0]: r for r in rows}["card_ms[A4]"][3]


def test_the_command_prints_and_writes(tmp_path, capsys):
    bpath = tmp_path / "board.json"
    bpath.write_text(json.dumps(_board_as_the_model_says()))
    out = tmp_path / "cal.json"
    args = ["--board", str(bpath), "--results", str(ROOT / "bench" / "results.json")]
    assert board_calibrate.main(args + ["--write", str(out)]) == 0
    text = capsys.readouterr().out
    assert "card_ms[54]" in text and "tap model for pn532_i2c" in text
    doc = json.loads(out.read_text())
    assert doc["source"].startswith("make board-bench on esp32_pn532_i2c")
    assert set(doc["params"]["card_ms"]) == set(_board_as_the_model_says()["card_ms"])


@pytest.mark.parametrize(
    "board, results, message",
    [
        (None, "ok", "the board's results (make board-bench) not found"),
        ("{", "ok", "the board's results (make board-bench) unreadable"),
        ("ok", {"details": {}}, "no tap model: run `make bench` first"),
        ({"reader": "acr122"}, "ok", "the board's reader 'acr122' is not one of"),
    ],
)
def test_missing_or_wrong_input_is_a_clear_error(tmp_path, capsys, board, results, message):
    bpath = tmp_path / "board.json"
    if board == "ok":
        board = _board_as_the_model_says()
    if board is not None:
        bpath.write_text(board if isinstance(board, str) else json.dumps(board))
    rpath = ROOT / "bench" / "results.json"
    if results != "ok":
        rpath = tmp_path / "results.json"
        rpath.write_text(json.dumps(results))
    assert board_calibrate.main(["--board", str(bpath), "--results", str(rpath)]) == 2
    assert message in capsys.readouterr().err
