"""The ``mapped`` adapter: a vendor's own protocol described in ``[vendors.NAME.mapping]``.

Requests are built from the mapping's field sources; every answer goes through
:meth:`MappedAdapter.interpret` — a pure function of (HTTP status, body bytes, headers) —
before the engine sees it. Its order is fixed: HTTP status, JSON object, **signature**,
then the mapped values. Anything unsigned, badly signed, of the wrong type or absent from the
mapping's tables becomes :class:`~orderwatch.outcomes.Abnormal` (retried, recorded) and is
never guessed; nothing here raises for what a vendor sends.

Paths, field sources and tables are compiled once when the adapter is built (the hot path
only walks tuples and looks up dicts).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiohttp

from ..clock import Clock
from ..order import Order, Recipient
from ..outcomes import (
    Abnormal,
    Accepted,
    Delivered,
    Exchange,
    InProgress,
    Outcome,
    Rejected,
    UnknownOrder,
    VendorFailed,
    logistics_problem,
    vendor_order_id_problem,
)
from ..settings import VendorSettings
from ..statuses import Status
from ..vendor_mapping import AnswerPaths, Meaning, VendorMapping, split_path
from . import signing
from .http import HttpSession
from .reference import (
    MAX_BODY,
    _read_limited,
    _snippet,
    retry_after_seconds,
)

__all__ = ["CheckReport", "Interpretation", "MappedAdapter", "probe_order"]

Kind = Literal["place", "query"]
Path = tuple[str, ...]
_MISSING: Any = object()


class _WrongType(Exception):
    """A mapped value of a type the mapping cannot use; becomes Abnormal('malformed')."""


def _get(obj: Any, path: Path) -> Any:
    """The value at ``path`` (dict keys, or list indexes as digits), or ``_MISSING``."""
    for part in path:
        if type(obj) is dict:
            obj = obj.get(part, _MISSING)
            if obj is _MISSING:
                return _MISSING
        elif type(obj) is list and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return _MISSING
    return obj


def _key(value: Any, where: str) -> str:
    """A code or status as the text its table is keyed by: JSON strings and integers only."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return str(value)
    raise _WrongType(f"{where} must be a string or an integer, got {_show(value)}")


def _opt_text(value: Any, where: str, *, ids: bool = False) -> str | None:
    if value is _MISSING or value is None:
        return None
    if type(value) is str:
        return value
    if ids and type(value) is int:
        return str(value)
    raise _WrongType(f"{where} must be a string, got {_show(value)}")


def _show(value: Any) -> str:
    if value is _MISSING:
        return "nothing"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"


def _form_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# -------------------------------------------------------------------- outgoing fields

Source = Callable[[Order, "_Context"], Any]


@dataclass(slots=True)
class _Context:
    timestamp: int | str
    nonce: str


def _order_source(name: str) -> Source:
    attr = name.removeprefix("order.")
    if attr == "recipient":
        return lambda o, c: {
            "name": o.recipient.name,
            "phone": o.recipient.phone,
            "address": o.recipient.address,
        }
    if attr.startswith("recipient."):
        sub = attr.removeprefix("recipient.")
        return lambda o, c: getattr(o.recipient, sub)
    if attr == "items":
        return lambda o, c: [{"sku": o.sku, "quantity": o.quantity}]
    return lambda o, c: getattr(o, attr)


def _source(spec: str | int | bool, merchant_id: str) -> Source:
    if not isinstance(spec, str):
        return lambda o, c: spec
    if spec.startswith("const:"):
        text = spec.removeprefix("const:")
        return lambda o, c: text
    if spec == "merchant_id":
        return lambda o, c: merchant_id
    if spec == "timestamp":
        return lambda o, c: c.timestamp
    if spec == "nonce":
        return lambda o, c: c.nonce
    return _order_source(spec)


@dataclass(frozen=True, slots=True)
class _Request:
    kind: Kind
    method: str
    url: str
    form: bool
    fields: tuple[tuple[Path, str, Source], ...]  # (JSON path, form name, source)


@dataclass(frozen=True, slots=True)
class _Reader:
    """One operation's answer paths and tables, compiled."""

    kind: Kind
    code: Path | None
    code_name: str
    message: Path | None
    status: Path | None
    status_name: str
    vendor_order_id: Path | None
    description: Path | None
    carrier: Path | None
    tracking_no: Path | None
    events: Path | None
    event_at: Path
    event_text: Path
    codes: Mapping[str, Meaning]
    statuses: Mapping[str, Meaning]
    names: Mapping[str, str] = field(default_factory=dict)  # field → its dotted path


def _compile_reader(
    kind: Kind, paths: AnswerPaths, codes: Mapping[str, Meaning], statuses: Mapping[str, Meaning]
) -> _Reader:
    def p(value: str | None) -> Path | None:
        return split_path(value) if value is not None else None

    return _Reader(
        kind=kind,
        code=p(paths.code) if codes else None,  # no table: the code is not read
        code_name=paths.code or "",
        message=p(paths.message),
        status=p(paths.status) if statuses else None,
        status_name=paths.status or "",
        vendor_order_id=p(paths.vendor_order_id),
        description=p(paths.description),
        carrier=p(paths.carrier),
        tracking_no=p(paths.tracking_no),
        events=p(paths.events),
        event_at=split_path(paths.event_at),
        event_text=split_path(paths.event_text),
        codes=dict(codes),
        statuses=dict(statuses),
        names={k: v for k, v in paths.model_dump().items() if isinstance(v, str)},
    )


# -------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Interpretation:
    """What one answer was taken to mean, and why (``vendors check`` prints it)."""

    outcome: Outcome
    code: str | None = None
    status: str | None = None
    signature: str = "unchecked"  # valid | missing | invalid | unchecked


@dataclass(frozen=True, slots=True)
class CheckReport:
    """One dry-run query: what was sent, what came back, what it was mapped to."""

    vendor: str
    adapter: str
    order_no: str
    method: str
    url: str
    request: dict[str, Any]
    request_headers: dict[str, str]
    http_status: int | None
    latency_ms: float
    body: str
    signature: str
    code: str | None
    status: str | None
    outcome: str
    detail: str
    understood: bool

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def probe_order(order_no: str, vendor: str, now: datetime) -> Order:
    """A made-up order for a dry-run query: nothing about it exists anywhere."""
    return Order(
        id=0,
        order_no=order_no,
        vendor=vendor,
        sku="CHECK-SKU",
        quantity=1,
        points=0,
        recipient=Recipient("check", "00000000000", "check"),
        payment_status="PAID",
        customer_id=None,
        status=Status.ORDERED,
        reason=None,
        description=None,
        vendor_order_id=None,
        vendor_status=None,
        logistics=None,
        queries=0,
        abnormal=0,
        takeovers=0,
        placements=1,
        unknown_streak=0,
        next_run_at=now,
        started_at=now,
        placed_at=now,
        created_at=now,
        updated_at=now,
    )


# -------------------------------------------------------------------- the adapter


class MappedAdapter(HttpSession):
    """Places and queries orders with one vendor described by ``settings.mapping``.

    ``session`` is the seam for tests, as for the reference adapter.
    """

    #: every answer is checked here against what the database keeps (outcomes.answer_problem)
    checks_answers = True

    def __init__(
        self,
        name: str,
        settings: VendorSettings,
        *,
        clock: Clock,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if settings.mapping is None:  # the settings validator makes this unreachable
            raise ValueError(f"vendors.{name}.mapping: required when adapter = 'mapped'")
        mapping: VendorMapping = settings.mapping
        self.name = name
        self.settings = settings
        self.clock = clock
        self._signer = signing.signer_for(settings)
        # Where signatures travel: in a body field (the signer's sign_field) or a header.
        self._sign_header = settings.sign_header if settings.sign_location == "header" else None
        self._init_http(settings, session)
        self._ts_format = mapping.timestamp
        self._tz = ZoneInfo(mapping.timezone)
        self._nonce_length = mapping.nonce_length
        self._requests: dict[Kind, _Request] = {}
        self._readers: dict[Kind, _Reader] = {}
        for kind in ("place", "query"):
            op = mapping.place if kind == "place" else mapping.query
            fields = tuple(
                (split_path(out), out, _source(spec, settings.merchant_id))
                for out, spec in op.fields.items()
            )
            self._requests[kind] = _Request(
                kind=kind,
                method=op.method,
                url=f"{settings.base_url}{op.path}",
                form=(op.body or mapping.body) == "form",
                fields=fields,
            )
            self._readers[kind] = _compile_reader(
                kind, mapping.answer_for(kind), op.codes, op.statuses
            )

    # -- HTTP -------------------------------------------------------------------------------

    def _timestamp(self) -> int | str:
        now = self.clock.now()
        if self._ts_format == "seconds":
            return int(now.timestamp())
        if self._ts_format == "milliseconds":
            return int(now.timestamp() * 1000)
        return now.astimezone(self._tz).strftime("%Y%m%d%H%M%S")

    def build(self, kind: Kind, order: Order) -> tuple[dict[str, Any], dict[str, str]]:
        """The signed request fields (strings for a form) and extra headers."""
        req = self._requests[kind]
        n = self._nonce_length
        ctx = _Context(self._timestamp(), os.urandom((n + 1) // 2).hex()[:n])
        fields: dict[str, Any] = {}
        for path, form_name, source in req.fields:
            value = source(order, ctx)
            if value is None:
                continue  # an absent value (customer_id) is not sent at all
            if req.form:
                fields[form_name] = _form_text(value)
            elif len(path) == 1:
                fields[path[0]] = value
            else:
                node = fields
                for part in path[:-1]:
                    node = node.setdefault(part, {})
                node[path[-1]] = value
        signature = self._signer.sign(fields)
        if self._sign_header is not None:
            return fields, {self._sign_header: signature}
        fields[self._signer.sign_field] = signature
        return fields, {}

    def _verify(self, answer: Mapping[str, Any], headers: Mapping[str, str]) -> str:
        if self._sign_header is not None:
            given: Any = headers.get(self._sign_header)
        else:
            given = answer.get(self._signer.sign_field)
        if not isinstance(given, str) or not given:
            return "missing"
        return "valid" if self._signer.verify(answer, given) else "invalid"

    async def place(self, order: Order) -> Exchange:
        return (await self._call("place", order))[0]

    async def query(self, order: Order) -> Exchange:
        return (await self._call("query", order))[0]

    async def _call(
        self, kind: Kind, order: Order
    ) -> tuple[Exchange, Interpretation, bytes, dict[str, Any], dict[str, str]]:
        req = self._requests[kind]
        fields, headers = self.build(kind, order)
        started = time.perf_counter()
        session = self._get_session()
        kwargs: dict[str, Any] = {"allow_redirects": False}
        if req.method == "GET":
            kwargs["params"] = {k: _form_text(v) for k, v in fields.items()}
        elif req.form:
            kwargs["data"] = urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
        else:
            kwargs["data"] = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        try:
            async with session.request(req.method, req.url, headers=headers, **kwargs) as resp:
                status = resp.status
                length = resp.content_length
                if length is not None and length > MAX_BODY:
                    raw, too_big = b"", True
                else:
                    raw, too_big = await _read_limited(resp)
                answer_headers = resp.headers
        except TimeoutError:
            outcome: Outcome = Abnormal("timeout", f"no answer within {self._timeout.total}s")
            return self._failed(outcome, started), Interpretation(outcome), b"", fields, headers
        except (aiohttp.ClientError, OSError) as exc:
            outcome = Abnormal("network", f"{type(exc).__name__}: {exc}"[:200])
            return self._failed(outcome, started), Interpretation(outcome), b"", fields, headers
        latency = time.perf_counter() - started
        if too_big:
            outcome = Abnormal("malformed", f"answer larger than {MAX_BODY} bytes")
            return Exchange(outcome, latency, status), Interpretation(outcome), b"", fields, headers
        result = self.interpret(kind, http_status=status, body=raw, headers=answer_headers)
        return Exchange(result.outcome, latency, status, result.code), result, raw, fields, headers

    @staticmethod
    def _failed(outcome: Outcome, started: float) -> Exchange:
        return Exchange(outcome, time.perf_counter() - started)

    # -- answers ----------------------------------------------------------------------------

    def interpret(
        self,
        kind: Kind,
        *,
        http_status: int,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> Interpretation:
        """Turn one HTTP answer into an outcome. Pure and never raises."""
        headers = headers or {}
        retry_after = retry_after_seconds(headers.get("Retry-After"), self.clock.now())
        if http_status == 503:
            return Interpretation(Abnormal("maintenance", "HTTP 503", retry_after))
        if http_status != 200:
            detail = f"HTTP {http_status}: {_snippet(body)}"
            return Interpretation(Abnormal("http_error", detail, retry_after))
        if len(body) > MAX_BODY:
            return Interpretation(Abnormal("malformed", f"answer larger than {MAX_BODY} bytes"))
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return Interpretation(Abnormal("malformed", f"not JSON: {_snippet(body)}"))
        if type(answer) is not dict:
            return Interpretation(Abnormal("malformed", "answer is not a JSON object"))
        try:
            verdict = self._verify(answer, headers)
        except (TypeError, ValueError, RecursionError) as exc:
            detail = f"answer cannot be canonicalised: {exc}"[:200]
            return Interpretation(Abnormal("bad_signature", detail), signature="invalid")
        if verdict != "valid":
            detail = f"answer signature {verdict}"
            return Interpretation(Abnormal("bad_signature", detail), signature=verdict)
        try:
            return self._read(self._readers[kind], answer, retry_after)
        except _WrongType as exc:
            return Interpretation(Abnormal("malformed", str(exc)), signature="valid")
        except RecursionError:  # pragma: no cover - json.loads refuses such depth first
            return Interpretation(Abnormal("malformed", "answer nested too deep"))

    def _read(
        self, r: _Reader, answer: dict[str, Any], retry_after: float | None
    ) -> Interpretation:
        code: str | None = None
        status: str | None = None
        meaning: Meaning | None = None
        if r.code is not None:
            raw = _get(answer, r.code)
            if raw is _MISSING:
                return _abnormal("malformed", f"no value at {r.code_name}")
            code = _key(raw, r.code_name)
            meaning = r.codes.get(code)
            if meaning is None:
                return _abnormal("unmapped", f"{r.code_name} = {code!r} is not in codes", code)
        if meaning is None or meaning.outcome == "status":
            assert r.status is not None  # the settings validator guarantees a statuses table
            raw = _get(answer, r.status)
            if raw is _MISSING:
                return _abnormal("malformed", f"no value at {r.status_name}", code)
            status = _key(raw, r.status_name)
            meaning = r.statuses.get(status)
            if meaning is None:
                detail = f"{r.status_name} = {status!r} is not in statuses"
                return _abnormal("unmapped", detail, code, status)
        message = (
            _opt_text(_get(answer, r.message), r.names.get("message", "")) if r.message else None
        )
        vendor_code = code if code is not None else status
        what = meaning.outcome
        if what == "maintenance":
            return _abnormal("maintenance", message or str(vendor_code), code, status, retry_after)
        if what == "error":
            return _abnormal("vendor_error", f"{vendor_code} {message or ''}".strip(), code, status)
        if what == "rejected":
            reason = meaning.reason or message or ""
            return Interpretation(Rejected(str(vendor_code), reason), code, status, "valid")
        if what == "unknown_order":
            return Interpretation(UnknownOrder(), code, status, "valid")
        vendor_order_id = (
            _opt_text(_get(answer, r.vendor_order_id), r.names["vendor_order_id"], ids=True)
            if r.vendor_order_id
            else None
        )
        problem = vendor_order_id and vendor_order_id_problem(vendor_order_id)
        if problem:
            raise _WrongType(f"{r.names['vendor_order_id']} {problem}")
        if what == "accepted":
            return Interpretation(Accepted(vendor_order_id), code, status, "valid")
        description = (
            _opt_text(_get(answer, r.description), r.names["description"])
            if r.description
            else None
        )
        logistics = self._logistics(r, answer)
        outcome: Outcome
        if what == "delivered":
            outcome = Delivered(description, logistics, vendor_order_id)
        elif what == "failed":
            outcome = VendorFailed(description, logistics, vendor_order_id)
        else:  # processing, shipped
            shown = status if status is not None else str(code)
            outcome = InProgress(shown, description, logistics, what == "shipped", vendor_order_id)
        return Interpretation(outcome, code, status, "valid")

    @staticmethod
    def _logistics(r: _Reader, answer: dict[str, Any]) -> dict[str, Any] | None:
        found: dict[str, Any] = {}
        if r.carrier is not None:
            carrier = _opt_text(_get(answer, r.carrier), r.names["carrier"])
            if carrier is not None:
                found["carrier"] = carrier
        if r.tracking_no is not None:
            tracking = _opt_text(_get(answer, r.tracking_no), r.names["tracking_no"], ids=True)
            if tracking is not None:
                found["tracking_no"] = tracking
        if r.events is not None:
            raw = _get(answer, r.events)
            where = r.names["events"]
            if raw is not _MISSING and raw is not None:
                if type(raw) is not list:
                    raise _WrongType(f"{where} must be a list of objects, got {_show(raw)}")
                events = []
                for i, item in enumerate(raw):
                    if type(item) is not dict:
                        raise _WrongType(f"{where}[{i}] must be an object, got {_show(item)}")
                    at = _opt_text(_get(item, r.event_at), f"{where}[{i}].{r.names['event_at']}")
                    text = _opt_text(
                        _get(item, r.event_text), f"{where}[{i}].{r.names['event_text']}"
                    )
                    events.append({"at": at, "text": text})
                found["events"] = events
        problem = found and logistics_problem(found)
        if problem:
            raise _WrongType(f"logistics {problem}")
        return found or None

    # -- dry run ----------------------------------------------------------------------------

    async def check(self, order_no: str) -> CheckReport:
        """Send one signed query for ``order_no`` and report every step (``vendors check``)."""
        order = probe_order(order_no, self.name, self.clock.now())
        exchange, result, raw, fields, headers = await self._call("query", order)
        req = self._requests["query"]
        outcome = exchange.outcome
        return CheckReport(
            vendor=self.name,
            adapter="mapped",
            order_no=order_no,
            method=req.method,
            url=req.url,
            request=fields,
            request_headers=headers,
            http_status=exchange.http_status,
            latency_ms=round(exchange.latency * 1000, 1),
            body=raw[:2000].decode("utf-8", "replace"),
            signature=result.signature,
            code=result.code,
            status=result.status,
            outcome=exchange.outcome_name,
            detail=outcome.detail if isinstance(outcome, Abnormal) else "",
            understood=not isinstance(outcome, Abnormal),
        )


def _abnormal(
    kind: str,
    detail: str,
    code: str | None = None,
    status: str | None = None,
    retry_after: float | None = None,
) -> Interpretation:
    return Interpretation(Abnormal(kind, detail[:300], retry_after), code, status, "valid")
