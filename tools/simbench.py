"""The simulated bench: the whole validator on a laptop, end to end (`make sim`).

It starts the back office (the collector on SQLite); for each validator of the scenario, every
simulator (reader chip and cards, PSAM, modem, display) on its own hub and the real firmware under
the MicroPython unix port; plays a scenario of taps and incidents; prints each tap as the
passenger and the operator see it; lets the validators upload; and ends with a summary that
matches the cards' own audit trails, the validators' transaction logs and the back office against
each other. Exit status 0 means every expectation written in the scenario held. Scenario format:
docs/scenarios.md. The kinds of event are the table EVENTS: a new one is a function decorated
with @step (its key, the other keys it takes, a check run when the scenario is loaded).

    python -m tools.simbench                          # tools/scenarios/morning.toml
    python -m tools.simbench --scenario my.toml --out bench/out/my
"""

import argparse
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import record  # noqa: E402
import timeutil  # noqa: E402
from feedback import SOUNDS  # noqa: E402

from tools import build_firmware, params_compile, params_sign, reasons, simbench_time  # noqa: E402
from tools.collector import app as collector_app  # noqa: E402
from tools.collector.app import create_app  # noqa: E402
from tools.collector.bench import ServerThread  # noqa: E402
from tools.collector.clearing import Clearing, IssuerKey  # noqa: E402
from tools.collector.db import Store  # noqa: E402
from tools.sim import contact_sheet, crypto  # noqa: E402
from tools.sim.bench_hub import BenchWorld  # noqa: E402
from tools.sim.card import VirtualCard  # noqa: E402
from tools.simbench_faults import (  # noqa: E402
    CardTrap,
    CutPoint,
    NetTrap,
    install_traps,
    where_cut_landed,
)
from tools.simbench_load import (  # noqa: E402, F401 - the format's names, for users of this module
    COMMANDS,
    EVENTS,
    FLAG_NAMES,
    KINDS,
    NET_STAGES,
    REASON_NAMES,
    STEPS,
    TZ,
    WAIT_UPLOAD_S,
    ScenarioError,
    _check_params,
    _check_power_cut,
    _check_tap,
    _check_updown,
    _check_wait,
    check_scenario,
    event_kind,
    generate_events,
    load_scenario,
    parse_duration,
    step,
    validator_time,
    validators_of,
)

DEFAULT_SCENARIO = ROOT / "tools" / "scenarios" / "morning.toml"
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
HEAP = os.environ.get(
    "SIMBENCH_HEAP", "1m"
)  # the application compiled from source on a 64-bit port; frozen on an ESP32
TAP_TIMEOUT_S = 20.0  # real seconds a tap may take before the bench calls it lost
BOOT_TIMEOUT_S = 60.0
LEFT_TIMEOUT_S = 10.0  # real seconds for the validator to see a card leave
# Virtual time: the uplink's back-off waits on the bench's clock (board VALIDATOR_VIRTUAL_WAIT);
# the bench takes the validators' events every VIRTUAL_TICK_S of real time while it waits.
VIRTUAL_TICK_S = 0.05
FLOW_IDLE_S = 10.0  # real seconds a flowing wait lets a validator not wait on the clock


def local_stamp(t):
    """Seconds since 2000 -> 'YYYY-MM-DD HH:MM:SS UTC+08:00' (the bench's zone)."""
    if not isinstance(t, int):
        return None
    y, mo, d, hh, mi, ss = timeutil.from_seconds(t + TZ)
    return "%04d-%02d-%02d %02d:%02d:%02d UTC%+03d:%02d" % (
        y,
        mo,
        d,
        hh,
        mi,
        ss,
        TZ // 3600,
        TZ % 3600 // 60,
    )


def local_clock(t):
    y, mo, d, hh, mi, ss = timeutil.from_seconds(t + TZ)
    return "%02d:%02d:%02d" % (hh, mi, ss)


def yuan(fen):
    return "-" if fen is None else "%d.%02d" % (fen // 100, fen % 100)


def money(fen):
    """A scenario's figure for an operator: yuan, with the fen the scenario file uses."""
    return "-" if fen is None else "%s yuan (%d fen)" % (yuan(fen), fen)


def duration(s):
    return "%dm%02ds" % (s // 60, s % 60) if s >= 60 else "%ds" % s


class Firmware:
    """The validator firmware as a MicroPython process; stdout '@@EV' lines become events.
    `on_event(ev)` runs in the reader thread before an event is queued (the bench's cuts at an
    acknowledgement or an activation land there)."""

    def __init__(self, env, log_path, main_py):
        self.env = env
        self.main_py = main_py
        self.on_idle = None  # called while waiting for events (the bench's watchdog check)
        self.on_event = None
        self.log_path = log_path
        self.proc = None
        self.events = queue.Queue()
        self.starts = 0
        self.exited = True

    def start(self):
        cmd = [str(MICROPYTHON), "-X", "heapsize=" + HEAP, str(self.main_py)]
        self.exited = False
        self.proc = subprocess.Popen(
            cmd,
            cwd=str(ROOT),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()

    def _pump(self, proc):
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write("---- start %d ----\n" % self.starts)
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line.startswith("@@EV "):
                    try:
                        ev = json.loads(line[5:])
                    except ValueError:
                        log.write("bad event line: %s\n" % line)
                        continue
                    if self.on_event is not None:
                        self.on_event(ev)
                    self.events.put(ev)
                else:
                    log.write(line + "\n")
                    log.flush()
            self.events.put({"ev": "exit", "code": proc.wait()})

    def wait_for(self, kind, timeout=TAP_TIMEOUT_S, seen=None, limit="TAP_TIMEOUT_S"):
        """The next event of `kind`; other events go to `seen` (a list) in order. A timeout
        names the limit that ran out (`limit`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    "no %s event within %.0f s of real time (%s)" % (kind, timeout, limit)
                )
            try:
                ev = self.events.get(timeout=min(left, 0.05))
            except queue.Empty:
                if self.on_idle is not None:
                    self.on_idle()
                continue
            if ev["ev"] == "exit":
                self.exited = True
            if seen is not None:
                seen.append(ev)
            if ev["ev"] == kind:
                return ev
            if ev["ev"] == "exit" and kind != "exit":
                raise RuntimeError("firmware exited with %s" % ev.get("code"))

    def cut(self):
        """The power dies now (any thread): SIGKILL; the flash image keeps what it had."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def kill(self, seen=None):
        """A power cut from the bench's thread: cut, then drain to the exit event so the next
        start's events are not mixed with these."""
        self.cut()
        if self.proc is not None and not self.exited:
            try:
                self.wait_for("exit", timeout=5, seen=seen)
            except (TimeoutError, RuntimeError):
                pass

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Unit:
    """One validator on the bench: its own hub (reader, PSAM with its own terminal number,
    modem, display, watchdog), firmware process, flash images and device identity; the back
    office is the bench's, shared."""

    def __init__(self, bench, name, v, index, out):
        self.bench = bench
        self.name = name
        self.v = v
        self.out = out
        self.device = int(v.get("device", 1001 + index))
        self.secret = bytes.fromhex(v.get("secret", "5a" * 32))
        self.route = int(v.get("route", 101))
        self.stop = int(v.get("stop", 1))
        self.reader = v.get("reader", "pn532_i2c")
        self.terminal_id = str(v.get("terminal_id", "%012d" % (101 + index)))
        self.records = {}  # seq -> kind, from the firmware's record events
        self.flash_seen = {}  # seq -> raw bytes, from every look at the txlog image
        self.acked = 0
        self.params_version = None
        self.wdt_resets = 0
        self.net_trap = None
        self.label = "" if len(bench.units_spec) == 1 else "[%s] " % name

    def setup(self, fw_dir, url):
        v = self.v
        self.out.mkdir(parents=True, exist_ok=True)
        store = self.bench.store
        store.provision(self.device, self.secret, "bench validator %s" % self.name)
        # As the operator's depot would: provisioned on the scenario's day (the collector holds
        # a sale before that out of settlement), its PSAM registered to it.
        with store._tx() as ex:
            ex.run(
                "UPDATE devices SET created = ? WHERE device_id = ?",
                (self.bench.start - 86400 + timeutil.EPOCH_OFFSET_UNIX, self.device),
            )
        store.register_psam(self.device, self.terminal_id)
        dialect = "quectel" if v.get("modem", "sim7600") == "quectel" else "simcom"
        self.world = BenchWorld(
            reader=self.reader,
            dialect=dialect,
            terminal_id=self.terminal_id,
            rtc_chip=v.get("rtc_chip", "ds3231") or None,
        )
        port = self.world.start()
        cfg = {
            "device_id": self.device,
            "secret": self.secret.hex(),
            "route": self.route,
            "stop": self.stop,
            "city": str(v.get("city", "2482")),
            "institution": str(v.get("institution", "1200290000000000")),
            "collector_url": url,
            "modem": v.get("modem", "sim7600"),
            "apn": "cmnet",
            "uplink_interval_s": int(v.get("upload_interval_s", 5)),
        }
        if v.get("signed"):  # only fleet-signed bundles install (docs/parameters.md)
            cfg["param_keys"] = {"1": params_sign.public_bytes(self.bench.fleet_key).hex()}
        if "clock_policy" in v:
            cfg["clock_policy"] = v["clock_policy"]  # docs/time.md
        config_path = self.out / "config.json"
        config_path.write_text(json.dumps(cfg, indent=1))
        self.txlog_path = self.out / "flash.img.txlog"
        env = dict(os.environ)
        env.update(
            {
                "SIM_PORT": str(port),
                "MICROPYPATH": "%s:%s:.frozen" % (fw_dir / "lib", fw_dir),
                "VALIDATOR_READER": self.reader,
                "VALIDATOR_RTC": v.get("rtc_chip", "ds3231") or "none",
                "VALIDATOR_FLASH": str(self.out / "flash.img"),
                "VALIDATOR_TXLOG": str(self.txlog_path),
                "VALIDATOR_TXLOG_BLOCKS": str(int(v.get("txlog_sectors", 64))),
                "VALIDATOR_CONFIG": str(config_path),
                "VALIDATOR_EVENTS": "1",
                "VALIDATOR_VIRTUAL_WAIT": "1",
                "VALIDATOR_TEST_HOOKS": "1",
            }
        )
        self.wdt_s = int(v.get("watchdog_ms", 8000)) / 1000  # as on the boards
        env["VALIDATOR_WDT_MS"] = str(int(self.wdt_s * 1000))
        self.fw = Firmware(env, self.out / "firmware.log", fw_dir / "main.py")
        self.fw.on_idle = self._watchdog_check
        self.fw.on_event = self._on_event

    # ---- events ---------------------------------------------------------------------------------

    def _on_event(self, ev):
        kind = ev["ev"]
        if kind == "acked":
            self.acked = max(self.acked, ev["seq"])
        trap = self.net_trap
        if trap is None or trap.fired:
            return
        if kind == "acked" and trap.stage == "acknowledged":
            trap.fire("the log acknowledged up to seq %d" % ev["seq"])
        elif kind == "params" and trap.stage == "activated":
            if trap.version is None or (ev.get("version") or 0) >= trap.version:
                trap.fire("parameters v%s active" % ev.get("version"))

    def note(self, events):
        for ev in events:
            if ev["ev"] == "record":
                self.records[ev["seq"]] = ev["kind"]
            elif ev["ev"] == "params":
                self.params_version = ev["version"]
            simbench_time.note(self, ev)

    def pump(self, timeout=0.0):
        """Take what the firmware said so far (waiting up to `timeout`)."""
        seen = []
        try:
            self.fw.wait_for("never", timeout=max(timeout, 0.001), seen=seen)
        except (TimeoutError, RuntimeError):
            pass
        self.note(seen)
        return seen

    def _watchdog_check(self):
        """The watchdog as hardware: no feed for its timeout while running resets the board."""
        last = self.world.wdt_last
        if not self.fw.alive() or last is None:
            return
        if time.monotonic() - last > self.wdt_s:
            self.wdt_resets += 1
            self.world.wdt_last = None
            self.fw.proc.send_signal(signal.SIGKILL)

    # ---- power ----------------------------------------------------------------------------------

    def boot(self, why="power on", cause="power-on"):
        self.world.wdt_last = None
        self.world.wake_at = None  # a virtual wait of the firmware that died
        self.fw.env["VALIDATOR_RESET_CAUSE"] = cause
        self.fw.start()
        seen = []
        ev = self.fw.wait_for("boot", timeout=BOOT_TIMEOUT_S, seen=seen, limit="BOOT_TIMEOUT_S")
        self.note(seen)
        self.bench.say(
            "%s  %svalidator %s: PSAM %s, parameters v%s, journal %d (acked %d), %d torn pending,"
            " heap %d B used"
            % (
                local_clock(self.world.time),
                self.label,
                why,
                "ready" if ev["psam"] else "FAILED",
                ev["params"],
                ev["last_seq"],
                ev["acked_seq"],
                ev["pending"],
                ev.get("heap_used", 0),
            )
        )
        return ev

    def cut_power(self):
        """A power cut: the firmware dies and the ESP32's RTC restarts at 2000-01-01 with its
        memory lost (the RTC chip runs on its cell: docs/time.md)."""
        self.power_off()
        self.world.power_cut()

    def power_off(self):
        """The firmware dies (if it still runs) and the bench looks at what its flash holds."""
        seen = []
        self.fw.kill(seen)
        self.note(seen)
        self.read_flash()

    def read_flash(self):
        """The records on the raw txlog partition image (what a technician would read off a
        board): every 64-byte slot holding a valid record, once per sequence number (an intent
        carried into a newer sector is the same record). Kept across looks: sectors reused once
        acknowledged lose theirs, and the bench compares what the device ever held."""
        try:
            blob = self.txlog_path.read_bytes()
        except OSError as e:
            self.bench.fail("%stxlog image could not be read: %s" % (self.label, e))
            return {}
        out = {}
        for off in range(0, len(blob) - record.SIZE + 1, record.SIZE):
            slot = blob[off : off + record.SIZE]
            if record.valid(slot):
                out[record.seq_of(slot)] = bytes(slot)
        self.flash_seen.update(out)
        return out

    def publish(self, version, folder, blacklist_extra=(), filler=0):
        """Compile and publish a bundle for this validator: with `filler` extra random cards on
        its blacklist (a big bundle); fleet-signed for a validator with `signed = true` (one
        over 16 KiB then goes by ranges, firmware/chunkdl.py)."""
        folder = ROOT / folder
        cards = params_compile.read_cards(folder / "blacklist.csv", progress=False)
        cards = list(cards) + [int(x) for x in blacklist_extra]
        rng = random.Random(version)
        cards += [rng.randrange(10**18, 10**19) for _ in range(filler)]
        data = params_compile.compile_bundle(
            self.secret,
            folder / "fares.toml",
            folder / "whitelist.csv",
            version=version,
            activation=0,
            progress=False,
            cards=cards,
        )
        target = self.device
        if self.v.get("signed"):
            # One signature for the fleet: published to every device (the ranged download
            # serves fleet bundles only).
            body = params_sign.body_of(data)
            data = params_sign.sign(self.bench.fleet_key, 1, body, {})
            target = 0
        self.bench.store.publish(version, data, target=target)
        return version

    def uploaded(self):
        held = set(self.bench.store.seqs(self.device))
        return bool(self.records) and held >= set(self.records) | set(self.flash_seen)


@step(
    "tap",
    ("pull", "power_cut", "within_s", "restart", "expect", "fare", "balance"),
    check=_check_tap,
)
def tap_event(bench, unit, ev):
    bench.tap(unit, ev)


@step("power_cut", ("restart", "within"), check=_check_power_cut)
def power_cut_event(bench, unit, ev):
    cut = ev["power_cut"]
    if cut is True:
        unit.cut_power()
        bench.say("%s  %sPOWER CUT (ignition off)" % (local_clock(bench.now), unit.label))
        bench.cuts.append({"validator": unit.name, "at": "ignition", "landed": "between taps"})
    else:
        stage = str(cut).partition(":")[2]
        trap = NetTrap(unit, "upload", stage)
        bench.arm_net(unit, trap)
        limit = parse_duration(ev.get("within", WAIT_UPLOAD_S))
        bench.run_until(lambda: trap.fired, limit)
        bench.disarm_net(unit)
        if not trap.fired:
            bench.fail(
                "%spower_cut %s: the validator made no upload within %s of virtual time"
                % (unit.label, cut, duration(limit))
            )
            return
        unit.cut_power()
        bench.report_cut(unit, cut, trap.landed)
    if ev.get("restart", True):
        unit.boot("power back")


@step("reboot")
def reboot_event(bench, unit, ev):
    unit.power_off()
    unit.boot("rebooted")


@step("hang")
def hang_event(bench, unit, ev):
    """The tap loop hangs (a wedged reader); the watchdog must reset the validator."""
    unit.world.hub.set_pin("test_hang", 1)
    bench.say("%s  %sthe reader wedges: the tap loop hangs" % (local_clock(bench.now), unit.label))
    try:
        unit.fw.wait_for("exit", timeout=unit.wdt_s * 4 + 10, limit="4 x watchdog_ms + 10 s")
    except TimeoutError:
        bench.fail("%sthe watchdog did not reset a hung validator" % unit.label)
    unit.power_off()
    unit.world.hub.set_pin("test_hang", 0)
    boot = unit.boot("reset by the watchdog", cause="watchdog")
    if boot.get("reset_cause") != "watchdog":
        bench.fail("after the hang the validator woke with cause %r" % boot.get("reset_cause"))


@step("modem", check=_check_updown)
def modem_event(bench, unit, ev):
    if ev["modem"] == "down":
        unit.world.modem.inject("reg_lost", 1000)
        bench.say("%s  %scellular coverage lost" % (local_clock(bench.now), unit.label))
    else:
        unit.world.modem.clear()
        bench.say("%s  %scellular coverage back" % (local_clock(bench.now), unit.label))


@step("server", check=_check_updown)
def server_event(bench, unit, ev):
    if ev["server"] == "down":
        bench.stop_collector()
        bench.say("%s  back office down" % local_clock(bench.now))
    else:
        bench.start_collector(bench.port)
        bench.say("%s  back office back" % local_clock(bench.now))


@step("params_push", ("power_cut", "within"), check=_check_params)
def params_event(bench, unit, ev):
    p = ev["params_push"]
    version = int(p["version"])
    units = [unit] if "validator" in ev else list(bench.units.values())
    trap = None
    if ev.get("power_cut"):
        stage = str(ev["power_cut"]).partition(":")[2]
        trap = NetTrap(unit, "params", stage, version)
        bench.arm_net(unit, trap)
    for u in units:
        u.publish(
            version,
            p.get("dir", "tools/params/example"),
            p.get("blacklist", ()),
            int(p.get("cards", 0)),
        )
    bench.say("%s  back office publishes parameters v%d" % (local_clock(bench.now), version))
    if trap is not None:
        limit = parse_duration(ev.get("within", WAIT_UPLOAD_S))
        bench.run_until(lambda: trap.fired, limit)
        bench.disarm_net(unit)
        if not trap.fired:
            bench.fail(
                "%spower_cut %s: not reached within %s of virtual time"
                % (unit.label, ev["power_cut"], duration(limit))
            )
        else:
            unit.cut_power()
            bench.report_cut(unit, ev["power_cut"], trap.landed)
            unit.boot("power back")
    for u in units:
        bench.wait_params(u, version)


@step("rtc_jump")
def rtc_jump_event(bench, unit, ev):
    unit.world.rtc_offset += int(ev["rtc_jump"])
    bench.say(
        "%s  %sthe RTC jumps by %+d s" % (local_clock(bench.now), unit.label, int(ev["rtc_jump"]))
    )


@step("wait", ("within",), check=_check_wait)
def wait_event(bench, unit, ev):
    """Virtual time passes: until the back office holds every record (the uploads follow their
    real back-off, up to 10 minutes), or for a duration."""
    t0 = bench.now
    if ev["wait"] == "upload":
        limit = parse_duration(ev.get("within", WAIT_UPLOAD_S))
        ok = bench.wait_uploaded(limit)
        bench.waits.append({"wait": "upload", "virtual_s": bench.now - t0, "ok": ok})
        if ok:
            bench.say(
                "%s  back office holds every record (after %s of virtual time)"
                % (local_clock(bench.now), duration(bench.now - t0))
            )
    else:
        bench.run_until(lambda: False, parse_duration(ev["wait"]), real_s=120.0, flow=True)
        bench.say("%s  %s passed" % (local_clock(bench.now), duration(bench.now - t0)))


# ---- the bench ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, scenario, out, quiet=False):
        self.sc = scenario
        self.out = Path(out)
        self.quiet = quiet
        self.lang = "en"  # the operator lines: en or zh (--lang)
        self.lines = []
        self.failures = []
        self.taps = []  # (card, result, validator)
        self.cuts = []  # where each power cut landed
        self.waits = []  # each `wait = "upload"`: the virtual time it took
        self.net_traps = {}  # device -> NetTrap
        self.rng = random.Random(int(scenario.get("seed", 1)))
        self.server = None
        self.units_spec = validators_of(scenario)
        self.units = {}
        # The operator's fleet parameter key, for validators with `signed = true`; made for
        # the run (the bench's bundles are its own).
        self.fleet_key = params_sign.generate()

    # ---- output ---------------------------------------------------------------------------

    def say(self, text=""):
        self.lines.append(text)
        if not self.quiet:
            print(text, flush=True)

    def fail(self, text):
        self.failures.append(text)
        self.say("  !! " + text)

    # ---- set-up ---------------------------------------------------------------------------

    def setup(self):
        sc = self.sc
        if self.out.exists():
            shutil.rmtree(self.out)
        (self.out / "frames").mkdir(parents=True)
        self.start = validator_time(sc.get("start", "2026-11-30T06:30:00+08:00"))
        self.now = self.start
        # Back office: a real collector on SQLite, every device provisioned, TAC keys configured
        # for the simulators' issuers (each issuer and algorithm) so clearing checks every
        # purchase.
        self.store = Store("sqlite:///%s" % (self.out / "collector.sqlite3"))
        self.cards = self._make_cards(sc.get("cards", {}))
        self.clearing = Clearing(tac_keys(self.cards.values()))
        self.start_collector(0)
        # The firmware runs as it would on a board: compiled to .mpy by `make firmware`'s code.
        fw_dir = self.out / "firmware"
        build_firmware.build("unix_sim", fw_dir, [])
        multi = len(self.units_spec) > 1
        for i, (name, v) in enumerate(self.units_spec.items()):
            unit = Unit(self, name, v, i, self.out / name if multi else self.out)
            unit.setup(fw_dir, self.url)
            self.units[name] = unit
            unit.publish(int(v.get("params_version", 1)), v.get("params", "tools/params/example"))
        # The back office answers with the bench's virtual time, as a real one would with the
        # real time: the validators' clock rules are exercised, not tripped by the simulation.
        collector_app.server_time = lambda: self.now
        self.set_time(self.start)

    def _make_cards(self, spec):
        cards = {}
        for n, (name, c) in enumerate(sorted(spec.items())):
            c = dict(c)
            profile = c.pop("profile", "tunion_plain")
            uid = c.pop("uid", None)
            variant = c.pop("variant", None)
            apps = c.pop("apps", None)
            card = VirtualCard.from_profile(profile, variant=variant, **c)
            # Each rider's card needs its own UID on the air.
            card.uid = bytes.fromhex(uid) if uid else bytes((0x08, 0x10 + n, 0x20 + n, 0x30 + n))
            card.name = name
            for a in card.apps:
                if apps and a["kind"] in apps:
                    a["balance"] = int(apps[a["kind"]])
            # What every other application holds at the start: it must never move.
            card.apps_start = {a["kind"]: a.get("balance") for a in card.apps}
            install_traps(card)
            cards[name] = card
        return cards

    def start_collector(self, port):
        app = CutPoint(create_app(self.store, clearing=self.clearing), self)
        if port == 0:
            self.server = ServerThread(app)
            self.server.__enter__()
            self.port = self.server.port
            self.url = "http://127.0.0.1:%d" % self.port
        else:
            self.server = _server_on(app, port)

    def stop_collector(self):
        if self.server is not None:
            self.server.__exit__(None, None, None)
            self.server = None

    def arm_net(self, unit, trap):
        unit.net_trap = trap
        self.net_traps[unit.device] = trap

    def disarm_net(self, unit):
        unit.net_trap = None
        self.net_traps.pop(unit.device, None)

    def net_trap_for(self, device, what):
        trap = self.net_traps.get(device)
        if trap is None or trap.fired or trap.what != what:
            return None
        return trap

    def report_cut(self, unit, at, landed):
        self.cuts.append({"validator": unit.name, "at": str(at), "landed": landed})
        self.say("%s  %sPOWER CUT at %s: %s" % (local_clock(self.now), unit.label, at, landed))

    # ---- time ---------------------------------------------------------------------------------

    def set_time(self, t):
        # The modems' network time (AT+CCLK) is the world's, not the host's: a validator that
        # took the host's date stepped days ahead and priced taps by the wrong hour of the day.
        self.now = t
        for u in self.units.values():
            u.world.time = t  # the modem's network time follows it (BenchWorld, docs/time.md)

    def run_until(self, done, virtual_s, real_s=60.0, flow=False):
        """Until done() (-> True), or virtual_s of virtual time, or real_s of real time (-> what
        done() says then). Every validator's events are taken meanwhile. Virtual time is
        discrete: it stands still while the firmware works in real time (uploads, parameter
        downloads, a tap) and jumps to the moment a validator's virtual wait (the uplink's
        back-off) ends, so a 10-minute back-off costs no 10 minutes. With `flow`, it also runs
        on to the end (a scenario's `wait = "5m"`): in jumps to each wake-up on the way."""
        end = self.now + virtual_s
        real_end = time.monotonic() + real_s
        idle_since = time.monotonic()
        while True:
            for u in self.units.values():
                u.pump(VIRTUAL_TICK_S / len(self.units))
            if done():
                return True
            if time.monotonic() > real_end:
                return done()
            wakes = [u.world.wake_at for u in self.units.values() if u.world.wake_at]
            target = min(wakes) if wakes else None
            if target is None:
                # Every validator busy in real time (a tap, an exchange, its linger): time
                # stands still; one that never waits on the clock lets a flow run out.
                if flow and time.monotonic() - idle_since > FLOW_IDLE_S:
                    target = end
                else:
                    continue
            idle_since = time.monotonic()
            if target > end:
                if flow and end > self.now:
                    self.set_time(end)
                return done()
            if target > self.now:
                self.set_time(target)

    def wait_params(self, unit, version, virtual_s=300):
        ok = self.run_until(
            lambda: unit.params_version is not None and unit.params_version >= version, virtual_s
        )
        if not ok:
            self.fail(
                "%sparameters v%d not activated within %s of virtual time (at v%s)"
                % (unit.label, version, duration(virtual_s), unit.params_version)
            )
            return
        self.say("%s  %sparameters v%d active" % (local_clock(self.now), unit.label, version))

    def wait_uploaded(self, virtual_s=WAIT_UPLOAD_S, real_s=120.0):
        """Until the back office holds every record each validator has journaled, once."""
        if self.run_until(
            lambda: all(u.uploaded() for u in self.units.values()), virtual_s, real_s
        ):
            return True
        for u in self.units.values():
            missing = sorted(set(u.records) - set(self.store.seqs(u.device)))
            if missing or not u.records:
                self.fail(
                    "%srecords not in the back office within %s of virtual time (`within`) and"
                    " %.0f s of real time (upload_timeout_s): %s"
                    % (u.label, duration(virtual_s), real_s, missing[:20] or "no record at all")
                )
        return False

    # ---- the run -----------------------------------------------------------------------------

    def play(self):
        sc = self.sc
        for u in self.units.values():
            u.boot()
        for u in self.units.values():
            self.wait_params(u, int(u.v.get("params_version", 1)))
        t = self.now
        for ev in sc.get("events", []):
            t = self._event_time(ev, t)
            if t > self.now:
                self.set_time(t)
            t = max(t, self.now)
            kind = event_kind(ev)
            if kind is None:
                raise ScenarioError("event not understood: %r" % (ev,))
            kind.run(self, self.unit_of(ev), ev)
            t = max(t, self.now)
        self.wait_uploaded(WAIT_UPLOAD_S, real_s=float(sc.get("upload_timeout_s", 120)))

    def unit_of(self, ev):
        name = ev.get("validator")
        return self.units[name] if name else next(iter(self.units.values()))

    def _event_time(self, ev, t):
        at = ev.get("at")
        if at is None:
            return t + 5
        at = str(at)
        m = re.fullmatch(r"\+(\d+)(s|m|h)?", at)
        if m:
            return t + int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
        m = re.fullmatch(r"(\d\d):(\d\d)(?::(\d\d))?", at)
        if m:
            day = (self.start + TZ) // 86400 * 86400 - TZ
            return day + int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0)
        return validator_time(at)

    def tap(self, unit, ev):
        names = ev["tap"] if isinstance(ev["tap"], list) else [ev["tap"]]
        cards = [self.cards[n] for n in names]
        card = cards[0]
        trap = None
        if ev.get("pull"):
            trap = CardTrap(ev["pull"], "pull")
        cut = ev.get("power_cut")
        if cut and cut != "random":
            trap = CardTrap(cut, "cut", fire=unit.fw.cut)
        card.trap = trap
        since = len(card.audit)
        for c in cards:
            unit.world.place(c)
        seen = []
        result = None
        try:
            if cut == "random":
                # Anywhere in the tap: a moment drawn from the scenario's seeded generator.
                time.sleep(self.rng.uniform(0.0, ev.get("within_s", 0.3)))
                unit.fw.cut()
                landed = where_cut_landed(card, since)
            elif cut:
                landed = self._cut_at_command(unit, trap, seen, ev.get("_generated"))
            else:
                try:
                    result = unit.fw.wait_for("tap", seen=seen)
                except (TimeoutError, RuntimeError) as e:
                    self.fail("%stap %s: %s" % (unit.label, names[0], e))
        finally:
            card.trap = None
            unit.note(seen)
            for c in cards:
                unit.world.remove(c)
        if cut:
            unit.cut_power()
            self.taps.append((names[0], {"reason": "POWER_CUT", "cut": landed}, unit.name))
            self.report_cut(unit, "tap %s, %s" % (names[0], cut), landed or "nowhere")
            if ev.get("restart", True):
                unit.boot("restarted after the power cut")
            return None
        if trap is not None and not trap.fired and ev.get("_generated"):
            self.say("            (pull %s: the tap sent no such command)" % trap.describe())
        elif trap is not None and not trap.fired:
            self.fail(
                "%stap %s: pull %s never happened: the validator did not send that command"
                % (unit.label, names[0], trap.describe())
            )
        if result is None:
            return None
        # The rider walks on: the validator must see the card leave before the next tap.
        seen = []
        try:
            unit.fw.wait_for("left", timeout=LEFT_TIMEOUT_S, seen=seen, limit="LEFT_TIMEOUT_S")
        except (TimeoutError, RuntimeError) as e:
            self.fail(
                "%stap %s: the card's departure was not seen: %s" % (unit.label, names[0], e)
            )
        unit.note(seen)
        self.taps.append((names[0], result, unit.name))
        frame = (
            self.out
            / "frames"
            / (
                "%03d-%s%s-%s.png"
                % (
                    len(self.taps),
                    unit.name + "-" if unit.label else "",
                    names[0],
                    result["reason"],
                )
            )
        )
        unit.world.panel.snapshot(frame)
        screen = " | ".join(result.get("screen") or [])
        sound = SOUNDS.get(result.get("sound"), "-")
        self.say(
            "%s  %stap %-8s [%s]  %s  -> %s, fare %s, balance %s, %d ms"
            % (
                local_clock(self.now),
                unit.label,
                names[0] + ("+%d" % (len(cards) - 1) if len(cards) > 1 else ""),
                screen,
                sound,
                result["reason"],
                yuan(result.get("amount")),
                yuan(result.get("balance")),
                result.get("ms", 0),
            )
        )
        if result["reason"] not in ("OK", "OK_LOW", "TAP_OFF_OK"):
            # the operator's words (tools/reasons.py), then the firmware's own detail
            words = reasons.meaning(result["reason"], self.lang)
            if result.get("detail"):
                words += ("; 固件: %s" if self.lang == "zh" else "; firmware: %s") % result[
                    "detail"
                ]
            self.say("            %s: %s" % ("运营" if self.lang == "zh" else "operator", words))
        self._expect_tap(ev, result, names[0], unit)
        return result

    def _cut_at_command(self, unit, trap, seen, generated=False):
        """Wait until the armed command runs (the trap kills the firmware right there) or the
        tap ends without it: a failure (the cut did not land where the scenario put it), or for
        a generated day (a random command the tap may not reach) a cut after the tap."""
        deadline = time.monotonic() + TAP_TIMEOUT_S
        while not trap.fired:
            try:
                unit.fw.wait_for("tap", timeout=0.05, seen=seen)
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.fail(
                        "%spower cut %s: no such command within %.0f s (TAP_TIMEOUT_S)"
                        % (unit.label, trap.describe(), TAP_TIMEOUT_S)
                    )
                    return None
                continue
            except RuntimeError:
                break  # the firmware died: the trap fired (checked below)
            else:
                if generated:
                    return "after the tap (it sent no %s)" % COMMANDS[trap.name][2]
                self.fail(
                    "%spower cut %s: the tap ended without that command"
                    % (unit.label, trap.describe())
                )
                return None
        return trap.landed

    def _expect_tap(self, ev, result, name, unit):
        want = ev.get("expect")
        if want is not None:
            allowed = want if isinstance(want, list) else [want]
            if result["reason"] not in allowed and "any" not in allowed:
                self.fail(
                    "%stap %s: expected %s, got %s" % (unit.label, name, want, result["reason"])
                )
        if "fare" in ev and result.get("amount") != ev["fare"]:
            self.fail(
                "%stap %s: fare %s, expected %s"
                % (unit.label, name, money(result.get("amount")), money(ev["fare"]))
            )
        if "balance" in ev and result.get("balance") != ev["balance"]:
            self.fail(
                "%stap %s: balance %s, expected %s"
                % (unit.label, name, money(result.get("balance")), money(ev["balance"]))
            )

    # ---- the end -------------------------------------------------------------------------------

    def summary(self):
        rows = []
        device_records = 0
        on_flash = 0
        for u in self.units.values():
            u.power_off()
            on_flash += len(u.read_flash())
            device_records += self._match_device(u)
            rows.extend(self.store.export(u.device))
        debits = []
        for card in self.cards.values():
            for d in card.debits:
                debits.append((card.name, d))
            for v in card.violations:
                self.fail("card %s: violation: %s" % (card.name, v))
        decoded = [(r[0], record.decode(bytes.fromhex(r[-1]))) for r in rows]
        purchases = [
            p for _, p in decoded if p["kind"] in (record.PURCHASE, record.PURCHASE_RECOVERED)
        ]
        by_tac = {}
        for p in purchases:
            by_tac.setdefault(p["tac"].hex().upper(), []).append(p)
        # A purchase recovered from the card's history when the card could no longer prove it
        # (805A answers for its newest transaction only) has no TAC: matched by card and counter.
        no_tac = {}
        for p in purchases:
            if p["flags"] & record.FLAG_TAC_MISSING:
                no_tac.setdefault((bytes(p["card_no"]), p["card_atc"]), []).append(p)
        # A debit whose rider never came back to that validator (the torn purchase was left
        # for another bus) is an unconfirmed debit in the back office: its open intent.
        closed = {
            (bytes(r["card_no"]), r["card_atc"])
            for _, r in decoded
            if r["kind"] in record.OUTCOME_KINDS
        }
        open_intents = {
            (bytes(r["card_no"]), r["card_atc"]): r
            for _, r in decoded
            if r["kind"] == record.DEBIT_INTENT
            and (bytes(r["card_no"]), r["card_atc"]) not in closed
        }
        pending = 0
        for name, d in debits:
            tac = d["tac"].hex().upper() if isinstance(d["tac"], bytes) else str(d["tac"]).upper()
            key = (bytes(self.cards[name].tu["serial"]), d["counter"])
            got = by_tac.get(tac, []) or no_tac.get(key, [])
            if not got and key in open_intents and open_intents[key]["amount"] == d["amount"]:
                pending += d["amount"]
                continue
            if len(got) != 1:
                self.fail(
                    "card %s debit %s (counter %s, TAC %s): %d back-office records"
                    % (name, d.get("amount"), d.get("counter"), tac, len(got))
                )
        revenue_cards = sum(d["amount"] for _, d in debits)
        revenue_bo = sum(p["amount"] for p in purchases)
        if revenue_cards != revenue_bo + pending:
            self.fail(
                "revenue: cards were debited %d, back office holds %d (and %d unconfirmed)"
                % (revenue_cards, revenue_bo, pending)
            )
        # Clearing must verify every TAC; a recovered purchase that says its TAC is missing is
        # counted apart (the clearing centre settles it by the card's counters).
        missing = {(dev, r["seq"]) for dev, r in decoded if r["flags"] & record.FLAG_TAC_MISSING}
        bad_tac = [(r[0], r[1]) for r in rows if r[9] == "bad" and (r[0], r[1]) not in missing]
        if bad_tac:
            self.fail("clearing flagged TACs on records %s" % bad_tac)
        expect = self.sc.get("expect", {})
        # Purchases the back office holds out of settlement, by reason (clearing's exceptions):
        # none unless the scenario names them (`held = {tac_missing = 1}`).
        held = {}
        for r in rows:
            for why in (r[13] or "").split(","):
                if why:
                    held[why] = held.get(why, 0) + 1
        if held != expect.get("held", {}):
            self.fail(
                "purchases held out of settlement: %s, expected %s"
                % (held, expect.get("held", {}))
            )
        for name, want in expect.get("balances", {}).items():
            got = self.cards[name].balance
            if got != want:
                self.fail("card %s ends with %s, expected %s" % (name, money(got), money(want)))
        self._expect_cards(expect.get("cards", {}))
        self._expect_records(expect.get("records", []), decoded)
        if "revenue" in expect and revenue_bo != expect["revenue"]:
            self.fail("revenue %s, expected %s" % (money(revenue_bo), money(expect["revenue"])))
        # Every intent closed by its outcome: each rider whose tap was cut or pulled came back.
        unconfirmed = []
        for u in self.units.values():
            unconfirmed.extend(self.store.unconfirmed(u.device))
        want_open = expect.get("unconfirmed", 0)
        if len(unconfirmed) != want_open:
            self.fail(
                "%d unconfirmed debits at the end (expected %d): %s"
                % (
                    len(unconfirmed),
                    want_open,
                    [(u["seq"], u["card_atc"]) for u in unconfirmed],
                )
            )
        # The back office settles an unconfirmed debit from the card's next counter (debited,
        # not_debited, unknown): it must agree with what the card itself did.
        verdicts = {}
        for item in unconfirmed:
            bc = item.get("by_counter")
            verdict = bc["verdict"] if bc else "card_not_back"
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
            truth = self._card_debited(item["card_no"], item["card_atc"])
            if verdict in ("debited", "not_debited") and truth is not None:
                if (verdict == "debited") != truth:
                    self.fail(
                        "device %d seq %d: the back office settles the unconfirmed debit as %s,"
                        " the card %s it"
                        % (
                            item["device_id"],
                            item["seq"],
                            verdict,
                            "executed" if truth else "never executed",
                        )
                    )
        intents = sum(1 for _, r in decoded if r["kind"] == record.DEBIT_INTENT)
        outcomes = {}
        for _, r, _ in self.taps:
            outcomes[r["reason"]] = outcomes.get(r["reason"], 0) + 1
        outcomes.pop("POWER_CUT", None)
        report = {
            "scenario": self.sc.get("name"),
            "validators": {
                u.name: {
                    "device": u.device,
                    "route": u.route,
                    "terminal_id": u.terminal_id,
                    "firmware_starts": u.fw.starts,
                    "watchdog_resets": u.wdt_resets,
                    "acked_seq": u.acked,
                }
                for u in self.units.values()
            },
            "taps": sum(outcomes.values()),
            "outcomes": outcomes,
            "revenue_fen": revenue_bo,
            "unconfirmed_fen": pending,
            "card_debits": len(debits),
            "device_records": device_records,
            "on_flash_at_end": on_flash,
            "backoffice_records": len(rows),
            "debit_intents": intents,
            "unconfirmed_debits": len(unconfirmed),
            "unconfirmed_verdicts": verdicts,
            "tac_checked": sum(1 for r in rows if r[9] == "ok"),
            "tac_missing": len(missing),
            "held": held,
            "firmware_starts": sum(u.fw.starts for u in self.units.values()),
            "watchdog_feeds": sum(u.world.wdt_feeds for u in self.units.values()),
            "watchdog_resets": sum(u.wdt_resets for u in self.units.values()),
            "virtual_time_s": self.now - self.start,
            "cuts": self.cuts,
            "waits": self.waits,
            "failures": self.failures,
            "time_zone": "UTC%+03d:%02d" % (TZ // 3600, TZ % 3600 // 60),
            "taps_detail": [
                dict(r, card=n, validator=v, time_local=local_stamp(r.get("time")))
                for n, r, v in self.taps
            ],
            "balances": {n: c.balance for n, c in self.cards.items()},
            "cards": {n: card_state(c) for n, c in self.cards.items()},
        }
        (self.out / "report.json").write_text(
            json.dumps(report, indent=1, default=str, ensure_ascii=False), encoding="utf-8"
        )
        frames = sorted((self.out / "frames").glob("*.png"))
        overview = contact_sheet.make_sheet(frames, self.out / "overview.png")
        zh = self.lang == "zh"
        self.say("")
        self.say(("== 小结: %s" if zh else "== summary: %s") % self.sc.get("name"))
        self.say(
            ("刷卡 %d 次 (%s)" if zh else "taps %d (%s)")
            % (report["taps"], ", ".join("%s %d" % kv for kv in sorted(outcomes.items())))
        )
        self.say(
            (
                "卡片扣款 %s 元 (%d 笔); 后台收到 %s 元"
                if zh
                else "revenue %s yuan from %d card debits; back office holds %s yuan"
            )
            % (yuan(revenue_cards), len(debits), yuan(revenue_bo))
        )
        self.say(
            (
                "记录: 设备写入 %d 条 (设备 %d 台, 仍在闪存 %d 条), 后台 %d 条 (扣款意向 %d 条, "
                "未确认 %d 条), 清算验证 TAC %d 个; 每笔消费写两条记录 (意向, 消费), "
                "每次开机一条, 每次参数启用一条"
                if zh
                else "records: %d journaled by %d validator(s) (%d still on flash), %d in the "
                "back office (%d debit intents, %d unconfirmed), %d TACs verified by clearing; "
                "a sale writes two records (intent, then purchase), a start one, a parameter "
                "activation one"
            )
            % (
                device_records,
                len(self.units),
                on_flash,
                len(rows),
                intents,
                len(unconfirmed),
                report["tac_checked"],
            )
        )
        for c in self.cuts:
            self.say(
                ("断电 %s%s: %s" if zh else "power cut %s%s: %s")
                % ("[%s] " % c["validator"] if len(self.units) > 1 else "", c["at"], c["landed"])
            )
        self.say(
            ("最终余额 (元): " if zh else "final balances: ")
            + ", ".join("%s %s" % (n, yuan(b)) for n, b in report["balances"].items())
        )
        self.say(
            ("画面: %s  总览: %s  报告: %s" if zh else "frames: %s  overview: %s  report: %s")
            % (self.out / "frames", overview or "no frames", self.out / "report.json")
        )
        verdict = (
            "every expectation held" if not self.failures else "%d FAILED" % len(self.failures)
        )
        if zh:
            verdict += (
                " (全部预期满足)" if not self.failures else " (%d 项失败)" % len(self.failures)
            )
        self.say("RESULT: %s" % verdict)
        return report

    def _match_device(self, u):
        """The device's records against the back office's: the same sequence numbers, and the
        same bytes for every record the bench saw on flash. What the device ever held is every
        record its events announced and every record seen on its flash image at a power cut or
        at the end: acknowledged sectors are erased for reuse, so the image at the end holds
        only the newest (docs/journal.md)."""
        bo = {r[1]: bytes.fromhex(r[-1]) for r in self.store.export(u.device)}
        device = set(u.records) | set(u.flash_seen)
        if set(bo) != device:
            self.fail(
                "%sdevice log and back office differ: device-only %s, back-office-only %s"
                % (
                    u.label,
                    sorted(device - set(bo))[:10],
                    sorted(set(bo) - device)[:10],
                )
            )
        differ = [s for s, raw in u.flash_seen.items() if s in bo and bo[s] != raw]
        if differ:
            self.fail(
                "%srecords differ between flash and back office: %s" % (u.label, differ[:10])
            )
        return len(device)

    def _card_debited(self, card_no, atc):
        """Did the card with this number make the debit of counter `atc`? None: no such card."""
        want = card_no.lower() if isinstance(card_no, str) else bytes(card_no).hex()
        for card in self.cards.values():
            if card.tu and bytes(card.tu["serial"]).hex() == want:
                return any(d["counter"] == atc for d in card.debits)
        return None

    def _expect_cards(self, spec):
        for name, card in self.cards.items():
            # Other applications (bank, medical) must never move, whatever the scenario says.
            for a in card.apps:
                if a.get("balance") != card.apps_start.get(a["kind"]):
                    self.fail(
                        "card %s: the %s application's balance moved: %s -> %s"
                        % (name, a["kind"], card.apps_start.get(a["kind"]), a.get("balance"))
                    )
        for name, want in spec.items():
            got = card_state(self.cards[name])
            for key, value in want.items():
                if key == "apps":
                    for kind, bal in value.items():
                        if got["apps"].get(kind) != bal:
                            self.fail(
                                "card %s: %s application holds %s, expected %s"
                                % (name, kind, got["apps"].get(kind), bal)
                            )
                    continue
                if key == "lock" and value in ("none", False):
                    value = None
                if got.get(key) != value:
                    self.fail("card %s: %s is %r, expected %r" % (name, key, got.get(key), value))

    def _expect_records(self, wants, decoded):
        devices = {u.device: u.name for u in self.units.values()}
        for want in wants:
            hits = [r for dev, r in decoded if self._record_matches(want, devices[dev], r)]
            n = want.get("count")
            if (n is None and not hits) or (n is not None and len(hits) != n):
                self.fail(
                    "records matching %s: %d, expected %s"
                    % (
                        json.dumps(want, sort_keys=True),
                        len(hits),
                        "at least 1" if n is None else n,
                    )
                )

    def _record_matches(self, want, validator, r):
        if "validator" in want and want["validator"] != validator:
            return False
        if "kind" in want and r["kind"] != KINDS[want["kind"]]:
            return False
        if "reason" in want:
            reason = want["reason"]
            if isinstance(reason, str):
                reason = REASON_NAMES[reason]
            if r["reason"] != reason:
                return False
        if "flags" in want:
            flags = want["flags"]
            if isinstance(flags, list):
                flags = sum(FLAG_NAMES[f] for f in flags)
            if r["flags"] != flags:
                return False
        if "amount" in want and r["amount"] != want["amount"]:
            return False
        if "card" in want:
            card = self.cards[want["card"]]
            if not card.tu or bytes(r["card_no"]) != bytes(card.tu["serial"]):
                return False
        for key in ("time", "after", "before"):
            if key in want:
                t = self._event_time({"at": want[key]}, self.start)
                if (key == "time" and r["time"] != t) or (key == "after" and r["time"] < t):
                    return False
                if key == "before" and r["time"] > t:
                    return False
        return True

    def close(self):
        try:
            for u in self.units.values():
                if hasattr(u, "fw"):
                    u.fw.kill()
        finally:
            self.stop_collector()
            for u in self.units.values():
                if hasattr(u, "world"):
                    u.world.stop()
            if hasattr(self, "store"):
                self.store.close()


def card_state(card):
    t = card.tu or {}
    return {
        "balance": t.get("balance"),
        "used_overdraft": t.get("used_overdraft"),
        "lock": t.get("lock"),
        "atc": t.get("atc"),
        "debits": len(card.debits),
        "apps": {a["kind"]: a.get("balance") for a in card.apps if "balance" in a},
    }


def tac_keys(cards):
    """The back office's TAC keys: for each issuer (the record's 4 bytes), one key per issuer id
    and algorithm among the cards (a 3DES and an SM4 card of one issuer both clear)."""
    keys = {}
    for card in cards:
        tu = card.tu
        if not tu:
            continue
        issuer8 = bytes(tu["issuer"])
        alg = tu["suite"].name
        have = keys.setdefault(issuer8[:4], [])
        if not any(k.issuer8 == issuer8 and k.alg == alg for k in have):
            have.append(IssuerKey(crypto.TEST_ROOT_KEYS["tac"], issuer8, alg))
    return keys


def _server_on(app, port):
    """The collector again on the same port (a restart): clients keep their URL."""
    import socket

    import uvicorn

    srv = ServerThread.__new__(ServerThread)
    srv.sock = socket.socket()
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.sock.bind(("127.0.0.1", port))
    srv.port = port
    cfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    srv.server = uvicorn.Server(cfg)
    srv.thread = threading.Thread(target=srv.server.run, kwargs={"sockets": [srv.sock]})
    srv.__enter__()
    return srv


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--serve", action="store_true", help="then serve the run's dashboard")
    ap.add_argument("--web-port", type=int, default=8081, help="the dashboard's port")
    ap.add_argument(
        "--lang", choices=("en", "zh"), default="en", help="the operator's lines: en or zh (中文)"
    )
    args = ap.parse_args(argv)
    try:
        sc = load_scenario(args.scenario)
    except (OSError, ScenarioError) as e:
        sys.exit("simbench: %s" % e)
    out = args.out or ROOT / "bench" / "out" / args.scenario.stem
    bench = Bench(sc, out, quiet=args.quiet)
    bench.lang = args.lang
    bench.say("== %s" % sc.get("name", args.scenario.stem))
    if sc.get("description"):
        bench.say(sc["description"].strip())
    bench.say(
        (
            "时间为本地时间 %s, 金额单位: 元"
            if args.lang == "zh"
            else "times are local, %s; amounts in yuan"
        )
        % ("UTC%+03d:%02d" % (TZ // 3600, TZ % 3600 // 60))
    )
    try:
        bench.setup()
        bench.play()
        bench.summary()
    except (ScenarioError, KeyError, TimeoutError, RuntimeError) as e:
        bench.fail("scenario error: %s: %s" % (type(e).__name__, e))
    finally:
        bench.close()
    _dashboard(out / "collector.sqlite3", args.serve, args.web_port)
    return 0 if not bench.failures else 1


def _dashboard(db, serve, port):
    """The run's back office in a browser (docs/dashboard.md): its address, served with --serve
    (an administrator `sim` with a password made for the run)."""
    url = "sqlite:///%s" % db
    address = "http://127.0.0.1:%d/" % port
    if not serve:
        print(
            "dashboard: %s  (make sim SERVE=1 serves it; or python -m tools.collector web "
            "--db %s --port %d)" % (address, url, port)
        )
        return
    import secrets

    from tools.collector import cli as collector_cli
    from tools.collector.db import Store
    from tools.collector.web import auth

    password = secrets.token_urlsafe(12)
    store = Store(url)
    auth.add_user(store, "sim", password, "administrator")
    store.close()
    print(
        "dashboard: %s  user sim, password %s  (Ctrl-C stops it)" % (address, password), flush=True
    )
    collector_cli.main(["web", "--db", url, "--port", str(port), "--log-level", "warning"])


if __name__ == "__main__":
    sys.exit(main())
