"""Fuzz targets: each module has NAME, SEEDS (honest inputs, written to the corpus by
`python -m tools.fuzz.run --seed-corpus`) and one_input(data) that raises shim.Escape (or any
undocumented exception) when an invariant of docs/robustness.md breaks."""

NAMES = (
    "purchase",
    "tunion",
    "pn532",
    "isodep",
    "rc522",
    "psam",
    "atmodem",
    "bundle",
    "params",
    "chunkdl",
    "signed",
    "txlog",
    "uplink",
    "collector",
)

# Harness modules a target imports that are not under test (simulators, fakes): the worker
# imports them before atheris instruments imports, so their lines cost no coverage callbacks
# and the coverage figures count the code under test only.
HARNESS = {
    "rc522": ("tools.sim.picc", "tools.sim.rc522"),
    "chunkdl": ("p256",),  # fuzzed by the `signed` target; 6 ms per verification here
}
