"""A template vendor adapter for orderwatch: XmlShop, a vendor that answers in XML.

Most vendors need no code: ``adapter = "mapped"`` describes JSON or form protocols in
config. Write an adapter like this one only for the truly odd vendor — here, answers in
WeChat-Pay-v2-style XML (``<xml><return_code>SUCCESS</return_code>...</xml>``).

The interface orderwatch calls (see ``orderwatch.vendors.VendorAdapter``):

- ``__init__(name, settings, *, clock, **kwargs)``: ``settings`` is the vendor's
  ``[vendors.NAME]`` (``base_url``, ``merchant_id``, ``secret``, ``sign_type``, ``timeout``,
  ``concurrency`` ...); ``clock.now()`` is the time to put in requests.
- ``async place(order) -> Exchange`` and ``async query(order) -> Exchange``: one request
  each. ``Exchange(outcome, latency, http_status, vendor_code)`` wraps exactly one outcome
  from ``orderwatch.outcomes``: ``Accepted``, ``Rejected(code, message)``, ``InProgress``,
  ``Delivered``, ``VendorFailed``, ``UnknownOrder`` or ``Abnormal(kind, detail)``.
- ``async close()``: release connections.

The rules: never raise for anything the vendor does (timeouts, junk, wrong signatures are
``Abnormal``, which orderwatch retries); never report success from an answer whose signature
you did not verify; never guess a value you do not know (``Abnormal``).
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp
from orderwatch.clock import Clock
from orderwatch.order import Order
from orderwatch.outcomes import (
    Abnormal,
    Accepted,
    Delivered,
    Exchange,
    InProgress,
    Outcome,
    Rejected,
    UnknownOrder,
    VendorFailed,
)
from orderwatch.settings import VendorSettings
from orderwatch.vendors import signing

__all__ = ["XmlShopAdapter", "interpret"]

MAX_BODY = 1 << 20
STATES = {  # XmlShop's trade_state → what it means
    "USERPAYING": "processing",
    "SHIPPING": "shipped",
    "SUCCESS": "delivered",
    "CLOSED": "failed",
}


def interpret(kind: str, status: int, body: bytes, secret: str) -> tuple[Outcome, str | None]:
    """One XmlShop answer → (outcome, vendor code). Pure; never raises."""
    if status == 503:
        return Abnormal("maintenance", "HTTP 503"), None
    if status != 200:
        return Abnormal("http_error", f"HTTP {status}"), None
    if len(body) > MAX_BODY or b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return Abnormal("malformed", "answer too large or has a DTD"), None
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        return Abnormal("malformed", f"not XML: {exc}"), None
    fields: dict[str, Any] = {child.tag: (child.text or "") for child in root}
    if not signing.verify(fields, secret, "MD5"):
        return Abnormal("bad_signature", "answer signature missing or wrong"), None
    code = fields.get("result_code") or ""
    message = fields.get("err_code_des") or ""
    if code == "SYSTEMERROR":
        return Abnormal("vendor_error", message or code), code
    if kind == "place":
        if code == "SUCCESS":
            return Accepted(fields.get("transaction_id") or None), code
        if code in ("SOLD_OUT", "INVALID_ADDRESS"):
            return Rejected(code, message), code
        return Abnormal("unmapped", f"result_code {code!r}"), code
    if code == "ORDERNOTEXIST":
        return UnknownOrder(), code
    if code != "SUCCESS":
        return Abnormal("unmapped", f"result_code {code!r}"), code
    state = fields.get("trade_state", "")
    meaning = STATES.get(state)
    description = fields.get("trade_state_desc") or None
    vendor_order_id = fields.get("transaction_id") or None
    if meaning == "delivered":
        return Delivered(description, None, vendor_order_id), code
    if meaning == "failed":
        return VendorFailed(description, None, vendor_order_id), code
    if meaning in ("processing", "shipped"):
        return InProgress(state, description, None, meaning == "shipped", vendor_order_id), code
    return Abnormal("unmapped", f"trade_state {state!r}"), code


def to_xml(fields: dict[str, str]) -> bytes:
    root = ET.Element("xml")
    for key, value in fields.items():
        ET.SubElement(root, key).text = value
    return ET.tostring(root, encoding="utf-8")


class XmlShopAdapter:
    """orderwatch's vendor adapter interface for XmlShop."""

    def __init__(
        self,
        name: str,
        settings: VendorSettings,
        *,
        clock: Clock,
        session: aiohttp.ClientSession | None = None,
        **_: Any,
    ) -> None:
        self.name = name
        self.settings = settings
        self.clock = clock
        self._secret = settings.secret.get_secret_value()
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout.total_seconds())

    async def place(self, order: Order) -> Exchange:
        fields = {
            "mch_id": self.settings.merchant_id,
            "out_trade_no": order.order_no,
            "goods_id": order.sku,
            "goods_num": str(order.quantity),
            "receiver": order.recipient.name,
            "receiver_phone": order.recipient.phone,
            "receiver_address": order.recipient.address,
        }
        return await self._call("place", "/pay/unifiedorder", fields)

    async def query(self, order: Order) -> Exchange:
        fields = {"mch_id": self.settings.merchant_id, "out_trade_no": order.order_no}
        return await self._call("query", "/pay/orderquery", fields)

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def _call(self, kind: str, path: str, fields: dict[str, str]) -> Exchange:
        fields["nonce_str"] = os.urandom(16).hex()
        fields["sign"] = signing.sign(fields, self._secret, "MD5")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        started = time.perf_counter()
        try:
            async with self._session.post(
                self.settings.base_url + path,
                data=to_xml(fields),
                headers={"Content-Type": "text/xml; charset=utf-8"},
            ) as resp:
                status = resp.status
                body = await resp.content.read(MAX_BODY + 1)
        except TimeoutError:
            return Exchange(Abnormal("timeout", "no answer"), time.perf_counter() - started)
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}"[:200]
            return Exchange(Abnormal("network", detail), time.perf_counter() - started)
        outcome, code = interpret(kind, status, body, self._secret)
        return Exchange(outcome, time.perf_counter() - started, status, code)
