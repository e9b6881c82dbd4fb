"""Hostile vendor answers over loopback: a tiny aiohttp vendor that says exactly what a test
tells it to (signed with the right secret), against a real worker and database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from tests.integration.conftest import drive
from tests.support.databases import KINDS, require
from tests.support.orders import new_order

from orderwatch.lifecycle import DESCRIPTION_MAX
from orderwatch.order import Order
from orderwatch.outcomes import Abnormal, Accepted, Exchange, InProgress
from orderwatch.statuses import Reason, Status
from orderwatch.vendors import signing
from orderwatch.vendors.reference import ReferenceAdapter

SECRET = "s3cret"  # what tests/integration/conftest.py configures for vendor acme

Answer = tuple[int, dict[str, str], bytes]


def signed(answer: dict[str, Any]) -> bytes:
    fields = dict(answer)
    fields["sign"] = signing.sign(fields, SECRET)
    return json.dumps(fields, ensure_ascii=False).encode()


def ok(**data: Any) -> Answer:
    return 200, {}, signed({"code": "0000", "message": "ok", "data": data})


class HostileVendor:
    """``on_place`` / ``on_query`` map the request body to (HTTP status, headers, body)."""

    def __init__(
        self,
        on_place: Callable[[dict[str, Any]], Answer],
        on_query: Callable[[dict[str, Any]], Answer],
    ) -> None:
        self.on = {"place": on_place, "query": on_query}
        self.requests: dict[str, list[str]] = {"place": [], "query": []}
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def _handle(self, kind: str, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests[kind].append(body["order_no"])
        status, headers, raw = self.on[kind](body)
        return web.Response(
            status=status, headers=headers, body=raw, content_type="application/json"
        )

    async def start(self) -> None:
        app = web.Application()

        async def place(request: web.Request) -> web.Response:
            return await self._handle("place", request)

        async def query(request: web.Request) -> web.Response:
            return await self._handle("query", request)

        app.router.add_post("/orders", place)
        app.router.add_post("/orders/query", query)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def hostile() -> Any:
    made: list[HostileVendor] = []

    async def factory(on_place: Any, on_query: Any) -> HostileVendor:
        v = HostileVendor(on_place, on_query)
        await v.start()
        made.append(v)
        return v

    yield factory
    for v in made:
        await v.stop()


async def test_a_signed_answer_about_another_order_does_not_end_this_one(
    hostile: Any, clock: Any, make_service: Any, make_worker: Any, drive: Any
) -> None:
    """The vendor mixes answers up: every query is answered, correctly signed, with the
    result of order R-OTHER (delivered). R1 must not become SUCCEEDED on it."""
    vendor = await hostile(
        lambda b: ok(vendor_order_id="V-" + b["order_no"], status="ACCEPTED"),
        lambda b: ok(order_no="R-OTHER", vendor_order_id="V-R-OTHER", status="DELIVERED"),
    )
    service = await make_service(vendor.base_url, clock, polling={"max_polls": 3})
    await service.submit([new_order("R1")], actor="test")
    orders = await drive(service, make_worker(service), clock, ["R1"])
    r1 = orders["R1"]
    assert vendor.requests["query"], "never queried"
    assert r1.status is not Status.SUCCEEDED, (r1.status, r1.description, r1.vendor_order_id)
    assert (r1.status, r1.reason) == (Status.FAILED, Reason.MAX_POLLS_EXCEEDED)


@pytest.mark.parametrize("db_kind", ["postgresql", "mysql"])
async def test_an_oversized_vendor_value_does_not_stall_the_workers_writes(
    db_kind: str, hostile: Any, clock: Any, make_service: Any, make_worker: Any
) -> None:
    """A correctly signed place-order answer whose vendor_order_id is longer than the
    column (VARCHAR(128)) must not poison the write-back of every order in the batch."""
    require(db_kind)
    vendor = await hostile(
        lambda b: ok(
            vendor_order_id=("X" * 200 if b["order_no"] == "R1" else "V-" + b["order_no"]),
            status="ACCEPTED",
        ),
        lambda b: ok(status="PROCESSING"),
    )
    service = await make_service(vendor.base_url, clock)
    await service.submit([new_order("R1"), new_order("R2")], actor="test")
    worker = make_worker(service)
    crashed: BaseException | None = None
    try:
        await asyncio.wait_for(worker.run(burst=True), timeout=8)
    except TimeoutError as exc:  # the burst never finished: its write-back kept failing
        crashed = exc
    except Exception as exc:  # the worker itself died of the vendor's value
        crashed = exc
    r1 = await service.store.get_order("R1")
    r2 = await service.store.get_order("R2")
    assert sorted(vendor.requests["place"]) == ["R1", "R2"]
    assert r1 is not None
    assert r2 is not None
    # R2's answer was perfectly fine: it must have been recorded as ORDERED
    assert (r2.status, crashed) == (Status.ORDERED, None), (r2.description, repr(crashed))
    # R1's answer is recorded as abnormal (naming the field), not left unwritten
    assert r1.status is Status.SENT, (r1.status, r1.description)
    assert r1.abnormal == 1


@pytest.mark.parametrize(
    "retry_after",
    [
        "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",  # OverflowError while parsing
        "Fri, 31 Dec 9999 23:59:59 -1400",  # parses; now + delay is past datetime.max
    ],
)
async def test_a_503_with_an_absurd_retry_after_date_is_recorded_and_counted(
    retry_after: str, hostile: Any, clock: Any, make_service: Any, make_worker: Any
) -> None:
    vendor = await hostile(
        lambda b: ok(vendor_order_id="V-" + b["order_no"], status="ACCEPTED"),
        lambda b: (503, {"Retry-After": retry_after}, b"maintenance"),
    )
    service = await make_service(vendor.base_url, clock)
    await service.submit([new_order("R1")], actor="test")
    worker = make_worker(service)
    await worker.run(burst=True)  # places R1
    clock.set((await service.store.get_order("R1")).next_run_at)
    await worker.run(burst=True)  # first result query: 503 + Retry-After
    assert vendor.requests["query"] == ["R1"]
    detail = await service.get("R1")
    r1 = detail.order
    assert [e.outcome for e in detail.events if e.outcome][-1] == "abnormal:maintenance"
    assert (r1.status, r1.queries, r1.abnormal) == (Status.ORDERED, 1, 1)
    assert r1.next_run_at is not None
    assert r1.next_run_at > clock.now()


async def test_a_gzip_bomb_with_a_small_content_length_is_not_inflated(
    hostile: Any, clock: Any, make_service: Any, make_worker: Any
) -> None:
    import gzip

    bomb = gzip.compress(b" " * (64 << 20), 9)  # 64 MiB of spaces in ~64 KiB
    vendor = await hostile(
        lambda b: ok(vendor_order_id="V-" + b["order_no"], status="ACCEPTED"),
        lambda b: (200, {"Content-Encoding": "gzip"}, bomb),
    )
    service = await make_service(vendor.base_url, clock, vendor={"timeout": "20s"})
    adapter = make_worker(service).vendors.get("acme")
    await service.submit([new_order("R1")], actor="test")
    order = await service.store.get_order("R1")
    exchange = await adapter.query(order)
    assert isinstance(exchange.outcome, Abnormal)
    assert "larger than" in exchange.outcome.detail, exchange.outcome.detail[:120]


@pytest.mark.parametrize("db_kind", KINDS)
async def test_long_vendor_texts_are_kept_short_enough_to_store(
    hostile: Any, clock: Any, make_service: Any, make_worker: Any, drive: Any
) -> None:
    """A vendor answering with a 90 kB description (correctly signed): the order still
    ends, its description cut (MariaDB's TEXT holds 64 KiB: stored as sent, it failed
    every write of the worker's batch, for good)."""
    queries = 0

    def on_query(body: dict[str, Any]) -> Answer:
        nonlocal queries
        queries += 1
        if queries == 1:
            return ok(status="PROCESSING", description="在途" * 20, vendor_order_id="V1")
        return ok(status="DELIVERED", description="已签收" * 15_000, vendor_order_id="V1")

    vendor = await hostile(lambda b: ok(vendor_order_id="V1", status="ACCEPTED"), on_query)
    service = await make_service(vendor.base_url, clock)
    await service.submit([new_order("R1")], actor="test")
    r1 = (await asyncio.wait_for(drive(service, make_worker(service), clock, ["R1"]), 30))["R1"]
    assert r1.status is Status.SUCCEEDED, (r1.status, (r1.description or "")[:80])
    assert r1.description is not None
    assert r1.description.startswith("已签收已签收")
    assert len(r1.description) <= DESCRIPTION_MAX


@pytest.mark.parametrize("db_kind", ["postgresql"])
async def test_a_result_the_database_refuses_does_not_hold_back_the_others(
    clock: Any, make_simulator: Any, make_service: Any, make_worker: Any, monkeypatch: Any
) -> None:
    """A plug-in adapter hands over a value the database cannot store (a NUL in a vendor
    order id, for PostgreSQL). Retried as it was, the batch failed for good, and with it
    every result behind it. Now every other result of the batch is stored, and that one
    is stored as an abnormal answer instead (none of its values kept): the order is
    reconciled by query on the schedule and ends, placed once."""
    sim = await make_simulator(clock)
    service = await make_service(sim.base_url, clock)
    nos = [f"R{i}" for i in range(1, 6)]
    await service.submit([new_order(no) for no in nos], actor="test")
    place = ReferenceAdapter.place

    async def plugin_place(self: ReferenceAdapter, order: Order) -> Exchange:
        exchange = await place(self, order)
        if order.order_no == "R3":
            exchange = replace(exchange, outcome=Accepted("V\x00R3"))
        return exchange

    monkeypatch.setattr(ReferenceAdapter, "place", plugin_place)
    worker = make_worker(service)
    await asyncio.wait_for(worker.run(burst=True), 20)
    after = {no: await service.store.get_order(no) for no in nos}
    assert {no: o.status for no, o in after.items() if o is not None} == {
        "R1": Status.ORDERED,
        "R2": Status.ORDERED,
        "R3": Status.SENT,  # its answer could not be stored: reconciled by query
        "R4": Status.ORDERED,
        "R5": Status.ORDERED,
    }
    assert worker.stats.refused == 1
    detail = await service.get("R3")
    assert detail.order.abnormal == 1
    assert detail.order.locked_until is None  # given back, not left to expire
    assert "answer could not be stored" in json.dumps(detail.events[-1].detail)
    r3 = (await asyncio.wait_for(drive(service, worker, clock, ["R3"]), 30))["R3"]
    assert r3.status.is_final
    assert r3.vendor_order_id is None or "\x00" not in r3.vendor_order_id
    assert sim.place_requests["R3"] == 1


@pytest.mark.parametrize("db_kind", ["postgresql"])
async def test_a_nul_in_a_signed_vendor_order_id_does_not_keep_the_order_open_for_ever(
    db_kind: str, hostile: Any, clock: Any, make_service: Any, make_worker: Any
) -> None:
    """Through the reference adapter itself: the vendor repeats the NUL on every answer.
    Dropped at each write-back, the order was re-queried each lease, past its deadline,
    and never ended (the DEADLINE_EXCEEDED write carried the same value)."""
    vendor = await hostile(
        lambda b: ok(vendor_order_id="V\x00" + b["order_no"], status="ACCEPTED"),
        lambda b: ok(vendor_order_id="V\x00" + b["order_no"], status="PROCESSING"),
    )
    service = await make_service(vendor.base_url, clock, worker={"lease": "1s"})
    await service.submit([new_order("R1")], actor="test")
    worker = make_worker(service)
    await asyncio.wait_for(worker.run(burst=True), 10)
    clock.advance(8 * 86400)  # past the deadline (and any lease: ManualClock's real time)
    for _ in range(3):
        await asyncio.wait_for(worker.run(burst=True), 10)
        clock.advance(2)
    r1 = await service.store.get_order("R1")
    assert r1 is not None
    assert r1.status.is_final, (r1.status, r1.next_run_at, worker.stats.refused)
    assert worker.stats.refused == 0


@pytest.mark.parametrize("db_kind", KINDS)
async def test_a_plugin_answer_the_database_would_cut_is_taken_as_abnormal(
    clock: Any, make_simulator: Any, make_service: Any, make_worker: Any, monkeypatch: Any
) -> None:
    """A plug-in adapter (one that does not check its own answers) hands over 90 kB of
    logistics with a PROCESSING answer. MariaDB's batched write-back cut such a text
    silently (strict mode or not), storing broken JSON that every later read of the order
    failed on (JSONDecodeError); the other databases stored it whole. Now the worker
    checks a plug-in's answer before using it: that answer counts as abnormal and is
    retried on schedule, the others of the batch land, and the order ends once its vendor
    answers sensibly."""
    sim = await make_simulator(clock)
    service = await make_service(sim.base_url, clock)
    await service.submit([new_order("R1"), new_order("R2")], actor="test")
    query = ReferenceAdapter.query
    huge = {"carrier": "SF", "events": [{"text": "运输中" * 10_000}]}
    sent: list[str] = []

    async def plugin_query(self: ReferenceAdapter, order: Order) -> Exchange:
        exchange = await query(self, order)
        sent.append(order.order_no)
        if order.order_no == "R1" and sent.count("R1") == 1:
            return replace(exchange, outcome=InProgress("PROCESSING", "运输中", huge))
        return exchange

    monkeypatch.setattr(ReferenceAdapter, "query", plugin_query)
    monkeypatch.setattr(ReferenceAdapter, "checks_answers", False)  # as a plug-in's
    worker = make_worker(service)
    await asyncio.wait_for(worker.run(burst=True), 20)  # both placed
    clock.advance(11 * 60)  # the first query is due 10 min after acceptance
    await asyncio.wait_for(worker.run(burst=True), 20)
    assert sorted(sent) == ["R1", "R2"]
    r1 = await service.get("R1")
    assert r1.order.abnormal == 1
    assert r1.order.logistics is None
    assert "adapter answer: logistics is larger than" in json.dumps(r1.events[-1].detail)
    assert worker.stats.refused == 0  # refused before the database was asked
    r2 = await service.store.get_order("R2")
    assert r2 is not None
    assert r2.abnormal == 0
    assert r2.queries == 1
    done = await asyncio.wait_for(drive(service, worker, clock, ["R1", "R2"]), 60)
    assert all(o.status.is_final for o in done.values())
    assert sim.place_requests["R1"] == 1


async def test_a_plugin_place_answer_the_order_cannot_keep_is_reconciled(
    clock: Any, make_simulator: Any, make_service: Any, make_worker: Any, monkeypatch: Any
) -> None:
    """The place-order side of the check: a plug-in accepts with a NUL in the vendor's
    order id. Taken as abnormal before anything is stored, the order stays SENT and is
    reconciled by query (placed once), not failed, and not left to the database to refuse."""
    sim = await make_simulator(clock)
    service = await make_service(sim.base_url, clock)
    await service.submit([new_order("R1")], actor="test")
    place = ReferenceAdapter.place

    async def plugin_place(self: ReferenceAdapter, order: Order) -> Exchange:
        exchange = await place(self, order)
        return replace(exchange, outcome=Accepted("V\x00" + order.order_no))

    monkeypatch.setattr(ReferenceAdapter, "place", plugin_place)
    monkeypatch.setattr(ReferenceAdapter, "checks_answers", False)
    worker = make_worker(service)
    await asyncio.wait_for(worker.run(burst=True), 20)
    r1 = await service.get("R1")
    assert r1.order.status is Status.SENT
    assert r1.order.abnormal == 1
    assert "adapter answer: vendor_order_id holds a NUL" in json.dumps(r1.events[-1].detail)
    assert worker.stats.refused == 0
    done = await asyncio.wait_for(drive(service, worker, clock, ["R1"]), 60)
    assert done["R1"].status.is_final
    assert done["R1"].vendor_order_id is None or "\x00" not in done["R1"].vendor_order_id
    assert sim.place_requests["R1"] == 1


@pytest.mark.parametrize("db_kind", KINDS)
async def test_logistics_beyond_what_orjson_holds_are_kept_exactly(
    hostile: Any, clock: Any, make_service: Any, make_worker: Any, drive: Any
) -> None:
    """orderwatch writes its rows and notification bodies with orjson, which refuses an
    integer beyond 64 bits and reads one back as a float. A vendor's logistics holding
    one (a vendor's own parcel id sent as a number), a float and Chinese text are stored,
    read back for the next poll, written again and put in the notifications unchanged."""
    logistics = {
        "carrier": "顺丰",
        "tracking_no": "SF1234567890",
        "parcel_id": 123456789012345678901234567890,
        "weight_kg": 1.25,
        "events": [{"at": "2026-12-01T10:00:00Z", "where": "北京", "n": -(2**70)}],
    }
    queries = 0

    def on_query(body: dict[str, Any]) -> Answer:
        nonlocal queries
        queries += 1
        if queries == 1:
            return ok(status="SHIPPED", logistics=logistics, vendor_order_id="V1")
        return ok(status="DELIVERED", vendor_order_id="V1")  # no logistics: the kept ones

    vendor = await hostile(lambda b: ok(vendor_order_id="V1", status="ACCEPTED"), on_query)
    service = await make_service(vendor.base_url, clock)
    await service.submit([new_order("R1")], actor="test")
    r1 = (await asyncio.wait_for(drive(service, make_worker(service), clock, ["R1"]), 30))["R1"]
    assert r1.status is Status.SUCCEEDED, (r1.status, r1.description)
    assert r1.logistics == logistics
    assert isinstance(r1.logistics["parcel_id"], int)
    notes = await service.store.list_outbox(r1.id)
    bodies = {n.event_type: json.loads(n.payload) for n in notes}
    assert set(bodies) == {"order.shipped", "order.succeeded"}, set(bodies)
    for kind, body in bodies.items():
        assert body["data"]["logistics"] == logistics, kind
