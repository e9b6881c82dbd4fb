"""The store's hot calls alone: claim and write-back cost per order, in one process.

No HTTP, no event-loop contention: ``--orders`` orders (default 5,000) go through three
rounds on a fresh SQLite file (or ``--url``) — placed (accepted), queried (shipped, with a
notification), queried again — each round claimed in batches of ``--batch`` and written
back as the worker writes them. Prints µs per order for ``claim_due`` and ``apply``, the
best of ``--repeat`` runs. A change to the hot SQL (``store/hot.py``) is measured against
its parent by running this before and after in the same sitting (with ``--url``, give it
a scratch database: each run adds its orders)::

    .venv/bin/python bench/store_ops.py
    .venv/bin/python bench/store_ops.py --url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import deque
from pathlib import Path

from orderwatch import lifecycle
from orderwatch.clock import ManualClock
from orderwatch.order import NewOrder, Order, Recipient
from orderwatch.outcomes import Accepted, Exchange, InProgress
from orderwatch.service import Service
from orderwatch.settings import load_settings
from orderwatch.statuses import Status
from orderwatch.store.base import Write
from orderwatch.views import outbox_item

VENDOR = "acme"
SHIPPED = InProgress(
    vendor_status="SHIPPED",
    shipped=True,
    description="运输中 in transit",
    logistics={"carrier": "SF", "tracking_no": "SF1234567890"},
    vendor_order_id="V1",
)


async def one_run(url: str, orders: int, batch: int, held: int = 0) -> tuple[float, float]:
    settings = load_settings(
        None,
        env={},
        overrides={
            "database": {"url": url},
            "vendors": {
                VENDOR: {"base_url": "http://127.0.0.1:9", "merchant_id": "M", "secret": "s"}
            },
        },
    )
    clock = ManualClock()
    service = await Service.open(settings, clock=clock)
    try:
        prefix = f"B{time.time_ns()}-"
        recipient = Recipient("张三", "13800000000", "北京市朝阳区建国路100号")
        await service.submit(
            [NewOrder(f"{prefix}{i}", VENDOR, "SKU-1", 1, 100, recipient) for i in range(orders)]
        )
        store, policy, rng = service.store, service.settings.policy(VENDOR), random.Random(1)
        events = service.settings.current.notify.events
        claim_s = apply_s = 0.0

        async def write_back(got: list[Order]) -> float:
            writes = []
            for order in got:
                now = clock.now()
                if order.status is Status.PENDING:
                    sent = lifecycle.mark_sent(order, now, actor="b", policy=policy).order
                    answer = Exchange(Accepted("V1"), 0.01, 200, "0000")
                    transition = lifecycle.after_place(sent, answer, policy, now, rng)
                else:
                    answer = Exchange(SHIPPED, 0.01, 200, "0000")
                    transition = lifecycle.after_query(order, answer, policy, now, rng)
                writes.append(Write(transition, order.lease_token, outbox_item(transition, events)))
            t = time.perf_counter()
            applied = await store.apply(writes)
            assert len(applied) == len(writes), "a write-back was refused"
            return time.perf_counter() - t

        claimed = 0
        for _ in range(3):
            clock.advance(30 * 86400)  # everything claimed so far is due again
            # Claimed batches not yet written back, as in a busy worker: their rows stay
            # due (and leased) at the head of the due index while the next claim runs.
            leased: deque[list[Order]] = deque()
            while True:
                t = time.perf_counter()
                got = await store.claim_due(
                    now=clock.now(), real_now=clock.real(), limit=batch, worker_id="b", lease=60
                )
                claim_s += time.perf_counter() - t
                if got:
                    leased.append(got)
                    claimed += len(got)
                while leased and (not got or sum(map(len, leased)) > held):
                    apply_s += await write_back(leased.popleft())
                if not got:
                    break
        return claim_s / claimed * 1e6, apply_s / claimed * 1e6
    finally:
        await service.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", help="database URL (default: a fresh SQLite file)")
    p.add_argument("--orders", type=int, default=5000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--held",
        type=int,
        default=0,
        help="claim ahead: keep this many orders leased while the next claim runs, as a"
        " busy worker does (0: each batch is written back before the next claim)",
    )
    opts = p.parse_args()
    best: tuple[float, float] | None = None
    for _ in range(opts.repeat):
        with tempfile.TemporaryDirectory() as d:
            url = opts.url or f"sqlite:///{Path(d) / 'store_ops.db'}"
            claim, apply = asyncio.run(one_run(url, opts.orders, opts.batch, opts.held))
        print(f"claim_due {claim:6.1f} µs/order   apply {apply:6.1f} µs/order")
        if best is None or claim + apply < sum(best):
            best = (claim, apply)
    assert best is not None
    print(f"best of {opts.repeat}: claim_due {best[0]:.1f} µs/order, apply {best[1]:.1f} µs/order")


if __name__ == "__main__":
    main()
