"""Per-vendor circuit breakers: stop calling a vendor that keeps failing, for a while.

A vendor that times out or refuses connections on every call gains nothing from more calls,
and each one would count toward its orders' ``max_polls``. After ``failures`` transport
failures in a row the breaker *opens* for ``open_for`` (schedule time); the worker then
records the vendor as paused in the database (so every worker and ``GET /stats`` see it) and
sends nothing to it. When ``open_for`` has passed it is *half open*: one call goes out as a
probe while the others wait for its answer; an answer closes the breaker, a transport
failure opens it again at once.

No I/O here: the worker asks and tells, and writes what changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .outcomes import Abnormal, Exchange

#: Abnormal kinds that say the vendor could not be reached or broke, not what it answered.
TRANSPORT_KINDS = frozenset({"timeout", "network"})


def is_transport_failure(exchange: Exchange) -> bool:
    """A timeout, a refused or dropped connection, or HTTP 5xx (a maintenance 503 is not:
    it is an answer that says when to come back, and the schedule honours it)."""
    outcome = exchange.outcome
    if not isinstance(outcome, Abnormal):
        return False
    if outcome.kind in TRANSPORT_KINDS:
        return True
    return outcome.kind == "http_error" and (exchange.http_status or 0) >= 500


@dataclass(frozen=True, slots=True)
class Opened:
    vendor: str
    until: datetime
    failures: int


@dataclass(frozen=True, slots=True)
class Closed:
    vendor: str


class CircuitBreakers:
    """Consecutive transport failures and open breakers, per vendor, in one process."""

    def __init__(self) -> None:
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, datetime] = {}

    def tripped(self, vendor: str) -> bool:
        """Open or half open: calls to this vendor go through :meth:`open_until` first."""
        return vendor in self._open_until

    def open_until(self, vendor: str, now: datetime) -> datetime | None:
        """When the vendor's breaker closes, if it is open at ``now``."""
        until = self._open_until.get(vendor)
        return until if until is not None and until > now else None

    def half_open(self, vendor: str, now: datetime) -> bool:
        """Open once and its time is over: the next call is a probe, the others wait for it."""
        until = self._open_until.get(vendor)
        return until is not None and until <= now

    def record(
        self, vendor: str, exchange: Exchange, now: datetime, *, failures: int, open_for: timedelta
    ) -> Opened | Closed | None:
        """Count one exchange; say if the breaker opened or closed because of it."""
        if not is_transport_failure(exchange):
            if self._failures.get(vendor):
                self._failures[vendor] = 0
            if self._open_until.pop(vendor, None) is not None:
                return Closed(vendor)
            return None
        n = self._failures[vendor] = self._failures.get(vendor, 0) + 1
        if failures <= 0:  # turned off (perhaps by a reload while it was tripped)
            return self.close(vendor)
        if self.open_until(vendor, now) is not None:
            return None  # open already (a call that left before it opened)
        if n < failures and vendor not in self._open_until:
            return None  # closed, and not enough failures yet (a failed probe reopens at once)
        until = self._open_until[vendor] = now + open_for
        return Opened(vendor, until, n)

    def close(self, vendor: str) -> Closed | None:
        """Close the vendor's breaker now (it was turned off); Closed if it was tripped."""
        self._failures.pop(vendor, None)
        if self._open_until.pop(vendor, None) is None:
            return None
        return Closed(vendor)


__all__ = ["TRANSPORT_KINDS", "CircuitBreakers", "Closed", "Opened", "is_transport_failure"]
