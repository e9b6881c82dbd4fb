"""The HTTP API (DESIGN §7), served by ``orderwatch api`` and inside ``orderwatch serve``.

``from orderwatch.api import create_app`` builds the ASGI app over a
:class:`~orderwatch.service.Service`. :mod:`orderwatch.api.metrics` imports nothing of the
web framework, so the worker can update its metrics without pulling it in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
