"""The 'Measured on a board' part of BENCHMARKS.md: bench/board-results.json (make board-bench)
next to what the tap model assumes, when that file is there (tools/bench_report.py calls this).
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOARD_RESULTS = ROOT / "bench" / "board-results.json"


def _f(v):
    return "-" if v is None else "%.1f" % v


def _decide_ms(details, params):
    """The model's CPU time of the decision at its clock, or None."""
    n = details.get("decide_instructions_32")
    if not n or not params.get("cpu_cycles_per_instruction"):
        return None
    return n * params["cpu_cycles_per_instruction"] / (params.get("cpu_mhz_model", 240) * 1000.0)


def section(res, path=BOARD_RESULTS):
    """Markdown lines (empty without a board results file)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        b = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return ["## Measured on a board", "", "%s could not be read: %s" % (path.name, e), ""]
    model = res.get("details", {}).get("tap_model", {})
    params = model.get("params", {})
    reader = b.get("reader")
    out = [
        "## Measured on a board",
        "",
        "`make board-bench` on %s (%s, board %s, %d taps of %s fen, %s). Card and PSAM times are "
        "measured at the reader and the link, so they include RF and bus time that the model "
        "counts apart; the model's figure is its card or PSAM processing term only "
        "(docs/bench-setup.md, docs/tap-model.md)."
        % (
            b.get("port", "?"),
            b.get("date", "?"),
            b.get("board", "?"),
            b.get("taps", 0),
            b.get("fare", "?"),
            ", ".join(b.get("reasons", [])) or "no result",
        ),
        "",
        "| term | measured ms (median) | modelled ms |",
        "|---|---|---|",
    ]
    for ins, ms in sorted(b.get("card_ms", {}).items()):
        out.append("| card %s | %s | %s |" % (ins, _f(ms), _f(params.get("card_ms", {}).get(ins))))
    for ins, ms in sorted(b.get("psam_ms", {}).items()):
        out.append("| PSAM %s | %s | %s |" % (ins, _f(ms), _f(params.get("psam_ms", {}).get(ins))))
    out.append("| activation (poll, card present) | %s | - |" % _f(b.get("activation_ms")))
    flash = b.get("log_flash") or {}
    if "partition" in flash:
        out.append(
            "| log append (txlog on flash: encoding and one program) | %s | %s (one program) |"
            % (_f(b.get("log_append_ms")), _f(params.get("flash_program_ms")))
        )
        out.append(
            "| flash sector erase (never in a tap) | %s | %s |"
            % (_f(b.get("flash_erase_ms")), _f(params.get("flash_erase_ms")))
        )
    else:
        out.append(
            "| log append (RAM: %s) | %s | - |"
            % (flash.get("skipped", "no flash"), _f(b.get("log_append_ms")))
        )
    decide_model = _decide_ms(res.get("details", {}), params)
    if b.get("decide_ms") is not None:
        out.append(
            "| decision (the board's parameters: %s) | %s | %s (flat fare, 240 MHz) |"
            % (", ".join(b.get("decide_verdicts") or []), _f(b["decide_ms"]), _f(decide_model))
        )
    elif b.get("decide_skipped"):
        out.append(
            "| decision | not measured: %s | %s |" % (b["decide_skipped"], _f(decide_model))
        )
    out.append("| result shown | %s | - |" % _f(b.get("result_shown_ms")))
    cpu = b.get("cpu") or {}
    if "tap_cpu_us" in cpu:
        # tools/bench_mpy/tap.py on the board (wall time there) against the model's CPU term
        modelled = model.get("cpu_ms", {})
        out.append(
            "| firmware CPU per tap (tap.py) | %s | %s at 240 MHz, %s at 160 MHz |"
            % (_f(cpu["tap_cpu_us"] / 1000.0), _f(modelled.get("240")), _f(modelled.get("160")))
        )
    elif cpu.get("error"):
        out.append("| firmware CPU per tap (tap.py) | not measured: %s | - |" % cpu["error"])
    total = model.get("by_reader", {}).get(reader) if reader else None
    out.append(
        "| whole tap (activation to result shown) | %s | %s |"
        % (_f(b.get("total_ms")), _f(total) + (" (%s)" % reader if total is not None else ""))
    )
    out.append("")
    return out
