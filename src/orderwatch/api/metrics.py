"""Prometheus metrics, every name starting with ``orderwatch_``.

Two kinds live here. Process-wide ones (:data:`REGISTRY`) are updated where things happen:
the worker times each vendor call and counts each ending, whichever process it runs in,
through the small functions below, which import nothing but ``prometheus_client`` (so the
worker does not pull in the web framework). Database-wide ones (orders by status, due
backlog, paused vendors) are read from the store when ``/metrics`` is scraped, so every
API process reports the same numbers however many workers there are.

>>> vendor_call("acme", "query", 0.120, "in_progress")
>>> order_finished("FAILED", "VENDOR_FAILED")
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = [
    "REGISTRY",
    "HttpMetrics",
    "Snapshot",
    "circuit_changed",
    "exposition",
    "lateness",
    "order_finished",
    "vendor_call",
]

REGISTRY = CollectorRegistry(auto_describe=True)
"""What this process did (vendor calls, endings, lateness); not the database's totals."""

_CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


class _Histogram:
    """A histogram kept as plain numbers per label set, rendered when scraped.

    The worker records two observations and a count per vendor call; prometheus_client's
    own metrics take a lock per bucket, sum and count and walk the buckets in Python, which
    cost several times the arithmetic at thousands of calls a second. Only one thread
    records (the worker's event loop); a scrape from another thread reads a copy.
    """

    def __init__(self, name: str, doc: str, labels: Sequence[str], bounds: Sequence[float]):
        self.name, self.doc, self.labels = name, doc, list(labels)
        self._bounds = tuple(bounds)
        # as prometheus_client spells them (repr of the float; these bounds are all small)
        self._les = [*(repr(float(b)) for b in bounds), "+Inf"]
        # per label values: a count per bucket (the last is +Inf), then the sum
        self._series: dict[tuple[str, ...], list[float]] = {}
        if not self.labels:  # shown from the start, as prometheus_client shows one
            self._series[()] = [0] * (len(self._bounds) + 2)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0] * (len(self._bounds) + 2)
        series[bisect_left(self._bounds, value)] += 1  # le: value <= bound
        series[-1] += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, series in list(self._series.items()):
            counts = list(series)  # one copy: every bucket and the sum from the same moment
            buckets, seen = [], 0.0
            for le, n in zip(self._les, counts[:-1], strict=True):
                seen += n
                buckets.append((le, seen))
            family.add_metric(list(labels), buckets, sum_value=counts[-1])
        return family


class _Counter:
    """A counter per label set as a plain dict (see :class:`_Histogram` for why)."""

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name, self.doc, self.labels = name, doc, list(labels)
        self._values: dict[tuple[str, ...], int] = {}

    def inc(self, labels: tuple[str, ...]) -> None:
        self._values[labels] = self._values.get(labels, 0) + 1

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, value in list(self._values.items()):
            family.add_metric(list(labels), value)
        return family


class _VendorCalls(Collector):
    """What the worker records once per vendor call: latency, outcome, lateness."""

    def __init__(self) -> None:
        self.seconds = _Histogram(
            "orderwatch_vendor_call_seconds",
            "Latency of vendor calls (real seconds), by vendor and kind (place, query).",
            ["vendor", "kind"],
            _CALL_BUCKETS,
        )
        self.calls = _Counter(
            "orderwatch_vendor_calls",
            "Vendor calls by vendor, kind and outcome"
            " (accepted, rejected, delivered, abnormal, ...).",
            ["vendor", "kind", "outcome"],
        )
        self.lateness = _Histogram(
            "orderwatch_lateness_seconds",
            "Real seconds between an order falling due (next_run_at) and a worker acting on it.",
            [],
            _LATENESS_BUCKETS,
        )

    def collect(self) -> Iterable[Metric]:
        yield self.seconds.family()
        yield self.calls.family()
        yield self.lateness.family()


_CALLS = _VendorCalls()
REGISTRY.register(_CALLS)

ORDER_OUTCOMES = Counter(
    "orderwatch_order_outcomes",
    "Orders this process ended, by final status and reason ('' for none).",
    ["status", "reason"],
    registry=REGISTRY,
)


CIRCUIT_OPENINGS = Counter(
    "orderwatch_vendor_circuit_openings",
    "Times this process opened a vendor's circuit breaker (transport failures in a row).",
    ["vendor"],
    registry=REGISTRY,
)


def vendor_call(vendor: str, kind: str, seconds: float, outcome: str) -> None:
    """One place-order or result query, as the worker saw it (once per vendor call)."""
    _CALLS.seconds.observe((vendor, kind), max(0.0, seconds))
    _CALLS.calls.inc((vendor, kind, outcome))


def order_finished(status: str, reason: str | None) -> None:
    """An order reached a final status (written back, not discarded)."""
    ORDER_OUTCOMES.labels(status, reason or "").inc()


def circuit_changed(vendor: str, *, opened: bool) -> None:
    """A vendor's circuit breaker opened (or closed) in this process."""
    if opened:
        CIRCUIT_OPENINGS.labels(vendor).inc()


def lateness(real_seconds: float) -> None:
    """How late a due order was picked up, in real seconds (negative counts as 0)."""
    _CALLS.lateness.observe((), max(0.0, real_seconds))


# ---------------------------------------------------------------- per app


class HttpMetrics:
    """Requests served by one API app, in its own registry (tests build many apps)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "orderwatch_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "orderwatch_http_request_seconds",
            "HTTP request latency by route template (real seconds).",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.seconds.labels(route).observe(seconds)


@dataclass
class Snapshot:
    """What the database says at scrape time; rendered as gauges."""

    by_status: Mapping[str, int] = field(default_factory=dict)
    by_vendor: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    by_reason: Mapping[str, int] = field(default_factory=dict)
    due: int = 0
    paused: Iterable[str] = ()
    circuit_open: Iterable[str] = ()
    ready: bool = True

    def collect(self) -> Iterable[Metric]:
        orders = GaugeMetricFamily(
            "orderwatch_orders",
            "Orders in the database by vendor and status.",
            labels=["vendor", "status"],
        )
        for vendor, per in sorted(self.by_vendor.items()):
            for status, n in sorted(per.items()):
                orders.add_metric([vendor, status], n)
        yield orders
        failed = GaugeMetricFamily(
            "orderwatch_failed_orders",
            "FAILED orders in the database by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(self.by_reason.items()):
            failed.add_metric([reason], n)
        yield failed
        yield GaugeMetricFamily(
            "orderwatch_due_orders",
            "Open orders whose next_run_at has passed (the backlog workers have to claim).",
            value=self.due,
        )
        paused = GaugeMetricFamily(
            "orderwatch_vendor_paused", "1 for each paused vendor.", labels=["vendor"]
        )
        for vendor in sorted(self.paused):
            paused.add_metric([vendor], 1)
        yield paused
        circuit = GaugeMetricFamily(
            "orderwatch_vendor_circuit_open",
            "1 for each vendor whose circuit breaker is open (calls to it held back).",
            labels=["vendor"],
        )
        for vendor in sorted(self.circuit_open):
            circuit.add_metric([vendor], 1)
        yield circuit


def exposition(app_registry: CollectorRegistry, snapshot: Snapshot) -> bytes:
    """Prometheus text: the database snapshot, this app's HTTP metrics, the process's."""
    return (
        generate_latest(_SnapshotRegistry(snapshot))
        + generate_latest(app_registry)
        + generate_latest(REGISTRY)
    )


class _SnapshotRegistry(CollectorRegistry):
    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__(auto_describe=False)
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return self._snapshot.collect()
