"""Order intake, the order query and the listing, through the ASGI app on a real SqlStore."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from apitools import NAMES, Api, MakeApi, auth, fields, order_body, problem

from orderwatch.statuses import Reason, Status

JSON_AS = {**auth("platform"), "Content-Type": "application/json"}


# ---------------------------------------------------------------------------- POST /orders


async def test_create_answers_201_with_the_stored_order(api: Api) -> None:
    r = await api.client.post("/api/v1/orders", json=order_body("R1"), headers=auth("platform"))
    assert r.status_code == 201
    assert r.headers["location"] == "/api/v1/orders/R1"
    assert r.headers["content-type"] == "application/json"
    o = r.json()
    assert o["order_no"] == "R1"
    assert o["status"] == "PENDING"
    assert o["status_label"] == "待处理"
    assert o["reason"] is None
    assert o["reason_text"] is None
    assert o["recipient"]["phone"] == "13800000000"
    assert o["created_at"].endswith("Z")
    assert o["next_run_at"] == o["created_at"]  # due at once
    events = await api.events("R1")
    assert [e.kind for e in events] == ["created"]
    assert events[0].actor == NAMES["platform"]
    assert api.woken == [1]  # a worker in the same process looks at once


async def test_json_keeps_non_ascii_as_utf8(api: Api) -> None:
    r = await api.client.post("/api/v1/orders", json=order_body("R1"), headers=auth("platform"))
    assert "张三".encode() in r.content
    assert b"\\u" not in r.content


async def test_same_order_again_answers_200_and_writes_nothing(api: Api) -> None:
    first = await api.create("R1")
    r = await api.client.post("/api/v1/orders", json=order_body("R1"), headers=auth("platform"))
    assert r.status_code == 200
    assert r.json() == first
    assert "location" not in r.headers
    assert [e.kind for e in await api.events("R1")] == ["created"]
    assert api.woken == [1]


async def test_same_order_no_with_another_body_is_409_naming_the_fields(api: Api) -> None:
    await api.create("R1")
    changed = order_body("R1", sku="SKU-2", recipient={**order_body()["recipient"], "phone": "1"})
    changed["recipient"]["phone"] = "13900000000"
    r = await api.client.post("/api/v1/orders", json=changed, headers=auth("platform"))
    data = problem(r, 409)
    assert data["type"] == "urn:orderwatch:problem:conflict"
    assert data["fields"] == ["recipient.phone", "sku"]
    assert "sku" in data["detail"]
    stored = await api.order("R1")
    assert stored.sku == "SKU-1001"
    assert [e.kind for e in await api.events("R1")] == ["created"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"vendor": "initech"}, "vendor"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": 1000}, "quantity"),
        ({"quantity": "1"}, "quantity"),  # a string is not a number in JSON
        ({"quantity": 1.5}, "quantity"),
        ({"points": True}, "points"),
        ({"sku": "S" * 65}, "sku"),
        ({"order_no": "R 1"}, "order_no"),
        ({"order_no": "R" * 65}, "order_no"),
        ({"payment_status": "MAYBE"}, "payment_status"),
        ({"sku": 12}, "sku"),
        ({"recipient": "张三"}, "recipient"),
        ({"recipient": {"name": "张三", "phone": "abc", "address": "x"}}, "recipient.phone"),
        ({"recipient": {"name": "", "phone": "13800000000", "address": "x"}}, "recipient.name"),
        (
            {"recipient": {"name": "a", "phone": "13800000000", "address": "x" * 257}},
            "recipient.address",
        ),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_field_is_422_naming_it_and_nothing_is_written(
    api: Api, change: dict[str, Any], field: str
) -> None:
    body = {**order_body("R1"), **change}
    r = await api.client.post("/api/v1/orders", json=body, headers=auth("platform"))
    data = problem(r, 422)
    assert data["type"] == "urn:orderwatch:problem:validation"
    assert field in fields(data), data
    assert all(e["message"] for e in data["errors"])
    assert await api.count_orders() == 0
    assert api.woken == []


async def test_every_missing_field_is_named_at_once(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/orders", json={"order_no": "R1", "recipient": {}}, headers=auth("platform")
    )
    data = problem(r, 422)
    assert fields(data) >= {
        "vendor",
        "sku",
        "quantity",
        "points",
        "recipient.name",
        "recipient.phone",
        "recipient.address",
    }
    assert {e["message"] for e in data["errors"] if e["field"] == "sku"} == {"required"}


@pytest.mark.parametrize(
    ("content", "ctype", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"\xff\xfe{}", "application/json", 400),
        (b"[1, 2]", "application/json", 422),
        (b"", "application/json", 422),
        (json.dumps(order_body("R1")).encode(), "text/plain", 415),
        (json.dumps(order_body("R1")).encode(), "application/x-www-form-urlencoded", 415),
    ],
)
async def test_malformed_bodies(api: Api, content: bytes, ctype: str, status: int) -> None:
    r = await api.client.post(
        "/api/v1/orders", content=content, headers={**auth("platform"), "Content-Type": ctype}
    )
    problem(r, status)
    assert await api.count_orders() == 0


async def test_whole_floats_are_whole_numbers(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/orders", json=order_body("R1", quantity=2.0), headers=auth("platform")
    )
    assert r.status_code == 201
    assert r.json()["quantity"] == 2


async def test_times_with_offsets_are_compared_in_utc(api: Api) -> None:
    o = await api.create("R1")  # created at 2026-11-26T01:00:00Z (the manual clock)
    assert o["created_at"] == "2026-11-26T01:00:00Z"
    found = await _page(api, "?created_after=2026-11-26T08:59:59%2B08:00")
    assert [x["order_no"] for x in found["items"]] == ["R1"]
    found = await _page(api, "?created_after=2026-11-26T09:00:01%2B08:00")
    assert found["items"] == []
    found = await _page(api, "?created_before=9999-12-31T23:59:59-23:59")  # past UTC's end
    assert [x["order_no"] for x in found["items"]] == ["R1"]


async def test_json_with_charset_is_accepted(api: Api) -> None:
    r = await api.client.post(
        "/api/v1/orders",
        content=json.dumps(order_body("R1"), ensure_ascii=False).encode(),
        headers={**auth("platform"), "Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 201


async def test_body_over_1_mib_by_content_length_is_413(api: Api) -> None:
    big = json.dumps(order_body("R1", sku="x" * (1 << 20))).encode()
    r = await api.client.post(
        "/api/v1/orders",
        content=big,
        headers=JSON_AS,
    )
    data = problem(r, 413)
    assert data["type"] == "urn:orderwatch:problem:too-large"
    assert "1 MiB" in data["detail"]
    assert await api.count_orders() == 0


async def test_body_over_1_mib_streamed_without_length_is_413(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"order_no": "R1", "sku": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    r = await api.client.post(
        "/api/v1/orders",
        content=chunks(),
        headers=JSON_AS,
    )
    assert "content-length" not in r.request.headers
    problem(r, 413)
    assert await api.count_orders() == 0


async def test_body_just_under_the_limit_is_read(make_api: MakeApi) -> None:
    api = await make_api(max_body=2000)
    body = json.dumps(order_body("R1")).encode()
    assert len(body) < 2000
    r = await api.client.post(
        "/api/v1/orders",
        content=body,
        headers=JSON_AS,
    )
    assert r.status_code == 201
    r = await api.client.post(
        "/api/v1/orders",
        content=body + b" " * (2001 - len(body)),
        headers=JSON_AS,
    )
    problem(r, 413)


async def test_fifty_parallel_identical_posts_make_one_order_and_one_event(api: Api) -> None:
    body = order_body("R-RACE")
    responses = await asyncio.gather(
        *(api.client.post("/api/v1/orders", json=body, headers=auth("platform")) for _ in range(50))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 49 + [201]
    assert len({r.json()["created_at"] for r in responses}) == 1
    assert await api.count_orders() == 1
    assert [e.kind for e in await api.events("R-RACE")] == ["created"]


async def test_a_lost_insert_race_answers_with_the_winners_order(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two API processes on one PostgreSQL may both find the order_no free; the loser's
    INSERT hits the unique key, and its second look finds the winner's order."""
    from sqlalchemy.exc import IntegrityError

    winner = await api.create("R1")
    real = api.service.submit
    calls: list[int] = []

    async def racing(orders: Any, *, actor: str | None = None) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO orders", {}, Exception("duplicate key"))
        return await real(orders, actor=actor)

    monkeypatch.setattr(api.service, "submit", racing)
    r = await api.client.post("/api/v1/orders", json=order_body("R1"), headers=auth("platform"))
    assert r.status_code == 200
    assert r.json() == winner
    assert len(calls) == 2
    r = await api.client.post(
        "/api/v1/orders", json=order_body("R1", sku="OTHER"), headers=auth("platform")
    )
    assert r.status_code == 409


# ---------------------------------------------------------------------------- GET one


async def test_get_order_with_timeline_and_notifications(api: Api) -> None:
    await api.create("R1")
    await api.client.post("/api/v1/orders/R1/cancel", headers=auth("operator"))
    r = await api.client.get("/api/v1/orders/R1", headers=auth("viewer"))
    assert r.status_code == 200
    o = r.json()
    assert o["status"] == "FAILED"
    assert o["status_label"] == "交易失败"
    assert o["reason"] == "CANCELLED"
    assert o["reason_text"] == Reason.CANCELLED.text
    assert o["counters"] == {"queries": 0, "abnormal": 0, "takeovers": 0}
    assert [e["kind"] for e in o["events"]] == ["created", "cancelled"]
    assert o["events"][1]["actor"] == NAMES["operator"]
    assert all(e["at"].endswith("Z") for e in o["events"])
    [note] = o["notifications"]
    assert note["type"] == "order.failed"
    assert note["state"] == "pending"
    assert note["attempts"] == 0


async def test_unknown_query_parameters_are_refused_everywhere(api: Api) -> None:
    await api.create("R1")
    r = await api.client.get("/api/v1/orders/R1?event=false", headers=auth("viewer"))
    assert fields(problem(r, 422)) == {"event"}
    r = await api.client.post("/api/v1/orders/R1/cancel?force=1", headers=auth("operator"))
    assert fields(problem(r, 422)) == {"force"}
    assert (await api.order("R1")).status.value == "PENDING"


async def test_get_order_without_events(api: Api) -> None:
    await api.create("R1")
    r = await api.client.get("/api/v1/orders/R1?events=false", headers=auth("platform"))
    assert r.status_code == 200
    assert "events" not in r.json()
    assert r.json()["notifications"] == []


async def test_viewer_sees_phone_and_address_masked(api: Api) -> None:
    await api.create("R1")
    for path in ("/api/v1/orders/R1", "/api/v1/orders"):
        viewer = (await api.client.get(path, headers=auth("viewer"))).json()
        operator = (await api.client.get(path, headers=auth("operator"))).json()
        seen = viewer if "recipient" in viewer else viewer["items"][0]
        full = operator if "recipient" in operator else operator["items"][0]
        assert seen["recipient"] == {
            "name": "张三",
            "phone": "138****0000",
            "address": "上海市浦东新****",
        }
        assert full["recipient"]["phone"] == "13800000000"
        assert full["recipient"]["address"] == "上海市浦东新区世纪大道100号"


async def test_unknown_order_is_404_problem(api: Api) -> None:
    r = await api.client.get("/api/v1/orders/NOPE", headers=auth("viewer"))
    data = problem(r, 404)
    assert data["order_no"] == "NOPE"
    assert data["instance"] == "/api/v1/orders/NOPE"


# ---------------------------------------------------------------------------- listing


async def _page(api: Api, query: str = "", role: str = "viewer") -> dict[str, Any]:
    r = await api.client.get(f"/api/v1/orders{query}", headers=auth(role))
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def test_list_newest_first_with_filters(api: Api) -> None:
    await api.create("A1")
    api.clock.advance(60)
    await api.create("A2", vendor="globex", customer_id="C9")
    api.clock.advance(60)
    await api.create("A3")
    await api.client.post("/api/v1/orders/A3/cancel", headers=auth("operator"))

    everything = await _page(api)
    assert [o["order_no"] for o in everything["items"]] == ["A3", "A2", "A1"]
    assert everything["next_cursor"] is None
    assert "events" not in everything["items"][0]

    async def numbers(query: str) -> list[str]:
        return [o["order_no"] for o in (await _page(api, query))["items"]]

    assert await numbers("?status=FAILED") == ["A3"]
    assert await numbers("?reason=CANCELLED") == ["A3"]
    assert await numbers("?status=PENDING") == ["A2", "A1"]
    assert await numbers("?vendor=globex") == ["A2"]
    assert await numbers("?customer_id=C9") == ["A2"]
    a2 = everything["items"][1]["created_at"]
    assert await numbers(f"?created_after={a2}") == ["A3", "A2"]
    assert await numbers(f"?created_before={a2}") == ["A1"]
    assert await numbers(f"?created_after={a2}&created_before={a2}") == []
    assert await numbers("?status=PENDING&vendor=acme") == ["A1"]


async def test_pages_are_stable_while_orders_arrive_and_change(api: Api) -> None:
    for i in range(7):
        await api.create(f"P{i}")
    first = await _page(api, "?limit=3")
    assert [o["order_no"] for o in first["items"]] == ["P6", "P5", "P4"]
    assert first["next_cursor"]
    # Meanwhile: new orders arrive and one on the next page changes status.
    await api.create("P7")
    await api.client.post("/api/v1/orders/P3/cancel", headers=auth("operator"))
    second = await _page(api, f"?limit=3&cursor={first['next_cursor']}")
    assert [o["order_no"] for o in second["items"]] == ["P3", "P2", "P1"]
    third = await _page(api, f"?limit=3&cursor={second['next_cursor']}")
    assert [o["order_no"] for o in third["items"]] == ["P0"]
    assert third["next_cursor"] is None


async def test_exact_last_page_has_no_cursor(api: Api) -> None:
    for i in range(4):
        await api.create(f"E{i}")
    first = await _page(api, "?limit=2")
    second = await _page(api, f"?limit=2&cursor={first['next_cursor']}")
    assert [o["order_no"] for o in second["items"]] == ["E1", "E0"]
    assert second["next_cursor"] is None


async def test_cursor_with_other_filters_is_refused(api: Api) -> None:
    for i in range(3):
        await api.create(f"C{i}")
    first = await _page(api, "?limit=1&status=PENDING")
    r = await api.client.get(
        f"/api/v1/orders?limit=1&status=FAILED&cursor={first['next_cursor']}",
        headers=auth("viewer"),
    )
    assert fields(problem(r, 422)) == {"cursor"}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=ten", "limit"),
        ("?status=LOST", "status"),
        ("?reason=BAD_LUCK", "reason"),
        ("?created_after=yesterday", "created_after"),
        ("?created_after=1700000000", "created_after"),  # Unix seconds are not RFC 3339
        ("?created_after=2026-11-26T01:02:03", "created_after"),  # no offset
        ("?created_after=2026-11-26", "created_after"),
        ("?cursor=not-a-cursor", "cursor"),
        ("?cursor=" + "A" * 300, "cursor"),
        ("?stauts=FAILED", "stauts"),  # a typo must not list every order
        ("?vendor=", "vendor"),  # an empty filter must not list every order either
        ("?customer_id=", "customer_id"),
        ("?status=PENDING&status=FAILED", "status"),  # only one of them could apply
        ("?vendor=acme&vendor=globex", "vendor"),
        ("?vendor=ac%00me", "vendor"),  # PostgreSQL cannot even compare with a NUL
        ("?customer_id=C%1b1", "customer_id"),
    ],
)
async def test_bad_list_parameters_are_422(api: Api, query: str, field: str) -> None:
    r = await api.client.get(f"/api/v1/orders{query}", headers=auth("viewer"))
    assert field in fields(problem(r, 422))


async def test_limit_default_50_max_500(api: Api) -> None:
    orders = [order_body(f"L{i:03d}") for i in range(120)]
    from orderwatch.intake import validate_order

    await api.service.submit([validate_order(o) for o in orders], actor="test")
    assert len((await _page(api))["items"]) == 50
    page = await _page(api, "?limit=500")
    assert len(page["items"]) == 120
    assert page["next_cursor"] is None


async def test_list_status_names_match_the_design(api: Api) -> None:
    await api.create("S1")
    data = await _page(api, "?status=PENDING")
    assert data["items"][0]["status"] in {s.value for s in Status}
