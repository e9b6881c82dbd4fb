"""orderwatch side by side with Celery and procrastinate on the same workload (issue 10).

One command runs every system, each against a fresh ``orderwatch simulator`` process with
the same schedule (compressed), the same concurrency (64 requests in flight in total) and the
same vendor latency, and prints a table, writes JSON to bench/results/ and a PNG chart.

    .venv/bin/python bench/compare/run.py --quick          # development run
    .venv/bin/python bench/compare/run.py                  # the README figures
    .venv/bin/python bench/compare/run.py --systems ceiling ow-sqlite celery

The peers (Celery, procrastinate, matplotlib for the chart) live in their own venv,
bench/compare/.venv-peers, created or updated from requirements-peers.txt by this script.
See bench/compare/README.md for the method and each system's set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import pipeline as pl  # noqa: E402  (bench/pipeline.py: simulator, roles, /proc helpers)

PEERS_VENV = HERE / ".venv-peers"
PEERS_PY = PEERS_VENV / "bin" / "python"
PEERS_REQ = HERE / "requirements-peers.txt"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BASE = "postgresql://postgres@127.0.0.1:5432/"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 13
SYSTEMS = ["ceiling", "ow-sqlite", "ow-pg1", "ow-pg2", "ow-pg4", "celery", "procrastinate"]
KILL_SYSTEMS = ["ow-sqlite", "ow-pg2", "celery", "procrastinate"]
MEMORY_SYSTEMS = ["ow-sqlite", "celery", "procrastinate"]
LEASE_S = 10  # orderwatch's claim lease (real seconds): how soon a dead worker's orders return
CELERY_VISIBILITY_S = 20  # Redis: how soon a dead worker's unacked tasks return
PROCR_STALLED_S = 5  # procrastinate: heartbeat age after which a worker's jobs are retried


def say(msg: str) -> None:
    pl.say(msg)


# --------------------------------------------------------------------------- peers' venv


def ensure_peers_venv() -> None:
    stamp = PEERS_VENV / ".installed-stamp"
    if stamp.exists() and stamp.stat().st_mtime >= PEERS_REQ.stat().st_mtime:
        return
    say(f"creating/updating {PEERS_VENV.relative_to(ROOT)} from {PEERS_REQ.name}")
    if not PEERS_PY.exists():
        subprocess.run(["python3", "-m", "venv", str(PEERS_VENV)], check=True)
    pip = [str(PEERS_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(PEERS_REQ)], check=True)
    stamp.touch()


def procr(*args: str) -> list[str]:
    """The command line running procrastinate_peer.main(args) (not as __main__)."""
    return ["-c", f"import procrastinate_peer as p; p.main({list(args)!r})"]


def peers(*args: str, cfg: dict[str, Any], capture: bool = False) -> str:
    proc = subprocess.run(
        [str(PEERS_PY), *args],
        cwd=HERE,
        env=peer_env(cfg),
        check=True,
        stdout=subprocess.PIPE if capture else None,
        text=True,
    )
    return proc.stdout or ""


def peer_env(cfg: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["BENCH_CFG"] = json.dumps(cfg)
    env["PYTHONPATH"] = str(HERE)
    return env


def check_peer_signing() -> None:
    """The peers' signing (peers_common.sign) must give orderwatch's signatures."""
    from orderwatch.vendors import signing

    sample = {
        "merchant_id": pl.MERCHANT,
        "order_no": "X1",
        "sku": "SKU-1",
        "quantity": 1,
        "points": 3000,
        "empty": "",
        "none": None,
        "flag": True,
        "recipient": {"name": "张三", "phone": "13800000000", "address": "上海市 1号"},
    }
    code = (
        "import json, sys; from peers_common import sign; "
        "print(sign(json.loads(sys.argv[1]), sys.argv[2]))"
    )
    theirs = peers("-c", code, json.dumps(sample), pl.SECRET, cfg={}, capture=True).strip()
    ours = signing.sign(sample, pl.SECRET)
    if theirs != ours:
        raise SystemExit(f"peers_common.sign differs from orderwatch's: {theirs} != {ours}")


# --------------------------------------------------------------------------- databases


def pg_recreate(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_BASE + name


def pg_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_count(dsn: str, sql: str) -> int:
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def pg_backend_pids(dbname: str) -> list[int]:
    """The server processes serving `dbname` (their CPU is the system's too)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if cmd.startswith("postgres:") and f" {dbname} " in cmd:
                pids.append(int(p.name))
    return pids


def pid_of(comm: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if (p / "comm").read_text().strip() == comm:
                    pids.append(int(p.name))
    return pids


def redis_cmd(*args: str) -> Any:
    """One command to the benchmark's Redis db (RESP over a socket; integer/status replies)."""
    with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=5) as s:
        out = b""
        for cmd in (("SELECT", str(REDIS_DB)), args):
            out += f"*{len(cmd)}\r\n".encode()
            for a in cmd:
                b = a.encode()
                out += b"$%d\r\n%s\r\n" % (len(b), b)
        s.sendall(out)
        data = b""
        while data.count(b"\r\n") < 2:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    reply = data.split(b"\r\n")[1]
    if reply.startswith(b":"):
        return int(reply[1:])
    if reply.startswith(b"-"):
        raise RuntimeError(reply.decode())
    return reply.decode()


# --------------------------------------------------------------------------- systems


class System:
    """One implementation of the workload: prepares its store, starts its workers, counts."""

    name = ""
    label = ""

    def __init__(self, procs: int, ctx: dict[str, Any]) -> None:
        self.procs, self.ctx = procs, ctx
        self.per_proc = max(1, ctx["concurrency"] // procs)
        self.workdir: Path = ctx["workdir"]

    def prepare(self, n: int, prefix: str, waiting: int = 0) -> dict[str, Any]:
        raise NotImplementedError

    def start(self, i: int) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def done(self) -> int:
        raise NotImplementedError

    def collect(self, outputs: list[Path]) -> dict[str, Any]:
        raise NotImplementedError

    def server_pids(self) -> list[int]:
        return []

    def cleanup(self) -> None:
        pass


class Orderwatch(System):
    def __init__(self, procs: int, ctx: dict[str, Any], *, backend: str) -> None:
        super().__init__(procs, ctx)
        self.backend = backend
        self.name = "ow-sqlite" if backend == "sqlite" else f"ow-pg{procs}"
        self.label = (
            "orderwatch SQLite, 1 process"
            if backend == "sqlite"
            else f"orderwatch PostgreSQL, {procs} process{'es' if procs > 1 else ''}"
        )
        self.dbname = "ow_bench_ow"
        self.db_path = self.workdir / f"{self.name}-{time.monotonic_ns()}.db"
        self.outputs: list[Path] = []

    @property
    def url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.db_path}"
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.dbname}"

    def prepare(self, n: int, prefix: str, waiting: int = 0) -> dict[str, Any]:
        if self.backend == "sqlite":
            self.db_path = self.workdir / f"{self.name}-{time.monotonic_ns()}.db"
        else:
            pg_recreate(self.dbname)
            conf = self.workdir / "orderwatch-pg.toml"
            conf.write_text(f'[database]\nurl = "{self.url}"\n')
            ow = Path(sys.executable).with_name("orderwatch")
            subprocess.run(
                [str(ow), "db", "upgrade", "-c", str(conf)], check=True, stdout=subprocess.DEVNULL
            )
        args = {**self.ctx["common"], "db_url": self.url, "orders": n + waiting, "prefix": prefix}
        if waiting:
            args["due"] = n  # pipeline's setup pushes every order after the first n a year out
        result: dict[str, Any] = pl.child("setup", args, self.workdir, timeout=3600)
        return result

    def start(self, i: int) -> subprocess.Popen[bytes]:
        out = self.workdir / f"{self.name}-w{i}-{time.monotonic_ns()}.json"
        self.outputs.append(out)
        args = {
            **self.ctx["common"],
            "db_url": self.url,
            "concurrency": self.per_proc,
            "worker_id": f"{self.name}-{i}",
        }
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "ow-worker"]
        cmd += ["--role-args", json.dumps(args), "--role-out", str(out)]
        return subprocess.Popen(cmd, stderr=open(self.workdir / f"{self.name}-{i}.err", "ab"))

    def done(self) -> int:
        sql = "SELECT count(*) FROM orders WHERE next_run_at IS NULL"
        if self.backend == "sqlite":
            import sqlite3

            try:
                with contextlib.closing(sqlite3.connect(self.db_path, timeout=5)) as conn:
                    return int(conn.execute(sql).fetchone()[0])
            except sqlite3.Error:
                return 0
        return pg_count(PG_BASE + self.dbname, sql)

    def collect(self, outputs: list[Path]) -> dict[str, Any]:
        late: list[float] = []
        for out in self.outputs:
            if out.exists():
                late.extend(json.loads(out.read_text())["late_ms"])
        self.outputs = []
        late.sort()
        sql = "SELECT reason, count(*) FROM orders WHERE next_run_at IS NULL GROUP BY reason"
        if self.backend == "sqlite":
            import sqlite3

            with contextlib.closing(sqlite3.connect(self.db_path)) as conn:
                by = {str(r): int(c) for r, c in conn.execute(sql)}
        else:
            import psycopg

            with psycopg.connect(PG_BASE + self.dbname) as conn:
                by = {str(r): int(c) for r, c in conn.execute(sql)}
        return {
            "final": sum(by.values()),
            "by_outcome": by,
            "polls": len(late),
            "poll_lateness_p50_ms": pl.percentile(late, 50),
            "poll_lateness_p99_ms": pl.percentile(late, 99),
            "poll_lateness_max_ms": late[-1] if late else 0.0,
        }

    def server_pids(self) -> list[int]:
        return [] if self.backend == "sqlite" else pg_backend_pids(self.dbname)

    def cleanup(self) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    Path(f"{self.db_path}{suffix}").unlink()
        else:
            pg_drop(self.dbname)


class CeleryPeer(System):
    name = "celery"

    def __init__(self, procs: int, ctx: dict[str, Any]) -> None:
        super().__init__(procs, ctx)
        self.pool = ctx["celery_pool"]
        self.label = f"Celery {procs} × {self.pool} pool of {self.per_proc}, Redis"
        self.visibility = CELERY_VISIBILITY_S

    def cfg(self) -> dict[str, Any]:
        return {
            **self.ctx["peer_cfg"],
            "redis_url": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
            "process_concurrency": self.per_proc,
            "visibility_timeout": self.visibility,
        }

    def prepare(self, n: int, prefix: str, waiting: int = 0) -> dict[str, Any]:
        # Waiting tasks sit unacked in the worker until their ETA: give them a day.
        self.visibility = 86400 if waiting else CELERY_VISIBILITY_S
        redis_cmd("FLUSHDB")
        t = time.perf_counter()
        peers("celery_peer.py", "enqueue", str(n), prefix, str(waiting), cfg=self.cfg())
        return {"enqueue_s": time.perf_counter() - t}

    def start(self, i: int) -> subprocess.Popen[bytes]:
        cmd = [str(PEERS_PY), "-m", "celery", "-A", "celery_peer", "worker", "-P", self.pool]
        cmd += ["-c", str(self.per_proc), "-n", f"w{i}-{time.monotonic_ns()}@bench"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
        return subprocess.Popen(
            cmd,
            cwd=HERE,
            env=peer_env(self.cfg()),
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"celery-{i}.err", "ab"),
        )

    def done(self) -> int:
        return int(redis_cmd("HLEN", "owbench:final"))

    def collect(self, outputs: list[Path]) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(
            peers("celery_peer.py", "collect", cfg=self.cfg(), capture=True)
        )
        return result

    def server_pids(self) -> list[int]:
        return pid_of("redis-server")

    def cleanup(self) -> None:
        redis_cmd("FLUSHDB")


class ProcrastinatePeer(System):
    name = "procrastinate"
    dbname = "ow_bench_procrastinate"

    def __init__(self, procs: int, ctx: dict[str, Any]) -> None:
        super().__init__(procs, ctx)
        self.label = f"procrastinate {procs} × async worker of {self.per_proc}, PostgreSQL"

    def cfg(self) -> dict[str, Any]:
        return {
            **self.ctx["peer_cfg"],
            "pg_dsn": PG_BASE + self.dbname,
            "process_concurrency": self.per_proc,
            "fetch_interval": self.ctx["procrastinate_poll"],
            "stalled_after": PROCR_STALLED_S,
        }

    def prepare(self, n: int, prefix: str, waiting: int = 0) -> dict[str, Any]:
        pg_recreate(self.dbname)
        peers(*procr("setup"), cfg=self.cfg())
        t = time.perf_counter()
        peers(*procr("enqueue", str(n), prefix, str(waiting)), cfg=self.cfg())
        return {"enqueue_s": time.perf_counter() - t}

    def start(self, i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(PEERS_PY), *procr("worker")],
            cwd=HERE,
            env=peer_env(self.cfg()),
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / f"procrastinate-{i}.err", "ab"),
        )

    def done(self) -> int:
        return pg_count(PG_BASE + self.dbname, "SELECT count(*) FROM bench_final")

    def collect(self, outputs: list[Path]) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(peers(*procr("collect"), cfg=self.cfg(), capture=True))
        return result

    def server_pids(self) -> list[int]:
        return pg_backend_pids(self.dbname)

    def cleanup(self) -> None:
        pg_drop(self.dbname)


def make_system(name: str, ctx: dict[str, Any], procs: int | None = None) -> System:
    if name == "ow-sqlite":
        return Orderwatch(1, ctx, backend="sqlite")
    if name.startswith("ow-pg"):
        return Orderwatch(procs or int(name[5:]), ctx, backend="pg")
    if name == "celery":
        return CeleryPeer(procs or ctx["peer_procs"], ctx)
    if name == "procrastinate":
        return ProcrastinatePeer(procs or ctx["peer_procs"], ctx)
    raise ValueError(f"unknown system {name!r}; expected one of {', '.join(SYSTEMS)}")


# --------------------------------------------------------------------------- measuring


def cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        v = pl.proc_cpu_seconds(pid)
        if not math.isnan(v):  # still there
            out[pid] = v
    return out


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def drive(  # noqa: PLR0915
    system: System,
    sim: pl.Simulator,
    n: int,
    *,
    expected_calls: int,
    timeout: float,
    kill_at: float | None = None,
    stall_s: float = 60.0,
) -> dict[str, Any]:
    """Start the workers, wait until `n` orders are final; time, CPU and RSS on the way.

    The clock starts at the first vendor call the simulator sees (start-up and imports are
    left out) and stops when the store holds `n` final states. With `kill_at`, one worker is
    SIGKILLed when that fraction of the expected calls was made and another one started;
    the run then ends at `n` final or after `stall_s` without progress (no vendor call and
    no new final state).
    """
    base = sim.stats()
    base_calls = base["place_requests"] + base["queries"]
    procs = [system.start(i) for i in range(system.procs)]
    t0 = cpu0 = None
    kill: dict[str, Any] = {}
    done = last_done = last_calls = 0
    last_progress = time.perf_counter()
    deadline = time.perf_counter() + timeout
    last_count = 0.0
    try:
        while True:
            time.sleep(0.05)
            now = time.perf_counter()
            st = sim.stats()
            calls = st["place_requests"] + st["queries"] - base_calls
            if t0 is None and calls > 0:
                t0 = now
                cpu0 = cpu_of([p.pid for p in procs] + system.server_pids())
            if kill_at is not None and not kill and calls >= kill_at * expected_calls:
                victim = procs[0]
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                kill = {
                    "at_calls": calls,
                    "final_at_kill": system.done(),
                    "t": now - (t0 or now),
                }
                procs[0] = system.start(system.procs)  # the replacement
                say(f"  {system.name}: SIGKILL pid {victim.pid} at {calls:,} calls, restarted")
            if calls != last_calls:
                last_calls, last_progress = calls, now
            if now - last_count >= 0.25:
                last_count = now
                done = system.done()
                if done != last_done:
                    last_done, last_progress = done, now
            if done >= n or now > deadline or now - last_progress > stall_s:
                t1 = now
                pids = [p.pid for p in procs] + system.server_pids()
                cpu1 = cpu_of(pids)
                rss = {p.pid: pl.proc_rss_mb(p.pid) for p in procs}
                end = sim.stats()
                break
    finally:
        stop(procs)
    wall = t1 - (t0 or t1)
    worker_pids = {p.pid for p in procs}
    cpu0 = cpu0 or {}
    workers_cpu = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items() if pid in worker_pids)
    server_cpu = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items() if pid not in worker_pids)
    places = end["place_requests"] - base["place_requests"]
    queries = end["queries"] - base["queries"]
    calls = places + queries
    result = {
        "orders": n,
        "final": done,
        "timed_out": done < n,
        "wall_s": wall,
        "places": places,
        "queries": queries,
        "calls": calls,
        "orders_per_s": done / wall if wall else 0.0,
        "calls_per_s": calls / wall if wall else 0.0,
        "workers_cpu_s": workers_cpu,
        "server_cpu_s": server_cpu,
        "cpu_per_1k_calls_s": (workers_cpu + server_cpu) / calls * 1000 if calls else 0.0,
        "workers_cpu_per_1k_calls_s": workers_cpu / calls * 1000 if calls else 0.0,
        "peak_rss_mb_max": max(rss.values(), default=0.0),
        "peak_rss_mb_sum": sum(rss.values()),
        "duplicated_places": end["duplicates"] - base["duplicates"],
        "max_place_requests": end["max_place_requests"],
        "simulator_cpu_s": None,
    }
    if kill:
        result["kill"] = kill
    return result


# --------------------------------------------------------------------------- phases


def fresh_simulator(opts: argparse.Namespace) -> tuple[pl.Simulator, dict[str, Any]]:
    clock_start = time.time()
    settings = {**pl.ENDINGS["max-polls"]["sim"], **pl.SIM_COMMON, "latency": opts.latency}
    sim = pl.Simulator(speed=opts.speed, clock_start=clock_start, settings=settings)
    common = {
        "sim_url": sim.url,
        "speed": opts.speed,
        "clock_start": clock_start,
        "concurrency": opts.concurrency,
        "polling": opts.polling,
        "lease": f"{LEASE_S}s",
    }
    return sim, common


def context(opts: argparse.Namespace, workdir: Path, sim_common: dict[str, Any]) -> dict[str, Any]:
    p = opts.polling
    return {
        "workdir": workdir,
        "concurrency": opts.concurrency,
        "common": sim_common,
        "peer_procs": opts.peer_procs,
        "procrastinate_poll": opts.procrastinate_poll,
        "celery_pool": opts.celery_pool,
        "peer_cfg": {
            "sim_url": sim_common["sim_url"],
            "secret": pl.SECRET,
            "merchant": pl.MERCHANT,
            "speed": opts.speed,
            "max_polls": opts.queries_per_order,
            "polling": {
                "initial_delay_s": 600.0,
                "initial_interval_s": 300.0,
                "factor": float(p["factor"]),
                "max_interval_s": 6 * 3600.0,
                "jitter": 0.1,
            },
        },
    }


def run_ceiling(opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sim, _common = fresh_simulator(opts)
    try:
        n = opts.orders
        args = {
            "sim_url": sim.url,
            "concurrency": opts.concurrency,
            "orders": n,
            "queries": n * opts.queries_per_order,
            "prefix": "C",
        }
        r = pl.measured(sim, lambda: pl.child("ceiling", args, workdir, timeout=opts.timeout))
    finally:
        sim.stop()
    say(f"ceiling: {r['calls']:,} calls at {r['calls_per_s']:,.0f}/s, {r['cpu_s']:.1f} CPU s")
    return {
        "system": "ceiling",
        "label": "ceiling: bare asyncio + aiohttp, no database",
        "procs": 1,
        "orders": n,
        "final": n,
        "timed_out": False,
        "wall_s": r["wall_s"],
        "places": r["places"],
        "queries": r["queries"],
        "calls": r["calls"],
        "orders_per_s": n / r["wall_s"],
        "calls_per_s": r["calls_per_s"],
        "workers_cpu_s": r["cpu_s"],
        "server_cpu_s": 0.0,
        "cpu_per_1k_calls_s": r["cpu_per_call_us"] / 1000,
        "workers_cpu_per_1k_calls_s": r["cpu_per_call_us"] / 1000,
        "peak_rss_mb_max": r["peak_rss_mb"],
        "peak_rss_mb_sum": r["peak_rss_mb"],
        "duplicated_places": r["simulator"]["duplicates"],
        "errors": r["errors"],
        "poll_lateness_p50_ms": None,
        "poll_lateness_p99_ms": None,
        "queries_per_order": r["queries"] / n,
    }


def run_throughput(name: str, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sim, common = fresh_simulator(opts)
    system = make_system(name, context(opts, workdir, common))
    n = opts.orders
    try:
        setup = system.prepare(n, f"T{name}-")
        r = drive(
            system,
            sim,
            n,
            expected_calls=n * (1 + opts.queries_per_order),
            timeout=opts.timeout,
        )
        r.update(system.collect([]))
        r["setup"] = setup
    finally:
        sim.stop()
        system.cleanup()
    r.update(system=name, label=system.label, procs=system.procs, per_proc=system.per_proc)
    r["queries_per_order"] = r["queries"] / max(1, r["places"])
    say(
        f"{name}: {r['final']:,}/{n:,} final in {r['wall_s']:.1f} s, "
        f"{r['calls_per_s']:,.0f} calls/s, {r['cpu_per_1k_calls_s']:.2f} CPU s / 1k calls, "
        f"lateness p99 {r['poll_lateness_p99_ms']:,.0f} ms"
    )
    return r


def run_kill(name: str, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sim, common = fresh_simulator(opts)
    system = make_system(name, context(opts, workdir, common))
    n = opts.kill_orders
    try:
        system.prepare(n, f"K{name}-")
        r = drive(
            system,
            sim,
            n,
            expected_calls=n * (1 + opts.queries_per_order),
            timeout=opts.timeout,
            kill_at=0.4,
            stall_s=opts.stall,
        )
        r.update(system.collect([]))
    finally:
        sim.stop()
        system.cleanup()
    k = r.get("kill", {})
    in_flight = n - k.get("final_at_kill", 0)
    out = {
        "system": name,
        "label": system.label,
        "orders": n,
        "not_final_at_kill": in_flight,
        "final_at_end": r["final"],
        "lost": n - r["final"],
        "recovered": in_flight - (n - r["final"]),
        "duplicated_places": r["duplicated_places"],
        "max_place_requests": r["max_place_requests"],
        "queries_per_order": r["queries"] / max(1, n),
        "wall_s": r["wall_s"],
        "killed_at_s": k.get("t"),
        "by_outcome": r.get("by_outcome"),
    }
    say(
        f"kill {name}: {in_flight:,} not final at the kill; at the end {out['lost']:,} lost, "
        f"{out['duplicated_places']:,} placed twice, {out['recovered']:,} recovered"
    )
    return out


def run_memory(name: str, waiting: int, opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sim, common = fresh_simulator(opts)
    system = make_system(name, context(opts, workdir, common), procs=1)
    system.per_proc = opts.concurrency
    due = opts.memory_due
    try:
        t = time.perf_counter()
        system.prepare(due, f"M{name}{waiting}-", waiting=waiting)
        setup_s = time.perf_counter() - t
        r = drive(system, sim, due, expected_calls=due * 6, timeout=opts.timeout, stall_s=300)
    finally:
        sim.stop()
        system.cleanup()
    say(
        f"memory {name}: {due} due + {waiting:,} waiting (set up in {setup_s:.0f} s): "
        f"peak RSS {r['peak_rss_mb_max']:.1f} MB, {r['final']}/{due} final in {r['wall_s']:.1f} s"
    )
    return {
        "system": name,
        "waiting": waiting,
        "due": due,
        "setup_s": setup_s,
        "peak_rss_mb": r["peak_rss_mb_max"],
        "final": r["final"],
        "wall_s": r["wall_s"],
    }


# --------------------------------------------------------------------------- output


def pool_ceilings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ceiling's runs (first and last) as one row: total calls over total time."""
    runs = [r for r in rows if r["system"] == "ceiling"]
    others = [r for r in rows if r["system"] != "ceiling"]
    if len(runs) < 2:
        return rows
    wall = sum(r["wall_s"] for r in runs)
    calls = sum(r["calls"] for r in runs)
    cpu = sum(r["workers_cpu_s"] for r in runs)
    pooled = {
        **runs[0],
        "runs": len(runs),
        "calls_per_s_each": [round(r["calls_per_s"], 1) for r in runs],
        "wall_s": wall / len(runs),
        "calls_per_s": calls / wall,
        "orders_per_s": sum(r["orders"] for r in runs) / wall,
        "workers_cpu_s": cpu / len(runs),
        "cpu_per_1k_calls_s": cpu / calls * 1000,
        "workers_cpu_per_1k_calls_s": cpu / calls * 1000,
        "peak_rss_mb_max": max(r["peak_rss_mb_max"] for r in runs),
        "duplicated_places": sum(r["duplicated_places"] for r in runs),
    }
    return [pooled, *others]


def fmt(v: Any, spec: str = ",.0f") -> str:
    return "–" if v is None else format(v, spec)


def print_tables(report: dict[str, Any]) -> str:
    lines: list[str] = []
    rows = report["throughput"]
    ceiling = next((r for r in rows if r["system"] == "ceiling"), None)
    table = [
        (
            "system",
            "procs × in flight",
            "orders/s",
            "vendor calls/s",
            "of ceiling",
            "poll lateness p50 / p99 ms",
            "CPU s / 1k calls (workers + server)",
            "peak RSS MB / worker",
            "queries / order",
            "placed twice",
        )
    ]
    for r in rows:
        ratio = r["calls_per_s"] / ceiling["calls_per_s"] if ceiling else None
        table.append(
            (
                r["system"],
                "1 × 64" if r["system"] == "ceiling" else f"{r['procs']} × {r.get('per_proc')}",
                fmt(r["orders_per_s"]),
                fmt(r["calls_per_s"]),
                fmt(ratio, ".0%"),
                f"{fmt(r['poll_lateness_p50_ms'])} / {fmt(r['poll_lateness_p99_ms'])}",
                f"{r['cpu_per_1k_calls_s']:.2f} ({r['workers_cpu_per_1k_calls_s']:.2f} + "
                f"{r['cpu_per_1k_calls_s'] - r['workers_cpu_per_1k_calls_s']:.2f})",
                fmt(r["peak_rss_mb_max"], ".1f"),
                fmt(r["queries_per_order"], ".2f"),
                fmt(r["duplicated_places"]),
            )
        )
    lines += markdown(table)
    if report.get("memory"):
        sizes = sorted({m["waiting"] for m in report["memory"]})
        mt = [("peak worker RSS MB with N waiting", *(f"{s:,}" for s in sizes))]
        for name in dict.fromkeys(m["system"] for m in report["memory"]):
            by = {m["waiting"]: m for m in report["memory"] if m["system"] == name}
            mt.append(
                (
                    name,
                    *(
                        fmt(by[s]["peak_rss_mb"], ".1f")
                        + ("" if by[s]["final"] >= by[s]["due"] else " (unfinished)")
                        if s in by
                        else "–"
                        for s in sizes
                    ),
                )
            )
        lines += ["", *markdown(mt)]
    if report.get("kill"):
        kt = [
            (
                "SIGKILL one worker mid-run",
                "not final at kill",
                "lost",
                "placed twice",
                "recovered",
                "queries / order",
            )
        ]
        for k in report["kill"]:
            kt.append(
                (
                    k["system"],
                    fmt(k["not_final_at_kill"]),
                    fmt(k["lost"]),
                    fmt(k["duplicated_places"]),
                    fmt(k["recovered"]),
                    fmt(k["queries_per_order"], ".2f"),
                )
            )
        lines += ["", *markdown(kt)]
    text = "\n".join(lines)
    print()
    print(report["title"])
    print()
    print(text)
    return text


def markdown(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for j, r in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(r)) + " |")
        if j == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return out


# --------------------------------------------------------------------------- the orderwatch role


async def role_ow_worker(a: dict[str, Any]) -> dict[str, Any]:
    """One orderwatch Worker process until SIGTERM; its poll lateness samples (real ms)."""
    from orderwatch.clock import CompressedClock
    from orderwatch.process import tune_gc
    from orderwatch.service import Service
    from orderwatch.settings import load_settings

    clock = CompressedClock(speed=a["speed"], start=a["clock_start"])
    c = a["concurrency"]
    settings = load_settings(
        None,
        env={},
        overrides={
            "database": {"url": a["db_url"]},
            "polling": a["polling"],
            "worker": {"concurrency": c, "batch_size": 100, "lease": a["lease"]},
            "vendors": {
                pl.VENDOR: {
                    "base_url": a["sim_url"],
                    "merchant_id": pl.MERCHANT,
                    "secret": pl.SECRET,
                    "timeout": "30s",
                    "concurrency": c,
                }
            },
            "log": {"level": "info"},
        },
    )
    service = await Service.open(settings, clock=clock)
    tune_gc()  # as `orderwatch worker` does after start-up
    try:
        worker = service.worker(rng=random.Random(os.getpid()), worker_id=a["worker_id"])
        late = pl.watch_poll_lateness(worker, clock)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        await worker.run()
        await worker.vendors.close()
    finally:
        await service.close()
    ms = 1000.0 / a["speed"]
    s = worker.stats
    return {
        "late_ms": [v * ms for v in late.values],
        "places": s.places,
        "queries": s.queries,
        "finished": s.finished,
    }


def run_role(args_json: str, out: str) -> None:
    import orderwatch.log

    a = json.loads(args_json)
    log = Path(out).with_suffix(".log").open("w", encoding="utf-8")
    orderwatch.log.configure("info", "logfmt", stream=log)
    result = asyncio.run(role_ow_worker(a))
    Path(out).write_text(json.dumps(result))


# --------------------------------------------------------------------------- main


def main() -> None:  # noqa: PLR0915
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--orders", type=int, default=None, help="orders per system (5000; quick 1000)")
    p.add_argument("--quick", action="store_true", help="development run, about 3-4 minutes")
    p.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS, metavar="SYSTEM")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight in total")
    p.add_argument("--queries-per-order", type=int, default=5, help="polls until final (5)")
    p.add_argument("--speed", type=float, default=2000.0, help="schedule s per real s (2000)")
    p.add_argument("--latency", type=float, default=0.0, help="simulator latency, s (0)")
    p.add_argument("--peer-procs", type=int, default=2, help="Celery/procrastinate workers (2)")
    p.add_argument(
        "--procrastinate-poll",
        type=float,
        default=0.05,
        help="procrastinate fetch_job_polling_interval, s (0.05)",
    )
    p.add_argument(
        "--celery-pool", default="threads", choices=["threads", "gevent"], help="(threads)"
    )
    p.add_argument("--kill", nargs="*", default=None, metavar="SYSTEM", help="kill tests")
    p.add_argument("--kill-orders", type=int, default=None, help="orders (1000; quick 500)")
    p.add_argument("--stall", type=float, default=60.0, help="kill test: give up after s idle")
    p.add_argument(
        "--memory-sizes",
        type=int,
        nargs="*",
        default=None,
        help="waiting orders (10000 100000; quick 10000); 0 to skip",
    )
    p.add_argument("--memory-big", type=int, default=None, help="orderwatch only (1000000)")
    p.add_argument("--memory-due", type=int, default=500, help="due orders in memory runs")
    p.add_argument("--timeout", type=float, default=1200.0, help="per phase, s")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--role-args", help=argparse.SUPPRESS)
    p.add_argument("--role-out", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.role:
        run_role(opts.role_args, opts.role_out)
        return
    quick = opts.quick
    opts.orders = opts.orders or (1000 if quick else 5000)
    opts.kill_orders = opts.kill_orders or (500 if quick else 1000)
    if opts.kill is None:
        any_pg = any(s.startswith("ow-pg") for s in opts.systems)
        opts.kill = [s for s in KILL_SYSTEMS if s in opts.systems or (s == "ow-pg2" and any_pg)]
    if opts.memory_sizes is None:
        opts.memory_sizes = [10_000] if quick else [10_000, 100_000]
    opts.memory_sizes = [m for m in opts.memory_sizes if m > 0]
    if opts.memory_big is None:
        opts.memory_big = 0 if quick else 1_000_000
    polling = {**pl.POLLING, "max_polls": opts.queries_per_order}
    opts.polling = polling

    ensure_peers_venv()
    check_peer_signing()
    pl.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {
        "timestamp": stamp,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "src_digest": pl.src_digest(),
        "orders": opts.orders,
        "queries_per_order": opts.queries_per_order,
        "speed": opts.speed,
        "latency_s": opts.latency,
        "concurrency": opts.concurrency,
        "polling": polling,
        "peers": PEERS_REQ.read_text().split(),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "loadavg_start": os.getloadavg(),
        },
        "throughput": [],
        "memory": [],
        "kill": [],
    }
    tmp = tempfile.mkdtemp(prefix="orderwatch-compare-")
    say(f"work directory {tmp}")
    try:
        workdir = Path(tmp)
        phases: list[tuple[str, Callable[[], Any]]] = []
        for name in opts.systems:
            if name == "ceiling":
                phases.append(("throughput", lambda: run_ceiling(opts, workdir)))
            else:
                phases.append(("throughput", lambda name=name: run_throughput(name, opts, workdir)))
        if "ceiling" in opts.systems and len(opts.systems) > 1:
            # Once more after the others: the load of a shared machine comes and goes.
            phases.append(("throughput", lambda: run_ceiling(opts, workdir)))
        for name in opts.kill:
            phases.append(("kill", lambda name=name: run_kill(name, opts, workdir)))
        for name in [s for s in MEMORY_SYSTEMS if s in opts.systems]:
            for size in opts.memory_sizes:
                phases.append(
                    ("memory", lambda name=name, s=size: run_memory(name, s, opts, workdir))
                )
            if name == "ow-sqlite" and opts.memory_big:
                phases.append(
                    ("memory", lambda: run_memory("ow-sqlite", opts.memory_big, opts, workdir))
                )
        for kind, fn in phases:
            try:
                report[kind].append(fn())
            except Exception as exc:  # one system failing must not lose the others' figures
                say(f"{kind} phase failed: {exc!r}")
                report.setdefault("failures", []).append(f"{kind}: {exc!r}")
    finally:
        if not opts.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    report["throughput"] = pool_ceilings(report["throughput"])
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["title"] = (
        f"{opts.orders:,} orders × (1 place + {opts.queries_per_order} polls), "
        f"{opts.concurrency} in flight, speed ×{opts.speed:g}, vendor latency "
        f"{opts.latency * 1000:g} ms, {os.cpu_count()} CPUs ({report['machine']['cpu_model']}), "
        f"load {report['machine']['loadavg_start'][0]:.1f} → "
        f"{report['machine']['loadavg_end'][0]:.1f}"
    )
    report["table_markdown"] = print_tables(report)
    out = pl.RESULTS / f"compare-{stamp}.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwritten: {out.relative_to(ROOT)}")
    if not opts.no_chart:
        png = out.with_suffix(".png")
        subprocess.run([str(PEERS_PY), str(HERE / "chart.py"), str(out), str(png)], check=True)
        print(f"chart:   {png.relative_to(ROOT)}")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


if __name__ == "__main__":
    main()
