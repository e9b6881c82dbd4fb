"""Operator actions as pure transitions (DESIGN §7): what each allows, refuses and records."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from orderwatch.lifecycle import ActionRefused, cancel, payment, resolve, retry
from orderwatch.order import Order, Recipient
from orderwatch.statuses import Reason, Status

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(days=2)


def order(status: Status = Status.FAILED, reason: Reason | None = None, **kw: object) -> Order:
    base = Order(
        id=1,
        order_no="R1",
        vendor="acme",
        sku="S",
        quantity=1,
        points=10,
        recipient=Recipient("张三", "13800000000", "上海"),
        payment_status="PAID",
        customer_id=None,
        status=status,
        reason=reason,
        description="x",
        vendor_order_id="V1",
        vendor_status="SHIPPED",
        logistics=None,
        queries=30,
        abnormal=4,
        takeovers=1,
        placements=1,
        unknown_streak=2,
        next_run_at=None if status.is_final else EARLIER,
        started_at=EARLIER,
        placed_at=EARLIER,
        created_at=EARLIER,
        updated_at=EARLIER,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("reason", [Reason.UNPAID, Reason.CANCELLED, Reason.PLACE_UNREACHABLE])
def test_retry_places_again_with_the_same_order_no(reason: Reason) -> None:
    t, mode = retry(order(reason=reason), NOW, actor="ops-li", note="customer paid")
    assert mode == "place"
    assert (t.order.status, t.order.reason, t.order.next_run_at) == (Status.PENDING, None, NOW)
    assert t.order.order_no == "R1"
    assert t.notify == "order.reopened"
    (ev,) = t.events
    assert (ev.kind, ev.actor, ev.detail and ev.detail["mode"]) == ("retried", "ops-li", "place")


@pytest.mark.parametrize(
    "reason",
    [
        Reason.VENDOR_FAILED,
        Reason.NOT_FOUND_AT_VENDOR,
        Reason.MAX_POLLS_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        Reason.INVALID_STATE,
    ],
)
def test_retry_polls_again_with_fresh_counters(reason: Reason) -> None:
    t, mode = retry(order(reason=reason), NOW, actor="ops", note=None)
    assert mode == "poll"
    o = t.order
    assert (o.status, o.queries, o.abnormal, o.unknown_streak) == (Status.ORDERED, 0, 0, 0)
    assert o.started_at == NOW  # deadline counts again from the retry
    assert o.placements == 1  # a poll retry never places


def test_retry_of_an_order_never_placed_places_it() -> None:
    t, mode = retry(order(reason=Reason.INVALID_STATE, placements=0), NOW, actor="ops")
    assert (mode, t.order.status) == ("place", Status.PENDING)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (Status.FAILED, Reason.PLACE_REJECTED),
        (Status.FAILED, Reason.RESOLVED_BY_OPERATOR),
        (Status.SUCCEEDED, None),
        (Status.ORDERED, None),
        (Status.PENDING, None),
    ],
)
def test_retry_refused(status: Status, reason: Reason | None) -> None:
    with pytest.raises(ActionRefused):
        retry(order(status, reason, vendor_status="E101"), NOW, actor="ops")


@pytest.mark.parametrize("status", [Status.PENDING, Status.ORDERED, Status.SENT])
def test_resolve_closes_an_open_order_with_the_note(status: Status) -> None:
    t = resolve(
        order(status),
        status=Status.FAILED,
        note="vendor confirmed lost parcel",
        now=NOW,
        actor="ops-wang",
        request_in_flight=False,
    )
    assert (t.order.status, t.order.reason) == (Status.FAILED, Reason.RESOLVED_BY_OPERATOR)
    assert t.order.description == "vendor confirmed lost parcel"
    assert t.order.next_run_at is None
    assert t.notify == "order.failed"
    assert (t.events[-1].kind, t.events[-1].actor) == ("resolved", "ops-wang")
    ok = resolve(
        order(status),
        status=Status.SUCCEEDED,
        note="signed for at the desk",
        now=NOW,
        actor="ops",
        request_in_flight=False,
    )
    assert (ok.order.status, ok.order.reason, ok.notify) == (
        Status.SUCCEEDED,
        None,
        "order.succeeded",
    )


def test_resolve_refused_while_place_order_is_in_flight_or_final_or_without_note() -> None:
    with pytest.raises(ActionRefused, match="in flight"):
        resolve(
            order(Status.SENT),
            status=Status.FAILED,
            note="n",
            now=NOW,
            actor="o",
            request_in_flight=True,
        )
    with pytest.raises(ActionRefused, match="already final"):
        resolve(
            order(Status.SUCCEEDED),
            status=Status.FAILED,
            note="n",
            now=NOW,
            actor="o",
            request_in_flight=False,
        )
    with pytest.raises(ActionRefused, match="note"):
        resolve(
            order(Status.ORDERED),
            status=Status.FAILED,
            note="  ",
            now=NOW,
            actor="o",
            request_in_flight=False,
        )


def test_cancel_only_before_placing() -> None:
    t = cancel(order(Status.PENDING), now=NOW, actor="ops")
    assert (t.order.status, t.order.reason, t.notify) == (
        Status.FAILED,
        Reason.CANCELLED,
        "order.failed",
    )
    for status in (Status.SENT, Status.ORDERED, Status.SUCCEEDED):
        with pytest.raises(ActionRefused):
            cancel(order(status), now=NOW, actor="ops")


def test_payment_wakes_a_pending_order_and_is_recorded() -> None:
    t = payment(
        order(Status.PENDING, payment_status="UNPAID"),
        payment_status="PAID",
        now=NOW,
        actor="platform",
    )
    assert (t.order.payment_status, t.order.next_run_at) == ("PAID", NOW)
    assert t.events[0].detail == {"payment_status": "PAID", "previous": "UNPAID"}
    with pytest.raises(ActionRefused):
        payment(order(Status.PENDING), payment_status="MAYBE", now=NOW, actor="p")
