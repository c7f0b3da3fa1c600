"""The simulated bench: the whole validator on a laptop, end to end (`make sim`).

It starts the back office (the collector on SQLite), every simulator (reader chip and cards,
PSAM, modem, display) on one hub, and the real firmware under the MicroPython unix port; plays a
scenario of taps and incidents; prints each tap as the passenger and the operator see it; lets
the validator upload; and ends with a summary that matches the cards' own audit trails, the
device's journal and the back office against each other. Exit status 0 means every expectation
written in the scenario held. Scenario format: docs/scenarios.md.

    python -m tools.simbench                          # tools/scenarios/morning.toml
    python -m tools.simbench --scenario my.toml --out bench/out/my
"""

import argparse
import datetime
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
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

import record  # noqa: E402
import timeutil  # noqa: E402
from feedback import SOUNDS  # noqa: E402

from tools import build_firmware, params_compile  # noqa: E402
from tools.collector import app as collector_app  # noqa: E402
from tools.collector.app import create_app  # noqa: E402
from tools.collector.bench import ServerThread  # noqa: E402
from tools.collector.clearing import Clearing, IssuerKey  # noqa: E402
from tools.collector.db import Store  # noqa: E402
from tools.sim import crypto  # noqa: E402
from tools.sim.bench_hub import BenchWorld  # noqa: E402
from tools.sim.card import VirtualCard  # noqa: E402

DEFAULT_SCENARIO = ROOT / "tools" / "scenarios" / "morning.toml"
MICROPYTHON = ROOT / ".venv" / "bin" / "micropython"
HEAP = os.environ.get(
    "SIMBENCH_HEAP", "1m"
)  # the application compiled from source on a 64-bit port; frozen on an ESP32
TAP_TIMEOUT_S = 20.0
# Steps of the purchase a scenario can pull the card at (INS of the card command).
STEPS = {"select": 0xA4, "read": 0xB0, "init": 0x50, "update": 0xDC, "debit": 0x54}
TZ = timeutil.DEFAULT_TZ_SECONDS


class ScenarioError(ValueError):
    pass


def validator_time(text):
    """ISO 8601 with offset -> validator seconds (since 2000-01-01 UTC)."""
    dt = datetime.datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone(datetime.timedelta(seconds=TZ)))
    epoch = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    return int((dt - epoch).total_seconds())


def local_clock(t):
    y, mo, d, hh, mi, ss = timeutil.from_seconds(t + TZ)
    return "%02d:%02d:%02d" % (hh, mi, ss)


def yuan(fen):
    return "-" if fen is None else "%d.%02d" % (fen // 100, fen % 100)


class Firmware:
    """The validator firmware as a MicroPython process; stdout '@@EV' lines become events."""

    def __init__(self, env, log_path, main_py):
        self.env = env
        self.main_py = main_py
        self.on_idle = None  # called while waiting for events (the bench's watchdog check)
        self.log_path = log_path
        self.proc = None
        self.events = queue.Queue()
        self.starts = 0

    def start(self):
        cmd = [str(MICROPYTHON), "-X", "heapsize=" + HEAP, str(self.main_py)]
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
                        self.events.put(json.loads(line[5:]))
                    except ValueError:
                        log.write("bad event line: %s\n" % line)
                else:
                    log.write(line + "\n")
                    log.flush()
            self.events.put({"ev": "exit", "code": proc.wait()})

    def wait_for(self, kind, timeout=TAP_TIMEOUT_S, seen=None):
        """The next event of `kind`; other events go to `seen` (a list) in order."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %s event within %.0f s" % (kind, timeout))
            try:
                ev = self.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.on_idle is not None:
                    self.on_idle()
                continue
            if seen is not None:
                seen.append(ev)
            if ev["ev"] == kind:
                return ev
            if ev["ev"] == "exit" and kind != "exit":
                raise RuntimeError("firmware exited with %s" % ev.get("code"))

    def kill(self):
        """A power cut: the process dies wherever it is; the flash image keeps what it had."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            # drain to the exit event so the next start's events are not mixed with these
            try:
                self.wait_for("exit", timeout=5)
            except (TimeoutError, RuntimeError):
                pass

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Bench:
    def __init__(self, scenario, out, quiet=False):
        self.sc = scenario
        self.out = Path(out)
        self.quiet = quiet
        self.lines = []
        self.failures = []
        self.taps = []
        self.records = {}  # seq -> kind, from the firmware's record events
        self.params_version = None
        self.rng = random.Random(int(scenario.get("seed", 1)))

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
        v = sc["validator"]
        if self.out.exists():
            shutil.rmtree(self.out)
        (self.out / "frames").mkdir(parents=True)
        self.start = validator_time(sc.get("start", "2026-11-30T06:30:00+08:00"))
        self.device = int(v.get("device", 1001))
        self.secret = bytes.fromhex(v.get("secret", "5a" * 32))
        # Back office: a real collector on SQLite, the device provisioned, TAC keys configured
        # for the simulators' issuers so clearing checks every purchase.
        self.store = Store("sqlite:///%s" % (self.out / "collector.sqlite3"))
        self.store.provision(self.device, self.secret, "bench validator")
        self.cards = self._make_cards(sc.get("cards", {}))
        keys = {}
        for card in self.cards.values():
            tu = card.tu
            if tu:
                issuer8 = bytes(tu["issuer"])
                alg = tu["suite"].name
                keys[issuer8[:4]] = IssuerKey(crypto.TEST_ROOT_KEYS["tac"], issuer8, alg)
        self.clearing = Clearing(keys)
        self._start_collector()
        self._publish(int(v.get("params_version", 1)), v.get("params", "tools/params/example"))
        # The world: reader, display, PSAM, modem.
        dialect = "quectel" if v.get("modem", "sim7600") == "quectel" else "simcom"
        self.world = BenchWorld(reader=v.get("reader", "pn532_i2c"), dialect=dialect)
        self._set_time(self.start)
        # The back office answers with the bench's virtual time, as a real one would with the
        # real time: the validator's clock rules are exercised, not tripped by the simulation.
        collector_app.server_time = lambda: self.world.time
        port = self.world.start()
        cfg = {
            "device_id": self.device,
            "secret": self.secret.hex(),
            "route": int(v.get("route", 101)),
            "stop": int(v.get("stop", 1)),
            "city": str(v.get("city", "2482")),
            "institution": str(v.get("institution", "1200290000000000")),
            "collector_url": self.url,
            "modem": v.get("modem", "sim7600"),
            "apn": "cmnet",
            "uplink_interval_s": int(v.get("upload_interval_s", 5)),
        }
        config_path = self.out / "config.json"
        config_path.write_text(json.dumps(cfg, indent=1))
        # The firmware runs as it would on a board: compiled to .mpy by `make firmware`'s code.
        fw_dir = self.out / "firmware"
        build_firmware.build("unix_sim", fw_dir, [])
        env = dict(os.environ)
        env.update(
            {
                "SIM_PORT": str(port),
                "MICROPYPATH": "%s:%s:.frozen" % (fw_dir / "lib", fw_dir),
                "VALIDATOR_READER": v.get("reader", "pn532_i2c"),
                "VALIDATOR_FLASH": str(self.out / "flash.img"),
                "VALIDATOR_TXLOG": str(self.out / "flash.img.txlog"),
                "VALIDATOR_CONFIG": str(config_path),
                "VALIDATOR_EVENTS": "1",
            }
        )
        self.wdt_s = int(v.get("watchdog_ms", 3000)) / 1000
        env["VALIDATOR_WDT_MS"] = str(int(self.wdt_s * 1000))
        env["VALIDATOR_TEST_HOOKS"] = "1"
        self.fw = Firmware(env, self.out / "firmware.log", fw_dir / "main.py")
        self.fw.on_idle = self._watchdog_check
        self.wdt_resets = 0

    def _make_cards(self, spec):
        cards = {}
        for n, (name, c) in enumerate(sorted(spec.items())):
            c = dict(c)
            profile = c.pop("profile", "tunion_plain")
            uid = c.pop("uid", None)
            card = VirtualCard.from_profile(profile, **c)
            # Each rider's card needs its own UID on the air.
            card.uid = bytes.fromhex(uid) if uid else bytes((0x08, 0x10 + n, 0x20 + n, 0x30 + n))
            card.name = name
            cards[name] = card
        return cards

    def _start_collector(self):
        self.server = ServerThread(create_app(self.store, clearing=self.clearing))
        self.server.__enter__()
        self.url = "http://127.0.0.1:%d" % self.server.port

    def _stop_collector(self):
        if self.server is not None:
            self.server.__exit__(None, None, None)
            self.server = None

    def _publish(self, version, folder, blacklist_extra=()):
        folder = ROOT / folder
        cards = params_compile.read_cards(folder / "blacklist.csv", progress=False)
        cards = list(cards) + [int(x) for x in blacklist_extra]
        data = params_compile.compile_bundle(
            self.secret,
            folder / "fares.toml",
            folder / "whitelist.csv",
            version=version,
            activation=0,
            progress=False,
            cards=cards,
        )
        self.store.publish(version, data, target=self.device)
        return version

    # ---- the run -----------------------------------------------------------------------------

    def _watchdog_check(self):
        """The watchdog as hardware: no feed for its timeout while running resets the board."""
        last = self.world.wdt_last
        if not self.fw.alive() or last is None:
            return
        if time.monotonic() - last > self.wdt_s:
            self.wdt_resets += 1
            self.world.wdt_last = None
            self.fw.proc.send_signal(signal.SIGKILL)

    def boot(self, why="power on", cause="power-on"):
        self.world.wdt_last = None
        self.fw.env["VALIDATOR_RESET_CAUSE"] = cause
        self.fw.start()
        seen = []
        ev = self.fw.wait_for("boot", timeout=60, seen=seen)
        self._note(seen)
        self.say(
            "%s  validator %s: PSAM %s, parameters v%s, journal %d (acked %d), %d torn pending,"
            " heap %d B used"
            % (
                local_clock(self.world.time),
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

    def _note(self, events):
        for ev in events:
            if ev["ev"] == "record":
                self.records[ev["seq"]] = ev["kind"]
            elif ev["ev"] == "params":
                self.params_version = ev["version"]

    def wait_params(self, version, timeout=60):
        deadline = time.monotonic() + timeout
        while self.params_version is None or self.params_version < version:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("parameters v%d not activated within %d s" % (version, timeout))
                return
            seen = []
            try:
                self.fw.wait_for("params", timeout=left, seen=seen)
            except TimeoutError:
                pass
            self._note(seen)
        self.say("%s  parameters v%d active" % (local_clock(self.world.time), self.params_version))

    def tap(self, ev):
        names = ev["tap"] if isinstance(ev["tap"], list) else [ev["tap"]]
        cards = [self.cards[n] for n in names]
        card = cards[0]
        pull = ev.get("pull")
        if pull:
            when, _, step = pull.partition(":") if ":" in pull else ("after", "", pull)
            ins = STEPS[step]
            (card.fail_after if when == "after" else card.fail_before)(ins=ins)
        cut = ev.get("power_cut")
        debits_before = len(card.debits)
        for c in cards:
            self.world.place(c)
        seen = []
        result = None
        if cut == "random":
            # Anywhere in the tap: a moment drawn from the scenario's seeded generator.
            time.sleep(self.rng.uniform(0.0, ev.get("within_s", 0.3)))
            self.fw.kill()
            cut = "random moment"
        elif cut:
            ins = STEPS[cut]
            deadline = time.monotonic() + TAP_TIMEOUT_S
            while time.monotonic() < deadline:
                done = [a for a in card.audit if a.get("ins") == ins and "sw" in a]
                if done or (cut == "debit" and len(card.debits) > debits_before):
                    break
                time.sleep(0.0005)
            self.fw.kill()
            self.say("%s  tap %-8s POWER CUT (%s)" % (local_clock(self.world.time), names[0], cut))
        else:
            try:
                result = self.fw.wait_for("tap", seen=seen)
            except (TimeoutError, RuntimeError) as e:
                self.fail("tap %s: %s" % (names[0], e))
        self._note(seen)
        for c in cards:
            self.world.remove(c)
        if result is None:
            return None
        # The rider walks on: the validator must see the card leave before the next tap.
        seen = []
        try:
            self.fw.wait_for("left", timeout=10, seen=seen)
        except (TimeoutError, RuntimeError) as e:
            self.fail("tap %s: the card's departure was not seen: %s" % (names[0], e))
        self._note(seen)
        self.taps.append((names[0], result))
        frame = (
            self.out / "frames" / ("%03d-%s-%s.png" % (len(self.taps), names[0], result["reason"]))
        )
        self.world.panel.snapshot(frame)
        screen = " | ".join(result.get("screen") or [])
        sound = SOUNDS.get(result.get("sound"), "-")
        self.say(
            "%s  tap %-8s [%s]  %s  -> %s, fare %s, balance %s, %d ms"
            % (
                local_clock(self.world.time),
                names[0] + ("+%d" % (len(cards) - 1) if len(cards) > 1 else ""),
                screen,
                sound,
                result["reason"],
                yuan(result.get("amount")),
                yuan(result.get("balance")),
                result.get("ms", 0),
            )
        )
        if result.get("detail") and result["reason"] not in ("OK", "OK_LOW"):
            self.say("            operator: %s" % result["detail"])
        self._expect_tap(ev, result, names[0])
        return result

    def _expect_tap(self, ev, result, name):
        want = ev.get("expect")
        if want is not None:
            allowed = want if isinstance(want, list) else [want]
            if result["reason"] not in allowed and "any" not in allowed:
                self.fail("tap %s: expected %s, got %s" % (name, want, result["reason"]))
        if "fare" in ev and result.get("amount") != ev["fare"]:
            self.fail("tap %s: fare %s, expected %s" % (name, result.get("amount"), ev["fare"]))
        if "balance" in ev and result.get("balance") != ev["balance"]:
            self.fail(
                "tap %s: balance %s, expected %s" % (name, result.get("balance"), ev["balance"])
            )

    def wait_uploaded(self, timeout=60):
        """Until the back office holds every record the device has journaled, once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = []
            try:
                self.fw.wait_for("never", timeout=0.3, seen=seen)
            except (TimeoutError, RuntimeError):
                pass
            self._note(seen)
            if self.records and set(self.store.seqs(self.device)) >= set(self.records):
                return True
        missing = sorted(set(self.records) - set(self.store.seqs(self.device)))
        self.fail("records not in the back office after %d s: %s" % (timeout, missing[:20]))
        return False

    def _set_time(self, t):
        # The modem's network time (AT+CCLK) is the world's, not the host's: a validator that
        # took the host's date stepped days ahead and priced taps by the wrong hour of the day.
        self.world.time = t
        y, mo, d, hh, mi, ss = timeutil.from_seconds(t + TZ)
        self.world.modem.network_time = (y, mo, d, hh, mi, ss, TZ // 900)

    def play(self):
        sc = self.sc
        t = self.start
        self.boot()
        self.wait_params(int(sc["validator"].get("params_version", 1)))
        for ev in sc.get("events", []):
            t = self._event_time(ev, t)
            if t > self.world.time:
                self._set_time(t)
            if "tap" in ev:
                self.tap(ev)
                if ev.get("power_cut"):
                    if ev.get("restart", True):
                        self.boot("restarted after the power cut")
            elif ev.get("power_cut"):
                self.fw.kill()
                self.say("%s  POWER CUT (ignition off)" % local_clock(self.world.time))
                if ev.get("restart", True):
                    self.boot("power back")
            elif ev.get("reboot"):
                self.fw.kill()
                self.boot("rebooted")
            elif ev.get("hang"):
                self._hang()
            elif "modem" in ev:
                self._modem(ev["modem"])
            elif "server" in ev:
                self._server(ev["server"])
            elif "params_push" in ev:
                p = ev["params_push"]
                v = self._publish(
                    int(p["version"]), p.get("dir", "tools/params/example"), p.get("blacklist", ())
                )
                self.say("%s  back office publishes parameters v%d" % (local_clock(t), v))
                self.wait_params(v)
            elif "rtc_jump" in ev:
                self.world.rtc_offset += int(ev["rtc_jump"])
                self.say("%s  the RTC jumps by %+d s" % (local_clock(t), int(ev["rtc_jump"])))
            elif ev.get("wait") == "upload":
                if self.wait_uploaded():
                    self.say("%s  back office holds every record" % local_clock(t))
            else:
                raise ScenarioError("event not understood: %r" % (ev,))
        self.wait_uploaded(timeout=int(sc.get("upload_timeout_s", 60)))

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

    def _hang(self):
        """The tap loop hangs (a wedged reader); the watchdog must reset the validator."""
        self.world.hub.set_pin("test_hang", 1)
        self.say("%s  the reader wedges: the tap loop hangs" % local_clock(self.world.time))
        try:
            self.fw.wait_for("exit", timeout=self.wdt_s * 4 + 10)
        except TimeoutError:
            self.fail("the watchdog did not reset a hung validator")
            self.fw.kill()
        self.world.hub.set_pin("test_hang", 0)
        ev = self.boot("reset by the watchdog", cause="watchdog")
        if ev.get("reset_cause") != "watchdog":
            self.fail("after the hang the validator woke with cause %r" % ev.get("reset_cause"))

    def _modem(self, what):
        if what == "down":
            self.world.modem.inject("reg_lost", 1000)
            self.say("%s  cellular coverage lost" % local_clock(self.world.time))
        else:
            self.world.modem.clear()
            self.say("%s  cellular coverage back" % local_clock(self.world.time))

    def _server(self, what):
        if what == "down":
            self._stop_collector()
            self.say("%s  back office down" % local_clock(self.world.time))
        else:
            port = int(self.url.rsplit(":", 1)[1])
            self.server = _server_on(self.store, self.clearing, port)
            self.say("%s  back office back" % local_clock(self.world.time))

    # ---- the end -------------------------------------------------------------------------------

    def summary(self):
        self.fw.kill()
        device_records = self._device_records()
        rows = list(self.store.export(self.device))
        bo = {r[1]: r for r in rows}
        debits = []
        for card in self.cards.values():
            for d in card.debits:
                debits.append((card.name, d))
            for v in card.violations:
                self.fail("card %s: violation: %s" % (card.name, v))
        purchases = [
            record.decode(bytes.fromhex(r[-1]))
            for r in rows
            if r[3] in (record.PURCHASE, record.PURCHASE_RECOVERED)
        ]
        by_tac = {}
        for p in purchases:
            by_tac.setdefault(p["tac"].hex().upper(), []).append(p)
        for name, d in debits:
            tac = d["tac"].hex().upper() if isinstance(d["tac"], bytes) else str(d["tac"]).upper()
            got = by_tac.get(tac, [])
            if len(got) != 1:
                self.fail(
                    "card %s debit %s (TAC %s): %d back-office records"
                    % (name, d.get("amount"), tac, len(got))
                )
        revenue_cards = sum(d["amount"] for _, d in debits)
        revenue_bo = sum(p["amount"] for p in purchases)
        if revenue_cards != revenue_bo:
            self.fail(
                "revenue: cards were debited %d, back office holds %d"
                % (revenue_cards, revenue_bo)
            )
        if set(bo) != set(device_records):
            self.fail(
                "device journal and back office differ: device-only %s, back-office-only %s"
                % (
                    sorted(set(device_records) - set(bo))[:10],
                    sorted(set(bo) - set(device_records))[:10],
                )
            )
        bad_tac = [r[1] for r in rows if r[9] == "bad"]
        if bad_tac:
            self.fail("clearing flagged TACs on records %s" % bad_tac)
        expect = self.sc.get("expect", {})
        for name, want in expect.get("balances", {}).items():
            got = self.cards[name].balance
            if got != want:
                self.fail("card %s ends with %s, expected %s" % (name, got, want))
        if "revenue" in expect and revenue_bo != expect["revenue"]:
            self.fail("revenue %d, expected %d" % (revenue_bo, expect["revenue"]))
        # Every intent closed by its outcome: each rider whose tap was cut or pulled came back.
        unconfirmed = self.store.unconfirmed(self.device)
        want_open = expect.get("unconfirmed", 0)
        if len(unconfirmed) != want_open:
            self.fail(
                "%d unconfirmed debits at the end (expected %d): %s"
                % (len(unconfirmed), want_open, [(u["seq"], u["card_atc"]) for u in unconfirmed])
            )
        intents = sum(1 for r in rows if r[3] == record.DEBIT_INTENT)
        outcomes = {}
        for _, r in self.taps:
            outcomes[r["reason"]] = outcomes.get(r["reason"], 0) + 1
        report = {
            "scenario": self.sc.get("name"),
            "taps": len(self.taps),
            "outcomes": outcomes,
            "revenue_fen": revenue_bo,
            "card_debits": len(debits),
            "device_records": len(device_records),
            "backoffice_records": len(rows),
            "debit_intents": intents,
            "unconfirmed_debits": len(unconfirmed),
            "tac_checked": sum(1 for r in rows if r[9] == "ok"),
            "firmware_starts": self.fw.starts,
            "watchdog_feeds": self.world.wdt_feeds,
            "watchdog_resets": self.wdt_resets,
            "failures": self.failures,
            "taps_detail": [dict(r, card=n) for n, r in self.taps],
            "balances": {n: c.balance for n, c in self.cards.items()},
        }
        (self.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
        self.say("")
        self.say("== summary: %s" % self.sc.get("name"))
        self.say(
            "taps %d (%s)"
            % (len(self.taps), ", ".join("%s %d" % kv for kv in sorted(outcomes.items())))
        )
        self.say(
            "revenue %s yuan from %d card debits; back office holds %s yuan"
            % (yuan(revenue_cards), len(debits), yuan(revenue_bo))
        )
        self.say(
            "records: %d on the device, %d in the back office (%d debit intents, %d unconfirmed), "
            "%d TACs verified by clearing"
            % (len(device_records), len(rows), intents, len(unconfirmed), report["tac_checked"])
        )
        self.say(
            "final balances: "
            + ", ".join("%s %s" % (n, yuan(b)) for n, b in report["balances"].items())
        )
        self.say("frames: %s  report: %s" % (self.out / "frames", self.out / "report.json"))
        self.say(
            "RESULT: %s"
            % ("every expectation held" if not self.failures else "%d FAILED" % len(self.failures))
        )
        return report

    def _device_records(self):
        """The records on the validator's raw txlog partition image (what a technician would
        read off a board): every 64-byte slot holding a valid record, once per sequence number
        (an intent carried into a newer sector is the same record)."""
        path = self.out / "flash.img.txlog"
        try:
            blob = path.read_bytes()
        except OSError as e:
            self.fail("txlog image could not be read: %s" % e)
            return {}
        out = {}
        for off in range(0, len(blob) - record.SIZE + 1, record.SIZE):
            slot = blob[off : off + record.SIZE]
            if record.valid(slot):
                r = record.decode(slot)
                out[r["seq"]] = r
        return out

    def close(self):
        try:
            self.fw.kill()
        finally:
            self._stop_collector()
            self.world.stop()
            self.store.close()


def _server_on(store, clearing, port):
    """The collector again on the same port (a restart): clients keep their URL."""
    import socket

    import uvicorn

    app = create_app(store, clearing=clearing)
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


def generate_events(sc):
    """[generate]: a long random day, reproducible from its seed: taps by random riders, some
    pulled at a random step, some cut by a power loss at a random step or moment; after each,
    the rider taps again (as riders do when the validator says so)."""
    g = sc["generate"]
    rng = random.Random(int(g.get("seed", 1)))
    names = g.get("cards") or [
        n
        for n, c in sorted(sc["cards"].items())
        if c.get("profile", "tunion_plain") != "unionpay_only"
    ]
    steps = list(STEPS)
    n_taps = int(g.get("taps", 40))
    cuts = set(rng.sample(range(n_taps), min(n_taps, int(g.get("power_cuts", 0)))))
    rest = [i for i in range(n_taps) if i not in cuts]
    pulls = set(rng.sample(rest, min(len(rest), int(g.get("pulls", 0)))))
    events = []
    for i in range(n_taps):
        name = rng.choice(names)
        ev = {"at": "+%ds" % rng.randint(20, 120), "tap": name, "expect": "any"}
        if i in cuts:
            ev["power_cut"] = rng.choice(steps + ["random"])
        elif i in pulls:
            ev["pull"] = rng.choice(("before", "after")) + ":" + rng.choice(steps)
        events.append(ev)
        if i in cuts or i in pulls:
            events.append({"at": "+%ds" % rng.randint(3, 15), "tap": name, "expect": "any"})
    return events


def load_scenario(path):
    with open(path, "rb") as f:
        try:
            sc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ScenarioError("%s: %s" % (path, e))
    if "validator" not in sc or "cards" not in sc:
        raise ScenarioError("%s: needs [validator] and [cards]" % path)
    if "generate" in sc:
        sc["events"] = list(sc.get("events", [])) + generate_events(sc)
    return sc


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        sc = load_scenario(args.scenario)
    except (OSError, ScenarioError) as e:
        sys.exit("simbench: %s" % e)
    out = args.out or ROOT / "bench" / "out" / args.scenario.stem
    bench = Bench(sc, out, quiet=args.quiet)
    bench.say("== %s" % sc.get("name", args.scenario.stem))
    if sc.get("description"):
        bench.say(sc["description"].strip())
    bench.setup()
    try:
        bench.play()
        bench.summary()
    except (ScenarioError, KeyError) as e:
        bench.fail("scenario error: %s" % e)
    finally:
        bench.close()
    return 0 if not bench.failures else 1


if __name__ == "__main__":
    sys.exit(main())
