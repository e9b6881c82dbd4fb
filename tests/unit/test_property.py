"""DESIGN §9 invariants 1-3 for ANY sequence of vendor answers, as a property.

A simulated worker drives one order through ``plan`` / ``mark_sent`` / ``after_place`` /
``after_query``: the clock jumps to the order's ``next_run_at`` each time, every vendor call
gets an answer drawn by hypothesis (including answers that make no sense for the call), and
the vendor may be missing from the config for a while or for good.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.orders import T0, make_order

from orderwatch.lifecycle import (
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
)
from orderwatch.statuses import Status

MAX_STEPS = 5000  # far above any policy below: a loop that hits it is stuck

ABNORMAL_KINDS = [
    "timeout",
    "network",
    "http_error",
    "maintenance",
    "malformed",
    "bad_signature",
    "vendor_error",
]

OUTCOMES: st.SearchStrategy[Outcome] = st.one_of(
    st.builds(Accepted, st.none() | st.just("V-1")),
    st.builds(Rejected, st.sampled_from(["E101", "E102", "E103"]), st.just("refused")),
    st.builds(
        InProgress,
        st.sampled_from(["PROCESSING", "SHIPPED"]),
        st.none() | st.just("运输中"),
        st.none(),
        st.booleans(),
        st.none() | st.just("V-2"),
    ),
    st.builds(Delivered),
    st.builds(VendorFailed),
    st.just(UnknownOrder()),
    st.builds(
        Abnormal,
        st.sampled_from(ABNORMAL_KINDS),
        st.just(""),
        st.none() | st.floats(0, 3 * 86400),
    ),
)
# answers that keep an order going, so that long runs are explored too
NON_FINAL = st.one_of(
    st.builds(InProgress, st.sampled_from(["PROCESSING", "SHIPPED"]), shipped=st.booleans()),
    st.just(UnknownOrder()),
    st.builds(
        Abnormal, st.sampled_from(ABNORMAL_KINDS), retry_after=st.none() | st.floats(0, 86400)
    ),
)
ACCEPTED = st.builds(Accepted, st.none() | st.just("V-1"))
PLACE_ANSWERS = st.one_of(ACCEPTED, ACCEPTED, OUTCOMES)
QUERY_ANSWERS = st.one_of(NON_FINAL, NON_FINAL, OUTCOMES)

POLICIES = st.builds(
    Policy,
    initial_delay=st.sampled_from([0.0, 60.0, 600.0]),
    initial_interval=st.sampled_from([300.0, 3600.0]),
    factor=st.sampled_from([1.0, 2.0, 3.0]),
    max_interval=st.sampled_from([600.0, 21600.0]),
    jitter=st.sampled_from([0.0, 0.1, 0.5]),
    max_polls=st.integers(1, 8),
    deadline=st.sampled_from([1800.0, 6 * 3600.0, 2 * 86400.0]),
    not_found_limit=st.integers(1, 4),
    payment_grace=st.sampled_from([0.0, 600.0]),
    on_place_unknown=st.sampled_from(["reconcile", "fail"]),
    reconcile_attempts=st.integers(1, 4),
)


def new_order(payment_status: str) -> Order:
    return make_order(payment_status=payment_status, customer_id=None)


@dataclass
class Run:
    places: int = 0
    queries: int = 0
    steps: int = 0


def check(before: Order, t: Transition, *, called_vendor: bool) -> None:
    """What every single step must satisfy."""
    after = t.order
    if called_vendor or after.status is not before.status:
        assert t.events, f"{before.status} -> {after.status} without an event"
    for event in t.events:
        assert event.to_status is not None
    if t.events:
        assert t.events[-1].to_status is after.status
    assert (after.next_run_at is None) == after.status.is_final
    if after.status.is_final:
        assert (after.reason is None) == (after.status is Status.SUCCEEDED)
        assert t.events[-1].reason is after.reason
        assert t.notify == (
            "order.succeeded" if after.status is Status.SUCCEEDED else "order.failed"
        )
    else:
        assert after.reason is None


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    policy=POLICIES,
    payment_status=st.sampled_from(["PAID"] * 7 + ["UNPAID"]),
    vendor_missing_for=st.sampled_from([0] * 7 + [1, 3, None]),  # None: removed for good
    seed=st.integers(0, 2**32 - 1),
)
def test_any_answer_sequence_ends_in_exactly_one_final_state(
    data: st.DataObject,
    policy: Policy,
    payment_status: str,
    vendor_missing_for: int | None,
    seed: int,
) -> None:
    rng = random.Random(seed)
    order = new_order(payment_status)
    now = T0
    run = Run()
    checks = 0

    while not order.status.is_final:
        run.steps += 1
        assert run.steps < MAX_STEPS, f"stuck: {order}"
        assert order.next_run_at is not None
        now = max(now, order.next_run_at)  # the worker claims it when due
        vendor_known = vendor_missing_for is not None and checks >= vendor_missing_for
        checks += 1

        action = plan(order, policy, now, vendor_known=vendor_known)
        if isinstance(action, Transition):
            check(order, action, called_vendor=False)
            order = action.order
        elif isinstance(action, Place):
            assert order.status is Status.PENDING
            sent = mark_sent(order, now)
            check(order, sent, called_vendor=False)
            assert sent.order.status is Status.SENT
            run.places += 1
            answer = data.draw(PLACE_ANSWERS, label=f"place answer at step {run.steps}")
            t = after_place(sent.order, Exchange(answer), policy, now, rng)
            check(sent.order, t, called_vendor=True)
            order = t.order
        else:
            assert isinstance(action, Query)
            assert action.reconcile == (order.status is Status.SENT)
            assert policy.on_place_unknown == "reconcile" or order.status is Status.ORDERED
            run.queries += 1
            answer = data.draw(QUERY_ANSWERS, label=f"query answer {run.queries}")
            t = after_query(order, Exchange(answer), policy, now, rng)
            check(order, t, called_vendor=True)
            assert t.order.queries == run.queries
            if not t.order.status.is_final:  # it fails right after the max_polls-th answer
                assert t.order.queries < policy.max_polls
            order = t.order

    assert order.status in (Status.SUCCEEDED, Status.FAILED)
    assert order.next_run_at is None
    assert (order.reason is None) == (order.status is Status.SUCCEEDED)
    assert run.queries <= policy.max_polls
    assert run.places <= 1, "place-order sent twice"
    assert order.placements == run.places
    if payment_status != "PAID":
        assert run.places == 0
    if vendor_missing_for is None:
        assert run.places == 0
        assert run.queries == 0
    if order.status is Status.SUCCEEDED:  # only a query answer can report delivery
        assert run.places == 1
        assert run.queries >= 1
