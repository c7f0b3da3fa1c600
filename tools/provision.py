"""Provision a validator: write its /config.json (device id, fresh secret, route, codes) and,
optionally, register the device with the back office and copy the file to the board.

    python -m tools.provision --device 1001 --route 12 --city 2482 \\
        --institution 1200290000000000 --collector http://bo.example:8080 --out config.json
    python -m tools.provision ... --port /dev/ttyUSB0          # also copy it with mpremote
    python -m tools.provision ... --collector-db sqlite:///bo.db --master-key-file mk
        # registers the device; its key is derived by the back office (no secret on a command
        # line); config.json is written 0600
"""

import argparse
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))

import config as fwconfig  # noqa: E402  (the firmware's own validation, shared)

from tools import versions  # noqa: E402


def build_config(args):
    raw = {
        "device_id": args.device,
        "secret": args.secret or secrets.token_hex(32),
        "route": args.route,
        "city": args.city,
        "institution": args.institution,
        "collector_url": args.collector,
        "stop_source": args.stop_source,
        "stop": args.stop,
        "operator": args.operator,
        "vehicle": args.vehicle,
        "modem": args.modem,
        "apn": args.apn,
    }
    keys = {}
    for spec in args.param_key or []:
        kid, _, hexkey = spec.partition(":")
        keys[kid] = hexkey
    if keys:
        raw["param_keys"] = keys  # fleet-signed bundles only (docs/parameters.md)
    if args.group:
        raw["groups"] = args.group
    if args.low_balance is not None:
        raw["low_balance_fen"] = parse_yuan(args.low_balance)
    if args.messages is not None:
        try:
            raw["messages"] = json.loads(Path(args.messages).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise fwconfig.ConfigError("--messages %s: %s" % (args.messages, exc))
    fwconfig.validate(raw)  # refuse here what the validator would refuse at boot
    return raw


def parse_yuan(text):
    """ "5", "5.5", "5.00" (yuan) -> fen, exactly; ConfigError on anything else."""
    whole, _, frac = text.strip().partition(".")
    if not whole.isdigit() or not (frac == "" or (frac.isdigit() and len(frac) <= 2)):
        raise fwconfig.ConfigError("--low-balance %r: want yuan such as 5 or 5.00" % text)
    return int(whole) * 100 + int((frac + "00")[:2])


def write_private(path, text):
    """config.json holds the device's secret: 0600 from its creation, also when it existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m tools.provision",
        description="Provision a validator: write its config.json (device id, secret, route, "
        "codes), register it with the back office (--collector-db) and copy the file to the "
        "board (--port).",
        epilog="Without --collector-db the device is NOT registered: the back office refuses its "
        "uploads until it is (python -m tools.collector provision). The file holds the device's "
        "upload secret and is written readable by you only.",
    )
    ap.add_argument("--device", type=int, required=True, help="device number (u32)")
    ap.add_argument("--route", type=int, required=True, help="route (line) number the bus serves")
    ap.add_argument("--city", required=True, help="4-digit city code of the operator (BCD)")
    ap.add_argument("--institution", required=True, help="16-digit acquirer institution code")
    ap.add_argument("--collector", required=True, help="back office URL")
    ap.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the secret (hex) from stdin; default: derived by the back office "
        "(--collector-db) or 32 fresh random bytes. Never a secret on the command line",
    )
    ap.add_argument(
        "--stop-source",
        default="fixed",
        choices=("fixed", "driver", "gps"),
        help="where the stop number comes from: fixed (--stop), set by the driver, or GPS "
        "(default fixed)",
    )
    ap.add_argument("--stop", type=int, default=0, help="the fixed stop number (default 0)")
    ap.add_argument("--operator", type=int, default=1, help="operator number (default 1)")
    ap.add_argument("--vehicle", default="", help="vehicle registration, for reports")
    ap.add_argument(
        "--modem",
        default="sim7600",
        choices=("sim7600", "quectel", "socket"),
        help="uplink: a SIMCom SIM7600/A76xx, a Quectel EC2x/EG9x, or a socket (Wi-Fi, bench)",
    )
    ap.add_argument("--apn", default="cmnet", help="the SIM's access point name (default cmnet)")
    ap.add_argument(
        "--param-key",
        action="append",
        metavar="ID:HEX",
        help="fleet public key (tools/params_sign.py pubkey); give the current and the next",
    )
    ap.add_argument("--group", type=int, action="append", help="device group (bundle scope)")
    ap.add_argument(
        "--out",
        type=Path,
        help="where to write config.json (default provisioned/<device>/config.json in the "
        "repository, which git ignores)",
    )
    ap.add_argument("--port", help="serial port of the board: copy config.json there")
    ap.add_argument(
        "--collector-db",
        help="database URL: register the device; its key is derived from the master key "
        "(--master-key-file or $COLLECTOR_MASTER_KEY_FILE / $COLLECTOR_MASTER_KEY)",
    )
    ap.add_argument("--master-key-file", help="the back office's device master key (0600)")
    ap.add_argument(
        "--ca-cert",
        type=Path,
        help="the back office's CA certificate (PEM or DER): written as ca.der beside --out "
        "(and copied to the board with --port); https verifies the back office against it",
    )
    ap.add_argument(
        "--low-balance",
        metavar="YUAN",
        help='a sale leaving less than this says "top up soon" (default 5.00 yuan; 0: never)',
    )
    ap.add_argument(
        "--messages",
        metavar="FILE.json",
        help="the company's own passenger texts: {reason: [Chinese, English]} "
        "(reasons and limits: docs/operators.md)",
    )
    versions.add_flag(ap)  # the version set (tools/versions.py)
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "provisioned" / str(args.device) / "config.json"
        args.out.parent.mkdir(parents=True, exist_ok=True)
    args.secret = sys.stdin.readline().strip() if args.secret_stdin else None
    try:
        build_config(args)  # refuse a bad config before the back office hears of the device
    except fwconfig.ConfigError as exc:
        sys.exit(f"provision: {exc}")
    if args.collector_db:
        # In this process: the key never appears on a command line (/proc/*/cmdline).
        from tools.collector.db import Store
        from tools.collector.keys import from_env

        try:
            store = Store(args.collector_db, keys=from_env(args.master_key_file))
            try:
                secret = bytes.fromhex(args.secret) if args.secret else None
                args.secret = store.provision(args.device, secret).hex()
            finally:
                store.close()
        except (ValueError, OSError, RuntimeError) as exc:
            sys.exit(f"provision: back office: {exc}")
        print(f"provision: device {args.device} registered with the back office")
    else:
        print(
            f"provision: WARNING: device {args.device} is NOT registered with the back office "
            "(no --collector-db): its uploads are refused until it is",
            file=sys.stderr,
        )
    cfg = build_config(args)
    write_private(args.out, json.dumps(cfg, indent=1) + "\n")
    print(f"provision: wrote {args.out} (mode 0600) for {cfg['device_id']}")
    ca = None
    if args.ca_cert:
        try:
            ca = write_ca(args.ca_cert, args.out.parent / "ca.der")
        except (ValueError, OSError) as exc:
            sys.exit(f"provision: CA certificate: {exc}")
        print(f"provision: wrote {ca} (the back office's CA, DER)")
    if args.port:
        mpremote = ROOT / ".venv" / "bin" / "mpremote"
        cmd = [str(mpremote), "connect", args.port, "fs", "cp", str(args.out), ":config.json"]
        print("provision: " + " ".join(cmd))
        subprocess.run(cmd, check=True)
        if ca is not None:
            cmd = [str(mpremote), "connect", args.port, "fs", "cp", str(ca), ":ca.der"]
            print("provision: " + " ".join(cmd))
            subprocess.run(cmd, check=True)


def write_ca(src, dst):
    """The CA certificate as DER for drivers/http_socket.py (ca.der): refused unless it parses
    as an X.509 certificate that may sign others (basicConstraints CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = Path(src).read_bytes()
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if b"-----BEGIN" in data
            else x509.load_der_x509_certificate(data)
        )
    except ValueError as exc:
        raise ValueError("%s is not an X.509 certificate (%s)" % (src, exc))
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError("%s is not a CA certificate (no basicConstraints CA:TRUE)" % src)
    dst = Path(dst)
    dst.write_bytes(cert.public_bytes(Encoding.DER))
    return dst


if __name__ == "__main__":
    main()
