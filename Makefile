# The validator's build, test and device targets. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
BOARD ?= unix_sim
PORT ?= /dev/ttyUSB0
BAUD ?= 460800
MPY_CROSS_FLAGS ?=
comma := ,
# Twice the cores: most tests wait on a simulator process or a socket, not on the CPU.
# make fuzz: seconds of atheris per target (tools/fuzz, two targets at a time); bench/fuzz.json.
# 150 s x 15 targets / 2 jobs: 8 rounds, about 21 min (bounded: the load changes inputs, not time).
FUZZ_SECONDS ?= 150
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 2 )))

.PHONY: help setup test test-under-load lint firmware micropython32 deploy backup flash board-check board-test board-bench board-calibrate architecture wiring sim bench fuzz fuzz-long clean
BOARDS := $(filter-out micropython,$(notdir $(patsubst %/,%,$(wildcard boards/*/))))

help:
	@echo "make sim                  run the simulated bench end to end (collector, simulators, firmware)"
	@echo "make sim SCENARIO=f.toml  another scenario (tools/scenarios/, format in docs/scenarios.md)"
	@echo "make sim SERVE=1          then serve the run's dashboard (docs/dashboard.md) until Ctrl-C"
	@echo "make sim SIM_LANG=zh      the operator's lines in Chinese (运营说明中文)"
	@echo "make test                 lint + every test (CPython, MicroPython unix port, mpy-cross)"
	@echo "make test-under-load      make test beside 2 CPU hogs and an I/O hog (stress-ng)"
	@echo "make setup                create $(VENV) with the pinned tools (run implicitly)"
	@echo "make lint                 ruff over the whole tree"
	@echo "make firmware BOARD=b     compile firmware, drivers and board files to build/b/*.mpy"
	@echo "                          boards: $(BOARDS)"
	@echo "make micropython32        32-bit unix MicroPython with the application frozen in"
	@echo "                          (build/micropython32/; MICROPY_SRC=path to a v1.27 source)"
	@echo "make deploy BOARD=b PORT=p  copy build/b to a board with mpremote (again and again)"
	@echo "make backup PORT=p        copy a board's transaction log, config.json and /data to backup/"
	@echo "make board-check PORT=p   self-test a wired board: reader, PSAM, RTC, modem, display, card"
	@echo "make board-test PORT=p    run the hardware-independent MicroPython tests on the board"
	@echo "make board-bench PORT=p TEST_CARD=1 [N=10]  time real taps (test card, test PSAM)"
	@echo "make board-calibrate      the tap model's parameters from bench/board-results.json"
	@echo "make architecture         redraw docs/architecture.svg (packages by layer) and check imports"
	@echo "make wiring               redraw docs/bench-setup.md's wiring tables and docs/wiring/*.svg"
	@echo "make flash PORT=p FIRMWARE=f.bin  ERASE the board and write MicroPython; backs up first"
	@echo "                          and asks (FORCE=1: no backup, no question, for a blank board)"
	@echo "make bench                benchmarks -> bench/results.json and BENCHMARKS.md"
	@echo "make bench STAGE=tap,app  only those stages; the other figures kept from the last run"
	@echo "make fuzz                 coverage-guided fuzzing, every target FUZZ_SECONDS (~21 min)"
	@echo "make fuzz-long            the seeded fuzz tests at 20 times their counts (unbounded)"
	@echo "make clean                remove build/, bench/out and pytest's cache (never backup/)"

# Re-runs only when the pins change; a second `make setup` is a no-op.
$(STAMP): requirements.txt requirements.lock tools/mplib_fetch.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Debian: apt-get install python3 python3-venv)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt -c requirements.lock
	$(BIN)/python tools/mplib_fetch.py $(VENV)/mplib
	touch $(STAMP)

# The repository on the venv's path, so `.venv/bin/python -m tools.<tool>` works from any folder.
PTH_STAMP := $(VENV)/.path-stamp
$(PTH_STAMP): $(STAMP)
	echo "$(CURDIR)" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tunion-validator.pth"
	touch $@

setup: $(PTH_STAMP)

lint: $(PTH_STAMP)
	$(BIN)/ruff check .

# pytest-xdist over every core; a file's tests stay on one worker (one MicroPython process runs a
# whole tests/mpy file), except the files tests/conftest.py spreads test by test.
test: $(PTH_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The same tests beside two CPU hogs and an I/O hog (stress-ng): nothing may depend on an idle machine.
test-under-load: $(PTH_STAMP)
	tools/test_under_load.sh

firmware: $(PTH_STAMP)
	$(if $(filter command line environment,$(origin BOARD)),,@echo "BOARD not given: building unix_sim, the laptop simulation (boards: $(BOARDS))")
	$(BIN)/python -m tools.build_firmware --board $(BOARD) --out build/$(BOARD) $(MPY_CROSS_FLAGS)

# Rebuilds only when what it freezes changes (content hash; tools/build_micropython32.py).
micropython32: $(PTH_STAMP)
	$(BIN)/python -m tools.build_micropython32 $(if $(MICROPY_SRC),--src "$(MICROPY_SRC)",)

# mpremote: `fs cp -r DIR/. :` would nest; copy the build tree's contents into the device root.
# /lib is made only where missing, so a second deploy (or one after `mpremote mip install`) works.
deploy: firmware
	@test -d boards/$(BOARD) || { echo "unknown board $(BOARD) (boards: $(BOARDS))"; exit 1; }
	cd build/$(BOARD) && ../../$(BIN)/mpremote connect $(PORT) exec "import os; 'lib' in os.listdir('/') or os.mkdir('/lib')" + fs cp -r lib/. :lib/ + fs cp boot.py main.py board.py : + soft-reset

backup: $(PTH_STAMP)
	$(BIN)/python -m tools.device_backup --port $(PORT)

# Read-only self-test of a wired board (tools/board/selftest.py over mpremote): one line per part.
board-check: $(PTH_STAMP)
	$(BIN)/python -m tools.board_check --port $(PORT)

# The hardware-independent tests/mpy files on a deployed board, per test function (FILES=a.py b.py).
board-test: $(PTH_STAMP)
	$(BIN)/python -m tools.board_test --port $(PORT) $(foreach f,$(FILES),--file $(f))

# Real taps timed on a board (tools/board/tapbench.py): it DEBITS the card, hence TEST_CARD=1.
board-bench: $(PTH_STAMP)
	$(BIN)/python -m tools.board_bench --port $(PORT) $(if $(filter 1,$(TEST_CARD)),--test-card,) $(if $(N),--n $(N),) $(if $(FARE),--fare $(FARE),)

# The tap model's parameters from a board's timings (tools/board_calibrate.py; docs/bench-setup.md).
board-calibrate: $(PTH_STAMP)
	$(BIN)/python -m tools.board_calibrate --write bench/board-calibration.json

# docs/architecture.svg: the firmware's packages by layer (tools/layers.py), and the import check.
architecture: $(PTH_STAMP)
	$(BIN)/python -m tools.layers --svg docs/architecture.svg

# docs/bench-setup.md's wiring tables and docs/wiring/*.svg, from the boards' pin maps.
wiring: $(PTH_STAMP)
	$(BIN)/python -m tools.board_wiring

# erase-flash wipes the transaction log (fares not yet uploaded), the configuration and the
# parameters: copy them first and ask, unless FORCE=1 says the board holds nothing to keep.
flash: $(PTH_STAMP)
	@test -n "$(FIRMWARE)" || { echo "give FIRMWARE=path/to/ESP32_GENERIC-*.bin"; exit 1; }
	@if [ "$(FORCE)" != 1 ]; then \
	  echo "make flash ERASES $(PORT): the transaction log (fares not yet uploaded), config.json and the parameters."; \
	  $(BIN)/python -m tools.device_backup --port $(PORT) || { \
	    echo "backup failed, nothing erased. For a blank board: make flash FORCE=1 PORT=$(PORT) FIRMWARE=$(FIRMWARE)"; exit 1; }; \
	  read -r -p "Type ERASE to erase $(PORT) and write $(FIRMWARE): " answer; \
	  [ "$$answer" = ERASE ] || { echo "not erased"; exit 1; }; \
	fi
	$(BIN)/esptool --chip esp32 --port $(PORT) erase-flash
	$(BIN)/esptool --chip esp32 --port $(PORT) --baud $(BAUD) write-flash -z 0x1000 $(FIRMWARE)

sim: $(PTH_STAMP)
	$(BIN)/python -m tools.simbench $(if $(SCENARIO),--scenario $(SCENARIO),) $(if $(SERVE),--serve,) $(if $(SIM_LANG),--lang $(SIM_LANG),)

bench: $(PTH_STAMP)
	$(BIN)/python -m tools.benchmarks $(foreach s,$(subst $(comma), ,$(STAGE)),--stage $(s))

# Bounded: the seeded long mode (fuzz-long) took more than 25 min by itself on the shared
# machine (2026-12-05, load 13-16), so it is a target of its own.
fuzz: $(PTH_STAMP)
	$(BIN)/python -m tools.fuzz.run --seconds $(FUZZ_SECONDS) --since $$(date +%s)

fuzz-long: $(PTH_STAMP)
	FUZZ_LONG=1 $(BIN)/python -m pytest -m fuzz tests

clean:
	rm -rf build bench/out .pytest_cache
