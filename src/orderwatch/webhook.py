"""The webhook channel: Standard Webhooks over HTTP (https://www.standardwebhooks.com).

Each notification is a ``POST`` of the stored body, byte for byte, with three headers:

- ``webhook-id``: :func:`orderwatch.notify.message_id`, the same on every retry, so the
  receiver can de-duplicate (delivery is at-least-once);
- ``webhook-timestamp``: Unix seconds when this attempt was sent, real wall time (the
  receiver checks it against its own clock to refuse replays);
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>``, one
  space-separated entry per secret: during a rotation both the old and the new secret sign.

A secret is ``whsec_`` followed by base64 key bytes. ``notify.secret`` may hold several,
separated by spaces. The answer decides: 2xx delivered; 4xx other than 408 and 429 refused
for good; anything else (3xx, 408, 429, 5xx, no answer) retried, after at least the
receiver's Retry-After. Redirects are not followed; at most :data:`SNIPPET` bytes of an
answer are read, to explain a failure.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from . import __version__
from .clock import Clock, SystemClock
from .errors import ConfigError
from .notify import Channel, Delivery, message_id
from .store.base import OutboxRow
from .vendors.reference import retry_after_seconds

if TYPE_CHECKING:
    from .settings import NotifySettings

__all__ = ["WebhookChannel", "decode_secret", "parse_secrets", "sign", "webhook_channel"]

SECRET_PREFIX = "whsec_"
SNIPPET = 512  # bytes of a receiver's answer kept to explain a failure


def decode_secret(secret: str) -> bytes:
    """``whsec_<base64>`` (the prefix is optional) → the HMAC key bytes."""
    raw = secret.strip()
    if raw.startswith(SECRET_PREFIX):
        raw = raw[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc
    if len(key) < 16:
        raise ValueError("a webhook secret must hold at least 16 bytes (24 and up recommended)")
    return key


def parse_secrets(value: str | Sequence[str]) -> list[bytes]:
    """One secret, several separated by spaces, or a list of them: the keys, in order."""
    items = value.split() if isinstance(value, str) else [s for v in value for s in v.split()]
    if not items:
        raise ValueError("no webhook secret given")
    return [decode_secret(s) for s in items]


def sign(msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]) -> str:
    """The ``webhook-signature`` header value: ``v1,<sig>`` for each key, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode()
        for k in keys
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class WebhookChannel:
    """POSTs notifications to one URL, signed, at most ``concurrency`` at a time per endpoint.

    ``timeout`` bounds an attempt (connect, send, status line) in real seconds;
    ``wall`` gives ``webhook-timestamp`` (real Unix time); ``clock`` turns a Retry-After
    HTTP date into schedule seconds, as the vendor adapter does.
    """

    def __init__(
        self,
        url: str,
        secrets: str | Sequence[str],
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        body_timeout: float = 1.0,
        concurrency: int = 16,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        user_agent: str = f"orderwatch/{__version__}",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {url!r}")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.url = url
        self._keys = parse_secrets(secrets)
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(connect_timeout, timeout))
        self._body_timeout = body_timeout
        self.concurrency = concurrency
        self._clock = clock or SystemClock()
        self._wall = wall
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        # one limit per endpoint (origin): one URL today, per-customer URLs later
        self._limits: dict[str, asyncio.Semaphore] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=self.concurrency),
                timeout=self._timeout,
                headers={"User-Agent": self._user_agent},
                auto_decompress=False,
            )
        return self._session

    def _limit(self, url: str) -> asyncio.Semaphore:
        origin = _origin(url)
        sem = self._limits.get(origin)
        if sem is None:
            sem = self._limits[origin] = asyncio.Semaphore(self.concurrency)
        return sem

    def headers(self, row: OutboxRow, body: bytes) -> dict[str, str]:
        """The headers of one attempt, signed now."""
        msg_id = message_id(row)
        ts = int(self._wall())
        return {
            "Content-Type": "application/json; charset=utf-8",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(msg_id, ts, body, self._keys),
        }

    async def send(self, row: OutboxRow) -> Delivery:
        body = row.payload.encode("utf-8")
        async with self._limit(self.url):
            session = self._get_session()
            try:
                async with session.post(
                    self.url,
                    data=body,
                    headers=self.headers(row, body),
                    allow_redirects=False,
                ) as resp:
                    status = resp.status
                    retry_after = retry_after_seconds(
                        resp.headers.get("Retry-After"), self._clock.now()
                    )
                    snippet = "" if 200 <= status < 300 else await self._snippet(resp)
            except TimeoutError:
                return Delivery(False, f"timeout: no answer within {self._timeout.total:g}s")
            except (aiohttp.ClientError, OSError) as exc:
                return Delivery(False, f"{type(exc).__name__}: {exc}"[:200])
        if 200 <= status < 300:
            return Delivery(True, status=status)
        error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        permanent = 400 <= status < 500 and status not in (408, 429)
        return Delivery(False, error, permanent=permanent, retry_after=retry_after, status=status)

    async def _snippet(self, resp: aiohttp.ClientResponse) -> str:
        """Up to :data:`SNIPPET` bytes of the answer, waiting at most ``body_timeout``."""
        data = b""
        try:
            async with asyncio.timeout(self._body_timeout):
                while len(data) < SNIPPET:
                    chunk = await resp.content.read(SNIPPET - len(data))
                    if not chunk:
                        break
                    data += chunk
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        return data.decode("utf-8", "replace").replace("\n", " ").strip()[:200]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def webhook_channel(notify: NotifySettings, *, clock: Clock | None = None, **_: Any) -> Channel:
    """Entry points ``http`` and ``https``: the channel for ``notify.webhook_url``."""
    problems = []
    if not notify.webhook_url:
        problems.append("notify.webhook_url: required for the webhook channel")
    if notify.secret is None:
        problems.append("notify.secret: required to sign webhooks (whsec_…)")
    if problems:
        raise ConfigError(problems)
    assert notify.webhook_url is not None
    assert notify.secret is not None
    try:
        return WebhookChannel(notify.webhook_url, notify.secret.get_secret_value(), clock=clock)
    except ValueError as exc:
        key = "notify.webhook_url" if "URL" in str(exc) else "notify.secret"
        raise ConfigError([f"{key}: {exc}"]) from exc
