"""Dialects: the simulator speaking a vendor's own protocol instead of the reference one.

The simulator decides everything in reference terms (DESIGN §5: codes ``0000``/``E101``/
``E404``/``E503``, statuses ``PROCESSING``…``DELIVERED``). A :class:`Dialect` only translates
at the edge: it reads a request in the vendor's shape (paths, method, JSON or form body,
field names, timestamp format, name of the signature field) into the reference body, and
writes the reference answer back in the vendor's shape (field paths, code and status
values). Fates and noise stay exactly as deterministic as with the reference protocol.

A dialect file (``orderwatch simulator --dialect FILE``) is TOML::

    body = "form"                      # json | form
    timestamp = "yyyyMMddHHmmss"       # seconds | milliseconds | yyyyMMddHHmmss
    timezone = "Asia/Shanghai"
    sign_field = "sign"
    place = { method = "POST", path = "/api/order/create" }
    query = { method = "POST", path = "/api/order/query" }

    [request]          # reference field → the vendor's field name
    order_no = "outTradeNo"
    "recipient.name" = "receiverName"

    [answer]           # reference answer path → the vendor's dotted path
    code = "retCode"
    "data.status" = "data.orderStatus"

    [codes]            # reference code → the vendor's code
    "0000" = "0"
    [statuses]         # reference status → the vendor's status
    DELIVERED = "30"
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["REFERENCE", "Dialect", "load_dialect"]

#: Request fields of the reference protocol a dialect may rename.
REQUEST_FIELDS = (
    "merchant_id",
    "order_no",
    "sku",
    "quantity",
    "points",
    "recipient.name",
    "recipient.phone",
    "recipient.address",
    "timestamp",
    "nonce",
)
#: Answer paths of the reference protocol a dialect may move.
ANSWER_PATHS = (
    "code",
    "message",
    "data.order_no",
    "data.vendor_order_id",
    "data.status",
    "data.description",
    "data.logistics.carrier",
    "data.logistics.tracking_no",
    "data.logistics.events",
)
_INTS = ("quantity", "points")
_FORMATS = ("seconds", "milliseconds", "yyyyMMddHHmmss")
_SCALARS = (
    "body",
    "timestamp",
    "timezone",
    "sign_field",
    "sign_location",
    "sign_header",
    "event_at",
    "event_text",
)
_KEYS = {
    *_SCALARS,
    "place",
    "query",
    "request",
    "answer",
    "event_at",
    "event_text",
    "codes",
    "statuses",
}


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _lookup(fields: Mapping[str, Any], name: str) -> Any:
    """``fields[name]``, or for a dotted name the nested value (JSON bodies); else None."""
    if name in fields:
        return fields[name]
    value: Any = fields
    for part in _split(name):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@dataclass(frozen=True)
class Dialect:
    """How the simulated vendor speaks; the defaults are the reference protocol."""

    body: str = "json"
    timestamp: str = "seconds"
    timezone: str = "Asia/Shanghai"
    sign_field: str = "sign"
    sign_location: str = "body"  # body: the field sign_field; header: sign_header
    sign_header: str = "X-Signature"
    place_method: str = "POST"
    place_path: str = "/orders"
    query_method: str = "POST"
    query_path: str = "/orders/query"
    request: Mapping[str, str] = field(default_factory=dict)  # reference → vendor
    answer: Mapping[str, str] = field(default_factory=dict)  # reference path → vendor path
    event_at: str = "at"
    event_text: str = "text"
    codes: Mapping[str, str] = field(default_factory=dict)
    statuses: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.body not in ("json", "form"):
            problems.append("body: must be 'json' or 'form'")
        if self.sign_location not in ("body", "header"):
            problems.append("sign_location: must be 'body' or 'header'")
        if self.timestamp not in _FORMATS:
            problems.append(f"timestamp: must be one of {', '.join(_FORMATS)}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone: unknown time zone {self.timezone!r}")
        for kind in ("place", "query"):
            method = getattr(self, f"{kind}_method")
            path = getattr(self, f"{kind}_path")
            if method not in ("POST", "GET", "PUT"):
                problems.append(f"{kind}.method: must be POST, GET or PUT")
            if not isinstance(path, str) or not path.startswith("/"):
                problems.append(f"{kind}.path: must start with '/'")
        if (self.place_method, self.place_path) == (self.query_method, self.query_path):
            problems.append("query.path: must differ from place.path")
        for name, value in self.request.items():
            if name not in REQUEST_FIELDS:
                problems.append(f"request.{name}: not a field; one of {', '.join(REQUEST_FIELDS)}")
            elif not isinstance(value, str) or not value:
                problems.append(f"request.{name}: must be a field name")
        for name, value in self.answer.items():
            if name not in ANSWER_PATHS:
                problems.append(f"answer.{name}: not a path; one of {', '.join(ANSWER_PATHS)}")
            elif not isinstance(value, str) or not all(_split(value)):
                problems.append(f"answer.{name}: must be a dotted path")
        for table in ("codes", "statuses"):
            for k, v in getattr(self, table).items():
                if not isinstance(v, str | int) or isinstance(v, bool):
                    problems.append(f"{table}.{k}: must be a string or an integer")
        if problems:
            raise ValueError("; ".join(problems))

    @cached_property
    def is_reference(self) -> bool:
        """True for the reference protocol itself (the simulator then skips translation)."""
        return self == Dialect()

    # -- requests ---------------------------------------------------------------------------

    def decode(self, raw: bytes, query: Mapping[str, str], method: str) -> dict[str, Any] | str:
        """The request's fields as the vendor sent them, or a ``"field: problem"``."""
        if method == "GET":
            return dict(query)
        if self.body == "form":
            try:
                pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
            except (UnicodeDecodeError, ValueError):
                return "body: not a valid form (application/x-www-form-urlencoded)"
            return dict(pairs)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return "body: not valid JSON"
        if not isinstance(body, dict):
            return "body: must be a JSON object"
        return body

    def signed_fields(
        self, fields: Mapping[str, Any], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        """``fields`` with the vendor's signature (field or header) as ``sign`` for verify()."""
        if self.sign_location == "header":
            out = {k: v for k, v in fields.items() if k != "sign"}
            out["sign"] = headers.get(self.sign_header)
            return out
        if self.sign_field == "sign":
            return dict(fields)
        out = {k: v for k, v in fields.items() if k not in (self.sign_field, "sign")}
        if self.sign_field in fields:
            out["sign"] = fields[self.sign_field]
        return out

    def to_reference(self, fields: Mapping[str, Any]) -> dict[str, Any] | str:
        """The vendor's request as a reference body (for the simulator's own checks)."""
        body: dict[str, Any] = {}
        recipient: dict[str, Any] = {}
        for ref in REQUEST_FIELDS:
            name = self.request.get(ref, ref)
            value = _lookup(fields, name)
            if value is None:
                continue
            if ref in _INTS and isinstance(value, str) and value.isdigit():
                value = int(value)
            if ref == "timestamp":
                converted = self._timestamp(value)
                if converted is None:
                    return f"{name}: must be a timestamp in {self.timestamp}"
                value = converted
            if ref.startswith("recipient."):
                recipient[ref.removeprefix("recipient.")] = value
            else:
                body[ref] = value
        if "recipient" in fields and not recipient and self.body == "json":
            body["recipient"] = fields["recipient"]  # the reference shape, unrenamed
        elif recipient:
            body["recipient"] = recipient
        body["sign"] = "header" if self.sign_location == "header" else fields.get(self.sign_field)
        return body

    def _timestamp(self, value: Any) -> int | None:
        if self.timestamp == "yyyyMMddHHmmss":
            if not isinstance(value, str) or len(value) != 14 or not value.isdigit():
                return None
            try:
                when = datetime.strptime(value, "%Y%m%d%H%M%S")
            except ValueError:
                return None
            return int(when.replace(tzinfo=ZoneInfo(self.timezone)).timestamp())
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if type(value) is not int:
            return None
        return value // 1000 if self.timestamp == "milliseconds" else value

    def problem(self, text: str) -> str:
        """A reference ``"field: problem"`` renamed to the vendor's field."""
        ref, sep, rest = text.partition(":")
        if sep and ref in self.request:
            return f"{self.request[ref]}:{rest}"
        return text

    # -- answers ----------------------------------------------------------------------------

    def to_vendor(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A reference answer (unsigned) in the vendor's shape (still unsigned)."""
        if self.is_reference:
            return dict(payload)
        out: dict[str, Any] = {}
        for ref in ANSWER_PATHS:
            value: Any = payload
            for part in _split(ref):
                value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                continue
            if ref == "code":
                value = self.codes.get(value, value)
            elif ref == "data.status":
                value = self.statuses.get(value, value)
            elif ref == "data.logistics.events":
                value = [
                    {self.event_at: e.get("at"), self.event_text: e.get("text")} for e in value
                ]
            node = out
            target = _split(self.answer.get(ref, ref))
            for part in target[:-1]:
                node = node.setdefault(part, {})
            node[target[-1]] = value
        return out


REFERENCE = Dialect()


def load_dialect(path: Path) -> Dialect:
    """A dialect from a TOML file; every problem names its key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return dialect_from_dict(data, where=str(path))


def dialect_from_dict(data: Mapping[str, Any], *, where: str = "dialect") -> Dialect:
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for key in _SCALARS:
        if key in data:
            kwargs[key] = data[key]
    for kind in ("place", "query"):
        op = data.get(kind, {})
        if not isinstance(op, dict) or set(op) - {"method", "path"}:
            raise ValueError(f"{where}: {kind} must be a table with method and path")
        if "method" in op:
            kwargs[f"{kind}_method"] = op["method"]
        if "path" in op:
            kwargs[f"{kind}_path"] = op["path"]
    for table in ("request", "answer", "codes", "statuses"):
        value = data.get(table, {})
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {table} must be a table")
        kwargs[table] = dict(value)
    try:
        return Dialect(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
