"""The polling schedule as small pure functions.

``interval(n) = min(initial_interval × factor**(n−1), max_interval)`` is the wait after the
n-th result query; jitter spreads it uniformly over ``[d·(1−jitter), d·(1+jitter)]`` after the
cap, and a vendor's Retry-After replaces it when longer. All values are seconds of schedule
time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def interval(n: int, *, initial_interval: float, factor: float, max_interval: float) -> float:
    """The un-jittered wait after the n-th query (n ≥ 1)."""
    if n < 1:
        raise ValueError("n counts queries from 1")
    exponent = n - 1
    try:
        grown = initial_interval * factor**exponent
    except OverflowError:  # factor**(n-1) past float range: the cap was reached long ago
        return max_interval
    return min(grown, max_interval)


def jittered(delay: float, *, jitter: float, rng: random.Random) -> float:
    if jitter <= 0:
        return delay
    return rng.uniform(delay * (1 - jitter), delay * (1 + jitter))


def next_delay(
    n: int,
    *,
    initial_interval: float,
    factor: float,
    max_interval: float,
    jitter: float,
    rng: random.Random,
    retry_after: float | None = None,
) -> float:
    """The wait after the n-th query: backoff, capped, jittered, then at least Retry-After."""
    d = jittered(
        interval(n, initial_interval=initial_interval, factor=factor, max_interval=max_interval),
        jitter=jitter,
        rng=rng,
    )
    if retry_after is not None and retry_after > d:
        return retry_after
    return d


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    query: int
    delay: float  # before this query
    elapsed: float  # since placing, at this query
    low: float  # jitter range of the delay
    high: float


def schedule_table(
    *,
    initial_delay: float,
    initial_interval: float,
    factor: float,
    max_interval: float,
    jitter: float,
    max_polls: int,
) -> list[ScheduleRow]:
    """Query n at its nominal time: the first after ``initial_delay``, then the backoff."""
    rows = [ScheduleRow(1, initial_delay, initial_delay, initial_delay, initial_delay)]
    elapsed = initial_delay
    for n in range(1, max_polls):
        d = interval(n, initial_interval=initial_interval, factor=factor, max_interval=max_interval)
        elapsed += d
        rows.append(ScheduleRow(n + 1, d, elapsed, d * (1 - jitter), d * (1 + jitter)))
    return rows
