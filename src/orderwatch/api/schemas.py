"""The wire shapes of the API, as pydantic models: request bodies and documented answers.

Answers are built by :func:`orderwatch.views.order_view` (the one shape the API, ``--json``
and webhooks share) and sent as they are; the response models here describe that shape in
the OpenAPI document, and the schemathesis suite checks every answer against them. Request
bodies are strict: a number sent as a string, or a key nobody defined, is refused by name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ..intake import printable
from ..statuses import Reason, Status

__all__ = [
    "ActionOut",
    "BulkOut",
    "BulkResolveIn",
    "BulkRetryIn",
    "FilterIn",
    "HealthOut",
    "NoteIn",
    "NotificationOut",
    "OrderDetailOut",
    "OrderOut",
    "OrderPage",
    "PaymentIn",
    "ProblemOut",
    "ResolveIn",
    "StatsOut",
    "VendorOut",
]

# ------------------------------------------------------------------------------ times

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_rfc3339(value: object) -> datetime:
    """An RFC 3339 time *with* its offset, as an aware datetime.

    Stricter than pydantic's parser, which also takes Unix seconds (``"3"``) and times
    without an offset: the API says "RFC 3339" and means it. A leap second (``:60``) is
    read as ``:59``; an instant UTC cannot hold is clamped to the first or last one.
    """
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time string, e.g. 2026-11-26T01:02:03Z")
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise ValueError("must be an RFC 3339 time with an offset, e.g. 2026-11-26T01:02:03Z")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if m.group(9):
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if m.group(9) == "-":
            offset = -offset
    try:
        local = datetime(
            year, month, day, hour, minute, min(second, 59), micro, tzinfo=timezone(offset)
        )
    except ValueError as exc:
        raise ValueError(f"not a valid time: {exc}") from None
    try:
        return local.astimezone(UTC)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC) if year > 5000 else datetime.min.replace(tzinfo=UTC)


Rfc3339 = Annotated[datetime, BeforeValidator(parse_rfc3339)]

# ------------------------------------------------------------------------------ answers


class RecipientOut(BaseModel):
    name: str
    phone: str = Field(description="Masked (138****0000) for the viewer role.")
    address: str = Field(description="Masked after its first 6 characters for viewers.")


class CountersOut(BaseModel):
    queries: int = Field(description="Result queries sent in this cycle, abnormal included.")
    abnormal: int = Field(description="Answers that told nothing (timeouts, 5xx, garbage).")
    takeovers: int = Field(description="Claims that found another worker's lease expired.")


class EventOut(BaseModel):
    """One timeline entry; keys without a value are left out."""

    model_config = ConfigDict(populate_by_name=True)

    at: datetime
    kind: str = Field(description="created, sent, placed, polled, retried, resolved, ...")
    from_: Status | None = Field(None, alias="from")
    to: Status | None = None
    reason: Reason | None = None
    outcome: str | None = None
    attempt: int | None = None
    http_status: int | None = None
    vendor_code: str | None = None
    latency_ms: float | None = None
    detail: dict[str, Any] | None = None
    actor: str | None = Field(None, description="Worker id, or the API token's name.")


class NotificationOut(BaseModel):
    """A customer notification in the outbox and how its delivery went."""

    id: int
    type: str = Field(description="order.shipped, order.succeeded, order.failed, ...")
    state: str = Field(description="pending, delivered, failed or skipped")
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    created_at: datetime


class OrderOut(BaseModel):
    """An order as the API, ``--json`` output and webhooks show it (DESIGN §8)."""

    order_no: str
    vendor: str
    sku: str
    quantity: int
    points: int
    customer_id: str | None
    payment_status: Literal["PAID", "UNPAID"]
    recipient: RecipientOut
    status: Status
    status_label: str = Field(description="The status in Chinese, e.g. 已下单.")
    reason: Reason | None = Field(description="Why a FAILED order failed; null otherwise.")
    reason_text: str | None
    description: str | None
    vendor_order_id: str | None
    logistics: dict[str, Any] | None
    counters: CountersOut
    placements: int = Field(description="Place-order requests sent, ever.")
    next_run_at: datetime | None = Field(description="When a worker looks at it next.")
    created_at: datetime
    updated_at: datetime


class OrderDetailOut(OrderOut):
    events: list[EventOut] | None = Field(
        None, description="The timeline, oldest first; left out with ?events=false."
    )
    notifications: list[NotificationOut]


class ActionOut(OrderOut):
    retry_mode: Literal["place", "poll"] | None = Field(
        None, description="For a retry: placed again (same order_no) or polled again."
    )


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class BulkOut(BaseModel):
    matched: int = Field(description="Orders the filter matched.")
    changed: int = Field(description="Orders changed (or that would be, with dry_run).")
    dry_run: bool


class StatsOut(BaseModel):
    by_status: dict[str, int]
    by_reason: dict[str, int]
    by_vendor: dict[str, dict[str, int]]
    due: int = Field(description="Open orders past their next_run_at: the backlog.")
    paused_vendors: dict[str, datetime]
    circuit_open: dict[str, datetime] = Field(
        description="Vendors whose circuit breaker is open, with when it lets calls through "
        "again (schedule time); their orders wait, nothing fails because of it."
    )
    at: datetime


class VendorOut(BaseModel):
    vendor: str
    paused: bool
    changed: bool = Field(description="False when it already was in that state.")
    paused_at: datetime | None


class HealthOut(BaseModel):
    status: str
    schema_revision: str | None = None


class FieldErrorOut(BaseModel):
    field: str = Field(description="Dotted path, e.g. recipient.phone.")
    message: str


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldErrorOut] | None = None
    fields: list[str] | None = Field(
        None, description="For 409 on POST /orders: the fields that differ from the stored order."
    )


# ------------------------------------------------------------------------------ bodies

_STRICT = ConfigDict(extra="forbid", strict=True)


def _not_blank(value: str | None) -> str | None:
    printable(value)  # before stripping: Python strips \x1c-\x1f and \x0b as spaces
    if value is not None and not value.strip():
        raise ValueError("must not be blank")
    return value.strip() if value is not None else None


class NoteIn(BaseModel):
    """An optional note, recorded on the action's event."""

    model_config = _STRICT

    note: str | None = Field(None, max_length=1000)

    _note = field_validator("note")(printable)


class ResolveIn(BaseModel):
    model_config = _STRICT

    status: Literal["SUCCEEDED", "FAILED"]
    note: str = Field(min_length=1, max_length=1000, description="Why: required.")

    _note = field_validator("note")(_not_blank)


class PaymentIn(BaseModel):
    model_config = _STRICT

    payment_status: Literal["PAID", "UNPAID"]


class PauseIn(BaseModel):
    model_config = _STRICT

    note: str | None = Field(None, max_length=1000)

    _note = field_validator("note")(printable)


class FilterIn(BaseModel):
    """Which orders a bulk action applies to: at least one key, all of them must match."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"minProperties": 1})

    status: Status | None = None
    reason: Reason | None = None
    vendor: str | None = Field(None, min_length=1, max_length=64)
    customer_id: str | None = Field(None, min_length=1, max_length=64)
    created_after: Rfc3339 | None = Field(None, description="RFC 3339; inclusive.")
    created_before: Rfc3339 | None = Field(None, description="RFC 3339; exclusive.")

    _names = field_validator("vendor", "customer_id")(printable)


class BulkRetryIn(BaseModel):
    model_config = _STRICT

    filter: FilterIn
    dry_run: bool = Field(False, description="Only count what would change.")
    note: str | None = Field(None, max_length=1000, description="Recorded on each event.")

    _note = field_validator("note")(printable)


class BulkResolveIn(BaseModel):
    model_config = _STRICT

    filter: FilterIn
    dry_run: bool = Field(False, description="Only count what would change.")
    status: Literal["SUCCEEDED", "FAILED"] = Field(description="The final status to set.")
    note: str = Field(min_length=1, max_length=1000, description="Why: required.")

    _note = field_validator("note")(_not_blank)


BODY_MODELS: tuple[type[BaseModel], ...] = (
    NoteIn,
    ResolveIn,
    PaymentIn,
    PauseIn,
    FilterIn,
    BulkRetryIn,
    BulkResolveIn,
)
