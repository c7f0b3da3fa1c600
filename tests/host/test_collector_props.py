"""Exactly-once as a property: any order, repetition and overlap of batches stores the union of
their records once each, and the acknowledgement is the contiguous prefix (in-memory SQLite)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tools.collector import synth
from tools.collector.db import Store

batches = st.lists(
    st.tuples(st.integers(1, 40), st.integers(0, 12)).map(lambda t: (t[0], t[0] + t[1])),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(batches, st.data())
def test_any_batches_store_the_union_once_and_ack_the_prefix(spans, data):
    s = Store("sqlite:///:memory:")
    s.provision(1, b"k" * 16)
    union = set()
    for counter, (lo, hi) in enumerate(spans, start=1):
        rows = [(q, synth.purchase(q), {}) for q in range(lo, hi + 1)]
        res = s.ingest(1, counter, 0, lo, rows)
        union.update(range(lo, hi + 1))
        prefix = 0
        while prefix + 1 in union:
            prefix += 1
        assert res["contig"] == prefix
        assert res["stored"] + res["duplicates"] == len(rows)
    assert s.seqs(1) == sorted(union)
    # Replaying any earlier batch with a fresh counter changes nothing.
    lo, hi = data.draw(st.sampled_from(spans))
    res = s.ingest(
        1, len(spans) + 1, 0, lo, [(q, synth.purchase(q), {}) for q in range(lo, hi + 1)]
    )
    assert res["stored"] == 0 and s.seqs(1) == sorted(union)
    s.close()
