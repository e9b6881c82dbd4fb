"""Roles and tokens, problem documents everywhere, health, readiness, metrics and OpenAPI."""

from __future__ import annotations

from typing import Any

import pytest
from apitools import TOKENS, Api, MakeApi, auth, order_body, problem
from structlog.testing import capture_logs

from orderwatch.api import metrics as m

# Every protected operation, the roles allowed, and a body it accepts.
OPERATIONS: list[tuple[str, str, set[str], Any]] = [
    ("POST", "/api/v1/orders", {"platform"}, order_body("X1")),
    ("GET", "/api/v1/orders", {"platform", "operator", "viewer"}, None),
    ("GET", "/api/v1/orders/R1", {"platform", "operator", "viewer"}, None),
    ("GET", "/api/v1/stats", {"platform", "operator", "viewer"}, None),
    ("POST", "/api/v1/orders/R1/payment", {"platform", "operator"}, {"payment_status": "PAID"}),
    ("POST", "/api/v1/orders/R1/resolve", {"operator"}, {"status": "FAILED", "note": "n"}),
    ("POST", "/api/v1/orders/R1/retry", {"operator"}, None),
    ("POST", "/api/v1/orders/R1/cancel", {"operator"}, None),
    ("POST", "/api/v1/orders/bulk/retry", {"operator"}, {"filter": {"status": "FAILED"}}),
    (
        "POST",
        "/api/v1/orders/bulk/resolve",
        {"operator"},
        {"filter": {"status": "FAILED"}, "status": "FAILED", "note": "n"},
    ),
    ("POST", "/api/v1/orders/R1/notifications/1/redeliver", {"operator"}, None),
    ("POST", "/api/v1/vendors/acme/pause", {"operator"}, None),
    ("POST", "/api/v1/vendors/acme/resume", {"operator"}, None),
]


async def call(api: Api, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    return await api.client.request(method, path, **kwargs)


@pytest.mark.parametrize(("method", "path", "allowed", "body"), OPERATIONS)
async def test_roles(api: Api, method: str, path: str, allowed: set[str], body: Any) -> None:
    await api.create("R1")
    for role in ("platform", "operator", "viewer"):
        r = await call(api, method, path, body, auth(role))
        if role in allowed:
            assert r.status_code not in (401, 403), (role, r.text)
        else:
            data = problem(r, 403)
            assert data["type"] == "urn:orderwatch:problem:forbidden"
            assert TOKENS[role] not in r.text


BAD_AUTH = [
    (None, False),
    ("Bearer not-a-token", True),
    ("Bearer ", True),
    (f"Basic {TOKENS['operator']}", True),
    (f"Bearer {TOKENS['operator']}x", True),
    (f"Bearer {TOKENS['operator'][:-1]}", True),
]


@pytest.mark.parametrize(("method", "path", "allowed", "body"), OPERATIONS)
async def test_401_without_a_known_token(
    api: Api, method: str, path: str, allowed: set[str], body: Any
) -> None:
    del allowed
    for header, invalid in BAD_AUTH:
        headers = {"Authorization": header} if header is not None else {}
        r = await call(api, method, path, body, headers)
        data = problem(r, 401)
        assert data["type"] == "urn:orderwatch:problem:unauthorized"
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer")
        assert ('error="invalid_token"' in challenge) is invalid, header
    assert await api.count_orders() == 0


async def test_tokens_never_reach_the_log(api: Api) -> None:
    with capture_logs() as logs:
        await api.create("R1")
        await api.client.get("/api/v1/orders/R1", headers=auth("viewer"))
        await api.client.get("/api/v1/orders", headers={"Authorization": "Bearer wrong-1234"})
    text = repr(logs)
    assert "http_request" in text
    assert all(token not in text for token in TOKENS.values())
    assert "wrong-1234" not in text
    callers = [entry.get("caller") for entry in logs if entry["event"] == "http_request"]
    assert callers == ["redemption-platform", "cs-bob", None]


async def test_without_tokens_everything_but_health_is_refused(make_api: MakeApi) -> None:
    with capture_logs() as logs:
        api = await make_api(tokens=False)
    assert any(e["event"] == "api_no_tokens" and e["log_level"] == "warning" for e in logs)
    for method, path, _allowed, body in OPERATIONS:
        r = await call(api, method, path, body, auth("operator"))
        assert "no API tokens" in problem(r, 401)["detail"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await api.client.get(path)).status_code == 200


# ---------------------------------------------------------------------------- plain HTTP errors


async def test_unknown_route_is_404_problem(api: Api) -> None:
    for path in ("/api/v1/nothing", "/", "/api/v2/orders"):
        data = problem(await api.client.get(path, headers=auth("viewer")), 404)
        assert data["type"] == "about:blank"
        assert data["title"] == "Not Found"


async def test_wrong_method_is_405_problem_with_allow(api: Api) -> None:
    r = await api.client.delete("/api/v1/orders/R1", headers=auth("operator"))
    problem(r, 405)
    assert r.headers["allow"] == "GET"
    r = await api.client.get("/api/v1/orders/R1/retry", headers=auth("operator"))
    problem(r, 405)
    assert r.headers["allow"] == "POST"


# ---------------------------------------------------------------------------- health


async def test_healthz(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


async def test_readyz_checks_the_schema(api: Api) -> None:
    r = await api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    assert r.json()["schema_revision"]

    import sqlalchemy as sa

    def forget(conn: sa.Connection) -> None:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))

    await api.service.store.execute(forget)  # type: ignore[attr-defined]
    data = problem(await api.client.get("/readyz"), 503)
    assert "orderwatch db upgrade" in data["detail"]
    assert (await api.client.get("/healthz")).status_code == 200


async def test_readyz_when_the_database_is_gone(api: Api) -> None:
    import sqlalchemy as sa

    def drop(conn: sa.Connection) -> None:
        conn.execute(sa.text("DROP TABLE alembic_version"))

    await api.service.store.execute(drop)  # type: ignore[attr-defined]
    problem(await api.client.get("/readyz"), 503)


# ---------------------------------------------------------------------------- metrics


async def test_metrics(api: Api) -> None:
    await api.create("M1")
    await api.create("M2", vendor="globex")
    await api.client.post("/api/v1/orders/M2/cancel", headers=auth("operator"))
    await api.client.post("/api/v1/vendors/acme/pause", headers=auth("operator"))
    m.vendor_call("acme", "place", 0.2, "accepted")
    m.order_finished("FAILED", "VENDOR_FAILED")
    m.lateness(0.3)
    r = await api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'orderwatch_orders{status="PENDING",vendor="acme"} 1.0' in text
    assert 'orderwatch_orders{status="FAILED",vendor="globex"} 1.0' in text
    assert 'orderwatch_failed_orders{reason="CANCELLED"} 1.0' in text
    assert "orderwatch_due_orders 1.0" in text
    assert 'orderwatch_vendor_paused{vendor="acme"} 1.0' in text
    assert 'orderwatch_vendor_call_seconds_bucket{kind="place",le="0.25",vendor="acme"}' in text
    assert 'orderwatch_order_outcomes_total{reason="VENDOR_FAILED",status="FAILED"}' in text
    assert "orderwatch_lateness_seconds_count" in text
    assert (
        'orderwatch_http_requests_total{method="POST",route="/api/v1/orders",status="201"} 2.0'
        in text
    )
    names = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert names
    assert all(name.startswith("orderwatch_") for name in names), names


async def test_metrics_do_not_grow_with_made_up_methods(api: Api) -> None:
    """A scanner sending invented HTTP methods must not add a metric series each time."""
    for i in range(20):
        r = await api.client.request(f"PROBE{i}", "/api/v1/orders")
        assert r.status_code >= 400
    text = (await api.client.get("/metrics")).text
    assert "PROBE" not in text
    assert 'orderwatch_http_requests_total{method="OTHER",route="/api/v1/orders"' in text


# ---------------------------------------------------------------------------- OpenAPI and docs


async def test_openapi_document(api: Api) -> None:
    r = await api.client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path in (
        "/api/v1/orders",
        "/api/v1/orders/{order_no}",
        "/api/v1/orders/{order_no}/retry",
        "/api/v1/orders/{order_no}/resolve",
        "/api/v1/orders/{order_no}/cancel",
        "/api/v1/orders/{order_no}/payment",
        "/api/v1/orders/bulk/retry",
        "/api/v1/orders/bulk/resolve",
        "/api/v1/orders/{order_no}/notifications/{notification_id}/redeliver",
        "/api/v1/vendors/{name}/pause",
        "/api/v1/vendors/{name}/resume",
        "/api/v1/stats",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    create = paths["/api/v1/orders"]["post"]
    assert set(create["responses"]) >= {"200", "201", "401", "403", "409", "413", "422"}
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderIn"
    }
    problem_ref = create["responses"]["422"]["content"]["application/problem+json"]
    assert problem_ref["schema"]["$ref"] == "#/components/schemas/ProblemOut"
    schemas = doc["components"]["schemas"]
    assert schemas["OrderIn"]["properties"]["vendor"]["enum"] == ["acme", "globex"]
    assert {
        "OrderIn",
        "RecipientIn",
        "ResolveIn",
        "BulkRetryIn",
        "BulkResolveIn",
        "ProblemOut",
    } <= schemas.keys()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_docs_page_is_self_contained_html(api: Api) -> None:
    r = await api.client.get("/api/v1/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "/api/v1/orders/{order_no}/resolve" in r.text
    assert "<script" not in r.text
    assert "https://" not in r.text
