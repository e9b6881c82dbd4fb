"""The template's own tests: a fake XmlShop on loopback, the adapter against it.

Run from this directory: ``pip install -e '.[test]' && pytest``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web
from orderwatch.clock import ManualClock
from orderwatch.outcomes import Abnormal, Accepted, Delivered, Rejected, UnknownOrder
from orderwatch.settings import load_settings
from orderwatch.vendors import adapter_factory, signing
from orderwatch.vendors.mapped import probe_order

from orderwatch_vendor_example import XmlShopAdapter, interpret, to_xml

SECRET = "xmlshop-secret"


def answer(secret: str = SECRET, **fields: str) -> bytes:
    fields["sign"] = signing.sign(fields, secret, "MD5")
    return to_xml(fields)


def test_interpret() -> None:
    assert interpret("place", 200, answer(result_code="SUCCESS", transaction_id="T1"), SECRET) == (
        Accepted("T1"),
        "SUCCESS",
    )
    refused = answer(result_code="SOLD_OUT", err_code_des="sold out")
    assert interpret("place", 200, refused, SECRET)[0] == Rejected("SOLD_OUT", "sold out")
    done = answer(result_code="SUCCESS", trade_state="SUCCESS", trade_state_desc="签收")
    assert interpret("query", 200, done, SECRET)[0] == Delivered("签收", None, None)
    assert interpret("query", 200, answer(result_code="ORDERNOTEXIST"), SECRET)[0] == UnknownOrder()
    forged = answer("wrong-secret", result_code="SUCCESS", trade_state="SUCCESS")
    assert interpret("query", 200, forged, SECRET)[0].kind == "bad_signature"  # type: ignore[union-attr]
    assert isinstance(interpret("query", 200, b"<html>", SECRET)[0], Abnormal)
    odd = answer(result_code="SUCCESS", trade_state="REFUND")
    assert interpret("query", 200, odd, SECRET)[0] == Abnormal("unmapped", "trade_state 'REFUND'")


@pytest.fixture
async def xmlshop() -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        fields = {c.tag: c.text or "" for c in ET.fromstring(await request.read())}
        if not signing.verify(fields, SECRET, "MD5"):
            return web.Response(body=answer(result_code="SIGNERROR"))
        if request.path == "/pay/unifiedorder":
            return web.Response(body=answer(result_code="SUCCESS", transaction_id="T42"))
        return web.Response(body=answer(result_code="SUCCESS", trade_state="SHIPPING"))

    app = web.Application()
    app.router.add_post("/pay/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_adapter_over_http(xmlshop: str) -> None:
    settings = load_settings(
        None,
        env={},
        overrides={
            "vendors": {
                "xs": {
                    "adapter": "xmlshop",
                    "base_url": xmlshop,
                    "merchant_id": "M1",
                    "secret": SECRET,
                }
            }
        },
    ).settings
    factory = adapter_factory("xmlshop")  # found through the entry point
    assert factory is XmlShopAdapter
    adapter = factory("xs", settings.vendors["xs"], clock=ManualClock())
    order = probe_order("R1", "xs", datetime.now(UTC))
    try:
        placed = await adapter.place(order)
        queried = await adapter.query(order)
    finally:
        await adapter.close()
    assert placed.outcome == Accepted("T42")
    assert queried.outcome_name == "shipped"
