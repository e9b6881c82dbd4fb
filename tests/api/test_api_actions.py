"""Operator actions over HTTP: the semantics of DESIGN §7, the caller's name on every event."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from apitools import NAMES, Api, auth, fields, problem

from orderwatch.statuses import Reason, Status


async def post(api: Api, path: str, body: Any = None, role: str = "operator") -> Any:
    kwargs: dict[str, Any] = {"headers": auth(role)}
    if body is not None:
        kwargs["json"] = body
    return await api.client.post(f"/api/v1{path}", **kwargs)


# ---------------------------------------------------------------------------- retry


@pytest.mark.parametrize(
    ("reason", "mode", "status"),
    [
        (Reason.UNPAID, "place", "PENDING"),
        (Reason.CANCELLED, "place", "PENDING"),
        (Reason.PLACE_UNREACHABLE, "place", "PENDING"),
        (Reason.VENDOR_FAILED, "poll", "ORDERED"),
        (Reason.NOT_FOUND_AT_VENDOR, "poll", "ORDERED"),
        (Reason.MAX_POLLS_EXCEEDED, "poll", "ORDERED"),
        (Reason.DEADLINE_EXCEEDED, "poll", "ORDERED"),
        (Reason.INVALID_STATE, "poll", "ORDERED"),
    ],
)
async def test_retry_reopens_by_reason(api: Api, reason: Reason, mode: str, status: str) -> None:
    await api.create("R1")
    await api.fail("R1", reason)
    api.woken.clear()
    r = await post(api, "/orders/R1/retry", {"note": "vendor fixed it"})
    assert r.status_code == 200, r.text
    o = r.json()
    assert o["retry_mode"] == mode
    assert o["status"] == status
    assert o["reason"] is None
    assert o["counters"]["queries"] == 0
    ev = (await api.events("R1"))[-1]
    assert ev.kind == "retried"
    assert ev.actor == NAMES["operator"]
    assert ev.detail is not None
    assert ev.detail["note"] == "vendor fixed it"
    assert api.woken == [1]


async def test_retry_without_body(api: Api) -> None:
    await api.create("R1")
    await api.fail("R1", Reason.VENDOR_FAILED)
    r = await post(api, "/orders/R1/retry")
    assert r.status_code == 200
    assert r.json()["retry_mode"] == "poll"


async def test_retry_of_place_rejected_is_409(api: Api) -> None:
    await api.create("R1")
    await api.fail("R1", Reason.PLACE_REJECTED)
    data = problem(await post(api, "/orders/R1/retry"), 409)
    assert data["type"] == "urn:orderwatch:problem:action-refused"
    assert "PLACE_REJECTED" in data["detail"]
    assert (await api.order("R1")).status is Status.FAILED


@pytest.mark.parametrize("state", ["PENDING", "ORDERED", "SUCCEEDED"])
async def test_retry_of_an_order_that_did_not_fail_is_409(api: Api, state: str) -> None:
    await api.create("R1")
    if state != "PENDING":
        await api.force("R1", status=Status(state))
    problem(await post(api, "/orders/R1/retry"), 409)


async def test_retry_body_is_checked(api: Api) -> None:
    await api.create("R1")
    await api.fail("R1", Reason.VENDOR_FAILED)
    r = await post(api, "/orders/R1/retry", {"note": 5})
    assert fields(problem(r, 422)) == {"note"}
    r = await post(api, "/orders/R1/retry", {"mode": "poll"})
    assert fields(problem(r, 422)) == {"mode"}
    assert (await api.order("R1")).status is Status.FAILED


# ---------------------------------------------------------------------------- resolve


async def test_resolve_as_succeeded_has_no_reason(api: Api) -> None:
    await api.create("R1")
    await api.force("R1", status=Status.ORDERED)
    r = await post(api, "/orders/R1/resolve", {"status": "SUCCEEDED", "note": "客户已签收"})
    assert r.status_code == 200
    o = r.json()
    assert (o["status"], o["reason"], o["description"]) == ("SUCCEEDED", None, "客户已签收")
    ev = (await api.events("R1"))[-1]
    assert (ev.kind, ev.actor) == ("resolved", NAMES["operator"])
    assert ev.detail == {"note": "客户已签收"}


async def test_resolve_as_failed_is_resolved_by_operator(api: Api) -> None:
    await api.create("R1")
    r = await post(api, "/orders/R1/resolve", {"status": "FAILED", "note": "duplicate"})
    assert r.status_code == 200
    assert r.json()["reason"] == "RESOLVED_BY_OPERATOR"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "FAILED"}, "note"),
        ({"status": "FAILED", "note": "   "}, "note"),
        ({"status": "FAILED", "note": ""}, "note"),
        ({"note": "why"}, "status"),
        ({"status": "PENDING", "note": "why"}, "status"),
        ({"status": "FAILED", "note": "x" * 1001}, "note"),
    ],
)
async def test_resolve_needs_status_and_note(api: Api, body: dict[str, Any], field: str) -> None:
    await api.create("R1")
    assert field in fields(problem(await post(api, "/orders/R1/resolve", body), 422))
    assert (await api.order("R1")).status is Status.PENDING


async def test_resolve_without_body_is_422(api: Api) -> None:
    await api.create("R1")
    problem(await post(api, "/orders/R1/resolve"), 422)


async def test_resolve_of_a_final_order_is_409(api: Api) -> None:
    await api.create("R1")
    await api.fail("R1", Reason.VENDOR_FAILED)
    problem(await post(api, "/orders/R1/resolve", {"status": "SUCCEEDED", "note": "x"}), 409)


async def test_resolve_while_place_order_is_in_flight_is_409(api: Api) -> None:
    await api.create("R1")
    await api.sent_in_flight("R1")
    data = problem(await post(api, "/orders/R1/resolve", {"status": "FAILED", "note": "x"}), 409)
    assert "in flight" in data["detail"]
    assert (await api.order("R1")).status is Status.SENT


# ---------------------------------------------------------------------------- cancel, payment


async def test_cancel_pending(api: Api) -> None:
    await api.create("R1")
    r = await post(api, "/orders/R1/cancel", {"note": "customer changed their mind"})
    assert r.status_code == 200
    o = r.json()
    assert (o["status"], o["reason"]) == ("FAILED", "CANCELLED")
    assert (await api.events("R1"))[-1].actor == NAMES["operator"]


@pytest.mark.parametrize("state", ["SENT", "ORDERED"])
async def test_cancel_after_dispatch_is_409(api: Api, state: str) -> None:
    await api.create("R1")
    await api.force("R1", status=Status(state))
    problem(await post(api, "/orders/R1/cancel"), 409)
    assert (await api.order("R1")).status is Status(state)


async def test_payment_update(api: Api) -> None:
    await api.create("R1", payment_status="UNPAID")
    api.woken.clear()
    r = await post(api, "/orders/R1/payment", {"payment_status": "PAID"}, role="platform")
    assert r.status_code == 200
    assert r.json()["payment_status"] == "PAID"
    ev = (await api.events("R1"))[-1]
    assert (ev.kind, ev.actor) == ("payment", NAMES["platform"])
    assert api.woken == [1]
    r = await post(api, "/orders/R1/payment", {"payment_status": "UNPAID"}, role="operator")
    assert r.status_code == 200


@pytest.mark.parametrize("body", [{"payment_status": "paid"}, {}, {"payment_status": None}])
async def test_payment_body_is_checked(api: Api, body: dict[str, Any]) -> None:
    await api.create("R1")
    r = await post(api, "/orders/R1/payment", body, role="platform")
    assert fields(problem(r, 422)) == {"payment_status"}


@pytest.mark.parametrize(
    "path", ["/orders/NOPE/retry", "/orders/NOPE/cancel", "/orders/NOPE/payment"]
)
async def test_actions_on_unknown_orders_are_404(api: Api, path: str) -> None:
    body = {"payment_status": "PAID"} if path.endswith("payment") else None
    problem(await post(api, path, body), 404)


# ---------------------------------------------------------------------------- bulk


async def test_bulk_retry_dry_run_then_for_real(api: Api) -> None:
    for no, reason in [
        ("B1", Reason.VENDOR_FAILED),
        ("B2", Reason.VENDOR_FAILED),
        ("B3", Reason.PLACE_REJECTED),
    ]:
        await api.create(no)
        await api.fail(no, reason)
    await api.create("B4")
    body = {"filter": {"status": "FAILED"}, "dry_run": True, "note": "vendor back"}
    r = await post(api, "/orders/bulk/retry", body)
    assert r.json() == {"matched": 3, "changed": 2, "dry_run": True}
    assert (await api.order("B1")).status is Status.FAILED
    api.woken.clear()
    r = await post(api, "/orders/bulk/retry", {**body, "dry_run": False})
    assert r.json() == {"matched": 3, "changed": 2, "dry_run": False}
    assert (await api.order("B1")).status is Status.ORDERED
    assert (await api.order("B3")).status is Status.FAILED
    assert (await api.events("B2"))[-1].actor == NAMES["operator"]
    assert api.woken == [1]


async def test_bulk_resolve_by_vendor(api: Api) -> None:
    await api.create("B1")
    await api.create("B2", vendor="globex")
    body = {"filter": {"vendor": "globex"}, "status": "FAILED", "note": "vendor closed"}
    r = await post(api, "/orders/bulk/resolve", body)
    assert r.json() == {"matched": 1, "changed": 1, "dry_run": False}
    assert (await api.order("B2")).reason is Reason.RESOLVED_BY_OPERATOR
    assert (await api.order("B1")).status is Status.PENDING


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/orders/bulk/retry", {"filter": {}}, "filter"),
        ("/orders/bulk/retry", {}, "filter"),
        ("/orders/bulk/retry", {"filter": {"status": "LOST"}}, "filter.status"),
        ("/orders/bulk/retry", {"filter": {"status": "FAILED"}, "dry_run": "yes"}, "dry_run"),
        ("/orders/bulk/retry", {"filter": {"colour": "red"}}, "filter.colour"),
        ("/orders/bulk/retry", {"filter": {"status": None}}, "filter.status"),
        ("/orders/bulk/retry", {"filter": {"created_after": 3}}, "filter.created_after"),
        ("/orders/bulk/retry", {"filter": {"created_after": "2026-11-26"}}, "filter.created_after"),
        ("/orders/bulk/resolve", {"filter": {"status": "PENDING"}, "status": "FAILED"}, "note"),
        ("/orders/bulk/resolve", {"filter": {"status": "PENDING"}, "note": "x"}, "status"),
        # PostgreSQL cannot store NUL, and no control character belongs in a note or name
        ("/orders/bulk/retry", {"filter": {"vendor": "ac\u0000me"}}, "filter.vendor"),
        ("/orders/bulk/retry", {"filter": {"customer_id": "C\u001b1"}}, "filter.customer_id"),
        ("/orders/bulk/retry", {"filter": {"status": "FAILED"}, "note": "a\u0000b"}, "note"),
        (
            "/orders/bulk/resolve",
            {"filter": {"status": "PENDING"}, "status": "FAILED", "note": "why\u0000"},
            "note",
        ),
    ],
)
async def test_bulk_body_is_checked(api: Api, path: str, body: dict[str, Any], field: str) -> None:
    await api.create("B1")
    assert field in fields(problem(await post(api, path, body), 422))
    assert (await api.order("B1")).status is Status.PENDING


# ---------------------------------------------------------------------------- redeliver, vendors


async def test_redeliver_a_notification(api: Api) -> None:
    await api.create("R1")
    await post(api, "/orders/R1/cancel")
    detail = (await api.client.get("/api/v1/orders/R1", headers=auth("operator"))).json()
    note_id = detail["notifications"][0]["id"]
    r = await post(api, f"/orders/R1/notifications/{note_id}/redeliver")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == note_id
    assert r.json()["state"] == "pending"
    problem(await post(api, f"/orders/R1/notifications/{note_id + 100}/redeliver"), 404)
    problem(await post(api, f"/orders/NOPE/notifications/{note_id}/redeliver"), 404)
    problem(await post(api, "/orders/R1/notifications/abc/redeliver"), 422)


async def test_pause_and_resume_a_vendor(api: Api) -> None:
    r = await post(api, "/vendors/acme/pause", {"note": "maintenance window"})
    assert r.status_code == 200
    assert r.json()["paused"] is True
    assert r.json()["changed"] is True
    assert r.json()["paused_at"].endswith("Z")
    again = await post(api, "/vendors/acme/pause")
    assert again.json()["changed"] is False
    stats = (await api.client.get("/api/v1/stats", headers=auth("viewer"))).json()
    assert list(stats["paused_vendors"]) == ["acme"]
    api.woken.clear()
    r = await post(api, "/vendors/acme/resume")
    assert r.json() == {"vendor": "acme", "paused": False, "changed": True, "paused_at": None}
    assert api.woken == [1]
    assert (await post(api, "/vendors/acme/resume")).json()["changed"] is False
    assert await api.service.store.paused_vendors() == {}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/orders/N1/resolve", {"status": "FAILED", "note": "refunded\u0000"}),
        # Python strips \x1c-\x1f as spaces: checked before the note is trimmed
        ("/orders/N1/resolve", {"status": "FAILED", "note": "refunded\u001f"}),
        ("/orders/N1/retry", {"note": "again\u0007"}),
        ("/orders/N1/cancel", {"note": "\u0000"}),
        ("/vendors/acme/pause", {"note": "maintenance\u0000window"}),
    ],
)
async def test_a_note_with_a_control_character_is_422(
    api: Api, path: str, body: dict[str, Any]
) -> None:
    """Refused by name before anything is written (PostgreSQL cannot store NUL at all)."""
    await api.create("N1")
    assert fields(problem(await post(api, path, body), 422)) == {"note"}
    assert (await api.order("N1")).status is Status.PENDING
    assert await api.service.store.paused_vendors() == {}
    # a line break or a tab in a note is text, not a control character
    r = await post(api, "/vendors/acme/pause", {"note": "window\n\tuntil 06:00"})
    assert r.status_code == 200, r.text


async def test_pause_of_an_unknown_vendor_is_404(api: Api) -> None:
    problem(await post(api, "/vendors/initech/pause"), 404)
    problem(await post(api, "/vendors/initech/resume"), 404)


async def test_stats(api: Api) -> None:
    await api.create("S1")
    await api.create("S2", vendor="globex")
    await post(api, "/orders/S2/cancel")
    r = await api.client.get("/api/v1/stats", headers=auth("viewer"))
    assert r.status_code == 200
    s = r.json()
    assert s["by_status"] == {"PENDING": 1, "SENT": 0, "ORDERED": 0, "SUCCEEDED": 0, "FAILED": 1}
    assert s["by_reason"] == {"CANCELLED": 1}
    assert s["by_vendor"] == {"acme": {"PENDING": 1}, "globex": {"FAILED": 1}}
    assert s["due"] == 1
    assert s["paused_vendors"] == {}
    assert s["circuit_open"] == {}
    assert s["at"].endswith("Z")


async def test_an_open_circuit_breaker_shows_in_stats_and_metrics(api: Api) -> None:
    now = api.service.clock.now()
    until = now + timedelta(minutes=5)
    await api.service.store.open_circuit("globex", now=now, until=until, note="3 timeouts")
    s = (await api.client.get("/api/v1/stats", headers=auth("viewer"))).json()
    assert list(s["circuit_open"]) == ["globex"]
    assert s["paused_vendors"] == {}  # not an operator's pause
    text = (await api.client.get("/metrics")).text
    assert 'orderwatch_vendor_circuit_open{vendor="globex"} 1.0' in text
