"""The storage interface, in the engine's words.

The engine, the CLI and the API speak to storage only through :class:`Store`. Every write
that follows a claim is *fenced*: it carries the lease token the claim handed out and is
applied only if the row still holds that token. A worker whose lease expired and was taken
over gets its write discarded (reported back, never raised), so an answer is never applied
twice. The implementation is :mod:`.sql` (SQLite, PostgreSQL, MySQL/MariaDB);
``tests/contract`` runs one suite against each database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from ..lifecycle import Event, Transition
from ..order import NewOrder, Order

T = TypeVar("T")

#: The actor recorded on a pause that a vendor's circuit breaker opened.
CIRCUIT_BREAKER = "circuit-breaker"


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A customer notification, written with the transition it reports."""

    event_type: str
    payload: str  # JSON body
    state: str = "pending"  # or "skipped" when notify.events leaves the type out


@dataclass(slots=True)
class Write:
    """A transition to store, fenced by the lease token its writer holds (treated as
    immutable; not ``frozen``, which costs a call per field, once per vendor call).

    ``release`` gives the row back (normal write-back); the SENT mark before place-order
    keeps the lease because the worker is about to call the vendor. ``fallback(error)``:
    what to store instead if the database refuses a value in the transition (the vendor's
    answer taken as abnormal, none of its values kept); the store itself ignores it.
    """

    transition: Transition
    token: str | None
    outbox: OutboxItem | None = None
    release: bool = True
    fallback: Callable[[str], Transition] | None = None


@dataclass(frozen=True, slots=True)
class InsertResult:
    created: list[Order]
    existing: list[Order]  # same order_no, same body: nothing written


@dataclass(frozen=True, slots=True)
class OrderFilter:
    status: str | None = None
    reason: str | None = None
    vendor: str | None = None
    customer_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    order_id: int
    order_no: str
    event_type: str
    payload: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None = None
    last_error: str | None = None
    lease_token: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxResult:
    """What a delivery attempt did to an outbox row."""

    id: int
    token: str
    state: str  # delivered | pending (retry) | failed
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None


@dataclass
class Counts:
    by_status: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    by_vendor: dict[str, dict[str, int]] = field(default_factory=dict)
    due: int = 0


class Store(Protocol):
    async def insert_orders(
        self, orders: Sequence[NewOrder], *, now: datetime, actor: str | None = None
    ) -> InsertResult:
        """All or nothing. Same order_no with another body raises Conflict, nothing written."""

    async def claim_due(
        self,
        *,
        now: datetime,
        real_now: datetime,
        limit: int,
        worker_id: str,
        lease: float,
        skip_vendors: Sequence[str] = (),
    ) -> list[Order]:
        """Lease up to ``limit`` due orders, earliest first; each gets a fresh lease token.

        ``skip_vendors``: vendors whose orders this worker cannot call now (it holds a
        backlog of theirs), left for later or for other workers."""

    async def apply(self, writes: Sequence[Write]) -> set[int]:
        """Store transitions whose token still matches; returns the ids that were applied."""

    async def renew_leases(self, tokens: Mapping[int, str], *, until: datetime) -> int: ...

    async def release(self, tokens: Mapping[int, str]) -> None: ...

    async def next_due_at(
        self, *, now: datetime, real_now: datetime, skip_vendors: Sequence[str] = ()
    ) -> datetime | None: ...

    async def get_order(self, order_no: str) -> Order | None: ...

    async def get_events(self, order_id: int) -> list[Event]: ...

    async def list_orders(
        self, flt: OrderFilter, *, limit: int = 50, before_id: int | None = None
    ) -> list[Order]:
        """Newest first; ``before_id`` is the cursor (the last id of the previous page)."""

    async def counts(self, *, now: datetime) -> Counts: ...

    async def change_order(
        self,
        order_no: str,
        decide: Callable[[Order, datetime], tuple[Transition, T]],
        *,
        real_now: datetime,
        outbox_item: Callable[[Transition], OutboxItem | None],
        actor: str | None = None,
    ) -> tuple[Order, T]:
        """An operator's action: read, decide (may raise to refuse) and write, fenced."""

    async def pause_vendor(
        self, vendor: str, *, now: datetime, actor: str | None, note: str | None
    ) -> bool: ...

    async def resume_vendor(self, vendor: str) -> bool: ...

    async def paused_vendors(self) -> dict[str, datetime]:
        """Operators' pauses (they last until resumed), with when each began."""

    async def open_circuit(self, vendor: str, *, now: datetime, until: datetime, note: str) -> bool:
        """Pause a vendor until ``until`` (schedule time) because calls to it keep failing."""

    async def close_circuit(self, vendor: str) -> bool: ...

    async def open_circuits(self, *, now: datetime) -> dict[str, datetime]: ...

    async def claim_outbox(
        self, *, now: datetime, real_now: datetime, limit: int, lease: float
    ) -> list[OutboxRow]: ...

    async def finish_outbox(self, results: Sequence[OutboxResult]) -> set[int]: ...

    async def list_outbox(self, order_id: int) -> list[OutboxRow]: ...

    async def redeliver(self, order_no: str, outbox_id: int, *, now: datetime) -> OutboxRow:
        """Queue one notification again (an operator's redeliver)."""

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` when new work is committed elsewhere; runs until cancelled."""

    async def prune(
        self, *, finished_before: datetime, now: datetime, limit: int = 10_000
    ) -> int: ...

    async def close(self) -> None: ...

    async def claim_outbox_ordered(
        self, *, now: datetime, real_now: datetime, limit: int, lease: float
    ) -> list[OutboxRow]:
        """:meth:`claim_outbox` limited to the oldest pending notification of each order."""

    async def redeliver_failed(
        self, flt: OrderFilter, *, now: datetime, dry_run: bool = False
    ) -> tuple[int, int]:
        """Queue again every failed notification of the matching orders: (matched, changed)."""
