"""The back office collector: takes validator batches, stores each record exactly once, serves
parameter bundles and the time. See docs/protocol.md for the wire format.

The collector shares `firmware/uplink_proto.py` (and `firmware/record.py` once it exists) with
the validator, so `firmware/` goes on `sys.path` here.
"""

import sys
from pathlib import Path

_FIRMWARE = str(Path(__file__).resolve().parents[2] / "firmware")
if _FIRMWARE not in sys.path:
    sys.path.append(_FIRMWARE)
