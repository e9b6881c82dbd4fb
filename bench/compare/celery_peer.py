"""The workload on Celery: Redis broker, polls as countdown tasks re-enqueued per attempt.

Runs in the peers' venv. The worker is started by run.py as
``python -m celery -A celery_peer worker -P threads -c C`` (cwd bench/compare), one or more
processes (``--celery-pool gevent`` is the other choice; threads measured faster here); the
HTTP client is urllib3 (one ``PoolManager`` per process, ``maxsize=C``). Tasks:

* ``place(order)`` — signed place-order; when accepted, enqueues ``poll`` with
  ``countdown`` = the first poll delay.
* ``poll(order_no, attempt, due, late)`` — signed query; final answer or ``max_polls``
  answers: store the final state; otherwise enqueue the next ``poll`` with the backoff delay.

The final state goes to one Redis hash (``HSET owbench:final order_no record``). Settings
(``acks_late`` + ``reject_on_worker_lost``, a short ``visibility_timeout``) make a killed
worker's tasks come back rather than vanish: see bench/compare/README.md.

    python celery_peer.py enqueue N PREFIX [WAITING]   # fill the queue (not timed)
    python celery_peer.py collect                      # the stored final states, summarised
    python celery_peer.py flush                        # empty this benchmark's Redis db
"""

from __future__ import annotations

import functools
import json
import sys
import time
from typing import Any

import redis
import urllib3
from celery import Celery
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

FINAL_KEY = "owbench:final"

app = Celery("owbench", broker=cfg("redis_url"))
app.conf.update(
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=4,
    # Every green thread publishes its next poll and acks: room for all of them.
    broker_pool_limit=int(cfg("process_concurrency")) + 8,
    broker_transport_options={
        "visibility_timeout": cfg("visibility_timeout"),
        "max_connections": 2 * int(cfg("process_concurrency")) + 16,
    },
    broker_connection_retry_on_startup=True,
    worker_send_task_events=False,
    task_send_sent_event=False,
    worker_hijack_root_logger=False,
    task_serializer="json",
    accept_content=["json"],
)


@functools.cache
def http() -> urllib3.PoolManager:
    """One pool per worker process, as many connections as tasks in flight."""
    return urllib3.PoolManager(
        maxsize=int(cfg("process_concurrency")),
        block=True,
        timeout=urllib3.Timeout(total=30),
        retries=False,
    )


@functools.cache
def store() -> redis.Redis:
    return redis.Redis.from_url(cfg("redis_url"))


def post(path: str, body: bytes) -> tuple[int, bytes]:
    resp = http().request("POST", cfg("sim_url") + path, body=body, headers=HEADERS)
    return resp.status, resp.data


@app.task(name="place")
def place(order: dict[str, Any]) -> None:
    status, raw = post("/orders", place_body(order))
    outcome, vendor_status = interpret("place", status, raw)
    if outcome == "accepted":
        d = delay_after(0)
        poll.apply_async((order["order_no"], 1, time.time() + d, []), countdown=d)
    else:
        store().hset(FINAL_KEY, order["order_no"], final_record(outcome, vendor_status, []))


@app.task(name="poll")
def poll(order_no: str, attempt: int, due: float, late: list[float]) -> None:
    late = [*late, time.time() - due]
    status, raw = post("/orders/query", query_body(order_no))
    outcome, vendor_status = interpret("query", status, raw)
    if outcome == "final":
        store().hset(FINAL_KEY, order_no, final_record(vendor_status or "", vendor_status, late))
    elif attempt >= int(cfg("max_polls")):
        store().hset(FINAL_KEY, order_no, final_record("MAX_POLLS", vendor_status, late))
    else:
        d = delay_after(attempt)
        poll.apply_async((order_no, attempt + 1, time.time() + d, late), countdown=d)


def enqueue(n: int, prefix: str, waiting: int) -> None:
    """`waiting` orders whose next poll is a year away, then `n` orders to place now."""
    far = 365 * 86400 / float(cfg("speed"))
    with app.producer_or_acquire() as producer:
        for i, o in enumerate(order_fields(waiting, f"{prefix}w")):
            poll.apply_async(
                (o["order_no"], 1, time.time() + far, []), countdown=far, producer=producer
            )
            if i and i % 20_000 == 0:
                print(f"  celery: {i:,} waiting enqueued", file=sys.stderr, flush=True)
        for o in order_fields(n, prefix):
            place.apply_async((o,), producer=producer)


def collect() -> dict[str, Any]:
    return summarise(store().hvals(FINAL_KEY))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "enqueue":
        enqueue(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    elif cmd == "collect":
        json.dump(collect(), sys.stdout)
    elif cmd == "flush":
        store().flushdb()
    else:
        raise SystemExit(f"unknown command {cmd!r}")
