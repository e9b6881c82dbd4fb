"""What a reload changes, seen through a real worker: SQLite store, the vendor simulator over
loopback HTTP, and the fake Nacos feeding the settings holder the worker reads.

* a new ``initial_delay`` schedules an order placed after the change, not one placed before;
* new backoff applies to each order's next schedule calculation, never rewrites the past;
* lowering ``max_polls`` below an order's queries ends it at its next due time with
  MAX_POLLS_EXCEEDED, without another query;
* a removed vendor stops being called, its orders wait visibly, and carry on when it is back.

Schedule time is a manual clock shared by the worker and the simulator; the config watcher
runs on real time (its long polls are a fraction of a second here).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from config_helpers import config_center_toml, until
from nacos_fake import FakeNacos
from tests.support.orders import new_order

from orderwatch.clock import ManualClock
from orderwatch.config_center import ConfigWatcher, load_initial, watch_config
from orderwatch.order import Order
from orderwatch.service import Service
from orderwatch.settings import load_settings
from orderwatch.simulator import Simulator, SimulatorConfig
from orderwatch.statuses import Reason, Status
from orderwatch.worker import Worker

SECRET = "s3cret"
MERCHANT = "M0001"
MINUTE = 60.0


def vendor_toml(base_url: str) -> str:
    return (
        f"[vendors.acme]\nbase_url = '{base_url}'\nmerchant_id = '{MERCHANT}'\n"
        f"secret = '{SECRET}'\ntimeout = '300ms'\n"
    )


def polling_toml(**values: object) -> str:
    body = "".join(
        f"{k} = {v!r}\n" if not isinstance(v, str) else f"{k} = '{v}'\n" for k, v in values.items()
    )
    return "[polling]\n" + body


@dataclass
class Rig:
    clock: ManualClock
    sim: Simulator
    nacos: FakeNacos
    service: Service
    worker: Worker
    watcher: ConfigWatcher

    async def publish(self, content: str) -> None:
        """Publish to Nacos and wait until the running worker's settings have it."""
        before = self.watcher.applied_updates
        await self.nacos.publish(content)
        await until(lambda: self.watcher.applied_updates > before, what="the reload")

    async def order(self, order_no: str) -> Order:
        order = await self.service.store.get_order(order_no)
        assert order is not None
        return order

    async def submit(self, order_no: str) -> None:
        await self.service.submit([new_order(order_no, customer_id=None)])

    async def burst(self) -> None:
        await self.worker.run(burst=True)

    async def at_next_run(self, order_no: str) -> Order:
        """Move the clock to the order's due time and let the worker act on it."""
        order = await self.order(order_no)
        assert order.next_run_at is not None, order
        self.clock.set(order.next_run_at)
        await self.burst()
        return await self.order(order_no)


FIRST = polling_toml(initial_delay="10m", initial_interval="5m", factor=2.0, jitter=0.0)


@pytest.fixture
async def rig(tmp_path: Path, nacos: FakeNacos) -> AsyncIterator[Rig]:
    """A worker whose polling and vendor settings come from the fake Nacos."""
    clock = ManualClock()
    sim = Simulator(
        SimulatorConfig(
            secret=SECRET,
            merchant_id=MERCHANT,
            hang=1.0,
            delivery_min=20 * 86400.0,  # keep every order in transit: only config ends them
            delivery_max=21 * 86400.0,
        ),
        clock=clock,
    )
    await sim.start("127.0.0.1", 0)
    assert sim.base_url is not None
    await nacos.publish(FIRST + vendor_toml(sim.base_url))
    path = tmp_path / "orderwatch.toml"
    path.write_text(
        f"[database]\nurl = 'sqlite:///{tmp_path / 'ow.db'}'\n" + config_center_toml(nacos.address),
        encoding="utf-8",
    )
    loaded = await load_initial(load_settings(path, env={}))
    service = await Service.open(loaded, clock=clock)
    worker = service.worker(rng=random.Random(0))
    try:
        async with watch_config(service.settings, loaded) as watcher:
            assert watcher is not None
            yield Rig(clock, sim, nacos, service, worker, watcher)
    finally:
        await worker.vendors.close()
        await service.close()
        await sim.stop()


async def test_a_new_initial_delay_applies_to_orders_placed_after_it(rig: Rig) -> None:
    await rig.submit("R-BEFORE")
    await rig.burst()
    placed_before = rig.clock.now()

    assert rig.sim.base_url is not None
    await rig.publish(
        polling_toml(initial_delay="2m", initial_interval="5m", jitter=0.0)
        + vendor_toml(rig.sim.base_url)
    )
    rig.clock.advance(30)
    await rig.submit("R-AFTER")
    await rig.burst()

    before, after = await rig.order("R-BEFORE"), await rig.order("R-AFTER")
    assert (before.status, after.status) == (Status.ORDERED, Status.ORDERED)
    assert before.next_run_at == placed_before + timedelta(minutes=10)  # not rewritten
    assert after.next_run_at == rig.clock.now() + timedelta(minutes=2)
    assert rig.service.settings.sources["polling.initial_delay"] == "nacos"


async def test_new_backoff_applies_to_the_next_schedule_and_never_rewrites_the_past(
    rig: Rig,
) -> None:
    await rig.submit("R-1")
    await rig.burst()
    first = await rig.at_next_run("R-1")  # query 1 → next in interval(1) = 5m
    assert first.queries == 1
    assert first.next_run_at == rig.clock.now() + timedelta(minutes=5)
    scheduled = first.next_run_at

    assert rig.sim.base_url is not None
    await rig.publish(
        polling_toml(initial_delay="10m", initial_interval="1m", factor=3.0, jitter=0.0)
        + vendor_toml(rig.sim.base_url)
    )

    assert (await rig.order("R-1")).next_run_at == scheduled  # the booked time stays
    second = await rig.at_next_run("R-1")  # query 2 → interval(2) = 1m × 3
    assert second.queries == 2
    assert second.next_run_at == rig.clock.now() + timedelta(minutes=3)
    events = await rig.service.store.get_events(second.id)
    queried = [e for e in events if e.kind == "queried"]
    assert [e.detail for e in queried] == [
        {"next_run_at": scheduled.isoformat()},
        {"next_run_at": second.next_run_at.isoformat()},
    ]


async def test_lowering_max_polls_ends_orders_at_their_next_due_time(rig: Rig) -> None:
    await rig.submit("R-1")
    await rig.burst()
    for _ in range(3):
        await rig.at_next_run("R-1")
    order = await rig.order("R-1")
    assert (order.status, order.queries) == (Status.ORDERED, 3)
    queries_sent = rig.sim.query_requests["R-1"]

    assert rig.sim.base_url is not None
    await rig.publish(FIRST + "max_polls = 2\n" + vendor_toml(rig.sim.base_url))
    await rig.burst()  # not due yet: nothing happens before its time
    assert (await rig.order("R-1")).status is Status.ORDERED

    ended = await rig.at_next_run("R-1")

    assert (ended.status, ended.reason) == (Status.FAILED, Reason.MAX_POLLS_EXCEEDED)
    assert ended.description == "3 queries sent, max_polls is 2"
    assert rig.sim.query_requests["R-1"] == queries_sent  # ended without another query


async def test_a_removed_vendor_is_not_called_and_its_orders_wait_visibly(rig: Rig) -> None:
    await rig.submit("R-1")
    await rig.burst()
    assert rig.sim.base_url is not None
    url = rig.sim.base_url
    queries_sent = rig.sim.query_requests["R-1"]

    await rig.publish(FIRST)  # acme is gone from the data id
    assert "acme" not in rig.service.settings.current.vendors
    waiting = await rig.at_next_run("R-1")

    assert waiting.status is Status.ORDERED
    assert waiting.description == "waiting: vendor 'acme' is not configured"
    assert waiting.next_run_at is not None  # visible, and looked at again
    assert waiting.next_run_at > rig.clock.now()
    assert rig.sim.query_requests["R-1"] == queries_sent
    kinds = [e.kind for e in await rig.service.store.get_events(waiting.id)]
    assert kinds.count("vendor_missing") == 1

    await rig.publish(FIRST + vendor_toml(url))  # back again
    resumed = await rig.at_next_run("R-1")

    assert resumed.queries == 1
    assert rig.sim.query_requests["R-1"] == queries_sent + 1


async def test_an_invalid_update_leaves_the_worker_on_the_last_good_config(rig: Rig) -> None:
    assert rig.sim.base_url is not None
    await rig.nacos.publish(FIRST.replace("10m", "ten minutes") + vendor_toml(rig.sim.base_url))
    await until(lambda: rig.watcher.rejected_updates == 1, what="the rejection")

    await rig.submit("R-1")
    await rig.burst()

    order = await rig.order("R-1")
    assert order.status is Status.ORDERED
    assert order.next_run_at == rig.clock.now() + timedelta(minutes=10)
    assert "acme" in rig.service.settings.current.vendors
