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
    "http",
    "uplink",
    "collector",
)

# Modules under firmware/, drivers/ or tools/ that a target imports but does not test: the
# worker leaves them uninstrumented (with everything from the standard library, installed
# packages, tools/sim, tests/ and boards/: tools/fuzz/worker.py harness()).
HARNESS = {
    "chunkdl": ("p256",),  # fuzzed by the `signed` target; 6 ms per verification here
}
