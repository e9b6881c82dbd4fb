"""How the SQLite write-back splits a batch: a few statement texts, every row once, in order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orderwatch.store.sql import _cacheable_chunks


@given(st.lists(st.integers(), max_size=1200))
def test_chunks_keep_every_item_in_order_in_power_of_two_sizes(items: list[int]) -> None:
    chunks = [list(c) for c in _cacheable_chunks(items)]
    assert [x for c in chunks for x in c] == items
    sizes = [len(c) for c in chunks]
    assert all(s & (s - 1) == 0 and 0 < s <= 256 for s in sizes)  # nine possible texts
    assert sizes == sorted(sizes, reverse=True)
    # at most one chunk of each size below the cap: few statements per write-back
    below_cap = [s for s in sizes if s < 256]
    assert len(below_cap) == len(set(below_cap))


def test_a_batch_of_45_takes_four_statements() -> None:
    assert [len(c) for c in _cacheable_chunks(list(range(45)))] == [32, 8, 4, 1]
