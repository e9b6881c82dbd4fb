"""The store methods delivery adds: in-order claims and bulk redelivery of failed rows."""

from __future__ import annotations

from datetime import timedelta

from notify_helpers import START, notify_orders, outbox_rows

from orderwatch.store.base import OrderFilter, OutboxResult
from orderwatch.store.sql import SqlStore

LATER = START + timedelta(minutes=5)


async def claim(store: SqlStore, *, limit: int = 100, lease: float = 60) -> list[str]:
    rows = await store.claim_outbox_ordered(now=LATER, real_now=LATER, limit=limit, lease=lease)
    return [f"{r.order_no}:{r.event_type}" for r in rows]


async def test_only_the_oldest_pending_notification_of_an_order_is_claimed(
    store: SqlStore,
) -> None:
    await notify_orders(store, ["A", "B"], ["order.shipped", "order.succeeded"])
    assert sorted(await claim(store)) == ["A:order.shipped", "B:order.shipped"]
    # leased heads still hold their orders' queues
    assert await claim(store) == []


async def test_the_next_one_follows_when_the_head_is_done_or_failed(store: SqlStore) -> None:
    await notify_orders(store, ["A", "B", "C"], ["order.shipped", "order.failed"])
    rows = await store.claim_outbox_ordered(now=LATER, real_now=LATER, limit=10, lease=60)
    by_order = {r.order_no: r for r in rows}
    a, b, c = by_order["A"], by_order["B"], by_order["C"]
    assert a.lease_token
    assert b.lease_token
    assert c.lease_token
    await store.finish_outbox(
        [
            OutboxResult(a.id, a.lease_token, "delivered", 1, None, None, LATER),
            OutboxResult(b.id, b.lease_token, "failed", 1, None, "HTTP 410", None),
            # C backs off: its final notice must wait for it
            OutboxResult(c.id, c.lease_token, "pending", 1, LATER + timedelta(hours=1), "x", None),
        ]
    )
    assert sorted(await claim(store)) == ["A:order.failed", "B:order.failed"]


async def test_earliest_due_first_and_limit(store: SqlStore) -> None:
    await notify_orders(store, [f"N{i}" for i in range(5)], ["order.succeeded"])
    assert len(await claim(store, limit=2)) == 2
    assert len(await claim(store, limit=10)) == 3


async def test_expired_lease_is_claimed_again(store: SqlStore) -> None:
    await notify_orders(store, ["A"], ["order.succeeded"])
    (first,) = await store.claim_outbox_ordered(now=LATER, real_now=LATER, limit=5, lease=1)
    later = LATER + timedelta(seconds=2)
    (again,) = await store.claim_outbox_ordered(now=later, real_now=later, limit=5, lease=60)
    assert again.id == first.id
    assert again.lease_token != first.lease_token


async def test_redeliver_failed_by_filter(store: SqlStore) -> None:
    await notify_orders(store, ["A", "B"], ["order.failed"])
    rows = await store.claim_outbox_ordered(now=LATER, real_now=LATER, limit=5, lease=60)
    await store.finish_outbox(
        [OutboxResult(r.id, r.lease_token or "", "failed", 3, None, "HTTP 410", None) for r in rows]
    )
    assert await store.redeliver_failed(OrderFilter(vendor="nobody"), now=LATER) == (0, 0)
    assert await store.redeliver_failed(OrderFilter(), now=LATER, dry_run=True) == (2, 0)
    assert {r.state for r in await outbox_rows(store)} == {"failed"}
    assert await store.redeliver_failed(OrderFilter(status="FAILED"), now=LATER) == (2, 2)
    rows = await outbox_rows(store)
    assert {(r.state, r.next_attempt_at, r.lease_token) for r in rows} == {("pending", LATER, None)}
    assert sorted(await claim(store)) == ["A:order.failed", "B:order.failed"]
