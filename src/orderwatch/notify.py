"""Deliver the outbox: notifications written with the transitions they report.

A worker writes a notification to the outbox in the same transaction as the transition it
reports (DESIGN §2 S5), so nothing is announced that was not committed. A :class:`Deliverer`
claims due outbox rows with a lease, like the workers claim orders, hands each to a
:class:`Channel`, and records what happened::

    pending ──2xx──────────────────────────────▶ delivered
       │  ──4xx (not 408/429)──────────────────▶ failed     (permanent: the endpoint said no)
       │  ──anything else, age < max_age──┐
       │                                  ▼
       └◀──── next try: backoff × jitter, at least Retry-After, never past max_age
                 anything else, age ≥ max_age ─▶ failed

At-least-once: a deliverer that dies mid-send leaves its lease to expire and another one
sends the row again with the same ``webhook-id``, so the receiver can de-duplicate. Only the
oldest pending notification of an order is ever claimed, so each order's notifications
arrive in the order they were written. Every schedule duration (backoff, Retry-After,
max-age) is schedule time from the :class:`~orderwatch.clock.Clock`; HTTP timeouts and
leases are real time.

Channels: ``log`` (here), ``http``/``https`` (:mod:`orderwatch.webhook`, Standard Webhooks)
and ``amqp``/``amqps`` (:mod:`orderwatch.channels.rabbitmq`); others plug in through the
entry point group ``orderwatch.notifiers``. The channel is picked by the scheme of
``notify.webhook_url`` (no URL: ``log``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from . import backoff
from .clock import Clock
from .errors import ConfigError
from .log import get_logger
from .store.base import OutboxResult, OutboxRow, Store

if TYPE_CHECKING:
    from .settings import NotifySettings, SettingsHolder

log = get_logger("orderwatch.notify")

__all__ = [
    "Channel",
    "ChannelFactory",
    "Deliverer",
    "Delivery",
    "LogChannel",
    "RetryPolicy",
    "build_channel",
    "channel_factory",
    "deliverer_for",
    "message_id",
    "settle",
]


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one attempt to deliver a notification came to.

    ``retry_after`` is a receiver's Retry-After in schedule seconds; ``status`` the HTTP
    status (or ``None`` when there was no answer, or the channel is not HTTP).
    """

    ok: bool
    error: str | None = None
    permanent: bool = False
    retry_after: float | None = None
    status: int | None = None


class Channel(Protocol):
    """Where notifications go. ``send`` must not raise for anything the far end does."""

    async def send(self, row: OutboxRow) -> Delivery: ...

    async def aclose(self) -> None:
        """Release connections; the channel may be used again afterwards (it reconnects)."""


ChannelFactory = Callable[..., Channel]
"""``factory(notify_settings, clock=clock) -> Channel``: what an ``orderwatch.notifiers``
entry point names."""


def message_id(row: OutboxRow) -> str:
    """The notification's id on the wire (``webhook-id``, AMQP ``message_id``).

    Derived from the row, so it is the same on every retry and every redelivery, and unique
    for ever: order numbers are never reused (tombstones) and the row id is unique within
    the order.
    """
    return f"msg_{row.order_no}_{row.id}"


class LogChannel:
    """Writes each notification to the log and counts it as delivered (and keeps nothing:
    it is the channel of a long-running ``serve`` that has no webhook URL)."""

    async def send(self, row: OutboxRow) -> Delivery:
        log.info("notification", order_no=row.order_no, type=row.event_type, outbox_id=row.id)
        return Delivery(ok=True)

    async def aclose(self) -> None:
        return None


def log_channel(notify: NotifySettings | None = None, **_: Any) -> LogChannel:
    """Entry point ``log``."""
    return LogChannel()


# ---------------------------------------------------------------- the retry policy


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff for deliveries, in schedule seconds (DESIGN §8 ``[notify]``).

    The n-th retry waits ``min(initial_interval × factor**(n−1), max_interval)``, jittered by
    ±``jitter``, at least the receiver's Retry-After, and never past ``created_at + max_age``:
    the last try happens at the max-age mark and, if it fails too, the row is ``failed``.
    """

    initial_interval: float = 30.0
    max_interval: float = 3600.0
    max_age: float = 3 * 86400.0
    factor: float = 2.0
    jitter: float = 0.1

    @classmethod
    def from_settings(cls, notify: NotifySettings) -> RetryPolicy:
        return cls(
            initial_interval=notify.initial_interval.total_seconds(),
            max_interval=notify.max_interval.total_seconds(),
            max_age=notify.max_age.total_seconds(),
        )


def settle(
    row: OutboxRow,
    outcome: Delivery,
    *,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random,
) -> OutboxResult:
    """The row's next state after one attempt that ended at ``now``. Pure: no I/O, no clock."""
    if row.lease_token is None:
        raise ValueError("settle() needs a claimed row (one with a lease token)")
    attempts = row.attempts + 1
    if outcome.ok:
        return OutboxResult(row.id, row.lease_token, "delivered", attempts, None, None, now)
    error = (outcome.error or "delivery failed")[:500]
    if outcome.permanent:
        return OutboxResult(row.id, row.lease_token, "failed", attempts, None, error, None)
    give_up_at = row.created_at + timedelta(seconds=policy.max_age)
    if now >= give_up_at:
        gave_up = f"{error} (gave up: older than max_age after {attempts} attempts)"
        return OutboxResult(row.id, row.lease_token, "failed", attempts, None, gave_up, None)
    delay = backoff.next_delay(
        attempts,
        initial_interval=policy.initial_interval,
        factor=policy.factor,
        max_interval=policy.max_interval,
        jitter=policy.jitter,
        rng=rng,
        retry_after=outcome.retry_after,
    )
    next_at = min(now + timedelta(seconds=delay), give_up_at)
    return OutboxResult(row.id, row.lease_token, "pending", attempts, next_at, error, None)


# ---------------------------------------------------------------- the deliverer


class Deliverer:
    """Claims due notifications, sends them through a channel, writes back what happened.

    ``run_once()`` claims one batch, delivers it and returns the number of rows it handled
    (the primitive for tests); ``run()`` keeps up to ``concurrency`` rows in flight, claiming
    more as slots free up, until :meth:`stop` (or, with ``burst=True``, until nothing is due).

    >>> d = Deliverer(store, clock=SystemClock(), channel=LogChannel())  # doctest: +SKIP
    >>> await d.run(burst=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        channel: Channel | None = None,
        policy: RetryPolicy | Callable[[], RetryPolicy] | None = None,
        batch_size: int = 100,
        concurrency: int = 64,
        lease: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if batch_size < 1 or concurrency < 1 or lease <= 0:
            raise ValueError("batch_size, concurrency and lease must be positive")
        self.store = store
        self.clock = clock
        self.channel: Channel = channel or LogChannel()
        self._policy = policy or RetryPolicy()
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.lease = lease
        # a send that outlives its lease would race the deliverer that takes the row over
        self.send_timeout = lease * 0.8
        self.rng = rng or random.Random()
        self.delivered = 0
        self.retried = 0
        self.failed = 0
        self.discarded = 0  # write-backs refused because the lease had been taken over
        self._stopping = False
        self._busy = 0
        self._slot_freed = asyncio.Event()

    @property
    def policy(self) -> RetryPolicy:
        """The policy in force now (a callable policy follows settings reloads)."""
        p = self._policy
        return p if isinstance(p, RetryPolicy) else p()

    def stop(self) -> None:
        self._stopping = True
        self._slot_freed.set()

    async def aclose(self) -> None:
        await self.channel.aclose()

    async def run_once(self) -> int:
        """Claim one batch, deliver it, record the results; the number of rows handled."""
        rows = await self._claim(min(self.batch_size, self.concurrency))
        if rows:
            await self._deliver(rows)
        return len(rows)

    async def run(self, *, burst: bool = False, idle: float = 0.2) -> int:
        """Deliver until stopped (or, with ``burst``, until nothing is due); rows delivered.

        ``idle`` is how long (real seconds) to wait before looking again when nothing is due.
        Cancelling the task abandons the rows in flight: their leases expire and another
        round sends them again. The channel is closed on the way out.
        """
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping:
                free = self.concurrency - self._busy
                try:
                    rows = await self._claim(min(self.batch_size, free))
                except Exception:  # the database is away: keep trying, lose nothing
                    log.exception("outbox_claim_failed")
                    await asyncio.sleep(max(idle, 1.0))
                    continue
                if rows:
                    self._busy += len(rows)
                    tasks.add(asyncio.create_task(self._deliver_in_background(rows, tasks)))
                    continue
                if burst and not tasks:
                    break
                self._slot_freed.clear()
                wait = None if (free <= 0 or (burst and tasks)) else idle
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), wait)
            if tasks:  # stopping: let the rows in flight finish and be recorded
                await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            await self.channel.aclose()
        return self.delivered

    async def _deliver_in_background(
        self, rows: Sequence[OutboxRow], tasks: set[asyncio.Task[None]]
    ) -> None:
        try:
            await self._deliver(rows)
        except Exception:  # e.g. the write-back failed: the leases expire, the rows go again
            log.exception("outbox_batch_failed", rows=len(rows))
        finally:
            # bookkeeping before waking run(), so it never sees a finished task as in flight
            task = asyncio.current_task()
            if task is not None:
                tasks.discard(task)
            self._busy -= len(rows)
            self._slot_freed.set()

    async def _claim(self, limit: int) -> list[OutboxRow]:
        if limit <= 0:
            return []
        return await self.store.claim_outbox_ordered(
            now=self.clock.now(), real_now=self.clock.real(), limit=limit, lease=self.lease
        )

    async def _deliver(self, rows: Sequence[OutboxRow]) -> None:
        policy = self.policy
        results = await asyncio.gather(*(self._attempt(row, policy) for row in rows))
        won = await self.store.finish_outbox(results)
        for r in results:
            if r.id not in won:
                self.discarded += 1
                log.warning("notification_lease_lost", outbox_id=r.id, state=r.state)
            elif r.state == "delivered":
                self.delivered += 1
            elif r.state == "failed":
                self.failed += 1
            else:
                self.retried += 1

    async def _attempt(self, row: OutboxRow, policy: RetryPolicy) -> OutboxResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.send_timeout):
                outcome = await self.channel.send(row)
        except TimeoutError:
            outcome = Delivery(False, f"no answer within {self.send_timeout:g}s (lease)")
        except Exception as exc:  # a channel bug must not lose the row: retry it
            log.exception("channel_error", outbox_id=row.id, order_no=row.order_no)
            outcome = Delivery(False, f"{type(exc).__name__}: {exc}"[:200])
        result = settle(row, outcome, now=self.clock.now(), policy=policy, rng=self.rng)
        fields = {
            "order_no": row.order_no,
            "outbox_id": row.id,
            "type": row.event_type,
            "attempt": result.attempts,
            "http_status": outcome.status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        if result.state == "delivered":
            log.info("notification_delivered", **fields)
        elif result.state == "failed":
            log.warning("notification_failed", error=result.last_error, **fields)
        else:
            log.info(
                "notification_retry",
                error=result.last_error,
                next_attempt_at=result.next_attempt_at.isoformat()
                if result.next_attempt_at
                else None,
                **fields,
            )
        return result


# ---------------------------------------------------------------- finding channels

_BUILTIN = {
    "log": "orderwatch.notify:log_channel",
    "http": "orderwatch.webhook:webhook_channel",
    "https": "orderwatch.webhook:webhook_channel",
    "amqp": "orderwatch.channels.rabbitmq:rabbitmq_channel",
    "amqps": "orderwatch.channels.rabbitmq:rabbitmq_channel",
}


def channel_factory(name: str) -> ChannelFactory:
    """The channel factory registered as ``name`` in ``orderwatch.notifiers``.

    The built-in names resolve without installed metadata (an editable checkout works);
    an entry point of the same name from another package takes precedence.
    """
    for ep in entry_points(group="orderwatch.notifiers"):
        if ep.name == name:
            factory: ChannelFactory = ep.load()
            return factory
    target = _BUILTIN.get(name)
    if target is None:
        raise ConfigError(
            [
                f"notify.webhook_url: no notifier for scheme {name!r} in entry point group "
                "'orderwatch.notifiers'"
            ]
        )
    import importlib

    module, _, attr = target.partition(":")
    built: ChannelFactory = getattr(importlib.import_module(module), attr)
    return built


def channel_name(notify: NotifySettings) -> str:
    """``log`` without a URL, else the URL's scheme (``https``, ``amqp``, …)."""
    if not notify.webhook_url:
        return "log"
    try:
        scheme = urlsplit(notify.webhook_url).scheme.lower()
    except ValueError as exc:  # "https://[::1", say
        raise ConfigError([f"notify.webhook_url: not a URL: {exc}"]) from None
    if not scheme:
        raise ConfigError([f"notify.webhook_url: not a URL: {notify.webhook_url!r}"])
    return scheme


def build_channel(notify: NotifySettings, *, clock: Clock | None = None) -> Channel:
    """The channel ``[notify]`` describes. Raises ConfigError naming the key at fault."""
    return channel_factory(channel_name(notify))(notify, clock=clock)


def deliverer_for(
    store: Store,
    settings: SettingsHolder,
    *,
    clock: Clock,
    channel: Channel | None = None,
    **kwargs: Any,
) -> Deliverer:
    """A deliverer for the configured channel; its retry policy follows ``[notify]`` reloads.

    Rows in flight default to the channel's own concurrency limit, so that a claimed row
    does not sit behind the limit while its lease runs.
    """
    channel = channel or build_channel(settings.current.notify, clock=clock)
    kwargs.setdefault("concurrency", getattr(channel, "concurrency", 64))
    return Deliverer(
        store,
        clock=clock,
        channel=channel,
        policy=lambda: RetryPolicy.from_settings(settings.current.notify),
        **kwargs,
    )
