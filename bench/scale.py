"""Scale-out benchmark: orderwatch on PostgreSQL and MariaDB with several worker processes.

What it measures (see bench/README.md, "scale.py"):

* **vendor calls / s end to end** — the same kind of orders (``--orders`` each run, every
  one ending after exactly ``--queries-per-order`` polls, as ``pipeline.py --ending
  max-polls``) run to their end by 1 worker process on SQLite, 1, 2 and 4 worker processes
  on PostgreSQL and 1 and 2 on MariaDB, each against a fresh database and the one
  ``orderwatch simulator`` process of the invocation. Ratios are against the bare-asyncio
  ceiling of ``pipeline.py`` (no database), measured before and after in the same run.
* **claim latency p50 / p99** — each worker process wraps its store's ``claim_due``: the time
  from the worker's call to its result, as the worker sees it (waiting for the database
  thread included), and the time of the claim's transaction on the database thread.
* **database round trips per vendor call** — each worker process counts every request its
  driver sends and waits for (psycopg: each statement, the implicit ``BEGIN``, ``COMMIT``,
  one ``executemany`` pipeline; PyMySQL: each statement, each row of an ``executemany`` that
  is not a multi-row ``INSERT``, ``COMMIT``, ``ROLLBACK``, ``COM_PING``), filed under the
  store call it belongs to: claims, write-backs, SENT commits (the durable mark before each
  place-order, counted apart), others (next due time, lease renewal, ...). The floor: on
  PostgreSQL, claims + write-backs ≤ 0.1 round trips per vendor call at batch size 100.
* **claim cost with 0 and 1,000,000 final orders** — 200 claims of 100 due orders (the
  store's own ``claim_due``) with no final orders in the table, then again after bulk-loading
  1,000,000 final orders (one event each) with ``INSERT … SELECT generate_series`` (MariaDB:
  the ``seq_1_to_N`` sequence table) and ``ANALYZE``; EXPLAIN ANALYZE of the claim query both
  times, in the JSON.

    .venv/bin/python bench/scale.py --quick     # ~3 min: 1,000 orders a run, 100k final
    .venv/bin/python bench/scale.py             # 5,000 orders a run, 1,000,000 final

Databases ``ow_scale_*`` are created on the local servers and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline  # bench/pipeline.py: simulator, ceiling, intake, settings

ROOT = pipeline.ROOT
RESULTS = pipeline.RESULTS
say = pipeline.say

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
MY_ADMIN = "mysql://root@127.0.0.1:3306/test"
BATCH = 100
FLOOR_CLAIM_WRITEBACK_RT = 0.1  # PostgreSQL: claim + write-back round trips per vendor call
CATEGORIES = ("claim", "write-back", "sent", "other")


# --------------------------------------------------------------------------- databases


def server_url(dialect: str, name: str) -> str:
    if dialect == "postgresql":
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    return f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"


@contextlib.contextmanager
def admin(dialect: str) -> Iterator[Any]:
    """An autocommit driver connection to the server's ``test`` database."""
    if dialect == "postgresql":
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            yield conn
    else:
        import pymysql

        conn = pymysql.connect(
            host="127.0.0.1", user="root", database="test", autocommit=True, charset="utf8mb4"
        )
        try:
            yield conn
        finally:
            conn.close()


def create_database(dialect: str, name: str) -> str:
    """A fresh, empty database ``name`` at the current schema; its SQLAlchemy URL."""
    assert name.startswith("ow_scale_")
    drop_database(dialect, name)
    with admin(dialect) as conn:
        if dialect == "postgresql":
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    url = server_url(dialect, name)
    upgrade(url)
    return url


def upgrade(url: str) -> None:
    from orderwatch.store.sql import SqlStore

    async def run() -> None:
        store = SqlStore(url)
        try:
            await store.upgrade()
        finally:
            await store.close()

    asyncio.run(run())


def drop_database(dialect: str, name: str) -> None:
    assert name.startswith("ow_scale_")
    with admin(dialect) as conn:
        if dialect == "postgresql":
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")


@contextlib.contextmanager
def driver_connection(url: str) -> Iterator[Any]:
    """An autocommit driver connection (psycopg, PyMySQL or sqlite3) to ``url``."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        conn = sqlite3.connect(u.database or "", timeout=30, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()
    elif backend == "postgresql":
        import psycopg

        with psycopg.connect(
            f"postgresql://{u.username}@{u.host}:{u.port}/{u.database}", autocommit=True
        ) as conn:
            yield conn
    else:
        import pymysql

        conn = pymysql.connect(
            host=u.host,
            port=u.port or 3306,
            user=u.username,
            database=u.database,
            autocommit=True,
            charset="utf8mb4",
        )
        try:
            yield conn
        finally:
            conn.close()


def scalar(conn: Any, sql: str, params: Any = None) -> Any:
    cur = conn.cursor()
    try:
        cur.execute(sql, params) if params is not None else cur.execute(sql)
        row = cur.fetchone()
    finally:
        cur.close()
    return row[0] if row else None


# --------------------------------------------------------------------------- counting


class Census:
    """Counts a store's transactions and driver round trips by what the store was doing.

    The store runs each call as one transaction (``SqlStore._tx``) on its database thread;
    the wrapper names the call from the function it runs (``claim_due``, ``apply``, ...)
    and keeps it in a thread-local, so that the driver patches below file every request
    under it. ``apply`` is a SENT commit when durable (it keeps the lease), else a
    write-back. The patches are process-wide: use in a worker process of its own.
    """

    def __init__(self, store: Any) -> None:
        self.local = threading.local()
        self.tx: dict[str, int] = {}
        self.rt: dict[str, dict[str, int]] = {}
        self.tx_ms: dict[str, list[float]] = {}
        self.commands = 0  # PyMySQL: commands sent, counted at the wire
        self.enabled = False
        self._wrap_tx(store)
        self._patch_drivers()

    def reset(self) -> None:
        self.tx.clear()
        self.rt.clear()
        self.tx_ms.clear()
        self.commands = 0
        self.enabled = True

    def snapshot(self) -> dict[str, Any]:
        self.enabled = False
        return {
            "transactions": dict(self.tx),
            "round_trips": {k: dict(v) for k, v in self.rt.items()},
            "tx_ms": {k: list(v[:20_000]) for k, v in self.tx_ms.items()},
            "driver_commands": self.commands,
        }

    def count(self, op: str, n: int = 1) -> None:
        if not self.enabled or n <= 0:
            return
        cat = getattr(self.local, "category", None) or "outside"
        per = self.rt.setdefault(cat, {})
        per[op] = per.get(op, 0) + n

    def _wrap_tx(self, store: Any) -> None:
        real_tx = store._tx

        def tx(fn: Any, mode: str, **options: Any) -> Any:
            name = getattr(fn, "__qualname__", "?").split(".")
            call = name[1] if len(name) > 2 else name[0]
            if call == "claim_due":
                cat = "claim"
            elif call == "apply":
                cat = "sent" if mode.endswith("durable") else "write-back"
            else:
                cat = f"other:{call}"
            self.local.category = cat
            t = time.perf_counter()
            try:
                return real_tx(fn, mode, **options)
            finally:
                self.local.category = None
                if self.enabled:
                    self.tx[cat] = self.tx.get(cat, 0) + 1
                    self.tx_ms.setdefault(cat, []).append((time.perf_counter() - t) * 1000)

        store._tx = tx

    def _patch_drivers(self) -> None:
        self._patch_psycopg()
        self._patch_pymysql()

    def _patch_psycopg(self) -> None:
        census = self
        with contextlib.suppress(ImportError):
            import psycopg
            from psycopg import pq

            idle = pq.TransactionStatus.IDLE

            def begins(conn: Any) -> bool:
                # psycopg sends BEGIN as a request of its own before the first statement
                return not conn.autocommit and conn.pgconn.transaction_status == idle

            cur_execute = psycopg.Cursor.execute
            cur_executemany = psycopg.Cursor.executemany
            conn_commit = psycopg.Connection.commit
            conn_rollback = psycopg.Connection.rollback

            def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                census.count("BEGIN", begins(self.connection))
                census.count(_op(query))
                return cur_execute(self, query, *args, **kwargs)

            def executemany(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                census.count("BEGIN", begins(self.connection))
                # one pipeline: every row's statement, then one Sync, then every result
                census.count("executemany " + _op(query))
                return cur_executemany(self, query, *args, **kwargs)

            def commit(self: Any) -> Any:
                census.count("COMMIT", self.pgconn.transaction_status != idle)
                return conn_commit(self)

            def rollback(self: Any) -> Any:
                census.count("ROLLBACK", self.pgconn.transaction_status != idle)
                return conn_rollback(self)

            psycopg.Cursor.execute = execute  # type: ignore[method-assign,assignment]
            psycopg.Cursor.executemany = executemany  # type: ignore[method-assign,assignment]
            psycopg.Connection.commit = commit  # type: ignore[method-assign]
            psycopg.Connection.rollback = rollback  # type: ignore[method-assign]

    def _patch_pymysql(self) -> None:
        census = self
        with contextlib.suppress(ImportError):
            import pymysql.connections
            import pymysql.cursors

            my_execute = pymysql.cursors.Cursor.execute
            my_executemany = pymysql.cursors.Cursor.executemany
            my_commit = pymysql.connections.Connection.commit
            my_rollback = pymysql.connections.Connection.rollback
            my_ping = pymysql.connections.Connection.ping

            def my_exec(self: Any, query: Any, args: Any = None) -> Any:
                # inside executemany: one statement per row, or (INSERT … VALUES) one
                # multi-row statement per chunk, which PyMySQL runs without arguments
                many = getattr(census.local, "many", False)
                kind = "" if not many else "executemany row " if args is not None else "multi-row "
                census.count(kind + _op(query))
                return my_execute(self, query, args)

            def my_many(self: Any, query: Any, args: Any) -> Any:
                census.local.many = True  # PyMySQL runs one execute per row (or per chunk)
                try:
                    return my_executemany(self, query, args)
                finally:
                    census.local.many = False

            def my_com(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
                def com(self: Any, *args: Any, **kwargs: Any) -> Any:
                    census.count(name)
                    return real(self, *args, **kwargs)

                return com

            my_command = pymysql.connections.Connection._execute_command

            def command(self: Any, *args: Any, **kwargs: Any) -> Any:
                # every command PyMySQL sends (COM_QUERY, COM_PING, ...) waits for its
                # answer: the ground truth the per-call counts above must add up to
                if census.enabled:
                    census.commands += 1
                return my_command(self, *args, **kwargs)

            pymysql.connections.Connection._execute_command = command  # type: ignore[method-assign]
            pymysql.cursors.Cursor.execute = my_exec  # type: ignore[method-assign]
            pymysql.cursors.Cursor.executemany = my_many  # type: ignore[method-assign]
            pymysql.connections.Connection.commit = my_com("COMMIT", my_commit)  # type: ignore[method-assign]
            pymysql.connections.Connection.rollback = my_com("ROLLBACK", my_rollback)  # type: ignore[method-assign]
            pymysql.connections.Connection.ping = my_com("PING", my_ping)  # type: ignore[method-assign]


def _op(query: Any) -> str:
    if isinstance(query, bytes | bytearray):
        query = bytes(query[:64]).decode(errors="replace")
    text = str(query).strip()
    if text in (";", "SELECT 1"):
        return "pre-ping"  # SQLAlchemy's pool_pre_ping on PostgreSQL: an empty query
    words = text.split(None, 1)
    return words[0].upper() if words else "?"


def split_round_trips(rt: dict[str, dict[str, int]]) -> dict[str, int]:
    """Round trips by category: claim, write-back, sent, other."""
    out = dict.fromkeys(CATEGORIES, 0)
    for cat, ops in rt.items():
        key = cat if cat in out else "other"
        out[key] += sum(ops.values())
    return out


# --------------------------------------------------------------------------- worker role


async def role_worker(a: dict[str, Any]) -> dict[str, Any]:
    """One worker process: ready → (stdin "go") run → (stdin "stop") stop and report."""
    from orderwatch.clock import CompressedClock
    from orderwatch.process import tune_gc
    from orderwatch.service import Service

    clock = CompressedClock(speed=a["speed"], start=a["clock_start"])
    service = await Service.open(pipeline.bench_settings(a, a["db_url"]), clock=clock)
    tune_gc()  # as `orderwatch worker` does after start-up
    loop = asyncio.get_running_loop()
    try:
        census = Census(service.store)
        worker = service.worker(
            rng=random.Random(a["index"]), worker_id=f"scale-{a['index']}-{os.getpid()}"
        )
        claim_ms: list[float] = []
        real_claim = service.store.claim_due

        async def timed_claim(**kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await real_claim(**kwargs)
            finally:
                if census.enabled:
                    claim_ms.append((time.perf_counter() - t) * 1000)

        service.store.claim_due = timed_claim  # type: ignore[method-assign]
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)  # "go"
        census.reset()
        cpu0 = pipeline.cpu_seconds()
        run = asyncio.create_task(worker.run())
        await loop.run_in_executor(None, sys.stdin.readline)  # "stop": everything is final
        counted = census.snapshot()
        cpu = pipeline.cpu_seconds() - cpu0
        s = worker.stats
        stats = {
            "places": s.places,
            "queries": s.queries,
            "claims": s.claims,
            "claimed": s.claimed,
            "flushes": s.flushes,
            "applied": s.applied,
            "discarded": s.discarded,
            "finished": s.finished,
            "sent_commits": s.sent_commits,
        }
        worker.stop()
        await run
        await worker.vendors.close()
    finally:
        await service.close()
    return {
        **stats,
        "cpu_s": cpu,
        "claim_ms": claim_ms[:20_000],
        **counted,
        "peak_rss_mb": pipeline.peak_rss_mb(),
    }


def run_role(role: str, args_json: str, out: str) -> None:
    args = json.loads(args_json)
    log_path = Path(args["log_path"])
    import orderwatch.log

    with log_path.open("w", encoding="utf-8") as stream:
        orderwatch.log.configure("info", "logfmt", stream=stream)  # as `orderwatch worker`
        result = asyncio.run({"worker": role_worker}[role](args))
    Path(out).write_text(json.dumps(result))


# --------------------------------------------------------------------------- one run


def pending_count(conn: Any) -> int:
    return int(scalar(conn, "SELECT count(*) FROM orders WHERE next_run_at IS NOT NULL"))


def run_workers(
    label: str,
    url: str,
    *,
    procs: int,
    opts: argparse.Namespace,
    common: dict[str, Any],
    sim: pipeline.Simulator,
    workdir: Path,
) -> dict[str, Any]:
    """Submit the orders, then run ``procs`` worker processes until every order is final."""
    n = opts.orders
    prefix = f"{label}-"
    setup = pipeline.child(
        "setup",
        {**common, "db_url": url, "orders": n, "prefix": prefix},
        workdir,
        timeout=opts.timeout,
    )
    children = []
    for i in range(procs):
        out = workdir / f"{label}-w{i}.json"
        args = {
            **common,
            "db_url": url,
            "index": i,
            "log_path": str(workdir / f"{label}-w{i}.log"),
        }
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            "worker",
            "--role-args",
            json.dumps(args),
            "--role-out",
            str(out),
        ]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append((proc, out))
    try:
        for proc, _ in children:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"{label}: a worker did not start ({line!r})")
        before, scpu0 = sim.stats(), sim.cpu()
        with driver_connection(url) as conn:
            t0 = time.perf_counter()
            for proc, _ in children:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            left = n
            timed_out = False
            while left:
                time.sleep(0.05)
                left = pending_count(conn)
                if time.perf_counter() - t0 > opts.timeout:
                    timed_out = True
                    break
                if any(p.poll() is not None for p, _ in children):
                    raise RuntimeError(f"{label}: a worker process ended early")
            wall = time.perf_counter() - t0
        after, scpu1 = sim.stats(), sim.cpu()
        for proc, _ in children:
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        for proc, _ in children:
            proc.wait(timeout=120)
            if proc.returncode:
                raise RuntimeError(f"{label}: a worker process failed ({proc.returncode})")
    finally:
        for proc, _ in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    workers = [json.loads(out.read_text()) for _, out in children]
    places = after["place_requests"] - before["place_requests"]
    queries = after["queries"] - before["queries"]
    result = summarise(workers, wall)
    result.update(
        label=label,
        processes=procs,
        orders=n,
        url=url.split("://", maxsplit=1)[0] + "://…/" + url.rsplit("/", 1)[-1],
        timed_out=timed_out,
        left=left,
        setup=setup,
        simulator={
            "place_requests": places,
            "queries": queries,
            "cpu_s": scpu1 - scpu0,
            "cpu_util": (scpu1 - scpu0) / wall if wall else 0.0,
            "duplicates": after["duplicates"] - before["duplicates"],
        },
        placed_once=places == n and after["duplicates"] == before["duplicates"],
        workers=[{k: v for k, v in w.items() if k not in ("claim_ms", "tx_ms")} for w in workers],
    )
    return result


def summarise(workers: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(int(w[key]) for w in workers)

    calls = total("places") + total("queries")
    rt: dict[str, dict[str, int]] = {}
    tx: dict[str, int] = {}
    for w in workers:
        for cat, ops in w["round_trips"].items():
            per = rt.setdefault(cat, {})
            for op, k in ops.items():
                per[op] = per.get(op, 0) + k
        for cat, k in w["transactions"].items():
            tx[cat] = tx.get(cat, 0) + k
    split = split_round_trips(rt)
    tx_split = dict.fromkeys(CATEGORIES, 0)
    for cat, k in tx.items():
        tx_split[cat if cat in tx_split else "other"] += k
    claim_ms = [v for w in workers for v in w["claim_ms"]]
    claim_tx_ms = [v for w in workers for v in w["tx_ms"].get("claim", [])]
    per_call = {k: v / calls if calls else 0.0 for k, v in split.items()}
    # PyMySQL only: the commands seen at the wire, to check the per-call counts against
    commands = sum(int(w.get("driver_commands", 0)) for w in workers)
    counted = sum(sum(ops.values()) for cat, ops in rt.items() if cat != "outside")
    return {
        "calls": calls,
        "places": total("places"),
        "queries": total("queries"),
        "wall_s": wall,
        "calls_per_s": calls / wall if wall else 0.0,
        "cpu_s": sum(w["cpu_s"] for w in workers),
        "cpu_per_call_us": sum(w["cpu_s"] for w in workers) / calls * 1e6 if calls else 0.0,
        "claims": total("claims"),
        "claimed": total("claimed"),
        "orders_per_claim": total("claimed") / max(1, total("claims")),
        "flushes": total("flushes"),
        "results_per_write_back": (total("applied") + total("discarded"))
        / max(1, total("flushes")),
        "sent_commits": total("sent_commits"),
        "places_per_sent_commit": total("places") / max(1, total("sent_commits")),
        "discarded": total("discarded"),
        "claim_ms_p50": pipeline.percentile(claim_ms, 50),
        "claim_ms_p99": pipeline.percentile(claim_ms, 99),
        "claim_tx_ms_p50": pipeline.percentile(claim_tx_ms, 50),
        "claim_tx_ms_p99": pipeline.percentile(claim_tx_ms, 99),
        "transactions": tx,
        "transactions_split": tx_split,
        "transactions_per_call": {k: v / calls if calls else 0.0 for k, v in tx_split.items()},
        "round_trips": rt,
        "round_trips_split": split,
        "round_trips_per_call": per_call,
        "claim_write_back_rt_per_call": per_call["claim"] + per_call["write-back"],
        "round_trips_counted": counted,
        "driver_commands": commands,
        "claim_write_back_tx_per_call": (tx_split["claim"] + tx_split["write-back"]) / calls
        if calls
        else 0.0,
    }


# --------------------------------------------------------------------------- claim cost


def _sql(dialect: str, pg: str, my: str) -> str:
    return pg if dialect == "postgresql" else my


def load_orders(conn: Any, dialect: str, *, prefix: str, n: int, final: bool, t0: datetime) -> None:
    """Bulk-load ``n`` orders in SQL: final ones (next_run_at NULL, one event each) or
    PENDING ones due before ``t0`` (one a millisecond)."""
    naive = t0.astimezone(UTC).replace(tzinfo=None)
    cols = (
        "order_no, vendor, customer_id, sku, quantity, points, recipient, payment_status,"
        " request_hash, status, reason, description, vendor_order_id, vendor_status, logistics,"
        " queries, abnormal, takeovers, placements, unknown_streak, next_run_at, started_at,"
        " placed_at, created_at, updated_at, locked_by, locked_until, lease_token"
    )
    recipient = '{"name":"张三","phone":"13800000000","address":"上海市浦东新区世纪大道1号"}'
    if dialect == "postgresql":
        g = "g"
        src = f"generate_series(1, {int(n)}) AS s(g)"
        no = f"'{prefix}' || lpad(g::text, 9, '0')"
        cust = "'C' || mod(g, 100000)"
        sku = "'SKU-' || (1000 + mod(g, 40))"
        digest = "md5(g::text) || md5((g + 1)::text)"
        vid = "'V' || g"

        def ago(unit: str, k: str) -> str:
            return f"%(t0)s - ({k}) * interval '1 {unit}'"
    else:
        g = "seq"
        src = f"seq_1_to_{int(n)}"
        no = f"CONCAT('{prefix}', LPAD(seq, 9, '0'))"
        cust = "CONCAT('C', seq MOD 100000)"
        sku = "CONCAT('SKU-', 1000 + seq MOD 40)"
        digest = "CONCAT(MD5(seq), MD5(seq + 1))"
        vid = "CONCAT('V', seq)"

        def ago(unit: str, k: str) -> str:
            return f"%(t0)s - INTERVAL ({k}) {unit.upper()}"

    if final:
        failed = f"mod({g}, 10) = 0" if dialect == "postgresql" else f"{g} MOD 10 = 0"
        values = (
            f"{no}, 'bench', {cust}, {sku}, 1, 8000, '{recipient}', 'PAID', {digest},"
            f" CASE WHEN {failed} THEN 'FAILED' ELSE 'SUCCEEDED' END,"
            f" CASE WHEN {failed} THEN 'MAX_POLLS_EXCEEDED' END, NULL, {vid},"
            f" CASE WHEN {failed} THEN 'SHIPPED' ELSE 'DELIVERED' END, NULL, 5, 0, 0, 1, 0,"
            f" NULL, {ago('second', g + ' + 86400')}, {ago('second', g + ' + 86000')},"
            f" {ago('second', g + ' + 86400')}, {ago('second', g)}, NULL, NULL, NULL"
        )
    else:
        values = (
            f"{no}, 'bench', {cust}, {sku}, 1, 8000, '{recipient}', 'PAID', {digest},"
            " 'PENDING', NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0,"
            f" {ago('microsecond', g + ' * 1000')}, {ago('second', '3600')}, NULL,"
            f" {ago('second', '3600')}, {ago('second', '3600')}, NULL, NULL, NULL"
        )
    cur = conn.cursor()
    try:
        cur.execute(f"INSERT INTO orders ({cols}) SELECT {values} FROM {src}", {"t0": naive})
        if final:
            cur.execute(
                "INSERT INTO order_events (order_id, at, kind, from_status, to_status, reason,"
                " outcome, attempt, http_status, vendor_code, latency_ms, detail, actor)"
                " SELECT id, updated_at, CASE WHEN status = 'FAILED' THEN 'failed'"
                " ELSE 'delivered' END, 'ORDERED', status, reason, vendor_status, queries, 200,"
                " '0000', 12.5, NULL, 'bench' FROM orders"
                f" WHERE order_no LIKE '{prefix}%%'",
            )
    finally:
        cur.close()


def analyze(conn: Any, dialect: str) -> None:
    cur = conn.cursor()
    try:
        if dialect == "postgresql":
            cur.execute("VACUUM ANALYZE orders")
            cur.execute("VACUUM ANALYZE order_events")
        else:
            cur.execute("ANALYZE TABLE orders, order_events")
            cur.fetchall()
    finally:
        cur.close()


def explain_claim(conn: Any, dialect: str, now: datetime) -> list[str]:
    """EXPLAIN ANALYZE of the store's own claim query, in a transaction rolled back."""
    from orderwatch.store.hot import HotPath

    hot = HotPath(dialect)
    naive = now.astimezone(UTC).replace(tzinfo=None)
    params = {"now": naive, "real_now": naive, "limit": BATCH}
    cur = conn.cursor()
    try:
        if dialect == "postgresql":
            with conn.transaction(force_rollback=True):
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + hot.claim_select, params)
                return [r[0] for r in cur.fetchall()]
        cur.execute("BEGIN")
        cur.execute("ANALYZE FORMAT=JSON " + hot.claim_select, params)
        lines = str(cur.fetchone()[0]).splitlines()
        cur.execute("ROLLBACK")
        return lines
    finally:
        cur.close()


def time_claim_select(conn: Any, dialect: str, runs: int, now: datetime) -> dict[str, Any]:
    """The claim's SELECT … FOR UPDATE SKIP LOCKED alone, ``runs`` times, each in a
    transaction rolled back: the query's own cost, without commit, fsync or Python."""
    from orderwatch.store.hot import HotPath

    hot = HotPath(dialect)
    naive = now.astimezone(UTC).replace(tzinfo=None)
    params = {"now": naive, "real_now": naive, "limit": BATCH}
    ms: list[float] = []
    cur = conn.cursor()
    try:
        for _ in range(runs):
            cur.execute("BEGIN")
            t = time.perf_counter()
            cur.execute(hot.claim_select, params)
            rows = cur.fetchall()
            ms.append((time.perf_counter() - t) * 1000)
            cur.execute("ROLLBACK")
            assert len(rows) == BATCH, f"{len(rows)} due orders, expected {BATCH}"
    finally:
        cur.close()
    return {
        "runs": runs,
        "ms_p50": pipeline.percentile(ms, 50),
        "ms_p99": pipeline.percentile(ms, 99),
    }


def trace_check(url: str, now: datetime, workdir: Path) -> dict[str, Any]:
    """PostgreSQL: check the Census's round-trip count against a libpq trace.

    A claim, a next-due look-up, a SENT commit and a write-back run through the store with
    every pool connection traced (``PGconn.trace``); a round trip is each turn from the
    client's messages to the server's in the trace. Both counts skip the connection's
    set-up (the warm-up call before the mark).
    """
    from sqlalchemy import event

    from orderwatch.lifecycle import Event, Transition
    from orderwatch.store.base import Write
    from orderwatch.store.sql import SqlStore

    path = workdir / "libpq-trace.txt"

    async def run() -> dict[str, Any]:
        store = SqlStore(url)
        census = Census(store)
        with path.open("w") as trace:

            @event.listens_for(store.engine, "connect")
            def traced(dbapi_conn: Any, record: Any) -> None:
                dbapi_conn.pgconn.trace(trace.fileno())

            try:
                await store.next_due_at(now=now, real_now=now)  # connect, set up
                mark = datetime.now()  # the trace writes local times
                census.reset()
                got = await store.claim_due(
                    now=now, real_now=now, limit=BATCH, worker_id="trace", lease=60
                )
                await store.next_due_at(now=now, real_now=now)
                ev = (Event(kind="query", at=now),)
                sent = [Write(Transition(o, ev), o.lease_token, release=False) for o in got[:10]]
                await store.apply(sent)
                await store.apply([Write(Transition(o, ev), o.lease_token) for o in got])
                counted = census.snapshot()
            finally:
                await store.close()
        turns, last = 0, ""
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[1] not in ("F", "B"):
                continue
            if datetime.fromisoformat(parts[0]) < mark:
                continue
            if parts[1] == "B" and last == "F":
                turns += 1
            last = parts[1]
        total = sum(sum(ops.values()) for ops in counted["round_trips"].values())
        return {
            "census": total,
            "libpq_trace": turns,
            "match": total == turns,
            "by_call": counted["round_trips"],
        }

    return asyncio.run(run())


def time_claims(url: str, dialect: str, claims: int, now: datetime) -> dict[str, Any]:
    """``claims`` claims of BATCH due orders through the store's own ``claim_due``; after
    each, untimed, the claimed orders move 30 days out and lose their lease (as a
    write-back would do), so every claim finds fresh due orders."""
    from orderwatch.store.sql import SqlStore

    async def run() -> dict[str, Any]:
        store = SqlStore(url)
        ms: list[float] = []
        sizes: list[int] = []
        try:
            await store.claim_due(  # warm up the pool
                now=now - timedelta(days=3650), real_now=now, limit=1, worker_id="x", lease=60
            )
            for _ in range(claims):
                t = time.perf_counter()
                got = await store.claim_due(
                    now=now, real_now=now, limit=BATCH, worker_id="scale-flat", lease=60
                )
                ms.append((time.perf_counter() - t) * 1000)
                sizes.append(len(got))
                ids = ",".join(str(o.id) for o in got)
                if ids:
                    later = _sql(dialect, "interval '30 days'", "INTERVAL 30 DAY")
                    await store.execute(
                        lambda c, ids=ids, later=later: c.exec_driver_sql(
                            f"UPDATE orders SET next_run_at = next_run_at + {later},"
                            " locked_by = NULL, locked_until = NULL, lease_token = NULL"
                            f" WHERE id IN ({ids})"
                        )
                    )
        finally:
            await store.close()
        return {
            "claims": claims,
            "claimed_min": min(sizes, default=0),
            "claimed_max": max(sizes, default=0),
            "ms_p50": pipeline.percentile(ms, 50),
            "ms_p99": pipeline.percentile(ms, 99),
            "ms_mean": sum(ms) / len(ms) if ms else 0.0,
            "ms": [round(v, 3) for v in ms],
        }

    return asyncio.run(run())


def reset_due(conn: Any, dialect: str, due: int, now: datetime) -> None:
    """Make the ``due`` PENDING orders (ids 1..due) due again, one a millisecond, no lease."""
    naive = now.astimezone(UTC).replace(tzinfo=None)
    back = _sql(
        dialect,
        "%(t0)s - (id * 1000) * interval '1 microsecond'",
        "%(t0)s - INTERVAL (id * 1000) MICROSECOND",
    )
    cur = conn.cursor()
    try:
        cur.execute(
            f"UPDATE orders SET next_run_at = {back}, locked_by = NULL, locked_until = NULL,"
            " lease_token = NULL WHERE id <= %(due)s",
            {"t0": naive, "due": due},
        )
    finally:
        cur.close()
    analyze(conn, dialect)


def measure_claims(
    url: str, dialect: str, opts: argparse.Namespace, now: datetime
) -> dict[str, Any]:
    """EXPLAIN, the claim SELECT alone, then ``--flat-rounds`` rounds of claims (each on
    freshly reset due orders), pooled."""
    due = opts.flat_claims * BATCH
    out: dict[str, Any] = {}
    with driver_connection(url) as conn:
        reset_due(conn, dialect, due, now)
        out["explain"] = explain_claim(conn, dialect, now)
        out["plan_ms"] = plan_ms(out["explain"])
        out["select"] = time_claim_select(conn, dialect, opts.flat_claims, now)
    rounds = []
    for _ in range(opts.flat_rounds):
        with driver_connection(url) as conn:
            reset_due(conn, dialect, due, now)
        rounds.append(time_claims(url, dialect, opts.flat_claims, now))
    ms = [v for r in rounds for v in r.pop("ms")]
    out.update(
        rounds=rounds,
        claims=len(ms),
        ms_p50=pipeline.percentile(ms, 50),
        ms_p99=pipeline.percentile(ms, 99),
        round_p50s=[round(r["ms_p50"], 2) for r in rounds],
    )
    return out


def plan_ms(lines: list[str]) -> float | None:
    """The execution time an EXPLAIN ANALYZE reports (PostgreSQL text or MariaDB JSON)."""
    for ln in lines:
        if ln.strip().startswith("Execution Time:"):
            return float(ln.split(":")[1].split()[0])
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return float(json.loads("\n".join(lines))["query_block"]["r_total_time_ms"])
    return None


def claim_cost(dialect: str, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Claim cost with 0 and with ``--final`` final orders in the table."""
    name = f"ow_scale_flat_{dialect[:2]}"
    url = create_database(dialect, name)
    due = opts.flat_claims * BATCH
    now = datetime.now(UTC)
    out: dict[str, Any] = {"dialect": dialect, "due_orders": due, "batch": BATCH}
    try:
        with driver_connection(url) as conn:
            t = time.perf_counter()
            load_orders(conn, dialect, prefix="D", n=due, final=False, t0=now)
            out["load_due_s"] = time.perf_counter() - t
        if dialect == "postgresql":
            out["trace_check"] = tc = trace_check(url, now, workdir)
            say(f"round trips: census {tc['census']}, libpq trace {tc['libpq_trace']}")
        out["final_0"] = a = measure_claims(url, dialect, opts, now)
        say(f"claim cost {dialect}, 0 final: p50 {a['ms_p50']:.2f} ms, p99 {a['ms_p99']:.2f} ms")
        with driver_connection(url) as conn:
            t = time.perf_counter()
            load_orders(conn, dialect, prefix="F", n=opts.final, final=True, t0=now)
            out["load_final_s"] = time.perf_counter() - t
            t = time.perf_counter()
            analyze(conn, dialect)
            out["analyze_s"] = time.perf_counter() - t
            out["final_orders"] = int(
                scalar(conn, "SELECT count(*) FROM orders WHERE next_run_at IS NULL")
            )
            out["events"] = int(scalar(conn, "SELECT count(*) FROM order_events"))
        out["final_n"] = b = measure_claims(url, dialect, opts, now)
        say(
            f"claim cost {dialect}, {out['final_orders']:,} final (loaded in "
            f"{out['load_final_s']:.0f} s): p50 {b['ms_p50']:.2f} ms, p99 {b['ms_p99']:.2f} ms"
        )
        out["p50_ratio"] = b["ms_p50"] / a["ms_p50"] if a["ms_p50"] else 0.0
        out["p99_ratio"] = b["ms_p99"] / a["ms_p99"] if a["ms_p99"] else 0.0
        out["select_p50_ratio"] = (
            b["select"]["ms_p50"] / a["select"]["ms_p50"] if a["select"]["ms_p50"] else 0.0
        )
    finally:
        if not opts.keep:
            drop_database(dialect, name)
    return out


# --------------------------------------------------------------------------- the parent


def run_benchmark(opts: argparse.Namespace) -> dict[str, Any]:
    n, k, speed = opts.orders, opts.queries_per_order, opts.speed
    ending = pipeline.ENDINGS["max-polls"]
    polling = {**pipeline.POLLING, **ending["polling"], "max_polls": k}
    sim_settings = {**ending["sim"], **pipeline.SIM_COMMON}
    clock_start = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="orderwatch-scale-")
    workdir = Path(tmp.name)
    report: dict[str, Any] = {
        "timestamp": stamp,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "src_digest": pipeline.src_digest(),
        "orders": n,
        "queries_per_order": k,
        "speed": speed,
        "concurrency": opts.concurrency,
        "batch_size": BATCH,
        "final_orders": opts.final,
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
    }
    runs: list[dict[str, Any]] = []
    ceilings: list[dict[str, Any]] = []
    flat: dict[str, Any] = {}
    sim = pipeline.Simulator(speed=speed, clock_start=clock_start, settings=sim_settings)
    report["simulator_command"] = " ".join(sim.command)
    common = {
        "sim_url": sim.url,
        "speed": speed,
        "clock_start": clock_start,
        "concurrency": opts.concurrency,
        "polling": polling,
    }

    def ceiling(tag: str) -> None:
        r = pipeline.measured(
            sim,
            lambda: pipeline.child(
                "ceiling",
                {**common, "orders": n, "queries": n * k, "prefix": f"C{tag}-"},
                workdir,
                timeout=opts.timeout,
            ),
        )
        ceilings.append(r)
        say(f"ceiling {tag}: {r['calls']:,} calls at {r['calls_per_s']:,.0f}/s")

    try:
        say(f"simulator at {sim.url} (speed ×{speed:g})")
        if opts.configs:
            ceiling("before")
        for dialect, procs in opts.configs:
            runs.append(
                one_config(dialect, procs, opts=opts, common=common, sim=sim, workdir=workdir)
            )
        if opts.configs:
            ceiling("after")
        sim.stop()
        for dialect in opts.flat:
            flat[dialect] = claim_cost(dialect, opts, workdir)
    finally:
        sim.stop()
        tmp.cleanup()
    ceil = pipeline.combine(ceilings) if ceilings else {"calls_per_s": 0.0, "calls_per_s_each": []}
    for r in runs:
        r["ratio_to_ceiling"] = r["calls_per_s"] / ceil["calls_per_s"] if ceil["calls_per_s"] else 0
    report.update(runs=runs, ceilings=ceilings, ceiling=ceil, claim_cost=flat)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["floor"] = floor(runs)
    return report


def one_config(
    dialect: str,
    procs: int,
    *,
    opts: argparse.Namespace,
    common: dict[str, Any],
    sim: pipeline.Simulator,
    workdir: Path,
) -> dict[str, Any]:
    """One database × processes run on a fresh database (dropped after unless --keep)."""
    label = f"{dialect[:2]}{procs}"
    name = f"ow_scale_{label}"
    if dialect == "sqlite":
        url = f"sqlite:///{workdir / (label + '.db')}"
    else:
        url = create_database(dialect, name)
    try:
        r = run_workers(label, url, procs=procs, opts=opts, common=common, sim=sim, workdir=workdir)
    finally:
        if dialect != "sqlite" and not opts.keep:
            drop_database(dialect, name)
    r["dialect"] = dialect
    say(
        f"{dialect} × {procs}: {r['calls']:,} calls in {r['wall_s']:.1f} s "
        f"({r['calls_per_s']:,.0f}/s), claim p99 {r['claim_ms_p99']:.1f} ms, "
        f"claim+write-back {r['claim_write_back_rt_per_call']:.3f} round trips/call"
    )
    return r


def floor(runs: list[dict[str, Any]]) -> dict[str, Any]:
    pg1 = [r for r in runs if r["dialect"] == "postgresql"]
    return {
        "claim_write_back_rt_per_call_max": FLOOR_CLAIM_WRITEBACK_RT,
        "postgresql": {r["processes"]: round(r["claim_write_back_rt_per_call"], 4) for r in pg1},
        "met": None
        if not pg1
        else all(r["claim_write_back_rt_per_call"] <= FLOOR_CLAIM_WRITEBACK_RT for r in pg1),
    }


def print_table(r: dict[str, Any]) -> None:
    if r["runs"]:
        print_runs(r)
    print_claim_cost(r)


def print_runs(r: dict[str, Any]) -> None:
    c = r["ceiling"]
    rows: list[tuple[str, ...]] = [
        (
            "database × processes",
            "calls/s",
            "÷ ceiling",
            "claim p50/p99 ms",
            "claim tx p50/p99 ms",
            "orders/claim",
            "results/write-back",
            "RT/call claim",
            "write-back",
            "claim+wb",
            "SENT",
            "other",
            "tx/call c+wb",
            "placed once",
        )
    ]
    for x in r["runs"]:
        pc = x["round_trips_per_call"]
        rows.append(
            (
                f"{x['dialect']} × {x['processes']}",
                f"{x['calls_per_s']:,.0f}",
                f"{x['ratio_to_ceiling']:.0%}",
                f"{x['claim_ms_p50']:.1f} / {x['claim_ms_p99']:.1f}",
                f"{x['claim_tx_ms_p50']:.1f} / {x['claim_tx_ms_p99']:.1f}",
                f"{x['orders_per_claim']:.0f}",
                f"{x['results_per_write_back']:.1f}",
                f"{pc['claim']:.3f}" if x["dialect"] != "sqlite" else "n/a",
                f"{pc['write-back']:.3f}" if x["dialect"] != "sqlite" else "n/a",
                f"{x['claim_write_back_rt_per_call']:.3f}" if x["dialect"] != "sqlite" else "n/a",
                f"{pc['sent']:.3f}" if x["dialect"] != "sqlite" else "n/a",
                f"{pc['other']:.3f}" if x["dialect"] != "sqlite" else "n/a",
                f"{x['claim_write_back_tx_per_call']:.3f}",
                "ok" if x["placed_once"] and not x["timed_out"] else "FAIL",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    print(
        f"orderwatch scale-out — {r['orders']:,} orders a run, {r['queries_per_order']} queries "
        f"each, speed ×{r['speed']:g}, concurrency {r['concurrency']} and batch {r['batch_size']}"
        f" per process, {r['machine']['cpus']} CPUs, load "
        f"{r['machine']['loadavg_start'][0]:.1f} → {r['machine']['loadavg_end'][0]:.1f}"
    )
    print(
        f"ceiling (bare asyncio, no database): {c['calls_per_s']:,.0f} calls/s "
        f"(runs {' / '.join(f'{v:,.0f}' for v in c['calls_per_s_each'])})"
    )
    for row in rows:
        print("  ".join(v.rjust(widths[i]) if i else v.ljust(widths[i]) for i, v in enumerate(row)))
    f = r["floor"]
    print(
        f"\nfloor: PostgreSQL claim + write-back ≤ {FLOOR_CLAIM_WRITEBACK_RT} round trips per "
        f"vendor call at batch {BATCH}: "
        + {True: "met", False: "NOT met", None: "not measured"}[f["met"]]
        + f" {f['postgresql']}"
    )
    for x in r["runs"]:
        if x["dialect"] == "sqlite":
            continue
        detail = "; ".join(
            f"{cat}: " + ", ".join(f"{op} {k}" for op, k in sorted(ops.items()))
            for cat, ops in sorted(x["round_trips"].items())
        )
        print(f"  {x['dialect']} × {x['processes']} round trips — {detail}")
        if x["dialect"] == "mysql":
            print(
                f"    (PyMySQL commands at the wire: {x['driver_commands']:,}, "
                f"counted above: {x['round_trips_counted']:,})"
            )


def print_claim_cost(r: dict[str, Any]) -> None:
    for dialect, fl in r["claim_cost"].items():
        a, b = fl["final_0"], fl["final_n"]
        print(
            f"\nclaim cost on {dialect}, {a['claims']} claims of {BATCH} in "
            f"{len(a['rounds'])} rounds (0 final → {fl['final_orders']:,} final + "
            f"{fl['events']:,} events):"
        )
        print(
            f"  store.claim_due (one claim transaction) p50 {a['ms_p50']:.2f} → "
            f"{b['ms_p50']:.2f} ms, p99 {a['ms_p99']:.2f} → {b['ms_p99']:.2f} ms "
            f"(p50 by round {a['round_p50s']} → {b['round_p50s']})"
        )
        sa_, sb = a["select"], b["select"]
        print(
            f"  claim SELECT alone                      p50 {sa_['ms_p50']:.3f} → "
            f"{sb['ms_p50']:.3f} ms, p99 {sa_['ms_p99']:.3f} → {sb['ms_p99']:.3f} ms"
        )
        print(f"  EXPLAIN ANALYZE execution               {a['plan_ms']} → {b['plan_ms']} ms")
        keys = ("Index Scan", "Seq Scan on orders", '"access_type"', '"key"', '"r_rows"')
        plan = [ln.strip() for ln in b["explain"] if any(k in ln for k in keys)]
        print("  plan with final orders: " + " | ".join(plan[:4]))
        tc = fl.get("trace_check")
        if tc:
            print(
                f"  round-trip count check: census {tc['census']}, libpq trace {tc['libpq_trace']}"
                f" ({'match' if tc['match'] else 'MISMATCH'})"
            )


def parse_configs(text: str) -> list[tuple[str, int]]:
    names = {"sqlite": "sqlite", "pg": "postgresql", "postgresql": "postgresql"}
    names |= {"my": "mysql", "mysql": "mysql", "mariadb": "mysql"}
    out: list[tuple[str, int]] = []
    if text.strip() == "none":
        return out
    for item in text.split(","):
        db, _, procs = item.strip().partition(":")
        if db not in names or not procs.isdigit() or int(procs) < 1:
            raise argparse.ArgumentTypeError(
                f"--configs: {item!r} is not DATABASE:PROCESSES (sqlite|pg|mariadb)"
            )
        out.append((names[db], int(procs)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~3 min: 1000 orders, 100k final")
    p.add_argument("--orders", type=int, default=None, help="orders per run (5000)")
    p.add_argument("--queries-per-order", type=int, default=5, help="polls per order (5)")
    p.add_argument(
        "--speed",
        type=float,
        default=20000.0,
        help="schedule speed-up (20000: the schedule never limits a run)",
    )
    p.add_argument("--concurrency", type=int, default=64, help="per worker process (64)")
    p.add_argument(
        "--configs",
        type=parse_configs,
        default=parse_configs("sqlite:1,pg:1,pg:2,pg:4,mariadb:1,mariadb:2"),
        help="runs as DATABASE:PROCESSES,... or none\n"
        "(default sqlite:1,pg:1,pg:2,pg:4,mariadb:1,mariadb:2)",
    )
    p.add_argument("--final", type=int, default=None, help="final orders (1000000)")
    p.add_argument("--flat-claims", type=int, default=200, help="claims timed per round (200)")
    p.add_argument("--flat-rounds", type=int, default=2, help="rounds of claims per case (2)")
    p.add_argument(
        "--flat",
        default="pg,mariadb",
        help="databases of the claim-cost test: pg,mariadb (default), or none",
    )
    p.add_argument("--keep", action="store_true", help="keep the ow_scale_* databases")
    p.add_argument("--timeout", type=float, default=1200.0, help="per run, seconds")
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--role-args", help=argparse.SUPPRESS)
    p.add_argument("--role-out", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.role:
        run_role(opts.role, opts.role_args, opts.role_out)
        return
    if opts.orders is None:
        opts.orders = 1000 if opts.quick else 5000
    if opts.final is None:
        opts.final = 100_000 if opts.quick else 1_000_000
    if opts.quick:
        opts.flat_claims = min(opts.flat_claims, 100)
    flat = {"pg": "postgresql", "postgresql": "postgresql", "mariadb": "mysql", "my": "mysql"}
    opts.flat = [flat[x] for x in opts.flat.split(",") if x and x != "none"]
    report = run_benchmark(opts)
    print_table(report)
    out = RESULTS / f"scale-{report['timestamp']}.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwritten: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
