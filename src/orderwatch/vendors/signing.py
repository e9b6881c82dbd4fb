"""Request and response signatures of the reference protocol (DESIGN §5).

The canonical string is every top-level field but ``sign`` and the empty ones (``None`` and
``""``; ``0``, ``false``, ``[]`` and ``{}`` are kept), sorted by key, joined as
``key=value&key=value``. Strings are written raw, other scalars as JSON text, objects and
arrays as compact JSON with sorted keys and non-ASCII kept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

SIGN_TYPES = ("HMAC-SHA256", "MD5")


def _text(value: Any) -> str:
    # Fast paths write exactly what json.dumps would (the hot path signs every request).
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def canonical(fields: Mapping[str, Any]) -> str:
    parts = []
    for key in sorted(fields):
        value = fields[key]
        if key == "sign" or value is None or value == "":
            continue
        parts.append(f"{key}={_text(value)}")
    return "&".join(parts)


def sign(fields: Mapping[str, Any], secret: str, sign_type: str = "HMAC-SHA256") -> str:
    text = canonical(fields)
    if sign_type == "HMAC-SHA256":
        return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    if sign_type == "MD5":
        return hashlib.md5(f"{text}&key={secret}".encode()).hexdigest().upper()
    raise ValueError(f"unknown sign_type {sign_type!r}; expected one of {', '.join(SIGN_TYPES)}")


def verify(fields: Mapping[str, Any], secret: str, sign_type: str = "HMAC-SHA256") -> bool:
    """True if ``fields["sign"]`` is the signature of the other fields (constant time)."""
    given = fields.get("sign")
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given, sign(fields, secret, sign_type))
