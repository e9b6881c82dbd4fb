"""The console's pages and form posts (issue 9), over the same service layer as the API.

Reads go through :class:`~orderwatch.service.Service` and the read-only queries of
:mod:`orderwatch.store.reports`; actions through :class:`~orderwatch.service.Actions`,
with the logged-in caller's name on their events. Every POST needs the session's CSRF
token; operator actions need the ``operator`` role and are not shown to anyone else.
Each action asks for confirmation: in the browser (console.js) and, without script, on a
confirmation page — a POST without ``confirmed=yes`` only shows what it would do.
"""

from __future__ import annotations

import csv
import io
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Request
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.staticfiles import StaticFiles

from ..api.auth import ACT, Caller, Role, Unauthenticated
from ..errors import OrderNotFound
from ..lifecycle import ActionRefused, Event
from ..log import get_logger
from ..order import Order
from ..statuses import Reason, Status
from ..store import reports
from ..store.base import OrderFilter
from ..views import mask_address, mask_phone, order_view, rfc3339
from . import charts
from .session import COOKIE, LIFETIME, LOGIN_COOKIE, Session, Sessions, csrf_ok

if TYPE_CHECKING:
    from ..api.app import ApiContext
    from ..service import Service

__all__ = ["PREFIX", "mount"]

log = get_logger("orderwatch.console")

PREFIX = "/console"
PER_PAGE = 50
OVERVIEW_TTL = 5.0  # seconds an overview is reused (several operators refreshing)
HEALTH_MINUTES = 30

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make Origin "null"
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class _Page(Exception):
    """Stop a handler and answer with this response (a redirect to login, a 403 page)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass
class ConsoleState:
    sessions: Sessions
    env: Environment
    overview: tuple[float, dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------ plumbing


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def _service(request: Request) -> Service:
    return _ctx(request).service


async def _read(request: Request, fn: Callable[[Any], Any]) -> Any:
    store = _service(request).store
    read = getattr(store, "read", None)
    if read is None:  # a store without SQL has no reports
        raise _Page(_error_page(request, 503, "this store has no console queries"))
    return await read(fn)


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def _render(
    request: Request,
    template: str,
    status: int = 200,
    session: Session | None = None,
    **context: Any,
) -> HTMLResponse:
    page = _state(request).env.get_template(template)
    html = page.render(
        caller=session.caller if session else None,
        csrf=session.csrf if session else None,
        can_act=bool(session and session.caller.role in ACT),
        prefix=PREFIX,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=dict(_SECURITY_HEADERS))


def _error_page(
    request: Request, status: int, message: str, session: Session | None = None
) -> HTMLResponse:
    return _render(request, "error.html", status, session, status_code=status, message=message)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def _session(request: Request) -> Session:
    """The logged-in session, or a redirect to the login page (a 403 for a POST)."""
    session = _state(request).sessions.get(request.cookies.get(COOKIE))
    if session is None:
        if request.method != "GET":
            raise _Page(
                _error_page(request, 403, "not logged in, or the session ended; log in again")
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise _Page(_redirect(f"{PREFIX}/login?" + urlencode({"next": target})))
    request.scope["orderwatch.caller"] = session.caller.name  # for the access log
    return session


def _same_origin(request: Request) -> bool:
    """A browser's Origin header, when it sends one, names this host."""
    origin = request.headers.get("origin")
    if not origin:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v.strip() for k, v in form.items() if isinstance(v, str)}


async def _posted(
    request: Request, allowed: frozenset[Role] | None = None
) -> tuple[Session, dict[str, str]]:
    """A POST's session and form, after the CSRF token (and the role, when given)."""
    session = _session(request)
    form = await _form(request)
    if not _same_origin(request) or not csrf_ok(session.csrf, form.get("csrf")):
        log.warning("console_csrf_refused", caller=session.caller.name, path=request.url.path)
        raise _Page(
            _error_page(
                request,
                403,
                "the form's CSRF token is missing or wrong; reload the page and try again",
                session,
            )
        )
    if allowed is not None and session.caller.role not in allowed:
        wanted = " or ".join(sorted(allowed))
        raise _Page(
            _error_page(
                request,
                403,
                f"{session.caller.name!r} has role {session.caller.role}; this needs {wanted}",
                session,
            )
        )
    return session, form


# ------------------------------------------------------------------------ formatting


def _show(value: Any) -> str:
    """A detail value as text: containers as compact JSON, the rest as they are."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return "" if value is None else str(value)


def _dt(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value.replace("T", " ").removesuffix("Z")
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short(value: datetime | None) -> str:
    """``11-26 04:30`` (UTC), for the orders table."""
    return "—" if value is None else value.astimezone(UTC).strftime("%m-%d %H:%M")


def _ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "—"
    seconds = (now - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 90:
        text = f"{seconds:.0f} s"
    elif seconds < 5400:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 172800:
        text = f"{seconds / 3600:.1f} h"
    else:
        text = f"{seconds / 86400:.1f} d"
    return f"in {text}" if future else f"{text} ago"


_SECRET_KEY = re.compile(r"secret|sign|token|passw|authori|api_?key|^key$|cookie", re.I)
_PHONE_KEY = re.compile(r"phone|mobile|tel", re.I)
_MOBILE = re.compile(r"(?<!\d)(\+?86[- ]?)?1[3-9]\d{9}(?!\d)")


def mask_text(text: str, phone: str | None) -> str:
    """A free text with the recipient's phone and any mainland mobile number masked."""
    if phone and len(phone.strip()) >= 5:
        text = text.replace(phone.strip(), mask_phone(phone))
    return _MOBILE.sub(lambda m: mask_phone(m.group(0)), text)


def mask_detail(value: Any, phone: str | None) -> Any:
    """An event's detail with secrets hidden and phone numbers masked, for every role."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = str(k)
            if _SECRET_KEY.search(key):
                out[key] = "****"
            elif _PHONE_KEY.search(key) and isinstance(v, str):
                out[key] = mask_phone(v)
            else:
                out[key] = mask_detail(v, phone)
        return out
    if isinstance(value, list | tuple):
        return [mask_detail(v, phone) for v in value]
    if isinstance(value, str):
        return mask_text(value, phone)
    return value


def _event_row(event: Event, phone: str | None) -> dict[str, Any]:
    detail = mask_detail(event.detail, phone) if event.detail else None
    summary = []
    if event.outcome:
        summary.append(f"outcome {event.outcome}")
    if event.http_status is not None:
        summary.append(f"HTTP {event.http_status}")
    if event.vendor_code:
        summary.append(f"code {event.vendor_code}")
    if event.latency_ms is not None:
        summary.append(f"{event.latency_ms:.0f} ms")
    if event.attempt:
        summary.append(f"query #{event.attempt}")
    return {
        "at": _dt(event.at),
        "kind": event.kind,
        "from": event.from_status.value if event.from_status else None,
        "to": event.to_status.value if event.to_status else None,
        "reason": event.reason.value if event.reason else None,
        "summary": " · ".join(summary),
        "detail": detail,
        "actor": event.actor,
    }


# ------------------------------------------------------------------------ the filter


class _BadInput(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _parse_date(value: str, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _BadInput(field, "a date as YYYY-MM-DD") from None


@dataclass(frozen=True)
class Filter:
    """The orders page's query string, checked: what the search and bulk forms share."""

    q: str = ""
    field: str = "any"
    status: str = ""
    reason: str = ""
    vendor: str = ""
    date_from: str = ""
    date_to: str = ""
    sort: str = "created_desc"

    @classmethod
    def parse(cls, data: Mapping[str, str]) -> Filter:
        f = cls(
            q=data.get("q", "").strip()[:200],
            field=data.get("field", "any") or "any",
            status=data.get("status", ""),
            reason=data.get("reason", ""),
            vendor=data.get("vendor", "").strip()[:64],
            date_from=data.get("from", ""),
            date_to=data.get("to", ""),
            sort=data.get("sort", "created_desc") or "created_desc",
        )
        if f.field not in reports.SEARCH_FIELDS:
            raise _BadInput("field", "one of " + ", ".join(reports.SEARCH_FIELDS))
        if f.status and f.status not in Status.__members__:
            raise _BadInput("status", "one of " + ", ".join(Status))
        if f.reason and f.reason not in Reason.__members__:
            raise _BadInput("reason", "one of " + ", ".join(Reason))
        if f.sort not in reports.SORTS:
            raise _BadInput("sort", "one of " + ", ".join(reports.SORTS))
        start, end = _parse_date(f.date_from, "from"), _parse_date(f.date_to, "to")
        if start and end and end < start:
            raise _BadInput("to", "must not be before 'from'")
        return f

    def _bounds(self) -> tuple[datetime | None, datetime | None]:
        start = _parse_date(self.date_from, "from")
        end = _parse_date(self.date_to, "to")
        after = datetime(start.year, start.month, start.day, tzinfo=UTC) if start else None
        before = (
            datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1) if end else None
        )
        return after, before

    def search(self) -> reports.Search:
        after, before = self._bounds()
        return reports.Search(
            q=self.q or None,
            field=self.field,  # type: ignore[arg-type]  # checked in parse
            status=self.status or None,
            reason=self.reason or None,
            vendor=self.vendor or None,
            created_after=after,
            created_before=before,
            sort=self.sort,
        )

    def order_filter(self) -> OrderFilter:
        """The API's bulk filter; a search term other than a customer id cannot be one."""
        if self.q and self.field != "customer_id":
            raise _BadInput(
                "q",
                "bulk actions take status, reason, vendor, dates and customer_id; "
                "search by customer_id or clear the search term",
            )
        after, before = self._bounds()
        flt = OrderFilter(
            status=self.status or None,
            reason=self.reason or None,
            vendor=self.vendor or None,
            customer_id=self.q or None,
            created_after=after,
            created_before=before,
        )
        if flt == OrderFilter():
            raise _BadInput("filter", "an empty filter would match every order; name one field")
        return flt

    def params(self, **changes: str | int) -> str:
        values: dict[str, str | int] = {
            "q": self.q,
            "field": self.field,
            "status": self.status,
            "reason": self.reason,
            "vendor": self.vendor,
            "from": self.date_from,
            "to": self.date_to,
            "sort": self.sort,
        }
        values.update(changes)
        defaults = {"field": "any", "sort": "created_desc", "page": 1}
        return urlencode(
            {k: v for k, v in values.items() if v not in ("", None) and defaults.get(k) != v}
        )

    def hidden(self) -> dict[str, str]:
        """The filter as hidden form fields."""
        return {
            "q": self.q,
            "field": self.field,
            "status": self.status,
            "reason": self.reason,
            "vendor": self.vendor,
            "from": self.date_from,
            "to": self.date_to,
        }


# ------------------------------------------------------------------------ the router

router = APIRouter(include_in_schema=False)


@router.get(PREFIX)
@router.get(f"{PREFIX}/")
async def overview(request: Request) -> Response:
    session = _session(request)
    service = _service(request)
    state = _state(request)
    cached = state.overview
    if cached is None or time.monotonic() - cached[0] > OVERVIEW_TTL:
        data = await _overview_data(request, service)
        state.overview = (time.monotonic(), data)
    else:
        data = cached[1]
    return _render(request, "overview.html", session=session, **data)


async def _overview_data(request: Request, service: Service) -> dict[str, Any]:
    now = service.clock.now()
    counts = await service.store.counts(now=now)
    paused = await service.store.paused_vendors()
    circuits = await service.store.open_circuits(now=now)

    def work(conn: Any) -> dict[str, Any]:
        return {
            "day": reports.cohort(conn, now=now, span=timedelta(hours=24), buckets=24),
            "week": reports.cohort(conn, now=now, span=timedelta(days=7), buckets=7),
            "ttf": reports.time_to_final(conn, now=now, span=timedelta(days=7)),
            "oldest_due": reports.oldest_due(conn, now=now),
            "health": reports.vendor_health(conn, now=now, minutes=HEALTH_MINUTES),
        }

    r = await _read(request, work)
    day: reports.Cohort = r["day"]
    week: reports.Cohort = r["week"]
    health: reports.Health = r["health"]
    status_rows = [
        (f"{s.label} {s.value}", counts.by_status.get(s.value, 0), s.value) for s in Status
    ]
    reason_rows = [
        (reason.value, counts.by_reason.get(reason.value, 0), "reason")
        for reason in Reason
        if counts.by_reason.get(reason.value)
    ]
    hours = [f"{(s + timedelta(hours=1)).astimezone(UTC):%H}" for s in day.starts]
    days = [f"{s.astimezone(UTC) + timedelta(days=1):%m-%d}" for s in week.starts]
    zero24, zero7 = [0] * 24, [0] * 7
    reasons = []
    for reason in Reason:
        d = day.by_reason.get(reason.value, zero24)
        w = week.by_reason.get(reason.value, zero7)
        if sum(w) or counts.by_reason.get(reason.value):
            reasons.append(
                {
                    "code": reason.value,
                    "text": reason.text,
                    "total": counts.by_reason.get(reason.value, 0),
                    "day": sum(d),
                    "week": sum(w),
                    "spark_day": charts.sparkline(d, label=f"{reason.value} 24 h"),
                    "spark_week": charts.sparkline(w, width=90, label=f"{reason.value} 7 d"),
                }
            )
    per_minute = health.per_minute
    full = per_minute[:-1] or per_minute  # the current minute is not over yet
    vendors = []
    names = sorted(
        set(service.settings.current.vendors) | set(health.vendors) | set(paused) | set(circuits)
    )
    for name in names:
        h = health.vendors.get(name) or reports.VendorHealth(name)
        p95 = h.p95_ms
        vendors.append(
            {
                "name": name,
                "calls": h.calls,
                "error_rate": f"{h.error_rate * 100:.1f}%" if h.calls else "—",
                "bad": h.calls and h.error_rate >= 0.2,
                "p95": f"{p95:.0f} ms" if p95 is not None else "—",
                "maintenance": h.maintenance,
                "last_maintenance": _dt(h.last_maintenance) if h.last_maintenance else None,
                "paused": _dt(paused[name]) if name in paused else None,
                "circuit_until": _dt(circuits[name]) if name in circuits else None,
                "orders": sum(counts.by_vendor.get(name, {}).values()),
            }
        )
    return {
        "now": _dt(now),
        "total": sum(counts.by_status.values()),
        "status_chart": charts.hbars(status_rows),
        "reason_chart": charts.hbars(reason_rows),
        "status_counts": [(s, counts.by_status.get(s.value, 0)) for s in Status],
        "day_chart": charts.stacked_columns(
            hours, {s.value: day.by_status.get(s.value, zero24) for s in Status}, every=2
        ),
        "week_chart": charts.stacked_columns(
            days, {s.value: week.by_status.get(s.value, zero7) for s in Status}
        ),
        "day_created": sum(sum(v) for v in day.by_status.values()),
        "week_created": sum(sum(v) for v in week.by_status.values()),
        "reasons": reasons,
        "statuses": list(Status),
        "due": counts.due,
        "oldest_due": _ago(r["oldest_due"], now) if r["oldest_due"] else None,
        "per_minute_now": full[-1] if full else 0,
        "per_minute_avg": f"{sum(full) / len(full):.1f}" if full else "0",
        "per_minute_chart": charts.sparkline(
            per_minute, width=300, height=40, label="vendor calls per minute"
        ),
        "health_minutes": HEALTH_MINUTES,
        "health_capped": health.capped,
        "vendors": vendors,
        "ttf_chart": charts.stacked_columns(reports.TTF_LABELS, r["ttf"]),
        "ttf_total": sum(sum(v) for v in r["ttf"].values()),
    }


# ------------------------------------------------------------------------ login


def _safe_next(value: str | None) -> str:
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX


@router.get(f"{PREFIX}/login")
async def login_page(request: Request) -> Response:
    return _login_form(request, request.query_params.get("next"))


def _login_form(
    request: Request, target: str | None, *, error: str | None = None, status: int = 200
) -> Response:
    nonce = secrets.token_urlsafe(32)
    response = _render(
        request,
        "login.html",
        status,
        login_csrf=nonce,
        next=_safe_next(target),
        error=error,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=900,
        path=f"{PREFIX}/login",
        secure=_https(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.post(f"{PREFIX}/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    if not _same_origin(request) or not csrf_ok(
        request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf")
    ):
        return _error_page(
            request, 403, "the login form's CSRF token is missing or wrong; reload the page"
        )
    token = form.get("token", "")
    try:
        caller = _ctx(request).tokens.identify(f"Bearer {token}")
    except Unauthenticated:
        log.info("console_login_refused")
        return _login_form(request, form.get("next"), error="unknown token · 令牌无效", status=401)
    state = _state(request)
    state.sessions.set_tokens(_service(request).settings.current.api.tokens)
    session_id, _ = state.sessions.create(caller, token)
    log.info("console_login", caller=caller.name, role=caller.role)
    response = _redirect(_safe_next(form.get("next")))
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=int(LIFETIME),
        path=PREFIX,
        secure=_https(request),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
    return response


@router.post(f"{PREFIX}/logout")
async def logout(request: Request) -> Response:
    session, _ = await _posted(request)
    _state(request).sessions.end(request.cookies.get(COOKIE))
    log.info("console_logout", caller=session.caller.name)
    response = _redirect(f"{PREFIX}/login")
    response.delete_cookie(
        COOKIE, path=PREFIX, secure=_https(request), httponly=True, samesite="strict"
    )
    return response


# ------------------------------------------------------------------------ orders


def _row(order: Order, caller: Caller) -> dict[str, Any]:
    logistics = order.logistics or {}
    return {
        "order_no": order.order_no,
        "status": order.status.value,
        "status_label": order.status.label,
        "reason": order.reason.value if order.reason else None,
        "vendor": order.vendor,
        "vendor_order_id": order.vendor_order_id,
        "tracking_no": logistics.get("tracking_no"),
        "customer_id": order.customer_id,
        "points": order.points,
        "created_at": _short(order.created_at),
        "updated_at": _short(order.updated_at),
        "next_run_at": _short(order.next_run_at),
        "recipient": order.recipient.name,
        "masked": caller.masked,
    }


@router.get(f"{PREFIX}/orders")
async def orders_page(request: Request) -> Response:
    session = _session(request)
    service = _service(request)
    params = dict(request.query_params)
    try:
        flt = Filter.parse(params)
        page = int(params.get("page", "1") or 1)
        if not 1 <= page <= 100_000:
            raise ValueError
    except _BadInput as exc:
        return _error_page(request, 422, f"{exc.field}: {exc.message}", session)
    except ValueError:
        return _error_page(request, 422, "page: a whole number from 1", session)
    search = flt.search()

    def work(conn: Any) -> tuple[int, list[Order]]:
        total = reports.count(conn, search)
        found = reports.search(conn, search, limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
        return total, found

    total, found = await _read(request, work)
    pages = max(1, -(-total // PER_PAGE))
    bulk_ok = True
    try:
        flt.order_filter()
    except _BadInput:
        bulk_ok = False
    return _render(
        request,
        "orders.html",
        session=session,
        f=flt,
        rows=[_row(o, session.caller) for o in found],
        total=total,
        page=page,
        pages=pages,
        statuses=list(Status),
        reasons=list(Reason),
        vendors=sorted(service.settings.current.vendors),
        sorts=_SORT_LABELS,
        fields=_FIELD_LABELS,
        bulk_ok=bulk_ok,
    )


_SORT_LABELS = {
    "created_desc": "最新创建 newest",
    "created_asc": "最早创建 oldest",
    "updated_desc": "最近更新 recently updated",
    "updated_asc": "最久未更新 least recently updated",
    "next_run_asc": "下次查询 next query",
    "points_desc": "积分 points",
}
_FIELD_LABELS = {
    "any": "全部 any",
    "order_no": "订单号 order_no",
    "customer_id": "客户 customer_id",
    "vendor_order_id": "权益商单号 vendor order id",
    "tracking_no": "运单号 tracking no",
}

CSV_COLUMNS = (
    "order_no",
    "status",
    "status_label",
    "reason",
    "reason_text",
    "vendor",
    "vendor_order_id",
    "vendor_status",
    "carrier",
    "tracking_no",
    "customer_id",
    "sku",
    "quantity",
    "points",
    "payment_status",
    "recipient_name",
    "recipient_phone",
    "recipient_address",
    "queries",
    "abnormal",
    "placements",
    "description",
    "created_at",
    "updated_at",
    "next_run_at",
)


def _cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would run as a formula gets a leading quote."""
    if value is None:
        return ""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def csv_row(order: Order, *, mask: bool) -> list[str]:
    logistics = order.logistics or {}
    r = order.recipient
    values: dict[str, Any] = {
        "order_no": order.order_no,
        "status": order.status.value,
        "status_label": order.status.label,
        "reason": order.reason.value if order.reason else None,
        "reason_text": order.reason.text if order.reason else None,
        "vendor": order.vendor,
        "vendor_order_id": order.vendor_order_id,
        "vendor_status": order.vendor_status,
        "carrier": logistics.get("carrier"),
        "tracking_no": logistics.get("tracking_no"),
        "customer_id": order.customer_id,
        "sku": order.sku,
        "quantity": order.quantity,
        "points": order.points,
        "payment_status": order.payment_status,
        "recipient_name": r.name,
        "recipient_phone": mask_phone(r.phone) if mask else r.phone,
        "recipient_address": mask_address(r.address) if mask else r.address,
        "queries": order.queries,
        "abnormal": order.abnormal,
        "placements": order.placements,
        "description": order.description,
        "created_at": rfc3339(order.created_at),
        "updated_at": rfc3339(order.updated_at),
        "next_run_at": rfc3339(order.next_run_at) if order.next_run_at else None,
    }
    return [_cell(values[c]) for c in CSV_COLUMNS]


@router.get(f"{PREFIX}/orders.csv")
async def orders_csv(request: Request) -> Response:
    session = _session(request)
    try:
        flt = Filter.parse(dict(request.query_params))
    except _BadInput as exc:
        return _error_page(request, 422, f"{exc.field}: {exc.message}", session)
    search = flt.search()
    mask = session.caller.masked
    store = _service(request).store
    log.info("console_csv_export", caller=session.caller.name, filter=flt.params())

    async def body() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        buffer.write("\ufeff")  # so spreadsheet programs read the Chinese labels as UTF-8
        writer.writerow(CSV_COLUMNS)
        before: int | None = None
        while True:
            chunk: list[Order] = await store.read(  # type: ignore[attr-defined]
                lambda conn, b=before: reports.chunk_before(conn, search, before_id=b)
            )
            for order in chunk:
                writer.writerow(csv_row(order, mask=mask))
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            if not chunk:
                return
            before = chunk[-1].id

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="orders-{stamp}.csv"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


_DONE = {
    "retry": "已重试 Retried",
    "resolve": "已处理 Resolved",
    "cancel": "已取消 Cancelled",
    "redeliver": "已重新投递 Notification queued again",
}


async def _order_page(
    request: Request,
    session: Session,
    order_no: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    try:
        detail = await _service(request).get(order_no)
    except OrderNotFound:
        return _error_page(request, 404, f"no order {order_no!r} · 查无此单", session)
    order = detail.order
    mask = session.caller.masked
    view = order_view(order, mask=mask)
    phone = order.recipient.phone
    logistics = order.logistics or {}
    trail = logistics.get("events") if isinstance(logistics.get("events"), list) else []
    done = request.query_params.get("done")
    now = _service(request).clock.now()
    return _render(
        request,
        "order.html",
        status,
        session,
        o=view,
        order=order,
        extra={
            "vendor_status": order.vendor_status,
            "unknown_streak": order.unknown_streak,
            "started_at": _dt(order.started_at),
            "placed_at": _dt(order.placed_at),
            "next_run_in": _ago(order.next_run_at, now) if order.next_run_at else None,
            "locked_until": _dt(order.locked_until) if order.locked_until else None,
        },
        logistics={k: v for k, v in logistics.items() if k != "events"},
        trail=[mask_detail(e, phone) for e in trail or []],
        events=[_event_row(e, phone) for e in reversed(detail.events)],
        notifications=[
            {
                "id": n.id,
                "type": n.event_type,
                "state": n.state,
                "attempts": n.attempts,
                "created_at": _dt(n.created_at),
                "next_attempt_at": _dt(n.next_attempt_at) if n.next_attempt_at else None,
                "delivered_at": _dt(n.delivered_at) if n.delivered_at else None,
                "last_error": mask_text(n.last_error, phone) if n.last_error else None,
            }
            for n in detail.notifications
        ],
        done=_DONE.get(done or ""),
        error=error,
        is_final=order.status.is_final,
        can_retry=order.status is Status.FAILED and order.reason is not Reason.PLACE_REJECTED,
        can_cancel=order.status is Status.PENDING,
        dt=_dt,
    )


@router.get(f"{PREFIX}/orders/{{order_no}}")
async def order_page(request: Request, order_no: str) -> Response:
    session = _session(request)
    return await _order_page(request, session, order_no)


def _confirm(
    request: Request, session: Session, *, title: str, action: str, form: dict[str, str]
) -> Response:
    """The no-script confirmation: the same form again, with ``confirmed=yes``."""
    fields = {k: v for k, v in form.items() if k not in ("csrf", "confirmed")}
    if "/notifications/" in action:
        back = action.split("/notifications/", maxsplit=1)[0]
    else:
        back = action.rsplit("/", 1)[0]
    return _render(
        request,
        "confirm.html",
        200,
        session,
        title=title,
        action=action,
        fields=fields,
        back=back,
    )


def _order_url(order_no: str, done: str) -> str:
    return f"{PREFIX}/orders/{quote(order_no, safe='')}?done={done}"


@router.post(f"{PREFIX}/orders/{{order_no}}/{{action}}")
async def order_action(request: Request, order_no: str, action: str) -> Response:
    session, form = await _posted(request, ACT)
    if action not in ("retry", "resolve", "cancel"):
        return _error_page(request, 404, f"no action {action!r}", session)
    actions = _service(request).actions
    actor = session.caller.name
    note = form.get("note") or None
    if form.get("confirmed") != "yes":
        titles = {
            "retry": f"重试 Retry {order_no}?",
            "resolve": f"人工处理 Resolve {order_no} as {form.get('status', '')}?",
            "cancel": f"取消 Cancel {order_no}?",
        }
        return _confirm(request, session, title=titles[action], action=request.url.path, form=form)
    try:
        if action == "retry":
            await actions.retry(order_no, actor=actor, note=note)
            _ctx(request).poke()
        elif action == "resolve":
            await actions.resolve(
                order_no, status=form.get("status", ""), note=note or "", actor=actor
            )
        else:
            await actions.cancel(order_no, actor=actor, note=note)
    except OrderNotFound:
        return _error_page(request, 404, f"no order {order_no!r} · 查无此单", session)
    except ActionRefused as exc:
        return await _order_page(request, session, order_no, error=str(exc), status=409)
    log.info("console_action", action=action, order_no=order_no, caller=actor)
    _state(request).overview = None
    return _redirect(_order_url(order_no, action))


@router.post(f"{PREFIX}/orders/{{order_no}}/notifications/{{notification_id}}/redeliver")
async def redeliver(request: Request, order_no: str, notification_id: str) -> Response:
    session, form = await _posted(request, ACT)
    if not notification_id.isdigit() or not 1 <= int(notification_id) <= 2**62:
        return _error_page(request, 422, "notification_id: a whole number from 1", session)
    if form.get("confirmed") != "yes":
        return _confirm(
            request,
            session,
            title=f"重新投递 Send notification {notification_id} of {order_no} again?",
            action=request.url.path,
            form=form,
        )
    service = _service(request)
    try:
        await service.store.redeliver(order_no, int(notification_id), now=service.clock.now())
    except OrderNotFound:
        return _error_page(
            request, 404, f"no notification {notification_id} for {order_no!r}", session
        )
    log.info(
        "notification_redelivered",
        order_no=order_no,
        outbox_id=int(notification_id),
        caller=session.caller.name,
    )
    return _redirect(_order_url(order_no, "redeliver"))


# ------------------------------------------------------------------------ bulk


@router.post(f"{PREFIX}/bulk")
async def bulk(request: Request) -> Response:
    """Step ``count``: a dry run shows how many orders match and would change; step
    ``apply`` (from that page, with ``confirmed=yes``) runs the action."""
    session, form = await _posted(request, ACT)
    action = form.get("action", "")
    if action not in ("retry", "resolve"):
        return _error_page(request, 422, "action: retry or resolve", session)
    try:
        flt = Filter.parse(form)
        order_filter = flt.order_filter()
    except _BadInput as exc:
        return _error_page(request, 422, f"{exc.field}: {exc.message}", session)
    note = form.get("note") or None
    status = form.get("resolve_status") or "FAILED"
    if status not in ("SUCCEEDED", "FAILED"):
        return _error_page(request, 422, "resolve_status: SUCCEEDED or FAILED", session)
    apply = form.get("step") == "apply" and form.get("confirmed") == "yes"
    actions = _service(request).actions
    actor = session.caller.name
    if apply and action == "resolve" and not note:
        apply = False  # back to the count page, which asks for the note
        error: str | None = "resolve needs a note saying why · 请填写处理说明"
    else:
        error = None
    try:
        result = await actions.bulk(
            action,
            order_filter,
            dry_run=not apply,
            actor=actor,
            # a count needs no note yet (the count page asks for it); a dry run writes nothing
            note=note if apply else note or "(count)",
            status=status if action == "resolve" else None,
        )
    except ActionRefused as exc:
        return _error_page(request, 409, str(exc), session)
    if apply:
        log.info(
            "console_bulk",
            action=action,
            caller=actor,
            matched=result.matched,
            changed=result.changed,
        )
        if action == "retry" and result.changed:
            _ctx(request).poke()
        _state(request).overview = None
    return _render(
        request,
        "bulk.html",
        session=session,
        action=action,
        f=flt,
        matched=result.matched,
        changed=result.changed,
        applied=apply,
        note=note or "",
        resolve_status=status,
        error=error,
    )


# ------------------------------------------------------------------------ mounting


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("orderwatch.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dt"] = _dt
    env.filters["path"] = lambda value: quote(str(value), safe="")
    env.filters["show"] = _show
    env.globals["Status"] = Status
    return env


def mount(app: FastAPI) -> None:
    """Serve the console under ``/console`` from the API app (``create_app`` calls this)."""
    ctx: ApiContext = app.state.ctx
    app.state.console = ConsoleState(
        sessions=Sessions(ctx.service.settings.current.api.tokens), env=_environment()
    )
    app.include_router(router)
    app.mount(
        f"{PREFIX}/static",
        StaticFiles(packages=[("orderwatch.console", "static")]),
        name="console-static",
    )

    async def page(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Page)
        return exc.response

    app.add_exception_handler(_Page, page)
