"""The circuit breaker's counting, and the deferral it causes, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests.support.orders import make_order

from orderwatch import lifecycle
from orderwatch.breaker import CircuitBreakers, Closed, Opened, is_transport_failure
from orderwatch.outcomes import Abnormal, Exchange, InProgress, UnknownOrder
from orderwatch.statuses import Status

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
OPEN_FOR = timedelta(minutes=5)
TIMEOUT = Exchange(Abnormal("timeout", "no answer within 5s"))
REFUSED = Exchange(Abnormal("network", "ClientConnectorError"))
ANSWER = Exchange(InProgress("PROCESSING"), http_status=200)


@pytest.mark.parametrize(
    ("exchange", "transport"),
    [
        (TIMEOUT, True),
        (REFUSED, True),
        (Exchange(Abnormal("http_error", "HTTP 502"), http_status=502), True),
        (Exchange(Abnormal("http_error", "HTTP 404"), http_status=404), False),
        (Exchange(Abnormal("maintenance", "HTTP 503", 600.0), http_status=503), False),
        (Exchange(Abnormal("malformed", "not JSON"), http_status=200), False),
        (Exchange(Abnormal("bad_signature", "wrong"), http_status=200), False),
        (Exchange(UnknownOrder(), http_status=200), False),
        (ANSWER, False),
    ],
)
def test_only_unreachable_or_broken_vendors_count(exchange: Exchange, transport: bool) -> None:
    assert is_transport_failure(exchange) is transport


def record(b: CircuitBreakers, exchange: Exchange, at: datetime = NOW) -> Opened | Closed | None:
    return b.record("acme", exchange, at, failures=3, open_for=OPEN_FOR)


def test_opens_after_n_failures_in_a_row_and_not_before() -> None:
    b = CircuitBreakers()
    assert record(b, TIMEOUT) is None
    assert record(b, REFUSED) is None
    assert not b.tripped("acme")
    opened = record(b, TIMEOUT)
    assert opened == Opened("acme", NOW + OPEN_FOR, 3)
    assert b.open_until("acme", NOW) == NOW + OPEN_FOR
    assert b.open_until("beta", NOW) is None  # one breaker per vendor
    # in-flight calls failing while it is open do not push its end further
    assert record(b, TIMEOUT, NOW + timedelta(minutes=1)) is None
    assert b.open_until("acme", NOW + timedelta(minutes=1)) == NOW + OPEN_FOR


def test_an_answer_resets_the_count() -> None:
    b = CircuitBreakers()
    record(b, TIMEOUT)
    record(b, TIMEOUT)
    assert record(b, ANSWER) is None
    assert record(b, TIMEOUT) is None
    assert record(b, TIMEOUT) is None
    assert not b.tripped("acme")


def test_half_open_probe_closes_on_an_answer_or_reopens_on_a_failure() -> None:
    b = CircuitBreakers()
    for _ in range(3):
        record(b, TIMEOUT)
    after = NOW + OPEN_FOR
    assert b.open_until("acme", after) is None
    assert b.half_open("acme", after)
    # one more failure opens it again at once
    assert record(b, TIMEOUT, after) == Opened("acme", after + OPEN_FOR, 4)
    later = after + OPEN_FOR
    assert record(b, ANSWER, later) == Closed("acme")
    assert not b.tripped("acme")
    assert not b.half_open("acme", later)


def test_zero_failures_turns_it_off() -> None:
    b = CircuitBreakers()
    for _ in range(50):
        assert b.record("acme", TIMEOUT, NOW, failures=0, open_for=OPEN_FOR) is None
    assert not b.tripped("acme")


def test_turned_off_while_tripped_it_closes_at_the_next_failure_or_by_hand() -> None:
    b = CircuitBreakers()
    for _ in range(3):
        record(b, TIMEOUT)
    assert b.tripped("acme")
    # a reload sets failures = 0: the next failure closes it instead of counting
    after = NOW + OPEN_FOR
    assert b.record("acme", TIMEOUT, after, failures=0, open_for=OPEN_FOR) == Closed("acme")
    assert not b.tripped("acme")
    for _ in range(3):
        record(b, TIMEOUT)
    assert b.close("acme") == Closed("acme")  # the worker closes it before calling
    assert b.close("acme") is None  # closed already: nothing to announce
    assert record(b, TIMEOUT) is None  # and the count starts again from zero


def test_a_failed_probe_reopens_even_when_more_failures_are_asked_for_now() -> None:
    b = CircuitBreakers()
    for _ in range(3):
        record(b, TIMEOUT)
    after = NOW + OPEN_FOR
    assert b.half_open("acme", after)
    # a reload raised failures from 3 to 10: the probe's failure still reopens it at once
    reopened = b.record("acme", TIMEOUT, after, failures=10, open_for=OPEN_FOR)
    assert reopened == Opened("acme", after + OPEN_FOR, 4)


def test_defer_counts_nothing_and_waits_until_the_breaker_closes() -> None:
    order = make_order(
        Status.ORDERED, queries=4, abnormal=2, next_run_at=NOW - timedelta(minutes=1)
    )
    until = NOW + OPEN_FOR
    t = lifecycle.defer(order, NOW, until=until, why="breaker open")
    assert t.order.status is Status.ORDERED
    assert (t.order.queries, t.order.abnormal) == (4, 2)
    assert t.order.next_run_at == until
    assert t.notify is None
    (event,) = t.events
    assert event.kind == "deferred"
    assert event.detail == {"until": until.isoformat(), "why": "breaker open"}
