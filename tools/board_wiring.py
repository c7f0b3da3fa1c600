"""Wiring tables and pictures of the validator boards, drawn from their pin maps.

    python -m tools.board_wiring            # rewrite the tables in docs/bench-setup.md, the SVGs
    python -m tools.board_wiring --check    # exit 1 when they differ from the pin maps

Each board's board.py (with boards/esp32_common.py) is imported under CPython with a stand-in
`machine` module, and every wire it implies is listed: part, the part's pin, the module's GPIO,
and a note (level, pull-up, strapping). The tables go between the `wiring:begin`/`wiring:end`
marks of docs/bench-setup.md, one SVG per board to docs/wiring/<board>.svg; `make wiring` runs
this and tests/host/test_board_wiring.py fails when either is out of date, so the pictures and
the pin maps cannot drift.
"""

import argparse
import importlib
import sys
import types
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
BOARDS = ROOT / "boards"
DOC = ROOT / "docs" / "bench-setup.md"
SVG_DIR = ROOT / "docs" / "wiring"
BEGIN = "<!-- wiring:begin (tools/board_wiring.py writes this part: make wiring) -->"
END = "<!-- wiring:end -->"
ESP32_BOARDS = (
    "esp32_pn532_i2c",
    "esp32_pn532_spi",
    "esp32_rc522_spi",
    "esp32s3_pn532_hsu",
    "esp32s3_pn532_i2c",
)
RTC_ADDR = {"ds3231": 0x68, "pcf8563": 0x51}


def _machine_stub():
    m = types.ModuleType("machine")

    class Pin:
        IN = 0
        OUT = 1

    m.Pin = Pin
    return m


def load_board(name):
    """The board module of boards/<name>/board.py, imported afresh."""
    saved_path = list(sys.path)
    saved = {k: sys.modules.get(k) for k in ("machine", "board", "esp32_common")}
    sys.modules["machine"] = _machine_stub()
    sys.path[:0] = [str(BOARDS / name), str(BOARDS)]
    try:
        for k in ("board", "esp32_common"):
            sys.modules.pop(k, None)
        return importlib.import_module("board")
    finally:
        sys.path[:] = saved_path
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _g(n):
    return "GPIO%d" % n


def wires(board):
    """-> [(part, part pin, module pin, note)] for every wire of the board."""
    r = board.READER
    rows = []
    chip = "RC522" if r["chip"] == "rc522" else "PN532"
    if r["bus"] == "i2c":
        mode = " (I2C mode)" if chip == "PN532" else ""
        rows += [
            (
                chip + mode,
                "SDA",
                _g(r["sda"]),
                "I2C%d, %d kHz; 4.7k pull-up to 3.3 V" % (r["i2c_id"], r["freq"] // 1000),
            ),
            (chip + mode, "SCL", _g(r["scl"]), "4.7k pull-up to 3.3 V"),
        ]
    elif r["bus"] == "spi":
        mode = " (SPI mode)" if chip == "PN532" else ""
        first = "LSB first" if chip == "PN532" else "MSB first"
        rows += [
            (
                chip + mode,
                "SCK",
                _g(r["sck"]),
                "SPI%d, %g MHz, %s" % (r["spi_id"], r["baudrate"] / 1e6, first),
            ),
            (chip + mode, "MOSI", _g(r["mosi"]), ""),
            (chip + mode, "MISO", _g(r["miso"]), ""),
            (
                chip + mode,
                "SS" if chip == "PN532" else "SDA (CS)",
                _g(r["cs"]),
                "chip select, held high at reset",
            ),
        ]
    else:
        rows += [
            (
                chip + " (HSU mode)",
                "RXD",
                _g(r["tx"]),
                "UART%d TX, %d baud at start" % (r["uart_id"], r["baudrate"]),
            ),
            (chip + " (HSU mode)", "TXD", _g(r["rx"]), "UART%d RX" % r["uart_id"]),
        ]
    if "irq" in r:
        rows.append((chip, "IRQ", _g(r["irq"]), "input; low = a frame is ready"))
    if "reset" in r:
        rows.append(
            (
                chip,
                "RSTPDN" if chip == "PN532" else "RST",
                _g(r["reset"]),
                "output, high = running",
            )
        )
    rows.append((chip, "VCC / GND", "3V3 / GND", "3.3 V logic: no level shifter"))
    p = board.PSAM
    rows += [
        (
            "PSAM slot",
            "I/O (C7)",
            _g(p["tx"]),
            "UART%d TX through the resistor to I/O" % p["uart_id"],
        ),
        (
            "PSAM slot",
            "I/O (C7)",
            _g(p["rx"]),
            "UART%d RX on I/O directly (TX echoes)" % p["uart_id"],
        ),
        ("PSAM slot", "CLK (C3)", _g(p["clk"]), "PWM %g MHz" % (p["clk_hz"] / 1e6)),
        ("PSAM slot", "RST (C2)", _g(p["reset"]), "output"),
        (
            "PSAM slot",
            "VCC (C1) / GND (C5)",
            "3V3 / GND",
            "a class A (5 V only) PSAM needs 5 V and a level shifter on I/O",
        ),
    ]
    m = board.MODEM
    rows += [
        (
            "modem",
            "RXD",
            _g(m["tx"]),
            "UART%d TX, %d baud; shift to 1.8 V if the module's UART is 1.8 V"
            % (m["uart_id"], m["baudrate"]),
        ),
        ("modem", "TXD", _g(m["rx"]), "UART%d RX; shift up from 1.8 V" % m["uart_id"]),
        (
            "modem",
            "PWRKEY",
            _g(m["pwrkey"]),
            "driven high to press (a breakout's transistor pulls PWRKEY low)",
        ),
        ("modem", "STATUS", _g(m["status"]), "input; shift up from 1.8 V"),
        ("modem", "VBAT / GND", "supply / GND", "own supply for 2 A bursts; common ground"),
    ]
    d = board.DISPLAY
    rows += [
        (
            "SSD1306 display",
            "SDA",
            _g(d["sda"]),
            "I2C%d, address 0x%02X; pull-ups (often on the module)" % (d["i2c_id"], d["addr"]),
        ),
        ("SSD1306 display", "SCL", _g(d["scl"]), "pull-up (often on the module)"),
    ]
    rtc = getattr(board, "RTC", None)
    if rtc:
        name = rtc["chip"].upper()
        addr = RTC_ADDR.get(rtc["chip"])
        rows += [
            ("%s RTC" % name, "SDA", _g(d["sda"]), "the display's bus, address 0x%02X" % addr),
            ("%s RTC" % name, "SCL", _g(d["scl"]), "backup cell fitted"),
        ]
    f = board.FEEDBACK
    rows += [
        ("green LED", "anode (resistor to GND)", _g(f["led_green"]), "LED to ground"),
        ("red LED", "anode (resistor to GND)", _g(f["led_red"]), "LED to ground"),
        ("buzzer", "+ (transistor driver)", _g(f["buzzer"]), "PWM 2.7 kHz"),
    ]
    s = board.SAFE_PIN
    pull = "internal pull-up" if s.get("pull") == "up" else "10k pull-up to 3.3 V on the board"
    rows.append(("safe-mode jumper", "to GND at power-up", _g(s["gpio"]), pull))
    strap = getattr(board, "STRAPPING", {})
    out = []
    for part, pin, gpio, note in rows:
        n = int(gpio[4:]) if gpio.startswith("GPIO") else None
        if n in strap:
            note = (note + "; " if note else "") + "strapping pin"
        out.append((part, pin, gpio, note))
    return out


def table(name, board):
    lines = [
        "### %s" % name,
        "",
        "![%s wiring](wiring/%s.svg)" % (name, name),
        "",
        "| part | part pin | module pin | note |",
        "|---|---|---|---|",
    ]
    for row in wires(board):
        lines.append("| %s |" % " | ".join(row))
    strap = getattr(board, "STRAPPING", {})
    if strap:
        lines.append("")
        for n in sorted(strap):
            lines.append("Strapping GPIO%d: %s." % (n, strap[n]))
    return "\n".join(lines)


def svg(name, board):
    """A picture of the module on the left, each part on the right, a line per wire."""
    rows = [w for w in wires(board) if w[2].startswith("GPIO")]
    parts = []
    for part, *_ in rows:
        if part not in parts:
            parts.append(part)
    step = 18
    height = 60 + step * (len(rows) + 2 * len(parts))
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="760" height="%d" '
        'font-family="monospace" font-size="12">' % height,
        '<rect width="760" height="%d" fill="white"/>' % height,
        '<text x="10" y="20" font-size="14">%s (generated from boards/%s/board.py)</text>'
        % (escape(name), escape(name)),
        '<rect x="10" y="35" width="150" height="%d" fill="#eef" stroke="black"/>' % (height - 45),
        '<text x="20" y="55">%s</text>' % ("ESP32-S3" if "s3" in name else "ESP32"),
    ]
    y = 60
    for part in parts:
        mine = [w for w in rows if w[0] == part]
        top = y
        y += step
        for _p, pin, gpio, _note in mine:
            out.append('<text x="150" y="%d" text-anchor="end">%s</text>' % (y + 4, gpio))
            out.append('<line x1="160" y1="%d" x2="470" y2="%d" stroke="#369"/>' % (y, y))
            out.append('<circle cx="160" cy="%d" r="3"/>' % y)
            out.append('<text x="480" y="%d">%s</text>' % (y + 4, escape(pin)))
            y += step
        out.append(
            '<rect x="470" y="%d" width="280" height="%d" fill="none" stroke="black"/>'
            % (top, y - top)
        )
        out.append('<text x="600" y="%d" font-weight="bold">%s</text>' % (top + 14, escape(part)))
        y += step
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render():
    """-> (the doc's generated part, {svg path: text})."""
    parts = []
    pictures = {}
    for name in ESP32_BOARDS:
        board = load_board(name)
        parts.append(table(name, board))
        pictures[SVG_DIR / (name + ".svg")] = svg(name, board)
    return BEGIN + "\n" + "\n\n".join(parts) + "\n" + END, pictures


def updated_doc(text, generated):
    if BEGIN not in text or END not in text:
        raise SystemExit("%s has no %s ... %s marks" % (DOC, BEGIN, END))
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    return head + generated + tail


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only check: exit 1 if out of date")
    args = ap.parse_args(argv)
    generated, pictures = render()
    doc = DOC.read_text(encoding="utf-8")
    want = updated_doc(doc, generated)
    stale = [DOC] if want != doc else []
    for path, text in pictures.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
    if args.check:
        for path in stale:
            print("out of date: %s (run make wiring)" % path.relative_to(ROOT))
        return 1 if stale else 0
    DOC.write_text(want, encoding="utf-8")
    SVG_DIR.mkdir(exist_ok=True)
    for path, text in pictures.items():
        path.write_text(text, encoding="utf-8")
    for path in stale:
        print("wrote %s" % path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
