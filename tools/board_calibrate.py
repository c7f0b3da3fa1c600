"""Calibrate the tap model from a board: `make board-calibrate` after `make board-bench`.

    python -m tools.board_calibrate [--board bench/board-results.json]
                                    [--results bench/results.json] [--write FILE]

docs/tap-model.md ("Replacing assumptions with measurements") says how a board's timings replace
the model's assumed numbers (tools/bench_model.py PARAMS); this does it. The board measures each
APDU at the reader and at the PSAM link, so its figures hold RF and bus time that the model counts
in terms of its own. For each parameter it prints the model's value, the board's, and how the
board's was found:
- card_ms[INS]: the board's median for that instruction minus the model's RF time of that
  command (its bytes in bench/results.json's exchange, 106 kbit/s) and the reader link's share
  of one command for the board's reader;
- psam_ms[INS]: the board's median minus the T=0 line time of the command at the model's
  negotiated rate; for 70 (INITIALIZE FOR PURCHASE) only an upper bound: its wall time covers
  the card's UPDATE, which runs alongside;
- cpu_cycles_per_instruction: the board's tools/bench_mpy/tap.py time x its clock over the
  instructions the same script takes on micropython32 (tap_instructions_32);
- flash_program_ms and flash_erase_ms: the log's append (an upper bound: the record's encoding
  is in it) and the sector erase, both on the board's flash.
Then the model's tap time for the board's reader with those values next to the board's whole
tap. --write saves the values as JSON ({"params": {...}, "source": ...}) for a person to put in
PARAMS with their source; the model itself keeps the published figures until then.
Exit status: 0 done, 2 a file missing or unreadable.
"""

import argparse
import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "drivers") not in sys.path:
    sys.path.insert(0, str(ROOT / "drivers"))  # bench_model's T=0 timing (iso7816.py)

from tools import bench_model  # noqa: E402

BOARD = ROOT / "bench" / "board-results.json"
RESULTS = ROOT / "bench" / "results.json"


class CalibrationError(Exception):
    pass


def _load(path, what):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError("%s not found: %s" % (what, path)) from None
    except (OSError, ValueError) as e:
        raise CalibrationError("%s unreadable (%s): %s" % (what, path, e)) from None


def _commands(exchange):
    """INS (hex, upper case) -> list of (command bytes, answer bytes) in the model's exchange."""
    out = {}
    for cmd_hex, resp_hex, _err in exchange:
        out.setdefault(cmd_hex[2:4].upper(), []).append(
            (bytes.fromhex(cmd_hex), bytes.fromhex(resp_hex or ""))
        )
    return out


def calibrate(board, details):
    """-> (rows, params): rows of (name, model, board value, how) and the PARAMS overrides."""
    model = details.get("tap_model")
    if not model:
        raise CalibrationError("bench/results.json has no tap model: run `make bench` first")
    p = bench_model.PARAMS
    reader = board.get("reader")
    configs = model.get("configs", {})
    if reader not in configs:
        raise CalibrationError(
            "the board's reader %r is not one of the model's set-ups %s"
            % (reader, sorted(configs))
        )
    ex_card = details.get("exchange_card") or []
    answers = len(ex_card) + 1  # as the model counts them: the APDUs and the activation
    link_per_cmd = configs[reader]["terms"]["reader_link_ms"] / answers
    rows, params = [], {}
    card = _commands(ex_card)
    for ins, ms in sorted((board.get("card_ms") or {}).items()):
        if ms is None:
            continue
        cmds = card.get(ins.upper())
        if not cmds:
            rows.append(
                ("card_ms[%s]" % ins, p["card_ms"].get(ins), None, "not in the model's tap")
            )
            continue
        rf = sum(bench_model._rf_ms(len(c) + len(r) + 6, 2) for c, r in cmds) / len(cmds)
        value = round(ms - rf - link_per_cmd, 2)
        how = "%.2f measured - %.2f RF - %.2f %s link" % (ms, rf, link_per_cmd, reader)
        if value < 0:
            how += ": below the model's bus share, check the reader's settings"
            value = 0.0
        params.setdefault("card_ms", {})[ins] = value
        rows.append(("card_ms[%s]" % ins, p["card_ms"].get(ins), value, how))
    psam = _commands(details.get("exchange_psam") or [])
    for ins, ms in sorted((board.get("psam_ms") or {}).items()):
        if ms is None or ins not in psam:
            continue
        c, r = psam[ins][0]
        t = bench_model._t0(c.hex(), r.hex(), p["psam_fd"])
        line = t["start"] + t["busy"] + t["finish"] - p["psam_ms"].get(ins, 5.0)
        value = round(max(0.0, ms - line), 2)
        how = "%.2f measured - %.2f T=0 line time at %d baud" % (ms, line, t["baud"])
        if ins == "70":
            how += "; an upper bound (the card's UPDATE runs inside this wall time)"
        params.setdefault("psam_ms", {})[ins] = value
        rows.append(("psam_ms[%s]" % ins, p["psam_ms"].get(ins), value, how))
    cpu = board.get("cpu") or {}
    n32 = details.get("tap_instructions_32")
    mhz = board.get("cpu_mhz")
    if cpu.get("tap_cpu_us") and n32 and mhz:
        cpi = round(cpu["tap_cpu_us"] * mhz / n32, 3)
        params["cpu_cycles_per_instruction"] = cpi
        rows.append(
            (
                "cpu_cycles_per_instruction",
                p["cpu_cycles_per_instruction"],
                cpi,
                "tap.py %.0f us x %d MHz / %d instructions (micropython32)"
                % (cpu["tap_cpu_us"], mhz, n32),
            )
        )
    else:
        why = cpu.get("error") or (
            "no clock in the board's results" if not mhz else "no CPU figure"
        )
        rows.append(("cpu_cycles_per_instruction", p["cpu_cycles_per_instruction"], None, why))
    flash = board.get("log_flash") or {}
    if "partition" in flash and board.get("log_append_ms") is not None:
        params["flash_program_ms"] = board["log_append_ms"]
        rows.append(
            (
                "flash_program_ms",
                p["flash_program_ms"],
                board["log_append_ms"],
                "one log append on the board's flash (an upper bound: encoding included)",
            )
        )
        if board.get("flash_erase_ms") is not None:
            params["flash_erase_ms"] = board["flash_erase_ms"]
            rows.append(
                ("flash_erase_ms", p["flash_erase_ms"], board["flash_erase_ms"], "sector erase")
            )
    else:
        rows.append(
            ("flash_program_ms", p["flash_program_ms"], None, flash.get("skipped", "no flash log"))
        )
    return rows, params


def remodel(details, params):
    """The tap model run again with `params` over PARAMS (PARAMS itself left as it is)."""
    saved = copy.deepcopy(bench_model.PARAMS)
    try:
        for k, v in params.items():
            if isinstance(v, dict):
                bench_model.PARAMS[k] = dict(bench_model.PARAMS[k], **v)
            else:
                bench_model.PARAMS[k] = v
        return bench_model.tap_model(details)
    finally:
        bench_model.PARAMS.clear()
        bench_model.PARAMS.update(saved)


def _f(v):
    return "-" if v is None else ("%g" % v)


def report(board, details, rows, params):
    lines = [
        "Tap model calibration from %s (%s, %s, %s MHz, %s taps)"
        % (
            board.get("board", "?"),
            board.get("reader", "?"),
            board.get("date", "?"),
            board.get("cpu_mhz", "?"),
            board.get("taps", "?"),
        ),
        "",
        "%-28s %10s %10s  %s" % ("parameter", "model", "board", "how"),
    ]
    for name, was, now, how in rows:
        lines.append("%-28s %10s %10s  %s" % (name, _f(was), _f(now), how))
    reader = board["reader"]
    before = details["tap_model"]["by_reader"].get(reader)
    after = remodel(details, params)["by_reader"].get(reader)
    lines += [
        "",
        "tap model for %s: %s ms with the published figures, %s ms with the board's; "
        "the board's whole tap (activation to result shown): %s ms"
        % (reader, _f(before), _f(after), _f(board.get("total_ms"))),
    ]
    return "\n".join(lines), after


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--board", type=Path, default=BOARD, help="make board-bench's results")
    ap.add_argument("--results", type=Path, default=RESULTS, help="make bench's results")
    ap.add_argument("--write", type=Path, help="save the calibrated values as JSON")
    args = ap.parse_args(argv)
    try:
        board = _load(args.board, "the board's results (make board-bench)")
        details = _load(args.results, "the bench's results (make bench)").get("details", {})
        rows, params = calibrate(board, details)
    except CalibrationError as e:
        print("board-calibrate: %s" % e, file=sys.stderr)
        return 2
    text, after = report(board, details, rows, params)
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "source": "make board-bench on %s (%s, %s)"
            % (board.get("board"), board.get("reader"), board.get("date")),
            "params": params,
            "tap_model_ms": after,
        }
        args.write.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print("-> %s" % args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
