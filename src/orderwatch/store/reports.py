"""Read-only queries for the operator console: search, counts, and the overview's figures.

SQLAlchemy Core against :mod:`.schema`, written once for SQLite, PostgreSQL and MySQL.
Each function takes a :class:`~sqlalchemy.Connection` and runs on the store's database
thread through :meth:`SqlStore.read <orderwatch.store.sql.SqlStore.read>`.

What each costs (n = rows in the table, w = rows inside the time window):

* :func:`first_id_since` — a binary search on the primary key, about 2·log2(n) point reads.
  ``orders.id`` and ``order_events.id`` grow with ``created_at`` / ``at`` (rows are
  appended with the current time), so "rows since T" becomes an id range and no index on a
  time column is needed. Rows whose time is out of step with their id are still filtered
  by time, so the answer is exact except for rows written before the boundary with a
  later time, which do not happen in practice.
* :func:`cohort` and :func:`time_to_final` — one range scan over the orders created in
  the window (O(w)), aggregated in the database.
* :func:`vendor_health` — one range scan over the events of the last minutes, capped at
  :data:`HEALTH_ROW_CAP` rows (the most recent ones), joined to ``orders`` by primary key.
* :func:`search` / :func:`count` — ``order_no`` uses its unique index and ``customer_id``
  its index; vendor order id and tracking number have no index and scan ``orders``
  (narrowed by the other filters); a page is ``LIMIT/OFFSET`` over the chosen sort.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from ..order import Order
from .schema import order_events, orders
from .sql import row_to_order

__all__ = [
    "HEALTH_ROW_CAP",
    "SEARCH_FIELDS",
    "SORTS",
    "Cohort",
    "Search",
    "VendorHealth",
    "chunk_before",
    "cohort",
    "count",
    "first_id_since",
    "oldest_due",
    "search",
    "time_to_final",
    "vendor_health",
]

SearchField = Literal["any", "order_no", "customer_id", "vendor_order_id", "tracking_no"]
SEARCH_FIELDS: tuple[SearchField, ...] = (
    "any",
    "order_no",
    "customer_id",
    "vendor_order_id",
    "tracking_no",
)

#: sort key → (column, descending)
SORTS: dict[str, tuple[sa.Column[Any], bool]] = {
    "created_desc": (orders.c.id, True),
    "created_asc": (orders.c.id, False),
    "updated_desc": (orders.c.updated_at, True),
    "updated_asc": (orders.c.updated_at, False),
    "next_run_asc": (orders.c.next_run_at, False),
    "points_desc": (orders.c.points, True),
}

HEALTH_ROW_CAP = 50_000
FINAL = ("SUCCEEDED", "FAILED")


@dataclass(frozen=True, slots=True)
class Search:
    """The console's orders filter: a search term plus the API's filter fields."""

    q: str | None = None
    field: SearchField = "any"
    status: str | None = None
    reason: str | None = None
    vendor: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    sort: str = "created_desc"


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _term_conditions(q: str, where: SearchField) -> ColumnElement[bool]:
    tracking = '"tracking_no":' + json.dumps(q, ensure_ascii=False)
    parts: dict[str, ColumnElement[bool]] = {
        "order_no": orders.c.order_no == q,
        "customer_id": orders.c.customer_id == q,
        "vendor_order_id": orders.c.vendor_order_id == q,
        # logistics is compact JSON written by the store: the key and value sit side by side
        "tracking_no": orders.c.logistics.like(f"%{_like_literal(tracking)}%", escape="\\"),
    }
    if where == "any":
        return sa.or_(*parts.values())
    return parts[where]


def _conditions(s: Search) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if s.q:
        out.append(_term_conditions(s.q, s.field))
    if s.status:
        out.append(orders.c.status == s.status)
    if s.reason:
        out.append(orders.c.reason == s.reason)
    if s.vendor:
        out.append(orders.c.vendor == s.vendor)
    if s.created_after:
        out.append(orders.c.created_at >= s.created_after)
    if s.created_before:
        out.append(orders.c.created_at < s.created_before)
    return out


def search(conn: Connection, s: Search, *, limit: int, offset: int = 0) -> list[Order]:
    """One page of orders matching ``s`` in its sort order (ties broken by newest id)."""
    column, desc = SORTS.get(s.sort, SORTS["created_desc"])
    q = select(orders).where(*_conditions(s))
    if column is orders.c.next_run_at:  # NULL (final) last on every database
        q = q.order_by(orders.c.next_run_at.is_(None))
    q = q.order_by(column.desc() if desc else column.asc())
    if column is not orders.c.id:
        q = q.order_by(orders.c.id.desc())
    q = q.limit(limit).offset(offset)
    return [row_to_order(r._mapping) for r in conn.execute(q)]


def count(conn: Connection, s: Search) -> int:
    q = select(func.count()).select_from(orders).where(*_conditions(s))
    return int(conn.execute(q).scalar_one())


def chunk_before(
    conn: Connection, s: Search, *, before_id: int | None, limit: int = 1000
) -> list[Order]:
    """The next ``limit`` matching orders below ``before_id``, newest first (keyset paging,
    for the CSV export: rows arriving meanwhile neither repeat nor shift it)."""
    q = select(orders).where(*_conditions(s))
    if before_id is not None:
        q = q.where(orders.c.id < before_id)
    q = q.order_by(orders.c.id.desc()).limit(limit)
    return [row_to_order(r._mapping) for r in conn.execute(q)]


# ------------------------------------------------------------------ time windows


def first_id_since(conn: Connection, table: sa.Table, at: sa.Column[Any], since: datetime) -> int:
    """The smallest id whose time is >= ``since``, assuming time grows with the id.

    Returns one past the largest id when no row is that recent (an empty range).
    """
    ident = table.c.id
    # two queries: SQLite answers min() or max() alone from the key, both at once by a scan
    lo = conn.execute(select(func.min(ident))).scalar()
    hi = conn.execute(select(func.max(ident))).scalar()
    if lo is None or hi is None:
        return 1
    lo, hi = int(lo), int(hi)
    last_at = conn.execute(select(at).where(ident == hi)).scalar()
    if last_at is None or last_at < since:
        return hi + 1
    # invariant: the first id at or after ``since`` is in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute(select(ident, at).where(ident >= mid).order_by(ident).limit(1)).first()
        if row is None:  # cannot happen below hi, but be safe
            break
        found_id, found_at = int(row[0]), row[1]
        if found_at >= since:
            hi = found_id
        else:
            lo = found_id + 1
    return lo


@dataclass
class Cohort:
    """Orders created in a window, bucketed by creation time, by where they are now."""

    starts: list[datetime]
    by_status: dict[str, list[int]] = field(default_factory=dict)
    by_reason: dict[str, list[int]] = field(default_factory=dict)

    def total(self, status: str) -> int:
        return sum(self.by_status.get(status, []))


def _bucket_case(column: sa.Column[Any], edges: Sequence[datetime]) -> ColumnElement[int]:
    """The index of the bucket a time falls into; ``edges`` are the bucket ends, ascending."""
    whens = [(column < edge, i) for i, edge in enumerate(edges)]
    return sa.case(*whens, else_=len(edges))


def cohort(conn: Connection, *, now: datetime, span: timedelta, buckets: int) -> Cohort:
    step = span / buckets
    start = now - span
    starts = [start + step * i for i in range(buckets)]
    edges = [start + step * (i + 1) for i in range(buckets)]
    out = Cohort(starts)
    first = first_id_since(conn, orders, orders.c.created_at, start)
    # bucket in a subquery, grouped outside: PostgreSQL would see the CASE in SELECT and in
    # GROUP BY as two expressions (their parameters are bound separately)
    inner = (
        select(
            _bucket_case(orders.c.created_at, edges).label("bucket"),
            orders.c.status,
            orders.c.reason,
        )
        .where(orders.c.id >= first, orders.c.created_at >= start)
        .subquery()
    )
    q = select(inner.c.bucket, inner.c.status, inner.c.reason, func.count()).group_by(
        inner.c.bucket, inner.c.status, inner.c.reason
    )
    for index, status, reason, n in conn.execute(q):
        i = min(int(index), buckets - 1)  # created "after now" (a clock step): last bucket
        out.by_status.setdefault(status, [0] * buckets)[i] += n
        if reason:
            out.by_reason.setdefault(reason, [0] * buckets)[i] += n
    return out


class _Seconds(FunctionElement[float]):
    """``end - start`` in seconds, as each database spells it."""

    type = sa.Float()
    inherit_cache = True
    name = "orderwatch_seconds"


@compiles(_Seconds)
def _seconds_default(element: _Seconds, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    return (
        f"((julianday({compiler.process(end, **kw)}) - "
        f"julianday({compiler.process(start, **kw)})) * 86400.0)"
    )


@compiles(_Seconds, "postgresql")
def _seconds_pg(element: _Seconds, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    return f"EXTRACT(EPOCH FROM ({compiler.process(end, **kw)} - {compiler.process(start, **kw)}))"


@compiles(_Seconds, "mysql")
def _seconds_mysql(element: _Seconds, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    return (
        f"(TIMESTAMPDIFF(MICROSECOND, {compiler.process(start, **kw)}, "
        f"{compiler.process(end, **kw)}) / 1000000.0)"
    )


#: time-to-final histogram bucket ends, in seconds; the last bucket is open
TTF_EDGES: tuple[tuple[float, str], ...] = (
    (3600.0, "<1h"),
    (6 * 3600.0, "1-6h"),
    (86400.0, "6-24h"),
    (2 * 86400.0, "1-2d"),
    (3 * 86400.0, "2-3d"),
    (5 * 86400.0, "3-5d"),
    (7 * 86400.0, "5-7d"),
)
TTF_LABELS: tuple[str, ...] = (*(label for _, label in TTF_EDGES), "≥7d")


def time_to_final(conn: Connection, *, now: datetime, span: timedelta) -> dict[str, list[int]]:
    """Final orders created in the window, by status, bucketed by created → last change."""
    start = now - span
    first = first_id_since(conn, orders, orders.c.created_at, start)
    seconds = _Seconds(orders.c.created_at, orders.c.updated_at)
    whens = [(seconds < edge, i) for i, (edge, _) in enumerate(TTF_EDGES)]
    inner = (
        select(sa.case(*whens, else_=len(TTF_EDGES)).label("bucket"), orders.c.status)
        .where(
            orders.c.id >= first,
            orders.c.created_at >= start,
            orders.c.status.in_(FINAL),
        )
        .subquery()
    )
    q = select(inner.c.bucket, inner.c.status, func.count()).group_by(
        inner.c.bucket, inner.c.status
    )
    out = {status: [0] * len(TTF_LABELS) for status in FINAL}
    for index, status, n in conn.execute(q):
        out[status][int(index)] += n
    return out


def oldest_due(conn: Connection, *, now: datetime) -> datetime | None:
    """The earliest ``next_run_at`` that is due (uses ``ix_orders_due``)."""
    value: datetime | None = conn.execute(
        select(func.min(orders.c.next_run_at)).where(
            orders.c.next_run_at.is_not(None), orders.c.next_run_at <= now
        )
    ).scalar()
    return value


@dataclass
class VendorHealth:
    vendor: str
    calls: int = 0
    errors: int = 0
    maintenance: int = 0
    last_maintenance: datetime | None = None
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latencies, 0.95)


@dataclass
class Health:
    since: datetime
    minutes: int
    per_minute: list[int]
    vendors: dict[str, VendorHealth]
    capped: bool


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def vendor_health(conn: Connection, *, now: datetime, minutes: int = 30) -> Health:
    """Vendor calls (every event with an outcome) of the last ``minutes``: per minute, and
    per vendor the error rate (abnormal answers), latency p95 and maintenance answers."""
    since = now - timedelta(minutes=minutes)
    first = first_id_since(conn, order_events, order_events.c.at, since)
    q = (
        select(
            order_events.c.at,
            order_events.c.outcome,
            order_events.c.latency_ms,
            orders.c.vendor,
        )
        .select_from(order_events.join(orders, orders.c.id == order_events.c.order_id))
        .where(
            order_events.c.id >= first,
            order_events.c.at >= since,
            order_events.c.outcome.is_not(None),
        )
        .order_by(order_events.c.id.desc())
        .limit(HEALTH_ROW_CAP)
    )
    rows = conn.execute(q).all()
    per_minute = [0] * minutes
    vendors: dict[str, VendorHealth] = {}
    for at, outcome, latency, vendor in rows:
        i = int((at - since).total_seconds() // 60)
        per_minute[min(max(i, 0), minutes - 1)] += 1
        h = vendors.get(vendor)
        if h is None:
            h = vendors[vendor] = VendorHealth(vendor)
        h.calls += 1
        if outcome.startswith("abnormal:"):
            h.errors += 1
        if outcome == "abnormal:maintenance":
            h.maintenance += 1
            if h.last_maintenance is None or at > h.last_maintenance:
                h.last_maintenance = at
        if latency is not None:
            h.latencies.append(float(latency))
    return Health(since, minutes, per_minute, vendors, capped=len(rows) >= HEALTH_ROW_CAP)
