"""The worker's per-call metrics are plain numbers rendered at scrape time
(``api/metrics._Histogram``, ``_Counter``): what a scrape shows must be what
prometheus_client's own Histogram and Counter would show for the same observations."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from orderwatch.api import metrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but ``_created`` (a time of day, which ours leave out)."""
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


latencies = st.lists(
    st.tuples(
        st.sampled_from(["acme", "globex"]),
        st.sampled_from(["place", "query"]),
        # the bounds themselves, either side of them, and far past the last
        st.one_of(st.sampled_from([0.0, 0.01, 0.25, 30.0]), st.floats(0, 100)),
        st.sampled_from(["accepted", "in_progress", "timeout"]),
    ),
    max_size=40,
)


@given(calls=latencies, late=st.lists(st.floats(0, 5000), max_size=10))
def test_a_scrape_shows_what_prometheus_client_would(
    calls: list[tuple[str, str, float, str]], late: list[float]
) -> None:
    ours = metrics._VendorCalls()
    ref = CollectorRegistry()
    seconds = Histogram(
        "orderwatch_vendor_call_seconds",
        "d",
        ["vendor", "kind"],
        buckets=metrics._CALL_BUCKETS,
        registry=ref,
    )
    counts = Counter("orderwatch_vendor_calls", "d", ["vendor", "kind", "outcome"], registry=ref)
    lateness = Histogram(
        "orderwatch_lateness_seconds", "d", buckets=metrics._LATENESS_BUCKETS, registry=ref
    )
    for vendor, kind, value, outcome in calls:
        ours.seconds.observe((vendor, kind), value)
        ours.calls.inc((vendor, kind, outcome))
        seconds.labels(vendor, kind).observe(value)
        counts.labels(vendor, kind, outcome).inc()
    for value in late:
        ours.lateness.observe((), value)
        lateness.observe(value)
    registry = CollectorRegistry()
    registry.register(ours)
    assert _samples(registry) == _samples(ref)


def test_the_process_registry_exposes_the_worker_figures() -> None:
    metrics.vendor_call("acme-metrics", "query", 0.3, "in_progress")
    metrics.vendor_call("acme-metrics", "query", -1.0, "in_progress")  # a clock step back
    metrics.lateness(2.0)
    text = generate_latest(metrics.REGISTRY).decode()
    assert (
        'orderwatch_vendor_call_seconds_bucket{kind="query",le="0.5",vendor="acme-metrics"} 2.0'
        in text
    )
    assert (
        'orderwatch_vendor_call_seconds_bucket{kind="query",le="0.01",vendor="acme-metrics"} 1.0'
        in text
    )
    assert (
        'orderwatch_vendor_calls_total{kind="query",outcome="in_progress",vendor="acme-metrics"}'
        " 2.0" in text
    )
    (count,) = [
        line for line in text.splitlines() if line.startswith("orderwatch_lateness_seconds_count")
    ]
    assert float(count.split()[-1]) >= 1
