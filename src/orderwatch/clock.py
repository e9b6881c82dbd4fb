"""One source of time for everything that schedules.

Schedule time (``now()``) drives every duration of the order's life: delays, backoff,
deadline, payment grace, Retry-After, the simulator's logistics. Real time (``real()``)
drives what protects machines rather than orders: HTTP timeouts, leases, shutdown grace.
In production the two are the same; a :class:`CompressedClock` runs the schedule ``speed``
times faster so that five days of polling fit in a minute, and a :class:`ManualClock` lets
tests move both by hand.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    speed: float

    def now(self) -> datetime:
        """Schedule time, timezone-aware UTC."""

    def real(self) -> datetime:
        """Wall time, timezone-aware UTC: leases are stored in it."""

    async def sleep(self, schedule_seconds: float) -> None:
        """Sleep for a schedule duration (shorter in real time when compressed)."""


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class SystemClock:
    speed = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def real(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, schedule_seconds: float) -> None:
        await asyncio.sleep(max(0.0, schedule_seconds))


class CompressedClock:
    """``now = start + speed × (wall − start)``: schedule time runs ``speed`` times faster.

    Two processes built with the same ``start`` and ``speed`` (the worker and the
    simulator, say) agree on the time without talking to each other.
    """

    def __init__(self, *, speed: float, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = float(speed)
        self.start = time.time() if start is None else float(start)

    def now(self) -> datetime:
        wall = time.time()
        return utc(self.start + self.speed * (wall - self.start))

    def real(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, schedule_seconds: float) -> None:
        await asyncio.sleep(max(0.0, schedule_seconds) / self.speed)


class ManualClock:
    """A clock that moves only when told to; ``sleep`` yields without waiting.

    Real time moves with schedule time unless ``real_offset`` is changed, so leases can be
    expired on purpose in tests.
    """

    speed = 1.0

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
        self.real_offset = timedelta(0)

    def now(self) -> datetime:
        return self._now

    def real(self) -> datetime:
        return self._now + self.real_offset

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when

    async def sleep(self, schedule_seconds: float) -> None:
        self.advance(max(0.0, schedule_seconds))
        await asyncio.sleep(0)
