"""The RabbitMQ channel: each notification published to an exchange, confirmed by the broker.

For platforms that consume events from a broker instead of taking webhooks. Configured by
``notify.webhook_url = "amqp://user:pass@host:5672/vhost?exchange=orderwatch"``: a durable
``topic`` exchange (declared if missing), routing key = the event type
(``order.succeeded``…), so a consumer binds ``order.*`` or just the types it wants.

A row counts as delivered only when the broker has confirmed it (publisher confirms) and it
reached at least one queue (``mandatory``: an unroutable message comes back and is retried
rather than dropped). Messages are persistent (delivery mode 2) and carry the same id and,
when ``notify.secret`` is set, the same Standard Webhooks headers as the webhook channel, so
consumers de-duplicate and verify them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from ..clock import Clock
from ..errors import ConfigError
from ..notify import Channel, Delivery, message_id
from ..store.base import OutboxRow
from ..webhook import parse_secrets, sign

if TYPE_CHECKING:
    from ..settings import NotifySettings

__all__ = ["RabbitChannel", "rabbitmq_channel"]

_OWN_PARAMS = ("exchange", "exchange_type")


def split_url(url: str) -> tuple[str, str, str]:
    """``amqp://…?exchange=x&heartbeat=30`` → (URL for the client, exchange, exchange type)."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.netloc:
        raise ValueError(f"not an amqp(s) URL: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_PARAMS}
    rest = [(k, v) for k, v in query if k not in _OWN_PARAMS]
    exchange_type = own.get("exchange_type", "topic")
    if exchange_type not in ("topic", "direct", "fanout", "headers"):
        raise ValueError(f"exchange_type {exchange_type!r} is not a RabbitMQ exchange type")
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    return client_url, own.get("exchange", "orderwatch"), exchange_type


class RabbitChannel:
    """Publishes notifications with publisher confirms; reconnects after any failure."""

    def __init__(
        self,
        url: str,
        *,
        exchange: str | None = None,
        exchange_type: str | None = None,
        secrets: str | Sequence[str] | None = None,
        timeout: float = 10.0,
        concurrency: int = 64,
        wall: Callable[[], float] = time.time,
    ) -> None:
        client_url, url_exchange, url_type = split_url(url)
        self._url = client_url
        self.exchange_name = exchange or url_exchange
        self.exchange_type = aio_pika.ExchangeType(exchange_type or url_type)
        self._keys = parse_secrets(secrets) if secrets else []
        self._timeout = timeout
        self._wall = wall
        self.concurrency = concurrency
        self._limit = asyncio.Semaphore(concurrency)
        self._lock = asyncio.Lock()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def _get_exchange(self) -> AbstractExchange:
        async with self._lock:
            if self._exchange is not None and self._channel and not self._channel.is_closed:
                return self._exchange
            await self._drop()
            self._connection = await aio_pika.connect(self._url, timeout=self._timeout)
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            self._exchange = await self._channel.declare_exchange(
                self.exchange_name, self.exchange_type, durable=True, timeout=self._timeout
            )
            return self._exchange

    def message(self, row: OutboxRow) -> aio_pika.Message:
        body = row.payload.encode("utf-8")
        msg_id = message_id(row)
        ts = int(self._wall())
        headers: dict[str, Any] = {"webhook-id": msg_id, "webhook-timestamp": str(ts)}
        if self._keys:
            headers["webhook-signature"] = sign(msg_id, ts, body, self._keys)
        return aio_pika.Message(
            body,
            headers=headers,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=msg_id,
            timestamp=datetime.fromtimestamp(ts, UTC),
            type=row.event_type,
            app_id="orderwatch",
        )

    async def send(self, row: OutboxRow) -> Delivery:
        async with self._limit:
            try:
                exchange = await self._get_exchange()
                await exchange.publish(
                    self.message(row),
                    routing_key=row.event_type,
                    mandatory=True,
                    timeout=self._timeout,
                )
            except aio_pika.exceptions.PublishError:
                return Delivery(False, f"unroutable: no queue bound to {self.exchange_name!r}")
            except aio_pika.exceptions.DeliveryError as exc:
                return Delivery(False, f"broker refused the message: {exc}"[:200])
            except TimeoutError:
                await self._reset()
                return Delivery(False, f"timeout: no confirm within {self._timeout:g}s")
            except Exception as exc:  # connection refused, closed channel, auth …: reconnect
                await self._reset()
                return Delivery(False, f"{type(exc).__name__}: {exc}"[:200])
        return Delivery(True)

    async def _reset(self) -> None:
        async with self._lock:
            await self._drop()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):  # already broken: nothing more to release
                await connection.close()

    async def aclose(self) -> None:
        await self._reset()


def rabbitmq_channel(notify: NotifySettings, *, clock: Clock | None = None, **_: Any) -> Channel:
    """Entry points ``amqp`` and ``amqps``: the channel for ``notify.webhook_url``."""
    if not notify.webhook_url:
        raise ConfigError(["notify.webhook_url: required for the RabbitMQ channel"])
    secret = notify.secret.get_secret_value() if notify.secret is not None else None
    try:
        return RabbitChannel(notify.webhook_url, secrets=secret)
    except ValueError as exc:
        key = "notify.secret" if "secret" in str(exc) else "notify.webhook_url"
        raise ConfigError([f"{key}: {exc}"]) from exc
