"""Webhook delivery end to end: real SQLite outbox, real deliverer, real receiver on 127.0.0.1.

Every request is checked by the ``standardwebhooks`` reference library in the receiver;
schedule time is a :class:`ManualClock` moved from one retry to the next, so days of
retries take a second. HTTP timeouts are real (short) seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import defaultdict
from datetime import timedelta

import pytest
from notify_helpers import (
    START,
    Hit,
    MakeReceiver,
    drive,
    new_secret,
    next_pending_at,
    notify_orders,
    outbox_rows,
)

from orderwatch.clock import ManualClock
from orderwatch.notify import Deliverer, RetryPolicy
from orderwatch.store.base import OrderFilter
from orderwatch.store.sql import SqlStore
from orderwatch.webhook import WebhookChannel

POLICY = RetryPolicy(initial_interval=30, max_interval=3600, max_age=3 * 86400)
DAY = timedelta(days=1)


def deliverer(
    store: SqlStore,
    clock: ManualClock,
    url: str,
    *,
    secret: str | None = None,
    timeout: float = 0.5,
    concurrency: int = 16,
    **kwargs: object,
) -> Deliverer:
    from notify_helpers import SECRET

    channel = WebhookChannel(
        url, secret or SECRET, timeout=timeout, concurrency=concurrency, clock=clock
    )
    return Deliverer(
        store,
        clock=clock,
        channel=channel,
        policy=POLICY,
        rng=random.Random(7),
        **kwargs,  # type: ignore[arg-type]
    )


def assert_in_order(hits: list[Hit]) -> None:
    """Per order, the receiver never sees a notification again once a later one came."""
    seen: dict[str, list[str]] = defaultdict(list)
    for h in hits:
        types = seen[h.order_no]
        if types and types[-1] != h.type:
            assert h.type not in types, f"{h.order_no}: {h.type} after {types}"
        types.append(h.type)


async def test_every_answer_in_turn_ends_delivered_same_id_in_order(
    store: SqlStore, clock: ManualClock, make_receiver: MakeReceiver
) -> None:
    rotation = itertools.cycle(["500", "429", "timeout", "slow", "503", "200", "408", "302"])
    receiver = await make_receiver(clock, plan=lambda hit, n: next(rotation))
    orders = [f"R{i:03d}" for i in range(12)]
    await notify_orders(store, orders[:6], ["order.shipped", "order.succeeded"])
    await notify_orders(store, orders[6:], ["order.shipped", "order.failed"])
    d = deliverer(store, clock, receiver.url, timeout=0.3)
    started = time.perf_counter()
    await drive(d, store, clock)
    await d.aclose()

    rows = await outbox_rows(store)
    assert len(rows) == 24
    assert {r.state for r in rows} == {"delivered"}
    assert all(h.verified for h in receiver.hits)  # the reference library accepted every one
    # every final state reached the receiver with a 2xx, at least once
    delivered = {(h.order_no, h.type) for h in receiver.delivered()}
    for no in orders:
        final = "order.succeeded" if no < "R006" else "order.failed"
        assert {(no, "order.shipped"), (no, final)} <= delivered
    # the same webhook-id on every retry of a notification, a new one per notification
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for h in receiver.hits:
        ids[h.order_no, h.type].add(h.msg_id)
    assert all(len(v) == 1 for v in ids.values())
    assert len({next(iter(v)) for v in ids.values()}) == 24
    assert_in_order(receiver.hits)
    # retries happened, and each row counts its attempts
    assert len(receiver.hits) > 24
    by_id = defaultdict(list)
    for h in receiver.hits:
        by_id[h.msg_id].append(h)
    for r in rows:
        assert r.attempts == len(by_id[f"msg_{r.order_no}_{r.id}"])
    # Retry-After: 600 after a 429 was honoured (schedule time)
    for hits in by_id.values():
        for before, after in itertools.pairwise(hits):
            if before.answer == "429":
                assert after.at - before.at >= timedelta(seconds=600)
    # the body sent is the stored payload, byte for byte
    payloads = {f"msg_{r.order_no}_{r.id}": r.payload.encode() for r in rows}
    assert all(h.body == payloads[h.msg_id] for h in receiver.hits)
    assert json.loads(receiver.hits[0].body)["data"]["recipient"]["name"] == "张三"
    assert time.perf_counter() - started < 30


async def test_410_is_final_and_the_next_notification_goes_on(
    store: SqlStore, clock: ManualClock, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(
        clock, plan=lambda hit, n: "410" if hit.type == "order.shipped" else "200"
    )
    await notify_orders(store, ["A1"], ["order.shipped", "order.succeeded"])
    d = deliverer(store, clock, receiver.url)
    await drive(d, store, clock)
    await d.aclose()
    shipped, succeeded = sorted(await outbox_rows(store), key=lambda r: r.id)
    assert (shipped.state, shipped.attempts, shipped.last_error) == (
        "failed",
        1,
        "HTTP 410: answer 410",
    )
    assert (succeeded.state, succeeded.attempts) == ("delivered", 1)
    assert [h.answer for h in receiver.hits] == ["410", "200"]

    # an operator sends the failed ones again; they go out with the same id
    matched, changed = await store.redeliver_failed(OrderFilter(), now=clock.now(), dry_run=True)
    assert (matched, changed) == (1, 0)
    receiver.plan = lambda hit, n: "200"
    assert await store.redeliver_failed(OrderFilter(vendor="acme"), now=clock.now()) == (1, 1)
    await drive(d, store, clock)
    await d.aclose()
    again = {r.id: r for r in await outbox_rows(store)}[shipped.id]
    assert (again.state, again.attempts) == ("delivered", 2)
    assert receiver.hits[-1].msg_id == receiver.hits[0].msg_id
    assert await store.redeliver_failed(OrderFilter(), now=clock.now()) == (0, 0)


async def test_a_later_notification_waits_for_the_earlier_one(
    store: SqlStore, clock: ManualClock, make_receiver: MakeReceiver
) -> None:
    # the shipped notice fails three times; the final one must not overtake it
    receiver = await make_receiver(
        clock, plan=lambda hit, n: "500" if hit.type == "order.shipped" and n < 3 else "200"
    )
    await notify_orders(store, [f"B{i}" for i in range(20)], ["order.shipped", "order.failed"])
    d = deliverer(store, clock, receiver.url, concurrency=8, batch_size=50)
    # the concurrent loop, not just run_once: burst rounds between clock jumps
    while True:
        await d.run(burst=True)
        nxt = await next_pending_at(store)
        if nxt is None:
            break
        clock.set(nxt)
    assert_in_order(receiver.hits)
    per_order = defaultdict(list)
    for h in receiver.hits:
        per_order[h.order_no].append((h.type, h.answer))
    for seq in per_order.values():  # three refusals, the shipped notice, then the final one
        assert seq == [("order.shipped", "500")] * 3 + [
            ("order.shipped", "200"),
            ("order.failed", "200"),
        ]
    assert {r.state for r in await outbox_rows(store)} == {"delivered"}
    assert len(receiver.hits) == 20 * 5


async def test_receiver_down_for_a_day_loses_nothing(
    store: SqlStore, clock: ManualClock, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(clock)
    await receiver.stop()  # down: connections refused
    await notify_orders(store, [f"C{i:02d}" for i in range(12)], ["order.succeeded"])
    d = deliverer(store, clock, receiver.url)
    await drive(d, store, clock, until=START + DAY)
    rows = await outbox_rows(store)
    assert {r.state for r in rows} == {"pending"}
    assert all(r.last_error and "Connect" in r.last_error for r in rows)
    # backoff from 30s to the 1h cap: about 7 short tries, then one an hour
    assert all(25 <= r.attempts <= 35 for r in rows)

    await receiver.start()  # back, on the same port
    clock.set(START + DAY)
    await drive(d, store, clock)
    await d.aclose()
    rows = await outbox_rows(store)
    assert {r.state for r in rows} == {"delivered"}
    assert all(
        r.delivered_at and r.delivered_at <= START + DAY + timedelta(hours=1.1) for r in rows
    )
    assert len({h.msg_id for h in receiver.hits}) == 12
    assert all(h.verified for h in receiver.hits)


async def test_max_age_is_honoured(
    store: SqlStore, clock: ManualClock, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(clock, plan=lambda hit, n: "503")
    await notify_orders(store, ["D1", "D2"], ["order.failed"])
    d = deliverer(store, clock, receiver.url)
    await drive(d, store, clock)
    await d.aclose()
    rows = await outbox_rows(store)
    assert {r.state for r in rows} == {"failed"}
    assert all(r.last_error and "gave up" in r.last_error for r in rows)
    last = {h.order_no: h.at for h in receiver.hits}
    # the last try happens at the max-age mark, none after it
    assert last == {"D1": START + timedelta(days=3), "D2": START + timedelta(days=3)}
    assert all(
        r.attempts == len([h for h in receiver.hits if h.order_no == r.order_no]) for r in rows
    )


async def test_killed_mid_send_is_delivered_again_after_the_lease(
    store: SqlStore, clock: ManualClock, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(clock, plan=lambda hit, n: "hang" if n == 0 else "200")
    await notify_orders(store, ["K1"], ["order.succeeded"])
    first = deliverer(store, clock, receiver.url, timeout=30, lease=60)
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    task.cancel()  # the deliverer dies mid-send
    with pytest.raises(asyncio.CancelledError):
        await task
    (row,) = await outbox_rows(store)
    assert row.state == "pending"
    assert row.lease_token is not None  # still leased: nobody may take it yet

    second = deliverer(store, clock, receiver.url, lease=60)
    assert await second.run_once() == 0
    clock.real_offset += timedelta(seconds=61)  # the lease runs out (real time)
    assert await second.run_once() == 1
    await second.aclose()
    (row,) = await outbox_rows(store)
    assert (row.state, row.attempts) == ("delivered", 1)
    assert [h.answer for h in receiver.hits] == ["hang", "200"]
    assert receiver.hits[0].msg_id == receiver.hits[1].msg_id


async def test_a_late_sender_is_fenced_out_by_the_one_that_took_over(
    store: SqlStore, clock: ManualClock, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(clock, plan=lambda hit, n: "hang" if n == 0 else "200")
    await notify_orders(store, ["L1"], ["order.succeeded"])
    slow = deliverer(store, clock, receiver.url, timeout=30, lease=60)
    stuck = asyncio.create_task(slow.run_once())
    await asyncio.wait_for(receiver.arrived.wait(), 5)
    clock.real_offset += timedelta(seconds=61)
    fast = deliverer(store, clock, receiver.url)
    assert await fast.run_once() == 1
    receiver.release.set()  # the first request finally answers 200, too late to count
    assert await stuck == 1
    assert (slow.delivered, slow.discarded, fast.delivered) == (0, 1, 1)
    (row,) = await outbox_rows(store)
    assert (row.state, row.attempts) == ("delivered", 1)
    await slow.aclose()
    await fast.aclose()


async def test_rotation_both_secrets_sign(
    store: SqlStore, clock: ManualClock, make_receiver: MakeReceiver
) -> None:
    old, new = new_secret(), new_secret()
    receiver = await make_receiver(clock, secret=new)
    await notify_orders(store, ["S1"], ["order.succeeded"])
    d = deliverer(store, clock, receiver.url, secret=f"{old} {new}")
    assert await d.run_once() == 1
    await d.aclose()
    assert [h.verified for h in receiver.hits] == [True]
    assert len(receiver.hits[0].msg_id) > 0


async def test_slow_body_timeout_redirect_and_huge_error_body(
    store: SqlStore, clock: ManualClock, make_receiver: MakeReceiver
) -> None:
    answers = {"T1": "slow", "T2": "timeout", "T3": "302", "T4": "huge500"}
    receiver = await make_receiver(clock, plan=lambda hit, n: answers[hit.order_no])
    await notify_orders(store, list(answers), ["order.succeeded"])
    d = deliverer(store, clock, receiver.url, timeout=0.5)
    started = time.perf_counter()
    assert await d.run_once() == 4
    assert time.perf_counter() - started < 2.5  # the slow body was not waited for
    await d.aclose()
    rows = {r.order_no: r for r in await outbox_rows(store)}
    assert rows["T1"].state == "delivered"
    assert rows["T2"].state == "pending"
    assert rows["T2"].last_error == "timeout: no answer within 0.5s"
    assert rows["T3"].state == "pending"  # a redirect is not followed, and not success
    assert rows["T3"].last_error is not None
    assert rows["T3"].last_error.startswith("HTTP 302")
    assert rows["T4"].state == "pending"
    assert rows["T4"].last_error is not None
    assert len(rows["T4"].last_error) < 250  # only a snippet of the 4 MiB body was read
    assert [h.order_no for h in receiver.hits if h.order_no == "T3"] == ["T3"]  # not followed


async def test_concurrency_per_endpoint_is_bounded(
    store: SqlStore, clock: ManualClock, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(clock, handler_delay=0.05)
    await notify_orders(store, [f"P{i:02d}" for i in range(40)], ["order.succeeded"])
    d = deliverer(store, clock, receiver.url, concurrency=4)
    assert await d.run(burst=True) == 40
    assert receiver.max_in_flight == 4
    assert {r.state for r in await outbox_rows(store)} == {"delivered"}
