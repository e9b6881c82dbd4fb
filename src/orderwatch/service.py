"""The composition root and the service functions the CLI (and the API) call.

Settings are loaded once, the store is opened once, and every entry point — CLI command,
API handler, the demo — goes through :class:`Service`, so none of them writes SQL or
decides a transition itself.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clock import Clock, SystemClock
from .errors import OrderNotFound
from .intake import parse_import, validate_order
from .lifecycle import Event
from .notify import Channel, Deliverer
from .order import NewOrder, Order
from .settings import Loaded, SettingsHolder
from .store.base import InsertResult, OrderFilter, OutboxRow, Store
from .store.sql import SqlStore
from .vendors import VendorRegistry
from .worker import Worker


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
        vendors = kwargs.pop("vendors", None) or VendorRegistry(self.settings, clock=self.clock)
        rng = kwargs.pop("rng", None) or random.Random()
        return Worker(
            self.store, self.settings, clock=self.clock, vendors=vendors, rng=rng, **kwargs
        )

    def deliverer(self, channel: Channel | None = None) -> Deliverer:
        return Deliverer(self.store, clock=self.clock, channel=channel)
