"""Every ``sign_type`` end to end: the reference adapter against the real simulator on
loopback, with the signature in the body and in a header.

Both directions each time: the simulator verifies what the adapter signs (a request it
cannot verify is answered ``E401`` and not counted), and the adapter verifies what the
simulator signs (an answer it cannot verify is ``bad_signature``, never trusted). For RSA2
and SM2 each side holds its own private key and the other's public key (the test keys in
``tests/unit/vectors``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.support.orders import make_order

from orderwatch.clock import ManualClock
from orderwatch.order import Order, Recipient
from orderwatch.outcomes import Abnormal, Accepted, Delivered, InProgress, Rejected
from orderwatch.settings import VendorSettings
from orderwatch.sim_dialect import Dialect
from orderwatch.simulator import Simulator, SimulatorConfig
from orderwatch.statuses import Status
from orderwatch.vendors.reference import ReferenceAdapter
from orderwatch.vendors.signing import SIGN_TYPES

VECTORS = Path(__file__).resolve().parents[1] / "unit" / "vectors"
SECRET = "e2e-secret"
MERCHANT = "M0001"
LOCATIONS = ("body", "header")

Setup = Callable[..., Awaitable[tuple[Simulator, ReferenceAdapter, ManualClock]]]


def key(name: str) -> str:
    return str(VECTORS / name)


def kind_of(sign_type: str) -> str | None:
    return {"RSA2": "rsa", "SM2": "sm2"}.get(sign_type)


def vendor_settings(sign_type: str, location: str, base_url: str, **changes: Any) -> VendorSettings:
    data: dict[str, Any] = {
        "base_url": base_url,
        "merchant_id": MERCHANT,
        "sign_type": sign_type,
        "sign_location": location,
        "timeout": "2s",
    }
    kind = kind_of(sign_type)
    if kind is None:
        data["secret"] = SECRET
    else:
        data["private_key"] = key(f"{kind}_merchant.pem")
        data["vendor_public_key"] = key(f"{kind}_vendor.pub.pem")
    return VendorSettings.model_validate({**data, **changes})


def simulator_config(sign_type: str, **changes: Any) -> SimulatorConfig:
    data: dict[str, Any] = {"merchant_id": MERCHANT, "secret": SECRET, "sign_type": sign_type}
    kind = kind_of(sign_type)
    if kind is not None:
        data["private_key"] = key(f"{kind}_vendor.pem")
        data["merchant_public_key"] = key(f"{kind}_merchant.pub.pem")
    return SimulatorConfig(**{**data, **changes})


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    opened: list[tuple[Simulator, ReferenceAdapter]] = []

    async def factory(
        sign_type: str,
        location: str,
        *,
        sim_changes: dict[str, Any] | None = None,
        dialect: Dialect | None = None,
        **vendor_changes: Any,
    ) -> tuple[Simulator, ReferenceAdapter, ManualClock]:
        clock = ManualClock()
        if dialect is None and location == "header":
            dialect = Dialect(sign_location="header")
        sim = Simulator(
            simulator_config(sign_type, **(sim_changes or {})), clock=clock, dialect=dialect
        )
        url = await sim.start("127.0.0.1", 0)
        cfg = vendor_settings(sign_type, location, url, **vendor_changes)
        adapter = ReferenceAdapter("acme", cfg, clock=clock)
        opened.append((sim, adapter))
        return sim, adapter, clock

    yield factory
    for sim, adapter in reversed(opened):
        await adapter.close()
        await sim.stop()


def an_order(order_no: str, clock: ManualClock) -> Order:
    now = clock.now()
    return make_order(
        Status.SENT,
        order_no=order_no,
        recipient=Recipient("张三", "13800000000", "上海市浦东新区世纪大道100号"),
        customer_id=None,
        placements=0,
        next_run_at=now,
        started_at=now,
        created_at=now,
        updated_at=now,
    )


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("sign_type", SIGN_TYPES)
async def test_an_order_is_placed_and_delivered(
    setup: Setup, sign_type: str, location: str
) -> None:
    sim, adapter, clock = await setup(sign_type, location)
    order = an_order(f"R-{sign_type}-{location}", clock)

    placed = await adapter.place(order)
    assert isinstance(placed.outcome, Accepted), placed
    assert sim.place_requests[order.order_no] == 1  # verified, so counted
    assert sim.by_answer["unauthorized"] == 0

    processing = await adapter.query(order)
    assert isinstance(processing.outcome, InProgress), processing

    clock.advance(timedelta(days=4).total_seconds())  # past delivery_max (3 days)
    delivered = await adapter.query(order)
    assert isinstance(delivered.outcome, Delivered), delivered
    assert sim.query_requests[order.order_no] == 2


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("sign_type", SIGN_TYPES)
async def test_a_wrongly_signed_answer_is_never_trusted(
    setup: Setup, sign_type: str, location: str
) -> None:
    sim, adapter, clock = await setup(sign_type, location, sim_changes={"bad_sign_rate": 1.0})
    order = an_order("R-BAD-ANSWER", clock)

    placed = await adapter.place(order)
    assert placed.outcome == Abnormal("bad_signature", "answer signature missing or wrong")
    assert sim.by_answer["bad_sign"] == 1
    assert sim.place_requests[order.order_no] == 1  # our request was fine


@pytest.mark.parametrize("location", LOCATIONS)
@pytest.mark.parametrize("sign_type", ["HMAC-SHA256", "MD5", "RSA2", "SM2"])
async def test_the_simulator_refuses_a_request_it_cannot_verify(
    setup: Setup, sign_type: str, location: str
) -> None:
    # The vendor holds another merchant key (or secret) than the one we sign with.
    kind = kind_of(sign_type)
    changes = (
        {"secret": "another-secret"}
        if kind is None
        else {"merchant_public_key": key(f"{kind}_vendor.pub.pem")}
    )
    sim, adapter, clock = await setup(sign_type, location, sim_changes=changes)
    order = an_order("R-BAD-REQUEST", clock)

    placed = await adapter.place(order)
    assert placed.vendor_code == "E401"
    assert isinstance(placed.outcome, Rejected | Abnormal), placed
    assert sim.by_answer["unauthorized"] == 1
    assert sim.place_requests[order.order_no] == 0  # not counted: never placed


@pytest.mark.parametrize("sign_type", ["RSA2", "SM2"])
async def test_an_answer_signed_with_another_vendor_key_is_refused(
    setup: Setup, sign_type: str
) -> None:
    kind = kind_of(sign_type)
    # We expect the vendor's key but are given our own public key as "the vendor's".
    sim, adapter, clock = await setup(
        sign_type, "body", vendor_public_key=key(f"{kind}_merchant.pub.pem")
    )
    placed = await adapter.place(an_order("R-OTHER-KEY", clock))
    assert isinstance(placed.outcome, Abnormal)
    assert placed.outcome.kind == "bad_signature"
    assert sim.by_answer["unauthorized"] == 0


async def test_options_on_both_sides_end_to_end(setup: Setup) -> None:
    # A vendor that leaves "points" out of the signature, keeps empty values, writes upper
    # case hex and wants the signature in a header of its own name.
    options = {"sign_exclude": ["points"], "sign_keep_empty": True, "sign_hex_case": "upper"}
    sim, adapter, clock = await setup(
        "HMAC-SHA256",
        "header",
        sim_changes=options,
        dialect=Dialect(sign_location="header", sign_header="X-Sign"),
        sign_header="X-Sign",
        **options,
    )
    order = an_order("R-OPTIONS", clock)
    placed = await adapter.place(order)
    assert isinstance(placed.outcome, Accepted), placed

    # the same adapter against a vendor that does not share the options: refused
    sim.configure(sign_hex_case="lower")
    again = await adapter.query(order)
    assert again.vendor_code == "E401"
    assert sim.by_answer["unauthorized"] == 1
