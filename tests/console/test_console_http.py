"""The console over HTTP (ASGI, no socket): login and sessions, roles, CSRF, confirmation,
search, CSV, masking, bulk count-then-apply, redeliver, the overview."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from consoletools import (
    NAMES,
    PHONE,
    SECRET,
    TOKENS,
    TRACKING,
    VENDOR_ORDER,
    Console,
    csrf_of,
    login,
)

from orderwatch.api import create_app
from orderwatch.console import routes
from orderwatch.statuses import Status

pytestmark = pytest.mark.filterwarnings("error")


def set_cookie_headers(r: httpx.Response) -> list[str]:
    return r.headers.get_list("set-cookie")


async def order_status(c: Console, order_no: str) -> tuple[str, str | None]:
    order = await c.service.store.get_order(order_no)
    assert order is not None
    return order.status.value, order.reason.value if order.reason else None


# ------------------------------------------------------------------------ login, sessions


async def test_pages_need_a_login(console: Console) -> None:
    r = await console.client.get("/console/orders?status=FAILED")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login?next=%2Fconsole%2Forders%3Fstatus%3DFAILED"
    r = await console.client.post("/console/orders/R-PENDING-1/cancel", data={"csrf": "x"})
    assert r.status_code == 403
    assert await order_status(console, "R-PENDING-1") == ("PENDING", None)


async def test_login_sets_a_strict_httponly_cookie_without_the_token(console: Console) -> None:
    c = console.client
    page = await c.get("/console/login")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    r = await c.post(
        "/console/login",
        data={"token": TOKENS["operator"], "csrf": csrf_of(page.text), "next": "/console/orders"},
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/console/orders"
    cookie = next(h for h in set_cookie_headers(r) if h.startswith("orderwatch_console="))
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "samesite", "path"} <= attrs
    assert "samesite=strict" in cookie.lower()
    assert "secure" not in attrs  # plain http on loopback: a browser would drop it
    assert TOKENS["operator"] not in cookie
    overview = await c.get("/console")
    assert NAMES["operator"] in overview.text
    for token in TOKENS.values():
        assert token not in overview.text


async def test_cookie_is_secure_over_https(console: Console) -> None:
    app = console.client._transport.app  # type: ignore[attr-defined]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://console.example"
    ) as c:
        page = await c.get("/console/login")
        r = await c.post(
            "/console/login",
            data={"token": TOKENS["viewer"], "csrf": csrf_of(page.text)},
        )
        assert r.status_code == 303
        cookie = next(h for h in set_cookie_headers(r) if h.startswith("orderwatch_console="))
        assert "secure" in {a.strip().lower() for a in cookie.split(";")}


async def test_a_wrong_token_or_a_login_without_csrf_is_refused(console: Console) -> None:
    c = console.client
    page = await c.get("/console/login")
    r = await c.post("/console/login", data={"token": "tok-nobody-000", "csrf": csrf_of(page.text)})
    assert r.status_code == 401
    assert "unknown token" in r.text
    assert "tok-nobody-000" not in r.text
    assert not any(h.startswith("orderwatch_console=") for h in set_cookie_headers(r))
    r = await c.post("/console/login", data={"token": TOKENS["operator"]})
    assert r.status_code == 403
    assert not any(h.startswith("orderwatch_console=") for h in set_cookie_headers(r))
    assert (await c.get("/console")).status_code == 303


async def test_login_ignores_an_outside_next(console: Console) -> None:
    c = console.client
    page = await c.get("/console/login")
    r = await c.post(
        "/console/login",
        data={"token": TOKENS["viewer"], "csrf": csrf_of(page.text), "next": "//evil.example/"},
    )
    assert r.headers["location"] == "/console"


async def test_logout_ends_the_session(console: Console) -> None:
    c = console.client
    csrf = await login(c, "operator")
    session = c.cookies.get("orderwatch_console")
    assert session
    r = await c.post("/console/logout", data={"csrf": csrf})
    assert r.status_code == 303
    # the old cookie, sent again by hand, no longer works
    c.cookies.set("orderwatch_console", session, path="/console")
    assert (await c.get("/console")).status_code == 303


async def test_logout_needs_csrf(console: Console) -> None:
    c = console.client
    await login(c, "operator")
    assert (await c.post("/console/logout")).status_code == 403
    assert (await c.get("/console")).status_code == 200


# ------------------------------------------------------------------------ roles, CSRF


async def test_viewer_sees_no_actions_and_cannot_post_one(console: Console) -> None:
    c = console.client
    csrf = await login(c, "viewer")
    page = await c.get("/console/orders/R-UNREACH-1")
    assert page.status_code == 200
    assert 'data-testid="actions"' not in page.text
    assert "/retry" not in page.text
    assert "/redeliver" not in page.text
    orders = await c.get("/console/orders?status=FAILED")
    assert "/console/bulk" not in orders.text
    for path, data in [
        ("/console/orders/R-UNREACH-1/retry", {}),
        ("/console/orders/R-PENDING-1/resolve", {"status": "FAILED", "note": "x"}),
        ("/console/orders/R-PENDING-1/cancel", {}),
        ("/console/bulk", {"action": "retry", "status": "FAILED", "step": "apply"}),
    ]:
        r = await c.post(path, data={"csrf": csrf, "confirmed": "yes", **data})
        assert r.status_code == 403, path
        assert "this needs operator" in r.text
    assert await order_status(console, "R-UNREACH-1") == ("FAILED", "PLACE_UNREACHABLE")
    assert await order_status(console, "R-PENDING-1") == ("PENDING", None)


@pytest.mark.parametrize(
    ("csrf", "headers"),
    [
        (None, {}),
        ("", {}),
        ("forged-token", {}),
        ("GOOD", {"Origin": "https://evil.example"}),
    ],
)
async def test_posts_without_the_sessions_csrf_token_are_refused(
    console: Console, csrf: str | None, headers: dict[str, str]
) -> None:
    c = console.client
    good = await login(c, "operator")
    data: dict[str, str] = {"confirmed": "yes", "note": "n"}
    if csrf is not None:
        data["csrf"] = good if csrf == "GOOD" else csrf
    r = await c.post("/console/orders/R-PENDING-1/cancel", data=data, headers=headers)
    assert r.status_code == 403
    assert "CSRF" in r.text
    assert await order_status(console, "R-PENDING-1") == ("PENDING", None)


async def test_another_sessions_token_is_refused(console: Console) -> None:
    app = console.client._transport.app  # type: ignore[attr-defined]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://orderwatch.test"
    ) as other:
        theirs = await login(other, "operator")
    mine = await login(console.client, "operator")
    assert theirs != mine
    r = await console.client.post(
        "/console/orders/R-PENDING-1/cancel", data={"csrf": theirs, "confirmed": "yes"}
    )
    assert r.status_code == 403


# ------------------------------------------------------------------------ actions


async def test_resolve_asks_first_then_records_the_note_and_caller(console: Console) -> None:
    c = console.client
    csrf = await login(c, "operator")
    form = {"csrf": csrf, "status": "SUCCEEDED", "note": "delivered by hand"}
    ask = await c.post("/console/orders/R-PENDING-1/resolve", data=form)
    assert ask.status_code == 200
    assert "确认 Confirm" in ask.text
    assert 'name="confirmed" value="yes"' in ask.text
    assert await order_status(console, "R-PENDING-1") == ("PENDING", None)

    done = await c.post(
        "/console/orders/R-PENDING-1/resolve",
        data={**form, "csrf": csrf_of(ask.text)} | {"confirmed": "yes"},
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/console/orders/R-PENDING-1?done=resolve"
    assert await order_status(console, "R-PENDING-1") == ("SUCCEEDED", None)
    events = await console.service.store.get_events(
        (await console.service.store.get_order("R-PENDING-1")).id  # type: ignore[union-attr]
    )
    last = events[-1]
    assert last.kind == "resolved"
    assert last.actor == NAMES["operator"]
    assert last.detail
    assert last.detail["note"] == "delivered by hand"
    page = await c.get(done.headers["location"])
    assert "已处理 Resolved" in page.text
    assert "delivered by hand" in page.text


async def test_a_refused_action_says_why(console: Console) -> None:
    c = console.client
    csrf = await login(c, "operator")
    r = await c.post("/console/orders/R-PENDING-1/retry", data={"csrf": csrf, "confirmed": "yes"})
    assert r.status_code == 409
    assert "retry needs a FAILED order" in r.text
    r = await c.post(
        "/console/orders/R-PENDING-1/resolve",
        data={"csrf": csrf, "confirmed": "yes", "status": "FAILED", "note": ""},
    )
    assert r.status_code == 409
    assert "needs a note" in r.text
    r = await c.post("/console/orders/NOPE/cancel", data={"csrf": csrf, "confirmed": "yes"})
    assert r.status_code == 404


async def test_retry_and_cancel(console: Console) -> None:
    c = console.client
    csrf = await login(c, "operator")
    r = await c.post(
        "/console/orders/R-UNREACH-1/retry",
        data={"csrf": csrf, "confirmed": "yes", "note": "vendor is back"},
    )
    assert r.status_code == 303
    assert (await order_status(console, "R-UNREACH-1"))[0] == "PENDING"
    r = await c.post("/console/orders/R-UNREACH-1/cancel", data={"csrf": csrf, "confirmed": "yes"})
    assert r.status_code == 303
    assert await order_status(console, "R-UNREACH-1") == ("FAILED", "CANCELLED")


async def test_redeliver_queues_the_notification_again(console: Console) -> None:
    c = console.client
    csrf = await login(c, "operator")
    store = console.service.store
    order = await store.get_order("R-ORDERED-1")
    assert order is not None
    (note,) = await store.list_outbox(order.id)

    def fail_it(conn: Any) -> None:
        from orderwatch.store.schema import outbox

        conn.execute(outbox.update().where(outbox.c.id == note.id).values(state="failed"))

    await store.execute(fail_it)  # type: ignore[attr-defined]
    page = await c.get("/console/orders/R-ORDERED-1")
    assert f"/notifications/{note.id}/redeliver" in page.text
    r = await c.post(
        f"/console/orders/R-ORDERED-1/notifications/{note.id}/redeliver",
        data={"csrf": csrf, "confirmed": "yes"},
    )
    assert r.status_code == 303
    (after,) = await store.list_outbox(order.id)
    assert after.state == "pending"
    r = await c.post(
        "/console/orders/R-ORDERED-1/notifications/999999/redeliver",
        data={"csrf": csrf, "confirmed": "yes"},
    )
    assert r.status_code == 404


# ------------------------------------------------------------------------ bulk


async def test_bulk_retry_counts_first_then_applies(console: Console) -> None:
    c = console.client
    csrf = await login(c, "operator")
    flt = {"status": "FAILED", "reason": "PLACE_UNREACHABLE", "vendor": "acme"}
    count = await c.post(
        "/console/bulk", data={"csrf": csrf, "action": "retry", "step": "count", **flt}
    )
    assert count.status_code == 200
    found = re.search(r'data-testid="bulk-count">匹配 <b>(\d+)</b> .*?<b>(\d+)</b>', count.text)
    assert found
    assert found.groups() == ("3", "3")
    for no in ("R-UNREACH-1", "R-UNREACH-2", "R-UNREACH-3"):
        assert (await order_status(console, no))[0] == "FAILED"  # counting changed nothing

    # "apply" without confirmed=yes only counts again
    again = await c.post(
        "/console/bulk", data={"csrf": csrf, "action": "retry", "step": "apply", **flt}
    )
    assert 'data-testid="bulk-count"' in again.text
    assert (await order_status(console, "R-UNREACH-1"))[0] == "FAILED"

    done = await c.post(
        "/console/bulk",
        data={
            "csrf": csrf,
            "action": "retry",
            "step": "apply",
            "confirmed": "yes",
            "note": "vendor fixed",
            **flt,
        },
    )
    assert done.status_code == 200
    assert re.search(r"matched <b>3</b>.*changed <b>3</b>", done.text)
    for no in ("R-UNREACH-1", "R-UNREACH-2", "R-UNREACH-3"):
        assert (await order_status(console, no))[0] == Status.PENDING.value


async def test_bulk_resolve_needs_a_note_and_a_filter(console: Console) -> None:
    c = console.client
    csrf = await login(c, "operator")
    r = await c.post("/console/bulk", data={"csrf": csrf, "action": "retry", "step": "count"})
    assert r.status_code == 422
    assert "empty filter" in r.text
    r = await c.post(
        "/console/bulk",
        data={"csrf": csrf, "action": "retry", "q": "R-UNREACH-1", "field": "order_no"},
    )
    assert r.status_code == 422
    assert "q:" in r.text
    flt = {"status": "FAILED", "reason": "PLACE_UNREACHABLE"}
    r = await c.post(
        "/console/bulk",
        data={"csrf": csrf, "action": "resolve", "step": "apply", "confirmed": "yes", **flt},
    )
    assert r.status_code == 200
    assert "needs a note" in r.text
    assert (await order_status(console, "R-UNREACH-2"))[0] == "FAILED"
    # FAILED orders are final: resolve matches them and changes none
    assert 'data-testid="bulk-count">匹配 <b>3</b>' in r.text
    assert "<b>0</b> 单可处理" in r.text


async def test_bulk_by_customer_id(console: Console) -> None:
    c = console.client
    csrf = await login(c, "operator")
    r = await c.post(
        "/console/bulk",
        data={
            "csrf": csrf,
            "action": "resolve",
            "q": "C-PEND",
            "field": "customer_id",
            "step": "apply",
            "confirmed": "yes",
            "note": "closed in bulk",
            "resolve_status": "FAILED",
        },
    )
    assert r.status_code == 200
    assert re.search(r"matched <b>1</b>.*changed <b>1</b>", r.text)
    assert await order_status(console, "R-PENDING-1") == ("FAILED", "RESOLVED_BY_OPERATOR")


# ------------------------------------------------------------------------ search, CSV


def listed(html: str) -> list[str]:
    return re.findall(r'<a href="/console/orders/([^"?]+)">', html)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": "R-ORDERED-1"}, ["R-ORDERED-1"]),
        ({"q": "C-SEARCH", "field": "customer_id"}, ["R-ORDERED-1"]),
        ({"q": VENDOR_ORDER, "field": "vendor_order_id"}, ["R-ORDERED-1"]),
        ({"q": TRACKING, "field": "tracking_no"}, ["R-ORDERED-1"]),
        ({"q": TRACKING}, ["R-ORDERED-1"]),
        ({"q": TRACKING[:-1], "field": "tracking_no"}, []),
        ({"q": "C-SEARCH", "field": "order_no"}, []),
        ({"q": "%"}, []),
        (
            {"status": "FAILED", "reason": "PLACE_UNREACHABLE", "sort": "created_asc"},
            ["R-UNREACH-1", "R-UNREACH-2", "R-UNREACH-3"],
        ),
        ({"status": "PENDING"}, ["R-PENDING-1"]),
        ({"vendor": "globex"}, []),
        ({"from": "2000-01-01", "to": "2000-01-02"}, []),
    ],
)
async def test_search_and_filters(
    console: Console, params: dict[str, str], expected: list[str]
) -> None:
    await login(console.client, "viewer")
    r = await console.client.get("/console/orders", params=params)
    assert r.status_code == 200
    assert listed(r.text) == expected
    assert f'data-testid="total">{len(expected)} ' in r.text


async def test_sort_and_pagination(console: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "PER_PAGE", 10)
    c = console.client
    await login(c, "viewer")
    seen: list[str] = []
    total = console.seeded.total
    pages = -(-total // 10)
    for page in range(1, pages + 1):
        r = await c.get("/console/orders", params={"sort": "created_asc", "page": str(page)})
        rows = listed(r.text)
        assert len(rows) == min(10, total - 10 * (page - 1))
        assert (f"page={page + 1}" in r.text) == (page < pages)
        seen += rows
    assert len(seen) == len(set(seen)) == total
    newest = listed((await c.get("/console/orders")).text)
    assert newest[:5] == list(reversed(seen))[:5]
    by_points = listed((await c.get("/console/orders?sort=points_desc&status=ORDERED&page=2")).text)
    assert by_points[-1] == "R-ORDERED-1"  # 5000 points, the others 12000


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=LOST", "status"),
        ("reason=NOPE", "reason"),
        ("sort=random", "sort"),
        ("from=yesterday", "from"),
        ("from=2026-11-02&to=2026-11-01", "to"),
        ("field=phone&q=1", "field"),
        ("page=0", "page"),
        ("page=x", "page"),
    ],
)
async def test_bad_filters_name_the_field(console: Console, query: str, field: str) -> None:
    await login(console.client, "viewer")
    r = await console.client.get(f"/console/orders?{query}")
    assert r.status_code == 422
    assert f"{field}:" in r.text


async def export(c: httpx.AsyncClient, query: str) -> list[dict[str, str]]:
    r = await c.get(f"/console/orders.csv?{query}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    text = r.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


async def test_csv_export_follows_the_filter_and_masks_for_viewer(console: Console) -> None:
    c = console.client
    await login(c, "operator")
    rows = await export(c, "status=FAILED&reason=PLACE_UNREACHABLE")
    assert [r["order_no"] for r in rows] == ["R-UNREACH-3", "R-UNREACH-2", "R-UNREACH-1"]
    assert rows[0]["recipient_phone"] == PHONE
    assert rows[0]["status_label"] == "交易失败"
    everything = await export(c, "")
    assert len(everything) == console.seeded.total
    (tracked,) = await export(c, f"q={TRACKING}")
    assert tracked["tracking_no"] == TRACKING
    assert tracked["carrier"] == "SF"

    viewer = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=c._transport.app),  # type: ignore[attr-defined]
        base_url="http://orderwatch.test",
    )
    async with viewer:
        await login(viewer, "viewer")
        rows = await export(viewer, "q=R-ORDERED-1")
        assert rows[0]["recipient_phone"] == "139****5678"
        assert rows[0]["recipient_address"].endswith("****")


def test_csv_cells_cannot_start_a_formula() -> None:
    assert routes._cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert routes._cell("-1") == "'-1"
    assert routes._cell("R1") == "R1"
    assert routes._cell(None) == ""


# ------------------------------------------------------------------------ masking


async def test_timeline_hides_secrets_and_phones_for_every_role(console: Console) -> None:
    c = console.client
    await login(c, "operator")
    page = (await c.get("/console/orders/R-ORDERED-1")).text
    assert "deadbeef" not in page
    assert SECRET not in page
    assert "customer called from 139****5678" in page
    # the operator sees the recipient's phone in the order's own fields, once
    assert page.count(PHONE) == 1
    assert TRACKING in page
    assert "已揽收 picked up" in page


async def test_viewer_sees_phone_and_address_masked(console: Console) -> None:
    c = console.client
    await login(c, "viewer")
    page = (await c.get("/console/orders/R-ORDERED-1")).text
    assert PHONE not in page
    assert "世纪大道" not in page
    assert 'data-testid="phone">139****5678<' in page


def test_mask_detail() -> None:
    detail = {
        "Sign": "abc",
        "api_key": "k",
        "headers": {"Authorization": "Bearer x"},
        "mobile": "13800000000",
        "items": [{"text": "call +86 13700000000 now"}],
        "code": 0,
    }
    out = routes.mask_detail(detail, "555-0100-77")
    assert out == {
        "Sign": "****",
        "api_key": "****",
        "headers": {"Authorization": "****"},
        "mobile": "138****0000",
        "items": [{"text": "call +86****0000 now"}],
        "code": 0,
    }
    assert routes.mask_text("tel 555-0100-77", "555-0100-77") == "tel 555****0-77"


# ------------------------------------------------------------------------ overview


async def test_overview_shows_the_counts(console: Console) -> None:
    c = console.client
    await login(c, "viewer")
    r = await c.get("/console")
    assert r.status_code == 200
    counts = await console.service.store.counts(now=console.service.clock.now())
    for status in Status:
        n = counts.by_status.get(status.value, 0)
        assert re.search(
            rf'data-testid="count-{status.value}">\s*<span class="n">{n}</span>', r.text
        )
    assert f'data-testid="due"><span class="n">{counts.due}</span>' in r.text
    assert r.text.count("<svg") >= 6
    assert "PLACE_UNREACHABLE" in r.text
    assert "acme" in r.text


async def test_overview_shows_an_open_circuit_breaker(console: Console) -> None:
    now = console.service.clock.now()
    until = now + timedelta(minutes=5)
    await console.service.store.open_circuit("globex", now=now, until=until, note="timeouts")
    await login(console.client, "viewer")
    r = await console.client.get("/console")
    assert r.status_code == 200
    assert "熔断 circuit open" in r.text
    assert "globex" in r.text


async def test_static_files_and_no_console_in_the_openapi(console: Console) -> None:
    c = console.client
    js = await c.get("/console/static/console.js")
    assert js.status_code == 200
    assert "confirm" in js.text
    spec = (await c.get("/api/v1/openapi.json")).json()
    assert not any(p.startswith("/console") for p in spec["paths"])


async def test_create_app_mounts_the_console_for_any_service(console: Console) -> None:
    app = create_app(console.service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://orderwatch.test"
    ) as c:
        for path in ("/console", "/console/orders", "/console/orders/R-ORDERED-1"):
            assert (await c.get(path)).status_code == 303
        assert (await c.get("/console/login")).status_code == 200


async def test_an_empty_database_renders(tmp_path: Any) -> None:
    from consoletools import load

    from orderwatch.service import Service

    service = await Service.open(load(tmp_path / "empty.db", "http://127.0.0.1:9"))
    try:
        app = create_app(service)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://orderwatch.test"
        ) as c:
            await login(c, "operator")
            overview = await c.get("/console")
            assert overview.status_code == 200
            assert "共 0 单" in overview.text
            orders = await c.get("/console/orders")
            assert "No matching orders" in orders.text
            rows = await export(c, "")
            assert rows == []
            missing = await c.get("/console/orders/R404")
            assert missing.status_code == 404
    finally:
        await service.close()
