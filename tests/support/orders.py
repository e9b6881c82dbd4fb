"""Orders for tests: a new one as intake takes it, and one as the store hands it to the
engine (for tests that need one without a store)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from orderwatch.order import NewOrder, Order, Recipient
from orderwatch.statuses import Status

T0 = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


def new_order(order_no: str, **changes: Any) -> NewOrder:
    """A valid paid order for vendor ``acme``; ``changes`` replace any field."""
    base = NewOrder(
        order_no=order_no,
        vendor="acme",
        sku="SKU-1001",
        quantity=1,
        points=12000,
        recipient=Recipient("张三", "13800000000", "上海市浦东新区世纪大道100号"),
        payment_status="PAID",
        customer_id="C0001",
    )
    return replace(base, **changes)


def make_order(status: Status = Status.PENDING, **changes: Any) -> Order:
    """An order created at ``T0`` in ``status``; ``changes`` replace any field."""
    order = Order(
        id=1,
        order_no="R20261126000001",
        vendor="acme",
        sku="SKU-1001",
        quantity=1,
        points=12000,
        recipient=Recipient("张三", "13800000000", "上海市浦东新区世纪大道1号"),
        payment_status="PAID",
        customer_id="C0001",
        status=status,
        reason=None,
        description=None,
        vendor_order_id=None,
        vendor_status=None,
        logistics=None,
        queries=0,
        abnormal=0,
        takeovers=0,
        placements=0 if status is Status.PENDING else 1,
        unknown_streak=0,
        next_run_at=T0,
        started_at=T0,
        placed_at=T0 if status is Status.ORDERED else None,
        created_at=T0,
        updated_at=T0,
    )
    if status is Status.ORDERED:
        order = replace(order, vendor_order_id="V-1")
    return replace(order, **changes)
