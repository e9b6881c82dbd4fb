"""orderwatch: place redemption orders once, poll them for days, say why each one ended."""

from __future__ import annotations

__version__ = "0.1.0"
