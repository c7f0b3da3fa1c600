"""Plausible journal records (firmware/record.py, 64 bytes) for tests and benchmarks of the
collector: a bus with one PSAM, cards from a small pool, fares of 1 to 2 yuan."""

import random

import record

SIZE = record.SIZE
decode = record.decode
T0 = 848000000  # validator time (seconds since 2000) late 2026
PSAM = b"\x00\x00\x12\x34\x56\x78"


ISSUER = b"\x31\x04\x00\x00"


def test_key():
    """The TAC key of the synthetic cards' issuer in clearing.simulator_keys()."""
    from tools.sim import crypto

    from .clearing import IssuerKey

    return IssuerKey(crypto.TEST_ROOT_KEYS["tac"], ISSUER + bytes(4), "3des")


def purchase(
    seq,
    psam_serial=None,
    psam_tid=PSAM,
    rng=None,
    t=None,
    tac=None,
    genuine=False,
    card=None,
    atc=None,
):
    """A purchase with a random TAC, or (genuine=True) the TAC a card under the test keys
    (clearing.simulator_keys()) would give: it clears clean. card (a number, 12 digits) and atc
    default to random ones from a pool of 40 cards."""
    rng = rng or random.Random(seq)
    bal = rng.randrange(500, 20000)
    fare = rng.choice((100, 150, 200))
    card = rng.randrange(40) if card is None else card
    ratc = rng.randrange(1, 3000)
    fields = {
        "kind": record.PURCHASE,
        "card_type": 1,
        "txn_type": 9,
        "time": t if t is not None else T0 + seq * 37,
        "psam_tid": psam_tid,
        "psam_serial": psam_serial if psam_serial is not None else 1000 + seq,
        "card_no": bytes.fromhex("31040000%012d" % card),
        "issuer": ISSUER,
        "amount": fare,
        "balance_before": bal,
        "balance_after": bal - fare,
        "card_atc": ratc if atc is None else atc,
        "tac": tac if tac is not None else rng.randbytes(4),
        "route": 52,
        "stop": rng.randrange(1, 30),
        "reason": 160,  # sold at UTC+8
    }
    if genuine:
        from .clearing import tac_of

        fields["tac"] = tac_of(test_key(), dict(fields, card_no=fields["card_no"]))
    return record.encode(fields, seq)


def boot(seq, t=None, cause=0, faults=0, flags=0, pending=0):
    """A BOOT record: reset cause code and fault bits as firmware/bootmode.py codes them."""
    return record.encode(
        {
            "kind": record.BOOT,
            "time": t if t is not None else T0 + seq,
            "reason": cause,
            "balance_before": faults,
            "flags": flags,
            "amount": pending,
        },
        seq,
    )


def debit(seq, kind, card=1, atc=7, psam_serial=5000, psam_tid=PSAM, t=None, amount=200):
    """A DEBIT_INTENT, its outcome (PURCHASE, PURCHASE_RECOVERED, DEBIT_VOID) or any other kind
    for one card and card counter: what the unconfirmed-debit report pairs."""
    return record.encode(
        {
            "kind": kind,
            "card_type": 1,
            "txn_type": 6,
            "time": t if t is not None else T0 + seq * 37,
            "psam_tid": psam_tid,
            "psam_serial": psam_serial,
            "card_no": bytes.fromhex("31040000%012d" % card),
            "issuer": b"\x31\x04\x00\x00",
            "amount": amount,
            "balance_before": 5000,
            "balance_after": 5000 - amount,
            "card_atc": atc,
            "tac": b"TACX" if kind in (record.PURCHASE, record.PURCHASE_RECOVERED) else 0,
            "route": 52,
        },
        seq,
    )
