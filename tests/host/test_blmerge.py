"""firmware/blmerge.py under CPython: a merged delta gives byte for byte the list
`cardlists.build_blacklist` makes of the result (lists that grow across a bucket-count change,
shrink to nothing, carry an overlay), and every misfit is refused before anything is written."""

import random

import blmerge
import bundle
import cardlists as cl
import pytest

from tests.host.test_params_host import MemSlot


def slot_with(data):
    s = MemSlot(len(data) // 4096 + 4)
    s.data[: len(data)] = data
    return s


def merge(base, adds, removes, ov=(), result=None, blocks=None):
    old = slot_with(cl.blacklist_bytes(base))
    if result is None:
        eff = set(base)
        for key, op in ov:
            (eff.add if op else eff.discard)(key)
        result = blmerge.result_digest((eff - set(removes)) | set(adds))
    body = bundle.build(b"k" * 16, 5, 0, None, None, (4, adds, removes, result))
    src = bundle.open_bytes(body)
    info = bundle.delta_info(src, bundle.file_header(src, len(body)))
    new = MemSlot(blocks or 64)
    ops = sorted((cl.mix(k), op) for k, op in ov)
    n, size = blmerge.apply(old, ops, src, info[3], info[1], info[2], info[4], new, new.blocks)
    return n, bytes(new.data[:size])


@pytest.mark.parametrize(
    "n_base,n_add,n_rem", [(3000, 900, 300), (700, 700, 0), (900, 0, 900), (5000, 4000, 10)]
)
def test_merge_equals_the_host_builder(n_base, n_add, n_rem):
    rng = random.Random(n_base + n_add)
    base = sorted(set(rng.randrange(10**18, 10**19) for _ in range(n_base)))
    removes = rng.sample(base, n_rem)
    held = set(base)
    adds = sorted(set(c for c in (rng.randrange(10**19) for _ in range(n_add)) if c not in held))
    result = sorted((held - set(removes)) | set(adds))
    n, data = merge(base, adds, removes)
    assert n == len(result)
    assert data == cl.blacklist_bytes(result)
    bl = cl.Blacklist(slot_with(data))
    assert all(bl.contains(c) for c in adds[:50]) and not any(bl.contains(c) for c in removes[:50])


def test_overlay_in_force_is_part_of_the_base():
    base = list(range(10**18, 10**18 + 2000, 3))
    ov = [(7, 1), (base[5], 0)]
    adds = [10**18 + 1]
    removes = [base[6]]
    n, data = merge(base, adds, removes, ov)
    want = (set(base) | {7}) - {base[5], base[6]} | {10**18 + 1}
    assert data == cl.blacklist_bytes(sorted(want))


@pytest.mark.parametrize(
    "case,why",
    [
        ("digest", "signed digest"),
        ("count", "the delta says"),
        ("add_listed", "holds already"),
        ("remove_unlisted", "does not hold"),
        ("small_slot", "the slot has"),
    ],
)
def test_misfits_are_refused(case, why):
    base = list(range(10**18, 10**18 + 3000, 2))
    adds = [10**18 + 1, 10**18 + 3]
    removes = [base[10]]
    result = blmerge.result_digest((set(base) - set(removes)) | set(adds))
    kw = {}
    if case == "digest":
        kw["result"] = (result[0], bytes(32))
    elif case == "count":
        kw["result"] = (result[0] + 1, result[1])
    elif case == "add_listed":
        adds = adds + [base[3]]
    elif case == "remove_unlisted":
        removes = removes + [10**18 + 5]
    elif case == "small_slot":
        kw["blocks"] = 2
    with pytest.raises(cl.ListError, match=why):
        merge(base, adds, removes, **kw)


def test_delta_out_of_hash_order_is_refused():
    adds = sorted([10**18 + 1, 10**18 + 3, 10**18 + 7], key=cl.mix, reverse=True)
    # the builder sorts by hash: cards in the wrong order, as a hand-made delta might hold them
    raw = b"".join(c.to_bytes(8, "big") for c in adds)
    stream = bundle.open_bytes(raw)
    cards = blmerge.Cards(stream, 0, len(adds), "adds")
    with pytest.raises(cl.ListError, match="ascending hash order"):
        while cards.next() is not None:
            pass
