"""Deliver the outbox: notifications written with the transitions they report.

A deliverer claims due outbox rows with a lease, like the workers claim orders, hands each to
a channel, and records what happened. The channel here logs the notification and counts it
delivered; webhook and broker channels plug in behind the same small interface.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from .clock import Clock
from .log import get_logger
from .store.base import OutboxResult, OutboxRow, Store

log = get_logger("orderwatch.notify")


@dataclass(frozen=True, slots=True)
class Delivery:
    ok: bool
    error: str | None = None
    permanent: bool = False


class Channel(Protocol):
    async def send(self, row: OutboxRow) -> Delivery: ...


class LogChannel:
    """Writes each notification to the log and counts it as delivered."""

    def __init__(self) -> None:
        self.sent: list[OutboxRow] = []

    async def send(self, row: OutboxRow) -> Delivery:
        log.info("notification", order_no=row.order_no, type=row.event_type, outbox_id=row.id)
        self.sent.append(row)
        return Delivery(ok=True)


class Deliverer:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        channel: Channel | None = None,
        batch_size: int = 100,
        lease: float = 60.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.channel = channel or LogChannel()
        self.batch_size = batch_size
        self.lease = lease
        self.delivered = 0
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run_once(self) -> int:
        rows = await self.store.claim_outbox(
            now=self.clock.now(),
            real_now=self.clock.real(),
            limit=self.batch_size,
            lease=self.lease,
        )
        if not rows:
            return 0
        results = []
        for row in rows:
            outcome = await self.channel.send(row)
            assert row.lease_token is not None
            now = self.clock.now()
            if outcome.ok:
                results.append(
                    OutboxResult(
                        row.id, row.lease_token, "delivered", row.attempts + 1, None, None, now
                    )
                )
            else:
                results.append(
                    OutboxResult(
                        row.id,
                        row.lease_token,
                        "failed" if outcome.permanent else "pending",
                        row.attempts + 1,
                        now,
                        outcome.error,
                        None,
                    )
                )
        await self.store.finish_outbox(results)
        self.delivered += sum(r.state == "delivered" for r in results)
        return len(rows)

    async def run(self, *, burst: bool = False, idle: float = 0.2) -> int:
        while not self._stopping:
            n = await self.run_once()
            if n == 0:
                if burst:
                    break
                await asyncio.sleep(idle)
        return self.delivered
