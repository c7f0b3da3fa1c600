"""Save what a validator holds that exists nowhere else, before anything erases it.

    python -m tools.device_backup --port /dev/ttyUSB0 [--out backup/DIR]

Over mpremote (the board stops selling: Ctrl-C is the application's maintenance mode, with the
watchdog on its long window), it copies:
- the raw transaction log partition (`txlog`): every sale, refusal and unconfirmed debit,
  acknowledged by the back office or not;
- `/config.json` (device number, route, the upload secret: the copy is made readable by its owner
  only);
- the littlefs data folder `/data` (parameters as installed; they can also be fetched again).

The log is then decoded on this machine (tools.journal_decode) and the number of records the back
office has not acknowledged is printed, so the person at the depot knows what the copy protects.
`make flash` runs this first. Exit status 0 only when the log and the configuration were saved.
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE_COPY = "/txlog-backup.img"

# Runs on the board: the txlog partition into a littlefs file, 4 KB at a time (the heap holds one
# block), feeding a watchdog that may be running. Prints the byte count for the host to check.
_COPY_TXLOG = (
    """
import esp32, gc
gc.collect()
_p = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="txlog")
if not _p:
    print("BACKUP-NO-TXLOG")
else:
    _p = _p[0]
    _n = _p.ioctl(4, 0)
    _b = bytearray(_p.ioctl(5, 0))
    try:
        import app
        _feed = app.current()._feed if app.current() else None
    except Exception:
        _feed = None
    with open("%s", "wb") as _f:
        for _i in range(_n):
            _p.readblocks(_i, _b)
            _f.write(_b)
            if _feed:
                _feed()
    print("BACKUP-TXLOG", _n * len(_b))
"""
    % DEVICE_COPY
)


class BackupError(Exception):
    pass


def mpremote_bin():
    local = ROOT / ".venv" / "bin" / "mpremote"
    return str(local) if local.exists() else (shutil.which("mpremote") or "mpremote")


def run_mpremote(port, *args, timeout=300):
    cmd = [mpremote_bin(), "connect", port, "resume", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BackupError("mpremote not found: run `make setup` first")
    except subprocess.TimeoutExpired:
        raise BackupError("mpremote %s timed out after %d s" % (" ".join(args[:2]), timeout))
    if proc.returncode != 0:
        raise BackupError(
            "mpremote %s failed: %s" % (" ".join(args[:2]), (proc.stderr or proc.stdout).strip())
        )
    return proc.stdout


def backup(port, out):
    """Copy the log, the configuration and /data into `out`; returns a summary dict."""
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    said = run_mpremote(port, "exec", _COPY_TXLOG)
    if "BACKUP-NO-TXLOG" in said:
        raise BackupError("the board has no txlog partition: not a validator build?")
    size = None
    for line in said.splitlines():
        if line.startswith("BACKUP-TXLOG"):
            size = int(line.split()[1])
    if size is None:
        raise BackupError("the board did not copy its transaction log: %s" % said.strip()[-300:])
    log_img = out / "txlog.img"
    run_mpremote(port, "fs", "cp", ":" + DEVICE_COPY, str(log_img))
    run_mpremote(port, "fs", "rm", ":" + DEVICE_COPY)
    if log_img.stat().st_size != size:
        raise BackupError(
            "txlog copy is %d bytes, the partition %d: copy again" % (log_img.stat().st_size, size)
        )
    cfg = out / "config.json"
    run_mpremote(port, "fs", "cp", ":/config.json", str(cfg))
    os.chmod(cfg, 0o600)  # it holds the device's upload secret
    data_ok = True
    try:
        run_mpremote(port, "fs", "cp", "-r", ":/data", str(out))
    except BackupError as e:
        data_ok = False
        print("note: /data not copied (%s); parameters can be fetched again" % e, file=sys.stderr)
    return {"out": str(out), "txlog_bytes": size, "data": data_ok, **decode_summary(log_img)}


def decode_summary(log_img):
    """Records in the copy and how many the back office has not acknowledged."""
    proc = subprocess.run(
        [sys.executable, "-m", "tools.journal_decode", "--txlog", "--json", str(log_img)],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=300,
    )
    if proc.returncode not in (0, 1):
        return {"decoded": False, "why": (proc.stderr or proc.stdout).strip()[-300:]}
    import json

    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return {"decoded": False, "why": "journal_decode gave no JSON"}
    return {
        "decoded": True,
        "records": len(doc.get("records") or ()),
        "unacknowledged": doc.get("backlog"),
        "unconfirmed": len(doc.get("open_intents") or ()),
        "problems": doc.get("problems") or [],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.device_backup",
        description="Copy a validator's transaction log, configuration and /data to this "
        "machine (over mpremote) before a re-flash or a repair.",
    )
    ap.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0")
    ap.add_argument(
        "--out",
        help="folder for the copy (default backup/<port name>-<UTC date and time> in the "
        "repository; created readable by you only)",
    )
    args = ap.parse_args(argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = (
        Path(args.out) if args.out else ROOT / "backup" / ("%s-%s" % (Path(args.port).name, stamp))
    )
    try:
        s = backup(args.port, out)
    except BackupError as e:
        print("backup FAILED: %s" % e, file=sys.stderr)
        print("nothing on the board was changed", file=sys.stderr)
        return 1
    print("backup saved in %s" % s["out"])
    print("  transaction log: %d bytes (txlog.img)" % s["txlog_bytes"])
    if s.get("decoded"):
        extra = ""
        if s.get("unacknowledged") is not None:
            extra = ", %s not yet acknowledged by the back office" % s["unacknowledged"]
        print("  records: %d%s" % (s["records"], extra))
        if s["unconfirmed"]:
            print("  unconfirmed debits (intent without outcome): %d" % s["unconfirmed"])
        for p in s["problems"]:
            print("  problem in the copy: %s" % p)
    else:
        print("  (could not decode the copy here: %s)" % s.get("why"))
    print("  configuration: config.json (holds the upload secret: keep it private)")
    print("  /data: %s" % ("copied" if s["data"] else "not copied"))
    print("decode it with: python -m tools.journal_decode --txlog %s/txlog.img" % s["out"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
