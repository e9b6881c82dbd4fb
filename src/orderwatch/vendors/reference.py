"""The reference vendor protocol of DESIGN §5, over aiohttp.

Every answer goes through :func:`interpret` before the engine sees it: a body that is not
JSON, is not signed correctly, or says something outside the protocol becomes
:class:`~orderwatch.outcomes.Abnormal` (retried on schedule), never an exception and never a
success. Only a correctly signed ``0000`` with a mapped status can end an order well.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from ..clock import Clock
from ..order import Order
from ..outcomes import (
    MAX_CODE,
    Abnormal,
    Accepted,
    Delivered,
    Exchange,
    InProgress,
    Outcome,
    Rejected,
    UnknownOrder,
    VendorFailed,
    parsed_logistics_problem,
    vendor_order_id_problem,
)
from ..settings import VendorSettings
from . import signing
from .http import HttpSession

# One encoder for the hot path: json.dumps with options builds a new one per call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

MAX_BODY = 1 << 20  # a vendor answer larger than 1 MiB is not an answer
_SNIPPET = 80
MAX_RETRY_AFTER = 366 * 86400  # longer is absurd: ignored, seconds and dates alike


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from ``now``: delta-seconds or an HTTP date; junk is ignored."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None
        try:
            seconds = (when - now).total_seconds()
        except OverflowError:
            return None
        if seconds > MAX_RETRY_AFTER:
            return None
        return max(0.0, seconds)
    if math.isnan(seconds) or seconds < 0 or seconds > MAX_RETRY_AFTER:  # NaN, negative, absurd
        return None
    return seconds


def _snippet(body: bytes) -> str:
    text = body[:_SNIPPET].decode("utf-8", "replace").replace("\n", " ")
    return text + ("…" if len(body) > _SNIPPET else "")


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"data.{key} must be a string")


def _logistics(data: Mapping[str, Any]) -> dict[str, Any] | None:
    value = data.get("logistics")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError("data.logistics must be an object")
    for key in ("carrier", "tracking_no"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise TypeError(f"data.logistics.{key} must be a string")
    events = value.get("events")
    if events is not None and not (
        isinstance(events, list) and all(isinstance(e, dict) for e in events)
    ):
        raise TypeError("data.logistics.events must be a list of objects")
    problem = parsed_logistics_problem(value)
    if problem:
        raise TypeError(f"data.logistics {problem}")
    return value


def interpret(
    kind: str,
    *,
    http_status: int,
    body: bytes,
    retry_after: float | None,
    status_map: Mapping[str, str],
    secret: str = "",
    sign_type: str = "HMAC-SHA256",
    signer: signing.Signer | None = None,
    sign_location: str = "body",
    header_signature: str | None = None,
    order_no: str | None = None,
) -> tuple[Outcome, str | None]:
    """Turn one HTTP answer into an outcome and the vendor's code. Never raises.

    The answer is verified with ``signer`` (default: ``sign_type`` with ``secret``): the
    signature is the body's signature field, or ``header_signature`` (the value of the
    vendor's signature header, None if it sent none) when ``sign_location`` is "header".
    With ``order_no``, an answer whose ``data.order_no`` names another order is malformed.
    """
    if http_status == 503:
        return Abnormal("maintenance", "HTTP 503", retry_after), None
    if http_status != 200:
        return Abnormal("http_error", f"HTTP {http_status}: {_snippet(body)}", retry_after), None
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Abnormal("malformed", f"not JSON: {_snippet(body)}"), None
    if not isinstance(answer, dict):
        return Abnormal("malformed", "answer is not a JSON object"), None
    code = answer.get("code")
    if not isinstance(code, str):
        return Abnormal("malformed", "answer has no string field 'code'"), None
    if len(code) > MAX_CODE:
        return Abnormal("malformed", f"field 'code' is longer than {MAX_CODE} characters"), None
    if "\x00" in code:  # stored as is (vendor_code): PostgreSQL refuses NUL
        return Abnormal("malformed", "field 'code' holds a NUL character"), None
    if signer is None:
        signer = signing.Signer(sign_type=sign_type, secret=secret)
    if sign_location == "header":
        signed = signer.verify(answer, header_signature)
    else:
        signed = signer.verify_fields(answer)
    if not signed:  # also a value json cannot write back: verify never raises
        return Abnormal("bad_signature", "answer signature missing or wrong"), code
    message = answer.get("message")
    if message is not None and not isinstance(message, str):
        return Abnormal("malformed", "field 'message' must be a string"), code
    message = message or ""

    if code == "E503":
        return Abnormal("maintenance", message or "E503", retry_after), code
    if code.startswith("E5"):
        return Abnormal("vendor_error", f"{code} {message}".strip()), code
    if code != "0000":
        if kind == "place":
            return Rejected(code, message), code
        if code == "E404":
            return UnknownOrder(), code
        return Abnormal("vendor_error", f"unexpected code {code} {message}".strip()), code

    data = answer.get("data")
    if not isinstance(data, dict):
        return Abnormal("malformed", "field 'data' must be an object"), code
    status = data.get("status")
    answered_for = data.get("order_no")
    if order_no is not None and answered_for is not None and answered_for != order_no:
        detail = f"data.order_no {str(answered_for)[:64]!r} is not the order asked about"
        return Abnormal("malformed", f"{detail} ({order_no})"), code
    try:
        vendor_order_id = _opt_str(data, "vendor_order_id")
        problem = vendor_order_id and vendor_order_id_problem(vendor_order_id)
        if problem:
            raise TypeError(f"data.vendor_order_id {problem}")
        if kind == "place":
            if status != "ACCEPTED":
                return Abnormal("malformed", f"place answer status {status!r}"), code
            return Accepted(vendor_order_id), code
        description = _opt_str(data, "description")
        logistics = _logistics(data)
    except TypeError as exc:
        return Abnormal("malformed", str(exc)), code
    mapped = status_map.get(status) if isinstance(status, str) else None
    if mapped == "succeeded":
        return Delivered(description, logistics, vendor_order_id), code
    if mapped == "failed":
        return VendorFailed(description, logistics, vendor_order_id), code
    if mapped in ("processing", "shipped"):
        return InProgress(
            str(status), description, logistics, mapped == "shipped", vendor_order_id
        ), code
    return Abnormal("malformed", f"unmapped status {status!r}"), code


class ReferenceAdapter(HttpSession):
    """Places and queries orders with one vendor that speaks the reference protocol.

    ``session`` is the seam for tests; by default the adapter opens its own aiohttp
    session with a connection pool as large as the vendor's concurrency.
    """

    #: every answer is checked here against what the database keeps (outcomes.answer_problem)
    checks_answers = True

    def __init__(
        self,
        name: str,
        settings: VendorSettings,
        *,
        clock: Clock,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock
        self._signer = signing.signer_for(settings)
        self._sign_header = settings.sign_header if settings.sign_location == "header" else None
        self._headers = {"Content-Type": "application/json; charset=utf-8"}
        self._init_http(settings, session)
        self._status_map = dict(settings.status_map)
        self._place_url = f"{settings.base_url}/orders"
        self._query_url = f"{settings.base_url}/orders/query"

    def _signed(self, fields: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The signed body and the request headers (the signature goes in the body's
        ``sign_field`` or in the ``sign_header``)."""
        fields["timestamp"] = int(self.clock.now().timestamp())
        fields["nonce"] = os.urandom(12).hex()
        signature = self._signer.sign(fields)
        headers = self._headers
        if self._sign_header is None:
            fields[self._signer.sign_field] = signature
        else:
            headers = {**headers, self._sign_header: signature}
        return _JSON.encode(fields).encode(), headers

    async def place(self, order: Order) -> Exchange:
        body, headers = self._signed(
            {
                "merchant_id": self.settings.merchant_id,
                "order_no": order.order_no,
                "sku": order.sku,
                "quantity": order.quantity,
                "recipient": {
                    "name": order.recipient.name,
                    "phone": order.recipient.phone,
                    "address": order.recipient.address,
                },
                "points": order.points,
            }
        )
        return await self._exchange("place", self._place_url, body, headers, order.order_no)

    async def query(self, order: Order) -> Exchange:
        body, headers = self._signed(
            {"merchant_id": self.settings.merchant_id, "order_no": order.order_no}
        )
        return await self._exchange("query", self._query_url, body, headers, order.order_no)

    async def _exchange(
        self, kind: str, url: str, body: bytes, headers: Mapping[str, str], order_no: str
    ) -> Exchange:
        started = time.perf_counter()
        session = self._get_session()
        try:
            async with session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                length = resp.content_length
                if length is not None and length > MAX_BODY:
                    raw = b""
                    too_big = True
                else:
                    raw, too_big = await _read_limited(resp)
                header = resp.headers.get("Retry-After")
                retry_after = (
                    retry_after_seconds(header, self.clock.now()) if header is not None else None
                )
                header_signature = (
                    resp.headers.get(self._sign_header) if self._sign_header is not None else None
                )
        except TimeoutError:
            return Exchange(
                Abnormal("timeout", f"no answer within {self._timeout.total}s"),
                time.perf_counter() - started,
            )
        except aiohttp.ClientError as exc:
            return Exchange(
                Abnormal("network", f"{type(exc).__name__}: {exc}"[:200]),
                time.perf_counter() - started,
            )
        except OSError as exc:
            return Exchange(
                Abnormal("network", f"{type(exc).__name__}: {exc}"[:200]),
                time.perf_counter() - started,
            )
        latency = time.perf_counter() - started
        if too_big:
            return Exchange(
                Abnormal("malformed", f"answer larger than {MAX_BODY} bytes"), latency, status
            )
        outcome, code = interpret(
            kind,
            http_status=status,
            body=raw,
            retry_after=retry_after,
            status_map=self._status_map,
            signer=self._signer,
            sign_location=self.settings.sign_location,
            header_signature=header_signature,
            order_no=order_no,
        )
        return Exchange(outcome, latency, status, code)


async def _read_limited(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The body, or ``(b"", True)`` past :data:`MAX_BODY`; the caller has refused a
    Content-Length over it. A compressed body is counted as it is inflated: Content-Length
    is its size on the wire, and a small gzip body can inflate to gigabytes."""
    if resp.content_length is not None and "Content-Encoding" not in resp.headers:
        return await resp.read(), False  # the usual answer: its size is known and checked
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY:
            return b"", True
        chunks.append(chunk)
    return b"".join(chunks), False


__all__ = [
    "MAX_BODY",
    "ReferenceAdapter",
    "interpret",
    "retry_after_seconds",
]
