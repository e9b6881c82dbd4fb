"""Vendor adapters: the small interface the engine calls, and where adapters come from.

An adapter turns ``place(order)`` and ``query(order)`` into an
:class:`~orderwatch.outcomes.Exchange`. It must never raise for anything a vendor does;
whatever cannot be trusted becomes ``Abnormal``. Adapters are found by name in the entry
point group ``orderwatch.vendors`` (``adapter = "reference"`` and ``"mapped"`` are built in).
The worker checks a plug-in's answers against what the database keeps
(:func:`~orderwatch.outcomes.checked`) unless the adapter's own class says it does
(``checks_answers = True``, as the built-in ones do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Protocol

from ..clock import Clock
from ..errors import ConfigError
from ..order import Order
from ..outcomes import Exchange
from ..settings import SettingsHolder, VendorSettings

#: Seconds past a retired adapter's own timeout before it is closed: its in-flight calls
#: have ended by then (answered or timed out), and nothing new is sent through it.
RETIRE_MARGIN = 1.0


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
    """One live adapter per configured vendor, rebuilt when its settings change.

    An adapter replaced by a reload is closed once its in-flight calls can no longer be
    running (its timeout, plus :data:`RETIRE_MARGIN`): a config center that changes a
    vendor every hour must not leave an HTTP session behind each time.
    """

    def __init__(self, settings: SettingsHolder, *, clock: Clock, **adapter_kwargs: Any) -> None:
        self._settings = settings
        self._clock = clock
        self._kwargs = adapter_kwargs
        self._adapters: dict[str, tuple[VendorSettings, VendorAdapter]] = {}
        self._retired: list[VendorAdapter] = []
        self._closing: set[asyncio.Task[None]] = set()

    def get(self, vendor: str) -> VendorAdapter | None:
        cfg = self._settings.current.vendors.get(vendor)
        if cfg is None:
            return None
        entry = self._adapters.get(vendor)
        if entry is not None and entry[0] is cfg:
            return entry[1]
        if entry is not None:
            self._retire(*entry)
        adapter = adapter_factory(cfg.adapter)(vendor, cfg, clock=self._clock, **self._kwargs)
        self._adapters[vendor] = (cfg, adapter)
        return adapter

    def _retire(self, cfg: VendorSettings, adapter: VendorAdapter) -> None:
        """In-flight calls may still use ``adapter``: close it when they must have ended."""
        self._retired.append(adapter)
        delay = cfg.timeout.total_seconds() + RETIRE_MARGIN
        asyncio.get_running_loop().call_later(delay, self._close_retired, adapter)

    def _close_retired(self, adapter: VendorAdapter) -> None:
        if adapter not in self._retired:  # the registry was closed meanwhile
            return
        self._retired.remove(adapter)
        task = asyncio.create_task(adapter.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for _, adapter in self._adapters.values():
            await adapter.close()
        for adapter in self._retired:
            await adapter.close()
        self._adapters.clear()
        self._retired.clear()
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)


__all__ = [
    "RETIRE_MARGIN",
    "AdapterFactory",
    "VendorAdapter",
    "VendorRegistry",
    "adapter_factory",
]
