"""Two vendors with their own protocols, connected by config alone (``adapter = "mapped"``).

GiftCo (form bodies, flat answers, ``SUCCESS``/``GOODS_SOLD_OUT`` codes, ``"10"``…``"40"``
states, yyyyMMddHHmmss timestamps, MD5) and ShopMall (nested JSON, integer codes, states
under ``data.result.state``, millisecond timestamps, the query as a GET, HMAC-SHA256) are
each played by a real simulator speaking the dialect in ``examples/vendors/*.sim.toml``, and
configured in orderwatch exactly as ``examples/vendors/*.toml`` says. One real worker drives
orders for both at once against a SQLite file on a shared manual clock; every order must end
as its simulated fate says, with one place-order request per order as counted by the vendor.
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support.orders import new_order

from orderwatch.clock import ManualClock
from orderwatch.order import Order
from orderwatch.service import Service
from orderwatch.settings import load_settings
from orderwatch.sim_dialect import load_dialect
from orderwatch.simulator import Simulator, SimulatorConfig
from orderwatch.statuses import Reason, Status
from orderwatch.worker import Worker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "vendors"
Drive = Callable[..., Awaitable[dict[str, Order]]]
VENDORS = {  # name → (merchant id, sign_type), as in the example configs
    "giftco": ("GC10001", "MD5"),
    "shopmall": ("SM-APP-01", "HMAC-SHA256"),
}
REASONS = {"E101": "out of stock", "E102": "bad address"}


def vendor_config(name: str, base_url: str, secret: str) -> dict[str, Any]:
    """``[vendors.NAME]`` from the example file, pointed at the simulator.

    The simulators here never hang, so the timeout is long: a loaded CI machine that stalls
    the loop for a few hundred milliseconds must not turn a placed order into a timed-out one.
    """
    data = tomllib.loads((EXAMPLES / f"{name}.toml").read_text(encoding="utf-8"))
    cfg: dict[str, Any] = data["vendors"][name]
    return {**cfg, "base_url": base_url, "secret": secret, "timeout": "5s"}


@dataclass
class Vendors:
    clock: ManualClock
    sims: dict[str, Simulator]
    service: Service
    worker: Worker


MakeVendors = Callable[..., Awaitable[Vendors]]


@pytest.fixture
async def make_vendors(tmp_path: Path, clock: ManualClock) -> AsyncIterator[MakeVendors]:
    """``await make_vendors(giftco={...sim settings}, shopmall={...})`` → both, started."""
    sims: list[Simulator] = []
    services: list[Service] = []
    workers: list[Worker] = []

    async def factory(**behaviour: dict[str, Any]) -> Vendors:
        started: dict[str, Simulator] = {}
        vendors: dict[str, Any] = {}
        for name, (merchant, sign_type) in VENDORS.items():
            secret = f"{name}-secret"
            config = SimulatorConfig(
                merchant_id=merchant,
                secret=secret,
                sign_type=sign_type,
                hang=1.0,
                **behaviour.get(name, {}),
            )
            sim = Simulator(
                config, clock=clock, dialect=load_dialect(EXAMPLES / f"{name}.sim.toml")
            )
            url = await sim.start("127.0.0.1", 0)
            sims.append(sim)
            started[name] = sim
            vendors[name] = vendor_config(name, url, secret)
        loaded = load_settings(
            None,
            env={},
            overrides={
                "database": {"url": f"sqlite:///{tmp_path / 'ow.db'}"},
                "vendors": vendors,
                "polling": {"jitter": 0.0},
            },
        )
        service = await Service.open(loaded, clock=clock, auto_upgrade=True)
        services.append(service)
        worker = service.worker(rng=random.Random(0))
        workers.append(worker)
        return Vendors(clock, started, service, worker)

    yield factory
    for w in workers:
        await w.vendors.close()
    for s in reversed(services):
        await s.close()
    for sim in reversed(sims):
        await sim.stop()


def expected(sim: Simulator, order: Order) -> None:
    """The order ended as the simulator decided its fate, and was placed exactly once."""
    fate = sim._fate(order.order_no)
    assert sim.place_requests[order.order_no] == 1, order.order_no
    assert order.placements == 1
    if fate.reject is not None:
        assert (order.status, order.reason) == (Status.FAILED, Reason.PLACE_REJECTED)
        vendor_code = sim.dialect.codes[fate.reject]
        assert order.description == f"{vendor_code} {REASONS[fate.reject]}"
    elif fate.fail:
        assert (order.status, order.reason) == (Status.FAILED, Reason.VENDOR_FAILED)
        assert order.description == "收件人拒收"
        assert order.logistics is not None
        assert order.logistics["tracking_no"] == fate.tracking_no
    else:
        assert (order.status, order.reason) == (Status.SUCCEEDED, None), order
        assert order.description == "已签收"
        assert order.vendor_order_id == fate.vendor_order_id
        assert order.logistics is not None
        assert order.logistics["carrier"] == "SF"
        assert order.logistics["events"][-1]["text"] == "已签收"


async def submit_both(v: Vendors, per_vendor: int) -> list[str]:
    orders = [
        new_order(f"{n[:2].upper()}{i:04d}", vendor=n, quantity=2)
        for n in VENDORS
        for i in range(per_vendor)
    ]
    result = await v.service.submit(orders, actor="test")
    assert len(result.created) == len(orders)
    return [o.order_no for o in orders]


async def test_two_vendors_end_to_end(make_vendors: MakeVendors, drive: Drive) -> None:
    fates = {"reject_rate": 0.2, "fail_rate": 0.2, "delivery_max": 2 * 86400.0}
    v = await make_vendors(giftco=fates, shopmall=fates)
    order_nos = await submit_both(v, per_vendor=25)
    final = await drive(v.service, v.worker, v.clock, order_nos, max_rounds=80)
    seen: set[tuple[Status, Reason | None]] = set()
    for order in final.values():
        expected(v.sims[order.vendor], order)
        seen.add((order.status, order.reason))
    # the seed gives every ending for both vendors, so none is checked vacuously
    assert seen == {
        (Status.SUCCEEDED, None),
        (Status.FAILED, Reason.PLACE_REJECTED),
        (Status.FAILED, Reason.VENDOR_FAILED),
    }
    for name, sim in v.sims.items():
        stats = sim.stats()
        assert stats["max_place_requests"] == 1
        assert stats["by_answer"].get("unauthorized", 0) == 0, name  # our signatures hold
        assert stats["by_answer"].get("bad_request", 0) == 0, name  # our field names hold
        assert stats["by_answer"]["shipped"] > 0, name  # logistics went through in transit


async def test_noise_is_retried_never_trusted(make_vendors: MakeVendors, drive: Drive) -> None:
    """Once every order is placed, the vendors answer queries with garbage, bad signatures,
    500s and a maintenance window in their own codes: each order still ends as its fate
    says, and every untrusted answer is an abnormal exchange on the order's timeline."""
    v = await make_vendors(
        giftco={"fail_rate": 0.3, "delivery_max": 86400.0},
        shopmall={"fail_rate": 0.3, "delivery_max": 86400.0},
    )
    order_nos = await submit_both(v, per_vendor=15)
    await v.worker.run(burst=True)  # places every order, before any noise
    for sim in v.sims.values():
        assert sim.stats()["accepted"] == 15
        sim.configure(
            garbage_rate=0.15,
            bad_sign_rate=0.25,
            error_rate=0.1,
            maintenance=[(1800.0, 5400.0)],
            maintenance_style="code",
        )
    final = await drive(v.service, v.worker, v.clock, order_nos, max_rounds=120)
    for order in final.values():
        expected(v.sims[order.vendor], order)
    for name, sim in v.sims.items():
        by_answer = sim.stats()["by_answer"]
        assert by_answer["bad_sign"] > 0, name
        assert by_answer["maintenance"] > 0, name
        untrusted = by_answer["bad_sign"] + by_answer["garbage"] + by_answer["error"]
        untrusted += by_answer["maintenance"]
        orders = [o for o in final.values() if o.vendor == name]
        abnormal = 0
        for order in orders:
            detail = await v.service.get(order.order_no)
            abnormal += sum(1 for e in detail.events if (e.outcome or "").startswith("abnormal:"))
        assert abnormal == untrusted, name
