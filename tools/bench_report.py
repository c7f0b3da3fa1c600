"""BENCHMARKS.md from the results of tools/benchmarks.py (markdown(results) -> str)."""


def _n(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if abs(v) >= 1000:
            s = "{:,.0f}".format(v)
        elif abs(v) >= 10:
            s = "%.1f" % v
        else:
            s = "%.3g" % v
    elif isinstance(v, int):
        s = "{:,}".format(v)
    else:
        s = str(v)
    return s + (" " + unit if unit else "")


# The targets the project has set (issue numbers in the tracker), checked at the top of
# BENCHMARKS.md. (key, sub-key or None, "<=" / ">=" / "==", target, unit)
TARGETS = (
    ("tap_model_ms_by_reader", "rc522_spi", "<=", 150, "ms"),
    ("tap_model_ms_by_reader", "pn532_spi", "<=", 150, "ms"),
    ("tap_model_ms_by_reader", "pn532_hsu", "<=", 150, "ms"),
    ("tap_model_ms_by_reader", "pn532_i2c", "<=", 200, "ms"),
    ("tap_model_ms_esp32", None, "<=", 200, "ms"),
    ("tap_alloc_bytes", None, "<=", 512, "B"),
    ("tap_flash_erases_critical", None, "==", 0, ""),
    ("tap_flash_programs_critical", None, "<=", 2, ""),
    ("tap_flash_reads_ratio_full_vs_empty", None, "<=", 1.2, ""),
    ("journal_bytes_per_record", None, "<=", 128, "B"),
    ("journal_block_writes_per_record", None, "<=", 0.02, ""),
    ("power_cut_points_tested", None, ">=", 5000, ""),
    ("power_cut_losses", None, "==", 0, ""),
    ("double_bookings", None, "==", 0, ""),
    ("lost_debits", None, "==", 0, ""),
    ("tearing_double_charges", None, "==", 0, ""),
    ("tearing_lost_debits", None, "==", 0, ""),
    ("heap_min_heapsize_kb", None, "<=", 64, "KB"),
    ("heap_live_max_bytes", None, "<=", 48000, "B"),
    ("heap_largest_alloc_bytes", None, "<=", 4096, "B"),
    ("modem_loop_block_ms", None, "<=", 20, "ms"),
    ("params_download_bytes_ratio", None, "<=", 1.05, ""),
    ("params_download_heap_bytes", None, "<=", 8192, "B"),
    ("params_download_cut_points_tested", None, ">=", 100, ""),
    ("params_download_failures", None, "==", 0, ""),
    ("collector_load_records_per_s", None, ">=", 10000, "/s"),
    ("collector_load_p99_ms", None, "<=", 250, "ms"),
    ("collector_load_lost", None, "==", 0, ""),
    ("collector_load_duplicated", None, "==", 0, ""),
    ("collector_slowloris_p99_ms", None, "<=", 1000, "ms"),
    ("collector_replay_cost_ratio", None, "<=", 2, ""),
)


def verdicts(figures):
    """[(name, value, "<= 150 ms", "met" | "MISSED" | "not measured")] for TARGETS."""
    out = []
    for key, sub, op, target, unit in TARGETS:
        value = figures.get(key)
        if sub is not None:
            value = value.get(sub) if isinstance(value, dict) else None
        name = key + ("." + sub if sub else "")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            verdict = "not measured"
            value = None
        elif op == "<=":
            verdict = "met" if value <= target else "MISSED"
        elif op == ">=":
            verdict = "met" if value >= target else "MISSED"
        else:
            verdict = "met" if value == target else "MISSED"
        out.append((name, value, "%s %s" % (op, _n(target, unit)), verdict))
    return out


ROWS = (
    # key, unit, what, how
    (
        "tap_cpu_us",
        "us",
        "firmware CPU for one flat-fare tap (Purchaser alone)",
        "unix port, in-process fakes, `tools/bench_mpy/tap.py`",
    ),
    (
        "tap_instructions_32",
        "",
        "instructions per tap (Purchaser alone), a stable counter",
        "callgrind Ir on micropython32, `tools/bench_mpy/tap.py`",
    ),
    (
        "tap_instructions_32_to_result",
        "",
        "instructions per tap (Purchaser alone) from its start to the result, a stable counter",
        "callgrind on micropython32, one dump per tap at the result, `tools/bench_mpy/tap.py`",
    ),
    (
        "decide_instructions_32",
        "",
        "instructions per decision (blacklist, whitelist, flat fare), a stable counter",
        "callgrind Ir on micropython32, `tools/bench_mpy/decide_count.py`",
    ),
    (
        "tap_alloc_bytes",
        "B",
        "heap allocated by one tap (Purchaser alone), steady state",
        "micropython32, gc.mem_alloc() delta with the collector off",
    ),
    (
        "heap_runtime",
        "",
        "the runtime every heap figure below comes from",
        "`make micropython32` (tools/build_micropython32.py)",
    ),
    (
        "heap_min_heapsize_kb",
        "KB",
        "smallest `-X heapsize` that runs the application's taps, uploads, parameter update",
        "bisection, `tools/bench_mpy/app_heap.py` mode 0",
    ),
    (
        "heap_live_max_bytes",
        "B",
        "live heap between operations (after gc.collect()), max",
        "same run, mode 1",
    ),
    (
        "heap_live_max_firmware_bytes",
        "B",
        "the same without the simulated buses' objects and modules and the harness's heap",
        "each measured in the run (docs/runtime.md)",
    ),
    (
        "heap_largest_alloc_bytes",
        "B",
        "largest single allocation of a tap or an upload round, steady state",
        "heap maps (micropython.mem_info(1)) around each operation",
    ),
    (
        "heap_peak_bytes",
        "B",
        "peak heap of the application over the taps with uploads",
        "firmware/app.py Validator, `tools/bench_mpy/app_heap.py`",
    ),
    ("card_apdus_per_tap", "", "card APDUs of a flat-fare tap", "counted at the fake card"),
    ("psam_apdus_per_tap", "", "PSAM APDUs of a flat-fare tap", "counted at the fake PSAM"),
    (
        "rf_bytes_per_tap",
        "B",
        "bytes on air, activation to DESELECT, both ways",
        "virtual card's APDUs + ISO 14443-3/-4 framing",
    ),
    (
        "psam_line_ms_9600",
        "ms",
        "PSAM line time of the purchase at 9,600 baud (no PPS)",
        "iso7816.t0_chars/line_time_us on the virtual PSAM's APDUs",
    ),
    ("psam_line_ms_pps", "ms", "the same after PPS to 38,400 baud (TA1 0x13)", "same"),
    (
        "tap_model_ms_esp32",
        "ms",
        "modelled tap-to-result on an ESP32 (240 MHz), slowest reader set-up",
        "docs/tap-model.md",
    ),
    (
        "tap_model_cpu_ms_240",
        "ms",
        "the tap model's CPU term at 240 MHz (the validator build)",
        "instructions per tap x cycles per instruction / clock (docs/tap-model.md)",
    ),
    (
        "tap_model_cpu_ms_160",
        "ms",
        "the same at 160 MHz (stock ESP32_GENERIC)",
        "same",
    ),
    ("blacklist_bytes_per_entry", "B", "blacklist size per card", "firmware/cardlists.py format"),
    (
        "blacklist_blocks_per_lookup",
        "",
        "4 KB blocks read per lookup (worst of the sample)",
        "cardlists.CountingBlocks",
    ),
    ("blacklist_lookup_us", "us", "one lookup, unix port, host file", "median over the sample"),
    (
        "journal_bytes_per_record",
        "B",
        "flash bytes programmed per sale, intent included (intent 64 B + outcome delta 22 B + "
        "header and ack-note share)",
        "firmware/txlog.py on boards/unix_sim/rawflash.py, 4 KB sectors, acks every 20",
    ),
    ("journal_block_writes_per_record", "", "4 KB sector erases per record", "same"),
    (
        "journal_records_per_mb",
        "",
        "records accepted per MB of log partition before purchases stop",
        "a 1 MiB partition filled",
    ),
    (
        "uplink_bytes_per_record",
        "B",
        "bytes on the wire per record, batches of 100, raw",
        "tools.collector.bench.wire_bytes",
    ),
    (
        "collector_records_per_s_sqlite",
        "rec/s",
        "collector ingest, SQLite (WAL)",
        "tools.collector.bench.measure_ingest",
    ),
    (
        "collector_records_per_s_postgres",
        "rec/s",
        "collector ingest, PostgreSQL (fsync on)",
        "same, tests/host/pg.py server",
    ),
    (
        "collector_load_records_per_s",
        "rec/s",
        "fleet load: 50 devices, batches of 1-40, 60 s, `serve --workers 2`, PostgreSQL "
        "fsync on, clients on the same 2 cores (target >= 10,000)",
        "tools.collector.load.run_load",
    ),
    ("collector_load_p99_ms", "ms", "same, upload latency p99 (target <= 250)", "same"),
    ("collector_load_lost", "", "same, records acknowledged but not held (target 0)", "same"),
    ("collector_load_duplicated", "", "same, records held twice (target 0)", "same"),
    (
        "collector_cpu_ms_per_request",
        "ms",
        "same, collector CPU per upload (all workers, /proc)",
        "same",
    ),
    (
        "collector_slowloris_p99_ms",
        "ms",
        "same load with 300 slow connections held open: device p99 (target <= 1,000)",
        "tools.collector.load.run_load(slow=300)",
    ),
    (
        "collector_replay_cost_ratio",
        "",
        "server time of a replayed 64 KB batch / of a bad-MAC request (target <= 2)",
        "tools.collector.load.replay_cost",
    ),
    (
        "power_cut_points_tested",
        "",
        "transaction-log power-cut points (clean, prefix, random bits)",
        "`tools/bench_mpy/txlog_powercut.py`",
    ),
    ("power_cut_losses", "", "cut points that lost or damaged a returned record", "same"),
    (
        "tearing_points_tested",
        "",
        "purchase tearing points (matrix + random chains + every card variant x profile)",
        "`tools/bench_mpy/tearing.py`, virtual cards",
    ),
    ("tearing_double_charges", "", "debits beyond the rides the validator sold", "same"),
    ("tearing_lost_debits", "", "card debits not journaled exactly once", "same"),
    (
        "card_variants_tested",
        "",
        "card profile x variant combinations the tearing sweep ran (`tools/sim/card.py`)",
        "same",
    ),
    (
        "cross_points_tested",
        "",
        "cross suite: power cut x tear x card pulled or EEPROM-torn x 0x18 counter convention x "
        "re-tap/other card/never/two reboots",
        "`tools/bench_mpy/cross.py`, `tests/mpy/crosslib.py`",
    ),
    ("double_bookings", "", "debits booked twice, or bookings without a debit", "same"),
    ("lost_debits", "", "debits with neither a booking nor an open intent", "same"),
    (
        "tap_flash_erases_critical",
        "",
        "flash erases inside a tap (empty log and 95% full, the worse)",
        "same, real purchase on the RAM raw flash device",
    ),
    ("tap_flash_programs_critical", "", "flash programs inside a tap (the worse)", "same"),
    (
        "tap_flash_reads_ratio_full_vs_empty",
        "",
        "flash reads per tap at 95% full / at an empty log",
        "same",
    ),
    (
        "bundle_verify_ms",
        "ms",
        "fleet signature check of a bundle manifest (ECDSA P-256, `firmware/p256.py`)",
        "unix port, `tools/bench_mpy/params_verify.py`, median",
    ),
    ("bundle_verify_ms_32", "ms", "the same on micropython32", "same"),
    (
        "bundle_verify_instructions_32",
        "",
        "instructions per signature check",
        "callgrind Ir on micropython32 (1 check minus 0)",
    ),
    (
        "bundle_verify_model_ms_esp32_160",
        "ms",
        "model: signature check on an ESP32 at 160 MHz",
        "instructions x 1.5 cycles / clock (`tools/bench_model.py` PARAMS)",
    ),
    ("bundle_verify_model_ms_esp32_240", "ms", "the same at 240 MHz", "same"),
    (
        "params_download_bytes_ratio",
        "",
        "million-card list over the air: HTTP bytes both ways (headers, manifest, body) / the "
        "list's bytes (target <= 1.05)",
        "`tools/bench_mpy/params_dl.py` on micropython32, simulated SIM7600, 64 KiB ranged GETs",
    ),
    (
        "params_download_heap_bytes",
        "B",
        "peak heap above idle during that download (live, after a collection at each body "
        "piece; target <= 8,192)",
        "same, micropython32 (firmware frozen)",
    ),
    (
        "params_download_model_s_115200",
        "s",
        "model: the download's modem UART bytes at 115,200 baud (8N1)",
        "same, AT dialogue and bodies counted by the simulator",
    ),
    (
        "dashboard_page_ms_max",
        "ms",
        "dashboard: slowest page (median of its fetches), a year of a 1,000-bus fleet in "
        "PostgreSQL; every page in *Dashboard pages* below",
        "tools/collector/web/bench.py",
    ),
    (
        "dashboard_rollup_records_per_s",
        "rec/s",
        "dashboard: summary tables brought up to date after a day of the fleet's records",
        "same, rollup.rollup()",
    ),
    (
        "params_download_cut_points_tested",
        "",
        "dropped connections at seeded byte points during one download (plus 3 power cuts)",
        "same, seed in `params_download_cut_seed`",
    ),
    (
        "params_download_failures",
        "",
        "downloads not activated, or wrong lookups after them (target 0)",
        "same, 200 seeded cards and their neighbours looked up",
    ),
    (
        "blacklist_merge_ms",
        "ms",
        "merged delta of 100,000 cards (60,000 added, 40,000 removed) onto the million-card "
        "list, into the free slot: CPU time of the merge (check, write, read back)",
        "`tools/bench_mpy/blmerge_fig.py` on the unix port (`firmware/blmerge.py`)",
    ),
    (
        "blacklist_merge_ms_32",
        "ms",
        "the same on micropython32 at a 64 KB heap",
        "same, micropython32 (firmware frozen), `-X heapsize=64k`",
    ),
    ("blacklist_merge_block_writes", "", "slot block writes (4 KB) of that merge", "same"),
    (
        "blacklist_merge_heap_bytes",
        "B",
        "live heap above the loaded parameter set during that merge (after a collection at "
        "every block read and write)",
        "same, micropython32 at a 64 KB heap",
    ),
    (
        "blacklist_merge_instructions_32",
        "",
        "instructions of a merge on a smaller list (`blacklist_merge_instructions_cards`)",
        "callgrind Ir on micropython32, --zero-before/--dump-before around the merge",
    ),
    (
        "blacklist_merge_model_s_esp32_240",
        "s",
        "model: the million-card merge on an ESP32 at 240 MHz (CPU: instructions scaled to the "
        "list x 1.5 cycles; flash: W25Q32JV typical erase and program times)",
        "`tools/benchmarks.py` merge_figures (flash at its maxima: `_model_flash_s_max`)",
    ),
    (
        "modem_loop_block_ms",
        "ms",
        "extra: longest asyncio loop gap during a 6,500-byte modem POST at 115,200 baud on the "
        "strict ESP32 stand-in (UART writes block; 2 ms ticker)",
        "`tools/bench_mpy/modem_block.py`, simulated modems",
    ),
)


def _dashboard(w, d):
    """The dashboard's page times (tools/collector/web/bench.py)."""
    pages = d.get("dashboard_page_ms")
    if not pages:
        return
    rows = d.get("dashboard_rows", {})
    w("### Dashboard pages")
    w("")
    w(
        "%s buses x %s days x %s purchases a bus and day in PostgreSQL (%s records, %s with a "
        "clearing exception; summaries: %s rows by bus and day, %s by route and day, %s history "
        "rows), "
        "generated in %s s; each page fetched %s times logged in over loopback HTTP, median. "
        "A day of the whole fleet (%s records) summarised in %s s (%s rec/s); summaries equal "
        "the records: %s. Generated data: `python -m tools.collector.web.bench`."
        % (
            _n(d.get("dashboard_buses")),
            _n(d.get("dashboard_days")),
            _n(d.get("dashboard_taps_per_bus_day")),
            _n(rows.get("records")),
            _n(d.get("dashboard_exceptions")),
            _n(rows.get("web_daily")),
            _n(rows.get("web_daily_fleet")),
            _n(rows.get("web_events")),
            _n(d.get("dashboard_generate_s")),
            _n(d.get("dashboard_reps", 5)),
            _n(d.get("dashboard_rollup_day_records")),
            _n(d.get("dashboard_rollup_day_s")),
            _n(d.get("dashboard_rollup_records_per_s")),
            d.get("dashboard_summaries_match"),
        )
    )
    w("")
    w("| page | ms | bytes |")
    w("|---|---:|---:|")
    for k, v in pages.items():
        if not k.endswith("_bytes"):
            w("| %s | %s | %s |" % (k, _n(v), _n(pages.get(k + "_bytes"))))
    w("")


def markdown(res):
    f = res["figures"]
    d = res["details"]
    m = res["machine"]
    model = d["tap_model"]
    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    w(
        "Generated by `make bench` (`.venv/bin/python -m tools.benchmarks`) on %s UTC at commit "
        "`%s`%s. Raw figures and every detail: `bench/results.json`. Each time is a median over "
        "repeated runs; where a baseline exists it is also given as a ratio to a baseline timed "
        "in the same run, because absolute times drift on a shared machine."
        % (
            m["date_utc"],
            m["git_commit"],
            " (**--quick: tiny counts, not for publishing**)" if res.get("quick") else "",
        )
    )
    checks = verdicts(f)
    met = sum(1 for c in checks if c[3] == "met")
    missed = [c for c in checks if c[3] == "MISSED"]
    w("")
    w("## Verdict")
    w("")
    w(
        "%d of %d targets met%s. The tap times are the model of an ESP32 at 240 MHz "
        "(`docs/tap-model.md`): card and bus times from the standards and datasheets, the CPU "
        "term from an instruction count (callgrind on `micropython32`), so they do not depend on "
        "the host CPU that ran the bench."
        % (
            met,
            len(checks),
            (": missed " + ", ".join("`%s`" % c[0] for c in missed)) if missed else "",
        )
    )
    w("")
    w("| figure | value | target | verdict |")
    w("|---|---:|---|---|")
    for name, value, target, verdict in checks:
        w("| `%s` | %s | %s | %s |" % (name, _n(value), target, verdict))
    runs = res.get("stage_runs") or {}
    rerun = res.get("stages_rerun", "all")
    if rerun != "all":
        w("")
        w(
            "This run repeated only the stage(s) %s (`make bench STAGE=...`); every other "
            "figure is "
            "kept from the commit its stage's row below names."
            % ", ".join("`%s`" % s for s in rerun)
        )
    if runs:
        w("")
        w("| stage | from commit | at (UTC) | seconds |")
        w("|---|---|---|---:|")
        for name, r in runs.items():
            w(
                "| %s | `%s` | %s | %s |"
                % (name, r["commit"], r["date_utc"], res["stage_seconds"].get(name, ""))
            )
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("|---|---|")
    w("| CPU | %s, %s cores |" % (m["cpu"], m["cores"]))
    w("| memory | %s |" % m["memory"])
    w("| OS | %s |" % m["os"])
    w("| CPython | %s |" % m["python"])
    w("| MicroPython | %s |" % m["micropython"].replace("|", ";"))
    w(
        "| load average at the end | %s%s |"
        % (
            ", ".join(str(x) for x in m["load_average"]),
            " (other work was running: see the ratios)"
            if m["load_average"][0] > 0.5 * (m.get("cores") or 1)
            else " (idle)",
        )
    )
    w(
        "| run time | %s s (%s) |"
        % (res["seconds"], ", ".join("%s %s s" % (k, v) for k, v in res["stage_seconds"].items()))
    )
    w("")
    w("## Figures")
    w("")
    w("| key | value | what | how |")
    w("|---|---:|---|---|")
    for key, unit, what, how in ROWS:
        w("| `%s` | %s | %s | %s |" % (key, _n(f.get(key), unit), what, how))
    w("")
    w("### Ratios against the baselines of this run")
    w("")
    w("| figure | ratio | baseline |")
    w("|---|---:|---|")
    w(
        "| tap wall time / MicroPython loop (fastest of each) | %s | `busy(%d)` = %s us "
        "(tools/bench_mpy/benchlib.py) |"
        % (_n(res["ratios"]["tap_cpu_vs_mpy_loop"]), d["mpy_loop_turns"], _n(d["mpy_loop_us"]))
    )
    w(
        "| blacklist_lookup_us / MicroPython loop | %s | same loop |"
        % _n(res["ratios"]["blacklist_lookup_vs_mpy_loop"])
    )
    for db in ("sqlite", "postgres"):
        v = res["ratios"].get("collector_%s_records_per_hash_baseline" % db)
        w(
            "| collector %s: records stored per CPython hash baseline | %s | "
            "SHA-256 of 4 MiB = %s ms"
            " |" % (db, _n(v), _n(d["cpython_hash_baseline_ms"]))
        )
    w("")
    w("## Details")
    w("")
    w(
        "**Tap CPU.** %s us median process CPU time per tap over %d reps of %d taps (%s); wall "
        "time %s us median, %s us in the fastest rep (%s). "
        % (
            _n(d["tap_cpu_us"]),
            len(d["tap_cpu_us_runs"]),
            res["config"]["tap_taps"],
            ", ".join(_n(x) for x in d["tap_cpu_us_runs"]),
            _n(d["tap_wall_us"]),
            _n(d["tap_wall_us_min"]),
            ", ".join(_n(x) for x in d["tap_wall_us_runs"]),
        )
    )
    if "tap_instructions" in d:
        w(
            "A stable counter: **%s instructions per tap** (%s)."
            % (_n(d["tap_instructions"]), d["tap_instructions_note"])
        )
    w(
        "The whole application's tap (decision with blacklist, whitelist and fare engine, "
        "purchase, transaction log on raw flash, no display) costs %s us of CPU per tap over %d "
        "taps "
        "with uploads (wall: %s us median, %s us fastest); this is the figure the ESP32 model "
        "scales."
        % (
            _n(d.get("app_cpu_us_per_tap")),
            d["app_taps"],
            _n(d.get("app_tap_us")),
            _n(d.get("app_tap_us_min")),
        )
    )
    if d.get("app_tap_breakdown_us"):
        w(
            "Wall time of its parts, per tap: "
            + ", ".join("%s %s us" % (k, _n(v)) for k, v in d["app_tap_breakdown_us"].items())
            + " (decide: blacklist, whitelist, fare engine)."
        )
    w("")
    w(
        "**Heap** (on %s: the 32-bit unix port with firmware, drivers and the simulation board "
        "frozen in, so objects have an ESP32's sizes and bytecode stays out of the heap; "
        "docs/runtime.md). Two runs of firmware/app.py's `Validator` (`tests/mpy/app_rig.py`, "
        "`tools/bench_mpy/app_heap.py`), each with an upload round every %d taps and a blacklist "
        "delta published half-way, fetched and activated through the uplink."
        % (d.get("heap_runtime"), res["config"]["app_every"])
    )
    w("")
    w("| | in-process parts | real drivers |")
    w("|---|---:|---:|")
    rows = (
        ("taps measured (uploads)", "taps", None),
        ("smallest `-X heapsize` (KB)", "min_heapsize_kb", None),
        ("live heap between operations, max (B)", "live_max_bytes", None),
        ("live heap after the first tap (B)", "live_first_bytes", None),
        ("peak: live + one operation's allocations (B)", "peak_bytes", None),
        ("modules' own heap (globals, classes) (B)", "modules_bytes", None),
        ("booted application (B)", "boot_bytes", None),
        ("largest single allocation, steady state (B)", "largest_alloc_bytes", None),
        ("one tap allocates, median (B)", "tap_alloc_bytes", None),
        ("of which the simulated buses (B)", "tap_sim_alloc_bytes", None),
        ("one upload round allocates, max (B)", "upload_alloc_max_bytes", None),
        ("of it the firmware, max (B)", "upload_firmware_alloc_max_bytes", None),
        ("held by the simulated bus objects (B)", "sim_held_bytes", None),
        ("the simulated buses' modules (B)", "sim_modules_bytes", None),
        ("the measuring harness: its modules and arrays (B)", "harness_bytes", None),
        ("live heap without those three, max (B)", "live_max_firmware_bytes", None),
        ("parameters version at the end", "params_version", None),
    )
    for label, key, _ in rows:
        vals = []
        for run in ("inproc", "drivers"):
            v = d.get("app_%s_%s" % (run, key))
            if key == "taps" and v is not None:
                v = "%s (%s)" % (v, d.get("app_%s_uploads" % run))
            vals.append(_n(v))
        w("| %s | %s | %s |" % (label, vals[0], vals[1]))
    w("")
    w(
        "In-process parts: card, PSAM and back office in the MicroPython process (answers made "
        "at start-up), no display or feedback objects. Real drivers: the simulation board's "
        "parts (`boards/unix_sim/board.py`: PN532 on I2C with a virtual T-Union card in its "
        "field, the PSAM link on its UART, the SIM7600 modem driver and the uplink over the "
        "simulated modem to a real collector, the SSD1306 display, the feedback pins) against "
        "`tools/bench_app_world.py`; its heapsize was bisected over %s taps and confirmed over "
        "**%s taps**. The simulated buses are Python objects and modules in the heap where a "
        "board has C objects and code in flash; they allocate nothing per call and keep a "
        "UART's receive stream in the socket's kernel buffer (as the UART driver's C ring on "
        "a board), but what their objects and modules keep, and the harness's own heap, are in "
        "the heap figures: measured apart (the rows above), the live heap without them is "
        "about %s B (`heap_live_max_firmware_bytes`)."
        % (
            res["config"].get("driver_search_taps"),
            d.get("heap_min_heapsize_taps"),
            _n(d.get("app_drivers_live_max_firmware_bytes")),
        )
    )
    parts = d.get("app_drivers_live_parts") or d.get("app_inproc_live_parts")
    if parts:
        w("")
        w(
            "Where the live heap goes (real drivers, at the end of the measuring run, each part "
            "dropped in turn; parts that share objects are counted where they are dropped "
            "first): "
            + ", ".join(
                "%s %s B" % (k, _n(v)) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
            )
            + "."
        )
    if d.get("app_drivers_largest_allocs") is not None:
        w("")
        w(
            "Largest single allocations in steady state (from tap 20 on; %d operations mapped "
            "with real drivers): %s. Method: with the collector off during an operation, every "
            "block it allocates stays in the heap; `micropython.mem_info(1)` maps the "
            "allocation table before and after, and a head block where the map before showed "
            "free blocks is a new allocation (its size in 16-byte blocks). A buffer the "
            "operation frees explicitly before it ends (the old storage of a grown list) is "
            "not seen."
            % (
                d["app_drivers_mapped_ops"],
                ", ".join(
                    "%s B %s (%s)" % (_n(b), k, op) for b, k, op in d["app_drivers_largest_allocs"]
                ),
            )
        )
    w("")
    w(
        "Purchaser alone (`tools/bench_mpy/tap.py`): %s B per tap on micropython32, %s B on the "
        "64-bit port." % (_n(d.get("tap_alloc_bytes")), _n(d.get("tap_alloc_bytes_64")))
    )
    if "tap_instructions_32" in d:
        w(
            "Instructions per tap on micropython32: **%s** (%s)."
            % (_n(d["tap_instructions_32"]), d["tap_instructions_32_note"])
        )
    w("")
    w(
        "**Exchange.** Card APDUs (virtual card, `tunion_plain`): %s; the card's ATS `%s` gives "
        "FSC %d, the reader asks FSD %d, so %d block(s) are chained. APDU bytes %s out / %s in; "
        "on air %s B for the APDUs and %s B for activation, %d frames. PSAM: %s characters to / "
        "%s from the PSAM; line %s ms at 9,600, %s ms at 38,400, %s ms at 115,200 baud."
        % (
            ", ".join(c[:10] + "…" for c, _r, _e in d["exchange_card"]),
            d["card_info"].get("ats"),
            d["card_fsc"],
            d["reader_fsd"],
            d["rf_chained_blocks"],
            d["card_apdu_bytes"][0],
            d["card_apdu_bytes"][1],
            d["rf_bytes_apdus"],
            d["rf_bytes_activation"],
            d["rf_frames_per_tap"],
            d["psam_chars"][0],
            d["psam_chars"][1],
            _n(d["psam_line_ms_9600"]),
            _n(d["psam_line_ms_pps"]),
            _n(d["psam_line_ms_115200"]),
        )
    )
    w("")
    w(
        "**Tap model (ESP32)**, ms to the result (green light after DEBIT); terms in "
        "docs/tap-model.md, CPU at %d MHz. `160 MHz` = the same with the CPU term at 160 MHz "
        "(stock ESP32_GENERIC). `424` = a card whose ATS offers 424 kbit/s (the T-Union profiles "
        "offer 106 only). `slow` = cards twice as slow and the PSAM at its default rate (%s baud, "
        "no PPS). `after` = PSAM MAC2 check and the outcome record, after the result."
        % (model["cpu_mhz_model"], _n(model["psam_rates"]["slow"]))
    )
    w("")
    terms = list(next(iter(model["configs"].values()))["terms"])
    w(
        "| reader | "
        + " | ".join(t.replace("_ms", "") for t in terms)
        + " | total | 160 MHz | 424 | slow | after |"
    )
    w("|---|" + "---:|" * (len(terms) + 5))
    for name, c in model["configs"].items():
        w(
            "| %s | %s | **%s** | %s | %s | %s | %s |"
            % (
                name,
                " | ".join(_n(c["terms"][t]) for t in terms),
                _n(c["total_ms"]),
                _n(c["total_ms_cpu"]["160"]),
                _n(c["total_ms_card_424"]),
                _n(c["slow_ms"]),
                _n(c["after_result_ms"]),
            )
        )
    w("")
    w(
        "CPU term: %s instructions per tap; %s ms at 160 MHz, %s ms at 240 MHz. Source: %s. "
        "Flash: %s ms (%s). RF: %s ms at 106 kbit/s, %s ms with the APDUs at 424 (gain %s ms)."
        % (
            _n(model["cpu_instructions_per_tap"]),
            _n(model["cpu_ms"]["160"]),
            _n(model["cpu_ms"]["240"]),
            model["cpu_source"],
            _n(model["flash_ms"]),
            model["flash_source"],
            _n(model["rf_ms"]),
            _n(model["rf_ms_424"]),
            _n(model["rf_gain_424_ms"]),
        )
    )
    w("")
    w("Targets: " + "; ".join("%s %d ms" % (k, v) for k, v in model["targets_ms"].items()) + ".")
    for name, c in model["configs"].items():
        miss = [k.split(" (")[0].split(",")[0] for k, ok in c["meets"].items() if not ok]
        w("%s: %s." % (name, "meets all three" if not miss else "misses " + ", ".join(miss)))
    w("")
    w(
        "**Blacklist.** %s cards: %s B in %d blocks (%s B per card); %d lookups (half hits) read "
        "at most %d blocks, %s reads on average, %s us each on the unix port (host file reads); "
        "the open list keeps %s B of heap."
        % (
            _n(d["blacklist_entries"]),
            _n(d["blacklist_bytes"]),
            d["blacklist_blocks"],
            _n(d["blacklist_bytes_per_entry"]),
            d["blacklist_lookups"],
            d["blacklist_blocks_per_lookup"],
            _n(d["blacklist_reads_mean"]),
            _n(d["blacklist_lookup_us"]),
            _n(d["blacklist_heap_held_bytes"]),
        )
    )
    w("")
    w(
        "**Transaction log.** %d sales (intent + PURCHASE each) with acks every 10 sales: "
        "%s B programmed per sale (%s B per stored record), %s sector erases and %s programs per "
        "record, %s us per append on the unix port; wear spread over the sectors %s erase. "
        "The log's part of a tap (can_accept_purchase, two appends) at an empty log and at "
        "%s %% full: %s erases, %s programs, reads %s / %s (ratio %s), %s B allocated. "
        "Capacity: %s records in %s B, %s in %s B; boot reads when full: %s / %s blocks."
        % (
            res["config"]["txlog_sales"],
            _n(d["journal_bytes_per_sale"]),
            _n(d.get("journal_bytes_per_stored_record", d["journal_bytes_per_record"])),
            _n(d["journal_block_writes_per_record"]),
            _n(d["journal_programs_per_record"]),
            _n(d["journal_append_us"]),
            _n(d["journal_wear_spread"]),
            _n(d["txlog_tap_fill_pct"]),
            _n(d["txlog_tap_erases"]),
            _n(d["txlog_tap_programs"]),
            _n(d["txlog_tap_reads_empty"]),
            _n(d["txlog_tap_reads_full"]),
            _n(d["txlog_tap_reads_ratio_full_vs_empty"]),
            _n(d["txlog_tap_alloc_bytes"]),
            _n(d["journal_fill_records"]),
            _n(d["journal_fill_bytes"]),
            _n(d["journal_fill_big_records"]),
            _n(d["journal_fill_big_bytes"]),
            _n(d["journal_boot_reads_full"]),
            _n(d["journal_boot_reads_full_big"]),
        )
    )
    w("")
    w(
        "**Uplink and collector.** %s B per record raw, %s B deflated (a stock ESP32 build cannot "
        "deflate: docs/protocol.md §3.5). Ingest with %d concurrent uploaders, %d batches of %d "
        "each: SQLite runs %s rec/s, PostgreSQL runs %s rec/s%s."
        % (
            _n(d["uplink_bytes_per_record"]),
            _n(d["uplink_bytes_per_record_deflate"]),
            d["collector_uploaders"],
            d["collector_batches_per_uploader"],
            d["collector_batch"],
            d.get("collector_sqlite_runs"),
            d.get("collector_postgres_runs", "n/a"),
            (" (PostgreSQL " + d["collector_postgres_version"] + ", fsync on)")
            if d.get("collector_postgres_version")
            else (" — " + d.get("collector_postgres_note", "skipped")),
        )
    )
    w("")
    if d.get("collector_load_run"):
        lr, sr = d["collector_load_run"], d.get("collector_slowloris_run") or {}
        missed = []
        if (lr.get("records_per_s") or 0) < 10000:
            missed.append("records/s")
        if (lr.get("p99_ms") or 0) > 250:
            missed.append("p99")
        if (sr.get("p99_ms") or 0) > 1000:
            missed.append("slowloris p99")
        w(
            "**Fleet load** (`tools/collector/load.py`, docs/scaling.md). %d simulated validators "
            "upload batches of %s records back to back for %s s into `serve --workers %d` on "
            "PostgreSQL (fsync on); clients (requests built before the clock starts), collector "
            "and database share the machine's cores. "
            "%s requests, %s records/s, p50 %s ms, p99 %s ms, lost %s, duplicated %s, collector "
            "CPU %s ms per request, statuses %s. With %s slow connections held: %s records/s, "
            "p99 %s ms. Replay of a 64 KB batch %s ms vs bad MAC %s ms. Load average at the end "
            "of the stage: %s.%s"
            % (
                lr["devices"],
                "-".join(str(x) for x in lr["batch"]),
                lr["seconds"],
                lr["workers"],
                lr["requests"],
                _n(lr["records_per_s"]),
                lr["p50_ms"],
                lr["p99_ms"],
                lr["lost"],
                lr["duplicated"],
                lr["cpu_ms_per_request"],
                lr["statuses"],
                sr.get("slow_connections"),
                _n(sr.get("records_per_s")),
                sr.get("p99_ms"),
                (d.get("collector_replay") or {}).get("replay_ms"),
                (d.get("collector_replay") or {}).get("bad_mac_ms"),
                d.get("collector_load_loadavg"),
                (
                    " Missed: %s. The machine (2 cores) was shared with 4 other engineers' "
                    "builds and tests during the run (load average above), and the load "
                    "generator itself runs on the same cores." % ", ".join(missed)
                )
                if missed
                else "",
            )
        )
        w("")
    w(
        "**Robustness.** Transaction log: a %d-step run (%d records, %d flash operations, %d "
        "sector erases, %d acks, %d reboots) cut at every program and erase, clean, as a "
        "partial prefix and as random bits, one point in %d also cut at each operation of its "
        "recovery: %d points, %d losses. Purchase: %d tearing points (card pulled before or "
        "after each of the 5 commands with nothing, another card or a reboot before the re-tap; "
        "pulled during the recovery; %d seeded random chains of up to 3 faults; %d points on %d "
        "card profile x variant combinations, pulled before and after each command and "
        "EEPROM-torn at DEBIT, applied or not): %d double "
        "charges, %d lost debits, %d phantom records, %d free rides, %d re-taps unresolved, %d "
        "simulator violations. Cross suite: %d points (power cut at every flash operation of a "
        "purchase and its recovery, each tear mode, and a second cut after each first): %d double "
        "bookings, %d lost debits, %d intents left open after their card came back."
        % (
            d["power_cut_steps"],
            d["power_cut_records"],
            d["power_cut_flash_ops"],
            d["power_cut_erases"],
            d["power_cut_acks"],
            d["power_cut_reboots"],
            d["power_cut_second_every"],
            d["power_cut_points_tested"],
            d["power_cut_losses"],
            d["tearing_points_tested"],
            res["config"]["tearing_random"],
            d.get("tearing_variant_points", 0),
            d.get("card_variants_tested", 0),
            d["tearing_double_charges"],
            d["tearing_lost_debits"],
            d["tearing_phantom_records"],
            d["tearing_free_rides"],
            d["tearing_unresolved_retaps"],
            d["tearing_sim_violations"],
            d.get("cross_points_tested", 0),
            d.get("double_bookings", 0),
            d.get("lost_debits", 0),
            d.get("cross_unresolved", 0),
        )
    )
    w("")
    _dashboard(w, d)
    from tools.board_report import section  # bench/board-results.json, when there

    out.extend(section(res))
    w("## Reproduce")
    w("")
    w("```sh")
    w("make bench                      # all of it, a few minutes on 2 cores")
    w(".venv/bin/python -m tools.benchmarks --quick --out-json /tmp/r.json --out-md ''  # seconds")
    w(
        ".venv/bin/python -m tools.benchmarks --no-pg --no-callgrind     # without "
        "PostgreSQL/valgrind"
    )
    w("```")
    w("")
    w("One part by hand (modules compiled by the run are in `bench/out/mpy`):")
    w("")
    w("```sh")
    w(
        "export MICROPYPATH=bench/out/mpy:tools/bench_mpy:tests/mpy:firmware:drivers:"
        "boards/unix_sim:boards:.venv/mplib:.frozen"
    )
    w(".venv/bin/micropython -X heapsize=256k tools/bench_mpy/tap.py 200 9")
    w(".venv/bin/micropython -X heapsize=32m tools/bench_mpy/txlog_powercut.py 1200 4")
    w(".venv/bin/micropython -X heapsize=16m tools/bench_mpy/txlog_fig.py 3000 64 256 200")
    w(
        "valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/micropython "
        "-X heapsize=256k tools/bench_mpy/tap.py 30 1 1"
    )
    w("```")
    w("")
    w(
        "The heap figures on micropython32 (`make micropython32`; the bench helpers compiled by "
        "the run are in `bench/out/mpy32`; mode 1 prints the heap maps, mode 0 is the bisection's "
        "run):"
    )
    w("")
    w("```sh")
    w("export MICROPYPATH=.frozen:tests/mpy   # app_heap and its helpers are frozen in")
    w(
        "build/micropython32/micropython32 -X heapsize=512k -m app_heap "
        "1000 20 1 /tmp/app bench/out/bundle.bin 0 | grep BENCH      # in-process parts"
    )
    w(".venv/bin/python -m tools.bench_app_world --port 0 &   # prints PORT n; one per run")
    w(
        "SIM_PORT=n build/micropython32/micropython32 -X heapsize=%sk -m app_heap "
        "1000 20 0 /tmp/app bench/out/bundle.bin 1                    # real drivers"
        % d.get("heap_min_heapsize_kb")
    )
    w("```")
    w("")
    w("## Limits")
    w("")
    w(
        "- Times are from the unix port on a shared x86-64 machine; the ESP32 figure is a model "
        "(docs/tap-model.md) whose card, PSAM, PN532 and CPU-factor terms are assumptions from "
        "public figures until measured on a board. `tools/bench_mpy/tap.py` runs unchanged on a "
        "board (copy it with benchlib.py and bench_fakes.py) to replace the CPU factor."
    )
    w(
        "- Heap figures are from micropython32 (32-bit unix port, firmware frozen): an ESP32's "
        "object sizes and code out of the heap. The ESP32 port's own heap users (the UART and "
        "socket drivers' buffers live outside the MicroPython heap there) are not modelled; the "
        "64-bit port's figure for one tap is kept as tap_alloc_bytes_64."
    )
    if d.get("modem_loop_block"):
        w(
            "- Modem loop blocking is measured through the simulated SIM7600/EC2x on the hub, "
            "on the strict ESP32 stand-in whose `UART.write()` blocks at the line rate beyond "
            'its TX buffer (docs/modem.md, "Writes"). Per dialect: '
            + "; ".join(
                "%s bring-up %d ms, POSTs %s ms" % (k, v["bringup_gap_ms"], v["post_gaps_ms"])
                for k, v in d["modem_loop_block"].items()
            )
            + "; the same POST with unpaced writes: %s ms; an idle wait on this machine: %s ms."
            % (d.get("modem_loop_block_unpaced_ms"), d.get("modem_loop_idle_gap_ms"))
        )
    else:
        w("- Modem loop blocking: %s" % d.get("modem_loop_block_note", "not measured"))
    w(
        "- The application heap runs (`tests/mpy/app_rig.py`) call the reader's `poll()` and "
        "`Validator.handle_tap` and the uplink's `sync()` directly, not the asyncio tap loop; "
        "the real-driver run's simulated buses are Python objects in the heap (counted apart, "
        "included in its figures)."
    )
    w("")
    return "\n".join(out)


def main(argv=None):
    """python -m tools.bench_report [results.json] > BENCHMARKS.md: re-render the report."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "bench/results.json"
    with open(path, encoding="utf-8") as f:
        sys.stdout.write(markdown(json.load(f)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
