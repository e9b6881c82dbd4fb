"""The RabbitMQ channel against the machine's broker (127.0.0.1:5672, guest/guest).

Skipped, saying why, when no broker answers, except under ``CI=true``, where the broker is
part of the machine and its absence is a failure. ``ORDERWATCH_TEST_AMQP_URL`` points
elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from notify_helpers import SECRET, notify_orders, outbox_rows
from standardwebhooks import Webhook

from orderwatch.channels.rabbitmq import RabbitChannel
from orderwatch.clock import ManualClock
from orderwatch.notify import Deliverer, RetryPolicy
from orderwatch.store.sql import SqlStore

AMQP_URL = os.environ.get("ORDERWATCH_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture
async def broker() -> AsyncIterator[AbstractChannel]:
    try:
        connection: AbstractConnection = await aio_pika.connect(AMQP_URL, timeout=3)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no RabbitMQ broker at {AMQP_URL} ({exc!r}); CI runs this test")
    async with connection:
        yield await connection.channel()


@pytest.fixture
async def exchange(broker: AbstractChannel) -> AsyncIterator[AbstractExchange]:
    """A fresh durable topic exchange, as the channel declares it; deleted afterwards."""
    name = f"orderwatch-test-{uuid.uuid4().hex[:8]}"
    ex = await broker.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    yield ex
    await ex.delete()


async def test_published_confirmed_persistent_same_id_verifiable(
    broker: AbstractChannel, exchange: AbstractExchange, store: SqlStore, clock: ManualClock
) -> None:
    exchange_name = exchange.name
    queue = await broker.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="order.*")
    await notify_orders(store, ["Q1", "Q2", "Q3"], ["order.shipped", "order.succeeded"])
    channel = RabbitChannel(f"{AMQP_URL}?exchange={exchange_name}", secrets=SECRET)
    d = Deliverer(store, clock=clock, channel=channel, rng=random.Random(1))
    clock.advance(60)  # both notifications of each order are due
    assert await d.run(burst=True) == 6  # closes the channel on the way out

    rows = {f"msg_{r.order_no}_{r.id}": r for r in await outbox_rows(store)}
    assert {r.state for r in rows.values()} == {"delivered"}
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    for _ in range(6):  # confirmed before delivered: every message is already queued
        msg = await queue.get(timeout=5, fail=True)
        assert msg is not None
        got.append(msg)
        await msg.ack()
    assert await queue.get(fail=False) is None
    for msg in got:
        assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        row = rows[msg.message_id or ""]
        assert msg.body == row.payload.encode()
        assert msg.routing_key == row.event_type == msg.type
        headers = {k: str(v) for k, v in msg.headers.items()}
        assert Webhook(SECRET).verify(msg.body, headers)["data"]["order_no"] == row.order_no
    # per order, shipped before succeeded
    order = [(m.message_id or "", m.type) for m in got]
    for no in ("Q1", "Q2", "Q3"):
        types = [t for i, t in order if f"_{no}_" in f"_{i}"]
        assert types == ["order.shipped", "order.succeeded"]


async def test_unroutable_is_retried_not_dropped(
    exchange: AbstractExchange, store: SqlStore, clock: ManualClock
) -> None:
    exchange_name = exchange.name
    await notify_orders(store, ["U1"], ["order.failed"])
    channel = RabbitChannel(f"{AMQP_URL}?exchange={exchange_name}")
    d = Deliverer(store, clock=clock, channel=channel, policy=RetryPolicy(), rng=random.Random(1))
    assert await d.run_once() == 1
    await d.aclose()
    (row,) = await outbox_rows(store)
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.last_error is not None
    assert "unroutable" in row.last_error


async def test_broker_unreachable_is_retried(store: SqlStore, clock: ManualClock) -> None:
    await notify_orders(store, ["X1"], ["order.failed"])
    channel = RabbitChannel("amqp://guest:guest@127.0.0.1:1/", timeout=2)
    d = Deliverer(store, clock=clock, channel=channel, rng=random.Random(1))
    assert await asyncio.wait_for(d.run_once(), 10) == 1
    await d.aclose()
    (row,) = await outbox_rows(store)
    assert (row.state, row.attempts) == ("pending", 1)
