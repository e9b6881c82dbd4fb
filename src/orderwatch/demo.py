"""``orderwatch demo``: days of a redemption campaign in under a minute, on one machine.

An embedded SQLite database in a temporary folder, the vendor simulator in-process with
its rejections, lost answers, maintenance, garbage and slow logistics switched on, and a
compressed clock shared by both, so the default polling schedule (10 minutes, then 5, 10,
20 … up to 6 hours) plays out for real. At the end: how every order ended and why, how
often each was polled, the most place-order requests any order got, and how late polls ran.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clock import CompressedClock
from .order import NewOrder, Recipient
from .service import Service
from .settings import Loaded, load_settings
from .simulator import Simulator, SimulatorConfig
from .statuses import Status
from .store.base import OrderFilter

DAY = 86400.0
SECRET = "demo-secret-acme"
SECRET_B = "demo-secret-globex"


@dataclass
class DemoResult:
    orders: int
    seed: int
    speed: float
    real_seconds: float
    simulated_days: float
    by_status: dict[str, int]
    by_reason: dict[str, int]
    polls_mean: float
    polls_max: int
    max_place_requests: int
    place_requests: int
    vendor_calls: int
    calls_per_second: float
    lateness_p50_s: float  # schedule seconds
    lateness_p99_s: float
    lateness_p50_real_ms: float
    lateness_p99_real_ms: float
    notifications: int
    active: int
    database: str
    simulator: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def simulator_config(
    seed: int, *, secret: str = SECRET, sign_type: str = "HMAC-SHA256", days: float = 5.0
) -> SimulatorConfig:
    """A vendor that behaves like real ones on a bad week."""
    return SimulatorConfig(
        secret=secret,
        sign_type=sign_type,
        seed=seed,
        reject_rate=0.03,
        place_timeout_rate=0.02,
        place_timeout_recorded=0.5,
        fail_rate=0.03,
        forget_rate=0.01,
        late_rate=0.01,
        delivery_min=2 * 3600.0,
        delivery_max=max(days - 0.5, 0.5) * DAY,
        late_min=(days + 3) * DAY,
        late_max=(days + 5) * DAY,
        garbage_rate=0.01,
        bad_sign_rate=0.005,
        error_rate=0.01,
        query_timeout_rate=0.002,
        maintenance=[(1.4 * DAY, 1.4 * DAY + 3 * 3600.0)],
        latency=0.001,
        latency_jitter=0.004,
        hang=1.0,
    )


def make_orders(n: int, seed: int) -> list[NewOrder]:
    rng = random.Random(seed)
    names = ["张三", "李四", "王五", "赵六", "陈静", "刘洋", "Wang Fang", "周杰"]
    cities = [
        "上海市浦东新区世纪大道",
        "北京市朝阳区建国路",
        "广州市天河区体育西路",
        "深圳市南山区科技园",
        "杭州市西湖区文三路",
    ]
    orders = []
    for i in range(n):
        orders.append(
            NewOrder(
                order_no=f"R{seed:04d}{i:07d}",
                vendor="acme" if i % 4 else "globex",
                sku=f"SKU-{1000 + rng.randrange(40)}",
                quantity=1 + (rng.random() < 0.1),
                points=rng.choice([3000, 8000, 12000, 25000, 60000]),
                recipient=Recipient(
                    name=rng.choice(names),
                    phone=f"13{rng.randrange(10**9):09d}",
                    address=f"{rng.choice(cities)}{rng.randrange(1, 999)}号",
                ),
                payment_status="UNPAID" if rng.random() < 0.02 else "PAID",
                customer_id=f"C{rng.randrange(10**6):06d}",
            )
        )
    return orders


def demo_settings(db_url: str, acme_url: str, globex_url: str) -> Loaded:
    return load_settings(
        None,
        env={},
        overrides={
            "database": {"url": db_url},
            "worker": {"concurrency": 64, "batch_size": 100, "lease": "60s"},
            "vendors": {
                "acme": {
                    "base_url": acme_url,
                    "merchant_id": "M0001",
                    "secret": SECRET,
                    "timeout": "1s",
                    "concurrency": 32,
                },
                "globex": {
                    "base_url": globex_url,
                    "merchant_id": "M0001",
                    "secret": SECRET_B,
                    "sign_type": "MD5",
                    "timeout": "1s",
                    "concurrency": 16,
                },
            },
        },
    )


async def run_demo(
    *,
    orders: int = 2000,
    seed: int = 1,
    speed: float | None = None,
    days: float = 5.0,
    workdir: Path | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> DemoResult:
    """Run the whole campaign and return the summary; ``on_progress`` gets live counts."""
    if speed is None:
        speed = 13_000.0 * days / 5.0  # about 40 s of wall time for the default run
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="orderwatch-demo-")
        workdir = Path(tmp.name)
    clock = CompressedClock(speed=speed)
    acme = Simulator(simulator_config(seed, days=days), clock=clock)
    globex = Simulator(
        simulator_config(seed + 1, secret=SECRET_B, sign_type="MD5", days=days), clock=clock
    )
    db_path = workdir / "orderwatch.db"
    try:
        acme_url = await acme.start()
        globex_url = await globex.start()
        loaded = demo_settings(f"sqlite:///{db_path}", acme_url, globex_url)
        service = await Service.open(loaded, clock=clock)
        try:
            return await _campaign(
                service,
                acme,
                globex,
                orders=orders,
                seed=seed,
                speed=speed,
                days=days,
                db_path=db_path,
                on_progress=on_progress,
            )
        finally:
            await service.close()
    finally:
        await acme.stop()
        await globex.stop()
        if tmp is not None:
            tmp.cleanup()


async def _campaign(
    service: Service,
    acme: Simulator,
    globex: Simulator,
    *,
    orders: int,
    seed: int,
    speed: float,
    days: float,
    db_path: Path,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> DemoResult:
    clock = service.clock
    started_real = time.perf_counter()
    started = clock.now()
    # Customers redeem over the campaign's first hours, not all in the same second.
    waves = _arrivals(make_orders(orders, seed), ARRIVAL_HOURS * 3600.0)
    worker = service.worker(rng=random.Random(seed), worker_id="demo-worker")
    deliverer = service.deliverer()
    worker_task = asyncio.create_task(worker.run())
    deliver_task = asyncio.create_task(deliverer.run(idle=0.05))
    horizon = (days + 3) * DAY  # every order ends by then: max_polls and deadline see to it
    last_progress = 0.0
    try:
        while True:
            await asyncio.sleep(0.05)
            elapsed = (clock.now() - started).total_seconds()
            while waves and waves[0][0] <= elapsed:
                await service.submit(waves.pop(0)[1], actor="demo")
                worker.wake()
            if time.perf_counter() - last_progress < 0.25:
                continue
            last_progress = time.perf_counter()
            counts = await service.store.counts(now=clock.now())
            active = sum(counts.by_status.get(s, 0) for s in ("PENDING", "SENT", "ORDERED"))
            elapsed = (clock.now() - started).total_seconds()
            if on_progress is not None:
                on_progress(
                    {
                        "simulated_days": elapsed / DAY,
                        "by_status": dict(counts.by_status),
                        "vendor_calls": worker.stats.places + worker.stats.queries,
                        "orders": orders,
                    }
                )
            if (active == 0 and not waves) or elapsed > horizon:
                break
    finally:
        worker.stop()
        await worker_task
        await deliverer.run_once()
        deliverer.stop()
        await deliver_task
    real = time.perf_counter() - started_real
    counts = await service.store.counts(now=clock.now())
    polls = await _polls_per_order(service)
    stats_a, stats_g = acme.stats(), globex.stats()
    calls = worker.stats.places + worker.stats.queries
    late = worker.stats.lateness
    return DemoResult(
        orders=orders,
        seed=seed,
        speed=speed,
        real_seconds=round(real, 2),
        simulated_days=round((clock.now() - started).total_seconds() / DAY, 2),
        by_status=dict(sorted(counts.by_status.items())),
        by_reason=dict(sorted(counts.by_reason.items())),
        polls_mean=round(statistics.fmean(polls), 2) if polls else 0.0,
        polls_max=max(polls, default=0),
        max_place_requests=max(stats_a["max_place_requests"], stats_g["max_place_requests"]),
        place_requests=stats_a["place_requests"] + stats_g["place_requests"],
        vendor_calls=calls,
        calls_per_second=round(calls / real, 1),
        lateness_p50_s=round(late.percentile(50), 1),
        lateness_p99_s=round(late.percentile(99), 1),
        lateness_p50_real_ms=round(late.percentile(50) / speed * 1000, 2),
        lateness_p99_real_ms=round(late.percentile(99) / speed * 1000, 2),
        notifications=deliverer.delivered,
        active=sum(counts.by_status.get(s, 0) for s in ("PENDING", "SENT", "ORDERED")),
        database=str(db_path),
        simulator={"acme": stats_a, "globex": stats_g},
    )


ARRIVAL_HOURS = 12.0


def _arrivals(
    all_orders: list[NewOrder], span: float, waves: int = 48
) -> list[tuple[float, list[NewOrder]]]:
    """Split the orders into ``waves`` batches arriving evenly over ``span`` seconds."""
    size = max(1, -(-len(all_orders) // waves))
    return [
        (span * i / waves, all_orders[i * size : (i + 1) * size])
        for i in range(waves)
        if all_orders[i * size : (i + 1) * size]
    ]


async def _polls_per_order(service: Service) -> list[int]:
    polls: list[int] = []
    cursor = None
    while True:
        page = await service.list(OrderFilter(), limit=500, before_id=cursor)
        if not page:
            return polls
        polls.extend(o.queries for o in page if o.status in (Status.SUCCEEDED, Status.FAILED))
        cursor = page[-1].id
