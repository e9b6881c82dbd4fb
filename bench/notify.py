"""Outbox delivery benchmark: how fast the deliverer empties the outbox into a webhook.

What it measures:

* **webhook rate** — ``--rate-rows`` due notifications (default 5,000) delivered by one
  :class:`~orderwatch.notify.Deliverer` (SQLite outbox, ``WebhookChannel``, concurrency and
  batch as given) to a local receiver; deliveries per second, wall and CPU.
* **drain** — ``--rows`` due notifications (default 50,000, a backlog after a long outage)
  drained the same way; seconds until the outbox is empty.
* **store ceiling** — the same drain through a channel that does nothing, so the figure is
  what claiming and writing back costs on SQLite alone.

The receiver runs in its own process (aiohttp), answers 204 and checks every request with
the ``standardwebhooks`` reference library; its counts (requests, distinct ids, signature
failures) are part of the result, so a fast run that delivered garbage does not pass. Rows
are written the way workers write them (claim the order, apply a transition with its outbox
item). Results go to ``bench/results/notify-<time>.json``.

    .venv/bin/python bench/notify.py --quick     # 2,000 / 10,000 rows
    .venv/bin/python bench/notify.py             # 5,000 / 50,000 rows
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "whsec_" + base64.b64encode(b"orderwatch-bench-secret-32-bytes").decode()


# ---------------------------------------------------------------- the receiver (own process)


def serve_receiver() -> None:
    from aiohttp import web
    from standardwebhooks import Webhook, WebhookVerificationError

    hook = Webhook(SECRET)
    stats: dict[str, Any] = {"requests": 0, "bad_signatures": 0}
    ids: set[str] = set()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        stats["requests"] += 1
        try:
            hook.verify(body, dict(request.headers), json_parse=False)
        except WebhookVerificationError:
            stats["bad_signatures"] += 1
        ids.add(request.headers.get("webhook-id", ""))
        return web.Response(status=204)

    async def report(request: web.Request) -> web.Response:
        return web.json_response({**stats, "distinct_ids": len(ids)})

    async def reset(request: web.Request) -> web.Response:
        stats.update(requests=0, bad_signatures=0)
        ids.clear()
        return web.json_response({})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hooks", receive)
        app.router.add_get("/stats", report)
        app.router.add_post("/reset", reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _get(url: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


# ---------------------------------------------------------------- filling the outbox


async def fill(db: Path, rows: int) -> float:
    """``rows`` due notifications, one per order, written as the workers write them."""
    from orderwatch.clock import SystemClock
    from orderwatch.lifecycle import Event, Transition
    from orderwatch.order import NewOrder, Recipient
    from orderwatch.statuses import Status
    from orderwatch.store.base import OutboxItem, Write
    from orderwatch.store.sql import SqlStore
    from orderwatch.views import notification_body

    clock = SystemClock()
    store = SqlStore(f"sqlite:///{db}")
    await store.ensure_schema(auto_upgrade=True)
    started = time.perf_counter()
    chunk = 1000
    for start in range(0, rows, chunk):
        now = clock.now()
        numbers = [f"N{i:08d}" for i in range(start, min(rows, start + chunk))]
        await store.insert_orders(
            [
                NewOrder(
                    order_no=n,
                    vendor="acme",
                    sku="SKU-1001",
                    quantity=1,
                    points=12000,
                    recipient=Recipient("张三", "13800000000", "上海市浦东新区世纪大道100号"),
                    payment_status="PAID",
                    customer_id="C0001",
                )
                for n in numbers
            ],
            now=now,
        )
        claimed = await store.claim_due(
            now=now, real_now=now, limit=len(numbers), worker_id="bench", lease=60
        )
        writes = []
        for order in claimed:
            after = replace(
                order,
                status=Status.SUCCEEDED,
                description="delivered",
                next_run_at=None,
                updated_at=now,
            )
            t = Transition(
                after,
                (Event(kind="succeeded", at=now, to_status=Status.SUCCEEDED),),
                "order.succeeded",
            )
            writes.append(
                Write(t, order.lease_token, OutboxItem(t.notify or "", notification_body(t)))
            )
        await store.apply(writes)
    await store.close()
    return time.perf_counter() - started


# ---------------------------------------------------------------- draining it


class NullChannel:
    """Delivers instantly: what is left is the store's cost."""

    async def send(self, row: Any) -> Any:
        from orderwatch.notify import Delivery

        return Delivery(True)

    async def aclose(self) -> None:
        return None


async def drain(
    db: Path, *, url: str | None, concurrency: int, batch: int, endpoint_concurrency: int
) -> dict[str, Any]:
    from orderwatch.clock import SystemClock
    from orderwatch.notify import Channel, Deliverer
    from orderwatch.store.sql import SqlStore
    from orderwatch.webhook import WebhookChannel

    store = SqlStore(f"sqlite:///{db}")
    channel: Channel = (
        WebhookChannel(url, SECRET, concurrency=endpoint_concurrency) if url else NullChannel()
    )
    d = Deliverer(
        store, clock=SystemClock(), channel=channel, concurrency=concurrency, batch_size=batch
    )
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    delivered = await d.run(burst=True)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0

    def left(conn: Any) -> int:
        import sqlalchemy as sa

        from orderwatch.store.schema import outbox

        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(outbox).where(outbox.c.state != "delivered")
            ).scalar_one()
        )

    not_delivered = await store.execute(left)
    await store.close()
    return {
        "delivered": delivered,
        "not_delivered": not_delivered,
        "seconds": round(wall, 2),
        "per_second": round(delivered / wall, 1) if wall else None,
        "cpu_seconds": round(cpu, 2),
        "cpu_us_per_delivery": round(cpu / delivered * 1e6, 1) if delivered else None,
        "retried": d.retried,
        "failed": d.failed,
    }


async def run(args: argparse.Namespace, url: str, base: str, tmp: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "concurrency": args.concurrency,
        "endpoint_concurrency": args.endpoint_concurrency,
        "batch_size": args.batch,
        "database": "sqlite (WAL, synchronous=FULL)",
    }
    runs = [("webhook_rate", args.rate_rows, url)]
    if not args.rate_only:
        runs += [("webhook_drain", args.rows, url), ("store_ceiling_drain", args.rows, None)]
    for name, rows, target in runs:
        db = tmp / f"{name}.db"
        fill_s = await fill(db, rows)
        if target:
            _get(f"{base}/reset", "POST")
        figures = await drain(
            db,
            url=target,
            concurrency=args.concurrency,
            batch=args.batch,
            endpoint_concurrency=args.endpoint_concurrency,
        )
        figures = {"rows": rows, "fill_seconds": round(fill_s, 2), **figures}
        if target:
            figures["receiver"] = _get(f"{base}/stats")
        result[name] = figures
        print(f"{name}: {json.dumps(figures, ensure_ascii=False)}", flush=True)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="backlog to drain")
    parser.add_argument("--rate-rows", type=int, default=5_000, help="rows for the rate run")
    parser.add_argument("--concurrency", type=int, default=64, help="rows in flight")
    parser.add_argument("--endpoint-concurrency", type=int, default=64, help="HTTP requests")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rate-only", action="store_true", help="only the rate run")
    parser.add_argument("--quick", action="store_true", help="2,000 / 10,000 rows")
    parser.add_argument("--serve-receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receiver:
        serve_receiver()
        return
    if args.quick:
        args.rows, args.rate_rows = 10_000, 2_000

    from orderwatch.log import configure

    configure(level="warning")
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--serve-receiver"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert receiver.stdout is not None
        port = int(receiver.stdout.readline())
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory(prefix="ow-bench-notify-") as tmp:
            result = asyncio.run(run(args, f"{base}/hooks", base, Path(tmp)))
    finally:
        receiver.terminate()
        receiver.wait(10)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"notify-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
