"""The order state machine: pure functions of (order, vendor answer, policy, now, rng).

Nothing here reads a clock, a database or the network, so every transition is tested by
calling it. The worker asks :func:`plan` what to do with a claimed order; if the answer is a
vendor call it makes the call and hands the :class:`~orderwatch.outcomes.Exchange` to
:func:`after_place` or :func:`after_query`, which return the :class:`Transition` to store.

Rules that are easy to get wrong, in one place:

* ``max_polls`` counts every result query sent, abnormal answers included; the order fails
  right after its ``max_polls``-th non-final answer.
* ``deadline`` counts from ``started_at`` (creation, or an operator's retry); the last query
  is scheduled at the deadline at the latest, and a non-final answer at or past it fails the
  order.
* A place-order whose answer is lost leaves the order SENT: it is reconciled by query, never
  placed again (``on_place_unknown = "reconcile"``), or fails (``"fail"``).
* "Unknown order" answers count in a row; an abnormal answer neither counts nor breaks the
  row, since it says nothing about the order; any answer that knows the order resets it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from . import backoff
from .errors import Conflict
from .order import Order, evolve
from .outcomes import (
    MAX_CODE,
    Abnormal,
    Accepted,
    Delivered,
    Exchange,
    InProgress,
    Rejected,
    UnknownOrder,
    VendorFailed,
)
from .statuses import Reason, Status

SHIPPED = "SHIPPED"

#: Vendor codes that refuse the request itself (malformed, bad signature, unknown merchant)
#: rather than the order: the vendor has not recorded it, so a retry may place it again.
REQUEST_REFUSED = frozenset({"E400", "E401"})


@dataclass(frozen=True, slots=True)
class Policy:
    """The schedule settings for one vendor, in schedule seconds (DESIGN §8 ``[polling]``)."""

    initial_delay: float = 600.0
    initial_interval: float = 300.0
    factor: float = 2.0
    max_interval: float = 6 * 3600.0
    jitter: float = 0.1
    max_polls: int = 30
    deadline: float = 7 * 86400.0
    not_found_limit: int = 3
    payment_grace: float = 0.0
    on_place_unknown: str = "reconcile"
    reconcile_attempts: int = 5


@dataclass(slots=True)
class Event:
    """One line of an order's timeline. Treated as immutable, but not ``frozen``: a frozen
    dataclass sets each field through ``object.__setattr__`` (an Event cost 3.3 µs to make
    that way against 0.9), and the worker makes one or two per vendor call."""

    kind: str
    at: datetime
    from_status: Status | None = None
    to_status: Status | None = None
    reason: Reason | None = None
    outcome: str | None = None
    attempt: int | None = None
    http_status: int | None = None
    vendor_code: str | None = None
    latency_ms: float | None = None
    detail: dict[str, Any] | None = None
    actor: str | None = None


@dataclass(slots=True)
class Transition:
    """The order after a step, the events that explain it, and what to tell the customer
    (treated as immutable; not ``frozen`` for the reason :class:`Event` gives)."""

    order: Order
    events: tuple[Event, ...]
    notify: str | None = None  # "order.succeeded", "order.failed", "order.shipped", ...


@dataclass(frozen=True, slots=True)
class Place:
    """Send place-order (after the SENT mark is committed)."""


@dataclass(frozen=True, slots=True)
class Query:
    """Send a result query; ``reconcile`` when the place-order answer was never seen."""

    reconcile: bool = False


PLACE = Place()
POLL = Query(reconcile=False)
RECONCILE = Query(reconcile=True)

Action = Place | Query | Transition


#: How much of an abnormal answer's explanation the timeline keeps.
_ERROR_MAX = 300
#: How much of a vendor's own text (description, refusal message) an order keeps: enough
#: for any real explanation, and within every database's TEXT column (MariaDB's is 64 KiB)
#: with the logistics beside it in the notification body.
DESCRIPTION_MAX = 1000


def _vendor_text(text: str, limit: int = DESCRIPTION_MAX) -> str:
    """A vendor's text as an order keeps it: cut to ``limit``, and without NUL characters
    (PostgreSQL's text columns refuse them, and a text shows the same without them)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _exchange_fields(exchange: Exchange) -> dict[str, Any]:
    code = exchange.vendor_code
    return {
        "outcome": exchange.outcome_name,
        "http_status": exchange.http_status,
        "vendor_code": code[:MAX_CODE] if code is not None else None,
        "latency_ms": round(exchange.latency * 1000, 3),
    }


def _finish(
    order: Order,
    *,
    status: Status,
    reason: Reason | None,
    description: str | None,
    now: datetime,
    kind: str,
    exchange: Exchange | None = None,
    detail: dict[str, Any] | None = None,
    extra_events: tuple[Event, ...] = (),
    actor: str | None = None,
    via: Status | None = None,
    **changes: Any,
) -> Transition:
    # ``via`` is a status the order passed through on the way (a reconciled SENT order is
    # ORDERED before it ends): the final event starts from that one.
    from_status = via or order.status
    changes["updated_at"] = now
    after = evolve(
        order,
        status=status,
        reason=reason,
        description=description,
        next_run_at=None,
        **changes,
    )
    event = Event(
        kind=kind,
        at=now,
        from_status=from_status,
        to_status=status,
        reason=reason,
        attempt=after.queries or None,
        detail=detail,
        actor=actor,
        **(_exchange_fields(exchange) if exchange else {}),
    )
    notify = "order.succeeded" if status is Status.SUCCEEDED else "order.failed"
    return Transition(after, (*extra_events, event), notify)


def deadline_at(order: Order, policy: Policy) -> datetime:
    return order.started_at + timedelta(seconds=policy.deadline)


def plan(order: Order, policy: Policy, now: datetime, *, vendor_known: bool = True) -> Action:
    """Decide what a claimed order needs: a vendor call, or a transition made without one."""
    if order.status is Status.PENDING:
        if order.payment_status != "PAID":
            return _unpaid(order, policy, now)
        if not vendor_known:
            return _vendor_missing(order, policy, now)
        return PLACE

    if order.status in (Status.SENT, Status.ORDERED):
        reconcile = order.status is Status.SENT
        if reconcile and policy.on_place_unknown == "fail":
            return _finish(
                order,
                status=Status.FAILED,
                reason=Reason.PLACE_UNREACHABLE,
                description="place-order may or may not have reached the vendor "
                "(found SENT with no answer recorded); on_place_unknown = fail",
                now=now,
                kind="failed",
            )
        if order.queries >= policy.max_polls:
            # Only after max_polls was lowered by a reload: end it now, with no query.
            return _finish(
                order,
                status=Status.FAILED,
                reason=Reason.MAX_POLLS_EXCEEDED,
                description=f"{order.queries} queries sent, max_polls is {policy.max_polls}",
                now=now,
                kind="failed",
            )
        if not vendor_known:
            return _vendor_missing(order, policy, now)
        return RECONCILE if reconcile else POLL

    # A final order is never due; reaching here means a row the engine cannot act on.
    return _finish(
        order,
        status=Status.FAILED,
        reason=Reason.INVALID_STATE,
        description=f"claimed in final status {order.status}",
        now=now,
        kind="failed",
    )


def _unpaid(order: Order, policy: Policy, now: datetime) -> Transition:
    expires = order.started_at + timedelta(seconds=policy.payment_grace)
    if policy.payment_grace <= 0 or now >= expires:
        return _finish(
            order,
            status=Status.FAILED,
            reason=Reason.UNPAID,
            description="order not paid at dispatch"
            if policy.payment_grace <= 0
            else "order not paid within the payment grace period",
            now=now,
            kind="failed",
        )
    after = evolve(order, next_run_at=expires, updated_at=now, description="waiting for payment")
    event = Event(
        kind="payment_wait",
        at=now,
        from_status=order.status,
        to_status=order.status,
        detail={"until": expires.isoformat()},
    )
    return Transition(after, (event,))


def _vendor_missing(order: Order, policy: Policy, now: datetime) -> Transition:
    """The vendor was removed from the config: wait visibly, end as INVALID_STATE at deadline."""
    if now >= deadline_at(order, policy):
        return _finish(
            order,
            status=Status.FAILED,
            reason=Reason.INVALID_STATE,
            description=f"vendor {order.vendor!r} is not configured and the deadline passed",
            now=now,
            kind="failed",
        )
    description = f"waiting: vendor {order.vendor!r} is not configured"
    wake = min(now + timedelta(seconds=policy.initial_interval), deadline_at(order, policy))
    after = evolve(order, next_run_at=wake, updated_at=now, description=description)
    events: tuple[Event, ...] = ()
    if order.description != description:  # one event when the wait starts, not every check
        events = (
            Event(
                kind="vendor_missing",
                at=now,
                from_status=order.status,
                to_status=order.status,
                detail={"vendor": order.vendor},
            ),
        )
    return Transition(after, events)


def defer(order: Order, now: datetime, *, until: datetime, why: str) -> Transition:
    """No call now: the vendor's circuit breaker is open. Nothing is counted; the order
    waits, visibly, until the breaker lets calls through again (its deadline is checked on
    the first answer after that, so a vendor being down never fails an order by itself)."""
    wake = max(until, order.next_run_at or until)
    after = evolve(order, next_run_at=wake, updated_at=now)
    event = Event(
        kind="deferred",
        at=now,
        from_status=order.status,
        to_status=order.status,
        detail={"until": wake.isoformat(), "why": why},
    )
    return Transition(after, (event,))


def mark_sent(
    order: Order, now: datetime, *, actor: str | None = None, policy: Policy | None = None
) -> Transition:
    """PENDING → SENT, committed before the place-order request leaves.

    With a policy, ``next_run_at`` moves to ``initial_interval`` from now: if the worker dies
    before writing the answer back, the order is reconciled then, not at once, giving the
    vendor the same time to record it as after a lost answer.
    """
    after = evolve(
        order,
        status=Status.SENT,
        placements=order.placements + 1,
        updated_at=now,
        description="place-order being sent",
        next_run_at=order.next_run_at
        if policy is None
        else now + timedelta(seconds=policy.initial_interval),
    )
    event = Event(kind="sent", at=now, from_status=order.status, to_status=Status.SENT, actor=actor)
    return Transition(after, (event,))


def after_place(
    order: Order, exchange: Exchange, policy: Policy, now: datetime, rng: random.Random
) -> Transition:
    """The answer to place-order (the order is SENT)."""
    outcome = exchange.outcome
    fields = _exchange_fields(exchange)
    if isinstance(outcome, Accepted):
        after = evolve(
            order,
            status=Status.ORDERED,
            vendor_order_id=outcome.vendor_order_id,
            placed_at=now,
            next_run_at=min(
                now + timedelta(seconds=policy.initial_delay), deadline_at(order, policy)
            ),
            unknown_streak=0,
            updated_at=now,
            description="vendor accepted the order",
        )
        event = Event(
            kind="placed", at=now, from_status=order.status, to_status=Status.ORDERED, **fields
        )
        return Transition(after, (event,))

    if isinstance(outcome, Rejected):
        description = _vendor_text(f"{outcome.code} {outcome.message}".strip())
        if outcome.code in REQUEST_REFUSED:
            description += " (the vendor refused the request itself; check the vendor config)"
        return _finish(
            order,
            status=Status.FAILED,
            reason=Reason.PLACE_REJECTED,
            description=description,
            now=now,
            kind="place_rejected",
            exchange=exchange,
            vendor_status=outcome.code[:MAX_CODE],  # the refusal code: may retry place?
        )

    # No valid answer: the vendor may or may not have the order.
    detail = _abnormal_text(outcome)
    abnormal = order.abnormal + 1
    if policy.on_place_unknown == "fail":
        return _finish(
            order,
            status=Status.FAILED,
            reason=Reason.PLACE_UNREACHABLE,
            description=f"no valid answer to place-order: {detail}",
            now=now,
            kind="failed",
            exchange=exchange,
            abnormal=abnormal,
        )
    wait = policy.initial_interval
    if isinstance(outcome, Abnormal) and outcome.retry_after and outcome.retry_after > wait:
        wait = outcome.retry_after
    next_run_at = _at_most(now, wait, deadline_at(order, policy))
    after = evolve(
        order,
        abnormal=abnormal,
        next_run_at=next_run_at,
        updated_at=now,
        description=f"place-order answer unknown ({detail}); reconciling by query",
    )
    event = Event(
        kind="place_unknown",
        at=now,
        from_status=order.status,
        to_status=order.status,
        detail={"next_run_at": next_run_at.isoformat(), "error": detail[:_ERROR_MAX]},
        **fields,
    )
    return Transition(after, (event,))


def _abnormal_text(outcome: object) -> str:
    if isinstance(outcome, Abnormal):
        return f"{outcome.kind}: {outcome.detail}" if outcome.detail else outcome.kind
    return f"unexpected answer {type(outcome).__name__}"


def _at_most(now: datetime, delay: float, limit: datetime) -> datetime:
    """``min(now + delay, limit)`` without overflowing datetime for an absurd delay."""
    room = (limit - now).total_seconds()
    return limit if delay >= room else now + timedelta(seconds=delay)


def _other_vendor_order(order: Order, outcome: object) -> Abnormal | None:
    """A known-order answer naming another vendor order than the one on record: an answer
    about some other order (a vendor mixing answers up), not about this one."""
    if not isinstance(outcome, InProgress | Delivered | VendorFailed):
        return None
    theirs, ours = outcome.vendor_order_id, order.vendor_order_id
    if theirs is None or ours is None or theirs == ours:
        return None
    return Abnormal(
        "malformed", f"data.vendor_order_id {theirs[:64]!r} is not this order's {ours!r}"
    )


def after_query(
    order: Order, exchange: Exchange, policy: Policy, now: datetime, rng: random.Random
) -> Transition:
    """The answer to a result query, for an ORDERED order or a SENT one being reconciled."""
    # One copy of the order at the end: the changes are gathered first (this runs once per
    # vendor call, so copies matter).
    mixed_up = _other_vendor_order(order, exchange.outcome)
    if mixed_up is not None:
        exchange = replace(exchange, outcome=mixed_up)
    outcome = exchange.outcome
    queries = order.queries + 1
    reconciling = order.status is Status.SENT
    changes: dict[str, Any] = {"queries": queries}
    events: list[Event] = []
    via: Status | None = None  # ORDERED when a reconcile query finds the order

    if reconciling and isinstance(outcome, InProgress | Delivered | VendorFailed):
        via = Status.ORDERED
        changes["placed_at"] = order.placed_at or now
        changes["vendor_order_id"] = outcome.vendor_order_id or order.vendor_order_id
        events.append(
            Event(
                kind="reconciled",
                at=now,
                from_status=Status.SENT,
                to_status=Status.ORDERED,
                attempt=queries,
                detail={"note": "the vendor knows the order"},
            )
        )

    if isinstance(outcome, Delivered | VendorFailed):
        ok = isinstance(outcome, Delivered)
        return _finish(
            order,
            status=Status.SUCCEEDED if ok else Status.FAILED,
            reason=None if ok else Reason.VENDOR_FAILED,
            description=_vendor_text(outcome.description)
            if outcome.description
            else ("delivered" if ok else "vendor reports the order failed"),
            now=now,
            kind="succeeded" if ok else "failed",
            exchange=exchange,
            extra_events=tuple(events),
            logistics=outcome.logistics or order.logistics,
            vendor_status="DELIVERED" if ok else "FAILED",
            unknown_streak=0,
            via=via,
            **changes,
        )

    retry_after: float | None = None
    notify: str | None = None
    error: str | None = None  # what was wrong with an abnormal answer, for the timeline
    kind = "queried"
    if isinstance(outcome, InProgress):
        # vendor_status keeps the normalised SHIPPED whatever the vendor calls it, so a
        # vendor whose "IN_TRANSIT" maps to shipped notifies the customer once, not per poll
        if outcome.shipped and order.vendor_status != SHIPPED:
            notify, kind = "order.shipped", "shipped"
        changes["unknown_streak"] = 0
        changes["vendor_status"] = (
            SHIPPED if outcome.shipped else _vendor_text(outcome.vendor_status, MAX_CODE)
        )
        if outcome.description:
            changes["description"] = _vendor_text(outcome.description)
        if outcome.logistics:
            changes["logistics"] = outcome.logistics
    elif isinstance(outcome, UnknownOrder):
        streak = changes["unknown_streak"] = order.unknown_streak + 1
        if reconciling and streak >= policy.reconcile_attempts:
            return _finish(
                order,
                status=Status.FAILED,
                reason=Reason.PLACE_UNREACHABLE,
                description=f"place-order answer was lost and the vendor did not know the "
                f"order in {streak} queries in a row; an operator may place it again",
                now=now,
                kind="failed",
                exchange=exchange,
                **changes,
            )
        if not reconciling and streak >= policy.not_found_limit:
            return _finish(
                order,
                status=Status.FAILED,
                reason=Reason.NOT_FOUND_AT_VENDOR,
                description=f"vendor did not know the order in {streak} queries in a row",
                now=now,
                kind="failed",
                exchange=exchange,
                **changes,
            )
    else:  # Abnormal, or an answer that makes no sense for a query
        if isinstance(outcome, Abnormal):
            retry_after = outcome.retry_after
        error = _abnormal_text(outcome)[:_ERROR_MAX]
        changes["abnormal"] = order.abnormal + 1

    if queries >= policy.max_polls or now >= deadline_at(order, policy):
        changes.pop("description", None)  # the ending explains itself
    if queries >= policy.max_polls:
        return _finish(
            order,
            status=Status.FAILED,
            reason=Reason.MAX_POLLS_EXCEEDED,
            description=f"no final answer after {queries} queries (max_polls)",
            now=now,
            kind="failed",
            exchange=exchange,
            detail={"error": error} if error else None,
            extra_events=tuple(events),
            via=via,
            **changes,
        )
    limit = deadline_at(order, policy)
    if now >= limit:
        return _finish(
            order,
            status=Status.FAILED,
            reason=Reason.DEADLINE_EXCEEDED,
            description=f"no final answer by the deadline ({limit.isoformat()})",
            now=now,
            kind="failed",
            exchange=exchange,
            detail={"error": error} if error else None,
            extra_events=tuple(events),
            via=via,
            **changes,
        )

    # Reconcile queries continue the backoff from initial_interval (DESIGN §3).
    status = via or order.status
    n = queries + 1 if status is Status.SENT else queries
    delay = backoff.next_delay(
        n,
        initial_interval=policy.initial_interval,
        factor=policy.factor,
        max_interval=policy.max_interval,
        jitter=policy.jitter,
        rng=rng,
        retry_after=retry_after,
    )
    next_run_at = _at_most(now, delay, limit)
    after = evolve(order, status=status, next_run_at=next_run_at, updated_at=now, **changes)
    events.append(
        Event(
            kind=kind,
            at=now,
            from_status=status if events else order.status,
            to_status=status,
            attempt=queries,
            detail={"next_run_at": next_run_at.isoformat(), **({"error": error} if error else {})},
            **_exchange_fields(exchange),
        )
    )
    return Transition(after, tuple(events), notify)


# ---------------------------------------------------------------- operator actions
#
# An operator's action is a transition like any other: pure, with its event (carrying the
# operator's name and note) and its notification. The store applies it under a fresh lease
# token, so a worker's late answer for the same order is discarded, never applied.

RETRY_PLACE = frozenset({Reason.UNPAID, Reason.CANCELLED, Reason.PLACE_UNREACHABLE})
RETRY_POLL = frozenset(
    {
        Reason.VENDOR_FAILED,
        Reason.NOT_FOUND_AT_VENDOR,
        Reason.MAX_POLLS_EXCEEDED,
        Reason.DEADLINE_EXCEEDED,
        Reason.INVALID_STATE,
    }
)


class ActionRefused(Conflict):
    """The order's status does not allow the action (the API answers 409)."""


def retry(
    order: Order, now: datetime, *, actor: str | None, note: str | None = None
) -> tuple[Transition, str]:
    """Reopen a FAILED order: place it again (same order_no) or poll it again.

    Returns the transition and the mode, ``"place"`` or ``"poll"``. A rejected order is not
    retried: the vendor repeats its first answer for the same order_no.
    """
    if order.status is not Status.FAILED or order.reason is None:
        raise ActionRefused(f"retry needs a FAILED order; {order.order_no} is {order.status}")
    request_refused = (
        order.reason is Reason.PLACE_REJECTED and order.vendor_status in REQUEST_REFUSED
    )
    if order.reason is Reason.PLACE_REJECTED and not request_refused:
        raise ActionRefused(
            "retry of PLACE_REJECTED is refused: the vendor answers the same order_no with "
            "its first answer again"
        )
    if (
        order.reason in RETRY_PLACE
        or request_refused
        or (order.reason is Reason.INVALID_STATE and order.placements == 0)
    ):
        mode, status = "place", Status.PENDING
    elif order.reason in RETRY_POLL:
        mode, status = "poll", Status.ORDERED
    else:
        raise ActionRefused(f"retry of {order.reason} is not allowed")
    after = evolve(
        order,
        status=status,
        reason=None,
        description=f"reopened by {actor or 'operator'}" + (f": {note}" if note else ""),
        queries=0,
        abnormal=0,
        unknown_streak=0,
        next_run_at=now,
        started_at=now,
        updated_at=now,
        vendor_status=order.vendor_status if mode == "poll" else None,
    )
    event = Event(
        kind="retried",
        at=now,
        from_status=order.status,
        to_status=status,
        actor=actor,
        detail={"mode": mode, "note": note, "previous_reason": order.reason.value},
    )
    return Transition(after, (event,), "order.reopened"), mode


def resolve(
    order: Order,
    *,
    status: Status,
    note: str,
    now: datetime,
    actor: str | None,
    request_in_flight: bool,
) -> Transition:
    """Close a non-final order by hand as SUCCEEDED or FAILED/RESOLVED_BY_OPERATOR."""
    if status not in (Status.SUCCEEDED, Status.FAILED):
        raise ActionRefused("resolve takes status SUCCEEDED or FAILED")
    if not note.strip():
        raise ActionRefused("resolve needs a note saying why")
    if order.status.is_final:
        raise ActionRefused(f"{order.order_no} is already final ({order.status})")
    if order.status is Status.SENT and request_in_flight:
        raise ActionRefused(
            f"{order.order_no} has a place-order request in flight; resolve it once the "
            "answer is in"
        )
    reason = None if status is Status.SUCCEEDED else Reason.RESOLVED_BY_OPERATOR
    return _finish(
        order,
        status=status,
        reason=reason,
        description=note,
        now=now,
        kind="resolved",
        actor=actor,
        detail={"note": note},
    )


def cancel(
    order: Order, *, now: datetime, actor: str | None, note: str | None = None
) -> Transition:
    """Cancel before placing: only a PENDING order, never one that may have reached the vendor."""
    if order.status is not Status.PENDING:
        raise ActionRefused(f"cancel needs a PENDING order; {order.order_no} is {order.status}")
    return _finish(
        order,
        status=Status.FAILED,
        reason=Reason.CANCELLED,
        description=note or f"cancelled by {actor or 'operator'}",
        now=now,
        kind="cancelled",
        actor=actor,
        detail={"note": note} if note else None,
    )


def payment(order: Order, *, payment_status: str, now: datetime, actor: str | None) -> Transition:
    """Record a payment update; a PENDING order is looked at again at once."""
    if payment_status not in ("PAID", "UNPAID"):
        raise ActionRefused("payment_status must be PAID or UNPAID")
    wake = order.status is Status.PENDING
    after = evolve(
        order,
        payment_status=payment_status,
        updated_at=now,
        next_run_at=now if wake else order.next_run_at,
    )
    event = Event(
        kind="payment",
        at=now,
        from_status=order.status,
        to_status=order.status,
        actor=actor,
        detail={"payment_status": payment_status, "previous": order.payment_status},
    )
    return Transition(after, (event,))
