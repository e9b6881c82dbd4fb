"""The SQLite write-back's rows are made directly, in the statements' column order: the
same values, in the same places, as the column-keyed dicts the other databases bind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from tests.support.orders import make_order

from orderwatch import jsontext
from orderwatch.lifecycle import Event
from orderwatch.statuses import Reason, Status
from orderwatch.store.base import OutboxItem
from orderwatch.store.hot import (
    _EVENT_COLUMNS,
    OUTBOX_COLUMNS,
    WRITE_COLUMNS,
    HotPath,
    _insert_rows,
    event_fields,
    order_fields,
    outbox_fields,
)
from orderwatch.store.schema import ORDER_COLUMNS

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
times = st.integers(0, 10**7).map(lambda s: T0 + timedelta(seconds=s, microseconds=s % 997))

orders = st.builds(
    make_order,
    st.sampled_from(list(Status)),
    reason=st.none() | st.sampled_from(list(Reason)),
    description=st.none() | st.text(max_size=20),
    vendor_order_id=st.none() | st.text(max_size=10),
    vendor_status=st.none() | st.text(max_size=10),
    logistics=st.none() | st.dictionaries(st.text(max_size=5), st.integers() | st.text()),
    queries=st.integers(0, 50),
    abnormal=st.integers(0, 50),
    takeovers=st.integers(0, 5),
    placements=st.integers(0, 3),
    unknown_streak=st.integers(0, 5),
    next_run_at=st.none() | times,
    started_at=times,
    placed_at=st.none() | times,
    updated_at=times,
)


@given(orders, st.booleans())
def test_a_write_row_holds_each_column_its_own_value(order: Any, release: bool) -> None:
    hot = HotPath("sqlite")
    t = hot.time_in
    expected = {
        "status": order.status.value,
        "reason": order.reason.value if order.reason else None,
        "description": order.description,
        "vendor_order_id": order.vendor_order_id,
        "vendor_status": order.vendor_status,
        "logistics": None if order.logistics is None else jsontext.dumps(order.logistics),
        "queries": order.queries,
        "abnormal": order.abnormal,
        "takeovers": order.takeovers,
        "placements": order.placements,
        "unknown_streak": order.unknown_streak,
        "next_run_at": t(order.next_run_at),
        "started_at": t(order.started_at),
        "placed_at": t(order.placed_at),
        "updated_at": t(order.updated_at),
    }
    row = hot.write_row(order, release)
    assert row == (order.id, int(release), *(expected[c] for c in WRITE_COLUMNS))
    assert order_fields(order, "token", t) == {"b_id": order.id, "b_token": "token", **expected}


def test_event_and_outbox_fields_come_in_column_order() -> None:
    """So that the multi-row INSERTs take their values as they come (the fast path)."""
    order = make_order(Status.FAILED, reason=Reason.MAX_POLLS_EXCEEDED)
    event = Event(kind="failed", at=T0, from_status=Status.ORDERED, to_status=Status.FAILED)
    assert tuple(event_fields(order.id, event)) == _EVENT_COLUMNS
    note = OutboxItem("order.failed", "{}")
    assert tuple(outbox_fields(order, note)) == OUTBOX_COLUMNS


def test_rows_keyed_in_another_order_are_bound_by_column() -> None:
    rows = [{"b": 2, "a": 1}, {"b": 4, "a": 3}]
    sql, params = _insert_rows("t", ("a", "b"), rows)
    assert sql == "INSERT OR FAIL INTO t (a, b) VALUES (?, ?), (?, ?)"
    assert params == [1, 2, 3, 4]
    in_order = [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    assert _insert_rows("t", ("a", "b"), in_order) == (sql, params)


def test_a_claimed_row_is_read_back_column_by_column() -> None:
    # every column its own value, as the claim returns it (SQLite: times as naive UTC text)
    values: dict[str, Any] = {
        "id": 7,
        "order_no": "R-7",
        "vendor": "acme",
        "customer_id": "C-9",
        "sku": "SKU-1",
        "quantity": 2,
        "points": 1500,
        "recipient": '{"name":"张三","phone":"13800000000","address":"北京"}',
        "payment_status": "PAID",
        "request_hash": "h" * 64,
        "status": "ORDERED",
        "reason": "VENDOR_FAILED",
        "description": "运输中",
        "vendor_order_id": "V-7",
        "vendor_status": "SHIPPED",
        "logistics": '{"carrier":"SF","n":123456789012345678901234567890}',
        "queries": 3,
        "abnormal": 4,
        "takeovers": 5,
        "placements": 1,
        "unknown_streak": 6,
        "next_run_at": "2026-11-26 08:00:01.000001",
        "started_at": "2026-11-26 08:00:02.000002",
        "placed_at": "2026-11-26 08:00:03.000003",
        "created_at": "2026-11-26 08:00:04.000004",
        "updated_at": "2026-11-26 08:00:05.000005",
        "locked_by": "w1",
        "locked_until": "2026-11-26 08:00:06.000006",
        "lease_token": "tok",
    }
    assert tuple(values) == ORDER_COLUMNS
    hot = HotPath("sqlite")
    order = hot.order(list(values.values()))
    assert (order.id, order.order_no, order.vendor, order.customer_id) == (7, "R-7", "acme", "C-9")
    assert (order.sku, order.quantity, order.points, order.payment_status) == (
        "SKU-1",
        2,
        1500,
        "PAID",
    )
    assert (order.recipient.name, order.recipient.phone, order.recipient.address) == (
        "张三",
        "13800000000",
        "北京",
    )
    assert (order.status, order.reason) == (Status.ORDERED, Reason.VENDOR_FAILED)
    assert (order.description, order.vendor_order_id, order.vendor_status) == (
        "运输中",
        "V-7",
        "SHIPPED",
    )
    # an integer beyond 64 bits in a vendor's logistics stays exact
    assert order.logistics == {"carrier": "SF", "n": 123456789012345678901234567890}
    assert (order.queries, order.abnormal, order.takeovers) == (3, 4, 5)
    assert (order.placements, order.unknown_streak) == (1, 6)
    times_read = (
        order.next_run_at,
        order.started_at,
        order.placed_at,
        order.created_at,
        order.updated_at,
        order.locked_until,
    )
    assert times_read == tuple(T0 + timedelta(seconds=n, microseconds=n) for n in range(1, 7))
    assert order.lease_token == "tok"
    # claimed: the claim's token, and a lease never released counts a takeover
    taken = hot.order(list(values.values()), lease="new")
    assert (taken.lease_token, taken.takeovers) == ("new", 6)
