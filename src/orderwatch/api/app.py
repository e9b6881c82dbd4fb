"""The HTTP API (DESIGN §7): order intake, the customer-service query, operator actions.

Every handler is a thin adapter: authenticate, read the body, call the same
:class:`~orderwatch.service.Service` functions the CLI calls, render with
:func:`~orderwatch.views.order_view`. Answers are serialised once, straight from the view
dicts (the response models only document them), and every error is a problem document
(:mod:`.problems`).

>>> from orderwatch.api import create_app            # doctest: +SKIP
>>> app = create_app(service, wake=worker.wake)      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response

from .. import __version__
from ..errors import Conflict, FieldError, OrderNotFound, OrderwatchError, ValidationFailed
from ..intake import CONTROL_CHARACTERS, OrderIn
from ..lifecycle import ActionRefused
from ..log import get_logger
from ..order import NewOrder
from ..service import ActionResult, Service
from ..statuses import Reason, Status
from ..store.base import OrderFilter, OutboxRow
from ..views import order_view, rfc3339
from . import metrics as m
from . import problems
from .auth import (
    ACT,
    CREATE,
    PAYMENT,
    READ,
    Caller,
    Forbidden,
    Role,
    TokenTable,
    Unauthenticated,
    check_role,
)
from .problems import PROBLEM_JSON, Problem
from .schemas import (
    BODY_MODELS,
    ActionOut,
    BulkOut,
    BulkResolveIn,
    BulkRetryIn,
    HealthOut,
    NoteIn,
    NotificationOut,
    OrderDetailOut,
    OrderOut,
    OrderPage,
    PauseIn,
    PaymentIn,
    ProblemOut,
    ResolveIn,
    Rfc3339,
    StatsOut,
    VendorOut,
)

__all__ = ["MAX_BODY", "PREFIX", "create_app"]

log = get_logger("orderwatch.api")

PREFIX = "/api/v1"
MAX_BODY = 1 << 20  # 1 MiB (DESIGN §7)
DRAIN = 16 << 20  # read and drop up to this much of a refused body, so the client sees 413
READY_TIMEOUT = 2.0  # seconds /readyz waits for the database

B = TypeVar("B", bound=BaseModel)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# ------------------------------------------------------------------------ OpenAPI helpers

_ERROR_TEXT = {
    400: "Malformed body (not JSON, not UTF-8).",
    401: "No token, or a token that is not configured.",
    403: "The token's role may not do this.",
    404: "No such order (or notification, or vendor).",
    409: "The order's status does not allow this, or the order_no is taken with another body.",
    413: "Body over 1 MiB.",
    415: "Body is not application/json.",
    422: "Invalid input; `errors` names each field.",
    503: "Database unreachable or its schema is not current.",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "description": _ERROR_TEXT[code],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemOut"}}},
        }
        if code == 401:
            entry["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}
            }
        out[code] = entry
    return out


AUTH_ERRORS = (401, 403)

# What a client (and schemathesis' stateful run) can do next with an order it submitted.
_ORDER_LINKS = {
    name: {
        "operationId": operation,
        "parameters": {"order_no": "$response.body#/order_no"},
        "description": text,
    }
    for name, operation, text in (
        ("GetOrder", "getOrder", "Where the order is now, with its timeline."),
        ("UpdatePayment", "updatePayment", "Record that it was paid (or not)."),
        ("CancelOrder", "cancelOrder", "Cancel it before it is placed."),
        ("RetryOrder", "retryOrder", "Retry it once it failed."),
        ("ResolveOrder", "resolveOrder", "Close it by hand."),
    )
}
BODY_ERRORS = (400, 413, 415, 422)


def _body_doc(model: str, *, required: bool = True, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{model}"}}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": required, "content": {"application/json": media}}}


ORDER_EXAMPLE = {
    "order_no": "R20261126000001",
    "vendor": "acme",
    "sku": "SKU-1001",
    "quantity": 1,
    "points": 12000,
    "customer_id": "C0001",
    "payment_status": "PAID",
    "recipient": {"name": "张三", "phone": "13800000000", "address": "上海市浦东新区..."},
}


def _component_schemas(vendors: list[str]) -> dict[str, Any]:
    """Request body schemas, and the problem document, for ``components.schemas``."""
    template = "#/components/schemas/{model}"
    out: dict[str, Any] = {}
    models: tuple[type[BaseModel], ...] = (OrderIn, *BODY_MODELS, ProblemOut)
    for model in models:
        schema = model.model_json_schema(ref_template=template)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    _tighten(out, vendors)
    return out


# Strings are trimmed, so one of only spaces counts as empty; control characters are
# refused (intake: PostgreSQL cannot store NUL).
_PRINTABLE = f"[^{CONTROL_CHARACTERS}]"
_TEXT = rf"^(?=[\s\S]*\S){_PRINTABLE}*$"


def _tighten(out: dict[str, Any], vendors: list[str]) -> None:
    """Say in the schema exactly what :func:`~orderwatch.intake.validate_order` accepts.

    The intake model is shared with ``orders import``, whose CSV cells are strings; these
    edits describe the JSON the API takes, so generated clients (and schemathesis) send
    what the API accepts and nothing it refuses.
    """
    order = out["OrderIn"]
    props = order["properties"]
    order["description"] = (
        "An order to redeem (DESIGN §8). `order_no` is the idempotency key: the same "
        "order_no with the same body answers 200 with the stored order. Strings are "
        "trimmed."
    )
    if vendors:  # the vendor must be one this deployment has configured: say which
        props["vendor"] = {"type": "string", "enum": vendors}
    props["sku"]["pattern"] = _TEXT
    props["quantity"] = {"type": "integer", "minimum": 1, "maximum": 999}
    props["points"] = {"type": "integer", "minimum": 0, "maximum": 100_000_000}
    props["customer_id"] = {
        "anyOf": [
            {"type": "string", "maxLength": 64, "pattern": f"^{_PRINTABLE}*$"},
            {"type": "null"},
        ],
        "default": None,
        "description": "Empty or null: none.",
    }
    props["recipient"] = {"$ref": "#/components/schemas/RecipientIn"}
    recipient = out["RecipientIn"]["properties"]
    recipient["name"]["pattern"] = _TEXT
    recipient["address"]["pattern"] = _TEXT
    recipient["phone"] = {
        "type": "string",
        "pattern": r"^(?=.*[0-9])[0-9+-][0-9+\- ]{3,18}[0-9+-]$",
        "description": "5-20 of digits, '+', '-' and spaces, with a digit.",
    }
    for model in ("ResolveIn", "BulkResolveIn"):  # a note of only spaces is refused
        out[model]["properties"]["note"]["pattern"] = _TEXT
    for model in ("NoteIn", "PauseIn", "BulkRetryIn"):  # optional notes: printable
        for variant in out[model]["properties"]["note"].get("anyOf", []):
            if variant.get("type") == "string":
                variant["pattern"] = f"^{_PRINTABLE}*$"
    # A filter key is either given or left out; null is refused.
    for prop in out["FilterIn"]["properties"].values():
        variants = prop.pop("anyOf", None)
        if variants:
            prop.update(next(v for v in variants if v.get("type") != "null"))
        prop.pop("default", None)
    for name in ("vendor", "customer_id"):
        out["FilterIn"]["properties"][name]["pattern"] = f"^{_PRINTABLE}*$"


class OrderwatchAPI(FastAPI):
    """FastAPI with orderwatch's request body schemas added to the OpenAPI document."""

    extra_schemas: dict[str, Any]

    def openapi(self) -> dict[str, Any]:
        schema = super().openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(self.extra_schemas)
        return schema


# ------------------------------------------------------------------------ small helpers


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return Response(
        content.encode("utf-8"), status_code=status, headers=headers, media_type="application/json"
    )


def _pydantic_errors(exc: ValidationError, *, drop: int = 0) -> list[FieldError]:
    errors = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"][drop:]]
        field = ".".join(loc) or "(body)"
        kind = e["type"]
        if kind == "missing":
            message = "required"
        elif kind == "extra_forbidden":
            message = "unknown field"
        else:
            message = e["msg"].removeprefix("Value error, ")
        errors.append(FieldError(field, message))
    return errors


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def _raw_body(request: Request, *, required: bool) -> bytes | None:
    """The body, or None if there is none and none is required; checks the media type."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise Problem(
                422,
                "validation",
                "a JSON body is required",
                errors=[FieldError("(body)", "required")],
            )
        return None
    if not _is_json(request.headers.get("content-type")):
        raise Problem(
            415,
            "unsupported-media-type",
            "send the body as JSON with 'Content-Type: application/json'",
        )
    return raw


async def read_model(request: Request, model: type[B], *, required: bool = True) -> B:
    """Parse and validate a JSON body strictly; errors name each field."""
    raw = await _raw_body(request, required=required)
    if raw is None:
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise Problem(
                400,
                "malformed",
                "the body is not valid UTF-8 JSON",
                errors=[FieldError("(body)", exc.errors()[0]["msg"])],
            ) from None
        raise Problem(
            422, "validation", "the body is not valid", errors=_pydantic_errors(exc)
        ) from None


def _strict_order_types(data: dict[str, Any]) -> list[FieldError]:
    """JSON callers send numbers as numbers: ``"1"`` is refused here (a CSV cell may be).

    ``2.0`` is a whole number to JSON Schema, so it is taken as ``2``.
    """
    errors = []
    for name in ("quantity", "points"):
        value = data.get(name)
        if isinstance(value, float) and value.is_integer():
            data[name] = value = int(value)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(FieldError(name, "must be a whole number (a JSON number)"))
    return errors


def _merge_errors(first: list[FieldError], extra: list[FieldError]) -> list[FieldError]:
    seen = {e.field for e in first}
    return first + [e for e in extra if e.field not in seen]


def _cursor_key(flt: OrderFilter) -> str:
    text = "|".join(
        str(v)
        for v in (
            flt.status,
            flt.reason,
            flt.vendor,
            flt.customer_id,
            flt.created_after,
            flt.created_before,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def encode_cursor(last_id: int, flt: OrderFilter) -> str:
    raw = json.dumps({"b": last_id, "f": _cursor_key(flt)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, flt: OrderFilter) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        before = data["b"]
        key = data["f"]
    except (ValueError, binascii.Error, KeyError, TypeError, UnicodeDecodeError):
        before = None
    # an order id; past 2**63 no database can compare it
    if not isinstance(before, int) or isinstance(before, bool) or not 1 <= before < 2**63:
        raise Problem(
            422,
            "validation",
            "cursor is not one this API handed out",
            errors=[FieldError("cursor", "not a cursor from next_cursor")],
        )
    if key != _cursor_key(flt):
        raise Problem(
            422,
            "validation",
            "cursor belongs to another query",
            errors=[FieldError("cursor", "use it with the same filters it came with")],
        )
    return before


def _size(n: int) -> str:
    if n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} bytes"


def notification_view(row: OutboxRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.event_type,
        "state": row.state,
        "attempts": row.attempts,
        "next_attempt_at": rfc3339(row.next_attempt_at) if row.next_attempt_at else None,
        "delivered_at": rfc3339(row.delivered_at) if row.delivered_at else None,
        "last_error": row.last_error,
        "created_at": rfc3339(row.created_at),
    }


def _action_view(result: ActionResult, caller: Caller) -> dict[str, Any]:
    view = order_view(result.order, mask=caller.masked)
    if result.retry_mode is not None:
        view["retry_mode"] = result.retry_mode
    return view


# ------------------------------------------------------------------------ middleware


class Guard:
    """Body limit, request metrics and the access log, as one plain ASGI layer.

    The body is read here, before routing, so a body over the limit is refused with 413
    whether its ``Content-Length`` says so up front or it streams (chunked) past the
    limit; the handler then reads the buffered bytes.
    """

    def __init__(self, app: ASGIApp, *, max_body: int, http: m.HttpMetrics) -> None:
        self.app = app
        self.max_body = max_body
        self.http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            try:
                body = await self._read_body(scope, receive)
            except _ClientGone:
                status = 499  # nginx's code for it: the client left before asking in full
                return
            if body is None:
                status = 413
                limit = _size(self.max_body)
                reply = problems.response(
                    Problem(
                        413,
                        "too-large",
                        f"the body is over the limit of {limit}",
                        headers={"Connection": "close"},
                    ),
                    scope.get("path"),
                )
                await reply(scope, receive, send)
                return
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(unmatched)"
            elapsed = time.perf_counter() - started
            method = scope["method"]
            # a label per method a client makes up would grow the metrics without bound
            self.http.observe(method if method in _METHODS else "OTHER", template, status, elapsed)
            quiet = template in _PROBES and status < 400  # scrapes and probes, every few s
            (log.debug if quiet else log.info)(
                "http_request",
                method=scope["method"],
                path=scope.get("path"),
                status=status,
                ms=round(elapsed * 1000, 2),
                caller=scope.get("orderwatch.caller"),
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None when it is over the limit (by header or by count).

        A body over the limit is still read and dropped, up to :data:`DRAIN`, so that the
        client finishes sending and reads the 413 instead of a reset connection; past
        that the connection is closed with the answer.
        """
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                declared = int(value)  # the server refuses a bad one before we see it
        if declared is not None and declared > self.max_body:
            if declared <= DRAIN:
                await _drain(receive, DRAIN)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                if message.get("more_body", False):
                    await _drain(receive, DRAIN - size)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


#: Methods that get their own label in the request metrics; any other counts as "OTHER".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_PROBES = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        f"{PREFIX}/healthz",
        f"{PREFIX}/readyz",
        f"{PREFIX}/metrics",
    }
)


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def _drain(receive: Receive, budget: int) -> None:
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


# ------------------------------------------------------------------------ the app


@dataclass
class ApiContext:
    """What every handler needs, kept on ``app.state.ctx``."""

    service: Service
    tokens: TokenTable
    poke: Callable[[], None]
    registry: CollectorRegistry
    ready: _Readiness


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


_BEARER = HTTPBearer(
    auto_error=False,
    description="A token from [[api.tokens]]; its role decides what it may do.",
)


def _needs(allowed: frozenset[Role]) -> Callable[..., Awaitable[Caller]]:
    async def caller(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> Caller:
        who = _ctx(request).tokens.identify(request.headers.get("authorization"))
        request.scope["orderwatch.caller"] = who.name  # for the access log, even on 403
        return check_role(who, allowed)

    return caller


Reader = Annotated[Caller, Depends(_needs(READ))]
Creator = Annotated[Caller, Depends(_needs(CREATE))]
Payer = Annotated[Caller, Depends(_needs(PAYMENT))]
Operator = Annotated[Caller, Depends(_needs(ACT))]
OrderNo = Annotated[str, Path(description="The order's order_no.", max_length=200)]
VendorName = Annotated[str, Path(description="A configured vendor's name.", max_length=64)]

_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(dependant: Any) -> frozenset[str]:
    """The query parameters an operation declares, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


async def _known_query_only(request: Request) -> None:
    """Refuse query parameters the operation does not take: a typo such as
    ``?stauts=FAILED`` would otherwise list every order instead of the failed ones."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.path in _PROBES:
        return  # probes and scrapers are not ours to be strict with
    allowed = _QUERY_NAMES.get(id(route))
    if allowed is None:
        allowed = _QUERY_NAMES[id(route)] = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise Problem(
            422,
            "validation",
            "unknown query parameter: " + ", ".join(unknown),
            errors=[FieldError(name, "unknown query parameter") for name in unknown],
        )
    # Each parameter is one value: given twice, only the last would apply, silently.
    names = [name for name, _ in request.query_params.multi_items()]
    if len(names) != len(set(names)):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise Problem(
            422,
            "validation",
            "query parameter given more than once: " + ", ".join(repeated),
            errors=[FieldError(name, "given more than once") for name in repeated],
        )


router = APIRouter(dependencies=[Depends(_known_query_only)])


def create_app(
    service: Service,
    *,
    wake: Callable[[], None] | None = None,
    max_body: int = MAX_BODY,
) -> FastAPI:
    """The ASGI app over ``service``. ``wake`` is called after intake and retries, so a
    worker in the same process claims the new work at once instead of at its next look."""
    settings = service.settings.current
    tokens = TokenTable(settings.api.tokens)
    if not tokens:
        log.warning(
            "api_no_tokens",
            note="api.tokens is empty: every call except /healthz, /readyz and /metrics "
            "is refused with 401",
        )
    registry = CollectorRegistry(auto_describe=True)
    app = OrderwatchAPI(
        title="orderwatch",
        version=__version__,
        summary="Place redemption orders with vendors once, poll them, say why each ended.",
        description=_DESCRIPTION,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.extra_schemas = _component_schemas(sorted(settings.vendors))
    app.state.ctx = ApiContext(
        service=service,
        tokens=tokens,
        poke=wake or (lambda: None),
        registry=registry,
        ready=_Readiness(service),
    )
    app.include_router(router)
    _install_error_handlers(app)
    from ..console import mount as mount_console

    mount_console(app)  # the operator console at /console (issue 9)
    app.add_middleware(
        Guard,
        max_body=max_body,
        http=m.HttpMetrics(registry),
    )
    return app


# ------------------------------------------------------------------------ errors


def _unauthenticated(exc: Unauthenticated) -> Problem:
    challenge = 'Bearer realm="orderwatch"'
    if exc.invalid_token:
        challenge += ', error="invalid_token"'
    return Problem(401, "unauthorized", exc.detail, headers={"WWW-Authenticate": challenge})


def _http_error(exc: StarletteHTTPException) -> Problem:
    detail: str | None = str(exc.detail)
    if detail == problems.body(Problem(exc.status_code), None)["title"]:
        detail = None  # Starlette's default detail is just the status phrase again
    return Problem(exc.status_code, None, detail, headers=dict(exc.headers or {}))


def _request_invalid(exc: RequestValidationError) -> Problem:
    errors = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"]]
        if loc and loc[0] in ("query", "path", "body", "header"):
            loc = loc[1:]
        message = str(e["msg"]).removeprefix("Value error, ")
        errors.append(FieldError(".".join(loc) or "(request)", message))
    return Problem(422, "validation", "the request is not valid", errors=errors)


_PROBLEMS: list[tuple[type[Exception], Callable[[Any], Problem]]] = [
    (Problem, lambda e: e),
    (Unauthenticated, _unauthenticated),
    (Forbidden, lambda e: Problem(403, "forbidden", e.detail)),
    (
        ValidationFailed,
        lambda e: Problem(422, "validation", "the order is not valid", errors=e.errors),
    ),
    (OrderNotFound, lambda e: Problem(404, "not-found", str(e), order_no=e.order_no)),
    (ActionRefused, lambda e: Problem(409, "action-refused", str(e))),
    (Conflict, lambda e: Problem(409, "conflict", str(e), fields=e.fields)),
    (OrderwatchError, lambda e: Problem(503, "not-ready", str(e))),
    (StarletteHTTPException, _http_error),
    (RequestValidationError, _request_invalid),
]


def _install_error_handlers(app: FastAPI) -> None:
    def as_problem(make: Callable[[Any], Problem]) -> Callable[[Request, Exception], Response]:
        def handler(request: Request, exc: Exception) -> Response:
            return problems.response(make(exc), request.url.path)

        return handler

    def internal(request: Request, exc: Exception) -> Response:
        log.error("api_internal_error", path=request.url.path, error=repr(exc))
        return problems.response(Problem(500, "internal", "see the server log"), request.url.path)

    for kind, make in _PROBLEMS:
        app.add_exception_handler(kind, as_problem(make))
    app.add_exception_handler(Exception, internal)


# ------------------------------------------------------------------------ orders


@router.post(
    f"{PREFIX}/orders",
    operation_id="submitOrder",
    status_code=201,
    response_model=OrderOut,
    summary="Submit an order",
    description="Stores the order as PENDING, due now. The same order_no with the same "
    "body again answers 200 with the stored order; with another body, 409 naming the "
    "fields that differ. Nothing is written on any error. Role: platform.",
    tags=["orders"],
    responses={
        201: {"description": "Stored.", "links": _ORDER_LINKS},
        200: {
            "model": OrderOut,
            "description": "Already stored with the same body.",
            "links": _ORDER_LINKS,
        },
        **_errors(*AUTH_ERRORS, 409, *BODY_ERRORS),
    },
    openapi_extra=_body_doc("OrderIn", example=ORDER_EXAMPLE),
)
async def submit_order(request: Request, caller: Creator) -> Response:
    ctx = _ctx(request)
    new = await _read_order(request, ctx.service)
    try:
        result = await ctx.service.submit([new], actor=caller.name)
    except IntegrityError:
        # Two API processes on a shared database may race on the unique order_no: the
        # loser's insert fails, and a second look finds the winner's row (same body → 200,
        # another body → 409).
        result = await ctx.service.submit([new], actor=caller.name)
    if result.created:
        ctx.poke()
        order = result.created[0]
        return _json(
            order_view(order, mask=caller.masked),
            201,
            {"Location": f"{PREFIX}/orders/{order.order_no}"},
        )
    return _json(order_view(result.existing[0], mask=caller.masked), 200)


async def _read_order(request: Request, service: Service) -> NewOrder:
    raw = await _raw_body(request, required=True)
    assert raw is not None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(
            400,
            "malformed",
            "the body is not valid UTF-8 JSON",
            errors=[FieldError("(body)", str(exc))],
        ) from None
    if not isinstance(data, dict):
        raise Problem(
            422,
            "validation",
            "the body must be a JSON object",
            errors=[FieldError("(body)", "must be a JSON object")],
        )
    strict = _strict_order_types(data)
    try:
        new = service.validate(data)
    except ValidationFailed as exc:
        raise ValidationFailed(_merge_errors(exc.errors, strict)) from None
    if strict:
        raise ValidationFailed(strict)
    return new


@router.get(
    f"{PREFIX}/orders/{{order_no}}",
    operation_id="getOrder",
    response_model=OrderDetailOut,
    summary="One order, with its timeline",
    description="Status, Chinese label, reason and its text, vendor order id, logistics, "
    "counters, next query time, the timeline (unless ?events=false) and the customer "
    "notifications with their delivery state. Roles: all.",
    tags=["orders"],
    responses=_errors(*AUTH_ERRORS, 404, 422),
)
async def get_order(
    request: Request,
    order_no: OrderNo,
    caller: Reader,
    events: Annotated[bool, Query(description="Include the timeline.")] = True,
) -> Response:
    detail = await _ctx(request).service.get(order_no)
    view = order_view(detail.order, events=detail.events if events else None, mask=caller.masked)
    view["notifications"] = [notification_view(n) for n in detail.notifications]
    return _json(view)


@router.get(
    f"{PREFIX}/orders",
    operation_id="listOrders",
    response_model=OrderPage,
    summary="List orders, newest first",
    description="Filters combine with AND. Pages follow `next_cursor`; a page is cut by the "
    "order's id, so orders arriving or changing meanwhile neither repeat nor shift the "
    "pages. Roles: all.",
    tags=["orders"],
    responses=_errors(*AUTH_ERRORS, 422),
)
async def list_orders(
    request: Request,
    caller: Reader,
    *,
    status: Status | None = None,
    reason: Reason | None = None,
    vendor: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=f"^{_PRINTABLE}*$")
    ] = None,
    customer_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=f"^{_PRINTABLE}*$")
    ] = None,
    created_after: Annotated[Rfc3339 | None, Query(description="RFC 3339; inclusive.")] = None,
    created_before: Annotated[Rfc3339 | None, Query(description="RFC 3339; exclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None,
        Query(pattern=r"^[A-Za-z0-9_-]{1,200}$", description="next_cursor of the last page."),
    ] = None,
) -> Response:
    flt = OrderFilter(
        status=status.value if status else None,
        reason=reason.value if reason else None,
        vendor=vendor,
        customer_id=customer_id,
        created_after=created_after,
        created_before=created_before,
    )
    before = decode_cursor(cursor, flt) if cursor else None
    found = await _ctx(request).service.list(flt, limit=limit + 1, before_id=before)
    page = found[:limit]
    following = encode_cursor(page[-1].id, flt) if len(found) > limit else None
    return _json(
        {"items": [order_view(o, mask=caller.masked) for o in page], "next_cursor": following}
    )


# ------------------------------------------------------------------------ actions

_ACTION_ERRORS = _errors(*AUTH_ERRORS, 404, 409, *BODY_ERRORS)


@router.post(
    f"{PREFIX}/orders/bulk/retry",
    operation_id="bulkRetry",
    response_model=BulkOut,
    summary="Retry every order a filter matches",
    description="Counts first with dry_run. Orders whose status does not allow a retry are "
    "counted in `matched`, not in `changed`. Role: operator.",
    tags=["operator actions"],
    responses=_errors(*AUTH_ERRORS, *BODY_ERRORS),
    openapi_extra=_body_doc("BulkRetryIn"),
)
async def bulk_retry(request: Request, caller: Operator) -> Response:
    return await _bulk(request, caller, "retry")


@router.post(
    f"{PREFIX}/orders/bulk/resolve",
    operation_id="bulkResolve",
    response_model=BulkOut,
    summary="Resolve every order a filter matches",
    description="Needs `status` and `note`. Role: operator.",
    tags=["operator actions"],
    responses=_errors(*AUTH_ERRORS, *BODY_ERRORS),
    openapi_extra=_body_doc("BulkResolveIn"),
)
async def bulk_resolve(request: Request, caller: Operator) -> Response:
    return await _bulk(request, caller, "resolve")


async def _bulk(request: Request, caller: Caller, action: str) -> Response:
    ctx = _ctx(request)
    body: BulkRetryIn | BulkResolveIn
    if action == "resolve":
        body = await read_model(request, BulkResolveIn)
        status: str | None = body.status
    else:
        body = await read_model(request, BulkRetryIn)
        status = None
    f = body.filter
    if not f.model_fields_set:
        raise Problem(
            422,
            "validation",
            "an empty filter would match every order",
            errors=[FieldError("filter", "name at least one field")],
        )
    nulls = sorted(name for name in f.model_fields_set if getattr(f, name) is None)
    if nulls:
        raise Problem(
            422,
            "validation",
            "a filter key is either given or left out",
            errors=[FieldError(f"filter.{n}", "must not be null; leave it out") for n in nulls],
        )
    flt = OrderFilter(
        status=f.status.value if f.status else None,
        reason=f.reason.value if f.reason else None,
        vendor=f.vendor,
        customer_id=f.customer_id,
        created_after=f.created_after,
        created_before=f.created_before,
    )
    result = await ctx.service.actions.bulk(
        action, flt, dry_run=body.dry_run, actor=caller.name, note=body.note, status=status
    )
    if action == "retry" and result.changed and not body.dry_run:
        ctx.poke()
    return _json({"matched": result.matched, "changed": result.changed, "dry_run": body.dry_run})


@router.post(
    f"{PREFIX}/orders/{{order_no}}/retry",
    operation_id="retryOrder",
    response_model=ActionOut,
    summary="Retry a FAILED order",
    description="UNPAID, CANCELLED, PLACE_UNREACHABLE → placed again with the same order_no "
    "(`retry_mode: place`); VENDOR_FAILED, NOT_FOUND_AT_VENDOR, MAX_POLLS_EXCEEDED, "
    "DEADLINE_EXCEEDED, INVALID_STATE → polled again with fresh counters (`poll`); "
    "PLACE_REJECTED and orders that are not FAILED → 409. Role: operator.",
    tags=["operator actions"],
    responses=_ACTION_ERRORS,
    openapi_extra=_body_doc("NoteIn", required=False),
)
async def retry(request: Request, order_no: OrderNo, caller: Operator) -> Response:
    ctx = _ctx(request)
    body = await read_model(request, NoteIn, required=False)
    result = await ctx.service.actions.retry(order_no, actor=caller.name, note=body.note)
    ctx.poke()
    return _json(_action_view(result, caller))


@router.post(
    f"{PREFIX}/orders/{{order_no}}/resolve",
    operation_id="resolveOrder",
    response_model=ActionOut,
    summary="Close a non-final order by hand",
    description="As SUCCEEDED (reason null) or FAILED (RESOLVED_BY_OPERATOR); the note is "
    "required. 409 when the order is final, or SENT with a request in flight. "
    "Role: operator.",
    tags=["operator actions"],
    responses=_ACTION_ERRORS,
    openapi_extra=_body_doc("ResolveIn"),
)
async def resolve(request: Request, order_no: OrderNo, caller: Operator) -> Response:
    body = await read_model(request, ResolveIn)
    result = await _ctx(request).service.actions.resolve(
        order_no, status=body.status, note=body.note, actor=caller.name
    )
    return _json(_action_view(result, caller))


@router.post(
    f"{PREFIX}/orders/{{order_no}}/cancel",
    operation_id="cancelOrder",
    response_model=ActionOut,
    summary="Cancel a PENDING order",
    description="Only before it is placed; 409 otherwise. Role: operator.",
    tags=["operator actions"],
    responses=_ACTION_ERRORS,
    openapi_extra=_body_doc("NoteIn", required=False),
)
async def cancel(request: Request, order_no: OrderNo, caller: Operator) -> Response:
    body = await read_model(request, NoteIn, required=False)
    result = await _ctx(request).service.actions.cancel(order_no, actor=caller.name, note=body.note)
    return _json(_action_view(result, caller))


@router.post(
    f"{PREFIX}/orders/{{order_no}}/payment",
    operation_id="updatePayment",
    response_model=ActionOut,
    summary="Record a payment update",
    description="PAID or UNPAID; a PENDING order is looked at again at once (see "
    "polling.payment_grace). Roles: platform, operator.",
    tags=["orders"],
    responses=_ACTION_ERRORS,
    openapi_extra=_body_doc("PaymentIn"),
)
async def payment(request: Request, order_no: OrderNo, caller: Payer) -> Response:
    ctx = _ctx(request)
    body = await read_model(request, PaymentIn)
    result = await ctx.service.actions.payment(order_no, body.payment_status, actor=caller.name)
    if result.order.status is Status.PENDING:
        ctx.poke()
    return _json(_action_view(result, caller))


@router.post(
    f"{PREFIX}/orders/{{order_no}}/notifications/{{notification_id}}/redeliver",
    operation_id="redeliverNotification",
    response_model=NotificationOut,
    summary="Queue a customer notification again",
    description="Whatever its state (delivered, failed, skipped): it is sent again with the "
    "same id and body. Role: operator.",
    tags=["operator actions"],
    responses=_errors(*AUTH_ERRORS, 404, 422),
)
async def redeliver(
    request: Request,
    order_no: OrderNo,
    notification_id: Annotated[int, Path(ge=1, le=2**62)],
    caller: Operator,
) -> Response:
    service = _ctx(request).service
    row = await service.store.redeliver(order_no, notification_id, now=service.clock.now())
    log.info(
        "notification_redelivered", order_no=order_no, outbox_id=notification_id, caller=caller.name
    )
    return _json(notification_view(row))


# ------------------------------------------------------------------------ vendors, stats


@router.post(
    f"{PREFIX}/vendors/{{name}}/pause",
    operation_id="pauseVendor",
    response_model=VendorOut,
    summary="Pause a vendor",
    description="Its orders keep their schedule and wait, visibly; nothing fails because of "
    "the pause. Role: operator.",
    tags=["vendors"],
    responses=_errors(*AUTH_ERRORS, 404, *BODY_ERRORS),
    openapi_extra=_body_doc("PauseIn", required=False),
)
async def pause_vendor(request: Request, name: VendorName, caller: Operator) -> Response:
    service = _ctx(request).service
    body = await read_model(request, PauseIn, required=False)
    if name not in service.settings.current.vendors:
        raise Problem(404, "not-found", f"no vendor {name!r} is configured")
    changed = await service.store.pause_vendor(
        name, now=service.clock.now(), actor=caller.name, note=body.note
    )
    log.info("vendor_paused", vendor=name, caller=caller.name, changed=changed)
    at = (await service.store.paused_vendors()).get(name)
    return _json(
        {
            "vendor": name,
            "paused": True,
            "changed": changed,
            "paused_at": rfc3339(at) if at else None,
        }
    )


@router.post(
    f"{PREFIX}/vendors/{{name}}/resume",
    operation_id="resumeVendor",
    response_model=VendorOut,
    summary="Resume a paused vendor",
    description="Its due orders are claimed again at once. Role: operator.",
    tags=["vendors"],
    responses=_errors(*AUTH_ERRORS, 404, 422),
)
async def resume_vendor(request: Request, name: VendorName, caller: Operator) -> Response:
    ctx = _ctx(request)
    service = ctx.service
    paused = await service.store.paused_vendors()
    if name not in service.settings.current.vendors and name not in paused:
        raise Problem(404, "not-found", f"no vendor {name!r} is configured or paused")
    changed = await service.store.resume_vendor(name)
    log.info("vendor_resumed", vendor=name, caller=caller.name, changed=changed)
    if changed:
        ctx.poke()
    return _json({"vendor": name, "paused": False, "changed": changed, "paused_at": None})


@router.get(
    f"{PREFIX}/stats",
    operation_id="getStats",
    response_model=StatsOut,
    summary="Counts by status, reason and vendor; due backlog; paused vendors; open circuits",
    description="Roles: all.",
    tags=["stats"],
    responses=_errors(*AUTH_ERRORS, 422),
)
async def stats(request: Request, caller: Reader) -> Response:
    del caller
    service = _ctx(request).service
    now = service.clock.now()
    counts = await service.store.counts(now=now)
    paused = await service.store.paused_vendors()
    circuits = await service.store.open_circuits(now=now)
    return _json(
        {
            "by_status": {s.value: counts.by_status.get(s.value, 0) for s in Status},
            "by_reason": dict(sorted(counts.by_reason.items())),
            "by_vendor": {v: dict(sorted(c.items())) for v, c in sorted(counts.by_vendor.items())},
            "due": counts.due,
            "paused_vendors": {v: rfc3339(t) for v, t in sorted(paused.items())},
            "circuit_open": {v: rfc3339(t) for v, t in sorted(circuits.items())},
            "at": rfc3339(now),
        }
    )


# ------------------------------------------------------------------------ health, metrics, docs


@router.get(
    "/healthz",
    operation_id="healthz",
    response_model=HealthOut,
    tags=["health"],
    summary="The process is up",
)
async def healthz() -> Response:
    return _json({"status": "ok"})


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=HealthOut,
    tags=["health"],
    summary="The database answers and its schema is current",
    responses=_errors(503),
)
async def readyz(request: Request) -> Response:
    revision = await _ctx(request).ready.check()
    return _json({"status": "ready", "schema_revision": revision})


@router.get(
    "/metrics",
    operation_id="metrics",
    tags=["health"],
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus exposition format 0.0.4; names start with orderwatch_.",
        }
    },
)
async def metrics(request: Request) -> Response:
    ctx = _ctx(request)
    now = ctx.service.clock.now()
    counts = await ctx.service.store.counts(now=now)
    paused = await ctx.service.store.paused_vendors()
    circuits = await ctx.service.store.open_circuits(now=now)
    snapshot = m.Snapshot(
        by_status=counts.by_status,
        by_vendor=counts.by_vendor,
        by_reason=counts.by_reason,
        due=counts.due,
        paused=list(paused),
        circuit_open=list(circuits),
    )
    return Response(
        m.exposition(ctx.registry, snapshot),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


# The same probes under the API prefix too: DESIGN §7 lists them with the API's paths, and
# both spellings are in use; only the root ones are in the OpenAPI document.
router.add_api_route(f"{PREFIX}/healthz", healthz, methods=["GET"], include_in_schema=False)
router.add_api_route(f"{PREFIX}/readyz", readyz, methods=["GET"], include_in_schema=False)
router.add_api_route(f"{PREFIX}/metrics", metrics, methods=["GET"], include_in_schema=False)


@router.get(f"{PREFIX}/docs", include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    from .docs import render

    return HTMLResponse(render(request.app.openapi()))


class _Readiness:
    """``/readyz``: the database answers and its schema is at the head revision."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._head: str | None = None

    async def check(self) -> str:
        engine = getattr(self.service.store, "engine", None)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                if engine is None:  # a store without SQL: it answers, that is all we learn
                    await self.service.store.paused_vendors()
                    return "n/a"
                return await asyncio.to_thread(self._check_sql, engine)
        except TimeoutError:
            raise Problem(
                503, "not-ready", f"the database did not answer within {READY_TIMEOUT:g} s"
            ) from None
        except Problem:
            raise
        except Exception as exc:
            raise Problem(
                503, "not-ready", f"the database is unreachable: {type(exc).__name__}"
            ) from None

    def _check_sql(self, engine: Any) -> str:
        from ..store import migrate

        if self._head is None:
            self._head = migrate.head()
        current = migrate.current(engine)
        if current != self._head:
            raise Problem(
                503,
                "not-ready",
                f"schema revision {current or '(none)'} is not the current "
                f"{self._head}; run `orderwatch db upgrade`",
            )
        return current


_DESCRIPTION = """\
orderwatch takes redemption orders, places each with its goods vendor exactly once, polls
the vendor until the order ends, records why, and tells the customer.

**Auth.** `Authorization: Bearer <token>` with a token from `[[api.tokens]]`. Roles:
`platform` (submit orders, payment updates, read), `operator` (actions, read), `viewer`
(read; the recipient's phone and address masked). 401 without a known token, 403 for the
wrong role. `/healthz`, `/readyz` and `/metrics` need no token.

**Errors** are RFC 9457 `application/problem+json`; bad input lists each field in
`errors: [{"field", "message"}]`. Bodies over 1 MiB get 413.

**Times** are RFC 3339 UTC. JSON is UTF-8 with non-ASCII kept as is.
"""
