"""The composition root and the service functions the CLI (and the API) call.

Settings are loaded once, the store is opened once, and every entry point — CLI command,
API handler, the demo — goes through :class:`Service`, so none of them writes SQL or
decides a transition itself.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from . import lifecycle
from .clock import Clock, SystemClock
from .errors import OrderNotFound
from .intake import parse_import, validate_order
from .lifecycle import Event, Transition
from .notify import Channel, Deliverer, deliverer_for
from .order import NewOrder, Order
from .settings import Loaded, SettingsHolder
from .statuses import Status
from .store.base import InsertResult, OrderFilter, OutboxItem, OutboxRow, Store
from .store.sql import SqlStore
from .views import outbox_item
from .worker import Worker

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OrderDetail:
    order: Order
    events: list[Event]
    notifications: list[OutboxRow]


def open_store(url: str) -> SqlStore:
    return SqlStore(url)


class Service:
    def __init__(
        self,
        settings: SettingsHolder,
        store: Store,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock: Clock = clock or SystemClock()

    @classmethod
    async def open(
        cls, loaded: Loaded, *, clock: Clock | None = None, auto_upgrade: bool | None = None
    ) -> Service:
        """Open the configured database; the embedded SQLite default upgrades itself."""
        store = open_store(loaded.settings.database.url)
        if auto_upgrade is None:
            auto_upgrade = store.dialect == "sqlite"
        try:
            await store.ensure_schema(auto_upgrade=auto_upgrade)
        except BaseException:
            await store.close()
            raise
        return cls(SettingsHolder(loaded.settings, loaded.sources), store, clock=clock)

    async def close(self) -> None:
        await self.store.close()

    # ---------------------------------------------------------------- intake

    def validate(self, data: object, *, location: str | None = None) -> NewOrder:
        return validate_order(data, vendors=self.settings.current.vendors, location=location)

    async def submit(self, orders: Sequence[NewOrder], *, actor: str | None = None) -> InsertResult:
        """Store new orders as PENDING, due now. All or nothing; retries are idempotent."""
        return await self.store.insert_orders(orders, now=self.clock.now(), actor=actor)

    async def import_file(self, path: Path, *, actor: str | None = None) -> InsertResult:
        """Check every record of the file first; import all of them or none."""
        raw = await asyncio.to_thread(path.read_bytes)
        records = parse_import(raw, filename=path.name, vendors=self.settings.current.vendors)
        return await self.submit(records, actor=actor)

    # ---------------------------------------------------------------- reading

    async def get(self, order_no: str) -> OrderDetail:
        order = await self.store.get_order(order_no)
        if order is None:
            raise OrderNotFound(order_no)
        events = await self.store.get_events(order.id)
        notes = await self.store.list_outbox(order.id)
        return OrderDetail(order, events, notes)

    async def list(
        self, flt: OrderFilter, *, limit: int = 50, before_id: int | None = None
    ) -> list[Order]:
        return await self.store.list_orders(flt, limit=limit, before_id=before_id)

    # ---------------------------------------------------------------- running

    def worker(self, **kwargs: Any) -> Worker:
        """A worker on this service's store, settings and clock.

        It owns (and closes) its vendor connections unless ``vendors`` is passed in.
        """
        rng = kwargs.pop("rng", None) or random.Random()
        return Worker(self.store, self.settings, clock=self.clock, rng=rng, **kwargs)

    def deliverer(self, channel: Channel | None = None, **kwargs: Any) -> Deliverer:
        """The outbox deliverer; its channel follows ``[notify]`` (log without a URL)."""
        return deliverer_for(self.store, self.settings, clock=self.clock, channel=channel, **kwargs)

    async def redeliver_failed(self, flt: OrderFilter, *, dry_run: bool = False) -> tuple[int, int]:
        """Queue every failed notification of the filter's orders again: (matched, changed)."""
        return await self.store.redeliver_failed(flt, now=self.clock.now(), dry_run=dry_run)

    @property
    def actions(self) -> Actions:
        return Actions(self)


@dataclass(frozen=True, slots=True)
class ActionResult:
    order: Order
    retry_mode: str | None = None  # "place" or "poll" for a retry


@dataclass(frozen=True, slots=True)
class BulkResult:
    matched: int
    changed: int


class Actions:
    """Operator actions, shared by the CLI, the API and the console.

    Each one is a pure transition from :mod:`orderwatch.lifecycle` applied by the store in
    one transaction under a fresh lease token, with the caller's name on its event.
    """

    def __init__(self, service: Service) -> None:
        self.service = service

    def _outbox(self, t: Transition) -> OutboxItem | None:
        return outbox_item(t, self.service.settings.current.notify.events)

    async def _change(
        self, order_no: str, decide: Callable[[Order, datetime], tuple[Transition, T]]
    ) -> tuple[Order, T]:
        return await self.service.store.change_order(
            order_no, decide, real_now=self.service.clock.real(), outbox_item=self._outbox
        )

    async def retry(
        self, order_no: str, *, actor: str | None, note: str | None = None
    ) -> ActionResult:
        now = self.service.clock.now()
        order, mode = await self._change(
            order_no, lambda o, _real: lifecycle.retry(o, now, actor=actor, note=note)
        )
        return ActionResult(order, mode)

    async def resolve(
        self, order_no: str, *, status: str, note: str, actor: str | None
    ) -> ActionResult:
        now = self.service.clock.now()
        target = _final_status(status)

        def decide(o: Order, real_now: datetime) -> tuple[Transition, None]:
            in_flight = o.locked_until is not None and o.locked_until > real_now
            return lifecycle.resolve(
                o, status=target, note=note, now=now, actor=actor, request_in_flight=in_flight
            ), None

        order, _ = await self._change(order_no, decide)
        return ActionResult(order)

    async def cancel(
        self, order_no: str, *, actor: str | None, note: str | None = None
    ) -> ActionResult:
        now = self.service.clock.now()
        order, _ = await self._change(
            order_no, lambda o, _r: (lifecycle.cancel(o, now=now, actor=actor, note=note), None)
        )
        return ActionResult(order)

    async def payment(
        self, order_no: str, payment_status: str, *, actor: str | None
    ) -> ActionResult:
        now = self.service.clock.now()
        order, _ = await self._change(
            order_no,
            lambda o, _r: (
                lifecycle.payment(o, payment_status=payment_status, now=now, actor=actor),
                None,
            ),
        )
        return ActionResult(order)

    async def bulk(
        self,
        action: str,
        flt: OrderFilter,
        *,
        dry_run: bool,
        actor: str | None,
        note: str | None = None,
        status: str | None = None,
    ) -> BulkResult:
        """Apply ``retry`` or ``resolve`` to every order of the filter; count first if dry."""
        if action not in ("retry", "resolve"):
            raise ValueError("bulk action is retry or resolve")
        if action == "resolve" and (not note or not note.strip()):
            raise lifecycle.ActionRefused("resolve needs a note saying why")
        now = self.service.clock.now()
        real_now = self.service.clock.real()
        matched = changed = 0
        cursor: int | None = None
        while True:
            page = await self.service.list(flt, limit=500, before_id=cursor)
            if not page:
                break
            cursor = page[-1].id
            for o in page:
                matched += 1
                try:
                    if dry_run:
                        if action == "retry":
                            lifecycle.retry(o, now, actor=actor, note=note)
                        else:
                            in_flight = o.locked_until is not None and o.locked_until > real_now
                            lifecycle.resolve(
                                o,
                                status=_final_status(status or "FAILED"),
                                note=note or "",
                                now=now,
                                actor=actor,
                                request_in_flight=in_flight,
                            )
                    elif action == "retry":
                        await self.retry(o.order_no, actor=actor, note=note)
                    else:
                        await self.resolve(
                            o.order_no, status=status or "FAILED", note=note or "", actor=actor
                        )
                except lifecycle.ActionRefused:
                    continue
                changed += 1
        return BulkResult(matched, changed)


def _final_status(value: str) -> Status:
    if value not in ("SUCCEEDED", "FAILED"):
        raise lifecycle.ActionRefused("status must be SUCCEEDED or FAILED")
    return Status(value)
