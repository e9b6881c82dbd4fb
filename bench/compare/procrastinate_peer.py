"""The workload on procrastinate: PostgreSQL job queue, polls as jobs deferred with schedule_in.

Runs in the peers' venv. ``python procrastinate_peer.py worker`` is one async worker process
(``concurrency`` = this process's share of the 64 in flight); the HTTP client is aiohttp set
up as orderwatch's reference adapter sets it up (one ``ClientSession`` per process over
``TCPConnector(limit=C)``). Tasks (all async):

* ``place(order)`` — signed place-order; when accepted, defers ``poll`` with
  ``schedule_in`` = the first poll delay.
* ``poll(order_no, attempt, due, late)`` — signed query; final answer or ``max_polls``
  answers: store the final state (a row in ``bench_final``); otherwise defers the next
  ``poll`` with the backoff delay.

Scheduled jobs are found by polling (``fetch_job_polling_interval``, see run.py's
``--procrastinate-poll``); new jobs also wake the workers through LISTEN/NOTIFY. A killed
worker's jobs stay ``doing`` until someone retries them: each worker runs the documented
recipe (retry the jobs of workers whose heartbeat is stale, every 2 s).

    python -c 'import procrastinate_peer as p; p.main(["setup"])'   # schema + bench_final
    ... p.main(["enqueue", N, PREFIX, WAITING]) / p.main(["worker"]) / p.main(["collect"])
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import aiohttp
from peers_common import (
    HEADERS,
    cfg,
    delay_after,
    final_record,
    interpret,
    order_fields,
    place_body,
    query_body,
    summarise,
)
from procrastinate import App, PsycopgConnector

CONCURRENCY = int(cfg("process_concurrency"))
app = App(
    connector=PsycopgConnector(
        conninfo=cfg("pg_dsn"), min_size=2, max_size=max(4, CONCURRENCY // 2 + 2)
    )
)
_sessions: list[aiohttp.ClientSession] = []


def session() -> aiohttp.ClientSession:
    """One session per worker process (created in the worker's event loop)."""
    if not _sessions:
        connector = aiohttp.TCPConnector(
            limit=CONCURRENCY, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        _sessions.append(
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
        )
    return _sessions[0]


async def post(path: str, body: bytes) -> tuple[int, bytes]:
    async with session().post(
        cfg("sim_url") + path, data=body, headers=HEADERS, allow_redirects=False
    ) as resp:
        return resp.status, await resp.read()


async def store(order_no: str, record: str) -> None:
    await app.connector.execute_query_async(
        "INSERT INTO bench_final (order_no, record) VALUES (%(order_no)s, %(record)s) "
        "ON CONFLICT (order_no) DO NOTHING",
        order_no=order_no,
        record=record,
    )


@app.task(name="place", queue="bench")
async def place(order: dict[str, Any]) -> None:
    status, raw = await post("/orders", place_body(order))
    outcome, vendor_status = interpret("place", status, raw)
    if outcome == "accepted":
        d = delay_after(0)
        await poll.configure(schedule_in={"seconds": d}).defer_async(
            order_no=order["order_no"], attempt=1, due=time.time() + d, late=[]
        )
    else:
        await store(order["order_no"], final_record(outcome, vendor_status, []))


@app.task(name="poll", queue="bench")
async def poll(order_no: str, attempt: int, due: float, late: list[float]) -> None:
    late = [*late, time.time() - due]
    status, raw = await post("/orders/query", query_body(order_no))
    outcome, vendor_status = interpret("query", status, raw)
    if outcome == "final":
        await store(order_no, final_record(vendor_status or "", vendor_status, late))
    elif attempt >= int(cfg("max_polls")):
        await store(order_no, final_record("MAX_POLLS", vendor_status, late))
    else:
        d = delay_after(attempt)
        await poll.configure(schedule_in={"seconds": d}).defer_async(
            order_no=order_no, attempt=attempt + 1, due=time.time() + d, late=late
        )


async def setup() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await app.connector.execute_query_async(
            "CREATE TABLE IF NOT EXISTS bench_final (order_no text PRIMARY KEY, record text)"
        )


async def enqueue(n: int, prefix: str, waiting: int) -> None:
    """`waiting` orders whose next poll is a year away, then `n` orders to place now."""
    async with app.open_async():
        far = 365 * 86400 / float(cfg("speed"))
        later = poll.configure(schedule_in={"seconds": far})
        batch: list[dict[str, Any]] = []
        for o in order_fields(waiting, f"{prefix}w"):
            batch.append(
                {"order_no": o["order_no"], "attempt": 1, "due": time.time() + far, "late": []}
            )
            if len(batch) == 2000:
                await later.batch_defer_async(*batch)
                batch = []
        if batch:
            await later.batch_defer_async(*batch)
        orders = order_fields(n, prefix)
        for i in range(0, len(orders), 2000):
            await place.batch_defer_async(*({"order": o} for o in orders[i : i + 2000]))


async def retry_stalled() -> None:
    """Procrastinate's recipe for jobs of a dead worker: retry those of stale heartbeats."""
    while True:
        await asyncio.sleep(2)
        with contextlib.suppress(Exception):
            for job in await app.job_manager.get_stalled_jobs(
                seconds_since_heartbeat=float(cfg("stalled_after"))
            ):
                await app.job_manager.retry_job(job)


async def worker() -> None:
    async with app.open_async():
        reaper = asyncio.create_task(retry_stalled())
        try:
            await app.run_worker_async(
                queues=["bench"],
                concurrency=CONCURRENCY,
                fetch_job_polling_interval=float(cfg("fetch_interval")),
                update_heartbeat_interval=1.0,
                stalled_worker_timeout=float(cfg("stalled_after")),
                delete_jobs="successful",
            )
        finally:
            reaper.cancel()
            for s in _sessions:
                await s.close()


async def collect() -> dict[str, Any]:
    async with app.open_async():
        rows = await app.connector.execute_query_all_async("SELECT record FROM bench_final")
    return summarise(r["record"] for r in rows)


def main(argv: list[str]) -> None:
    cmd = argv[0]
    sys.argv = [sys.argv[0], *argv]
    if cmd == "setup":
        asyncio.run(setup())
    elif cmd == "enqueue":
        extra = int(sys.argv[4]) if len(sys.argv) > 4 else 0
        asyncio.run(enqueue(int(sys.argv[2]), sys.argv[3], extra))
    elif cmd == "worker":
        asyncio.run(worker())
    elif cmd == "collect":
        json.dump(asyncio.run(collect()), sys.stdout)
    else:
        raise SystemExit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    # Run as ``python -c "import procrastinate_peer as p; p.main([...])"``: procrastinate warns
    # when its App lives in the __main__ module.
    main(sys.argv[1:])
