"""End-to-end pipeline benchmark: one orderwatch worker on SQLite against the simulator.

What it measures (see bench/README.md for how to read the figures):

* **orderwatch** — N orders are submitted through ``Service.submit`` (timed separately, in a
  process of its own), then one ``Worker`` (concurrency 64, batch 100, vendor concurrency 64)
  runs in a fresh process, on a compressed clock shared with the simulator, until every
  order is final. Reported: vendor calls per second end to end, CPU seconds of the worker
  process, CPU per call, poll lateness p50/p99, peak RSS.
* **ceiling** — a bare asyncio loop in its own process, with the same aiohttp client set-up
  as the reference adapter (one ``ClientSession``, ``TCPConnector(limit=64)``, 64 tasks),
  sends the same number of place-order and query requests (same bodies, same signing,
  response signature checked) to the same simulator with no database and no waiting.
* **own CPU per vendor call** = worker CPU per call − ceiling CPU per call, i.e. what
  orderwatch adds on top of the HTTP client doing the same exchanges.
* **memory** — a worker process runs 500 due orders while 10,000 and then 100,000 orders
  wait far in the future; peak RSS of both runs, and their ratio.

The simulator runs as ``orderwatch simulator`` in its own process. The machine is shared and
noisy: compare the ratios of one run, not absolute figures across runs.

    .venv/bin/python bench/pipeline.py --quick      # 2,000 orders, a smoke run
    .venv/bin/python bench/pipeline.py              # 20,000 orders
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECRET = "bench-secret"
MERCHANT = "M0001"
VENDOR = "bench"
DAY = 86400.0

# Floors from the requirement.
FLOOR_OWN_CPU_US = 250.0
FLOOR_RATE_RATIO = 0.40
FLAT_RSS_RATIO = 1.10  # "no growth": RSS(100k waiting) / RSS(10k waiting) within 10 %

# Two ways an order ends (``--ending``):
#
# * ``max-polls`` (default): the vendor never delivers within the run (delivery a year out,
#   shipped at once), and ``polling.max_polls = k`` ends every order right after its k-th
#   answer (FAILED/MAX_POLLS_EXCEEDED, with its notification). Every order costs exactly one
#   place-order and k queries whatever the backlog, and every query answer is the same
#   SHIPPED-with-logistics body the ceiling gets: both sides do the same work.
# * ``delivered``: delivered 1-2 h (schedule) after acceptance, polled at 10 min, then 5, 10,
#   20, 40 min: about 5 queries per order when polls run on time, fewer when a saturated
#   worker runs late (a late poll finds the order already delivered).
#
# Both: no noise (all rates 0), no latency. Polling at 10 min, then 5, 10, 20, 40 min.
YEAR = 365 * DAY
ENDINGS: dict[str, dict[str, Any]] = {
    "max-polls": {
        "sim": {"delivery_min": YEAR, "delivery_max": YEAR, "ship_fraction": 0.0},
        "polling": {},  # max_polls set from --queries-per-order
    },
    "delivered": {
        "sim": {"delivery_min": 3600.0, "delivery_max": 7200.0, "ship_fraction": 0.0},
        "polling": {"max_polls": 30},
    },
}
SIM_COMMON = {"latency": 0.0, "latency_jitter": 0.0, "hang": 1.0}
POLLING = {
    "initial_delay": "10m",
    "initial_interval": "5m",
    "factor": 2.0,
    "max_interval": "6h",
    "deadline": "365d",  # the compressed run covers days of schedule; never the cause
}

NAMES = ["张三", "李四", "王五", "赵六", "陈静", "刘洋", "Wang Fang", "周杰"]
CITIES = [
    "上海市浦东新区世纪大道",
    "北京市朝阳区建国路",
    "广州市天河区体育西路",
    "深圳市南山区科技园",
    "杭州市西湖区文三路",
]


# --------------------------------------------------------------------------- shared helpers


@dataclass(frozen=True)
class OrderData:
    order_no: str
    sku: str
    quantity: int
    points: int
    name: str
    phone: str
    address: str
    customer_id: str


def order_data(n: int, prefix: str, start: int = 0) -> Iterator[OrderData]:
    """The same synthetic orders for orderwatch and the ceiling (different order_nos)."""
    rng = random.Random(f"{prefix}:{start}")
    for i in range(start, start + n):
        yield OrderData(
            order_no=f"{prefix}{i:08d}",
            sku=f"SKU-{1000 + rng.randrange(40)}",
            quantity=1,
            points=rng.choice([3000, 8000, 12000, 25000, 60000]),
            name=rng.choice(NAMES),
            phone=f"13{rng.randrange(10**9):09d}",
            address=f"{rng.choice(CITIES)}{rng.randrange(1, 999)}号",
            customer_id=f"C{rng.randrange(10**6):06d}",
        )


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def sys_seconds() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def count_transactions(store: Any) -> tuple[dict[str, int], dict[str, float]]:
    """Count the store's transactions (one per database round trip) by mode, if it can,
    and the CPU seconds spent inside them, by the store call that ran them (on whichever
    thread ran them): what the database part of the worker's own CPU is."""
    counts: dict[str, int] = {}
    cpu: dict[str, float] = {}
    tx = getattr(store, "_tx", None)
    if tx is None:
        return counts, cpu

    def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        mode = str(args[0]) if args else "?"
        counts[mode] = counts.get(mode, 0) + 1
        started = time.thread_time()
        try:
            return tx(fn, *args, **kwargs)
        finally:
            # fn is a closure of the store call: "SqlStore.apply.<locals>.work" -> "apply"
            call = getattr(fn, "__qualname__", "").split(".<locals>")[0].rpartition(".")[2]
            cpu[call] = cpu.get(call, 0.0) + time.thread_time() - started

    store._tx = counted
    return counts, cpu


class GcTimer:
    """CPU seconds the cyclic garbage collector takes, and its collections by generation
    (``gc.callbacks``): the part of a process's CPU that depends on how many objects it
    keeps alive, not on the code it runs."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._started
            self.collections[info["generation"]] += 1

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def current_rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of another process (the simulator), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by name (same names summed)."""
    import threading

    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
        except (OSError, TypeError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = "event loop" if t is threading.main_thread() else t.name.rsplit("_", 1)[0]
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def src_digest() -> str:
    """A digest of the orderwatch package that runs (the one on PYTHONPATH when comparing
    two worktrees), to tell which state of the code a result belongs to."""
    import hashlib

    import orderwatch

    package = Path(orderwatch.__file__).parent
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package.parent)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def proc_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def bench_settings(a: dict[str, Any], db_url: str) -> Any:
    from orderwatch.settings import load_settings

    concurrency = a["concurrency"]

    return load_settings(
        None,
        env={},
        overrides={
            "database": {"url": db_url},
            "polling": a["polling"],
            "worker": {"concurrency": concurrency, "batch_size": 100, "lease": "60s"},
            "vendors": {
                VENDOR: {
                    "base_url": a["sim_url"],
                    "merchant_id": MERCHANT,
                    "secret": SECRET,
                    "timeout": "30s",
                    "concurrency": concurrency,
                }
            },
            "log": {"level": "info"},
        },
    )


# --------------------------------------------------------------------------- child roles
#
# Every measured part runs in a fresh interpreter (``--role``), so its CPU time and peak
# RSS are its own. A role reads its arguments as JSON and writes its result as JSON.


async def role_setup(a: dict[str, Any]) -> dict[str, Any]:
    """Create the database and submit orders; optionally push most of them 30 days out."""
    from orderwatch.clock import CompressedClock
    from orderwatch.order import NewOrder, Recipient
    from orderwatch.service import Service
    from orderwatch.store.schema import orders

    clock = CompressedClock(speed=a["speed"], start=a["clock_start"])
    service = await Service.open(bench_settings(a, a["db_url"]), clock=clock)
    submit_s = 0.0
    try:
        chunk: list[NewOrder] = []
        for d in order_data(a["orders"], a["prefix"]):
            chunk.append(
                NewOrder(
                    order_no=d.order_no,
                    vendor=VENDOR,
                    sku=d.sku,
                    quantity=d.quantity,
                    points=d.points,
                    recipient=Recipient(d.name, d.phone, d.address),
                    payment_status="PAID",
                    customer_id=d.customer_id,
                )
            )
            if len(chunk) == 2000:
                t = time.perf_counter()
                await service.submit(chunk, actor="bench")
                submit_s += time.perf_counter() - t
                chunk = []
        if chunk:
            t = time.perf_counter()
            await service.submit(chunk, actor="bench")
            submit_s += time.perf_counter() - t
        spread = a.get("spread_s")
        if spread:
            # Order i falls due at start + i/n × spread (schedule seconds): a steady stream.
            import sqlalchemy as sa

            start, n = clock.now(), a["orders"]
            rows = [
                {"b_id": i + 1, "t": start + timedelta(seconds=spread * i / n)} for i in range(n)
            ]
            stmt = (
                orders.update()
                .where(orders.c.id == sa.bindparam("b_id"))
                .values(next_run_at=sa.bindparam("t"))
            )
            await service.store.execute(lambda conn: conn.execute(stmt, rows))
        due = a.get("due")
        if due is not None:
            # Everything after the first `due` orders waits a year (schedule time).
            later = clock.now() + timedelta(days=365)
            await service.store.execute(
                lambda conn: conn.execute(
                    orders.update().where(orders.c.id > due).values(next_run_at=later)
                )
            )
    finally:
        await service.close()
    return {
        "orders": a["orders"],
        "submit_s": submit_s,
        "submit_per_s": a["orders"] / submit_s if submit_s else 0.0,
    }


class Profile:
    """cProfile or pyinstrument around the worker run (``--profile``)."""

    def __init__(self, kind: str | None, out: str | None) -> None:
        self.kind, self.out = kind, out
        self.p: Any = None
        if kind == "cprofile":
            import cProfile

            self.p = cProfile.Profile()
        elif kind == "pyinstrument":
            from pyinstrument import Profiler

            self.p = Profiler(interval=0.0005, async_mode="disabled")

    def start(self) -> None:
        if self.kind == "cprofile":
            self.p.enable()
        elif self.kind == "pyinstrument":
            self.p.start()

    def stop(self) -> None:
        if self.kind == "cprofile":
            self.p.disable()
        elif self.kind == "pyinstrument":
            self.p.stop()

    def save(self) -> None:
        if self.kind == "cprofile":
            self.p.dump_stats(f"{self.out}.prof")
        elif self.kind == "pyinstrument":
            text = self.p.output_text(unicode=True, color=False, show_all=False)
            Path(f"{self.out}.txt").write_text(text)
            Path(f"{self.out}.html").write_text(self.p.output_html())


class Watch:
    """Samples the worker every 10 ms; notes wall and CPU time when `target` are final."""

    def __init__(self, worker: Any, target: int) -> None:
        self.worker, self.target = worker, target
        self.samples = self.idle = self.inflight = 0
        self.done = asyncio.Event()
        self.end_wall = self.end_cpu = 0.0
        self.timeline: list[dict[str, float]] = []  # one entry per second of the run

    async def run(self) -> None:
        t0 = time.perf_counter()
        cpu0 = cpu_seconds()
        second = {"places": 0, "queries": 0, "samples": 0, "idle": 0, "inflight": 0}
        while True:
            await asyncio.sleep(0.01)
            n = self.worker.in_flight
            self.samples += 1
            self.inflight += n
            self.idle += n == 0
            second["samples"] += 1
            second["idle"] += n == 0
            second["inflight"] += n
            now = time.perf_counter()
            if now - t0 >= len(self.timeline) + 1:
                s = self.worker.stats
                cpu = cpu_seconds()
                self.timeline.append(
                    {
                        "t": round(now - t0, 2),
                        "places": s.places - second["places"],
                        "queries": s.queries - second["queries"],
                        "cpu_util": round(cpu - cpu0, 3),
                        "idle": round(second["idle"] / max(1, second["samples"]), 3),
                        "inflight": round(second["inflight"] / max(1, second["samples"]), 1),
                    }
                )
                cpu0 = cpu
                second = {
                    "places": s.places,
                    "queries": s.queries,
                    "samples": 0,
                    "idle": 0,
                    "inflight": 0,
                }
            if self.worker.stats.finished >= self.target:
                self.end_wall, self.end_cpu = time.perf_counter(), cpu_seconds()
                self.done.set()
                return


def watch_poll_lateness(worker: Any, clock: Any) -> Any:
    """Record each query's lateness where the worker records its own (inside the slots, just
    before the call), for queries only: a PENDING order's "lateness" is merely its wait
    since submission, i.e. the length of the intake backlog."""
    from orderwatch.worker import Samples

    adapter = worker.vendors.get(VENDOR)
    assert adapter is not None
    late = Samples(size=20_000)  # a reservoir: percentiles without growing the RSS measured
    real_query = adapter.query

    async def query(order: Any) -> Any:
        if order.next_run_at is not None:
            late.add((clock.now() - order.next_run_at).total_seconds())
        return await real_query(order)

    adapter.query = query
    return late


async def role_worker(a: dict[str, Any]) -> dict[str, Any]:
    """Run one Worker until `target` orders are final; measure calls, CPU, RSS, lateness."""
    from orderwatch.clock import CompressedClock
    from orderwatch.process import tune_gc
    from orderwatch.service import Service

    clock = CompressedClock(speed=a["speed"], start=a["clock_start"])
    service = await Service.open(bench_settings(a, a["db_url"]), clock=clock)
    try:
        worker = service.worker(rng=random.Random(1), worker_id="bench-worker")
        if a.get("gc", "tuned") == "tuned":
            tune_gc()  # as `orderwatch worker` does after start-up
        poll_late = watch_poll_lateness(worker, clock)
        transactions, tx_cpu = count_transactions(service.store)
        watch = Watch(worker, a["target"])
        profile = Profile(a.get("profile"), a.get("profile_out"))
        rss_before = current_rss_mb()
        threads0 = thread_cpu_seconds()
        sys0 = sys_seconds()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        gc_timer = GcTimer()
        gc_timer.start()
        profile.start()
        run = asyncio.create_task(worker.run())
        mon = asyncio.create_task(watch.run())
        try:
            async with asyncio.timeout(a["timeout"]):
                await watch.done.wait()
        except TimeoutError:
            watch.end_wall, watch.end_cpu = time.perf_counter(), cpu_seconds()
        finally:
            threads1 = thread_cpu_seconds()
            sys1 = sys_seconds()
            gc_timer.stop()
            db_cpu = dict(tx_cpu)
            mon.cancel()
            worker.stop()
            await run
            profile.stop()
            # A worker closes its vendor sessions only if it owns its registry; make sure
            # they are closed either way (closing twice is harmless).
            await worker.vendors.close()
        await asyncio.to_thread(profile.save)
        wall, cpu = watch.end_wall - t0, watch.end_cpu - cpu0
        s = worker.stats
        off_loop = getattr(service.store, "durable_commits_off_loop", 0)  # SQL stores only
        counts = await service.store.counts(now=clock.now())
    finally:
        await service.close()
    calls = s.places + s.queries
    ms = 1000.0 / a["speed"]  # schedule seconds → real milliseconds
    return {
        "timed_out": s.finished < a["target"],
        "target": a["target"],
        "finished": s.finished,
        "by_status": dict(counts.by_status),
        "by_reason": dict(counts.by_reason),
        "places": s.places,
        "queries": s.queries,
        "calls": calls,
        "wall_s": wall,
        "calls_per_s": calls / wall if wall else 0.0,
        "cpu_s": cpu,
        "cpu_util": cpu / wall if wall else 0.0,
        "cpu_per_call_us": cpu / calls * 1e6 if calls else 0.0,
        "sys_cpu_per_call_us": (sys1 - sys0) / calls * 1e6 if calls else 0.0,
        "gc_cpu_per_call_us": gc_timer.seconds / calls * 1e6 if calls else 0.0,
        "gc_collections": gc_timer.collections,
        "transactions": transactions,
        "db_cpu_per_call_us": {k: v / calls * 1e6 for k, v in db_cpu.items()} if calls else {},
        "calls_per_transaction": calls / max(1, sum(transactions.values())),
        # per thread, from start to stop (a little past the end of the measured run)
        "thread_cpu_per_call_us": {
            name: (threads1[name] - threads0.get(name, 0.0)) / calls * 1e6
            for name in threads1
            if calls
        },
        "claims": s.claims,
        "flushes": s.flushes,
        "sent_commits": s.sent_commits,
        "discarded": s.discarded,
        "durable_off_loop": off_loop,
        "mean_inflight": watch.inflight / max(1, watch.samples),
        "idle_fraction": watch.idle / max(1, watch.samples),
        "timeline": watch.timeline,
        "poll_lateness_p50_ms": percentile(poll_late.values, 50) * ms,
        "poll_lateness_p99_ms": percentile(poll_late.values, 99) * ms,
        "poll_lateness_max_ms": max(poll_late.values, default=0.0) * ms,
        "all_lateness_p50_ms": s.lateness.percentile(50) * ms,
        "all_lateness_p99_ms": s.lateness.percentile(99) * ms,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


async def role_ceiling(a: dict[str, Any]) -> dict[str, Any]:
    """A bare asyncio loop: same client set-up, same requests, no database, no schedule."""
    import aiohttp

    from orderwatch.vendors import signing

    n, queries, conc = a["orders"], a["queries"], a["concurrency"]
    base = a["sim_url"]
    place_url, query_url = f"{base}/orders", f"{base}/orders/query"
    headers = {"Content-Type": "application/json; charset=utf-8"}
    per_order = [queries // n + (1 if i < queries % n else 0) for i in range(n)]
    data = list(order_data(n, a["prefix"]))
    errors: dict[str, int] = {}
    calls = 0

    def signed(fields: dict[str, Any]) -> bytes:  # as ReferenceAdapter._signed
        fields["timestamp"] = int(time.time())
        fields["nonce"] = os.urandom(12).hex()
        fields["sign"] = signing.sign(fields, SECRET)
        return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()

    connector = aiohttp.TCPConnector(limit=conc, ttl_dns_cache=300, enable_cleanup_closed=True)
    session = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30), auto_decompress=True
    )

    async def call(url: str, body: bytes) -> None:
        nonlocal calls
        calls += 1
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
            raw = await resp.read()
            status = resp.status
        # The least a correct client does with an answer: parse it and check its signature.
        answer = json.loads(raw) if status == 200 else {}
        if not (answer.get("code") == "0000" and signing.verify(answer, SECRET)):
            key = f"{status}:{answer.get('code')}"
            errors[key] = errors.get(key, 0) + 1

    next_i = 0

    async def runner() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            d = data[i]
            await call(
                place_url,
                signed(
                    {
                        "merchant_id": MERCHANT,
                        "order_no": d.order_no,
                        "sku": d.sku,
                        "quantity": d.quantity,
                        "recipient": {"name": d.name, "phone": d.phone, "address": d.address},
                        "points": d.points,
                    }
                ),
            )
            for _ in range(per_order[i]):
                await call(query_url, signed({"merchant_id": MERCHANT, "order_no": d.order_no}))

    rss_before = current_rss_mb()
    sys0 = sys_seconds()
    gc_timer = GcTimer()
    gc_timer.start()
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    try:
        await asyncio.gather(*(runner() for _ in range(conc)))
    finally:
        wall = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        sys_cpu = sys_seconds() - sys0
        gc_timer.stop()
        await session.close()
    return {
        "places": n,
        "queries": queries,
        "calls": calls,
        "errors": errors,
        "wall_s": wall,
        "calls_per_s": calls / wall if wall else 0.0,
        "cpu_s": cpu,
        "cpu_util": cpu / wall if wall else 0.0,
        "cpu_per_call_us": cpu / calls * 1e6 if calls else 0.0,
        "sys_cpu_per_call_us": sys_cpu / calls * 1e6 if calls else 0.0,
        "gc_cpu_per_call_us": gc_timer.seconds / calls * 1e6 if calls else 0.0,
        "gc_collections": gc_timer.collections,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


ROLES = {"setup": role_setup, "worker": role_worker, "ceiling": role_ceiling}


def run_role(role: str, args_json: str, out: str) -> None:
    args = json.loads(args_json)
    log_path = Path(args["log_path"]) if "log_path" in args else None
    with contextlib.ExitStack() as stack:
        if log_path is not None:
            import orderwatch.log

            # As `orderwatch worker` logs by default: info, logfmt (here to a file).
            stream = stack.enter_context(log_path.open("w", encoding="utf-8"))
            orderwatch.log.configure("info", "logfmt", stream=stream)
        if os.environ.get("OW_BENCH_LOOP") == "uvloop":  # experiment: both sides alike
            import uvloop

            result = uvloop.run(ROLES[role](args))
        else:
            result = asyncio.run(ROLES[role](args))
    if log_path is not None:
        with log_path.open(encoding="utf-8") as f:
            result["log_lines"] = sum(1 for _ in f)
    Path(out).write_text(json.dumps(result))


# --------------------------------------------------------------------------- the parent


class Simulator:
    """``orderwatch simulator`` in its own process."""

    def __init__(self, *, speed: float, clock_start: float, settings: dict[str, Any]) -> None:
        exe = Path(sys.executable).with_name("orderwatch")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "orderwatch.cli"]
        cmd += [
            "simulator",
            "--port",
            "0",
            "--seed",
            "1",
            "--merchant-id",
            MERCHANT,
            "--secret",
            SECRET,
            "--speed",
            repr(speed),
            "--clock-start",
            repr(clock_start),
        ]
        for k, v in settings.items():
            cmd += ["--set", f"{k}={v!r}"]
        self.command = cmd
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        prefix = "simulator listening on "
        if not line.startswith(prefix):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line[len(prefix) :].strip()
        self.pid = self.proc.pid

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sim/stats", timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def child(
    role: str,
    args: dict[str, Any],
    workdir: Path,
    *,
    timeout: float,
    wrapper: list[str] | None = None,
) -> dict[str, Any]:
    out = workdir / f"{role}-{time.monotonic_ns()}.json"
    cmd = [
        *(wrapper or []),
        sys.executable,
        str(Path(__file__).resolve()),
        "--role",
        role,
        "--role-args",
        json.dumps(args),
        "--role-out",
        str(out),
    ]
    subprocess.run(cmd, check=True, timeout=timeout + 120)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def measured(sim: Simulator, fn: Any) -> dict[str, Any]:
    """Run a phase; add what the simulator spent on it under ``"simulator"``."""
    before, cpu0 = sim.stats(), sim.cpu()
    result: dict[str, Any] = fn()
    after, cpu1 = sim.stats(), sim.cpu()
    wall = result.get("wall_s") or 0.0
    result["simulator"] = {
        # includes the child's start-up and wind-down, when the simulator idles
        "cpu_s": cpu1 - cpu0,
        "cpu_util": (cpu1 - cpu0) / wall if wall else 0.0,
        "place_requests": after["place_requests"] - before["place_requests"],
        "queries": after["queries"] - before["queries"],
        "max_place_requests": after["max_place_requests"],
        "duplicates": after["duplicates"],
        "by_answer": {
            k: v - before["by_answer"].get(k, 0)
            for k, v in after["by_answer"].items()
            if v != before["by_answer"].get(k, 0)
        },
    }
    return result


def profiler_command(kind: str | None, out: str | None) -> list[str] | None:
    """The py-spy command line the worker process runs under, for the py-spy profiles."""
    spy = str(Path(sys.executable).with_name("py-spy"))
    output = ["-f", "raw", "-o", f"{out}.collapsed", "--"]
    if kind == "py-spy":
        # Samples whichever thread holds the GIL (event loop or database thread): Python CPU
        # time, not time blocked in fsync or epoll (SQLite's C code drops the GIL).
        return [spy, "record", "-r", "400", "--gil", "--threads", *output]
    if kind == "py-spy-native":
        # Every thread while not idle, with C frames: shows SQLite's own work (and its fsync,
        # which is not CPU) under the database thread. Slows the worker a lot.
        return [spy, "record", "-r", "200", "--native", "--threads", *output]
    return None


def run_benchmark(opts: argparse.Namespace) -> dict[str, Any]:
    n, k, speed = opts.orders, opts.queries_per_order, opts.speed
    ending = ENDINGS[opts.ending]
    polling = {**POLLING, **ending["polling"]}
    if opts.ending == "max-polls":
        polling["max_polls"] = k
    sim_settings = {**ending["sim"], **SIM_COMMON}
    clock_start = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="orderwatch-bench-")
    workdir = Path(tmp.name)
    sim = Simulator(speed=speed, clock_start=clock_start, settings=sim_settings)
    common = {
        "sim_url": sim.url,
        "speed": speed,
        "clock_start": clock_start,
        "concurrency": opts.concurrency,
        "polling": polling,
    }
    report: dict[str, Any] = {
        "timestamp": stamp,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "src_digest": src_digest(),
        "orders": n,
        "ending": opts.ending,
        "queries_per_order_planned": k if opts.ending == "max-polls" else None,
        "speed": speed,
        "concurrency": opts.concurrency,
        "batch_size": 100,
        "simulator_command": " ".join(sim.command),
        "polling": polling,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
        },
        "profile": opts.profile,
        "gc": opts.gc,
    }

    def ceiling(tag: str, queries: int) -> dict[str, Any]:
        # with --profile, the run after the worker's is profiled too: the same libraries'
        # cost per call in the bare client, beside the worker's
        out = str(RESULTS / f"pipeline-{stamp}-ceiling") if opts.profile else None
        result = measured(
            sim,
            lambda: child(
                "ceiling",
                {**common, "orders": n, "queries": queries, "prefix": f"C{tag}-"},
                workdir,
                timeout=opts.timeout,
                wrapper=profiler_command(opts.profile, out) if tag == "after" else None,
            ),
        )
        say(
            f"ceiling {tag}: {result['calls']:,} calls at {result['calls_per_s']:,.0f}/s, "
            f"{result['cpu_per_call_us']:.0f} µs CPU per call"
        )
        return result

    ceilings: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    paced: dict[str, Any] = {}
    steady: dict[str, Any] = {}
    try:
        say(f"simulator at {sim.url} (speed ×{speed:g}, ending {opts.ending})")
        # ---- orderwatch intake (timed, not part of the rate)
        db = workdir / "pipeline.db"
        setup = child(
            "setup",
            {**common, "db_url": f"sqlite:///{db}", "orders": n, "prefix": "W"},
            workdir,
            timeout=opts.timeout,
        )
        say(f"submitted {n:,} orders in {setup['submit_s']:.1f} s")
        # ---- ceiling before (its query count is known in advance with max-polls)
        if opts.ending == "max-polls":
            ceilings.append(ceiling("before", n * k))
        # ---- one worker until every order is final
        profile_out = str(RESULTS / f"pipeline-{stamp}-worker") if opts.profile else None
        wrapper = profiler_command(opts.profile, profile_out)
        worker = measured(
            sim,
            lambda: child(
                "worker",
                {
                    **common,
                    "db_url": f"sqlite:///{db}",
                    "target": n,
                    "timeout": opts.timeout,
                    "log_path": str(workdir / "worker.log"),
                    "profile": opts.profile,
                    "profile_out": profile_out,
                    "gc": opts.gc,
                },
                workdir,
                timeout=opts.timeout,
                wrapper=wrapper,
            ),
        )
        say(
            f"worker: {worker['calls']:,} calls in {worker['wall_s']:.1f} s "
            f"({worker['calls_per_s']:,.0f}/s), {worker['cpu_per_call_us']:.0f} µs CPU per call"
        )
        # ---- ceiling after, with exactly the worker's places and queries
        ceilings.append(ceiling("after", worker["queries"]))
        # ---- memory: a few due orders while many wait far in the future
        if not opts.skip_memory:
            memory = run_memory(opts, common, workdir)
        report["simulator_peak_rss_mb"] = proc_rss_mb(sim.pid)
        report["simulator_totals"] = sim.stats()
        sim.stop()
        if opts.paced_orders:
            paced = run_paced(opts, polling, sim_settings, workdir)
        if opts.steady_fraction:
            steady = run_steady(
                opts,
                speed,
                polling=polling,
                sim_settings=sim_settings,
                workdir=workdir,
                peak=worker,
            )
    finally:
        sim.stop()
        tmp.cleanup()
    report.update(
        setup=setup,
        orderwatch=worker,
        ceilings=ceilings,
        ceiling=combine(ceilings),
        memory=memory,
        paced=paced,
        steady=steady,
    )
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["figures"] = figures(report)
    return report


def run_memory(opts: argparse.Namespace, common: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Peak RSS of a worker running `memory_due` orders while many others wait."""
    memory: dict[str, Any] = {}
    for waiting in opts.memory_sizes:
        mdb = workdir / f"memory-{waiting}.db"
        msetup = child(
            "setup",
            {
                **common,
                "db_url": f"sqlite:///{mdb}",
                "orders": waiting + opts.memory_due,
                "prefix": f"M{waiting}-",
                "due": opts.memory_due,
            },
            workdir,
            timeout=opts.timeout,
        )
        mrun = child(
            "worker",
            {
                **common,
                "db_url": f"sqlite:///{mdb}",
                "target": opts.memory_due,
                "timeout": opts.timeout,
                "log_path": str(workdir / f"memory-{waiting}.log"),
            },
            workdir,
            timeout=opts.timeout,
        )
        memory[str(waiting)] = {"setup": msetup, "worker": mrun}
        say(
            f"memory: {opts.memory_due} due + {waiting:,} waiting (submitted in "
            f"{msetup['submit_s']:.1f} s): peak RSS {mrun['peak_rss_mb']:.1f} MB, "
            f"{mrun['calls']:,} calls in {mrun['wall_s']:.1f} s"
        )
    return memory


def run_side(
    opts: argparse.Namespace,
    name: str,
    *,
    n: int,
    speed: float,
    polling: dict[str, Any],
    sim_settings: dict[str, Any],
    workdir: Path,
    setup: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A side run: its own simulator and database, ``n`` orders, one measured worker."""
    clock_start = time.time()
    sim = Simulator(speed=speed, clock_start=clock_start, settings=sim_settings)
    try:
        common = {
            "sim_url": sim.url,
            "speed": speed,
            "clock_start": clock_start,
            "concurrency": opts.concurrency,
            "polling": polling,
            "db_url": f"sqlite:///{workdir / f'{name}.db'}",
        }
        child(
            "setup",
            {**common, "orders": n, "prefix": name[0].upper(), **(setup or {})},
            workdir,
            timeout=opts.timeout,
        )
        result = measured(
            sim,
            lambda: child(
                "worker",
                {
                    **common,
                    "target": n,
                    "timeout": opts.timeout,
                    "log_path": str(workdir / f"{name}.log"),
                },
                workdir,
                timeout=opts.timeout,
            ),
        )
    finally:
        sim.stop()
    result["speed"] = speed
    return result


def run_paced(
    opts: argparse.Namespace, polling: dict[str, Any], sim_settings: dict[str, Any], workdir: Path
) -> dict[str, Any]:
    """Poll lateness when the worker keeps up: fewer orders, a slower clock, own simulator."""
    n, speed = opts.paced_orders, opts.paced_speed
    result = run_side(
        opts,
        "paced",
        n=n,
        speed=speed,
        polling=polling,
        sim_settings=sim_settings,
        workdir=workdir,
    )
    say(
        f"paced: {n:,} orders at ×{speed:g}, idle {result['idle_fraction']:.0%}: poll lateness "
        f"p50 {result['poll_lateness_p50_ms']:.1f} ms, p99 {result['poll_lateness_p99_ms']:.1f} ms"
    )
    return result


def run_steady(
    opts: argparse.Namespace,
    speed: float,
    *,
    polling: dict[str, Any],
    sim_settings: dict[str, Any],
    workdir: Path,
    peak: dict[str, Any],
) -> dict[str, Any]:
    """Poll lateness under a steady load at ``--steady-fraction`` of the peak rate just
    measured: the orders' first calls are spread evenly over the time that rate needs."""
    n = max(500, opts.orders // 4)
    rate = opts.steady_fraction * peak["calls_per_s"]
    spread_real = n * (1 + opts.queries_per_order) / rate
    result = run_side(
        opts,
        "steady",
        n=n,
        speed=speed,
        polling=polling,
        sim_settings=sim_settings,
        workdir=workdir,
        setup={"spread_s": spread_real * speed},
    )
    result["offered_calls_per_s"] = rate
    result["fraction_of_peak"] = opts.steady_fraction
    say(
        f"steady: {n:,} orders offered at {rate:,.0f} calls/s "
        f"({opts.steady_fraction:.0%} of the peak {peak['calls_per_s']:,.0f}/s): poll lateness "
        f"p50 {result['poll_lateness_p50_ms']:.1f} ms, p99 {result['poll_lateness_p99_ms']:.1f} ms"
    )
    return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The ceiling: the mean of its runs (before and after the worker) when there are two."""
    calls = sum(r["calls"] for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    cpu = sum(r["cpu_s"] for r in runs)
    return {
        "runs": len(runs),
        "places": runs[-1]["places"],
        "queries": runs[-1]["queries"],
        "calls": runs[-1]["calls"],
        "errors": sum(sum(r["errors"].values()) for r in runs),
        "wall_s": wall / len(runs),
        "calls_per_s": calls / wall,
        "cpu_s": cpu / len(runs),
        "cpu_util": cpu / wall,
        "cpu_per_call_us": cpu / calls * 1e6,
        "sys_cpu_per_call_us": sum(r["sys_cpu_per_call_us"] * r["calls"] for r in runs) / calls,
        "gc_cpu_per_call_us": sum(r["gc_cpu_per_call_us"] * r["calls"] for r in runs) / calls,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "calls_per_s_each": [round(r["calls_per_s"], 1) for r in runs],
        "cpu_per_call_us_each": [round(r["cpu_per_call_us"], 1) for r in runs],
        "simulator_cpu_util": sum(r["simulator"]["cpu_s"] for r in runs) / wall,
    }


def figures(r: dict[str, Any]) -> dict[str, Any]:
    w, c = r["orderwatch"], r["ceiling"]
    own_us = w["cpu_per_call_us"] - c["cpu_per_call_us"]
    ratio = w["calls_per_s"] / c["calls_per_s"] if c["calls_per_s"] else 0.0
    sim = w["simulator"]
    f: dict[str, Any] = {
        "calls_per_s_orderwatch": w["calls_per_s"],
        "calls_per_s_ceiling": c["calls_per_s"],
        "rate_ratio": ratio,
        "rate_floor_ok": ratio >= FLOOR_RATE_RATIO,
        "cpu_per_call_us_orderwatch": w["cpu_per_call_us"],
        "cpu_per_call_us_ceiling": c["cpu_per_call_us"],
        "own_cpu_per_call_us": own_us,
        "own_cpu_floor_ok": own_us < FLOOR_OWN_CPU_US,
        # Steadier than µs on a machine whose speed varies: both CPU figures scale together.
        "own_cpu_per_ceiling_cpu": own_us / c["cpu_per_call_us"] if c["cpu_per_call_us"] else 0.0,
        "poll_lateness_p50_ms": w["poll_lateness_p50_ms"],
        "poll_lateness_p99_ms": w["poll_lateness_p99_ms"],
        "peak_rss_mb_orderwatch": w["peak_rss_mb"],
        "peak_rss_mb_ceiling": c["peak_rss_mb"],
        "queries_per_order": w["queries"] / max(1, w["places"]),
        "all_final": w["finished"] >= r["orders"] and not w["timed_out"],
        "placed_once": sim["place_requests"] == r["orders"] and sim["duplicates"] == 0,
    }
    if r.get("steady"):
        f["steady_poll_lateness_p99_ms"] = r["steady"]["poll_lateness_p99_ms"]
        f["steady_fraction_of_peak"] = r["steady"]["fraction_of_peak"]
    if r.get("paced"):
        f["paced_poll_lateness_p50_ms"] = r["paced"]["poll_lateness_p50_ms"]
        f["paced_poll_lateness_p99_ms"] = r["paced"]["poll_lateness_p99_ms"]
    mem = r.get("memory") or {}
    if len(mem) >= 2:
        sizes = sorted(mem, key=int)
        lo, hi = mem[sizes[0]]["worker"], mem[sizes[-1]]["worker"]
        f["memory_rss_ratio"] = hi["peak_rss_mb"] / lo["peak_rss_mb"]
        f["memory_rss_delta_mb"] = hi["peak_rss_mb"] - lo["peak_rss_mb"]
        f["memory_flat_ok"] = f["memory_rss_ratio"] <= FLAT_RSS_RATIO
    return f


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def print_table(r: dict[str, Any]) -> None:
    w, c, f = r["orderwatch"], r["ceiling"], r["figures"]
    ok = {True: "ok", False: "FAIL"}
    each = " / ".join(f"{v:,.0f}" for v in c["calls_per_s_each"])
    rows = [
        ("", "orderwatch", "ceiling", "ratio, floor"),
        ("place-order calls", f"{w['places']:,}", f"{c['places']:,}", ""),
        ("query calls", f"{w['queries']:,}", f"{c['queries']:,}", ""),
        (
            "vendor calls / s",
            f"{w['calls_per_s']:,.0f}",
            f"{c['calls_per_s']:,.0f}",
            f"{f['rate_ratio']:.0%} (≥ {FLOOR_RATE_RATIO:.0%}: {ok[f['rate_floor_ok']]})"
            + (f"; ceiling runs {each}" if c["runs"] > 1 else ""),
        ),
        ("wall s", f"{w['wall_s']:.2f}", f"{c['wall_s']:.2f}", ""),
        ("CPU s (whole process)", f"{w['cpu_s']:.2f}", f"{c['cpu_s']:.2f}", ""),
        ("CPU utilisation", f"{w['cpu_util']:.0%}", f"{c['cpu_util']:.0%}", "of one core"),
        (
            "CPU µs / call",
            f"{w['cpu_per_call_us']:.0f}",
            f"{c['cpu_per_call_us']:.0f}",
            "orderwatch threads: "
            + ", ".join(f"{k} {v:.0f}" for k, v in w["thread_cpu_per_call_us"].items()),
        ),
        (
            "  of which system (kernel)",
            f"{w['sys_cpu_per_call_us']:.0f}",
            f"{c['sys_cpu_per_call_us']:.0f}",
            f"{w['calls_per_transaction']:.1f} calls per database transaction "
            + str(w["transactions"]),
        ),
        (
            "  of which garbage collector",
            f"{w['gc_cpu_per_call_us']:.0f}",
            f"{c['gc_cpu_per_call_us']:.0f}",
            "collections by generation: " + " / ".join(f"{n:,}" for n in w["gc_collections"]),
        ),
        (
            "  of which in transactions",
            f"{sum(w['db_cpu_per_call_us'].values()):.0f}",
            "",
            "database work (SQL built and run, rows read, commits): "
            + ", ".join(
                f"{k} {v:.0f}"
                for k, v in sorted(w["db_cpu_per_call_us"].items(), key=lambda kv: -kv[1])
                if v >= 0.5
            )
            + f"; SENT groups committed off the loop: {w.get('durable_off_loop', 0)}",
        ),
        (
            "own CPU µs / call",
            f"{f['own_cpu_per_call_us']:.0f}",
            "",
            f"< {FLOOR_OWN_CPU_US:.0f}: {ok[f['own_cpu_floor_ok']]}; "
            f"{f['own_cpu_per_ceiling_cpu']:.2f} × the ceiling's CPU per call",
        ),
        (
            "poll lateness p50 / p99 ms",
            f"{w['poll_lateness_p50_ms']:,.1f} / {w['poll_lateness_p99_ms']:,.1f}",
            "n/a",
            "real ms past next_run_at, saturated (queue wait)",
        ),
        ("peak RSS MB", f"{w['peak_rss_mb']:.1f}", f"{c['peak_rss_mb']:.1f}", ""),
        (
            "simulator CPU utilisation",
            f"{w['simulator']['cpu_util']:.0%}",
            f"{c['simulator_cpu_util']:.0%}",
            "",
        ),
    ]
    pc = r.get("paced")
    if pc:
        rows.append(
            (
                "  … when keeping up",
                f"{pc['poll_lateness_p50_ms']:,.1f} / {pc['poll_lateness_p99_ms']:,.1f}",
                "",
                f"{pc['finished']:,} orders at ×{pc['speed']:g}, idle {pc['idle_fraction']:.0%}, "
                f"{pc['cpu_per_call_us']:.0f} µs/call",
            )
        )
    st = r.get("steady")
    if st:
        rows.append(
            (
                f"  … at {st['fraction_of_peak']:.0%} of peak",
                f"{st['poll_lateness_p50_ms']:,.1f} / {st['poll_lateness_p99_ms']:,.1f}",
                "",
                f"{st['finished']:,} orders offered at {st['offered_calls_per_s']:,.0f} calls/s"
                f" (p99 < 1 s: {'ok' if st['poll_lateness_p99_ms'] < 1000 else 'FAIL'})",
            )
        )
    mem = r.get("memory") or {}
    for size in sorted(mem, key=int):
        m = mem[size]["worker"]
        rows.append(
            (
                f"peak RSS MB, {int(size):,} waiting",
                f"{m['peak_rss_mb']:.1f}",
                "",
                f"{m['calls']:,} calls in {m['wall_s']:.1f} s, {m['cpu_per_call_us']:.0f} µs/call",
            )
        )
    if "memory_rss_ratio" in f:
        rows.append(
            (
                "RSS ratio most / fewest",
                f"{f['memory_rss_ratio']:.3f}",
                "",
                f"≤ {FLAT_RSS_RATIO}: {ok[f['memory_flat_ok']]} "
                f"(Δ {f['memory_rss_delta_mb']:+.1f} MB)",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    print()
    print(
        f"orderwatch pipeline — {r['orders']:,} orders, ending {r['ending']}, "
        f"speed ×{r['speed']:g}, concurrency {r['concurrency']}, gc {r.get('gc', 'tuned')}, "
        f"{r['machine']['cpus']} CPUs, "
        f"load {r['machine']['loadavg_start'][0]:.1f} → {r['machine']['loadavg_end'][0]:.1f}"
    )
    for row in rows:
        print("  ".join(str(v).ljust(widths[i]) for i, v in enumerate(row)).rstrip())
    print(
        f"\nintake {r['setup']['submit_s']:.1f} s ({r['setup']['submit_per_s']:,.0f} orders/s, "
        f"not in the rate) · {f['queries_per_order']:.2f} queries per order · worker idle in "
        f"{w['idle_fraction']:.0%} of samples, {w['mean_inflight']:.0f} in flight on average · "
        f"statuses {w['by_status']} · placed once: {ok[f['placed_once']]}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--orders", type=int, default=20_000, help="orders (default 20000)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2000 orders, small memory")
    p.add_argument("--concurrency", type=int, default=64, help="worker/vendor concurrency (64)")
    p.add_argument(
        "--ending",
        choices=sorted(ENDINGS),
        default="max-polls",
        help="how orders end (default max-polls: exactly --queries-per-order each)",
    )
    p.add_argument("--queries-per-order", type=int, default=5, help="with max-polls (5)")
    p.add_argument(
        "--speed",
        type=float,
        default=2000.0,
        help="schedule seconds per real second, shared by worker and simulator (2000: an "
        "order's 85 min of polling takes 2.6 s, far less than the run)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="per phase, seconds")
    p.add_argument("--skip-memory", action="store_true", help="skip the memory-growth runs")
    p.add_argument("--memory-due", type=int, default=500, help="due orders in the memory runs")
    p.add_argument(
        "--paced-orders",
        type=int,
        default=None,
        help="orders of the run that measures poll lateness when the worker keeps up "
        "(default 1000, 500 with --quick; 0 skips it)",
    )
    p.add_argument("--paced-speed", type=float, default=200.0, help="its clock speed (200)")
    p.add_argument(
        "--steady-fraction",
        type=float,
        default=0.8,
        help="also run a steady load at this fraction of the peak rate (0.8; 0 skips it)",
    )
    p.add_argument(
        "--gc",
        choices=["tuned", "default"],
        default="tuned",
        help="tuned: the worker freezes start-up objects and collects less often, as\n"
        "`orderwatch worker` does (orderwatch.process.tune_gc); default: CPython's settings",
    )
    p.add_argument(
        "--profile",
        choices=["cprofile", "pyinstrument", "py-spy", "py-spy-native"],
        default=None,
        help="profile the orderwatch worker process (py-spy: every thread, sampled; the\n"
        "others: the event-loop thread only). Slows the worker: figures are then not valid",
    )
    p.add_argument("--check", action="store_true", help="exit 1 if a floor is not met")
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--role-args", help=argparse.SUPPRESS)
    p.add_argument("--role-out", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.role:
        run_role(opts.role, opts.role_args, opts.role_out)
        return
    if opts.quick:
        opts.orders = 2000
    opts.memory_sizes = [1_000, 10_000] if opts.quick else [10_000, 100_000]
    if opts.paced_orders is None:
        opts.paced_orders = 500 if opts.quick else 1000
    report = run_benchmark(opts)
    print_table(report)
    out = RESULTS / f"pipeline-{report['timestamp']}.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwritten: {out.relative_to(ROOT)}")
    f = report["figures"]
    met = f["rate_floor_ok"] and f["own_cpu_floor_ok"] and f.get("memory_flat_ok", True)
    if opts.check and not (met and f["all_final"] and f["placed_once"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
