"""Helpers for the notification tests: a real SQLite outbox and a real webhook receiver.

The receiver is an aiohttp server on 127.0.0.1 that checks every request with the
``standardwebhooks`` reference library (not orderwatch's code) and answers as a plan says:
``200``, ``500``, ``503``, ``429`` (with Retry-After), ``410``, ``timeout`` (no answer
before the client gives up), ``slow`` (200 at once, then a body that trickles), ``hang``
(no answer until released). Outbox rows are written the way workers write them: claim the
order, apply a transition with its outbox item, through :class:`SqlStore`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError
from tests.support.orders import new_order

from orderwatch.clock import ManualClock
from orderwatch.lifecycle import Event, Transition
from orderwatch.notify import Deliverer
from orderwatch.order import Order
from orderwatch.statuses import Reason, Status
from orderwatch.store.base import OutboxItem, OutboxRow, Write
from orderwatch.store.schema import outbox
from orderwatch.store.sql import SqlStore
from orderwatch.views import notification_body

START = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


SECRET = new_secret()


# ---------------------------------------------------------------- writing notifications


def _step(order: Order, kind: str, at: datetime) -> Transition:
    """A transition that notifies ``kind`` (order.shipped keeps the order open)."""
    if kind == "order.shipped":
        after = replace(
            order,
            status=Status.ORDERED,
            description="in transit",
            vendor_order_id="V1",
            logistics={"carrier": "SF", "tracking_no": "SF1234567890", "events": []},
            next_run_at=at,
            updated_at=at,
        )
        return Transition(after, (Event(kind="shipped", at=at),), kind)
    status = Status.SUCCEEDED if kind == "order.succeeded" else Status.FAILED
    after = replace(
        order,
        status=status,
        reason=None if status is Status.SUCCEEDED else Reason.VENDOR_FAILED,
        description="delivered" if status is Status.SUCCEEDED else "vendor says no",
        next_run_at=None,
        updated_at=at,
    )
    ev = Event(kind="finished", at=at, from_status=order.status, to_status=status)
    return Transition(after, (ev,), kind)


async def notify_orders(
    store: SqlStore,
    numbers: Sequence[str],
    kinds: Sequence[str] = ("order.succeeded",),
    *,
    at: datetime = START,
) -> None:
    """Each order gets the notifications ``kinds``, in that order, one transition each."""
    await store.insert_orders([new_order(n) for n in numbers], now=at)
    for i, kind in enumerate(kinds):
        when = at + timedelta(seconds=i)
        claimed = await store.claim_due(
            now=when, real_now=when, limit=len(numbers), worker_id="t", lease=60
        )
        assert len(claimed) == len(numbers)
        writes = []
        for order in claimed:
            t = _step(order, kind, when)
            writes.append(Write(t, order.lease_token, OutboxItem(kind, notification_body(t))))
        assert len(await store.apply(writes)) == len(numbers)


async def outbox_rows(store: SqlStore) -> list[OutboxRow]:
    def read(conn: sa.Connection) -> list[OutboxRow]:
        from orderwatch.store.sql import _row_to_outbox

        return [_row_to_outbox(r._mapping) for r in conn.execute(sa.select(outbox))]

    return await store.execute(read)


async def next_pending_at(store: SqlStore) -> datetime | None:
    """When the next claimable row is due: the earliest head of an order's pending queue."""
    older = outbox.alias("older")
    earlier = (
        sa.select(older.c.id)
        .where(
            older.c.order_id == outbox.c.order_id,
            older.c.state == "pending",
            older.c.id < outbox.c.id,
        )
        .exists()
    )

    def read(conn: sa.Connection) -> datetime | None:
        value: datetime | None = conn.execute(
            sa.select(sa.func.min(outbox.c.next_attempt_at)).where(
                outbox.c.state == "pending", ~earlier
            )
        ).scalar_one()
        return None if value is None else value.replace(tzinfo=UTC)

    return await store.execute(read)


async def drive(
    deliverer: Deliverer,
    store: SqlStore,
    clock: ManualClock,
    *,
    until: datetime | None = None,
    on_tick: Callable[[datetime], Awaitable[None]] | None = None,
) -> None:
    """Deliver, then jump schedule time to the next retry, until nothing is pending."""
    while True:
        if await deliverer.run_once():
            continue
        nxt = await next_pending_at(store)
        if nxt is None or (until is not None and nxt > until):
            return
        clock.set(max(nxt, clock.now()))
        if on_tick is not None:
            await on_tick(clock.now())


# ---------------------------------------------------------------- the receiver


@dataclass
class Hit:
    msg_id: str
    timestamp: int
    order_no: str
    type: str
    at: datetime  # schedule time when it arrived
    answer: str
    body: bytes
    verified: bool


Plan = Callable[[Hit, int], str]  # (the request, how many times this id came before) → answer


@dataclass
class Receiver:
    clock: ManualClock
    secret: str = SECRET
    plan: Plan = lambda hit, n: "200"
    retry_after: str = "600"
    hits: list[Hit] = field(default_factory=list)
    port: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    handler_delay: float = 0.0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def by_id(self, msg_id: str) -> list[Hit]:
        return [h for h in self.hits if h.msg_id == msg_id]

    def delivered(self) -> list[Hit]:
        """Requests answered 2xx (``slow`` sends its 200 before the body)."""
        return [h for h in self.hits if h.answer in ("200", "slow")]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        app.router.add_post("/elsewhere", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            data: Any = Webhook(self.secret).verify(body, dict(request.headers))
            verified = True
        except WebhookVerificationError:
            data, verified = json.loads(body), False
        msg_id = request.headers.get("webhook-id", "")
        hit = Hit(
            msg_id=msg_id,
            timestamp=int(request.headers.get("webhook-timestamp", "0")),
            order_no=data["data"]["order_no"],
            type=data["type"],
            at=self.clock.now(),
            answer="",
            body=body,
            verified=verified,
        )
        hit.answer = "401" if not verified else self.plan(hit, len(self.by_id(msg_id)))
        self.hits.append(hit)
        self.arrived.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.handler_delay:
                await asyncio.sleep(self.handler_delay)
            return await self._answer(hit.answer, request)
        finally:
            self.in_flight -= 1

    async def _answer(self, answer: str, request: web.Request) -> web.StreamResponse:
        if answer in ("timeout", "hang"):
            await self.release.wait()
            return web.Response(status=200)
        if answer == "slow":
            resp = web.StreamResponse(status=200)
            resp.content_length = 1000
            await resp.prepare(request)
            try:
                for _ in range(10):
                    await resp.write(b"x" * 100)
                    await asyncio.sleep(0.5)
            except ConnectionError:
                pass  # the client took the status and left: that is the point
            return resp
        if answer == "429":
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        if answer == "302":
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        if answer == "huge500":
            return web.Response(status=500, body=b"E" * (4 << 20))
        return web.Response(status=int(answer), text=f"answer {answer}")


MakeReceiver = Callable[..., Awaitable[Receiver]]
