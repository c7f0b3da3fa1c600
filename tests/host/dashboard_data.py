"""A small back office for the dashboard's tests: two buses on two routes, purchases with and
without clearing exceptions, a start with a failed PSAM, an unconfirmed debit, parameters."""

import record

from tools.collector import synth
from tools.collector.app import Service, fields_of  # noqa: F401  (Service: re-exported)


def _fields(raw, exceptions=None, tac="ok"):
    f = fields_of(record.decode(raw))
    f["card_no"] = f["card_no"].hex() if f["card_no"] else None
    f["psam_tid"] = f["psam_tid"].hex() if f["psam_tid"] else None
    f.update(tac_status=tac, exceptions=exceptions)
    return f


def fill(store):
    """-> what was stored: {(device): [(seq, kind, amount, route)]}."""
    T = synth.T0
    rows = {1001: [], 1002: []}
    store.provision(1001, secret=bytes(32), name="bus 1")
    store.provision(1002, secret=bytes(range(32)), name="bus 2")
    # Bus 1, route 52 (synth's): a start with a failed PSAM, four purchases (one with a bad TAC),
    # an intent without outcome.
    b1 = [(1, synth.boot(1, t=T, cause=3, faults=0x02, flags=0x01), None, None)]
    for i, seq in enumerate(range(2, 6)):
        raw = synth.purchase(seq, t=T + 3600 * i, card=seq)
        b1.append((seq, raw, ["tac_bad"] if seq == 3 else None, "bad" if seq == 3 else "ok"))
    b1.append((6, synth.debit(6, record.DEBIT_INTENT, card=7, atc=70, t=T + 9000), None, None))
    # Bus 2, route 88: three purchases on the next day (one sold on an unset clock).
    b2 = []
    for seq in (1, 2, 3):
        d = record.decode(synth.purchase(seq, t=T + 86400 + seq * 60, card=20 + seq))
        d.update(route=88, card_type=2 if seq == 2 else 1, psam_tid=bytes.fromhex("0000000000ab"))
        if seq == 3:
            d["flags"] = record.FLAG_CLOCK_UNSET
        b2.append((seq, record.encode(d, seq), ["clock_unset"] if seq == 3 else None, "ok"))
    for dev, batch in ((1001, b1), (1002, b2)):
        store.ingest(
            dev,
            1,
            0,
            batch[0][0],
            [(seq, raw, _fields(raw, exc, tac)) for seq, raw, exc, tac in batch],
        )
        for seq, raw, _exc, _tac in batch:
            d = record.decode(raw)
            rows[dev].append((seq, d["kind"], d["amount"], d["route"]))
    return rows
