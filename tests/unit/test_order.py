"""evolve is dataclasses.replace, faster: same result, input untouched, unknown fields refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.orders import make_order

from orderwatch.order import Order, evolve
from orderwatch.statuses import Reason, Status

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)

changes = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(list(Status)),
        "reason": st.none() | st.sampled_from(list(Reason)),
        "description": st.none() | st.text(max_size=20),
        "queries": st.integers(0, 100),
        "abnormal": st.integers(0, 100),
        "next_run_at": st.none() | st.integers(0, 10**6).map(lambda s: T0 + timedelta(seconds=s)),
        "updated_at": st.integers(0, 10**6).map(lambda s: T0 + timedelta(seconds=s)),
        "logistics": st.none() | st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
        "lease_token": st.none() | st.text(max_size=12),
    },
)


@given(changes)
def test_evolve_is_dataclasses_replace(change: dict[str, Any]) -> None:
    order = make_order(Status.ORDERED, logistics={"carrier": "SF"})
    before = dataclasses.astuple(order)
    after = evolve(order, **change)
    assert after == dataclasses.replace(order, **change)
    assert type(after) is Order
    assert dataclasses.astuple(order) == before  # the input is left as it was
    after_twice = evolve(after, queries=after.queries + 1)
    assert after_twice.queries == after.queries + 1
    assert after.queries == change.get("queries", order.queries)


def test_evolve_refuses_a_field_an_order_does_not_have() -> None:
    order = make_order()
    with pytest.raises(TypeError, match="'stauts'"):
        evolve(order, stauts=Status.FAILED)
