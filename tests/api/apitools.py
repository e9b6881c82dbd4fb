"""Helpers for the API tests: tokens per role, an order body, and :class:`Api`, which holds
the app, its service and an ASGI client, and puts orders into the states an operator meets
(failed for a reason, SENT with a request in flight) through the store's own verbs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from orderwatch.clock import ManualClock
from orderwatch.lifecycle import Event, Transition, mark_sent
from orderwatch.order import Order
from orderwatch.service import Service
from orderwatch.statuses import Reason, Status
from orderwatch.store.base import Write

TOKENS = {
    "platform": "tok-platform-0123456789",
    "operator": "tok-operator-0123456789",
    "viewer": "tok-viewer-0123456789",
}
NAMES = {"platform": "redemption-platform", "operator": "ops-alice", "viewer": "cs-bob"}


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def order_body(order_no: str = "R20261126000001", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_no": order_no,
        "vendor": "acme",
        "sku": "SKU-1001",
        "quantity": 1,
        "points": 12000,
        "customer_id": "C0001",
        "payment_status": "PAID",
        "recipient": {
            "name": "张三",
            "phone": "13800000000",
            "address": "上海市浦东新区世纪大道100号",
        },
    }
    body.update(changes)
    return body


def settings_overrides(db: Path, *, tokens: bool = True, **extra: Any) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "database": {"url": f"sqlite:///{db}"},
        "vendors": {
            "acme": {"base_url": "http://127.0.0.1:9", "merchant_id": "M0001", "secret": "s"},
            "globex": {"base_url": "http://127.0.0.1:9", "merchant_id": "M0002", "secret": "s"},
        },
        "api": {
            "tokens": [
                {"name": NAMES[role], "token": TOKENS[role], "role": role} for role in TOKENS
            ]
            if tokens
            else []
        },
    }
    overrides.update(extra)
    return overrides


@dataclass
class Api:
    service: Service
    app: FastAPI
    client: httpx.AsyncClient
    clock: ManualClock
    woken: list[int] = field(default_factory=list)

    async def create(self, order_no: str, **changes: Any) -> dict[str, Any]:
        r = await self.client.post(
            "/api/v1/orders", json=order_body(order_no, **changes), headers=auth("platform")
        )
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    async def order(self, order_no: str) -> Order:
        found = await self.service.store.get_order(order_no)
        assert found is not None
        return found

    async def force(self, order_no: str, **changes: Any) -> Order:
        """Put an order into a state (e.g. FAILED/VENDOR_FAILED) as a worker would have."""
        now = self.clock.now()

        def decide(o: Order, _real: Any) -> tuple[Transition, None]:
            after = replace(o, updated_at=now, **changes)
            if after.status.is_final:
                after = replace(after, next_run_at=None)
            event = Event(kind="test", at=now, from_status=o.status, to_status=after.status)
            return Transition(after, (event,)), None

        order, _ = await self.service.store.change_order(
            order_no, decide, real_now=self.clock.real(), outbox_item=lambda _t: None
        )
        return order

    async def fail(self, order_no: str, reason: Reason, *, placements: int = 1) -> Order:
        return await self.force(
            order_no, status=Status.FAILED, reason=reason, placements=placements
        )

    async def sent_in_flight(self, order_no: str) -> Order:
        """Claim the order and commit its SENT mark, keeping the lease: a request in flight."""
        claimed = await self.service.store.claim_due(
            now=self.clock.now(),
            real_now=self.clock.real(),
            limit=10,
            worker_id="test-worker",
            lease=60,
        )
        mine = [o for o in claimed if o.order_no == order_no]
        assert mine, "order not due"
        order = mine[0]
        sent = mark_sent(order, self.clock.now(), actor="test-worker")
        applied = await self.service.store.apply([Write(sent, order.lease_token, release=False)])
        assert order.id in applied
        others = {o.id: o.lease_token for o in claimed if o.order_no != order_no}
        await self.service.store.release({k: v for k, v in others.items() if v})
        return sent.order

    async def events(self, order_no: str) -> list[Event]:
        order = await self.order(order_no)
        return await self.service.store.get_events(order.id)

    async def count_orders(self) -> int:
        counts = await self.service.store.counts(now=self.clock.now())
        return sum(counts.by_status.values())


MakeApi = Callable[..., Awaitable[Api]]

PROBLEM = "application/problem+json"


def problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    data: dict[str, Any] = r.json()
    assert data["status"] == status
    assert {"type", "title", "status"} <= data.keys()
    return data


def fields(data: dict[str, Any]) -> set[str]:
    return {e["field"] for e in data["errors"]}
