"""Plug-in adapters: the template in ``examples/plugin-adapter`` found through the
``orderwatch.vendors`` entry point group, built by the registry, and driven over loopback.

Nothing is installed: the example's ``src`` goes on ``sys.path`` and ``entry_points`` is
made to list it the way an installed distribution would.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import orderwatch.vendors as vendors_pkg
from orderwatch.clock import ManualClock
from orderwatch.errors import ConfigError
from orderwatch.outcomes import Abnormal, Accepted, InProgress, UnknownOrder
from orderwatch.settings import SettingsHolder, load_settings
from orderwatch.vendors import VendorRegistry, adapter_factory, signing
from orderwatch.vendors.mapped import MappedAdapter, probe_order

PLUGIN_SRC = Path(__file__).resolve().parents[2] / "examples" / "plugin-adapter" / "src"
SECRET = "xmlshop-secret"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The example package importable, and listed as the entry point ``xmlshop``."""
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    ep = EntryPoint(
        name="xmlshop",
        value="orderwatch_vendor_example:XmlShopAdapter",
        group="orderwatch.vendors",
    )

    def entry_points(*, group: str) -> list[EntryPoint]:
        return [ep] if group == "orderwatch.vendors" else []

    monkeypatch.setattr(vendors_pkg, "entry_points", entry_points)
    import orderwatch_vendor_example

    return orderwatch_vendor_example


def test_built_in_names_need_no_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vendors_pkg, "entry_points", lambda *, group: [])
    assert adapter_factory("mapped") is MappedAdapter


def test_the_entry_point_finds_the_plugin(plugin: Any) -> None:
    assert adapter_factory("xmlshop") is plugin.XmlShopAdapter


def test_an_unknown_adapter_name_is_a_config_error(plugin: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        adapter_factory("xmlshopp")
    assert "'xmlshopp'" in exc.value.problems[0]
    assert "orderwatch.vendors" in exc.value.problems[0]


def answer(plugin: Any, secret: str = SECRET, **fields: str) -> bytes:
    fields["sign"] = signing.sign(fields, secret, "MD5")
    data: bytes = plugin.to_xml(fields)
    return data


@pytest.fixture
async def xmlshop(plugin: Any) -> AsyncIterator[dict[str, Any]]:
    """A fake XmlShop on loopback that checks our signature and knows one order."""
    state: dict[str, Any] = {"requests": []}

    async def handle(request: web.Request) -> web.Response:
        fields = {c.tag: c.text or "" for c in ET.fromstring(await request.read())}
        state["requests"].append((request.path, fields))
        if not signing.verify(fields, SECRET, "MD5"):
            return web.Response(body=answer(plugin, result_code="SIGNERROR"))
        if request.path == "/pay/unifiedorder":
            return web.Response(body=answer(plugin, result_code="SUCCESS", transaction_id="T42"))
        if fields["out_trade_no"] != "R1":
            return web.Response(body=answer(plugin, result_code="ORDERNOTEXIST"))
        if fields["out_trade_no"] == "R1" and len(state["requests"]) > 3:
            return web.Response(body=answer(plugin, "forged", result_code="SUCCESS"))
        return web.Response(body=answer(plugin, result_code="SUCCESS", trade_state="SHIPPING"))

    app = web.Application()
    app.router.add_post("/pay/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


async def test_the_registry_builds_and_drives_the_plugin(xmlshop: dict[str, Any]) -> None:
    loaded = load_settings(
        None,
        env={},
        overrides={
            "vendors": {
                "xs": {
                    "adapter": "xmlshop",
                    "base_url": xmlshop["url"],
                    "merchant_id": "M1",
                    "secret": SECRET,
                }
            }
        },
    )
    clock = ManualClock()
    registry = VendorRegistry(SettingsHolder(loaded.settings), clock=clock)
    adapter = registry.get("xs")
    assert adapter is not None
    assert type(adapter).__name__ == "XmlShopAdapter"
    order = probe_order("R1", "xs", clock.now())
    try:
        placed = await adapter.place(order)
        shipped = await adapter.query(order)
        unknown = await adapter.query(probe_order("R2", "xs", clock.now()))
        forged = await adapter.query(order)
    finally:
        await registry.close()
    assert placed.outcome == Accepted("T42")
    assert isinstance(shipped.outcome, InProgress)
    assert shipped.outcome.shipped
    assert unknown.outcome == UnknownOrder()
    assert isinstance(forged.outcome, Abnormal)
    assert forged.outcome.kind == "bad_signature"
    path, sent = xmlshop["requests"][0]
    assert path == "/pay/unifiedorder"
    assert sent["out_trade_no"] == "R1"
    assert sent["mch_id"] == "M1"
