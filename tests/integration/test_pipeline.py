"""The whole pipeline over loopback: simulator (aiohttp) ⇄ reference adapter ⇄ worker ⇄ database.

Each test sets the simulated vendor up to behave one way, runs a real worker against it on a
shared manual clock, and checks what an operator would: the final status and reason, the
description, the counters, one timeline event per vendor exchange (outcome, HTTP status,
latency), the customer notification, and — above all — one place-order request per order
as counted by the vendor itself.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.support.databases import KINDS
from tests.support.orders import new_order

from orderwatch import lifecycle
from orderwatch import worker as worker_module
from orderwatch.clock import CompressedClock, ManualClock
from orderwatch.demo import make_orders, run_demo, simulator_config
from orderwatch.errors import Conflict
from orderwatch.order import Order
from orderwatch.service import OrderDetail, Service
from orderwatch.simulator import Simulator
from orderwatch.statuses import Reason, Status
from orderwatch.store.base import OrderFilter, Write
from orderwatch.vendors.reference import ReferenceAdapter
from orderwatch.worker import Worker

SECRET = "s3cret"  # the vendor secret the conftest factories configure
MINUTE = 60.0
HOUR = 3600.0


@pytest.fixture(params=KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    """Every behaviour on SQLite, PostgreSQL and MariaDB (DESIGN §6)."""
    return str(request.param)


MakeSimulator = Callable[..., Awaitable[Simulator]]
MakeService = Callable[..., Awaitable[Service]]
MakeWorker = Callable[..., Worker]
Drive = Callable[..., Awaitable[dict[str, Order]]]


@dataclass
class World:
    clock: ManualClock
    sim: Simulator
    service: Service
    worker: Worker
    drive_fn: Drive

    async def burst(self) -> None:
        await self.worker.run(burst=True)

    async def submit(self, order_no: str, **changes: Any) -> None:
        result = await self.service.submit([new_order(order_no, **changes)], actor="test")
        assert [o.order_no for o in result.created] == [order_no]

    async def drive(self, *order_nos: str, max_rounds: int = 60) -> None:
        await self.drive_fn(self.service, self.worker, self.clock, order_nos, max_rounds=max_rounds)

    async def detail(self, order_no: str) -> OrderDetail:
        return await self.service.get(order_no)


MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture
def make_world(
    clock: ManualClock,
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    drive: Drive,
) -> MakeWorld:
    async def factory(
        *,
        sim: dict[str, Any] | None = None,
        polling: dict[str, Any] | None = None,
        vendor: dict[str, Any] | None = None,
    ) -> World:
        simulator = await make_simulator(clock, **(sim or {}))
        assert simulator.base_url is not None
        service = await make_service(simulator.base_url, clock, polling=polling, vendor=vendor)
        return World(clock, simulator, service, make_worker(service), drive)

    return factory


# ---------------------------------------------------------------------------- checks


def exchanges(detail: OrderDetail) -> list[lifecycle.Event]:
    return [e for e in detail.events if e.outcome is not None]


def check_timeline(
    detail: OrderDetail, sim: Simulator, *, maintenance_answers: int | None = 0
) -> None:
    """What every order's record must show, whatever its fate.

    ``maintenance_answers`` None (a noisy mixed run) checks the vendor's request counts as
    upper bounds only: a maintenance answer or a refused connection never reaches the
    vendor's counters, so the order may have sent more than the vendor counted.
    """
    order = detail.order
    events = detail.events
    # One event per vendor exchange, each with its outcome and its real latency.
    assert len(exchanges(detail)) == order.placements + order.queries, events
    for e in exchanges(detail):
        assert e.latency_ms is not None
        assert e.latency_ms > 0, e
        if e.outcome not in ("abnormal:timeout", "abnormal:network"):
            assert e.http_status is not None, e
    # The vendor saw exactly what the order's counters say it was sent.
    if maintenance_answers is None:
        assert sim.place_requests[order.order_no] <= order.placements
        assert sim.query_requests[order.order_no] <= order.queries
    else:
        assert sim.place_requests[order.order_no] == order.placements
        assert sim.query_requests[order.order_no] + maintenance_answers == order.queries
    # The status changes chain from creation to the status stored on the order.
    assert events[0].kind == "created"
    assert events[0].to_status is Status.PENDING
    status = Status.PENDING
    for e in events[1:]:
        assert e.from_status is status, (e, events)
        assert e.to_status is not None
        status = e.to_status
    assert status is order.status
    if order.status.is_final:
        assert order.next_run_at is None
        final = [n for n in detail.notifications if n.event_type.startswith("order.")]
        kind = "order.succeeded" if order.status is Status.SUCCEEDED else "order.failed"
        assert [n.event_type for n in final if n.event_type == kind] == [kind]
        body = json.loads(next(n.payload for n in final if n.event_type == kind))
        assert body["type"] == kind
        assert body["data"]["order_no"] == order.order_no
        assert body["data"]["status"] == order.status.value
        assert body["data"]["reason"] == (order.reason.value if order.reason else None)
    if order.status is Status.SUCCEEDED:
        assert order.reason is None
    elif order.status is Status.FAILED:
        assert order.reason is not None
        assert events[-1].reason is order.reason


def query_times(detail: OrderDetail) -> list[float]:
    """Schedule seconds after the place-order at which each result query was answered."""
    placed = next(e.at for e in detail.events if e.kind in ("placed", "place_unknown"))
    queried = [e for e in exchanges(detail) if e.kind not in ("placed", "place_unknown")]
    return [(e.at - placed).total_seconds() for e in queried]


# ---------------------------------------------------------------------------- placing


async def test_accepted_order_is_polled_until_delivered(make_world: MakeWorld) -> None:
    w = await make_world(sim={"delivery_min": 2 * HOUR, "delivery_max": 2 * HOUR})
    await w.submit("R1")
    await w.drive("R1")

    d = await w.detail("R1")
    o = d.order
    assert o.status is Status.SUCCEEDED
    assert o.reason is None
    assert o.description == "已签收"
    assert o.vendor_order_id is not None
    assert o.vendor_order_id.startswith("V")
    assert o.logistics is not None
    assert o.logistics["carrier"] == "SF"
    assert o.logistics["tracking_no"].startswith("SF")
    assert [ev["text"] for ev in o.logistics["events"]][-1] == "已签收"
    assert (o.placements, o.abnormal, o.takeovers) == (1, 0, 0)
    # 10m initial delay, then 5m doubling: shipped at 48m, delivered at 2h.
    assert query_times(d) == [600, 900, 1500, 2700, 5100, 9900]
    assert [e.kind for e in d.events] == [
        "created",
        "sent",
        "placed",
        "queried",
        "queried",
        "queried",
        "queried",
        "shipped",
        "succeeded",
    ]
    assert [e.outcome for e in exchanges(d)] == [
        "accepted",
        *["processing"] * 4,
        "shipped",
        "delivered",
    ]
    assert {e.http_status for e in exchanges(d)} == {200}
    assert [(n.event_type, n.state) for n in d.notifications] == [
        ("order.shipped", "pending"),
        ("order.succeeded", "pending"),
    ]
    check_timeline(d, w.sim)
    assert w.sim.place_requests["R1"] == 1

    delivered = await w.service.deliverer().run(burst=True)
    assert delivered == 2
    d = await w.detail("R1")
    assert [n.state for n in d.notifications] == ["delivered", "delivered"]


async def test_rejected_order_fails_with_the_vendor_code(make_world: MakeWorld) -> None:
    w = await make_world(sim={"reject_rate": 1.0})
    await w.submit("R1")
    await w.drive("R1")

    d = await w.detail("R1")
    assert d.order.status is Status.FAILED
    assert d.order.reason is Reason.PLACE_REJECTED
    assert re.fullmatch(r"E10[12] (out of stock|bad address)", d.order.description or "")
    last = d.events[-1]
    assert last.kind == "place_rejected"
    assert last.vendor_code == (d.order.description or "")[:4]
    assert last.http_status == 200
    assert last.outcome == "rejected"
    assert d.order.queries == 0
    assert w.sim.place_requests["R1"] == 1
    assert w.sim.stats()["queries"] == 0
    check_timeline(d, w.sim)


async def test_unpaid_order_fails_without_calling_the_vendor(make_world: MakeWorld) -> None:
    w = await make_world()
    await w.submit("R1", payment_status="UNPAID")
    await w.drive("R1")

    d = await w.detail("R1")
    assert (d.order.status, d.order.reason) == (Status.FAILED, Reason.UNPAID)
    assert "not paid" in (d.order.description or "")
    assert [e.kind for e in d.events] == ["created", "failed"]
    stats = w.sim.stats()
    assert (stats["place_requests"], stats["queries"]) == (0, 0)
    check_timeline(d, w.sim)


async def test_unpaid_order_waits_for_the_payment_grace(make_world: MakeWorld) -> None:
    w = await make_world(polling={"payment_grace": "30m"})
    created = w.clock.now()
    await w.submit("R1", payment_status="UNPAID")
    await w.burst()

    d = await w.detail("R1")
    assert d.order.status is Status.PENDING
    assert d.order.next_run_at == created + timedelta(minutes=30)
    assert d.order.description == "waiting for payment"
    assert d.events[-1].kind == "payment_wait"

    await w.drive("R1")
    d = await w.detail("R1")
    assert (d.order.status, d.order.reason) == (Status.FAILED, Reason.UNPAID)
    assert "grace" in (d.order.description or "")
    assert d.events[-1].at == created + timedelta(minutes=30)
    assert w.sim.stats()["place_requests"] == 0
    check_timeline(d, w.sim)


async def test_lost_place_answer_is_reconciled_not_placed_again(make_world: MakeWorld) -> None:
    w = await make_world(
        sim={
            "place_timeout_rate": 1.0,
            "place_timeout_recorded": 1.0,
            "delivery_min": HOUR,
            "delivery_max": HOUR,
        }
    )
    placed = w.clock.now()
    await w.submit("R1")
    await w.burst()

    d = await w.detail("R1")
    assert d.order.status is Status.SENT
    assert "reconciling" in (d.order.description or "")
    assert "timeout" in (d.order.description or "")
    assert d.order.next_run_at == placed + timedelta(minutes=5)  # initial_interval
    unknown = d.events[-1]
    assert unknown.kind == "place_unknown"
    assert unknown.outcome == "abnormal:timeout"
    assert unknown.http_status is None
    assert unknown.latency_ms is not None
    assert unknown.latency_ms >= 250  # the 300 ms vendor timeout, in real time

    await w.drive("R1")
    d = await w.detail("R1")
    assert d.order.status is Status.SUCCEEDED
    assert d.order.reason is None
    assert "reconciled" in [e.kind for e in d.events]
    assert "placed" not in [e.kind for e in d.events]
    assert w.sim.place_requests["R1"] == 1
    assert d.order.abnormal == 1
    check_timeline(d, w.sim)


async def test_lost_place_never_recorded_ends_unreachable(make_world: MakeWorld) -> None:
    w = await make_world(
        sim={"place_timeout_rate": 1.0, "place_timeout_recorded": 0.0},
        polling={"reconcile_attempts": 3},
    )
    await w.submit("R1")
    await w.drive("R1")

    d = await w.detail("R1")
    assert (d.order.status, d.order.reason) == (Status.FAILED, Reason.PLACE_UNREACHABLE)
    assert "3 queries in a row" in (d.order.description or "")
    assert d.order.queries == 3
    assert [e.vendor_code for e in exchanges(d)][1:] == ["E404"] * 3
    assert Status.ORDERED not in {e.to_status for e in d.events}
    assert w.sim.place_requests["R1"] == 1
    check_timeline(d, w.sim)


async def test_on_place_unknown_fail_ends_at_once(make_world: MakeWorld) -> None:
    w = await make_world(
        sim={"place_timeout_rate": 1.0, "place_timeout_recorded": 1.0},
        polling={"on_place_unknown": "fail"},
    )
    await w.submit("R1")
    await w.burst()

    d = await w.detail("R1")
    assert (d.order.status, d.order.reason) == (Status.FAILED, Reason.PLACE_UNREACHABLE)
    assert "no valid answer to place-order" in (d.order.description or "")
    assert "timeout" in (d.order.description or "")
    assert d.order.queries == 0
    assert w.sim.place_requests["R1"] == 1
    assert w.sim.stats()["queries"] == 0
    check_timeline(d, w.sim)


# ---------------------------------------------------------------------------- polling


@pytest.mark.parametrize("style", ["http", "code"])
async def test_maintenance_window_defers_the_next_query(make_world: MakeWorld, style: str) -> None:
    window = (5 * MINUTE, 5 * MINUTE + 3 * HOUR)
    w = await make_world(
        sim={
            "maintenance": [window],
            "maintenance_style": style,
            "delivery_min": HOUR,
            "delivery_max": HOUR,
        }
    )
    await w.submit("R1")
    await w.drive("R1")

    d = await w.detail("R1")
    assert d.order.status is Status.SUCCEEDED
    assert d.order.abnormal == 1
    assert d.order.queries == 2
    first, second = [e for e in exchanges(d) if e.kind != "placed"]
    assert first.outcome == "abnormal:maintenance"
    if style == "http":
        assert (first.http_status, first.vendor_code) == (503, None)
    else:
        assert (first.http_status, first.vendor_code) == (200, "E503")
    window_end = w.sim.started_at + timedelta(seconds=window[1])
    assert first.at < window_end
    assert second.at >= window_end  # Retry-After, not the 5-minute backoff
    assert second.outcome == "delivered"
    check_timeline(d, w.sim, maintenance_answers=1)


async def test_garbage_answer_is_abnormal_then_polling_goes_on(make_world: MakeWorld) -> None:
    w = await make_world(sim={"delivery_min": HOUR, "delivery_max": HOUR})
    await w.submit("R1")
    await w.burst()
    assert (await w.detail("R1")).order.status is Status.ORDERED

    w.sim.configure(garbage_rate=1.0)
    order = (await w.detail("R1")).order
    assert order.next_run_at is not None
    w.clock.set(order.next_run_at)
    await w.burst()
    d = await w.detail("R1")
    assert d.order.status is Status.ORDERED
    assert (d.order.queries, d.order.abnormal) == (1, 1)
    garbage = d.events[-1]
    assert garbage.outcome == "abnormal:malformed"
    assert garbage.http_status == 200

    w.sim.configure(garbage_rate=0.0)
    await w.drive("R1")
    d = await w.detail("R1")
    assert d.order.status is Status.SUCCEEDED
    assert d.order.abnormal == 1
    check_timeline(d, w.sim)


@pytest.mark.parametrize("from_place", [False, True], ids=["after-place", "from-place"])
async def test_badly_signed_answers_never_succeed(make_world: MakeWorld, from_place: bool) -> None:
    # The vendor has long delivered the goods, but every answer saying so is badly signed.
    w = await make_world(
        sim={"delivery_min": MINUTE, "delivery_max": MINUTE, "ship_fraction": 0.0},
        polling={"max_polls": 4},
    )
    if from_place:
        w.sim.configure(bad_sign_rate=1.0)
    await w.submit("R1")
    await w.burst()
    w.sim.configure(bad_sign_rate=1.0)
    await w.drive("R1")

    d = await w.detail("R1")
    assert (d.order.status, d.order.reason) == (Status.FAILED, Reason.MAX_POLLS_EXCEEDED)
    assert Status.SUCCEEDED not in {e.to_status for e in d.events}
    assert d.order.queries == 4
    queries = [e for e in exchanges(d) if e.kind not in ("placed", "place_unknown")]
    assert [e.outcome for e in queries] == ["abnormal:bad_signature"] * 4
    assert d.order.abnormal == 4 + from_place
    if from_place:
        assert Status.ORDERED not in {e.to_status for e in d.events}
    assert w.sim.by_answer["bad_sign"] == 4 + from_place
    assert w.sim.place_requests["R1"] == 1
    check_timeline(d, w.sim)


async def test_order_the_vendor_forgot_ends_not_found(make_world: MakeWorld) -> None:
    w = await make_world(sim={"forget_rate": 1.0})
    await w.submit("R1")
    await w.drive("R1")

    d = await w.detail("R1")
    assert (d.order.status, d.order.reason) == (Status.FAILED, Reason.NOT_FOUND_AT_VENDOR)
    assert "3 queries in a row" in (d.order.description or "")
    assert d.order.queries == 3  # polling.not_found_limit
    assert [e.outcome for e in exchanges(d)] == ["accepted", *["unknown_order"] * 3]
    assert [e.vendor_code for e in exchanges(d)][1:] == ["E404"] * 3
    check_timeline(d, w.sim)


async def test_vendor_failure_ends_vendor_failed(make_world: MakeWorld) -> None:
    w = await make_world(sim={"fail_rate": 1.0, "delivery_min": HOUR, "delivery_max": HOUR})
    await w.submit("R1")
    await w.drive("R1")

    d = await w.detail("R1")
    assert (d.order.status, d.order.reason) == (Status.FAILED, Reason.VENDOR_FAILED)
    assert d.order.description == "收件人拒收"
    assert d.order.logistics is not None
    assert "拒收" in d.order.logistics["events"][-1]["text"]
    assert exchanges(d)[-1].outcome == "vendor_failed"
    assert [n.event_type for n in d.notifications] == ["order.shipped", "order.failed"]
    check_timeline(d, w.sim)


async def test_late_order_ends_after_exactly_max_polls(make_world: MakeWorld) -> None:
    w = await make_world(sim={"late_rate": 1.0}, polling={"max_polls": 5})
    await w.submit("R1")
    await w.drive("R1")

    d = await w.detail("R1")
    assert (d.order.status, d.order.reason) == (Status.FAILED, Reason.MAX_POLLS_EXCEEDED)
    assert "5 queries" in (d.order.description or "")
    assert d.order.queries == 5
    assert w.sim.query_requests["R1"] == 5
    check_timeline(d, w.sim)


async def test_late_order_ends_at_the_deadline(make_world: MakeWorld) -> None:
    w = await make_world(sim={"late_rate": 1.0}, polling={"deadline": "2h"})
    created = w.clock.now()
    await w.submit("R1")
    await w.drive("R1")

    d = await w.detail("R1")
    assert (d.order.status, d.order.reason) == (Status.FAILED, Reason.DEADLINE_EXCEEDED)
    assert "deadline" in (d.order.description or "")
    deadline = created + timedelta(hours=2)
    # The last query is pulled in to the deadline itself, not left for after it.
    assert d.events[-1].at == deadline
    assert query_times(d) == [600, 900, 1500, 2700, 5100, 7200]
    check_timeline(d, w.sim)


# ---------------------------------------------------------------------------- intake, leases


async def test_intake_is_idempotent_on_order_no(make_world: MakeWorld) -> None:
    w = await make_world(sim={"delivery_min": HOUR, "delivery_max": HOUR})
    first = await w.service.submit([new_order("R1")])
    again = await w.service.submit([new_order("R1")])
    assert [o.order_no for o in first.created] == ["R1"]
    assert again.created == []
    assert [o.order_no for o in again.existing] == ["R1"]
    assert len(await w.service.list(OrderFilter())) == 1

    changed = new_order("R1")
    changed = replace(changed, recipient=replace(changed.recipient, address="北京市朝阳区1号"))
    with pytest.raises(Conflict) as caught:
        await w.service.submit([changed, new_order("R2")])
    assert caught.value.fields == ["recipient.address"]
    assert "recipient.address" in str(caught.value)
    # All or nothing: R2 was not taken in with the refused R1.
    assert [o.order_no for o in await w.service.list(OrderFilter())] == ["R1"]
    d = await w.detail("R1")
    assert d.order.recipient.address == new_order("R1").recipient.address
    assert [e.kind for e in d.events] == ["created"]

    await w.drive("R1")
    assert w.sim.place_requests["R1"] == 1


@pytest.mark.parametrize("mode", ["reconcile", "fail"])
async def test_order_left_sent_by_a_dead_worker(make_world: MakeWorld, mode: str) -> None:
    """A worker committed SENT, its place-order reached the vendor, and it died."""
    w = await make_world(
        sim={"delivery_min": HOUR, "delivery_max": HOUR},
        polling={"on_place_unknown": mode},
    )
    await w.submit("R1")
    store, clock = w.service.store, w.clock
    [claimed] = await store.claim_due(
        now=clock.now(), real_now=clock.real(), limit=1, worker_id="w-dead", lease=60
    )
    sent = lifecycle.mark_sent(claimed, clock.now(), actor="w-dead")
    assert await store.apply([Write(sent, claimed.lease_token, release=False)]) == {claimed.id}
    adapter = ReferenceAdapter("acme", w.service.settings.current.vendors["acme"], clock=clock)
    try:
        lost = await adapter.place(sent.order)  # the answer dies with the worker
    finally:
        await adapter.close()
    assert lost.outcome_name == "accepted"

    await w.burst()  # the lease is still live: nobody touches the order
    assert (await w.detail("R1")).order.status is Status.SENT
    clock.real_offset = timedelta(seconds=61)
    await w.drive("R1")

    d = await w.detail("R1")
    kinds = [e.kind for e in d.events]
    assert kinds[:3] == ["created", "sent", "takeover"]
    assert d.order.takeovers == 1
    assert w.sim.place_requests["R1"] == 1
    if mode == "reconcile":
        assert d.order.status is Status.SUCCEEDED
        assert "reconciled" in kinds
    else:
        assert (d.order.status, d.order.reason) == (Status.FAILED, Reason.PLACE_UNREACHABLE)
        assert "found SENT" in (d.order.description or "")
        assert d.order.queries == 0
    assert [n.event_type for n in d.notifications][-1] in ("order.succeeded", "order.failed")


async def test_write_with_an_expired_lease_is_discarded(make_world: MakeWorld) -> None:
    w = await make_world()
    await w.submit("R1")
    store, clock = w.service.store, w.clock

    [mine] = await store.claim_due(
        now=clock.now(), real_now=clock.real(), limit=10, worker_id="w-old", lease=1
    )
    assert (
        await store.claim_due(
            now=clock.now(), real_now=clock.real(), limit=10, worker_id="w-new", lease=60
        )
        == []
    ), "a live lease must not be claimed again"
    clock.real_offset = timedelta(seconds=2)  # the old worker stalls past its lease
    [theirs] = await store.claim_due(
        now=clock.now(), real_now=clock.real(), limit=10, worker_id="w-new", lease=60
    )
    assert theirs.lease_token != mine.lease_token
    assert theirs.takeovers == 1

    late = lifecycle.mark_sent(mine, clock.now(), actor="w-old")
    assert await store.apply([Write(late, mine.lease_token)]) == set()

    d = await w.detail("R1")
    assert d.order.status is Status.PENDING
    assert d.order.placements == 0
    assert d.order.takeovers == 1
    assert [e.kind for e in d.events] == ["created", "takeover"]
    assert d.events[-1].actor == "w-new"

    # The new holder's write goes through, so the refusal above was the fence, not a fault.
    fresh = lifecycle.mark_sent(theirs, clock.now(), actor="w-new")
    assert await store.apply([Write(fresh, theirs.lease_token)]) == {theirs.id}
    assert (await w.detail("R1")).order.status is Status.SENT


async def test_burst_returns_promptly_once_the_work_is_done(make_world: MakeWorld) -> None:
    w = await make_world(sim={"late_rate": 1.0})
    await w.submit("R1")
    await w.burst()
    took = []
    for queries in (1, 2, 3):
        order = (await w.detail("R1")).order
        assert order.next_run_at is not None
        w.clock.set(order.next_run_at)
        started = time.perf_counter()
        await w.worker.run(burst=True)
        took.append(time.perf_counter() - started)
        assert (await w.detail("R1")).order.queries == queries
    # One loopback query and two SQLite commits each; a second per round is the idle sleep.
    assert max(took) < 0.5, took


async def test_burst_waits_for_a_write_back_still_being_applied(
    make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Burst mode returns only when nothing is due. Here the place-order answer's write-back
    is still being applied when the worker last looks for due work, and it schedules the
    first query for now (``initial_delay = 0s``): the same burst must send that query."""
    w = await make_world(sim={"late_rate": 1.0}, polling={"initial_delay": "0s"})
    await w.submit("R1")
    store = w.service.store
    apply, next_due_at = store.apply, store.next_due_at

    async def slow_apply(writes: list[Write]) -> set[int]:
        if any(x.release for x in writes):  # an answer's write-back, not the SENT mark
            await asyncio.sleep(0.3)
        return await apply(writes)

    async def slow_next_due_at(**kwargs: Any) -> Any:
        await asyncio.sleep(0.15)  # long enough for the answer to arrive meanwhile
        return await next_due_at(**kwargs)

    monkeypatch.setattr(store, "apply", slow_apply)
    monkeypatch.setattr(store, "next_due_at", slow_next_due_at)
    await w.burst()
    order = (await w.detail("R1")).order
    assert order.status is Status.ORDERED
    assert order.queries == 1, "burst returned before the query that was due at once"
    assert order.next_run_at is not None
    assert order.next_run_at > w.clock.now()


async def test_a_full_batch_of_results_is_written_at_once(
    clock: ManualClock,
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Results wait up to FLUSH_DELAY to share a commit, but a full batch
    (``worker.batch_size``) is written at once, while other calls are still out: at full
    speed every commit is full. (With nothing in flight the worker writes at once anyway.)"""
    monkeypatch.setattr(worker_module, "FLUSH_DELAY", 30.0)

    done = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await done.wait()  # no answer while the test runs
        writer.close()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    sim = await make_simulator(clock, late_rate=1.0)
    assert sim.base_url is not None
    service = await make_service(
        sim.base_url,
        clock,
        worker={"batch_size": 3, "concurrency": 8},
        extra_vendors={"mute": {"base_url": f"http://127.0.0.1:{port}", "timeout": "20s"}},
    )
    await service.submit([new_order("M1", vendor="mute")], actor="test")
    await service.submit([new_order(f"R{i}") for i in (1, 2, 3)], actor="test")
    worker = make_worker(service)
    running = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + 10
        while True:  # acme's three answers, written while M1's call is still out
            orders = [(await service.get(f"R{i}")).order for i in (1, 2, 3)]
            if all(o.status is Status.ORDERED for o in orders):
                break
            assert time.monotonic() < deadline, [o.status for o in orders]
            await asyncio.sleep(0.02)
        assert worker.in_flight == 1  # M1 waits for its vendor
        assert (await service.get("M1")).order.status is Status.SENT
    finally:
        done.set()  # M1's call ends (the connection closes) and the worker stops
        worker.stop()
        await asyncio.wait_for(running, 10)
        silent.close()
        await silent.wait_closed()


@pytest.mark.timeout(60)
async def test_leases_are_renewed_while_in_flight_calls_finish_on_shutdown(
    make_simulator: MakeSimulator, make_service: MakeService, make_worker: MakeWorker
) -> None:
    """A stopping worker lets its in-flight calls finish within ``shutdown_grace``; it keeps
    their leases alive meanwhile, so no other worker takes those orders over (and the
    answer that arrives is applied, not discarded)."""
    clock = CompressedClock(speed=1)
    sim = await make_simulator(clock, latency=2.0, late_rate=1.0)  # real seconds per answer
    assert sim.base_url is not None
    service = await make_service(
        sim.base_url,
        clock,
        polling={"initial_delay": "0s"},  # the first query follows the place-order at once
        vendor={"timeout": "10s"},
        worker={"lease": "1s", "shutdown_grace": "10s"},
    )
    await service.submit([new_order("R1")], actor="test")
    first = make_worker(service)
    running = asyncio.create_task(first.run())
    deadline = time.monotonic() + 15
    while sim.query_requests["R1"] == 0:  # the first query is with the vendor
        assert time.monotonic() < deadline, "the first query never reached the vendor"
        await asyncio.sleep(0.01)
    first.stop()
    await asyncio.sleep(1.4)  # past the claim's 1 s lease, the answer still 0.6 s away
    assert await make_worker(service, worker_id="second").run_once() == 0
    await asyncio.wait_for(running, 20)
    order = (await service.get("R1")).order
    assert order.status is Status.ORDERED, order
    assert order.queries == 1
    assert order.takeovers == 0
    assert first.stats.discarded == 0
    assert sim.place_requests["R1"] == 1


async def test_demo_closes_its_vendor_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions: list[aiohttp.ClientSession] = []
    original = ReferenceAdapter._get_session

    def spy(self: ReferenceAdapter) -> aiohttp.ClientSession:
        session = original(self)
        if session not in sessions:
            sessions.append(session)
        return session

    monkeypatch.setattr(ReferenceAdapter, "_get_session", spy)
    try:
        result = await run_demo(orders=5, seed=1, speed=200_000, workdir=tmp_path)
        assert result.active == 0
        assert len(sessions) == 2  # acme and globex
        assert [s.closed for s in sessions] == [True, True]
    finally:
        for s in sessions:  # do not leak them into the next test's warnings
            await s.close()


# ---------------------------------------------------------------------------- a mixed run


async def test_invariants_hold_over_a_mixed_campaign(
    make_simulator: MakeSimulator, make_service: MakeService, make_worker: MakeWorker
) -> None:
    clock = CompressedClock(speed=40_000)
    sim = await make_simulator(clock, simulator_config(7, secret=SECRET, days=2.0))
    assert sim.base_url is not None
    service = await make_service(
        sim.base_url, clock, polling={"jitter": 0.1, "deadline": "3d"}, worker={"lease": "10s"}
    )
    orders = [replace(o, vendor="acme") for o in make_orders(150, 7)]
    await service.submit(orders)
    worker = make_worker(service, rng=random.Random(7))
    task = asyncio.create_task(worker.run())
    started = time.monotonic()
    try:
        while True:
            await asyncio.sleep(0.2)
            counts = await service.store.counts(now=clock.now())
            active = sum(counts.by_status.get(s.value, 0) for s in Status if not s.is_final)
            if active == 0:
                break
            if time.monotonic() - started > 90:
                pytest.fail(f"{active} orders still open after 90 s: {counts}")
    finally:
        worker.stop()
        await task

    reasons: set[Reason | None] = set()
    in_doubt = []
    for new in orders:
        d = await service.get(new.order_no)
        o = d.order
        try:
            assert o.status.is_final, (o.status, o.description)
            assert sim.place_requests[o.order_no] <= 1
            assert o.takeovers == 0  # one live worker never takes over from itself
            if o.payment_status == "UNPAID":
                assert o.reason is Reason.UNPAID
                assert sim.place_requests[o.order_no] == 0
            check_timeline(d, sim, maintenance_answers=None)
        except AssertionError as exc:
            timeline = "\n".join(f"  {e}" for e in d.events)
            raise AssertionError(f"order {o.order_no}: {exc}\n{o}\n{timeline}") from exc
        reasons.add(o.reason)
        if any(e.kind == "place_unknown" for e in d.events):
            in_doubt.append(o.order_no)
    counts = await service.store.counts(now=clock.now())
    assert sum(counts.by_status.values()) == 150
    assert counts.by_status.get("SUCCEEDED", 0) > 100, counts
    # A mixed run, not a happy path: several different endings were exercised ...
    assert len(reasons - {None}) >= 3, reasons
    assert sim.stats()["max_place_requests"] == 1
    # ... including place-order answers lost on the way back (fates are fixed by the seed).
    assert in_doubt, "no place-order answer was lost: the run did not test reconciling"
