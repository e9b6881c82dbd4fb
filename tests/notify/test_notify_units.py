"""Pure parts of delivery: the signature (checked by the reference library), the retry policy,
and how the channel is chosen from ``[notify]``."""

from __future__ import annotations

import random
import tracemalloc
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from notify_helpers import START, new_secret
from standardwebhooks import Webhook, WebhookVerificationError

from orderwatch.channels.rabbitmq import RabbitChannel, split_url
from orderwatch.clock import ManualClock
from orderwatch.errors import ConfigError
from orderwatch.notify import (
    Delivery,
    LogChannel,
    RetryPolicy,
    build_channel,
    deliverer_for,
    message_id,
    settle,
)
from orderwatch.settings import NotifySettings, Settings, SettingsHolder
from orderwatch.store.base import OutboxRow
from orderwatch.webhook import WebhookChannel, decode_secret, parse_secrets, sign

BODY = '{"type":"order.succeeded","data":{"order_no":"R1","recipient":{"name":"张三"}}}'


def row(**changes: Any) -> OutboxRow:
    base = OutboxRow(
        id=7,
        order_id=3,
        order_no="R1",
        event_type="order.succeeded",
        payload=BODY,
        state="pending",
        attempts=0,
        next_attempt_at=START,
        created_at=START,
        lease_token="tok",
    )
    return replace(base, **changes)


# ---------------------------------------------------------------- signing


def _headers(msg_id: str, ts: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def test_signature_verifies_with_the_reference_library() -> None:
    secret = new_secret()
    ts = int(datetime.now().timestamp())
    body = BODY.encode()
    signature = sign("msg_R1_7", ts, body, parse_secrets(secret))
    assert signature.startswith("v1,")
    assert Webhook(secret).verify(body, _headers("msg_R1_7", ts, signature))["type"] == (
        "order.succeeded"
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", _headers("msg_R1_7", ts, signature))
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, _headers("msg_R1_7", ts, signature))


def test_rotation_signs_with_every_secret() -> None:
    old, new = new_secret(), new_secret()
    ts = int(datetime.now().timestamp())
    signature = sign("msg_R1_7", ts, BODY.encode(), parse_secrets(f"{old} {new}"))
    assert len(signature.split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(BODY.encode(), _headers("msg_R1_7", ts, signature))
    assert parse_secrets([old, new]) == parse_secrets(f"{old}  {new}")


def test_the_spec_example_secret_decodes() -> None:
    # the example secret of the Standard Webhooks specification
    key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert len(key) == 24
    with pytest.raises(ValueError, match="base64"):
        decode_secret("whsec_not base64!")
    with pytest.raises(ValueError, match="16 bytes"):
        decode_secret("whsec_c2hvcnQ=")


def test_message_id_is_derived_from_the_row() -> None:
    assert message_id(row()) == "msg_R1_7"
    assert message_id(row(attempts=5, lease_token="other")) == "msg_R1_7"


# ---------------------------------------------------------------- the retry policy

RNG = random.Random(0)
POLICY = RetryPolicy(initial_interval=30, max_interval=3600, max_age=3 * 86400, jitter=0.1)


def test_2xx_is_delivered() -> None:
    r = settle(row(), Delivery(True), now=START, policy=POLICY, rng=random.Random(1))
    assert (r.state, r.attempts, r.delivered_at, r.next_attempt_at) == (
        "delivered",
        1,
        START,
        None,
    )


def test_permanent_failure_is_failed_at_once() -> None:
    r = settle(
        row(),
        Delivery(False, "HTTP 410", permanent=True),
        now=START,
        policy=POLICY,
        rng=RNG,
    )
    assert (r.state, r.last_error, r.next_attempt_at) == ("failed", "HTTP 410", None)


@pytest.mark.parametrize(("attempts", "nominal"), [(0, 30), (1, 60), (3, 240), (20, 3600)])
def test_backoff_is_exponential_jittered_and_capped(attempts: int, nominal: float) -> None:
    rng = random.Random(attempts)
    for _ in range(50):
        r = settle(
            row(attempts=attempts), Delivery(False, "HTTP 500"), now=START, policy=POLICY, rng=rng
        )
        assert r.state == "pending"
        assert r.next_attempt_at is not None
        wait = (r.next_attempt_at - START).total_seconds()
        assert nominal * 0.9 <= wait <= nominal * 1.1


def test_retry_after_replaces_a_shorter_backoff() -> None:
    r = settle(
        row(),
        Delivery(False, "HTTP 429", retry_after=900),
        now=START,
        policy=POLICY,
        rng=RNG,
    )
    assert r.next_attempt_at == START + timedelta(seconds=900)


def test_never_scheduled_past_max_age_and_failed_once_there() -> None:
    near = START + timedelta(days=3) - timedelta(minutes=10)
    r = settle(row(attempts=40), Delivery(False, "x"), now=near, policy=POLICY, rng=random.Random())
    assert r.next_attempt_at == START + timedelta(days=3)  # the last try, at the mark
    at_mark = START + timedelta(days=3)
    r = settle(
        row(attempts=41),
        Delivery(False, "HTTP 503"),
        now=at_mark,
        policy=POLICY,
        rng=RNG,
    )
    assert r.state == "failed"
    assert r.last_error is not None
    assert r.last_error.startswith("HTTP 503 (gave up")


def test_policy_from_settings() -> None:
    p = RetryPolicy.from_settings(
        NotifySettings(initial_interval="10s", max_interval="5m", max_age="1d")
    )
    assert (p.initial_interval, p.max_interval, p.max_age) == (10, 300, 86400)


# ---------------------------------------------------------------- choosing the channel


def test_no_url_means_the_log_channel() -> None:
    assert isinstance(build_channel(NotifySettings()), LogChannel)


async def test_the_log_channel_keeps_nothing_it_delivered() -> None:
    """`serve` without a webhook URL runs for months on this channel: its memory must not
    grow with every notification it logs."""
    channel = LogChannel()
    payload = "x" * 10_000
    await channel.send(row(id=0, payload=payload))  # warm up whatever is made once
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, 200):
            delivery = await channel.send(row(id=i, payload=payload + str(i)))
            assert delivery.ok
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f"{grown} bytes kept after 199 notifications of 10 kB"


def test_https_url_makes_a_signed_webhook_channel() -> None:
    ch = build_channel(
        NotifySettings(webhook_url="https://platform.example/hooks", secret=new_secret())
    )
    assert isinstance(ch, WebhookChannel)


def test_webhook_without_secret_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"notify\.secret"):
        build_channel(NotifySettings(webhook_url="https://platform.example/hooks"))
    with pytest.raises(ConfigError, match=r"notify\.secret"):
        build_channel(
            NotifySettings(webhook_url="https://platform.example/hooks", secret="whsec_!!")
        )


def test_amqp_url_makes_the_rabbitmq_channel() -> None:
    ch = build_channel(
        NotifySettings(webhook_url="amqp://guest:guest@127.0.0.1:5672/?exchange=events")
    )
    assert isinstance(ch, RabbitChannel)
    assert ch.exchange_name == "events"
    url, exchange, kind = split_url("amqp://u:p@h:5672/vh?heartbeat=30&exchange=x")
    assert (url, exchange, kind) == ("amqp://u:p@h:5672/vh?heartbeat=30", "x", "topic")


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"orderwatch\.notifiers"):
        build_channel(NotifySettings(webhook_url="carrier-pigeon://loft/1"))


async def test_deliverer_for_follows_notify_reloads(tmp_path: Path) -> None:
    from orderwatch.store.sql import SqlStore

    notify = NotifySettings(webhook_url="https://platform.example/hooks", secret=new_secret())
    holder = SettingsHolder(Settings(notify=notify))
    store = SqlStore(f"sqlite:///{tmp_path}/x.db")
    d = deliverer_for(store, holder, clock=ManualClock(START))
    assert isinstance(d.channel, WebhookChannel)
    assert d.concurrency == d.channel.concurrency
    assert d.policy.max_age == 3 * 86400
    holder.replace(Settings(notify=notify.model_copy(update={"max_age": timedelta(hours=6)})))
    assert d.policy.max_age == 6 * 3600
    await d.aclose()
    await store.close()
