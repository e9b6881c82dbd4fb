"""The polling schedule (DESIGN §4): formula, cap, jitter, Retry-After and the default table."""

from __future__ import annotations

import math
import random

import pytest

from orderwatch.backoff import ScheduleRow, interval, next_delay, schedule_table
from orderwatch.lifecycle import Policy

DEFAULTS = Policy()
CURVE = {"initial_interval": 300.0, "factor": 2.0, "max_interval": 6 * 3600.0}
DAY = 86400.0


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 300), (2, 600), (3, 1200), (4, 2400), (7, 19200), (8, 21600), (9, 21600), (30, 21600)],
)
def test_interval_follows_the_formula_and_stops_at_the_cap(n: int, expected: float) -> None:
    assert interval(n, **CURVE) == expected


def test_interval_with_factor_one_is_constant() -> None:
    assert {
        interval(n, initial_interval=60, factor=1.0, max_interval=3600) for n in range(1, 50)
    } == {60}


def test_interval_is_capped_even_for_the_first_query() -> None:
    assert interval(1, initial_interval=7200, factor=2.0, max_interval=3600) == 3600


@pytest.mark.parametrize("n", [0, -1, -100])
def test_interval_rejects_n_below_one(n: int) -> None:
    with pytest.raises(ValueError, match="from 1"):
        interval(n, **CURVE)


@pytest.mark.parametrize("n", [2000, 10**6, 10**9])
def test_interval_for_huge_n_is_the_cap_without_overflow(n: int) -> None:
    assert interval(n, **CURVE) == CURVE["max_interval"]


@pytest.mark.parametrize("factor", [2.0, 100.0])
def test_interval_never_overflows_for_any_allowed_factor(factor: float) -> None:
    for n in range(1, 1100):
        d = interval(n, initial_interval=300, factor=factor, max_interval=21600)
        assert 300 <= d <= 21600


@pytest.mark.parametrize(("n", "jitter"), [(1, 0.1), (3, 0.1), (12, 0.1), (2, 0.5)])
def test_next_delay_stays_within_jitter_bounds_and_uses_them(n: int, jitter: float) -> None:
    rng = random.Random(0)
    d = interval(n, **CURVE)
    draws = [next_delay(n, **CURVE, jitter=jitter, rng=rng) for _ in range(2000)]

    low, high = d * (1 - jitter), d * (1 + jitter)
    assert low <= min(draws)
    assert max(draws) <= high
    # spread over the whole range, not stuck at the nominal value
    assert min(draws) < d * (1 - jitter / 2)
    assert max(draws) > d * (1 + jitter / 2)


def test_jitter_is_applied_after_the_cap() -> None:
    rng = random.Random(0)
    draws = [next_delay(20, **CURVE, jitter=0.1, rng=rng) for _ in range(500)]

    assert max(draws) > CURVE["max_interval"], "the cap is not a ceiling for the jittered value"
    assert max(draws) <= CURVE["max_interval"] * 1.1


@pytest.mark.parametrize("n", [1, 5, 40])
def test_next_delay_without_jitter_is_exact(n: int) -> None:
    assert next_delay(n, **CURVE, jitter=0.0, rng=random.Random(0)) == interval(n, **CURVE)


def test_next_delay_is_reproducible_from_the_rng_seed() -> None:
    def draws(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [next_delay(3, **CURVE, jitter=0.1, rng=rng) for _ in range(5)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_longer_retry_after_replaces_the_delay() -> None:
    d = next_delay(1, **CURVE, jitter=0.1, rng=random.Random(0), retry_after=5000)

    assert d == 5000


@pytest.mark.parametrize("retry_after", [None, 0.0, 10.0, 269.0])
def test_shorter_or_no_retry_after_keeps_the_backoff(retry_after: float | None) -> None:
    d = next_delay(1, **CURVE, jitter=0.1, rng=random.Random(0), retry_after=retry_after)

    assert 270 <= d <= 330


def _default_table() -> list[ScheduleRow]:
    return schedule_table(
        initial_delay=DEFAULTS.initial_delay,
        initial_interval=DEFAULTS.initial_interval,
        factor=DEFAULTS.factor,
        max_interval=DEFAULTS.max_interval,
        jitter=DEFAULTS.jitter,
        max_polls=DEFAULTS.max_polls,
    )


def test_schedule_table_defaults_first_query_after_initial_delay() -> None:
    rows = _default_table()

    assert [r.query for r in rows] == list(range(1, 31))
    first, second = rows[0], rows[1]
    assert (first.delay, first.elapsed) == (600, 600)  # 10 minutes after placing
    assert (second.delay, second.elapsed) == (300, 900)
    assert (second.low, second.high) == pytest.approx((270, 330))


def test_schedule_table_elapsed_is_the_running_sum_of_delays() -> None:
    rows = _default_table()

    assert [r.elapsed for r in rows] == pytest.approx(
        [sum(r.delay for r in rows[: i + 1]) for i in range(len(rows))]
    )
    assert max(r.delay for r in rows) == DEFAULTS.max_interval


def test_schedule_table_defaults_cover_five_days_of_logistics() -> None:
    rows = _default_table()
    last = rows[-1].elapsed / DAY

    assert last == pytest.approx(5.95, abs=0.01)  # "max_polls = 30 (≈ 6 days)"
    assert last >= 3
    assert rows[-1].elapsed < DEFAULTS.deadline, "the deadline stays a backstop"
    assert all(math.isfinite(r.elapsed) for r in rows)
