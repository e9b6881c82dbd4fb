"""``orderwatch vendors check NAME``: one signed query for a made-up order, fully reported.

Adapters that can say more (``check(order_no)`` returning a report with the raw body and
the signature verdict, as :class:`~orderwatch.vendors.mapped.MappedAdapter` does) are asked
for it; any other adapter is driven through its ordinary ``query`` and reported from the
:class:`~orderwatch.outcomes.Exchange` alone.
"""

from __future__ import annotations

import secrets
from typing import Any

from ..clock import SystemClock
from ..outcomes import Abnormal
from ..settings import VendorSettings
from . import adapter_factory
from .mapped import probe_order


async def check_vendor(
    name: str, settings: VendorSettings, *, order_no: str | None = None
) -> dict[str, Any]:
    """The dry-run report as plain values; ``understood`` is False for an abnormal answer."""
    order_no = order_no or f"OW-CHECK-{secrets.token_hex(6).upper()}"
    clock = SystemClock()
    adapter = adapter_factory(settings.adapter)(name, settings, clock=clock)
    try:
        check = getattr(adapter, "check", None)
        if callable(check):
            report: dict[str, Any] = (await check(order_no)).as_dict()
            return report
        exchange = await adapter.query(probe_order(order_no, name, clock.now()))
    finally:
        await adapter.close()
    outcome = exchange.outcome
    return {
        "vendor": name,
        "adapter": settings.adapter,
        "order_no": order_no,
        "http_status": exchange.http_status,
        "latency_ms": round(exchange.latency * 1000, 1),
        "signature": _signature_verdict(settings.adapter, outcome),
        "code": exchange.vendor_code,
        "outcome": exchange.outcome_name,
        "detail": outcome.detail if isinstance(outcome, Abnormal) else "",
        "understood": not isinstance(outcome, Abnormal),
    }


def _signature_verdict(adapter: str, outcome: object) -> str:
    """The reference adapter checks every answer's signature before reading it, so its
    outcome says what the check found; a plug-in's own checks are not visible here."""
    if adapter != "reference":
        return "not reported by this adapter"
    if isinstance(outcome, Abnormal):
        if outcome.kind == "bad_signature":
            return "invalid"
        return "not checked (no usable answer)"
    return "valid"
