"""Settings of the ``mapped`` vendor adapter: a vendor's protocol written as config.

An integrator describes, under ``[vendors.NAME.mapping]``, where each outgoing field comes
from, where the answer keeps its code, status, message, vendor order id, description and
logistics (dotted paths), and tables that turn the vendor's values into orderwatch outcomes.
A value the tables do not name is an abnormal answer (retried and recorded), never a guess.

Example (README, "Connecting a vendor by config", has the full one)::

    [vendors.giftco.mapping]
    body = "form"
    timestamp = "yyyyMMddHHmmss"

    [vendors.giftco.mapping.query]
    path = "/api/order/query"
    fields = { mchId = "merchant_id", outTradeNo = "order.order_no", reqTime = "timestamp" }
    codes = { "0" = "status", "2004" = "unknown_order", "9999" = "maintenance" }
    statuses = { "10" = "processing", "20" = "shipped", "30" = "delivered", "40" = "failed" }

Every model is strict (unknown keys are errors), so a typo stops start-up with the dotted key,
e.g. ``vendors.giftco.mapping.query.codes.2004: ...``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ORDER_SOURCES",
    "PLACE_MEANINGS",
    "QUERY_MEANINGS",
    "AnswerPaths",
    "Meaning",
    "PlaceMapping",
    "QueryMapping",
    "VendorMapping",
    "split_path",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)

#: Where an outgoing field may take its value from (besides ``const:TEXT`` and plain
#: TOML numbers and booleans, which are sent as they are).
ORDER_SOURCES = (
    "order.order_no",
    "order.sku",
    "order.quantity",
    "order.points",
    "order.customer_id",
    "order.vendor_order_id",
    "order.recipient",
    "order.recipient.name",
    "order.recipient.phone",
    "order.recipient.address",
    "order.items",
)
_OTHER_SOURCES = ("merchant_id", "timestamp", "nonce")

#: What a code or status of a place-order answer may mean.
PLACE_MEANINGS = ("accepted", "rejected", "maintenance", "error", "status")
#: What a code or status of a query answer may mean.
QUERY_MEANINGS = (
    "processing",
    "shipped",
    "delivered",
    "failed",
    "unknown_order",
    "maintenance",
    "error",
    "status",
)
_SEGMENT = re.compile(r"^[^\s.]+$")


def split_path(path: str) -> tuple[str, ...]:
    """``"data.result.state"`` → ``("data", "result", "state")``; bad paths raise ValueError."""
    if not isinstance(path, str) or not path:
        raise ValueError("must be a dotted path like 'data.status'")
    parts = tuple(path.split("."))
    for part in parts:
        if not _SEGMENT.match(part):
            raise ValueError(
                f"{path!r} is not a dotted path: segments must be non-empty, without spaces"
            )
    return parts


class Meaning(BaseModel):
    """What one vendor value means: ``outcome`` and, for a refusal, the reason to record."""

    model_config = _STRICT

    outcome: str
    reason: str | None = Field(None, min_length=1, max_length=500)


def _meaning(value: Any) -> Any:
    return {"outcome": value} if isinstance(value, str) else value


class AnswerPaths(BaseModel):
    """Where an answer keeps each thing, as dotted paths into its JSON object.

    ``code`` is the business result code (``None``: the vendor has none, only a status);
    ``status`` is the order's state. Logistics come from ``carrier``, ``tracking_no`` and
    ``events`` (a list of objects whose time and text sit at ``event_at`` / ``event_text``).
    """

    model_config = _STRICT

    code: str | None = "code"
    message: str | None = "message"
    status: str | None = "data.status"
    vendor_order_id: str | None = "data.vendor_order_id"
    description: str | None = None
    carrier: str | None = None
    tracking_no: str | None = None
    events: str | None = None
    event_at: str = "at"
    event_text: str = "text"

    @field_validator(
        "code",
        "message",
        "status",
        "vendor_order_id",
        "description",
        "carrier",
        "tracking_no",
        "events",
        "event_at",
        "event_text",
    )
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None:
            split_path(v)
        return v


class _Operation(BaseModel):
    model_config = _STRICT
    MEANINGS: ClassVar[tuple[str, ...]] = ()

    path: str
    method: Literal["POST", "GET", "PUT"] = "POST"
    body: Literal["json", "form"] | None = None  # None: the mapping's ``body``
    fields: dict[str, str | int | bool] = Field(min_length=1)
    answer: dict[str, str | None] = Field(default_factory=dict)
    codes: dict[str, Meaning] = Field(default_factory=dict)
    statuses: dict[str, Meaning] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise ValueError("must start with '/' and contain no spaces, e.g. '/api/order/query'")
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for name, source in v.items():
            split_path(name)
            if isinstance(source, str) and not (
                source.startswith("const:") or source in ORDER_SOURCES or source in _OTHER_SOURCES
            ):
                raise ValueError(
                    f"field {name!r}: unknown source {source!r}; expected one of "
                    f"{', '.join(ORDER_SOURCES + _OTHER_SOURCES)}, 'const:TEXT', "
                    "or a TOML number or boolean"
                )
        return v

    @field_validator("answer")
    @classmethod
    def _answer(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        AnswerPaths(**v)  # same keys and rules as [mapping.answer]
        return v

    @field_validator("codes", "statuses", mode="before")
    @classmethod
    def _tables(cls, v: Any) -> Any:
        return {k: _meaning(m) for k, m in v.items()} if isinstance(v, dict) else v

    @field_validator("codes", "statuses")
    @classmethod
    def _meanings(cls, v: dict[str, Meaning]) -> dict[str, Meaning]:
        for value, meaning in v.items():
            if meaning.outcome not in cls.MEANINGS:
                raise ValueError(
                    f"{value!r} = {meaning.outcome!r}: expected one of {', '.join(cls.MEANINGS)}"
                )
            if meaning.reason is not None and meaning.outcome != "rejected":
                raise ValueError(f"{value!r}: only a 'rejected' value takes a reason")
        return v

    @model_validator(mode="after")
    def _tables_agree(self) -> _Operation:
        if not self.codes and not self.statuses:
            raise ValueError("give 'codes' or 'statuses' (or both): how to read an answer")
        if any(m.outcome == "status" for m in self.statuses.values()):
            raise ValueError("statuses: 'status' is only a meaning for codes")
        wants_status = any(m.outcome == "status" for m in self.codes.values())
        if wants_status and not self.statuses:
            raise ValueError("a code means 'status' but there is no 'statuses' table")
        return self


class PlaceMapping(_Operation):
    """``[vendors.NAME.mapping.place]``: the place-order request and how to read its answer."""

    MEANINGS: ClassVar[tuple[str, ...]] = PLACE_MEANINGS


class QueryMapping(_Operation):
    """``[vendors.NAME.mapping.query]``: the result query and how to read its answer."""

    MEANINGS: ClassVar[tuple[str, ...]] = QUERY_MEANINGS


class VendorMapping(BaseModel):
    """``[vendors.NAME.mapping]``: the whole protocol of one vendor."""

    model_config = _STRICT

    body: Literal["json", "form"] = "json"
    timestamp: Literal["seconds", "milliseconds", "yyyyMMddHHmmss"] = "seconds"
    timezone: str = "Asia/Shanghai"
    nonce_length: int = Field(32, ge=8, le=64)
    answer: AnswerPaths = AnswerPaths()
    place: PlaceMapping
    query: QueryMapping

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; e.g. 'Asia/Shanghai' or 'UTC'") from None
        return v

    def answer_for(self, kind: Literal["place", "query"]) -> AnswerPaths:
        """The shared ``answer`` paths with the operation's own ``answer`` keys on top."""
        op = self.place if kind == "place" else self.query
        if not op.answer:
            return self.answer
        return self.answer.model_copy(update=op.answer)

    @model_validator(mode="after")
    def _codes_have_a_path(self) -> VendorMapping:
        for kind in ("place", "query"):
            op: _Operation = getattr(self, kind)
            paths = self.answer_for(kind)
            if op.codes and paths.code is None:
                raise ValueError(f"{kind}.codes is given but answer.code is unset")
            if op.statuses and paths.status is None:
                raise ValueError(f"{kind}.statuses is given but answer.status is unset")
        return self
