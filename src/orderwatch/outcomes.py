"""What a vendor said, as plain values.

Adapters turn whatever came over the wire into exactly one of these; the state machine never
looks at HTTP. An answer that cannot be trusted (timeout, 5xx, HTML, bad signature, unmapped
status) is :class:`Abnormal`: it carries no information about the order and is retried.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from . import jsontext

#: What the database keeps of an answer's identifiers (orders.vendor_order_id is
#: VARCHAR(128); order_events.vendor_code and orders.vendor_status VARCHAR(32)): a longer
#: value would fail the write of every result in the worker's batch.
MAX_VENDOR_ORDER_ID = 128
MAX_CODE = 32


#: The largest logistics object kept (characters of JSON): a real one is a few kB, and
#: with the description it must fit a TEXT column (MariaDB: 64 KiB) at 4 bytes a character
#: (MariaDB's batched write-back cuts a longer text silently instead of failing).
MAX_LOGISTICS = 12_000

#: Logistics as stored. json.loads takes NaN and Infinity; what the order stores must be
#: writable as real JSON (the API and the webhook body), so logistics holding them is refused.
STORED_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def logistics_problem(value: dict[str, Any]) -> str | None:
    """Why ``value`` cannot be kept as an order's logistics (None: it can)."""
    try:
        size = len(STORED_JSON.encode(value))
    except ValueError:
        return "holds NaN or Infinity, which is not JSON"
    except TypeError:  # a plug-in's own object in it: JSON has no form for it
        return "holds a value that is not JSON"
    if size > MAX_LOGISTICS:
        return f"is larger than {MAX_LOGISTICS} characters of JSON"
    return None


def parsed_logistics_problem(value: dict[str, Any]) -> str | None:
    """:func:`logistics_problem` for logistics that ``json.loads`` made (dicts, lists,
    text, numbers, booleans, null: nothing orjson writes that json refuses), answered by
    orjson when it can. It writes NaN and Infinity as null, so text holding null, and
    anything it refuses (an integer beyond 64 bits) or that may be too long, is checked the
    strict way."""
    try:
        text = jsontext.dumps_plain(value)
    except TypeError:
        return logistics_problem(value)
    if len(text) > MAX_LOGISTICS or "null" in text:
        return logistics_problem(value)
    return None


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
        case _:  # a plug-in's answer of no known type (the worker takes it as abnormal)
            return "unknown"


_OUTCOMES = (Accepted, Rejected, InProgress, Delivered, VendorFailed, UnknownOrder, Abnormal)
#: per outcome type: the text fields it must carry, and those it may leave out (None)
_REQUIRED = {Rejected: ("code", "message"), InProgress: ("vendor_status",), Abnormal: ("kind",)}
_OPTIONAL = ("vendor_order_id", "description", "detail")


def answer_problem(outcome: Outcome) -> str | None:
    """Why the state machine must not take ``outcome``'s values as the order's (None:
    it may). The built-in adapters refuse such answers themselves (``checks_answers``);
    for any other adapter the worker asks this before using an answer, so that a plug-in
    cannot store a value the database would cut, refuse, or choke on."""
    kind = type(outcome)
    if kind not in _OUTCOMES:
        return f"{kind.__name__} is not one of orderwatch.outcomes' answers"
    for name in _REQUIRED.get(kind, ()):
        if type(getattr(outcome, name)) is not str:
            return f"{name} is {_a(getattr(outcome, name))}, not a string"
    for name in _OPTIONAL:
        value = getattr(outcome, name, None)
        if value is not None and type(value) is not str:
            return f"{name} is {_a(value)}, not a string"
    if isinstance(outcome, Abnormal) and outcome.retry_after is not None:
        wait = outcome.retry_after
        if type(wait) not in (int, float) or not math.isfinite(wait):
            return f"retry_after is {_a(wait)}, not a number of seconds"
    vendor_order_id = getattr(outcome, "vendor_order_id", None)
    problem = vendor_order_id and vendor_order_id_problem(vendor_order_id)
    if problem:
        return f"vendor_order_id {problem}"
    logistics = getattr(outcome, "logistics", None)
    if logistics is not None:
        if type(logistics) is not dict:
            return f"logistics is {_a(logistics)}, not an object"
        problem = logistics_problem(logistics)
        if problem:
            return f"logistics {problem}"
    return None


def _a(value: object) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _seconds(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0


def checked(exchange: Exchange) -> Exchange:
    """``exchange``, or an abnormal answer in its place if it is not one the engine can use
    (:func:`answer_problem`; the exchange's own fields too): retried on schedule, as a
    malformed answer from the wire is."""
    if type(exchange) is not Exchange:
        return Exchange(Abnormal("malformed", f"adapter answer: {_a(exchange)}, not an Exchange"))
    problem = answer_problem(exchange.outcome)
    latency, status, code = exchange.latency, exchange.http_status, exchange.vendor_code
    if not _seconds(latency):
        problem, latency = problem or f"latency is {latency!r}, not seconds", 0.0
    if status is not None and type(status) is not int:
        problem, status = problem or f"http_status is {_a(status)}, not an integer", None
    if code is not None and type(code) is not str:
        problem, code = problem or f"vendor_code is {_a(code)}, not a string", None
    if problem is None:
        return exchange
    return Exchange(Abnormal("malformed", f"adapter answer: {problem}"), latency, status, code)
