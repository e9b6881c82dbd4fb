"""The vendor simulator over real loopback HTTP: protocol, fates, noise, determinism, stop.

Every test talks to a started server with aiohttp, signing requests the way the reference
adapter will, so the simulator is checked as the worker will see it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest

from orderwatch.clock import ManualClock
from orderwatch.simulator import Simulator, SimulatorConfig
from orderwatch.vendors.signing import sign, verify

SECRET = "demo-secret"
MERCHANT = "M0001"

MakeSim = Callable[..., Awaitable[tuple[Simulator, str, ManualClock]]]


@pytest.fixture
async def make_sim() -> AsyncIterator[MakeSim]:
    """Start simulators on free loopback ports; stop every one of them afterwards."""
    started: list[Simulator] = []

    async def factory(
        clock: ManualClock | None = None, **settings: Any
    ) -> tuple[Simulator, str, ManualClock]:
        clock = clock or ManualClock()
        sim = Simulator(SimulatorConfig(**settings), clock=clock)
        url = await sim.start("127.0.0.1", 0)
        started.append(sim)
        return sim, url, clock

    yield factory
    for sim in started:
        await sim.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def place_body(
    order_no: str, *, secret: str = SECRET, sign_type: str = "HMAC-SHA256", **changes: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_id": MERCHANT,
        "order_no": order_no,
        "sku": "SKU-CUP-01",
        "quantity": 1,
        "recipient": {"name": "张三", "phone": "13800000000", "address": "上海市浦东新区1号"},
        "points": 1200,
        "timestamp": 1_790_000_000,
        "nonce": secrets.token_hex(8),
    }
    body.update(changes)
    body["sign"] = sign(body, secret, sign_type)
    return body


def query_body(
    order_no: str, *, secret: str = SECRET, sign_type: str = "HMAC-SHA256"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "merchant_id": MERCHANT,
        "order_no": order_no,
        "timestamp": 1_790_000_000,
        "nonce": secrets.token_hex(10),
    }
    body["sign"] = sign(body, secret, sign_type)
    return body


async def post_json(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.post(url, json=body) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def place(http: aiohttp.ClientSession, base: str, order_no: str, **kw: Any) -> dict[str, Any]:
    status, answer = await post_json(http, f"{base}/orders", place_body(order_no, **kw))
    assert status == 200
    return answer


async def query(http: aiohttp.ClientSession, base: str, order_no: str) -> dict[str, Any]:
    status, answer = await post_json(http, f"{base}/orders/query", query_body(order_no))
    assert status == 200
    assert verify(answer, SECRET), answer
    return answer


async def test_accepted_order_goes_processing_shipped_delivered(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, clock = await make_sim(delivery_min=3600, delivery_max=3600, ship_fraction=0.5)
    accepted_at = clock.now()

    answer = await place(http, base, "R-1")
    assert verify(answer, SECRET)
    assert answer["code"] == "0000"
    assert answer["data"]["status"] == "ACCEPTED"
    vendor_order_id = answer["data"]["vendor_order_id"]
    assert re.fullmatch(r"V\d{8}", vendor_order_id)

    first = await query(http, base, "R-1")
    assert first["code"] == "0000"
    assert first["data"]["status"] == "PROCESSING"
    assert first["data"]["description"] == "备货中"
    assert first["data"]["order_no"] == "R-1"
    assert first["data"]["vendor_order_id"] == vendor_order_id

    clock.advance(1799)
    assert (await query(http, base, "R-1"))["data"]["status"] == "PROCESSING"

    clock.advance(1)
    shipped = (await query(http, base, "R-1"))["data"]
    assert shipped["status"] == "SHIPPED"
    assert shipped["description"] == "运输中"
    logistics = shipped["logistics"]
    assert logistics["carrier"] == "SF"
    assert re.fullmatch(r"SF\d{10}", logistics["tracking_no"])
    assert logistics["events"][0] == {
        "at": (accepted_at + timedelta(seconds=1800)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "text": "已揽收",
    }

    clock.advance(1800)
    delivered = (await query(http, base, "R-1"))["data"]
    assert delivered["status"] == "DELIVERED"
    assert delivered["description"] == "已签收"
    assert delivered["logistics"]["tracking_no"] == logistics["tracking_no"]
    assert delivered["logistics"]["events"][-1]["text"] == "已签收"
    assert [e["at"] for e in delivered["logistics"]["events"]] == sorted(
        e["at"] for e in delivered["logistics"]["events"]
    )

    stats = sim.stats()
    assert stats["orders"] == 1
    assert stats["place_requests"] == 1
    assert stats["max_place_requests"] == 1
    assert stats["duplicates"] == 0
    assert stats["queries"] == 4
    assert stats["by_answer"] == {"accepted": 1, "processing": 2, "shipped": 1, "delivered": 1}


async def test_same_body_again_returns_first_answer_and_is_counted(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, _ = await make_sim()
    first = await place(http, base, "R-2")
    again = await place(http, base, "R-2")
    assert {k: again[k] for k in ("code", "message", "data")} == {
        k: first[k] for k in ("code", "message", "data")
    }
    assert sim.place_requests["R-2"] == 2
    assert sim.stats()["duplicates"] == 1
    assert sim.stats()["orders"] == 1


async def test_rejection_is_recorded_and_repeated(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, _ = await make_sim(reject_rate=1.0)
    first = await place(http, base, "R-3")
    assert verify(first, SECRET)
    assert (first["code"], first["message"]) in {("E101", "out of stock"), ("E102", "bad address")}
    assert "data" not in first

    again = await place(http, base, "R-3")
    assert (again["code"], again["message"]) == (first["code"], first["message"])
    assert sim.place_requests["R-3"] == 2
    assert sim.stats()["place_requests"] == 2
    assert sim.stats()["by_answer"]["rejected"] == 2
    # A refused order is not one the vendor will report on.
    assert (await query(http, base, "R-3"))["code"] == "E404"


async def test_rejections_use_both_codes(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    _, base, _ = await make_sim(reject_rate=1.0)
    codes = {(await place(http, base, f"RJ-{i}"))["code"] for i in range(30)}
    assert codes == {"E101", "E102"}


async def test_same_order_no_with_other_body_is_e103(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, _ = await make_sim()
    assert (await place(http, base, "R-4"))["code"] == "0000"
    conflict = await place(http, base, "R-4", quantity=2)
    assert verify(conflict, SECRET)
    assert conflict["code"] == "E103"
    assert "different body" in conflict["message"]
    # Only the business fields matter: a new nonce/timestamp is the same order.
    same = await place(http, base, "R-4", timestamp=1_790_000_999)
    assert same["code"] == "0000"
    assert sim.place_requests["R-4"] == 3
    assert (await query(http, base, "R-4"))["data"]["status"] == "PROCESSING"


async def test_bad_signature_is_e401_and_not_counted(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, _ = await make_sim()
    answer = await place(http, base, "R-5", secret="wrong-secret")
    assert verify(answer, SECRET)
    assert answer["code"] == "E401"
    bad_query = query_body("R-5", secret="wrong-secret")
    _, query_answer = await post_json(http, f"{base}/orders/query", bad_query)
    assert query_answer["code"] == "E401"

    assert sim.place_requests["R-5"] == 0
    assert sim.stats()["place_requests"] == 0
    assert sim.stats()["orders"] == 0
    assert sim.stats()["queries"] == 0
    # Nothing was recorded: the order is unknown to a correctly signed query.
    assert (await query(http, base, "R-5"))["code"] == "E404"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"points": -1}, "points"),
        ({"timestamp": "now"}, "timestamp"),
        ({"nonce": "short"}, "nonce"),
        ({"recipient": {"name": "张三", "phone": "1"}}, "recipient.address"),
        ({"merchant_id": "M9999"}, "merchant_id"),
        ({"sku": None}, "sku"),
    ],
)
async def test_bad_field_is_e400_naming_it(
    make_sim: MakeSim, http: aiohttp.ClientSession, changes: dict[str, Any], field: str
) -> None:
    sim, base, _ = await make_sim()
    answer = await place(http, base, "R-6", **changes)
    assert verify(answer, SECRET)
    assert answer["code"] == "E400"
    assert answer["message"].startswith(f"{field}:")
    assert sim.stats()["place_requests"] == 0


async def test_non_json_body_is_e400(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    _, base, _ = await make_sim()
    async with http.post(f"{base}/orders", data=b"not json") as response:
        answer = await response.json()
    assert answer["code"] == "E400"
    assert answer["message"].startswith("body:")


async def test_md5_sign_type(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    _, base, _ = await make_sim(sign_type="MD5")
    answer = await place(http, base, "R-7", sign_type="MD5")
    assert answer["code"] == "0000"
    assert verify(answer, SECRET, "MD5")
    assert answer["sign"] == answer["sign"].upper()
    hmac_signed = await place(http, base, "R-8")
    assert hmac_signed["code"] == "E401"


async def test_place_timeout_recorded_then_query_knows_the_order(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, _ = await make_sim(
        place_timeout_rate=1.0, place_timeout_recorded=1.0, hang=0.3, delivery_min=60
    )
    with pytest.raises(TimeoutError):
        await http.post(
            f"{base}/orders",
            json=place_body("R-9"),
            timeout=aiohttp.ClientTimeout(total=0.1),
        )
    assert sim.place_requests["R-9"] == 1
    assert sim.stats()["by_answer"]["timeout"] == 1
    known = await query(http, base, "R-9")
    assert known["code"] == "0000"
    assert known["data"]["status"] == "PROCESSING"
    # The retry gets the answer the lost one would have carried, with the same vendor id.
    retry = await place(http, base, "R-9")
    assert retry["code"] == "0000"
    assert retry["data"]["vendor_order_id"] == known["data"]["vendor_order_id"]
    assert sim.place_requests["R-9"] == 2


async def test_place_timeout_not_recorded_then_query_is_e404(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, _ = await make_sim(place_timeout_rate=1.0, place_timeout_recorded=0.0, hang=0.3)
    with pytest.raises(TimeoutError):
        await http.post(
            f"{base}/orders",
            json=place_body("R-10"),
            timeout=aiohttp.ClientTimeout(total=0.1),
        )
    assert (await query(http, base, "R-10"))["code"] == "E404"
    assert sim.stats()["orders"] == 0
    # The vendor never saw it, so placing again is a fresh order that now goes through.
    assert (await place(http, base, "R-10"))["code"] == "0000"
    assert sim.place_requests["R-10"] == 2
    assert (await query(http, base, "R-10"))["data"]["status"] == "PROCESSING"


async def test_hanging_request_answers_504_after_hang(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    _, base, _ = await make_sim(query_timeout_rate=1.0, hang=0.2)
    await place(http, base, "R-11")
    started = time.monotonic()
    async with http.post(f"{base}/orders/query", json=query_body("R-11")) as response:
        assert response.status == 504
    assert time.monotonic() - started >= 0.19


async def test_maintenance_http_style_answers_503_with_retry_after(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, clock = await make_sim(maintenance=[(100, 700)])
    assert (await place(http, base, "R-12"))["code"] == "0000"

    clock.advance(220.5)
    for path, body in (("/orders", place_body("R-13")), ("/orders/query", query_body("R-12"))):
        async with http.post(f"{base}{path}", json=body) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "480"  # ceil(700 - 220.5)
    assert sim.place_requests["R-13"] == 0
    assert sim.stats()["by_answer"]["maintenance"] == 2

    clock.advance(480)
    assert (await place(http, base, "R-13"))["code"] == "0000"
    assert (await query(http, base, "R-12"))["code"] == "0000"


async def test_maintenance_code_style_answers_signed_e503(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    _, base, clock = await make_sim(maintenance=[(0, 60)], maintenance_style="code")
    clock.advance(15)
    async with http.post(f"{base}/orders", json=place_body("R-14")) as response:
        assert response.status == 200
        assert response.headers["Retry-After"] == "45"
        answer = await response.json()
    assert answer["code"] == "E503"
    assert verify(answer, SECRET)


async def test_garbage_is_html_and_may_hide_an_accepted_order(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, _ = await make_sim(garbage_rate=1.0)
    async with http.post(f"{base}/orders", json=place_body("R-15")) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        text = await response.text()
    assert text.lstrip().startswith("<html")
    assert sim.stats()["by_answer"] == {"garbage": 1}

    sim.configure(garbage_rate=0.0)
    assert (await query(http, base, "R-15"))["data"]["status"] == "PROCESSING"


async def test_error_rate_answers_500_text(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim, base, _ = await make_sim(error_rate=1.0)
    async with http.post(f"{base}/orders", json=place_body("R-16")) as response:
        assert response.status == 500
        assert response.content_type == "text/plain"
    assert sim.stats()["by_answer"] == {"error": 1}
    assert sim.stats()["orders"] == 1


async def test_bad_sign_answer_fails_verification(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, _ = await make_sim(bad_sign_rate=1.0)
    _, answer = await post_json(http, f"{base}/orders", place_body("R-17"))
    assert answer["code"] == "0000"
    assert isinstance(answer["sign"], str)
    assert answer["sign"]
    assert not verify(answer, SECRET)
    assert sim.stats()["by_answer"] == {"bad_sign": 1}


async def test_fail_fate_reports_failed_after_the_delay(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    _, base, clock = await make_sim(fail_rate=1.0, delivery_min=7200, delivery_max=7200)
    await place(http, base, "R-18")
    clock.advance(7199)
    assert (await query(http, base, "R-18"))["data"]["status"] == "SHIPPED"
    clock.advance(1)
    data = (await query(http, base, "R-18"))["data"]
    assert data["status"] == "FAILED"
    assert data["description"] == "收件人拒收"


async def test_forgotten_order_is_always_e404(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    _, base, clock = await make_sim(forget_rate=1.0)
    assert (await place(http, base, "R-19"))["code"] == "0000"
    for _ in range(3):
        answer = await query(http, base, "R-19")
        assert (answer["code"], answer["message"]) == ("E404", "order not found")
        clock.advance(86400)


async def test_late_order_is_delivered_only_after_late_min(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    _, base, clock = await make_sim(
        late_rate=1.0, delivery_max=3600, late_min=8 * 86400, late_max=9 * 86400
    )
    await place(http, base, "R-20")
    clock.advance(8 * 86400 - 1)
    assert (await query(http, base, "R-20"))["data"]["status"] == "SHIPPED"
    clock.advance(86400 + 1)
    assert (await query(http, base, "R-20"))["data"]["status"] == "DELIVERED"


async def test_latency_delays_answers(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    _, base, _ = await make_sim(latency=0.15)
    started = time.monotonic()
    await place(http, base, "R-21")
    assert time.monotonic() - started >= 0.14


async def _run_sequence(
    make_sim: MakeSim, http: aiohttp.ClientSession, seed: int
) -> list[tuple[int, str, str]]:
    """A mixed workload; each answer reduced to (HTTP status, content type, body)."""
    _, base, clock = await make_sim(
        seed=seed,
        reject_rate=0.3,
        fail_rate=0.3,
        late_rate=0.2,
        garbage_rate=0.15,
        bad_sign_rate=0.15,
        error_rate=0.1,
    )
    seen: list[tuple[int, str, str]] = []
    order_nos = [f"D-{i}" for i in range(15)]
    for order_no in order_nos:
        for _ in range(2):
            async with http.post(f"{base}/orders", json=place_body(order_no)) as response:
                seen.append((response.status, response.content_type, await response.text()))
    for _ in range(3):
        clock.advance(2 * 86400)
        for order_no in order_nos:
            async with http.post(f"{base}/orders/query", json=query_body(order_no)) as response:
                seen.append((response.status, response.content_type, await response.text()))
    return seen


async def test_same_seed_gives_same_answers(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    first = await _run_sequence(make_sim, http, seed=7)
    second = await _run_sequence(make_sim, http, seed=7)
    assert first == second
    # The workload does exercise the randomness: another seed answers differently.
    other = await _run_sequence(make_sim, http, seed=8)
    assert other != first
    assert len({status for status, _, _ in first}) > 1


async def test_stop_is_prompt_while_a_request_hangs(
    make_sim: MakeSim, http: aiohttp.ClientSession
) -> None:
    sim, base, _ = await make_sim(place_timeout_rate=1.0, hang=30.0)
    pending = asyncio.create_task(http.post(f"{base}/orders", json=place_body("R-22")))
    for _ in range(200):
        if sim.place_requests["R-22"]:
            break
        await asyncio.sleep(0.01)
    assert sim.place_requests["R-22"] == 1

    started = time.monotonic()
    await sim.stop()
    assert time.monotonic() - started < 1.0

    try:
        response = await pending
    except aiohttp.ClientError:
        pass  # the connection closed under the request: also a prompt end
    else:
        assert response.status == 504
        response.release()
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(f"{base}/_sim/healthz")


async def test_control_endpoints(make_sim: MakeSim, http: aiohttp.ClientSession) -> None:
    sim, base, _ = await make_sim()
    async with http.get(f"{base}/_sim/healthz") as response:
        assert await response.json() == {"ok": True}

    async with http.post(
        f"{base}/_sim/config", json={"reject_rate": 1.0, "maintenance": [[1000, 2000]]}
    ) as response:
        assert response.status == 200
        config = await response.json()
    assert config["reject_rate"] == 1.0
    assert config["maintenance"] == [[1000.0, 2000.0]]
    assert sim.config.reject_rate == 1.0
    assert (await place(http, base, "R-23"))["code"] in {"E101", "E102"}

    async with http.post(f"{base}/_sim/config", json={"reject_rat": 1.0}) as response:
        assert response.status == 400
        assert "reject_rat" in (await response.json())["error"]
    async with http.post(f"{base}/_sim/config", json={"error_rate": 2}) as response:
        assert response.status == 400
        assert "error_rate" in (await response.json())["error"]
    assert sim.config.error_rate == 0.0

    async with http.get(f"{base}/_sim/stats") as response:
        stats = await response.json()
    assert stats == sim.stats()
    assert stats["place_requests"] == 1
    assert stats["by_answer"] == {"rejected": 1}


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="reject_rate"):
        SimulatorConfig(reject_rate=1.5)
    with pytest.raises(ValueError, match="sign_type"):
        SimulatorConfig(sign_type="SHA1")
    with pytest.raises(ValueError, match=r"maintenance\[0\]"):
        SimulatorConfig(maintenance=[(10, 5)])
    sim = Simulator()
    with pytest.raises(ValueError, match="unknown"):
        sim.configure(nope=1)
