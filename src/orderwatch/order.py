"""The order as the engine sees it: one row that is also its own schedule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from .statuses import Reason, Status


@dataclass(frozen=True, slots=True)
class Recipient:
    name: str
    phone: str
    address: str


@dataclass(frozen=True, slots=True)
class NewOrder:
    """An order as it arrives (DESIGN §8), already validated."""

    order_no: str
    vendor: str
    sku: str
    quantity: int
    points: int
    recipient: Recipient
    payment_status: str = "PAID"
    customer_id: str | None = None

    def body(self) -> dict[str, Any]:
        """The intake body, for idempotency checks (same order_no, same body)."""
        return {
            "order_no": self.order_no,
            "vendor": self.vendor,
            "sku": self.sku,
            "quantity": self.quantity,
            "points": self.points,
            "customer_id": self.customer_id,
            "payment_status": self.payment_status,
            "recipient": {
                "name": self.recipient.name,
                "phone": self.recipient.phone,
                "address": self.recipient.address,
            },
        }


@dataclass(slots=True)
class Order:
    """A stored order. Treated as immutable: a transition returns a new one (:func:`evolve`).

    Not ``frozen``: a frozen dataclass pays ``object.__setattr__`` for each of its fields on
    every copy, and the worker copies an order once or twice per vendor call. Nothing in
    orderwatch assigns to an Order's fields; a test checks that transitions leave their
    input unchanged.
    """

    id: int
    order_no: str
    vendor: str
    sku: str
    quantity: int
    points: int
    recipient: Recipient
    payment_status: str
    customer_id: str | None
    status: Status
    reason: Reason | None
    description: str | None
    vendor_order_id: str | None
    vendor_status: str | None
    logistics: dict[str, Any] | None
    queries: int  # result queries sent in this cycle, abnormal answers included
    abnormal: int  # answers that told nothing (timeouts, 5xx, garbage, bad signatures)
    takeovers: int  # claims that found another worker's lease expired
    placements: int  # place-order requests sent, ever
    unknown_streak: int  # "unknown order" answers in a row
    next_run_at: datetime | None
    started_at: datetime  # start of the current cycle: creation, or an operator's retry
    placed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    lease_token: str | None = None
    locked_until: datetime | None = None  # real time; a live lease means a worker is on it
    extra: dict[str, Any] = field(default_factory=dict)


def _unknown(changes: dict[str, Any]) -> None:
    names = {f.name for f in fields(Order)}
    raise TypeError(f"Order has no field {sorted(set(changes) - names)[0]!r}")


def _make_evolve() -> Callable[..., Order]:
    # dataclasses.replace() re-inspects every field on every call (~15 µs for an Order), and
    # even a generated Order(**fields) pays ~3.5 µs matching 28 keywords; the state machine
    # makes one or two copies per vendor call. So the copy is generated once: a bare
    # instance, each slot copied, then the changes set (~1.2 µs).
    names = [f.name for f in fields(Order)]
    copies = "".join(f"    new.{n} = order.{n}\n" for n in names)
    # a misspelt field is refused as a TypeError naming it, before anything is copied
    check = "    if not changes.keys() <= FIELDS:\n        unknown(changes)\n"
    namespace: dict[str, Any] = {
        "Order": Order,
        "FIELDS": frozenset(names),
        "unknown": _unknown,
        "bare": object.__new__,
    }
    exec(
        f"def evolve(order, /, **changes):\n{check}    new = bare(Order)\n{copies}"
        "    for name, value in changes.items():\n        setattr(new, name, value)\n"
        "    return new\n",
        namespace,
    )
    fn: Callable[..., Order] = namespace["evolve"]
    fn.__doc__ = "A copy of ``order`` with ``changes`` applied (a fast dataclasses.replace)."
    return fn


evolve = _make_evolve()
