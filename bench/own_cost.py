"""orderwatch's own CPU per vendor call, with no HTTP client or server at all.

``bench/pipeline.py`` measures the worker against the simulator over loopback and takes
the ceiling's CPU per call away from the worker's: what is left is orderwatch's own cost,
but also whatever the HTTP client costs more beside a worker than alone, and the two runs
are minutes apart on a shared machine (±10 % between runs of the same code). This script
takes HTTP out instead. One worker (concurrency 64, batch 100, logging at info to a file,
garbage collector tuned, as in the pipeline) runs ``--orders`` orders on a fresh SQLite
file to their end (one place-order and ``--queries-per-order`` queries each, the last one
ending the order at ``max_polls``), with the reference adapter's HTTP exchange replaced by
the answer the simulator would send, already signed: the adapter still signs each request
and reads, verifies and interprets each answer. In the same process, the ceiling's work
beside HTTP (sign the same requests, parse and verify the same answers, as
``pipeline.py``'s ceiling does) is timed for the same number of calls. Printed: CPU per
call of the worker, of that ceiling work, and the difference, orderwatch's own::

    .venv/bin/python bench/own_cost.py                      # one run, 4,000 orders
    .venv/bin/python bench/own_cost.py --against ../old/src --pairs 6

``--against SRC`` measures another checkout's ``src`` beside this one: each pair runs both
at the same time (one per core), so that both see the same machine, and the ratios of the
pairs are printed: a change's effect on the worker's CPU per call, to a few per cent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pipeline as P  # noqa: E402  (after the path: the bench scripts are not a package)


def signed_answer(payload: dict[str, Any]) -> bytes:
    """An answer body as the simulator signs and writes it."""
    from orderwatch.vendors import signing

    payload = {**payload, "sign": signing.sign(payload, P.SECRET)}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def answers_for(order_no: str) -> tuple[bytes, bytes]:
    """The place answer (accepted) and the query answer (shipped, with logistics)."""
    data = {"order_no": order_no, "vendor_order_id": f"V{order_no}"}
    place = signed_answer({"code": "0000", "message": "ok", "data": {**data, "status": "ACCEPTED"}})
    query = signed_answer(
        {
            "code": "0000",
            "message": "ok",
            "data": {
                **data,
                "status": "SHIPPED",
                "description": "运输中",
                "logistics": {
                    "carrier": "SF",
                    "tracking_no": f"SF{order_no}",
                    "events": [{"at": "2026-12-03T10:00:00Z", "text": "已揽收"}],
                },
            },
        }
    )
    return place, query


def ceiling_work(
    orders: int, queries: int, calls: int, bodies: dict[str, tuple[bytes, bytes]]
) -> float:
    """CPU seconds of the ceiling's work beside HTTP for ``calls`` calls, as
    ``pipeline.role_ceiling`` does it: sign each request, parse and verify each answer."""
    from orderwatch.vendors import signing

    place_bodies = [b[0] for b in bodies.values()]
    query_bodies = [b[1] for b in bodies.values()]

    def sign_request(fields: dict[str, Any]) -> bytes:
        fields["timestamp"] = int(time.time())
        fields["nonce"] = os.urandom(12).hex()
        fields["sign"] = signing.sign(fields, P.SECRET)
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()

    def read_answer(raw: bytes) -> None:
        answer = json.loads(raw)
        if not (answer.get("code") == "0000" and signing.verify(answer, P.SECRET)):
            raise AssertionError("an answer the ceiling would count as an error")

    data = list(P.order_data(orders, "OWN"))
    ceiling0 = P.cpu_seconds()
    for i in range(calls):  # each order: its place-order, then its queries
        n = (i // (queries + 1)) % orders
        d = data[n]
        if i % (queries + 1) == 0:
            sign_request(
                {
                    "merchant_id": P.MERCHANT,
                    "order_no": d.order_no,
                    "sku": d.sku,
                    "quantity": d.quantity,
                    "recipient": {"name": d.name, "phone": d.phone, "address": d.address},
                    "points": d.points,
                }
            )
            read_answer(place_bodies[n])
        else:
            sign_request({"merchant_id": P.MERCHANT, "order_no": d.order_no})
            read_answer(query_bodies[n])
    return P.cpu_seconds() - ceiling0


async def measure(orders: int, queries: int) -> dict[str, Any]:
    from orderwatch.clock import CompressedClock
    from orderwatch.outcomes import Exchange
    from orderwatch.process import tune_gc
    from orderwatch.service import Service
    from orderwatch.settings import VendorSettings
    from orderwatch.vendors import VendorRegistry
    from orderwatch.vendors.reference import ReferenceAdapter, interpret

    bodies = {d.order_no: answers_for(d.order_no) for d in P.order_data(orders, "OWN")}

    class AnsweringAdapter(ReferenceAdapter):
        """The reference adapter, answered in-process: signing, reading, verifying and
        interpreting as usual; no HTTP."""

        checks_answers = True  # interpret() checks them, as the reference adapter's do

        async def _exchange(
            self, kind: str, url: str, body: bytes, headers: Any, order_no: str
        ) -> Exchange:
            started = time.perf_counter()
            await asyncio.sleep(0)  # an answer comes back in a later loop step
            raw = bodies[order_no][0 if kind == "place" else 1]
            # as ReferenceAdapter._exchange reads an answer, spelt out here so that
            # --against works with older checkouts too
            outcome, code = interpret(
                kind,
                http_status=200,
                body=raw,
                retry_after=None,
                status_map=self._status_map,
                signer=self._signer,
                sign_location=self.settings.sign_location,
                header_signature=None,
                order_no=order_no,
            )
            return Exchange(outcome, time.perf_counter() - started, 200, code)

    class AnsweringVendors(VendorRegistry):
        """The worker's registry, handing out answering adapters."""

        def __init__(self, settings: Any, clock: Any) -> None:
            super().__init__(settings, clock=clock)
            self._answering: dict[str, AnsweringAdapter] = {}

        def get(self, vendor: str) -> AnsweringAdapter | None:
            cfg: VendorSettings | None = self._settings.current.vendors.get(vendor)
            if cfg is None:
                return None
            if vendor not in self._answering:
                self._answering[vendor] = AnsweringAdapter(vendor, cfg, clock=self._clock)
            return self._answering[vendor]

    with tempfile.TemporaryDirectory() as d:
        a = {
            "speed": 2000.0,
            "clock_start": time.time(),
            "concurrency": 64,
            "polling": {**P.POLLING, "max_polls": queries},
            "sim_url": "http://127.0.0.1:9",  # never called
            "orders": orders,
            "prefix": "OWN",
            "db_url": f"sqlite:///{d}/own.db",
        }
        await P.role_setup(a)
        clock = CompressedClock(speed=a["speed"], start=a["clock_start"])
        service = await Service.open(P.bench_settings(a, a["db_url"]), clock=clock)
        try:
            vendors = AnsweringVendors(service.settings, clock)
            worker = service.worker(rng=random.Random(1), worker_id="own", vendors=vendors)
            tune_gc()
            all_final = asyncio.Event()

            def count(_: Any) -> None:
                if worker.stats.finished >= orders:
                    all_final.set()

            worker.on_transition = count
            sys0, cpu0 = P.sys_seconds(), P.cpu_seconds()
            run = asyncio.create_task(worker.run())
            await all_final.wait()
            cpu, sys_cpu = P.cpu_seconds() - cpu0, P.sys_seconds() - sys0
            worker.stop()
            await run
            stats = worker.stats
        finally:
            await service.close()
    calls = stats.places + stats.queries

    ceiling = ceiling_work(orders, queries, calls, bodies)
    return {
        "calls": calls,
        "finished": stats.finished,
        "worker_cpu_per_call_us": cpu / calls * 1e6,
        "worker_sys_per_call_us": sys_cpu / calls * 1e6,
        "ceiling_work_per_call_us": ceiling / calls * 1e6,
        "own_cpu_per_call_us": (cpu - ceiling) / calls * 1e6,
    }


def child(src: str | None, orders: int, queries: int) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(Path(src).resolve())
    cmd = [sys.executable, __file__, "--role", json.dumps({"orders": orders, "queries": queries})]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def result_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"a measuring process failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def line(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name}: worker {r['worker_cpu_per_call_us']:.1f} µs/call"
        f" (system {r['worker_sys_per_call_us']:.1f}), ceiling's work beside HTTP"
        f" {r['ceiling_work_per_call_us']:.1f}, own {r['own_cpu_per_call_us']:.1f}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--orders", type=int, default=4000)
    p.add_argument("--queries-per-order", type=int, default=5)
    p.add_argument("--against", metavar="SRC", help="another checkout's src directory")
    p.add_argument("--pairs", type=int, default=4, help="with --against (default: 4)")
    p.add_argument("--role", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.role:
        import orderwatch.log

        a = json.loads(opts.role)
        with tempfile.TemporaryDirectory() as d, open(Path(d) / "worker.log", "w") as log:
            orderwatch.log.configure("info", "logfmt", stream=log)  # as `orderwatch worker`
            print(json.dumps(asyncio.run(measure(a["orders"], a["queries"]))))
        return
    this = str(HERE.parent / "src")
    if not opts.against:
        print(line("this tree", result_of(child(this, opts.orders, opts.queries_per_order))))
        return
    ratios = []
    for i in range(opts.pairs):
        procs = [child(src, opts.orders, opts.queries_per_order) for src in (this, opts.against)]
        mine, theirs = (result_of(proc) for proc in procs)
        ratio = mine["worker_cpu_per_call_us"] / theirs["worker_cpu_per_call_us"]
        ratios.append(ratio)
        print(f"pair {i + 1}: this/against worker CPU per call {ratio:.3f}")
        print("  " + line("this tree", mine))
        print("  " + line("against  ", theirs))
    print(
        f"median of {len(ratios)} pairs: this/against = {statistics.median(ratios):.3f}"
        f" (lower is cheaper; {sum(r < 1 for r in ratios)} of {len(ratios)} pairs below 1)"
    )


if __name__ == "__main__":
    main()
