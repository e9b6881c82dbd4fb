"""What a vendor said, as plain values.

Adapters turn whatever came over the wire into exactly one of these; the state machine never
looks at HTTP. An answer that cannot be trusted (timeout, 5xx, HTML, bad signature, unmapped
status) is :class:`Abnormal`: it carries no information about the order and is retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: What the database keeps of an answer's identifiers (orders.vendor_order_id is
#: VARCHAR(128); order_events.vendor_code and orders.vendor_status VARCHAR(32)): a longer
#: value would fail the write of every result in the worker's batch.
MAX_VENDOR_ORDER_ID = 128
MAX_CODE = 32


def vendor_order_id_problem(value: str) -> str | None:
    """Why an adapter must not pass ``value`` on as a vendor order id (None: it may)."""
    if len(value) > MAX_VENDOR_ORDER_ID:
        return f"is longer than {MAX_VENDOR_ORDER_ID} characters"
    if "\x00" in value:  # PostgreSQL's text columns refuse NUL
        return "holds a NUL character"
    return None


@dataclass(frozen=True, slots=True)
class Accepted:
    """Place-order accepted; the vendor will now work on it."""

    vendor_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Place-order refused for a business reason (out of stock, bad address, ...)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class InProgress:
    """The vendor knows the order and has no result yet (``PROCESSING`` or ``SHIPPED``)."""

    vendor_status: str
    description: str | None = None
    logistics: dict[str, Any] | None = None
    shipped: bool = False
    vendor_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Delivered:
    """The vendor reports the goods delivered: the order succeeded."""

    description: str | None = None
    logistics: dict[str, Any] | None = None
    vendor_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class VendorFailed:
    """The vendor reports the order failed or was cancelled on its side."""

    description: str | None = None
    logistics: dict[str, Any] | None = None
    vendor_order_id: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownOrder:
    """The vendor says it does not know this order_no (``E404``)."""


@dataclass(frozen=True, slots=True)
class Abnormal:
    """No usable answer: the outcome is unknown and the request may be retried.

    ``kind`` is one of ``timeout``, ``network``, ``http_error``, ``maintenance``,
    ``malformed``, ``bad_signature``, ``vendor_error``, ``vendor_missing``.
    ``retry_after`` is in schedule seconds (the vendor's Retry-After or maintenance end).
    """

    kind: str
    detail: str = ""
    retry_after: float | None = None


Outcome = Accepted | Rejected | InProgress | Delivered | VendorFailed | UnknownOrder | Abnormal

#: Answers to a result query that mean the vendor knows the order.
KNOWN_ORDER = (InProgress, Delivered, VendorFailed)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request to a vendor and what came of it, for the timeline."""

    outcome: Outcome
    latency: float = 0.0  # real seconds
    http_status: int | None = None
    vendor_code: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome_name(self) -> str:
        return outcome_name(self.outcome)


def outcome_name(outcome: Outcome) -> str:
    """A short stable name for the timeline and metrics."""
    match outcome:
        case Accepted():
            return "accepted"
        case Rejected():
            return "rejected"
        case InProgress(shipped=True):
            return "shipped"
        case InProgress():
            return "processing"
        case Delivered():
            return "delivered"
        case VendorFailed():
            return "vendor_failed"
        case UnknownOrder():
            return "unknown_order"
        case Abnormal(kind=kind):
            return f"abnormal:{kind}"
