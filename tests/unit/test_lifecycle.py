"""The order state machine (DESIGN §2-§4, §9): every transition and every failure reason.

Each test builds an order with :func:`make_order`, calls one pure function of
``orderwatch.lifecycle`` and checks what an operator would see: status, reason,
description, ``next_run_at``, the events of the timeline and the customer notification.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from tests.support.orders import T0, make_order

from orderwatch import backoff
from orderwatch.lifecycle import (
    PLACE,
    POLL,
    RECONCILE,
    Place,
    Policy,
    Query,
    Transition,
    after_place,
    after_query,
    mark_sent,
    plan,
)
from orderwatch.order import Order
from orderwatch.outcomes import (
    Abnormal,
    Accepted,
    Delivered,
    Exchange,
    InProgress,
    Outcome,
    Rejected,
    UnknownOrder,
    VendorFailed,
    outcome_name,
)
from orderwatch.statuses import ACTIVE_STATUSES, Reason, Status

NOW = T0 + timedelta(minutes=30)
POLICY = Policy()
NO_JITTER = Policy(jitter=0.0)
LOGISTICS = {"carrier": "SF", "tracking_no": "SF1234567890", "events": []}


def ex(outcome: Outcome, *, http_status: int | None = 200, code: str | None = "0000") -> Exchange:
    return Exchange(outcome, latency=0.0125, http_status=http_status, vendor_code=code)


def rng() -> random.Random:
    return random.Random(0)


def query(
    order: Order, outcome: Outcome, now: datetime = NOW, policy: Policy = POLICY
) -> Transition:
    return after_query(order, ex(outcome), policy, now, rng())


def place(
    order: Order, outcome: Outcome, now: datetime = NOW, policy: Policy = POLICY
) -> Transition:
    return after_place(order, ex(outcome), policy, now, rng())


def assert_final(t: Transition, status: Status, reason: Reason | None) -> None:
    """What every ending must show: status, reason, no next run, an event, a notification."""
    assert t.order.status is status
    assert t.order.reason is reason
    assert t.order.next_run_at is None
    assert t.order.description
    assert t.events, "a final transition must have its event"
    last = t.events[-1]
    assert last.to_status is status
    assert last.reason is reason
    assert t.notify == ("order.succeeded" if status is Status.SUCCEEDED else "order.failed")


def assert_waiting(t: Transition, status: Status) -> None:
    assert t.order.status is status
    assert t.order.reason is None
    assert t.order.next_run_at is not None


# ------------------------------------------------------------------------------ plan


def test_plan_paid_pending_order_is_placed() -> None:
    assert plan(make_order(), POLICY, NOW) == PLACE


def test_plan_unpaid_without_grace_fails_unpaid() -> None:
    t = plan(make_order(payment_status="UNPAID"), POLICY, T0)

    assert isinstance(t, Transition)
    assert_final(t, Status.FAILED, Reason.UNPAID)
    assert t.order.description == "order not paid at dispatch"
    assert t.events[-1].from_status is Status.PENDING


def test_plan_unpaid_within_grace_waits_for_payment_until_grace_ends() -> None:
    policy = Policy(payment_grace=3600)
    t = plan(make_order(payment_status="UNPAID"), policy, T0 + timedelta(minutes=10))

    assert isinstance(t, Transition)
    assert_waiting(t, Status.PENDING)
    assert t.order.next_run_at == T0 + timedelta(hours=1)
    assert t.order.description == "waiting for payment"
    assert t.notify is None
    [event] = t.events
    assert event.kind == "payment_wait"
    assert event.detail == {"until": (T0 + timedelta(hours=1)).isoformat()}


@pytest.mark.parametrize("late", [timedelta(0), timedelta(hours=2)])
def test_plan_unpaid_when_grace_is_over_fails_unpaid(late: timedelta) -> None:
    policy = Policy(payment_grace=3600)
    t = plan(make_order(payment_status="UNPAID"), policy, T0 + timedelta(hours=1) + late)

    assert isinstance(t, Transition)
    assert_final(t, Status.FAILED, Reason.UNPAID)
    assert "grace" in (t.order.description or "")


def test_plan_order_paid_during_grace_is_placed() -> None:
    policy = Policy(payment_grace=3600)
    waiting = plan(make_order(payment_status="UNPAID"), policy, T0)
    assert isinstance(waiting, Transition)

    paid = replace(waiting.order, payment_status="PAID")
    assert plan(paid, policy, T0 + timedelta(minutes=5)) == PLACE


@pytest.mark.parametrize("status", ACTIVE_STATUSES)
def test_plan_vendor_missing_waits_visibly_with_one_event(status: Status) -> None:
    order = make_order(status)
    first = plan(order, POLICY, NOW, vendor_known=False)

    assert isinstance(first, Transition)
    assert_waiting(first, status)
    assert first.order.next_run_at == NOW + timedelta(seconds=POLICY.initial_interval)
    assert "acme" in (first.order.description or "")
    [event] = first.events
    assert event.kind == "vendor_missing"
    assert event.detail == {"vendor": "acme"}
    assert first.notify is None

    later = NOW + timedelta(hours=1)
    second = plan(first.order, POLICY, later, vendor_known=False)
    assert isinstance(second, Transition)
    assert_waiting(second, status)
    assert second.order.next_run_at == later + timedelta(seconds=POLICY.initial_interval)
    assert second.events == (), "the wait is recorded once, not at every check"


def test_plan_vendor_missing_wakes_at_the_deadline_at_the_latest() -> None:
    deadline = T0 + timedelta(seconds=POLICY.deadline)
    t = plan(make_order(), POLICY, deadline - timedelta(seconds=60), vendor_known=False)

    assert isinstance(t, Transition)
    assert t.order.next_run_at == deadline


@pytest.mark.parametrize("status", ACTIVE_STATUSES)
@pytest.mark.parametrize("late", [timedelta(0), timedelta(days=1)])
def test_plan_vendor_missing_at_deadline_ends_invalid_state(
    status: Status, late: timedelta
) -> None:
    now = T0 + timedelta(seconds=POLICY.deadline) + late
    t = plan(make_order(status), POLICY, now, vendor_known=False)

    assert isinstance(t, Transition)
    assert_final(t, Status.FAILED, Reason.INVALID_STATE)
    assert "acme" in (t.order.description or "")


def test_plan_sent_order_with_on_place_unknown_fail_ends_place_unreachable() -> None:
    t = plan(make_order(Status.SENT), Policy(on_place_unknown="fail"), NOW)

    assert isinstance(t, Transition)
    assert_final(t, Status.FAILED, Reason.PLACE_UNREACHABLE)
    assert t.order.placements == 1, "never placed again"


def test_plan_sent_order_is_reconciled_by_query_not_placed_again() -> None:
    action = plan(make_order(Status.SENT), POLICY, NOW)

    assert action == RECONCILE
    assert isinstance(action, Query)
    assert action.reconcile is True


def test_plan_ordered_order_is_polled() -> None:
    action = plan(make_order(Status.ORDERED), POLICY, NOW)

    assert action == POLL
    assert isinstance(action, Query)
    assert action.reconcile is False


@pytest.mark.parametrize("status", [Status.SENT, Status.ORDERED])
@pytest.mark.parametrize("queries", [5, 9])
def test_plan_at_or_past_max_polls_ends_without_a_query(status: Status, queries: int) -> None:
    # max_polls lowered by a reload below what the order already used
    t = plan(make_order(status, queries=queries), Policy(max_polls=5), NOW)

    assert isinstance(t, Transition)
    assert_final(t, Status.FAILED, Reason.MAX_POLLS_EXCEEDED)
    assert t.order.queries == queries, "no query was sent"
    assert "max_polls is 5" in (t.order.description or "")


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED])
def test_plan_claimed_final_order_ends_invalid_state(status: Status) -> None:
    t = plan(make_order(status), POLICY, NOW)

    assert isinstance(t, Transition)
    assert_final(t, Status.FAILED, Reason.INVALID_STATE)


# ------------------------------------------------------------------------- mark_sent


def test_mark_sent_counts_the_placement_and_records_the_event() -> None:
    t = mark_sent(make_order(), NOW, actor="worker-1")

    assert t.order.status is Status.SENT
    assert t.order.placements == 1
    assert t.order.updated_at == NOW
    assert t.order.next_run_at is not None, "a crash right after leaves it due (reconciled)"
    [event] = t.events
    assert (event.kind, event.from_status, event.to_status) == ("sent", Status.PENDING, Status.SENT)
    assert event.actor == "worker-1"
    assert t.notify is None


# ------------------------------------------------------------------------ after_place


def test_accepted_becomes_ordered_and_first_query_waits_initial_delay() -> None:
    sent = mark_sent(make_order(), NOW).order
    t = place(sent, Accepted("V-42"))

    assert_waiting(t, Status.ORDERED)
    assert t.order.next_run_at == NOW + timedelta(seconds=POLICY.initial_delay)
    assert t.order.placed_at == NOW
    assert t.order.vendor_order_id == "V-42"
    assert t.order.queries == 0
    [event] = t.events
    assert (event.kind, event.from_status, event.to_status) == (
        "placed",
        Status.SENT,
        Status.ORDERED,
    )
    assert (event.outcome, event.http_status, event.vendor_code) == ("accepted", 200, "0000")
    assert event.latency_ms == 12.5
    assert t.notify is None


def test_accepted_near_the_deadline_first_query_is_at_the_deadline_at_the_latest() -> None:
    deadline = T0 + timedelta(seconds=POLICY.deadline)
    now = deadline - timedelta(minutes=1)  # e.g. the vendor was missing for days
    t = place(make_order(Status.SENT), Accepted("V-1"), now=now)

    assert t.order.next_run_at is not None
    assert t.order.next_run_at <= deadline


def test_rejected_fails_place_rejected_with_vendor_code_and_message() -> None:
    t = after_place(
        make_order(Status.SENT),
        ex(Rejected("E101", "out of stock"), code="E101"),
        POLICY,
        NOW,
        rng(),
    )

    assert_final(t, Status.FAILED, Reason.PLACE_REJECTED)
    assert "E101" in (t.order.description or "")
    assert "out of stock" in (t.order.description or "")
    assert t.notify == "order.failed"
    assert t.events[-1].kind == "place_rejected"
    assert t.events[-1].vendor_code == "E101"


def test_abnormal_place_answer_stays_sent_and_reconciles_after_initial_interval() -> None:
    t = place(make_order(Status.SENT), Abnormal("timeout", "no answer within 5s"))

    assert_waiting(t, Status.SENT)
    assert t.order.next_run_at == NOW + timedelta(seconds=POLICY.initial_interval)
    assert t.order.abnormal == 1
    assert t.order.placements == 1
    assert "timeout" in (t.order.description or "")
    [event] = t.events
    assert event.kind == "place_unknown"
    assert event.outcome == "abnormal:timeout"
    assert t.notify is None


def test_abnormal_place_answer_waits_retry_after_when_longer() -> None:
    t = place(make_order(Status.SENT), Abnormal("maintenance", "HTTP 503", retry_after=3600))

    assert t.order.next_run_at == NOW + timedelta(seconds=3600)


def test_abnormal_place_answer_ignores_retry_after_when_shorter() -> None:
    t = place(make_order(Status.SENT), Abnormal("maintenance", "HTTP 503", retry_after=5))

    assert t.order.next_run_at == NOW + timedelta(seconds=POLICY.initial_interval)


def test_abnormal_place_answer_reconcile_is_capped_at_the_deadline() -> None:
    deadline = T0 + timedelta(seconds=POLICY.deadline)
    t = place(make_order(Status.SENT), Abnormal("timeout"), now=deadline - timedelta(seconds=10))

    assert t.order.next_run_at == deadline


def test_abnormal_place_answer_with_on_place_unknown_fail_ends_place_unreachable() -> None:
    t = place(
        make_order(Status.SENT),
        Abnormal("http_error", "HTTP 502"),
        policy=Policy(on_place_unknown="fail"),
    )

    assert_final(t, Status.FAILED, Reason.PLACE_UNREACHABLE)
    assert "http_error" in (t.order.description or "")
    assert t.order.abnormal == 1


@pytest.mark.parametrize("outcome", [UnknownOrder(), InProgress("PROCESSING"), Delivered()])
def test_place_answer_outside_the_protocol_is_treated_as_unknown(outcome: Outcome) -> None:
    t = place(make_order(Status.SENT), outcome)

    assert_waiting(t, Status.SENT)
    assert t.order.abnormal == 1


# ------------------------------------------------------------------------ after_query


def test_delivered_succeeds_with_no_reason() -> None:
    order = make_order(Status.ORDERED, queries=3)
    t = query(order, Delivered("已签收", LOGISTICS))

    assert_final(t, Status.SUCCEEDED, None)
    assert t.notify == "order.succeeded"
    assert t.order.description == "已签收"
    assert t.order.logistics == LOGISTICS
    assert t.order.vendor_status == "DELIVERED"
    assert t.order.queries == 4
    assert t.events[-1].kind == "succeeded"
    assert t.events[-1].attempt == 4


def test_vendor_failed_fails_vendor_failed_with_the_vendor_description() -> None:
    t = query(make_order(Status.ORDERED), VendorFailed("商品缺货，订单取消"))

    assert_final(t, Status.FAILED, Reason.VENDOR_FAILED)
    assert t.order.description == "商品缺货，订单取消"
    assert t.order.vendor_status == "FAILED"


@pytest.mark.parametrize("done", [0, 1, 2, 6, 7, 20])
def test_processing_schedules_the_next_query_by_backoff_within_jitter(done: int) -> None:
    order = make_order(Status.ORDERED, queries=done)
    t = query(order, InProgress("PROCESSING", "备货中"))

    n = done + 1
    d = backoff.interval(
        n,
        initial_interval=POLICY.initial_interval,
        factor=POLICY.factor,
        max_interval=POLICY.max_interval,
    )
    assert_waiting(t, Status.ORDERED)
    assert t.order.queries == n
    assert t.order.next_run_at is not None
    wait = (t.order.next_run_at - NOW).total_seconds()
    assert d * (1 - POLICY.jitter) <= wait <= d * (1 + POLICY.jitter)
    assert t.order.description == "备货中"
    assert t.order.vendor_status == "PROCESSING"
    [event] = t.events
    assert (event.kind, event.attempt, event.outcome) == ("queried", n, "processing")
    assert t.notify is None


def test_without_jitter_the_next_query_is_exactly_the_backoff() -> None:
    t = query(make_order(Status.ORDERED, queries=2), InProgress("PROCESSING"), policy=NO_JITTER)

    assert t.order.next_run_at == NOW + timedelta(seconds=300 * 2**2)


def test_shipped_first_time_notifies_the_customer() -> None:
    t = query(make_order(Status.ORDERED), InProgress("SHIPPED", "运输中", LOGISTICS, shipped=True))

    assert_waiting(t, Status.ORDERED)
    assert t.notify == "order.shipped"
    [event] = t.events
    assert event.kind == "shipped"
    assert t.order.vendor_status == "SHIPPED"
    assert t.order.logistics == LOGISTICS
    assert t.order.description == "运输中"

    again = query(t.order, InProgress("SHIPPED", "派送中", LOGISTICS, shipped=True))
    assert again.notify is None, "the customer is told once"
    assert again.events[-1].kind == "queried"
    assert again.order.description == "派送中"


def test_shipped_under_a_custom_status_name_notifies_once() -> None:
    answer = InProgress("IN_TRANSIT", "运输中", LOGISTICS, shipped=True)
    first = query(make_order(Status.ORDERED), answer)
    assert first.notify == "order.shipped"

    again = query(first.order, answer)
    assert again.notify is None


def test_in_progress_keeps_previous_description_and_logistics_when_absent() -> None:
    order = make_order(Status.ORDERED, description="运输中", logistics=LOGISTICS)
    t = query(order, InProgress("PROCESSING"))

    assert t.order.description == "运输中"
    assert t.order.logistics == LOGISTICS


def test_unknown_order_streak_reaching_not_found_limit_fails() -> None:
    policy = Policy(not_found_limit=3)
    order = make_order(Status.ORDERED)
    for expected_streak in (1, 2):
        t = query(order, UnknownOrder(), policy=policy)
        assert_waiting(t, Status.ORDERED)
        assert t.order.unknown_streak == expected_streak
        order = t.order

    t = query(order, UnknownOrder(), policy=policy)
    assert_final(t, Status.FAILED, Reason.NOT_FOUND_AT_VENDOR)
    assert "3 queries in a row" in (t.order.description or "")


@pytest.mark.parametrize(
    "known", [InProgress("PROCESSING"), InProgress("SHIPPED", shipped=True)], ids=outcome_name
)
def test_a_known_answer_resets_the_unknown_streak(known: Outcome) -> None:
    policy = Policy(not_found_limit=3)
    order = make_order(Status.ORDERED, unknown_streak=2)

    t = query(order, known, policy=policy)
    assert t.order.unknown_streak == 0
    t = query(t.order, UnknownOrder(), policy=policy)
    assert_waiting(t, Status.ORDERED)
    assert t.order.unknown_streak == 1


def test_an_abnormal_answer_neither_counts_nor_breaks_the_unknown_streak() -> None:
    policy = Policy(not_found_limit=3)
    order = make_order(Status.ORDERED, unknown_streak=2)

    t = query(order, Abnormal("timeout"), policy=policy)
    assert_waiting(t, Status.ORDERED)
    assert t.order.unknown_streak == 2
    assert t.order.abnormal == 1

    t = query(t.order, UnknownOrder(), policy=policy)
    assert_final(t, Status.FAILED, Reason.NOT_FOUND_AT_VENDOR)


def test_abnormal_with_retry_after_longer_than_backoff_waits_retry_after() -> None:
    t = query(make_order(Status.ORDERED), Abnormal("maintenance", "E503", retry_after=7200))

    assert_waiting(t, Status.ORDERED)
    assert t.order.next_run_at == NOW + timedelta(seconds=7200)
    assert t.order.abnormal == 1
    assert t.events[-1].outcome == "abnormal:maintenance"


def test_abnormal_with_retry_after_shorter_than_backoff_keeps_backoff() -> None:
    t = query(make_order(Status.ORDERED), Abnormal("maintenance", retry_after=1), policy=NO_JITTER)

    assert t.order.next_run_at == NOW + timedelta(seconds=NO_JITTER.initial_interval)


@pytest.mark.parametrize(
    "last",
    [
        InProgress("PROCESSING"),
        InProgress("SHIPPED", shipped=True),
        UnknownOrder(),
        Abnormal("timeout"),
    ],
    ids=outcome_name,
)
def test_max_polls_ends_the_order_right_after_the_nth_non_final_answer(last: Outcome) -> None:
    policy = Policy(max_polls=3, not_found_limit=5)
    order = make_order(Status.ORDERED)
    for answer in (Abnormal("http_error", "HTTP 500"), InProgress("PROCESSING")):
        t = query(order, answer, policy=policy)
        assert_waiting(t, Status.ORDERED)
        order = t.order

    t = query(order, last, policy=policy)
    assert_final(t, Status.FAILED, Reason.MAX_POLLS_EXCEEDED)
    assert t.order.queries == 3
    assert "3 queries" in (t.order.description or "")


def test_a_final_answer_on_the_last_allowed_query_still_counts() -> None:
    t = query(make_order(Status.ORDERED, queries=2), Delivered(), policy=Policy(max_polls=3))

    assert_final(t, Status.SUCCEEDED, None)


def test_next_query_is_capped_at_the_deadline() -> None:
    policy = Policy(deadline=3600)
    now = T0 + timedelta(minutes=58)
    t = query(make_order(Status.ORDERED), InProgress("PROCESSING"), now=now, policy=policy)

    assert_waiting(t, Status.ORDERED)
    assert t.order.next_run_at == T0 + timedelta(hours=1)


@pytest.mark.parametrize("late", [timedelta(0), timedelta(hours=5)])
@pytest.mark.parametrize(
    "answer", [InProgress("PROCESSING"), UnknownOrder(), Abnormal("timeout")], ids=outcome_name
)
def test_non_final_answer_at_or_past_the_deadline_fails(late: timedelta, answer: Outcome) -> None:
    policy = Policy(deadline=3600)
    now = T0 + timedelta(hours=1) + late
    t = query(make_order(Status.ORDERED), answer, now=now, policy=policy)

    assert_final(t, Status.FAILED, Reason.DEADLINE_EXCEEDED)


def test_deadline_counts_from_started_at_not_created_at() -> None:
    # an operator's retry restarts the cycle
    policy = Policy(deadline=3600)
    order = make_order(Status.ORDERED, started_at=T0 + timedelta(days=2))
    t = query(
        order, InProgress("PROCESSING"), now=T0 + timedelta(days=2, minutes=30), policy=policy
    )

    assert_waiting(t, Status.ORDERED)


def test_final_answer_at_the_deadline_still_succeeds() -> None:
    policy = Policy(deadline=3600)
    t = query(make_order(Status.ORDERED), Delivered(), now=T0 + timedelta(hours=2), policy=policy)

    assert_final(t, Status.SUCCEEDED, None)


# ------------------------------------------------------------------ reconciling SENT


def test_reconcile_known_order_continues_as_ordered() -> None:
    t = query(make_order(Status.SENT), InProgress("PROCESSING", vendor_order_id="V-9"))

    assert_waiting(t, Status.ORDERED)
    assert [e.kind for e in t.events] == ["reconciled", "queried"]
    reconciled = t.events[0]
    assert (reconciled.from_status, reconciled.to_status) == (Status.SENT, Status.ORDERED)
    assert t.order.placed_at == NOW
    assert t.order.vendor_order_id == "V-9"
    assert t.order.queries == 1
    assert t.order.placements == 1


def test_reconcile_delivered_succeeds_with_the_reconciled_event() -> None:
    t = query(make_order(Status.SENT), Delivered("已签收"))

    assert_final(t, Status.SUCCEEDED, None)
    assert [e.kind for e in t.events] == ["reconciled", "succeeded"]


def test_reconcile_vendor_failed_fails_with_the_reconciled_event() -> None:
    t = query(make_order(Status.SENT), VendorFailed("cancelled"))

    assert_final(t, Status.FAILED, Reason.VENDOR_FAILED)
    assert [e.kind for e in t.events] == ["reconciled", "failed"]


def test_reconcile_shipped_notifies_shipped() -> None:
    t = query(make_order(Status.SENT), InProgress("SHIPPED", shipped=True))

    assert_waiting(t, Status.ORDERED)
    assert t.notify == "order.shipped"
    assert [e.kind for e in t.events] == ["reconciled", "shipped"]


def test_reconcile_unknown_order_in_a_row_ends_place_unreachable() -> None:
    # not_found_limit applies to ORDERED orders only; reconcile uses reconcile_attempts
    policy = Policy(reconcile_attempts=3, not_found_limit=1)
    order = make_order(Status.SENT)
    for expected_streak in (1, 2):
        t = query(order, UnknownOrder(), policy=policy)
        assert_waiting(t, Status.SENT)
        assert t.order.unknown_streak == expected_streak
        order = t.order

    t = query(order, UnknownOrder(), policy=policy)
    assert_final(t, Status.FAILED, Reason.PLACE_UNREACHABLE)
    assert t.order.placements == 1
    assert "operator" in (t.order.description or "")


def test_reconcile_abnormal_answers_count_toward_max_polls_not_reconcile_attempts() -> None:
    policy = Policy(reconcile_attempts=2, max_polls=4)
    order = make_order(Status.SENT)
    for answer in (UnknownOrder(), Abnormal("timeout"), Abnormal("malformed")):
        t = query(order, answer, policy=policy)
        assert_waiting(t, Status.SENT)
        order = t.order
    assert order.unknown_streak == 1
    assert order.abnormal == 2

    t = query(order, Abnormal("timeout"), policy=policy)
    assert_final(t, Status.FAILED, Reason.MAX_POLLS_EXCEEDED)


def test_reconcile_abnormal_answer_does_not_break_the_unknown_row() -> None:
    policy = Policy(reconcile_attempts=2)
    order = make_order(Status.SENT)
    for answer in (UnknownOrder(), Abnormal("timeout")):
        order = query(order, answer, policy=policy).order

    t = query(order, UnknownOrder(), policy=policy)
    assert_final(t, Status.FAILED, Reason.PLACE_UNREACHABLE)


def test_reconcile_queries_continue_the_backoff_from_initial_interval() -> None:
    # place-order answer lost → first reconcile query initial_interval later (tested above);
    # the answer to that query schedules the next one a backoff step further on.
    t = query(make_order(Status.SENT), Abnormal("timeout"), policy=NO_JITTER)

    assert t.order.next_run_at == NOW + timedelta(
        seconds=NO_JITTER.initial_interval * NO_JITTER.factor
    )


# -------------------------------------------------- DESIGN §9 invariant 1, every pair

OUTCOMES: list[Outcome] = [
    Accepted("V-1"),
    Rejected("E101", "out of stock"),
    InProgress("PROCESSING"),
    InProgress("SHIPPED", shipped=True),
    Delivered(),
    VendorFailed(),
    UnknownOrder(),
    Abnormal("timeout"),
    Abnormal("maintenance", retry_after=86400),
]


def _steps(status: Status, outcome: Outcome, policy: Policy) -> list[Transition]:
    """What the engine does with an order in ``status`` that gets ``outcome``."""
    order = make_order(status)
    if status is Status.PENDING:
        assert isinstance(plan(order, policy, NOW), Place)
        sent = mark_sent(order, NOW)
        return [sent, place(sent.order, outcome, policy=policy)]
    if status is Status.SENT:
        # the answer to the place-order just sent, or to a reconcile query
        return [place(order, outcome, policy=policy), query(order, outcome, policy=policy)]
    return [query(order, outcome, policy=policy)]


@pytest.mark.parametrize("mode", ["reconcile", "fail"])
@pytest.mark.parametrize("outcome", OUTCOMES, ids=outcome_name)
@pytest.mark.parametrize("status", ACTIVE_STATUSES)
def test_every_status_and_outcome_ends_final_with_reason_or_waits_with_next_run(
    status: Status, outcome: Outcome, mode: str
) -> None:
    policy = Policy(on_place_unknown=mode)
    steps = _steps(status, outcome, policy)
    for t in steps:
        order = t.order
        assert t.events, "no transition without its event"
        if order.status.is_final:
            assert order.next_run_at is None
            assert (order.reason is None) == (order.status is Status.SUCCEEDED)
            assert t.events[-1].to_status is order.status
            assert t.notify in ("order.succeeded", "order.failed")
        else:
            assert order.reason is None
            assert order.next_run_at is not None
            if t is not steps[0] or status is not Status.PENDING:  # mark_sent keeps it due
                assert order.next_run_at >= NOW


def test_request_refused_by_the_vendor_can_be_placed_again_by_an_operator() -> None:
    """E401 (bad signature) means the vendor never recorded the order: retry places it."""
    from orderwatch.lifecycle import ActionRefused, retry

    rng = random.Random(0)
    order = make_order(status=Status.SENT, placements=1)
    refused = after_place(order, Exchange(Rejected("E401", "bad signature")), POLICY, NOW, rng)
    assert refused.order.reason is Reason.PLACE_REJECTED
    assert "check the vendor config" in (refused.order.description or "")
    reopened, mode = retry(refused.order, NOW, actor="op")
    assert mode == "place"
    assert reopened.order.status is Status.PENDING

    business = after_place(order, Exchange(Rejected("E101", "out of stock")), POLICY, NOW, rng)
    with pytest.raises(ActionRefused):
        retry(business.order, NOW, actor="op")
