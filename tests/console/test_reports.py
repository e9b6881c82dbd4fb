"""store/reports.py on SQLite, PostgreSQL and MariaDB: every figure the overview shows is
checked against the same figure computed in Python from all the rows, over a database
filled by a real worker against the real simulator."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from consoletools import TRACKING, VENDOR_ORDER, Seeded, seed, settings_overrides, start_simulator
from sqlalchemy.dialects import mysql, postgresql, sqlite
from tests.support.databases import KINDS, fresh_database

from orderwatch.clock import ManualClock
from orderwatch.service import Service
from orderwatch.settings import load_settings
from orderwatch.store import reports
from orderwatch.store.schema import order_events, orders
from orderwatch.store.sql import SqlStore


@pytest.fixture(params=KINDS)
async def filled(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SqlStore, Seeded, datetime]]:
    clock = ManualClock()
    sim = await start_simulator(clock)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_database(request.param, tmp_path))
        assert sim.base_url
        overrides = settings_overrides(tmp_path / "unused.db", sim.base_url)
        overrides["database"] = {"url": url}
        loaded = load_settings(None, env={}, overrides=overrides)
        service = await Service.open(loaded, clock=clock, auto_upgrade=True)
        try:
            seeded = await seed(service, clock, sim)
            store = service.store
            assert isinstance(store, SqlStore)
            yield store, seeded, clock.now()
        finally:
            await service.close()
            await sim.stop()


async def all_rows(store: SqlStore) -> tuple[list[Any], list[Any]]:
    def work(conn: sa.Connection) -> tuple[list[Any], list[Any]]:
        o = conn.execute(sa.select(orders).order_by(orders.c.id)).all()
        e = conn.execute(
            sa.select(order_events, orders.c.vendor)
            .join(orders, orders.c.id == order_events.c.order_id)
            .order_by(order_events.c.id)
        ).all()
        return o, e

    return await store.read(work)


async def test_first_id_since_matches_a_scan(filled: tuple[SqlStore, Seeded, datetime]) -> None:
    store, _, now = filled
    all_orders, all_events = await all_rows(store)
    for hours in (0.1, 1, 5, 13, 19, 30, 24 * 7):
        since = now - timedelta(hours=hours)
        for table, at, rows, key in (
            (orders, orders.c.created_at, all_orders, "created_at"),
            (order_events, order_events.c.at, all_events, "at"),
        ):
            got = await store.read(
                lambda c, t=table, a=at, s=since: reports.first_id_since(c, t, a, s)
            )
            recent = [r.id for r in rows if getattr(r, key) >= since]
            expected = min(recent) if recent else rows[-1].id + 1
            assert got == expected, (table.name, hours)


async def test_cohort_and_time_to_final_match_python(
    filled: tuple[SqlStore, Seeded, datetime],
) -> None:
    store, seeded, now = filled
    all_orders, _ = await all_rows(store)
    assert len(all_orders) == seeded.total
    for span, buckets in ((timedelta(hours=24), 24), (timedelta(days=7), 7)):
        got = await store.read(
            lambda c, s=span, b=buckets: reports.cohort(c, now=now, span=s, buckets=b)
        )
        start = now - span
        step = span / buckets
        expected: dict[str, list[int]] = {}
        by_reason: dict[str, list[int]] = {}
        for o in all_orders:
            if o.created_at < start:
                continue
            i = min(int((o.created_at - start) / step), buckets - 1)
            expected.setdefault(o.status, [0] * buckets)[i] += 1
            if o.reason:
                by_reason.setdefault(o.reason, [0] * buckets)[i] += 1
        assert got.by_status == expected
        assert got.by_reason == by_reason
        assert sum(got.total(s) for s in got.by_status) == seeded.total

    ttf = await store.read(lambda c: reports.time_to_final(c, now=now, span=timedelta(days=7)))
    want = {s: [0] * len(reports.TTF_LABELS) for s in reports.FINAL}
    for o in all_orders:
        if o.status in reports.FINAL:
            seconds = (o.updated_at - o.created_at).total_seconds()
            i = next(
                (k for k, (edge, _) in enumerate(reports.TTF_EDGES) if seconds < edge),
                len(reports.TTF_EDGES),
            )
            want[o.status][i] += 1
    assert ttf == want
    assert sum(ttf["SUCCEEDED"]) > 0  # the worker really finished some


async def test_vendor_health_matches_python(filled: tuple[SqlStore, Seeded, datetime]) -> None:
    store, _, now = filled
    _, all_events = await all_rows(store)
    minutes = 60 * 24
    health = await store.read(lambda c: reports.vendor_health(c, now=now, minutes=minutes))
    since = now - timedelta(minutes=minutes)
    calls = [e for e in all_events if e.outcome and e.at >= since]
    assert calls, "the worker's exchanges should be in the window"
    acme = health.vendors["acme"]
    assert acme.calls == len(calls)
    assert acme.errors == sum(1 for e in calls if e.outcome.startswith("abnormal:"))
    assert sum(health.per_minute) == len(calls)
    latencies = sorted(e.latency_ms for e in calls if e.latency_ms is not None)
    assert acme.p95_ms == latencies[math.ceil(0.95 * len(latencies)) - 1]
    assert not health.capped


async def test_search_fields_on_every_database(
    filled: tuple[SqlStore, Seeded, datetime],
) -> None:
    store, seeded, _ = filled

    async def nos(**kw: Any) -> list[str]:
        s = reports.Search(**kw)
        found = await store.read(lambda c: reports.search(c, s, limit=100))
        n = await store.read(lambda c: reports.count(c, s))
        assert n == len(found)
        return [o.order_no for o in found]

    assert await nos(q=TRACKING, field="tracking_no") == [seeded.ordered]
    assert await nos(q=TRACKING) == [seeded.ordered]
    assert await nos(q=VENDOR_ORDER, field="vendor_order_id") == [seeded.ordered]
    assert await nos(q="C-SEARCH", field="customer_id") == [seeded.ordered]
    assert await nos(q="%", field="tracking_no") == []
    assert await nos(q='SF"_', field="tracking_no") == []
    unreachable = await nos(status="FAILED", reason="PLACE_UNREACHABLE", sort="created_asc")
    assert unreachable == seeded.unreachable
    due_first = await nos(sort="next_run_asc")
    assert len(due_first) == seeded.total
    chunk = await store.read(
        lambda c: reports.chunk_before(c, reports.Search(), before_id=None, limit=5)
    )
    rest = await store.read(
        lambda c: reports.chunk_before(c, reports.Search(), before_id=chunk[-1].id, limit=500)
    )
    assert len(chunk) + len(rest) == seeded.total


def test_seconds_between_per_dialect() -> None:
    expr = sa.select(reports._Seconds(orders.c.created_at, orders.c.updated_at))
    assert "julianday" in str(expr.compile(dialect=sqlite.dialect()))
    assert "EXTRACT(EPOCH FROM" in str(expr.compile(dialect=postgresql.dialect()))
    assert "TIMESTAMPDIFF(MICROSECOND" in str(expr.compile(dialect=mysql.dialect()))


def test_percentile() -> None:
    assert reports.percentile([], 0.95) is None
    assert reports.percentile([5.0], 0.95) == 5.0
    assert reports.percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert reports.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
