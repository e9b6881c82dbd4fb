"""Factories for integration tests: a real simulator, a real SQLite file, real workers.

Every factory closes what it opened. Request them as make_simulator, make_service,
make_worker and pytest tears them down in reverse: workers' HTTP sessions first, then the
databases, then the simulators (which also releases any request still hanging there).
Schedule time comes from a :class:`~orderwatch.clock.ManualClock` shared by the simulator
and the service; :func:`drive` moves it from one due time to the next.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from tests.support.databases import fresh_database

from orderwatch.clock import Clock, ManualClock
from orderwatch.order import Order
from orderwatch.service import Service
from orderwatch.settings import load_settings
from orderwatch.simulator import Simulator, SimulatorConfig
from orderwatch.worker import Worker

SECRET = "s3cret"
MERCHANT = "M0001"

MakeSimulator = Callable[..., Awaitable[Simulator]]
MakeService = Callable[..., Awaitable[Service]]
MakeWorker = Callable[..., Worker]
Drive = Callable[..., Awaitable[dict[str, Order]]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def make_simulator() -> AsyncIterator[MakeSimulator]:
    """``await make_simulator(clock, **SimulatorConfig fields)`` → a started simulator."""
    started: list[Simulator] = []

    async def factory(
        clock: Clock, config: SimulatorConfig | None = None, **settings: Any
    ) -> Simulator:
        if config is None:
            settings.setdefault("secret", SECRET)
            settings.setdefault("merchant_id", MERCHANT)
            settings.setdefault("hang", 1.0)  # real seconds; the vendor timeout is 0.3 s
            config = SimulatorConfig(**settings)
        sim = Simulator(config, clock=clock)
        await sim.start("127.0.0.1", 0)
        started.append(sim)
        return sim

    yield factory
    for sim in reversed(started):
        await sim.stop()


@pytest.fixture
def db_kind() -> str:
    """The database under test; test modules that run on every database override it."""
    return "sqlite"


@pytest.fixture
async def make_service(tmp_path: Path, db_kind: str) -> AsyncIterator[MakeService]:
    """``await make_service(sim.base_url, clock, polling={...})`` → a Service on a fresh file.

    Polling defaults to the documented schedule with ``jitter = 0`` so that due times are
    exact; ``vendor``, ``worker`` and ``notify`` merge into their sections;
    ``extra_vendors`` adds vendors beside ``acme`` (each with its own ``base_url``).
    """
    opened: list[Service] = []
    databases = contextlib.ExitStack()
    urls: dict[str, str] = {}

    async def factory(
        base_url: str,
        clock: Clock,
        *,
        polling: dict[str, Any] | None = None,
        vendor: dict[str, Any] | None = None,
        worker: dict[str, Any] | None = None,
        notify: dict[str, Any] | None = None,
        db_name: str | None = None,
        extra_vendors: dict[str, dict[str, Any]] | None = None,
    ) -> Service:
        name = db_name or f"ow{len(opened)}.db"
        if name not in urls:
            if db_kind == "sqlite":
                urls[name] = f"sqlite:///{tmp_path / name}"
            else:
                urls[name] = databases.enter_context(fresh_database(db_kind, tmp_path))
        overrides: dict[str, Any] = {
            "database": {"url": urls[name]},
            "vendors": {
                "acme": {
                    "base_url": base_url,
                    "merchant_id": MERCHANT,
                    "secret": SECRET,
                    "timeout": "300ms",
                    **(vendor or {}),
                },
                **{
                    name: {"merchant_id": MERCHANT, "secret": SECRET, "timeout": "300ms", **cfg}
                    for name, cfg in (extra_vendors or {}).items()
                },
            },
            "polling": {"jitter": 0.0, **(polling or {})},
        }
        if worker:
            overrides["worker"] = worker
        if notify:
            overrides["notify"] = notify
        loaded = load_settings(None, env={}, overrides=overrides)
        service = await Service.open(loaded, clock=clock, auto_upgrade=True)
        opened.append(service)
        return service

    yield factory
    for service in reversed(opened):
        await service.close()
    databases.close()


@pytest.fixture
async def make_worker() -> AsyncIterator[MakeWorker]:
    """``make_worker(service)`` → ``service.worker(rng=Random(0))``; its sessions closed after."""
    made: list[Worker] = []

    def factory(service: Service, **kwargs: Any) -> Worker:
        kwargs.setdefault("rng", random.Random(0))
        w = service.worker(**kwargs)
        made.append(w)
        return w

    yield factory
    for w in made:
        await w.vendors.close()


async def drive(
    service: Service,
    worker: Worker,
    clock: ManualClock,
    order_nos: Iterable[str] | None = None,
    *,
    max_rounds: int = 100,
) -> dict[str, Order]:
    """Run burst rounds, moving the clock to the next due time, until the orders are final.

    With ``order_nos`` None, runs until no order is due at all (every order final). Fails
    the test if that takes more than ``max_rounds`` rounds, or if an open order has no
    ``next_run_at`` (stuck unseen, DESIGN §9.1). Returns the named orders as stored.
    """
    wanted = list(order_nos or [])
    for _ in range(max_rounds):
        await worker.run(burst=True)
        orders: dict[str, Order] = {}
        for no in wanted:
            order = await service.store.get_order(no)
            assert order is not None, f"order {no} vanished"
            orders[no] = order
        open_orders = [o for o in orders.values() if not o.status.is_final]
        for o in open_orders:
            assert o.next_run_at is not None, f"{o.order_no} is {o.status} with no next_run_at"
        due = await service.store.next_due_at(now=clock.now(), real_now=clock.real())
        if wanted and not open_orders:
            return orders
        if not wanted and due is None:
            return orders
        assert due is not None, f"open orders {[o.order_no for o in open_orders]} never due"
        assert due > clock.now(), f"burst returned with work due at {due} (now {clock.now()})"
        clock.set(due)
    pytest.fail(f"orders not final after {max_rounds} rounds")


@pytest.fixture(name="drive")
def drive_fixture() -> Drive:
    return drive
