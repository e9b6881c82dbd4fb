"""Compact JSON text for what orderwatch writes and reads back itself.

Every vendor call stores a row, an event and often a notification body as JSON, and every
claim reads rows back as JSON: with the standard library that was about a twentieth of the
worker's CPU. orjson does the same work several times faster. It differs from ``json`` in
a few corners, which :func:`dumps` covers by falling back to the standard library:
integers beyond 64 bits (a vendor's logistics may hold one), keys that are not strings,
subclasses of built-in types (a plug-in's dict that overrides ``items()`` is written as
``json`` writes it, as its size was checked), and datetimes and dataclasses, which still
fail as they did. What is passed here are plain JSON values: logistics checked by
``outcomes.logistics_problem`` (no NaN), details and views built by orderwatch. (orjson
would also write a plain ``Enum`` or a ``UUID``, which ``json`` refuses; none is passed.)

:func:`loads` is for text orderwatch wrote itself (rows, recipients): orjson reads an
integer beyond 64 bits as a float, so a vendor's logistics are read with
:func:`json.loads` instead.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_STDLIB = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``, faster."""
    try:
        return dumps_plain(value)
    except TypeError:  # let json decide
        return _STDLIB.encode(value)


def dumps_plain(value: Any) -> str:
    """:func:`dumps` for plain JSON values only: raises TypeError (orjson.JSONEncodeError)
    where :func:`dumps` would hand the value to the standard library, so that a caller can
    make it plain first. orjson writes NaN and Infinity as null."""
    return orjson.dumps(value, option=_OPTIONS).decode()


def dumps_or_none(value: Any) -> str | None:
    """:func:`dumps`, with None (SQL NULL) for None: a nullable JSON column."""
    return None if value is None else dumps(value)


def loads(text: str | bytes) -> Any:
    """JSON text that orderwatch wrote (no integers beyond 64 bits)."""
    return orjson.loads(text)


_DECODER = json.JSONDecoder()


def loads_exact(text: str) -> Any:
    """``json.loads(text)`` for text that :func:`dumps` wrote, where an integer beyond 64
    bits must stay exact (a vendor's logistics): the decoder alone, without the checks
    ``json.loads`` makes around it, half the cost. Anything else is ``json.loads``'s."""
    try:
        value, end = _DECODER.raw_decode(text)
    except ValueError:
        return json.loads(text)  # leading whitespace, say; or its error
    return value if end == len(text) else json.loads(text)


__all__ = ["dumps", "dumps_or_none", "dumps_plain", "loads", "loads_exact"]
