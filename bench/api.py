"""How fast the HTTP API takes orders and answers "where is my order", against a floor.

Two servers run one after the other under uvicorn, each in its own process on its own
fresh SQLite file (WAL, synchronous=FULL, the shipped defaults):

* ``orderwatch`` — the real app: bearer auth, strict body validation, problem+json,
  metrics, the access log at ``info``, the full order view with its timeline;
* ``bare`` — a bare Starlette app that does the same database work through the same
  store (``insert_orders`` for a create; ``get_order`` + ``get_events`` + ``list_outbox``
  for a read) and answers a three-field JSON.

A load generator in a third process (aiohttp, N connections, each sending its next request
as soon as the last is answered) creates unique orders for a fixed time, then reads random
ones of them. Reported: requests per second, p50/p99 latency, and orderwatch's rate as a
share of the bare endpoint's. The floor (issue 4): creates ≥ 40 %, reads ≥ 50 %.

    .venv/bin/python bench/api.py                 # ~1 minute
    .venv/bin/python bench/api.py --seconds 15 --connections 64 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FLOOR = {"create": 0.40, "read": 0.50}
TOKEN = "bench-token-0123456789abcdef"
RECIPIENT = {"name": "张三", "phone": "13800000000", "address": "上海市浦东新区世纪大道100号"}


def order(order_no: str) -> dict[str, Any]:
    return {
        "order_no": order_no,
        "vendor": "acme",
        "sku": "SKU-1001",
        "quantity": 1,
        "points": 12000,
        "customer_id": "C0001",
        "payment_status": "PAID",
        "recipient": RECIPIENT,
    }


# ----------------------------------------------------------------------------- servers


async def serve_orderwatch(db: Path, port: int) -> None:
    import uvicorn

    from orderwatch.api import create_app
    from orderwatch.log import configure
    from orderwatch.service import Service
    from orderwatch.settings import load_settings

    configure("info")  # what an operator runs: one access-log line per request
    loaded = load_settings(
        None,
        env={},
        overrides={
            "database": {"url": f"sqlite:///{db}"},
            "vendors": {
                "acme": {"base_url": "http://127.0.0.1:9", "merchant_id": "M1", "secret": "s"}
            },
            "api": {"tokens": [{"name": "bench", "token": TOKEN, "role": "platform"}]},
        },
    )
    service = await Service.open(loaded)
    try:
        config = uvicorn.Config(
            create_app(service),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        await uvicorn.Server(config).serve()
    finally:
        await service.close()


async def serve_bare(db: Path, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from orderwatch.order import NewOrder, Recipient
    from orderwatch.store.sql import SqlStore

    store = SqlStore(f"sqlite:///{db}")
    await store.ensure_schema(auto_upgrade=True)

    async def create(request: Request) -> JSONResponse:
        data = json.loads(await request.body())
        new = NewOrder(
            order_no=data["order_no"],
            vendor=data["vendor"],
            sku=data["sku"],
            quantity=data["quantity"],
            points=data["points"],
            recipient=Recipient(**data["recipient"]),
            payment_status=data["payment_status"],
            customer_id=data["customer_id"],
        )
        result = await store.insert_orders([new], now=datetime.now(UTC), actor="bare")
        o = (result.created or result.existing)[0]
        return JSONResponse({"order_no": o.order_no, "status": o.status.value, "id": o.id}, 201)

    async def read(request: Request) -> JSONResponse:
        o = await store.get_order(request.path_params["order_no"])
        if o is None:
            return JSONResponse({"error": "not found"}, 404)
        events = await store.get_events(o.id)
        notes = await store.list_outbox(o.id)
        return JSONResponse({"order_no": o.order_no, "events": len(events), "notes": len(notes)})

    app = Starlette(
        routes=[
            Route("/api/v1/orders", create, methods=["POST"]),
            Route("/api/v1/orders/{order_no}", read, methods=["GET"]),
        ]
    )
    try:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"
        )
        await uvicorn.Server(config).serve()
    finally:
        await store.close()


# ----------------------------------------------------------------------------- load


async def load(
    url: str, kind: str, *, seconds: float, connections: int, prefix: str, known: list[str]
) -> None:
    """Run in its own process: drive the server, print one JSON line of results."""
    import aiohttp

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    counter = 0
    created: list[str] = list(known)

    async def one(session: aiohttp.ClientSession, record: bool) -> None:
        nonlocal counter, errors
        if kind == "create":
            counter += 1
            no = f"{prefix}{counter:08d}"
            body = json.dumps(order(no), ensure_ascii=False).encode()
            began = time.perf_counter()
            async with session.post(f"{url}/api/v1/orders", data=body, headers=headers) as r:
                await r.read()
                ok = r.status == 201
            if ok:
                created.append(no)
        else:
            no = random.choice(created)
            began = time.perf_counter()
            async with session.get(f"{url}/api/v1/orders/{no}", headers=headers) as r:
                await r.read()
                ok = r.status == 200
        if not record:
            return
        if ok:
            latencies.append(time.perf_counter() - began)
        else:
            errors += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        # warm-up: connections open, caches and the SQLite page cache warm
        warm_until = time.perf_counter() + min(1.0, seconds / 5)
        while time.perf_counter() < warm_until:
            await asyncio.gather(*(one(session, False) for _ in range(connections)))
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one(session, True)

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    result = {
        "requests": len(latencies),
        "errors": errors,
        "rate": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
    }
    if kind == "create":
        result["created"] = created
    sys.stdout.write(json.dumps(result) + "\n")


# ----------------------------------------------------------------------------- orchestration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("server did not start")


def run_target(target: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    db = workdir / f"{target}.db"
    me = [sys.executable, __file__]
    server = subprocess.Popen(
        [*me, "--serve", target, "--db", str(db), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, server)
        url = f"http://127.0.0.1:{port}"
        out: dict[str, Any] = {}
        common = ["--url", url, "--seconds", str(args.seconds)]
        common += ["--connections", str(args.connections)]
        create = subprocess.run(
            [*me, "--load", "create", *common, "--prefix", f"B{target[:2].upper()}"],
            capture_output=True,
            check=True,
        )
        result = json.loads(create.stdout)
        created = result.pop("created")
        out["create"] = result
        ids = workdir / f"{target}-ids.json"
        ids.write_text(json.dumps(created))
        read = subprocess.run(
            [*me, "--load", "read", *common, "--prefix", str(ids)],
            capture_output=True,
            check=True,
        )
        out["read"] = json.loads(read.stdout)
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase")
    p.add_argument("--connections", type=int, default=32, help="concurrent connections")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--serve", choices=["orderwatch", "bare"], help=argparse.SUPPRESS)
    p.add_argument("--load", choices=["create", "read"], help=argparse.SUPPRESS)
    p.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--prefix", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.serve:
        serve = serve_orderwatch if args.serve == "orderwatch" else serve_bare
        asyncio.run(serve(args.db, args.port))
        return 0
    if args.load:
        known = json.loads(Path(args.prefix).read_text()) if args.load == "read" else []
        asyncio.run(
            load(
                args.url,
                args.load,
                seconds=args.seconds,
                connections=args.connections,
                prefix=args.prefix,
                known=known,
            )
        )
        return 0

    with tempfile.TemporaryDirectory(prefix="ow-bench-") as tmp:
        results = {t: run_target(t, Path(tmp), args) for t in ("bare", "orderwatch")}
    ratios = {
        kind: round(results["orderwatch"][kind]["rate"] / results["bare"][kind]["rate"], 3)
        for kind in ("create", "read")
    }
    passed = all(ratios[k] >= FLOOR[k] for k in FLOOR)
    summary = {
        "seconds": args.seconds,
        "connections": args.connections,
        "cpus": os.cpu_count(),
        "results": results,
        "ratio": ratios,
        "floor": FLOOR,
        "passed": passed,
    }
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        sys.stdout.write(
            f"{args.connections} connections, {args.seconds:g} s per phase, "
            f"SQLite WAL synchronous=FULL, uvicorn (asyncio, h11), {os.cpu_count()} CPUs\n\n"
            f"{'':12}{'creates/s':>11}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'reads/s':>11}{'p50 ms':>9}{'p99 ms':>9}\n"
        )
        for target, r in results.items():
            c, g = r["create"], r["read"]
            sys.stdout.write(
                f"{target:12}{c['rate']:>11.1f}{c['p50_ms']:>9.2f}{c['p99_ms']:>9.2f}"
                f"{g['rate']:>11.1f}{g['p50_ms']:>9.2f}{g['p99_ms']:>9.2f}\n"
            )
            if c["errors"] or g["errors"]:
                sys.stdout.write(f"  {target}: {c['errors']} + {g['errors']} errors\n")
        sys.stdout.write(
            f"\norderwatch / bare: creates {ratios['create']:.0%} (floor {FLOOR['create']:.0%}),"
            f" reads {ratios['read']:.0%} (floor {FLOOR['read']:.0%}) -> "
            f"{'PASS' if passed else 'FAIL'}\n"
        )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
