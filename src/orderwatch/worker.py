"""The worker: claim due orders, call vendors, write results back.

It replaces the seed's thread pool with asyncio: many orders in flight, bounded overall
(``worker.concurrency``) and per vendor (``vendors.NAME.concurrency``). The database sees
batches, not single orders: one claim per batch, one commit per batch of results, and one
commit per *group* of SENT marks — each order's SENT mark is committed inside its own
concurrency slot just before its place-order request leaves, and marks that are ready at
the same moment share a commit.

``run(burst=True)`` returns when nothing is due (tests, the demo); ``run()`` waits for the
next due time and stops on :meth:`stop`, finishing or releasing what is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import lifecycle, outcomes
from .api import metrics
from .breaker import CircuitBreakers, Closed, Opened
from .clock import Clock
from .lifecycle import Place, Transition
from .log import get_logger
from .order import Order
from .outcomes import Abnormal, Exchange
from .settings import SettingsHolder, VendorSettings
from .store.base import Store, Write
from .vendors import VendorAdapter, VendorRegistry
from .views import outbox_item

log = get_logger("orderwatch.worker")

IDLE_MAX = 1.0  # real seconds between looks at the database when nothing seems due
#: Real seconds a result waits at most for others to share its write-back commit; a full
#: batch (``worker.batch_size`` results) goes at once. A commit costs about a millisecond
#: of CPU whatever its size (SQLite writes every page it dirtied to the WAL), so at full
#: speed batches should be full: at 5 ms the worker made ~10 % fewer vendor calls a second
#: than at 20 ms, and at 20 ms (~60 results a commit) its CPU per call was ~5 % higher than
#: with full ones (bench/pipeline.py, alternating runs). A crash loses at most these
#: results, whose queries are re-sent.
FLUSH_DELAY = 0.05


class Pacer:
    """At most ``rate`` calls a second, evenly spaced: a call may go when ``1/rate`` seconds
    have passed since the last one (no bursts, so no second ever sees more than ``rate + 1``)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._interval = 1.0 / rate
        self._next = 0.0

    def take(self, now: float) -> float:
        """0 if a call may go now (and counts it), else the seconds until one may."""
        if now < self._next:
            return self._next - now
        self._next = now + self._interval
        return 0.0


class Samples:
    """A bounded sample of values (reservoir), for percentiles without unbounded memory."""

    def __init__(self, size: int = 100_000, seed: int = 0) -> None:
        self.size = size
        self.count = 0
        self.values: list[float] = []
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.count += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            i = self._rng.randrange(self.count)
            if i < self.size:
                self.values[i] = value

    def percentile(self, q: float) -> float:
        if not self.values:
            return 0.0
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _checks_answers(adapter: VendorAdapter) -> bool:
    """Whether the adapter's own class says it checks its answers (``checks_answers``):
    a plug-in built on a built-in adapter does not inherit the claim, since it may have
    changed how answers are read."""
    return bool(type(adapter).__dict__.get("checks_answers", False))


def _refused_value(exc: BaseException) -> bool:
    """The database refused a value (PEP 249 ``DataError`` or ``IntegrityError``, from any
    driver or SQLAlchemy's wrapper of it): the same write fails again, unlike an outage."""
    return any(c.__name__ in ("DataError", "IntegrityError") for c in type(exc).__mro__)


def _unstorable(
    step: Callable[..., Transition],
    asked: Order,
    exchange: Exchange,
    *,
    policy: lifecycle.Policy,
    now: datetime,
    rng: random.Random,
) -> Callable[[str], Transition]:
    """The fallback of a vendor answer's write-back: the same step with the answer taken
    as abnormal (its status and timing kept, none of the vendor's values)."""

    def fallback(error: str) -> Transition:
        bad = Exchange(Abnormal("malformed", error), exchange.latency, exchange.http_status)
        return step(asked, bad, policy, now, rng)

    return fallback


@dataclass
class WorkerStats:
    claimed: int = 0
    places: int = 0
    queries: int = 0
    applied: int = 0
    discarded: int = 0  # results dropped because the lease had been taken over
    finished: int = 0
    claims: int = 0  # claim round trips
    flushes: int = 0  # write-back round trips
    sent_commits: int = 0  # SENT group commits
    deferred: int = 0  # calls held back because the vendor's circuit breaker was open
    refused: int = 0  # results the database would not store (dropped, see Worker.flush)
    lateness: Samples = field(default_factory=Samples)  # schedule seconds past next_run_at


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{os.urandom(2).hex()}"


class Worker:
    def __init__(
        self,
        store: Store,
        settings: SettingsHolder,
        *,
        clock: Clock,
        vendors: VendorRegistry | None = None,
        worker_id: str | None = None,
        rng: random.Random | None = None,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.vendors = vendors or VendorRegistry(settings, clock=clock)
        self._own_vendors = vendors is None
        self.worker_id = worker_id or new_worker_id()
        self.rng = rng or random.Random()
        self.stats = WorkerStats()
        self.on_transition = on_transition
        # Claimed orders wait in _ready; at most worker.concurrency *lanes* (long-lived tasks)
        # take them one by one, so an order costs no task and no semaphore of its own. An
        # order whose vendor is at its concurrency or rate limit waits in _waiting[vendor],
        # holding no lane, until that vendor has room again.
        self._ready: deque[Order] = deque()
        self._waiting: dict[str, deque[Order]] = {}
        self._waiting_count = 0
        # Waiting orders given back to the lanes (taken before _ready, oldest first), and how
        # many of each vendor's are there: counted against the vendor's room so that two
        # calls ending in one loop step do not both release the same room.
        self._released: deque[Order] = deque()
        self._starting: dict[str, int] = {}
        self._returned: dict[str, int] = {}  # released orders put back at a queue's head
        self._busy = 0  # orders being processed in lanes
        self._vendor_busy: dict[str, int] = {}
        self._lanes: set[asyncio.Task[None]] = set()
        self._rate_timers: set[str] = set()  # vendors with a rate wake-up scheduled
        self._rate_passes: set[str] = set()  # vendors whose next slot a rate tick took
        self._held: dict[int, str] = {}  # order id -> lease token, until written back
        self._pending: list[Write] = []
        self._flush_lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_waiting = False  # the flush task waits for FLUSH_DELAY or a full batch
        self._batch_full = asyncio.Event()
        self._sent_queue: list[tuple[Write, asyncio.Future[bool]]] = []
        self._sent_task: asyncio.Task[None] | None = None
        self._pacers: dict[str, Pacer] = {}
        self.breakers = CircuitBreakers()
        self._probes: dict[str, asyncio.Event] = {}  # vendor -> its half-open probe is out
        self._background: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._sleep_until: datetime | None = None  # the loop sleeps until this schedule time
        self._earliest_written: datetime | None = None  # earliest next_run_at flushed lately
        self._stopping = False
        self._draining = False  # shutting down: lanes start no new order

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Stop claiming; ``run`` finishes or releases in-flight work and returns."""
        self._stopping = True
        self._wake.set()
        self._slot_free.set()

    def wake(self) -> None:
        """Look at the database now (new orders, an operator's retry)."""
        self._wake.set()

    # ------------------------------------------------------------------ loops

    async def run(self, *, burst: bool = False) -> WorkerStats:
        self._draining = False
        helpers = [
            asyncio.create_task(self._renew_leases()),
            asyncio.create_task(self.store.listen(self.wake)),  # PostgreSQL LISTEN/NOTIFY
        ]
        try:
            await self._loop(burst)
        finally:
            try:
                # Leases are still renewed while in-flight calls finish within the grace:
                # an order whose lease lapsed there would be taken over by another worker.
                await self._shutdown()
            finally:
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
        return self.stats

    async def run_once(self) -> int:
        """Claim one batch, handle all of it, write it back; return how many were claimed."""
        self._draining = False
        claimed = await self._claim(self.settings.current.worker.batch_size)
        while self._lanes or self._waiting_count:
            if self._lanes:
                await asyncio.gather(*list(self._lanes))
            else:
                await self._wait(self._slot_free, 0.01)
                self._slot_free.clear()
        await self.flush()
        return claimed

    @property
    def in_flight(self) -> int:
        """Claimed orders not yet done with: waiting for a lane, for a vendor, or in a call."""
        return len(self._ready) + len(self._released) + self._waiting_count + self._busy

    async def _loop(self, burst: bool) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                if await self._round(burst):
                    return
                delay = 0.5
            except Exception as exc:
                log.warning("database_unavailable", error=str(exc).splitlines()[0], retry_in=delay)
                await self._wait(self._wake, delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30.0)

    async def _round(self, burst: bool) -> bool:
        """One look at the database; True when burst mode is done."""
        # Clear before looking, so a wake-up that arrives while we look is not lost.
        self._wake.clear()
        self._slot_free.clear()
        self._earliest_written = None
        wcfg = self.settings.current.worker
        # Orders waiting for a vendor at its limit hold no lane, and the next claims skip
        # that vendor (see _claim): a slow or rate-limited vendor's backlog must not keep
        # the worker from claiming other vendors' due orders.
        busy = len(self._ready) + len(self._released) + self._busy
        capacity = wcfg.concurrency + wcfg.batch_size - busy
        threshold = max(1, min(wcfg.batch_size, wcfg.concurrency) // 2)
        if capacity < threshold and busy:
            # Enough claimed for now; wait for slots rather than hoarding leases.
            await self._wait(self._slot_free, IDLE_MAX)
            return False
        asked = min(wcfg.batch_size, max(capacity, 1))
        if await self._claim(asked) == asked:
            await asyncio.sleep(0)  # let the new tasks start before the next claim
            return False
        # Everything due now is claimed. Sleep until the next due time, unless a
        # write-back schedules something earlier (see flush) or we are told to wake.
        if not self.in_flight:
            await self.flush()
        due = await self.store.next_due_at(
            now=self.clock.now(), real_now=self.clock.real(), skip_vendors=self._backlogged()
        )
        written = self._earliest_written  # results stored while we asked the database
        if written is not None and (due is None or written < due):
            due = written
        now = self.clock.now()
        if due is not None and due <= now:
            timeout = 0.005  # due now: a write-back raced us, or still leased elsewhere
        elif burst and not self.in_flight and not self._pending:
            if not self._flush_lock.locked():
                return True
            # A write-back is still being applied: it may schedule an order for now.
            await self.flush()
            return False
        elif due is None:
            timeout = IDLE_MAX
        else:
            timeout = min(IDLE_MAX, (due - now).total_seconds() / self.clock.speed)
        self._sleep_until = (
            due if due is not None else now + timedelta(seconds=IDLE_MAX * self.clock.speed)
        )
        await self._wait(self._wake, timeout)
        self._sleep_until = None
        return False

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> None:
        if event.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.001)):
                await event.wait()

    async def _claim(self, limit: int) -> int:
        wcfg = self.settings.current.worker
        claimed = await self.store.claim_due(
            now=self.clock.now(),
            real_now=self.clock.real(),
            limit=limit,
            worker_id=self.worker_id,
            lease=wcfg.lease.total_seconds(),
            skip_vendors=self._backlogged(),
        )
        self.stats.claims += 1
        self.stats.claimed += len(claimed)
        held = self._held
        for order in claimed:
            assert order.lease_token is not None
            held[order.id] = order.lease_token
        self._ready.extend(claimed)
        self._add_lanes()
        return len(claimed)

    def _backlogged(self) -> list[str]:
        """Vendors with orders already waiting here for room: claiming more of theirs would
        only make those wait too (a waiting order resuming with the last of them wakes the
        loop to claim theirs again)."""
        return [vendor for vendor, waiting in self._waiting.items() if waiting]

    # ------------------------------------------------------------------ lanes

    def _add_lanes(self) -> None:
        # a lane in a call takes no ready order until its call ends: count those apart
        waiting_for_lane = len(self._ready) + len(self._released)
        want = min(self.settings.current.worker.concurrency, self._busy + waiting_for_lane)
        while len(self._lanes) < want:
            self._lanes.add(asyncio.create_task(self._lane()))

    async def _lane(self) -> None:
        try:
            await self._take_orders()
        finally:
            # here, not in a done callback a loop step later: a claim in between would
            # count this lane as running and start one too few
            self._lanes.discard(asyncio.current_task())
            if not self.in_flight:
                self._wake.set()  # burst mode returns once nothing is in flight

    async def _take_orders(self) -> None:
        ready, released = self._ready, self._released
        while (released or ready) and not self._draining:
            if released:  # waiting orders given back go first, oldest first
                order = released.popleft()
                vendor = order.vendor
                self._starting[vendor] -= 1
                has_room = self._vendor_has_room(vendor)
                # the rate slot taken for it is used now or lost, never left for another
                self._rate_passes.discard(vendor)
                if not has_room:  # a probe started meanwhile, say: it stays the oldest
                    self._put_back(order)
                    continue
            else:
                order = ready.popleft()
                vendor = order.vendor
                if not self._vendor_has_room(vendor):
                    self._waiting.setdefault(vendor, deque()).append(order)
                    self._waiting_count += 1
                    continue
            self._vendor_busy[vendor] = self._vendor_busy.get(vendor, 0) + 1
            self._busy += 1
            try:
                await self._handle(order)
            finally:
                self._busy -= 1
                self._vendor_busy[vendor] -= 1
                self._slot_free.set()
                if self._waiting_count:
                    self._release(vendor)

    def _put_back(self, order: Order) -> None:
        """A released order that cannot start after all goes back ahead of the vendor's
        waiting orders, behind those put back before it (they are older)."""
        vendor = order.vendor
        waiting = self._waiting.setdefault(vendor, deque())
        ahead = self._returned.get(vendor, 0)
        waiting.insert(ahead, order)
        self._returned[vendor] = ahead + 1
        self._waiting_count += 1

    def _vendor_room(self, vendor: str, cfg: VendorSettings | None) -> int:
        """How many more of the vendor's calls may be in flight (``cfg``: its settings;
        a vendor no longer configured gets one at a time)."""
        size = cfg.concurrency if cfg is not None else 1
        return size - self._vendor_busy.get(vendor, 0)

    def _vendor_has_room(self, vendor: str) -> bool:
        if vendor in self._probes:
            return False  # its half-open breaker's probe is out: the probe's end releases us
        cfg = self.settings.current.vendors.get(vendor)
        if self._vendor_room(vendor, cfg) <= 0:
            return False  # a lane finishing one of this vendor's calls releases a waiter
        if cfg is None or cfg.rate_limit is None:
            return True
        if vendor in self._rate_passes:  # a slot taken for this waiter when it was released
            self._rate_passes.discard(vendor)
            return True
        return self._rate_slot(vendor, cfg.rate_limit)

    def _rate_slot(self, vendor: str, rate: float) -> bool:
        """Take the vendor's next rate slot if it is here; if not, have a rate tick come
        when it is."""
        pacer = self._pacers.get(vendor)
        if pacer is None or pacer.rate != rate:
            pacer = self._pacers[vendor] = Pacer(rate)
        wait = pacer.take(time.monotonic())
        if wait <= 0:
            return True
        self._rate_tick_in(vendor, wait)
        return False

    def _rate_tick_in(self, vendor: str, seconds: float) -> None:
        if vendor not in self._rate_timers:
            self._rate_timers.add(vendor)
            asyncio.get_running_loop().call_later(seconds, self._rate_tick, vendor)

    def _rate_tick(self, vendor: str) -> None:
        """A rate-limited vendor's next slot may be here: release its oldest waiting order
        and tick again at the vendor's rate while others wait, so that calls keep coming at
        the rate whatever the vendor's latency (a finished call also releases a waiter)."""
        self._rate_timers.discard(vendor)
        if not self._waiting.get(vendor) or self._draining:
            return
        self._release(vendor)
        pacer = self._pacers.get(vendor)
        if self._waiting.get(vendor) and pacer is not None:
            self._rate_tick_in(vendor, 1 / pacer.rate)

    def _release(self, vendor: str) -> None:
        """Give the lanes as many of the vendor's oldest waiting orders as may start now:
        its room (concurrency less calls in flight and orders already on their way to a
        lane), none while its breaker's probe is out, and at most one per slot of its rate
        limit (taken before the order leaves the queue), so the waiters keep their order."""
        waiting = self._waiting.get(vendor)
        if not waiting or vendor in self._probes or self._draining:
            return
        cfg = self.settings.current.vendors.get(vendor)
        room = self._vendor_room(vendor, cfg) - self._starting.get(vendor, 0)
        if room <= 0:
            return  # one of its calls ending releases again
        if cfg is not None and cfg.rate_limit is not None:
            if vendor in self._rate_passes or not self._rate_slot(vendor, cfg.rate_limit):
                return  # a slot is on its way to a lane already, or the rate tick comes
            self._rate_passes.add(vendor)  # at most one: passes never add up to a burst
            room = 1
        # after the orders released before, ahead of newly claimed ones
        n = min(room, len(waiting))
        self._released.extend(waiting.popleft() for _ in range(n))
        self._waiting_count -= n
        if self._returned.get(vendor):
            self._returned[vendor] = max(0, self._returned[vendor] - n)
        self._starting[vendor] = self._starting.get(vendor, 0) + n
        if not waiting:
            self._wake.set()  # its backlog is gone: claims may take its orders again
        self._add_lanes()

    async def _renew_leases(self) -> None:
        while True:
            lease = self.settings.current.worker.lease.total_seconds()
            await asyncio.sleep(lease / 3)
            if self._held:
                until = self.clock.real() + timedelta(seconds=lease)
                try:
                    await self.store.renew_leases(dict(self._held), until=until)
                except Exception as exc:
                    log.warning("lease_renewal_failed", error=str(exc).splitlines()[0])

    async def _shutdown(self) -> None:
        grace = self.settings.current.worker.shutdown_grace.total_seconds()
        self._draining = True  # lanes take no new order; those not started are released
        if self._lanes:
            _, pending = await asyncio.wait(list(self._lanes), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self._ready.clear()
        self._released.clear()
        self._waiting.clear()
        self._waiting_count = 0
        self._starting.clear()
        self._returned.clear()
        self._rate_passes.clear()
        self._rate_timers.clear()  # (a timer still due finds no waiting order and stops)
        await self.flush()
        if self._held:  # claimed but not written back: let another worker take them at once
            await self.store.release(dict(self._held))
            self._held.clear()
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        if self._own_vendors:
            await self.vendors.close()

    # ------------------------------------------------------------------ one order

    async def _handle(self, order: Order) -> None:
        try:
            await self._process(order)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug, not a vendor's doing: leave the lease to expire so the order is
            # looked at again later instead of spinning on it now.
            log.exception("order_failed_in_worker", order_no=order.order_no, vendor=order.vendor)
            self._held.pop(order.id, None)

    async def _process(self, order: Order) -> None:
        token = order.lease_token
        now = self.clock.now()
        if order.next_run_at is not None:
            late = (now - order.next_run_at).total_seconds()
            self.stats.lateness.add(late)
            metrics.lateness(late / self.clock.speed)
        adapter = self.vendors.get(order.vendor)
        policy = self.settings.policy(order.vendor)
        action = lifecycle.plan(order, policy, now, vendor_known=adapter is not None)
        if isinstance(action, Transition):
            self._write(action, token)
            return
        assert adapter is not None
        if not self.breakers.tripped(order.vendor):  # the usual case: no breaker involved
            await self._call(order, action, adapter, token, now=now, policy=policy)
            return
        probe = await self._breaker_gate(order.vendor)
        now = self.clock.now()
        if probe is None:
            until = self.breakers.open_until(order.vendor, now) or now
            self.stats.deferred += 1
            why = "the vendor's circuit breaker is open (calls to it keep failing)"
            self._write(lifecycle.defer(order, now, until=until, why=why), token)
            return
        # the wait for a probe may have outlasted a reload that retired ``adapter``
        adapter = self.vendors.get(order.vendor) or adapter
        try:
            await self._call(order, action, adapter, token, now=now, policy=policy)
        finally:
            if probe:
                self._probes.pop(order.vendor).set()
                # the orders that waited for its answer (holding no lane) go back to the
                # lanes: called if it closed the breaker, deferred if it opened it again
                self._release(order.vendor)

    async def _breaker_gate(self, vendor: str) -> bool | None:
        """None: do not call (breaker open); True: this call is the half-open probe."""
        cfg = self.settings.current.vendors.get(vendor)
        if cfg is not None and cfg.circuit_breaker.failures <= 0:  # turned off by a reload
            self._breaker_changed(vendor, self.breakers.close(vendor), None, self.clock.now())
            return False
        while True:
            now = self.clock.now()
            if self.breakers.open_until(vendor, now) is not None:
                return None
            if not self.breakers.half_open(vendor, now):
                return False
            running = self._probes.get(vendor)
            if running is None:
                self._probes[vendor] = asyncio.Event()
                return True
            await running.wait()  # the probe's answer decides for us too

    async def _call(
        self,
        order: Order,
        action: lifecycle.Action,
        adapter: VendorAdapter,
        token: str | None,
        *,
        now: datetime,
        policy: lifecycle.Policy,
    ) -> None:
        if isinstance(action, Place):
            sent = lifecycle.mark_sent(order, now, actor=self.worker_id, policy=policy)
            if not await self._commit_sent(Write(sent, token, release=False)):
                self._held.pop(order.id, None)
                self.stats.discarded += 1
                return
            self.stats.places += 1
            # the commit may have outlasted a reload that retired ``adapter``: it is closed
            # its timeout + a margin after that, not after this call
            adapter = self.vendors.get(order.vendor) or adapter
            exchange = await adapter.place(sent.order)
            if not _checks_answers(adapter):
                exchange = outcomes.checked(exchange)  # a plug-in's answer
            metrics.vendor_call(order.vendor, "place", exchange.latency, exchange.outcome_name)
            now = self.clock.now()
            self._count_for_breaker(order.vendor, exchange, now)
            step, asked = lifecycle.after_place, sent.order
        else:
            self.stats.queries += 1
            exchange = await adapter.query(order)
            if not _checks_answers(adapter):
                exchange = outcomes.checked(exchange)
            metrics.vendor_call(order.vendor, "query", exchange.latency, exchange.outcome_name)
            now = self.clock.now()
            self._count_for_breaker(order.vendor, exchange, now)
            step, asked = lifecycle.after_query, order
        policy = self.settings.policy(order.vendor)
        result = step(asked, exchange, policy, now, self.rng)
        if self.settings.current.log.level == "debug":  # skip building the fields otherwise
            log.debug(
                "vendor_exchange",
                order_no=order.order_no,
                vendor=order.vendor,
                attempt=result.order.queries,
                outcome=exchange.outcome_name,
                http_status=exchange.http_status,
                latency_ms=round(exchange.latency * 1000, 1),
            )
        fallback = _unstorable(step, asked, exchange, policy=policy, now=now, rng=self.rng)
        self._write(result, token, fallback)

    def _count_for_breaker(self, vendor: str, exchange: Exchange, now: datetime) -> None:
        cfg = self.settings.current.vendors.get(vendor)
        if cfg is None:
            return
        change = self.breakers.record(
            vendor,
            exchange,
            now,
            failures=cfg.circuit_breaker.failures,
            open_for=cfg.circuit_breaker.open_for,
        )
        self._breaker_changed(vendor, change, exchange, now)

    def _breaker_changed(
        self, vendor: str, change: Opened | Closed | None, exchange: Exchange | None, now: datetime
    ) -> None:
        """Log, count and store a breaker's opening or closing (every worker and
        ``GET /stats`` see it through the database)."""
        if isinstance(change, Opened):
            assert exchange is not None  # only a failed exchange opens a breaker
            log.warning(
                "circuit_open",
                vendor=vendor,
                failures=change.failures,
                until=change.until.isoformat(),
                last=exchange.outcome_name,
            )
            metrics.circuit_changed(vendor, opened=True)
            note = f"{change.failures} transport failures in a row ({exchange.outcome_name})"
            self._in_background(
                self.store.open_circuit(vendor, now=now, until=change.until, note=note)
            )
        elif isinstance(change, Closed):
            log.info("circuit_closed", vendor=vendor)
            metrics.circuit_changed(vendor, opened=False)
            self._in_background(self.store.close_circuit(vendor))

    def _in_background(self, work: Coroutine[Any, Any, object]) -> None:
        """A store write the caller need not wait for; failures are logged, not raised."""

        async def run() -> None:
            try:
                await work
            except Exception as exc:
                log.warning("background_write_failed", error=str(exc).splitlines()[0])

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ writing back

    def _write(
        self,
        t: Transition,
        token: str | None,
        fallback: Callable[[str], Transition] | None = None,
    ) -> None:
        outbox = outbox_item(t, self.settings.current.notify.events)
        self._pending.append(Write(t, token, outbox, fallback=fallback))
        if t.order.status.is_final:
            log.info(
                "order_finished",
                order_no=t.order.order_no,
                vendor=t.order.vendor,
                status=t.order.status.value,
                reason=t.order.reason.value if t.order.reason else None,
                attempt=t.order.queries,
            )
        full = len(self._pending) >= self.settings.current.worker.batch_size
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_after(0 if full else FLUSH_DELAY))
        elif full and self._flush_waiting:
            self._batch_full.set()

    async def _flush_after(self, delay: float) -> None:
        while True:
            full_only = False
            if delay > 0:
                self._flush_waiting = True
                try:
                    await self._wait(self._batch_full, delay)
                finally:
                    self._flush_waiting = False
                    # woken by a full batch: the few results that came with it in the same
                    # loop step wait for their own window rather than take a commit alone
                    full_only = self._batch_full.is_set()
                    self._batch_full.clear()
            else:
                await asyncio.sleep(0)
            await self._flush_until_stored(full_batches_only=full_only)
            if not self._pending:
                return
            delay = FLUSH_DELAY

    async def _flush_until_stored(self, *, full_batches_only: bool) -> None:
        """:meth:`flush`, retried with backoff while the database fails."""
        retry = 0.5
        while True:
            try:
                await self.flush(full_batches_only=full_batches_only)
                return
            except Exception as exc:
                log.warning("write_back_failed", error=str(exc).splitlines()[0], retry_in=retry)
                await asyncio.sleep(retry * random.uniform(0.8, 1.2))
                retry = min(retry * 2, 30.0)

    async def flush(self, *, full_batches_only: bool = False) -> None:
        """Write every buffered result in one transaction per batch (with
        ``full_batches_only``, leave a last batch that is not full buffered)."""
        async with self._flush_lock:
            while self._pending:
                batch_size = self.settings.current.worker.batch_size
                if full_batches_only and len(self._pending) < batch_size:
                    return
                batch, self._pending = self._pending[:batch_size], self._pending[batch_size:]
                try:
                    applied = await self.store.apply(batch)
                except Exception as exc:
                    if not _refused_value(exc):
                        self._pending[:0] = batch  # fenced by token: safe to apply again
                        raise
                    await self._apply_apart(batch, exc)
                    continue
                except BaseException:
                    self._pending[:0] = batch
                    raise
                self._settle(batch, applied)

    async def _apply_apart(self, batch: list[Write], refusal: Exception) -> None:
        """The database refused a value in ``batch`` (too long for its column, say): apply
        it in halves down to the write it refuses, which :meth:`_refuse` handles. Retrying
        the batch as it is would fail for good and hold back every result behind it."""
        if len(batch) == 1:
            await self._refuse(batch[0], refusal)
            return
        half = len(batch) // 2
        parts = [batch[:half], batch[half:]]
        while parts:
            part = parts.pop(0)
            try:
                applied = await self.store.apply(part)
            except Exception as exc:
                if not _refused_value(exc):  # an outage meanwhile: what is left goes back
                    self._pending[:0] = [w for p in (part, *parts) for w in p]
                    raise
                if len(part) == 1:
                    try:
                        await self._refuse(part[0], exc)
                    except BaseException:
                        self._pending[:0] = [w for p in parts for w in p]
                        raise
                else:
                    half = len(part) // 2
                    parts[:0] = [part[:half], part[half:]]
                continue
            except BaseException:
                self._pending[:0] = [w for p in (part, *parts) for w in p]
                raise
            self._settle(part, applied)

    async def _refuse(self, write: Write, exc: Exception) -> None:
        """The database refuses a value in ``write``: store its fallback instead (the answer
        as abnormal: counted, on the backoff, toward max_polls; a place answer reconciled),
        or, without one or if that is refused too, drop it and let its lease run out."""
        order = write.transition.order
        self.stats.refused += 1
        error = str(exc).splitlines()[0].replace("\x00", "")[:200]
        log.error("write_back_refused", order_no=order.order_no, vendor=order.vendor, error=error)
        if write.fallback is not None:
            t = write.fallback(f"answer could not be stored ({error})")
            outbox = outbox_item(t, self.settings.current.notify.events)
            instead = Write(t, write.token, outbox, write.release)
            try:
                applied = await self.store.apply([instead])
            except Exception as again:
                if not _refused_value(again):
                    self._pending.insert(0, instead)  # an outage: retried as usual
                    raise
            else:
                self._settle([instead], applied)
                return
        if self._held.get(order.id) == write.token:  # not a newer claim of the same order
            del self._held[order.id]  # no longer renewed: the lease runs out

    def _settle(self, batch: list[Write], applied: set[int]) -> None:
        """Account for a stored batch: leases given up, wake-ups, counters, callbacks."""
        self.stats.flushes += 1
        sleep_until = self._sleep_until
        for w in batch:
            oid = w.transition.order.id
            nxt = w.transition.order.next_run_at
            if nxt is not None:
                if self._earliest_written is None or nxt < self._earliest_written:
                    self._earliest_written = nxt
                if sleep_until is not None and nxt < sleep_until:
                    self._wake.set()
            if self._held.get(oid) == w.token:
                del self._held[oid]
            if oid in applied:
                self.stats.applied += 1
                if w.transition.order.status.is_final:
                    self.stats.finished += 1
                    done = w.transition.order
                    metrics.order_finished(done.status.value, done.reason)
                if self.on_transition is not None:
                    self.on_transition(w.transition)
            else:
                self.stats.discarded += 1
                log.warning(
                    "result_discarded",
                    order_no=w.transition.order.order_no,
                    vendor=w.transition.order.vendor,
                    note="lease was taken over or the order changed by an operator",
                )

    async def _commit_sent(self, write: Write) -> bool:
        """Group commit of SENT marks: every mark waits for the commit that includes it."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._sent_queue.append((write, future))
        if self._sent_task is None or self._sent_task.done():
            self._sent_task = asyncio.create_task(self._flush_sent())
        return await future

    async def _flush_sent(self) -> None:
        while self._sent_queue:
            group, self._sent_queue = self._sent_queue, []
            try:
                applied = await self.store.apply([w for w, _ in group])
            except Exception as exc:
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats.sent_commits += 1
            for w, fut in group:
                if not fut.done():
                    fut.set_result(w.transition.order.id in applied)


__all__ = ["Pacer", "Samples", "Worker", "WorkerStats", "new_worker_id"]
