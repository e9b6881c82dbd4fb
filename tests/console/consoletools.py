"""Helpers for the console tests: tokens per role, a seeded database, and logging in.

:func:`seed` fills a database the way production would: orders submitted through the
service, placed and polled by a real worker against the real HTTP simulator (on a manual
clock that ends near the real present, so the overview's time windows see them), then a
few orders put by the store's own verbs into the states an operator meets.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from orderwatch.clock import ManualClock
from orderwatch.lifecycle import Event, Transition
from orderwatch.order import Order
from orderwatch.service import Service
from orderwatch.settings import load_settings
from orderwatch.simulator import Simulator, SimulatorConfig
from orderwatch.statuses import Reason, Status
from orderwatch.views import outbox_item

TOKENS = {
    "platform": "tok-platform-0123456789",
    "operator": "tok-operator-0123456789",
    "viewer": "tok-viewer-0123456789",
}
NAMES = {"platform": "redemption-platform", "operator": "ops-alice", "viewer": "cs-bob"}
SECRET = "s3cret-vendor-key"
PHONE = "13912345678"
TRACKING = "SF0011223344"
VENDOR_ORDER = "V-778899"


def settings_overrides(db: Path, sim_url: str) -> dict[str, Any]:
    return {
        "database": {"url": f"sqlite:///{db}"},
        "vendors": {
            "acme": {
                "base_url": sim_url,
                "merchant_id": "M0001",
                "secret": SECRET,
                "timeout": "300ms",
            },
            "globex": {"base_url": "http://127.0.0.1:9", "merchant_id": "M0002", "secret": "s"},
        },
        "polling": {"jitter": 0.0},
        "api": {
            "tokens": [
                {"name": NAMES[role], "token": TOKENS[role], "role": role} for role in TOKENS
            ]
        },
    }


def load(db: Path, sim_url: str) -> Any:
    return load_settings(None, env={}, overrides=settings_overrides(db, sim_url))


def body(order_no: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "order_no": order_no,
        "vendor": "acme",
        "sku": "SKU-1001",
        "quantity": 1,
        "points": 12000,
        "customer_id": "C0001",
        "payment_status": "PAID",
        "recipient": {
            "name": "张三",
            "phone": PHONE,
            "address": "上海市浦东新区世纪大道100号",
        },
    }
    data.update(changes)
    return data


@dataclass
class Console:
    """The app over a copy of the seeded database, with an ASGI client."""

    service: Service
    client: httpx.AsyncClient
    seeded: Seeded


@dataclass
class Seeded:
    total: int
    unreachable: list[str]  # FAILED / PLACE_UNREACHABLE, vendor acme
    pending: str  # PENDING (never picked up)
    ordered: str  # ORDERED, with logistics, a masked-worthy event and a notification


async def seed(service: Service, clock: ManualClock, sim: Simulator) -> Seeded:
    """About 40 orders in every status; see the module docstring."""
    real_now = datetime.now(UTC).replace(microsecond=0)
    clock.set(real_now - timedelta(hours=20))
    worker = service.worker(rng=random.Random(0))
    try:
        for batch in range(4):
            orders = [
                service.validate(body(f"R2026{batch}{i:03d}", customer_id=f"C{i % 5:04d}"))
                for i in range(8)
            ]
            await service.submit(orders, actor="seed")
            await worker.run(burst=True)
            for _ in range(6):  # poll rounds, each at the next due time, up to the present
                due = await service.store.next_due_at(now=clock.now(), real_now=clock.real())
                if due is None or due > real_now - timedelta(minutes=20):
                    break
                clock.set(max(due, clock.now()))
                await worker.run(burst=True)
            clock.set(max(clock.now(), real_now - timedelta(hours=14 - 4 * batch)))
    finally:
        await worker.vendors.close()

    clock.set(real_now - timedelta(minutes=10))
    unreachable = ["R-UNREACH-1", "R-UNREACH-2", "R-UNREACH-3"]
    extra = [
        *(service.validate(body(no, customer_id="C-BULK")) for no in unreachable),
        service.validate(body("R-PENDING-1", customer_id="C-PEND")),
        service.validate(body("R-ORDERED-1", customer_id="C-SEARCH", points=5000)),
    ]
    await service.submit(extra, actor="seed")
    for no in unreachable:
        await force(
            service,
            clock,
            no,
            status=Status.FAILED,
            reason=Reason.PLACE_UNREACHABLE,
            description="no valid answer to place-order",
            placements=1,
        )
    await force(
        service,
        clock,
        "R-ORDERED-1",
        status=Status.ORDERED,
        vendor_order_id=VENDOR_ORDER,
        vendor_status="SHIPPED",
        placements=1,
        logistics={
            "carrier": "SF",
            "tracking_no": TRACKING,
            "events": [
                {"at": "2026-11-25T08:00:00Z", "text": "已揽收 picked up"},
                {"at": "2026-11-25T20:00:00Z", "text": "运输中 in transit"},
            ],
        },
        detail={
            "request": {"merchant_id": "M0001", "sign": "deadbeef" * 8, "phone": PHONE},
            "response": {"code": "0", "secret_hint": SECRET},
            "note": f"customer called from {PHONE}",
        },
        notify="order.shipped",
    )
    counts = await service.store.counts(now=clock.now())
    return Seeded(
        total=sum(counts.by_status.values()),
        unreachable=unreachable,
        pending="R-PENDING-1",
        ordered="R-ORDERED-1",
    )


async def force(
    service: Service,
    clock: ManualClock,
    order_no: str,
    *,
    detail: dict[str, Any] | None = None,
    notify: str | None = None,
    **changes: Any,
) -> Order:
    """Put an order into a state as a worker would have, with its event (and notification)."""
    now = clock.now()

    def decide(o: Order, _real: Any) -> tuple[Transition, None]:
        after = replace(o, updated_at=now, **changes)
        if after.status.is_final:
            after = replace(after, next_run_at=None)
        else:
            after = replace(after, next_run_at=now + timedelta(hours=1))
        event = Event(
            kind="seeded",
            at=now,
            from_status=o.status,
            to_status=after.status,
            outcome="shipped" if notify else None,
            http_status=200 if notify else None,
            latency_ms=42.0 if notify else None,
            detail=detail,
        )
        return Transition(after, (event,), notify), None

    order, _ = await service.store.change_order(
        order_no,
        decide,
        real_now=clock.real(),
        outbox_item=lambda t: outbox_item(t, [t.notify]) if t.notify else None,
    )
    return order


async def start_simulator(clock: ManualClock | None = None) -> Simulator:
    sim = Simulator(
        SimulatorConfig(
            secret=SECRET,
            merchant_id="M0001",
            seed=7,
            reject_rate=0.15,
            fail_rate=0.15,
            error_rate=0.1,
            ship_fraction=0.6,
            delivery_min=1800.0,
            delivery_max=6 * 3600.0,
            latency=0.002,
            latency_jitter=0.004,
            hang=0.5,
        ),
        clock=clock,
    )
    await sim.start("127.0.0.1", 0)
    return sim


_HIDDEN_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _HIDDEN_CSRF.search(html)
    assert found, "no csrf field on the page"
    return found.group(1)


async def login(client: httpx.AsyncClient, role: str) -> str:
    """Log in through the form; returns the session's CSRF token (from the overview)."""
    page = await client.get("/console/login")
    assert page.status_code == 200, page.text
    r = await client.post(
        "/console/login",
        data={"token": TOKENS[role], "csrf": csrf_of(page.text), "next": "/console"},
    )
    assert r.status_code == 303, r.text
    overview = await client.get("/console")
    assert overview.status_code == 200, overview.text
    return csrf_of(overview.text)
