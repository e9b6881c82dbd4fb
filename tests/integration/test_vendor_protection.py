"""A vendor that goes down, and one that must not be called too fast (issue 8).

Real worker, real simulator over loopback, SQLite. The circuit breaker must keep a vendor's
outage from failing anything: calls stop while it is open, do not count toward max_polls,
and resume by themselves when the vendor is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from tests.support.orders import new_order

from orderwatch.clock import ManualClock
from orderwatch.outcomes import Abnormal, Exchange
from orderwatch.service import Service
from orderwatch.simulator import Simulator
from orderwatch.statuses import Status
from orderwatch.worker import Worker, WorkerStats

MakeSimulator = Callable[..., Awaitable[Simulator]]
MakeService = Callable[..., Awaitable[Service]]
MakeWorker = Callable[..., Worker]

POLLING = {
    "initial_delay": "10m",
    "initial_interval": "5m",
    "factor": 2.0,
    "max_interval": "20m",
    "max_polls": 40,
    "deadline": "7d",
}


async def run_until(
    service: Service, worker: Worker, clock: ManualClock, end: datetime, seen: set[str]
) -> None:
    """Burst rounds, moving the clock to the next due time or breaker end, up to ``end``."""
    for _ in range(500):
        await worker.run(burst=True)
        circuits = await service.store.open_circuits(now=clock.now())
        seen.update(circuits)
        due = await service.store.next_due_at(now=clock.now(), real_now=clock.real())
        candidates = [t for t in (due, *circuits.values()) if t is not None]
        nxt = min(candidates, default=end)
        if nxt <= clock.now():
            nxt = clock.now() + timedelta(seconds=1)
        if nxt >= end:
            clock.set(end)
            return
        clock.set(nxt)
    raise AssertionError("schedule did not reach its end in 500 rounds")


async def test_vendor_down_an_hour_fails_nothing_and_calls_resume(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
) -> None:
    sim = await make_simulator(clock, delivery_min=4 * 3600.0, delivery_max=5 * 3600.0)
    port = int(sim.base_url.rsplit(":", 1)[1])
    service = await make_service(
        sim.base_url,
        clock,
        polling=POLLING,
        vendor={"concurrency": 2, "circuit_breaker": {"failures": 3, "open_for": "10m"}},
    )
    nos = [f"CB{i:02d}" for i in range(20)]
    await service.submit([new_order(no) for no in nos], actor="test")
    worker = make_worker(service)
    seen: set[str] = set()
    start = clock.now()
    await run_until(service, worker, clock, start + timedelta(minutes=30), seen)
    before = {no: await service.store.get_order(no) for no in nos}
    assert all(o is not None and o.status is Status.ORDERED for o in before.values())
    queries_before = sim.stats()["queries"]

    await sim.stop()  # the vendor is down: connections refused
    await run_until(service, worker, clock, clock.now() + timedelta(hours=1), seen)
    down = {no: await service.store.get_order(no) for no in nos}
    assert seen == {"acme"}, "the breaker never opened"
    assert worker.stats.deferred > 0
    assert all(o is not None and not o.status.is_final for o in down.values()), {
        no: (o.status, o.reason) for no, o in down.items() if o is not None
    }
    # Without the breaker every order would have polled the dead vendor 3-4 times in that
    # hour (about 70 calls); with it: the calls in flight when it went down, then one
    # probe per opening.
    failed_calls = sum(o.abnormal for o in down.values() if o is not None)
    assert failed_calls <= 3 + 2 + 8, failed_calls
    kinds = [e.kind for o in down.values() if o for e in await service.store.get_events(o.id)]
    assert kinds.count("deferred") == worker.stats.deferred  # each one on the timeline

    await sim.start("127.0.0.1", port)  # back
    await run_until(service, worker, clock, clock.now() + timedelta(days=1), seen)
    after = {no: await service.store.get_order(no) for no in nos}
    assert all(o is not None and o.status is Status.SUCCEEDED for o in after.values()), {
        no: (o.status, o.reason) for no, o in after.items() if o is not None
    }
    assert sim.stats()["queries"] > queries_before
    assert sim.stats()["max_place_requests"] == 1
    assert await service.store.open_circuits(now=clock.now()) == {}


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[WorkerStats]]:
    """``worker.run()`` in the background for the block; stopped and awaited after it."""
    run = asyncio.create_task(worker.run())
    try:
        yield run
    finally:
        worker.stop()
        await run


async def until_placed(
    sim: Simulator, n: int, *, started: float, within: float, why: str = ""
) -> None:
    """Wait until ``sim`` has had ``n`` place-orders; fail once ``within`` seconds have passed
    since ``started`` (``why``: what the failure means)."""
    while (got := sim.stats()["place_requests"]) < n:
        assert time.perf_counter() - started < within, (
            f"{got} of {n} place-orders in {within} s{why}"
        )
        await asyncio.sleep(0.02)


async def place_all(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
    *,
    n: int,
    vendor: dict[str, object],
    latency: float = 0.0,
) -> tuple[float, Simulator]:
    sim = await make_simulator(clock, latency=latency)
    service = await make_service(sim.base_url, clock, polling=POLLING, vendor=vendor)
    await service.submit([new_order(f"RL{i:03d}") for i in range(n)], actor="test")
    worker = make_worker(service)
    started = time.perf_counter()
    await worker.run(burst=True)
    return time.perf_counter() - started, sim


async def test_rate_limit_spaces_calls_to_a_vendor(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
) -> None:
    n, rate = 30, 20.0
    limited, sim = await place_all(
        make_simulator, make_service, make_worker, clock, n=n, vendor={"rate_limit": rate}
    )
    assert sim.stats()["place_requests"] == n
    assert limited >= (n - 1) / rate * 0.95, limited  # 30 calls at 20/s: at least 1.45 s
    free, sim2 = await place_all(make_simulator, make_service, make_worker, clock, n=n, vendor={})
    assert sim2.stats()["place_requests"] == n
    assert free < limited / 2, (free, limited)


async def test_rate_limit_keeps_its_pace_when_the_vendor_is_slow(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
) -> None:
    """Calls slower than 1/rate must overlap: the limit spaces the starts, it does not
    serialise the calls (30 calls at 20/s answering in 0.4 s take about 1.9 s, not 6 s)."""
    n, rate, latency = 30, 20.0, 0.4
    elapsed, sim = await place_all(
        make_simulator,
        make_service,
        make_worker,
        clock,
        n=n,
        vendor={"rate_limit": rate, "timeout": "2s"},
        latency=latency,
    )
    assert sim.stats()["place_requests"] == n
    assert elapsed >= (n - 1) / rate * 0.95, elapsed
    # (a lane busy in a call takes no new order: each rate slot must start a call of its
    # own, or the vendor gets half its rate, ~3 s here)
    assert elapsed < (n - 1) / rate + latency + 0.8, elapsed


async def slow_and_quick(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    clock: ManualClock,
    *,
    latency: float,
    vendor: dict[str, object],
    orders: int,
) -> tuple[Simulator, Simulator, Service]:
    """Vendor "acme" answering in ``latency`` s and vendor "quick" at once, ``orders`` due
    for each, acme's all falling due first; a worker of 8 lanes claiming 20 at a time."""
    slow_sim = await make_simulator(clock, latency=latency)
    fast_sim = await make_simulator(clock)
    service = await make_service(
        slow_sim.base_url,
        clock,
        polling=POLLING,
        vendor=vendor,
        worker={"concurrency": 8, "batch_size": 20},
        extra_vendors={"quick": {"base_url": fast_sim.base_url}},
    )
    await service.submit([new_order(f"SL{i:03d}") for i in range(orders)], actor="test")
    clock.advance(1)  # the quick vendor's orders fall due after all of acme's
    quick = [new_order(f"QK{i:03d}", vendor="quick") for i in range(orders)]
    await service.submit(quick, actor="test")
    return slow_sim, fast_sim, service


async def test_a_slow_vendors_backlog_does_not_hold_up_other_vendors(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
) -> None:
    """Orders waiting for a vendor at its concurrency limit hold no lane and must not stop
    the worker from claiming other vendors' due orders: one slow vendor (one call at a time,
    0.3 s each, 40 orders due first) must not delay a healthy vendor's 40 orders by the
    12 s its backlog takes to drain."""
    slow_sim, fast_sim, service = await slow_and_quick(
        make_simulator,
        make_service,
        clock,
        latency=0.3,
        vendor={"concurrency": 1, "timeout": "2s"},
        orders=40,
    )
    worker = make_worker(service)
    async with running(worker):
        started = time.perf_counter()
        await until_placed(
            fast_sim, 40, started=started, within=4.0, why=" (the slow vendor's held them up)"
        )
        # the slow vendor's backlog is still draining: it was there all along
        assert slow_sim.stats()["place_requests"] < 40
    assert fast_sim.stats()["max_place_requests"] == 1
    assert slow_sim.stats()["max_place_requests"] == 1


async def test_orders_waiting_for_a_half_open_probe_hold_no_lane(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
) -> None:
    """While a half-open breaker's probe is out, the vendor's other orders wait for its
    answer without holding lanes: a healthy vendor's orders go out meanwhile, and when the
    probe closes the breaker the waiting orders are called at the vendor's concurrency,
    not one at a time."""
    slow_sim, fast_sim, service = await slow_and_quick(
        make_simulator,
        make_service,
        clock,
        latency=2.0,  # far above the 0.05 s the quick vendor's 20 take: room for a stall
        vendor={"concurrency": 8, "timeout": "5s"},
        orders=20,
    )
    worker = make_worker(service)
    # acme's breaker opened earlier and its time is over: the next call is the probe
    timeout = Exchange(Abnormal("timeout", "no answer"))
    worker.breakers.record("acme", timeout, clock.now(), failures=1, open_for=timedelta(0))
    assert worker.breakers.half_open("acme", clock.now())
    async with running(worker):
        started = time.perf_counter()
        await until_placed(
            fast_sim,
            20,
            started=started,
            within=1.6,
            why=", before the probe's answer (2 s): waiting orders held the lanes",
        )
        assert slow_sim.stats()["place_requests"] == 1  # only the probe is out
        # the probe succeeds at ~2 s and closes the breaker; the other 19 go out 8 at a
        # time (~6 more seconds), not one by one (~38)
        await until_placed(slow_sim, 20, started=started, within=12.0, why=" (probe included)")
    assert not worker.breakers.tripped("acme")
    assert slow_sim.stats()["max_place_requests"] == 1
    assert fast_sim.stats()["max_place_requests"] == 1


def reload_acme(service: Service, **changes: Any) -> None:
    """Put new settings for vendor "acme" in force, as a hot reload does."""
    running = service.settings.current
    acme = running.vendors["acme"]
    if "circuit_breaker" in changes:
        changes["circuit_breaker"] = acme.circuit_breaker.model_copy(
            update=changes["circuit_breaker"]
        )
    vendors = {**running.vendors, "acme": acme.model_copy(update=changes)}
    service.settings.replace(running.model_copy(update={"vendors": vendors}))


async def test_concurrency_raised_by_a_reload_reaches_the_waiting_orders(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
) -> None:
    """40 orders wait for a vendor allowed one call at a time (0.3 s each); its concurrency
    is raised to 8 by a reload: the orders already waiting go out 8 at a time (~1.5 s), not
    one at a time until the backlog has drained (~11 s)."""
    sim = await make_simulator(clock, latency=0.3)
    service = await make_service(
        sim.base_url,
        clock,
        polling=POLLING,
        vendor={"concurrency": 1, "timeout": "2s"},
        worker={"concurrency": 16, "batch_size": 40},
    )
    await service.submit([new_order(f"CR{i:02d}") for i in range(40)], actor="test")
    worker = make_worker(service)
    async with running(worker) as run:
        while sim.stats()["place_requests"] < 2:  # the backlog has formed
            assert not run.done()
            await asyncio.sleep(0.02)
        reload_acme(service, concurrency=8)
        started = time.perf_counter()
        await until_placed(sim, 40, started=started, within=4.0, why=" after the reload")
    assert sim.stats()["max_place_requests"] == 1


async def test_rate_limited_orders_go_out_in_the_order_they_fell_due(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
) -> None:
    """A slow vendor limited to 20 calls/s: the orders waiting for its rate keep their order
    (each one due a second after the other), none overtaken by later ones."""
    sim = await make_simulator(clock, latency=0.4)
    service = await make_service(
        sim.base_url, clock, polling=POLLING, vendor={"rate_limit": 20.0, "timeout": "2s"}
    )
    for i in range(30):
        await service.submit([new_order(f"RL{i:03d}")], actor="test")
        clock.advance(1)
    worker = make_worker(service)
    await worker.run(burst=True)
    assert list(sim.place_requests) == [f"RL{i:03d}" for i in range(30)]


async def test_a_breaker_turned_off_by_a_reload_while_open_lets_calls_through(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
) -> None:
    """``circuit_breaker.failures = 0`` turns the breaker off. Turned off by a reload while
    it is half open, with the vendor still timing out: its orders are called at the
    vendor's concurrency (8), not one probe at a time, and the breaker is closed — in this
    worker and in the database, which every worker reads."""
    sim = await make_simulator(clock, latency=1.0)  # every call times out (timeout 0.3 s)
    service = await make_service(
        sim.base_url,
        clock,
        polling=POLLING,
        vendor={"concurrency": 8, "circuit_breaker": {"failures": 1, "open_for": "1m"}},
        worker={"concurrency": 16, "batch_size": 20},
    )
    await service.submit([new_order(f"OFF{i:02d}") for i in range(16)], actor="test")
    worker = make_worker(service)
    timeout = Exchange(Abnormal("timeout", "no answer"))
    two_minutes_ago = clock.now() - timedelta(minutes=2)
    worker.breakers.record(
        "acme", timeout, two_minutes_ago, failures=1, open_for=timedelta(minutes=1)
    )
    assert worker.breakers.half_open("acme", clock.now())
    reload_acme(service, circuit_breaker={"failures": 0})
    async with running(worker):
        started = time.perf_counter()
        await until_placed(sim, 16, started=started, within=2.5)
    assert not worker.breakers.tripped("acme")
    assert "acme" not in await service.store.open_circuits(now=clock.now())
    assert sim.stats()["max_place_requests"] == 1


async def test_a_rate_limit_turned_off_and_on_again_strands_no_waiting_order(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
) -> None:
    """A reload turns a vendor's rate limit off in the loop step between a rate tick giving
    a waiting order its slot and a lane taking that order, then on again: the slot must not
    outlive the order, or every later release would think a slot is still on its way and
    the vendor's waiting orders would never go out."""
    sim = await make_simulator(clock, latency=1.0)
    service = await make_service(
        sim.base_url,
        clock,
        polling=POLLING,
        vendor={"concurrency": 2, "rate_limit": 5.0, "timeout": "3s"},
        worker={"concurrency": 8, "batch_size": 20},
    )
    await service.submit([new_order(f"SQ{i:02d}") for i in range(12)], actor="test")
    worker = make_worker(service)
    async with running(worker):
        started = time.perf_counter()
        # (white box: the one loop step in which a released order holds the vendor's slot)
        while not ("acme" in worker._rate_passes and worker._starting.get("acme")):
            assert time.perf_counter() - started < 5.0, "no order was released by a rate tick"
            await asyncio.sleep(0)
        reload_acme(service, rate_limit=None)
        await asyncio.sleep(0.3)
        reload_acme(service, rate_limit=5.0)
        await until_placed(sim, 12, started=started, within=15.0, why=": orders stranded")
    assert sim.stats()["max_place_requests"] == 1


async def test_released_orders_that_cannot_start_go_back_in_their_order(
    make_simulator: MakeSimulator,
    make_service: MakeService,
    make_worker: MakeWorker,
    clock: ManualClock,
) -> None:
    """White box, the queue discipline alone: four of six waiting orders are released at
    concurrency 4, then a reload sets a rate limit before the lanes take them; the first
    gets the rate slot and the three others go back ahead of the rest, oldest first."""
    sim = await make_simulator(clock)
    service = await make_service(
        sim.base_url,
        clock,
        polling=POLLING,
        vendor={"concurrency": 4, "timeout": "3s"},
        worker={"concurrency": 8, "batch_size": 20},
    )
    worker = make_worker(service)
    started: list[int] = []

    async def handle(order: Any) -> None:  # no vendor call: only which order went first
        started.append(order.id)
        await asyncio.sleep(0.01)

    worker._handle = handle  # type: ignore[method-assign]
    waiting = [SimpleNamespace(id=i, vendor="acme") for i in range(1, 7)]
    worker._waiting["acme"] = deque(waiting)  # type: ignore[arg-type]
    worker._waiting_count = len(waiting)
    worker._release("acme")
    assert [o.id for o in worker._released] == [1, 2, 3, 4]
    reload_acme(service, rate_limit=0.5)
    await asyncio.sleep(0.05)
    worker._draining = True  # (the rate tick would release the next one in 2 s)
    assert started == [1]
    assert [o.id for o in worker._waiting["acme"]] == [2, 3, 4, 5, 6]
    assert worker._waiting_count == 5
