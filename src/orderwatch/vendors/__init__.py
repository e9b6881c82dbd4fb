"""Vendor adapters: the small interface the engine calls, and where adapters come from.

An adapter turns ``place(order)`` and ``query(order)`` into an
:class:`~orderwatch.outcomes.Exchange`. It must never raise for anything a vendor does;
whatever cannot be trusted becomes ``Abnormal``. Adapters are found by name in the entry
point group ``orderwatch.vendors`` (``adapter = "reference"`` and ``"mapped"`` are built in).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Protocol

from ..clock import Clock
from ..errors import ConfigError
from ..order import Order
from ..outcomes import Exchange
from ..settings import SettingsHolder, VendorSettings


class VendorAdapter(Protocol):
    name: str

    async def place(self, order: Order) -> Exchange: ...

    async def query(self, order: Order) -> Exchange: ...

    async def close(self) -> None: ...


AdapterFactory = Callable[..., VendorAdapter]


def adapter_factory(name: str) -> AdapterFactory:
    """The adapter class registered as ``name`` in ``orderwatch.vendors``."""
    if name == "reference":
        from .reference import ReferenceAdapter

        return ReferenceAdapter
    if name == "mapped":
        from .mapped import MappedAdapter

        return MappedAdapter
    for ep in entry_points(group="orderwatch.vendors"):
        if ep.name == name:
            factory: AdapterFactory = ep.load()
            return factory
    raise ConfigError(
        [f"vendors.*.adapter: no adapter named {name!r} in entry point group 'orderwatch.vendors'"]
    )


class VendorRegistry:
    """One live adapter per configured vendor, rebuilt when its settings change."""

    def __init__(self, settings: SettingsHolder, *, clock: Clock, **adapter_kwargs: Any) -> None:
        self._settings = settings
        self._clock = clock
        self._kwargs = adapter_kwargs
        self._adapters: dict[str, tuple[VendorSettings, VendorAdapter]] = {}
        self._retired: list[VendorAdapter] = []

    def get(self, vendor: str) -> VendorAdapter | None:
        cfg = self._settings.current.vendors.get(vendor)
        if cfg is None:
            return None
        entry = self._adapters.get(vendor)
        if entry is not None and entry[0] is cfg:
            return entry[1]
        if entry is not None:
            self._retired.append(entry[1])  # in-flight calls may still use it; close later
        adapter = adapter_factory(cfg.adapter)(vendor, cfg, clock=self._clock, **self._kwargs)
        self._adapters[vendor] = (cfg, adapter)
        return adapter

    async def close(self) -> None:
        for _, adapter in self._adapters.values():
            await adapter.close()
        for adapter in self._retired:
            await adapter.close()
        self._adapters.clear()
        self._retired.clear()


__all__ = ["AdapterFactory", "VendorAdapter", "VendorRegistry", "adapter_factory"]
