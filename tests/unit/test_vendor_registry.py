"""The vendor registry: one adapter per vendor, rebuilt when (and only when) its settings
change, and the adapters a reload replaced closed once their calls are over."""

from __future__ import annotations

import asyncio
from typing import Any

from orderwatch.clock import ManualClock
from orderwatch.settings import Settings, SettingsHolder, load_settings
from orderwatch.vendors import RETIRE_MARGIN, VendorRegistry
from orderwatch.vendors.reference import ReferenceAdapter


def settings(max_polls: int = 30, **acme: Any) -> Settings:
    vendor = {"base_url": "http://127.0.0.1:9", "merchant_id": "M1", "secret": "s", **acme}
    overrides = {"vendors": {"acme": vendor}, "polling": {"max_polls": max_polls}}
    return load_settings(None, env={}, overrides=overrides).settings


def adapter(registry: VendorRegistry) -> ReferenceAdapter:
    a = registry.get("acme")
    assert isinstance(a, ReferenceAdapter)
    return a


async def test_an_unrelated_reload_keeps_the_adapter_and_its_connections() -> None:
    holder = SettingsHolder(settings(timeout="100ms"))
    registry = VendorRegistry(holder, clock=ManualClock())
    try:
        first = adapter(registry)
        holder.replace(settings(max_polls=12, timeout="100ms"))
        assert holder.current.polling.max_polls == 12
        assert adapter(registry) is first
    finally:
        await registry.close()


async def test_an_adapter_replaced_by_a_reload_is_closed_once_its_calls_are_over() -> None:
    holder = SettingsHolder(settings(timeout="100ms"))
    registry = VendorRegistry(holder, clock=ManualClock())
    try:
        old = adapter(registry)
        old_session = old._get_session()
        for n in range(1, 4):  # a config center changing the vendor again and again
            holder.replace(settings(timeout=f"{100 + n}ms"))
            assert adapter(registry) is not old
        # Calls already under way may still be using it: not closed at once...
        await asyncio.sleep(0.05)
        assert not old_session.closed
        # ...but once they must have ended (timed out at the latest), it is.
        await asyncio.sleep(0.1 + RETIRE_MARGIN + 0.2)
        assert old_session.closed
        assert registry._retired == [], "every replaced adapter was closed"
        live = adapter(registry)
        assert not live._get_session().closed
    finally:
        await registry.close()
