"""The public JSON shape of an order (DESIGN §8), shared by the API, ``--json`` and webhooks.

One function builds it so that every surface shows the same fields with the same names, times
in RFC 3339 UTC, and only plain JSON values (str, int, float, bool, None, list, dict): callers
can hand the result straight to ``json.dumps``.

>>> rfc3339(datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC))
'2026-11-26T01:02:03Z'
>>> mask_phone("13800000000")
'138****0000'
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

from . import jsontext
from .lifecycle import Event, Transition
from .order import Order
from .store.base import OutboxItem

__all__ = [
    "event_view",
    "mask_address",
    "mask_phone",
    "notification_body",
    "order_view",
    "outbox_item",
    "rfc3339",
]

_STARS = "****"


def rfc3339(dt: datetime) -> str:
    """``2026-11-26T01:02:03Z``: always UTC with ``Z``, microseconds only when there are any.

    A naive datetime is taken to be UTC already, which is how the stores hand times back.
    """
    # isoformat() is C code, and by default writes the microseconds only when there are
    # any; strftime, replace() and a timespec argument each cost more than all of it
    if dt.tzinfo is None:
        return dt.isoformat() + "Z"
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    return dt.isoformat()[:-6] + "Z"  # "+00:00" -> "Z"


def _time(dt: datetime | None) -> str | None:
    return None if dt is None else rfc3339(dt)


def mask_phone(phone: str) -> str:
    """``138****0000``: enough for a caller to confirm the number, not enough to dial it.

    Numbers shorter than 8 characters keep only their first and last character; the stars
    are always four, so the mask does not reveal the length either.
    """
    phone = phone.strip()
    if len(phone) >= 8:
        return phone[:3] + _STARS + phone[-4:]
    if len(phone) >= 3:
        return phone[0] + _STARS + phone[-1]
    return _STARS if phone else ""


def mask_address(address: str) -> str:
    """The first 6 characters (province and city, usually) then ``****``.

    An address of 6 characters or fewer keeps only its first half, so that masking a short
    address never shows all of it.
    """
    address = address.strip()
    if not address:
        return ""
    keep = 6 if len(address) > 6 else len(address) // 2
    return address[:keep] + _STARS


def _jsonable(value: Any) -> Any:
    """Plain JSON values from what stores and adapters keep in ``logistics`` and ``detail``."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def event_view(event: Event) -> dict[str, Any]:
    """One timeline entry; keys whose value is None are left out to keep timelines short."""
    view: dict[str, Any] = {
        "at": rfc3339(event.at),
        "kind": event.kind,
        "from": _jsonable(event.from_status),
        "to": _jsonable(event.to_status),
        "reason": _jsonable(event.reason),
        "outcome": event.outcome,
        "attempt": event.attempt,
        "http_status": event.http_status,
        "vendor_code": event.vendor_code,
        "latency_ms": event.latency_ms,
        "detail": _jsonable(event.detail),
        "actor": event.actor,
    }
    return {key: value for key, value in view.items() if value is not None}


def order_view(
    order: Order,
    *,
    events: Sequence[Event] | None = None,
    mask: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """An order as the API, ``--json`` output and webhooks show it (DESIGN §8).

    ``mask`` hides most of the recipient's phone and address (the ``viewer`` role).
    ``events`` adds the timeline; webhooks leave it out. ``now`` is accepted so callers can
    pass their clock uniformly; the shape does not depend on it today.
    """
    del now  # nothing in the public shape is relative to the current time (yet)
    view = _view(order, _jsonable(order.logistics), mask=mask)
    if events is not None:
        view["events"] = [event_view(e) for e in events]
    return view


def _view(order: Order, logistics: Any, *, mask: bool = False) -> dict[str, Any]:
    recipient = order.recipient
    return {
        "order_no": order.order_no,
        "vendor": order.vendor,
        "sku": order.sku,
        "quantity": order.quantity,
        "points": order.points,
        "customer_id": order.customer_id,
        "payment_status": order.payment_status,
        "recipient": {
            "name": recipient.name,
            "phone": mask_phone(recipient.phone) if mask else recipient.phone,
            "address": mask_address(recipient.address) if mask else recipient.address,
        },
        "status": order.status.value,
        "status_label": order.status.label,
        "reason": None if order.reason is None else order.reason.value,
        "reason_text": None if order.reason is None else order.reason.text,
        "description": order.description,
        "vendor_order_id": order.vendor_order_id,
        "logistics": logistics,
        "counters": {
            "queries": order.queries,
            "abnormal": order.abnormal,
            "takeovers": order.takeovers,
        },
        "placements": order.placements,
        "next_run_at": _time(order.next_run_at),
        "created_at": rfc3339(order.created_at),
        "updated_at": rfc3339(order.updated_at),
    }


def notification_body(transition: Transition) -> str:
    """The webhook body for a transition, fixed when the transition is stored.

    Written to the outbox in the same transaction as the transition, so every retry sends
    the same bytes and a notification never describes a state that was not committed.
    """
    order = transition.order
    # The logistics go in as they are: dumps_plain writes plain JSON values exactly as
    # jsontext.dumps writes them once made plain, and refuses (TypeError) whatever
    # _jsonable would change — a datetime, a subclass, a set, a key that is not a string,
    # an integer beyond 64 bits — in which case the body is made as order_view makes it.
    body: dict[str, Any] = {
        "type": transition.notify,
        "timestamp": rfc3339(order.updated_at),
        "data": _view(order, order.logistics),
    }
    try:
        return jsontext.dumps_plain(body)
    except TypeError:
        body["data"]["logistics"] = _jsonable(order.logistics)
        return jsontext.dumps(body)


def outbox_item(transition: Transition, enabled: Collection[str]) -> OutboxItem | None:
    """The outbox row a transition needs: pending if its type is enabled, else skipped."""
    if transition.notify is None:
        return None
    state = "pending" if transition.notify in enabled else "skipped"
    return OutboxItem(transition.notify, notification_body(transition), state)
