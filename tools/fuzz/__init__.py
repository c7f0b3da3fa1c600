"""Coverage-guided fuzzing (issue 26) with atheris: one target module per parser under
tools/fuzz/targets/, a CPython shim for the MicroPython-only names the firmware and drivers use
(tools/fuzz/shim.py), a seed corpus and regression inputs per target under tools/fuzz/corpus/,
and the runner (python -m tools.fuzz.run) that `make fuzz` calls. docs/robustness.md."""
