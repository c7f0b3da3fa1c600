"""tools.board_report: BENCHMARKS.md shows bench/board-results.json next to the tap model."""

import json

from tools import bench_report, board_report

RES = {
    "details": {
        "tap_model": {
            "params": {"card_ms": {"A4": 10.0, "54": 40.0}, "psam_ms": {"70": 15.0}},
            "by_reader": {"pn532_i2c": 169.6},
            "cpu_ms": {"160": 15.0, "240": 10.0},
        }
    }
}
BOARD = {
    "board": "esp32_pn532_i2c",
    "reader": "pn532_i2c",
    "port": "/dev/ttyUSB0",
    "date": "2026-12-05T09:00Z",
    "taps": 10,
    "fare": 1,
    "reasons": ["OK"],
    "card_ms": {"A4": 21.5, "54": 61.0},
    "psam_ms": {"70": 30.2},
    "activation_ms": 18.0,
    "log_append_ms": 0.3,
    "result_shown_ms": 25.0,
    "total_ms": 240.1,
    "cpu": {"tap_cpu_us": 12500.0},
}


def test_no_board_results_no_section(tmp_path):
    assert board_report.section(RES, tmp_path / "none.json") == []


def test_measured_next_to_modelled(tmp_path):
    path = tmp_path / "board-results.json"
    path.write_text(json.dumps(BOARD))
    text = "\n".join(board_report.section(RES, path))
    assert "## Measured on a board" in text
    assert "| card 54 | 61.0 | 40.0 |" in text
    assert "| card A4 | 21.5 | 10.0 |" in text
    assert "| PSAM 70 | 30.2 | 15.0 |" in text
    assert "| whole tap (activation to result shown) | 240.1 | 169.6 (pn532_i2c) |" in text
    assert "board esp32_pn532_i2c, 10 taps of 1 fen, OK" in text
    assert "| firmware CPU per tap (tap.py) | 12.5 | 10.0 at 240 MHz, 15.0 at 160 MHz |" in text


def test_a_cpu_benchmark_that_did_not_fit_is_said(tmp_path):
    path = tmp_path / "board-results.json"
    path.write_text(json.dumps(dict(BOARD, cpu={"error": "MemoryError"})))
    text = "\n".join(board_report.section(RES, path))
    assert "| firmware CPU per tap (tap.py) | not measured: MemoryError | - |" in text


def test_a_damaged_file_is_said_not_fatal(tmp_path):
    path = tmp_path / "board-results.json"
    path.write_text("{")
    assert "could not be read" in "\n".join(board_report.section(RES, path))


def test_the_report_includes_it_when_the_file_is_there(tmp_path, monkeypatch):
    path = tmp_path / "board-results.json"
    path.write_text(json.dumps(BOARD))
    with open(bench_report.__file__.replace("bench_report.py", "../bench/results.json")) as f:
        res = json.load(f)
    monkeypatch.setattr(board_report, "BOARD_RESULTS", path)
    monkeypatch.setattr(board_report.section, "__defaults__", (path,))
    md = bench_report.markdown(res)
    assert md.index("## Measured on a board") < md.index("## Reproduce")


def test_flash_log_and_decision_next_to_the_model(tmp_path):
    res = json.loads(json.dumps(RES))
    res["details"]["decide_instructions_32"] = 360000
    params = res["details"]["tap_model"]["params"]
    params.update(flash_program_ms=0.4, flash_erase_ms=45.0, cpu_cycles_per_instruction=1.5)
    board = dict(
        BOARD,
        log_flash={"partition": "txlog", "first_sector": 61, "sectors": 3},
        log_append_ms=0.9,
        flash_erase_ms=38.5,
        decide_ms=3.1,
        decide_verdicts=["fare 200"],
    )
    path = tmp_path / "board-results.json"
    path.write_text(json.dumps(board))
    text = "\n".join(board_report.section(res, path))
    row = "| log append (txlog on flash: encoding and one program) | 0.9 | 0.4 (one program) |"
    assert row in text
    assert "| flash sector erase (never in a tap) | 38.5 | 45.0 |" in text
    # 360 k instructions x 1.5 cycles / 240 MHz = 2.25 ms
    row = "| decision (the board's parameters: fare 200) | 3.1 | 2.2 (flat fare, 240 MHz) |"
    assert row in text


def test_a_ram_log_and_a_missing_decision_say_why(tmp_path):
    board = dict(
        BOARD,
        log_flash={"skipped": 'no "txlog" partition in this board\'s table'},
        decide_ms=None,
        decide_skipped="the validator application is not loaded on the board",
    )
    path = tmp_path / "board-results.json"
    path.write_text(json.dumps(board))
    text = "\n".join(board_report.section(RES, path))
    assert '| log append (RAM: no "txlog" partition in this board\'s table) | 0.3 | - |' in text
    assert "| decision | not measured: the validator application is not loaded" in text
