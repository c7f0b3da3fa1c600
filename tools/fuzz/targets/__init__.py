"""Fuzz targets: each module has NAME, SEEDS (honest inputs, written to the corpus by
`python -m tools.fuzz.run --seed-corpus`) and one_input(data) that raises shim.Escape (or any
undocumented exception) when an invariant of docs/robustness.md breaks."""

NAMES = (
    "purchase",
    "tunion",
    "pn532",
    "isodep",
    "psam",
    "atmodem",
    "bundle",
    "txlog",
    "uplink",
    "collector",
)
