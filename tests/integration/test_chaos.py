"""Chaos on the shared databases: worker processes killed at random, connections dropped.

Everything here runs as separate processes, the way an operator runs orderwatch on many
hosts: the vendor simulator (``orderwatch simulator --port 0``), four ``orderwatch worker``
processes and one fresh PostgreSQL or MariaDB database (``tests.support.databases``). All
of them share one compressed clock (``--speed S --clock-start T``), so a few schedule-hours
of delivery and polling pass in about a minute, while leases (2 s) and vendor timeouts
(500 ms) stay in real time (DESIGN §9.5).

The simulator misbehaves on purpose: refusals, lost place-order answers (recorded by the
vendor or not), query hangs longer than the client's timeout, garbage bodies, HTTP 500,
bad signatures, forgotten orders, failed deliveries and a maintenance window.

Two kinds of chaos: ``test_workers_killed_at_random`` (SIGKILL of a random worker every
~2 s), and ``test_database_drops_every_connection`` (the server drops every connection to
the database every ~3 s), with two deterministic single-process tests that pin what the
latter found (one connection dropped inside one chosen transaction).

What is checked at the end, every order having been run to a final state (DESIGN §9):

* every order is final (with nothing left open, "final or scheduled in the future" holds);
* at most one place-order request per order_no, as the simulator counted them
  (``GET /_sim/stats``), and at most one ``sent`` event per order;
* no transition without its event: for each order the events, in order, form a chain
  (each event's ``from_status`` is the status the previous events left) that ends in the
  order's stored status;
* no final state without its outbox row (exactly one ``order.succeeded``/``order.failed``
  row matching the status);
* no order held by two live leases at once. A trigger installed on ``orders`` for the test
  records every claim (a new lease token with a holder) with the lease it replaced. A claim
  that replaced an unreleased lease must have happened after that lease had expired, by the
  claimer's own clock: ``old.locked_until < new.locked_until - lease``. This sees every
  claim, not just samples; the takeovers it counts must equal the ``takeover`` events and
  the orders' ``takeovers`` counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.support.databases import fresh_database
from tests.support.orders import new_order

from orderwatch.clock import CompressedClock
from orderwatch.statuses import Status
from orderwatch.store.sql import engine_url

pytestmark = pytest.mark.slow

ORDERWATCH = Path(sys.executable).parent / "orderwatch"
KINDS = ["postgresql", "mysql"]
SECRET = "chaos-secret"
MERCHANT = "M0001"
SIM_SEED = 26
LEASE = 2.0  # real seconds: a killed worker's orders are taken over this soon
WORKERS = 4
FINAL = ("SUCCEEDED", "FAILED")
FINAL_NOTE = {"SUCCEEDED": "order.succeeded", "FAILED": "order.failed"}

# Sizes: see the docstring of test_workers_killed_at_random for the measurements.
FULL_ORDERS = 5_000  # what issue 6 asks for; the default off CI
CI_ORDERS = 1_500  # the default under CI (CI set): keeps each chaos test under ~2 min
DROP_ORDERS = 1_000
SPEED = 300.0  # schedule seconds per real second

SIMULATOR = {
    "reject_rate": 0.02,
    "place_timeout_rate": 0.02,  # the answer to place-order is lost …
    "place_timeout_recorded": 0.5,  # … after the vendor recorded the order, or not
    "query_timeout_rate": 0.01,
    "garbage_rate": 0.02,
    "error_rate": 0.02,
    "bad_sign_rate": 0.01,
    "fail_rate": 0.05,
    "forget_rate": 0.01,
    "hang": 1.0,  # real seconds; the vendor timeout is 500 ms
    "delivery_min": 3600.0,  # delivered 1-3 schedule-hours after acceptance
    "delivery_max": 3 * 3600.0,
}
# 503 + Retry-After from 20 to 24 real seconds after the simulator starts (it starts
# before the import and the workers): well inside every run, at any speed.
MAINTENANCE_REAL = (15.0, 27.0)  # long enough to be met even on a loaded machine
MAINTENANCE_AFTER_IMPORT = (4.0, 16.0)  # the chaos run: counted from when workers start


def chaos_orders() -> int:
    raw = os.environ.get("ORDERWATCH_CHAOS_ORDERS")
    if raw:
        return int(raw)
    return CI_ORDERS if os.environ.get("CI") else FULL_ORDERS


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERWATCH_")}
    env["COLUMNS"] = "200"
    return env


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path.name}: missing)"
    return f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


def crash_summary(path: Path) -> str:
    """The orderwatch frames of the last traceback in a log, and the error it ended with."""
    text = path.read_text(errors="replace")
    last = text.rsplit("Traceback (most recent call last):", 1)[-1].splitlines()
    frames = [
        f"{line.strip()}  ({nxt.strip()})"
        for line, nxt in zip(last, [*last[1:], ""], strict=True)
        if "/src/orderwatch/" in line
    ]
    errors = [line for line in last if re.match(r"[\w.]+: ", line)]
    return f"--- {path.name} ---\n" + "\n".join([*frames, *errors[-1:]])


def utcnow() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------- processes


@dataclass
class Cluster:
    """The simulator and the worker processes of one test; ``close`` kills what is left."""

    tmp_path: Path
    config: Path
    speed: float
    clock_start: float
    simulator: subprocess.Popen[bytes] | None = None
    sim_url: str = ""
    sim_started: float = 0.0
    live: list[subprocess.Popen[bytes]] = field(default_factory=list)
    every: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)
    killed: int = 0
    died: list[str] = field(default_factory=list)  # exits nobody asked for, with log tails

    def clock_args(self) -> list[str]:
        return ["--speed", repr(self.speed), "--clock-start", repr(self.clock_start)]

    def schedule_now(self) -> datetime:
        """The compressed clock every process shares."""
        wall = time.time()
        start = self.clock_start
        return datetime.fromtimestamp(start + self.speed * (wall - start), UTC)

    def start_simulator(self, settings: dict[str, Any]) -> str:
        out = self.tmp_path / "simulator.out"
        args = [
            str(ORDERWATCH),
            "simulator",
            "--port",
            "0",
            "--seed",
            str(SIM_SEED),
            "--merchant-id",
            MERCHANT,
            "--secret",
            SECRET,
            *self.clock_args(),
        ]
        for name, value in settings.items():
            args += ["--set", f"{name}={json.dumps(value)}"]
        with out.open("wb") as stdout, (self.tmp_path / "simulator.log").open("wb") as stderr:
            self.simulator = subprocess.Popen(
                args, stdout=stdout, stderr=stderr, cwd=self.tmp_path, env=cli_env()
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"simulator listening on (\S+)", out.read_text(errors="replace"))
            if found:
                self.sim_url = found.group(1)
                self.sim_started = time.time()
                return self.sim_url
            if self.simulator.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail("the simulator did not start\n" + tail(self.tmp_path / "simulator.log"))

    def maintenance_from_now(self, start: float, end: float) -> None:
        """Move the simulator's maintenance window to ``start``-``end`` real seconds from
        now (its offsets count from the simulator's start, in schedule seconds), so that a
        slow import on a loaded machine cannot leave it in the past."""
        elapsed = time.time() - self.sim_started
        window = [(elapsed + start) * self.speed, (elapsed + end) * self.speed]
        request = urllib.request.Request(
            f"{self.sim_url}/_sim/config",
            data=json.dumps({"maintenance": [window]}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200

    def sim_stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.sim_url}/_sim/stats", timeout=10) as resp:
            stats: dict[str, Any] = json.loads(resp.read())
        return stats

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"worker{len(self.every) + 1:03d}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(ORDERWATCH), "worker", "-c", str(self.config), *self.clock_args()],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tmp_path,
                env=cli_env(),
            )
        self.live.append(proc)
        self.every.append(proc)
        self.logs[proc.pid] = log
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.live.remove(proc)
        self.killed += 1

    def reap(self) -> None:
        """Note (and forget) workers that exited without being asked to."""
        for proc in list(self.live):
            if proc.poll() is not None:
                self.live.remove(proc)
                self.died.append(
                    f"worker pid {proc.pid} exited with {proc.returncode}\n"
                    + crash_summary(self.logs[proc.pid])
                )

    def started(self, proc: subprocess.Popen[bytes]) -> bool:
        """Has the worker come up (and set its SIGTERM handler)?"""
        return b"event=worker_started" in self.logs[proc.pid].read_bytes()

    def wait_started(self, within: float = 60) -> None:
        """Until every live worker is up (or has exited, which reap() will note)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not all(
            self.started(p) or p.poll() is not None for p in self.live
        ):
            time.sleep(0.1)

    def stop_workers(self, within: float = 30) -> dict[int, int | None]:
        """SIGTERM every live worker once it is up; exit statuses (None: had to be killed).

        A worker still importing has no handler yet and would die of the signal itself.
        """
        self.wait_started(within)
        for proc in self.live:
            proc.send_signal(signal.SIGTERM)
        codes: dict[int, int | None] = {}
        deadline = time.monotonic() + within
        for proc in self.live:
            try:
                codes[proc.pid] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[proc.pid] = None
        self.live.clear()
        return codes

    def close(self) -> None:
        procs = [*self.every, *([self.simulator] if self.simulator else [])]
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def run_cli(cluster: Cluster, *args: str, within: float = 120) -> str:
    done = subprocess.run(
        [str(ORDERWATCH), *args, "-c", str(cluster.config)],
        cwd=cluster.tmp_path,
        env=cli_env(),
        capture_output=True,
        timeout=within,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout.decode(), done.stderr.decode())
    return done.stdout.decode()


@contextlib.contextmanager
def cluster_for(kind: str, tmp_path: Path, *, speed: float) -> Iterator[tuple[Cluster, sa.Engine]]:
    """A fresh database, a started simulator and a config; everything closed after."""
    with fresh_database(kind, tmp_path) as url:
        engine = sa.create_engine(engine_url(url), poolclass=sa.NullPool)
        cluster = Cluster(
            tmp_path=tmp_path,
            config=tmp_path / "orderwatch.toml",
            speed=speed,
            clock_start=time.time(),
        )
        try:
            window = [MAINTENANCE_REAL[0] * speed, MAINTENANCE_REAL[1] * speed]
            sim_url = cluster.start_simulator({**SIMULATOR, "maintenance": [window]})
            cluster.config.write_text(
                f"""
[database]
url = "{url}"

[polling]
initial_delay = "10m"
initial_interval = "5m"
factor = 2.0
max_interval = "1h"
jitter = 0.1

[worker]
batch_size = 100
concurrency = 64
lease = "{LEASE:g}s"
shutdown_grace = "2s"

[vendors.acme]
base_url = "{sim_url}"
merchant_id = "{MERCHANT}"
secret = "{SECRET}"
timeout = "500ms"
concurrency = 64

[log]
level = "info"
""",
                encoding="utf-8",
            )
            run_cli(cluster, "db", "upgrade")
            yield cluster, engine
        finally:
            cluster.close()
            engine.dispose()


def import_orders(cluster: Cluster, n: int, prefix: str) -> None:
    rng = random.Random(prefix)
    path = cluster.tmp_path / "orders.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            order = {
                "order_no": f"{prefix}{i:06d}",
                "vendor": "acme",
                "sku": f"SKU-{1000 + rng.randrange(40)}",
                "quantity": 1,
                "points": rng.choice([3000, 8000, 12000, 25000]),
                "customer_id": f"C{rng.randrange(10**5):05d}",
                "payment_status": "UNPAID" if rng.random() < 0.01 else "PAID",
                "recipient": {
                    "name": rng.choice(["张三", "李四", "王五", "Wang Fang"]),
                    "phone": f"13{rng.randrange(10**9):09d}",
                    "address": f"上海市浦东新区世纪大道{rng.randrange(1, 999)}号",
                },
            }
            f.write(json.dumps(order, ensure_ascii=False) + "\n")
    run_cli(cluster, "orders", "import", str(path))


# ---------------------------------------------------------------------------- database


def install_lease_audit(engine: sa.Engine, kind: str) -> None:
    """Record every claim (a new lease token with a holder) and the lease it replaced."""
    with engine.begin() as conn:
        if kind == "postgresql":
            conn.exec_driver_sql(
                "CREATE TABLE lease_audit (id BIGSERIAL PRIMARY KEY, order_id BIGINT, "
                "old_by VARCHAR(64), old_until TIMESTAMP, old_token VARCHAR(32), "
                "new_by VARCHAR(64), new_until TIMESTAMP, new_token VARCHAR(32), "
                "at TIMESTAMP)"
            )
            conn.exec_driver_sql(
                """
CREATE FUNCTION lease_audit_fn() RETURNS trigger AS $$
BEGIN
  IF NEW.lease_token IS DISTINCT FROM OLD.lease_token AND NEW.locked_by IS NOT NULL THEN
    INSERT INTO lease_audit (order_id, old_by, old_until, old_token,
                             new_by, new_until, new_token, at)
    VALUES (NEW.id, OLD.locked_by, OLD.locked_until, OLD.lease_token,
            NEW.locked_by, NEW.locked_until, NEW.lease_token,
            clock_timestamp() AT TIME ZONE 'UTC');
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql
"""
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER lease_audit_trg AFTER UPDATE ON orders "
                "FOR EACH ROW EXECUTE FUNCTION lease_audit_fn()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TABLE lease_audit (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                "order_id BIGINT, old_by VARCHAR(64), old_until DATETIME(6), "
                "old_token VARCHAR(32), new_by VARCHAR(64), new_until DATETIME(6), "
                "new_token VARCHAR(32), at DATETIME(6))"
            )
            conn.exec_driver_sql(
                """
CREATE TRIGGER lease_audit_trg AFTER UPDATE ON orders FOR EACH ROW
BEGIN
  IF NOT (NEW.lease_token <=> OLD.lease_token) AND NEW.locked_by IS NOT NULL THEN
    INSERT INTO lease_audit (order_id, old_by, old_until, old_token,
                             new_by, new_until, new_token, at)
    VALUES (NEW.id, OLD.locked_by, OLD.locked_until, OLD.lease_token,
            NEW.locked_by, NEW.locked_until, NEW.lease_token, UTC_TIMESTAMP(6));
  END IF;
END
"""
            )


def rows(engine: sa.Engine, sql: str) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(conn.exec_driver_sql(sql))


def open_count(engine: sa.Engine) -> int:
    sql = "SELECT count(*) FROM orders WHERE status NOT IN ('SUCCEEDED', 'FAILED')"
    return int(rows(engine, sql)[0][0])


def drop_connections(engine: sa.Engine, kind: str) -> int:
    """Drop every other connection to the test database; how many there were."""
    with engine.connect() as conn:
        if kind == "postgresql":
            return int(
                conn.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).scalar_one()
            )
        ids = [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            )
        ]
        dropped = 0
        for ident in ids:
            try:
                conn.exec_driver_sql(f"KILL CONNECTION {int(ident)}")
                dropped += 1
            except sa.exc.OperationalError as exc:  # gone by itself meanwhile (1094)
                if "1094" not in str(exc):
                    raise
        return dropped


# ---------------------------------------------------------------------------- checks


@dataclass
class Findings:
    by_status: Counter[str]
    problems: list[str]
    takeovers: int
    claims: int

    def summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items()))


def check_invariants(engine: sa.Engine, sim: dict[str, Any], *, audit: bool) -> Findings:
    """DESIGN §9 on the database as the run left it; every violation, named."""
    problems: list[str] = []
    orders = {
        r.id: r
        for r in rows(
            engine,
            "SELECT id, order_no, status, reason, takeovers, next_run_at, placements FROM orders",
        )
    }
    by_status = Counter(f"{r.status}/{r.reason}" if r.reason else r.status for r in orders.values())
    not_final = [r.order_no for r in orders.values() if r.status not in FINAL]
    if not_final:
        problems.append(f"{len(not_final)} orders not final, e.g. {not_final[:5]}")

    # §9.2: at most one place-order request per order
    if sim["max_place_requests"] > 1:
        problems.append(
            f"the simulator saw {sim['duplicates']} order_nos placed more than once "
            f"(max {sim['max_place_requests']})"
        )

    # §9.3: the events of each order chain up to its status
    events: dict[int, list[sa.Row[Any]]] = {}
    for ev in rows(
        engine,
        "SELECT order_id, id, kind, from_status, to_status FROM order_events ORDER BY order_id, id",
    ):
        events.setdefault(ev.order_id, []).append(ev)
    broken: list[str] = []
    takeover_events = 0
    for oid, order in orders.items():
        chain = events.get(oid, [])
        status: str | None = None
        trail = []
        for ev in chain:
            trail.append(f"{ev.kind}:{ev.from_status}->{ev.to_status}")
            if ev.from_status is not None and ev.from_status != status:
                broken.append(f"{order.order_no} {trail}")
                break
            if ev.to_status is not None:
                status = ev.to_status
        else:
            if status != order.status:
                broken.append(f"{order.order_no} is {order.status} but its events say {trail}")
        sent = sum(1 for ev in chain if ev.kind == "sent")
        if sent > 1:
            broken.append(f"{order.order_no} was marked SENT {sent} times")
        takeover_events += sum(1 for ev in chain if ev.kind == "takeover")
    if broken:
        problems.append(f"{len(broken)} orders with a broken timeline, e.g. {broken[:3]}")

    # §9.3: every final state has its outbox row, exactly one
    notes: dict[int, Counter[str]] = {}
    for n in rows(engine, "SELECT order_id, event_type FROM outbox"):
        notes.setdefault(n.order_id, Counter())[n.event_type] += 1
    missing = []
    for oid, order in orders.items():
        if order.status not in FINAL:
            continue
        have = notes.get(oid, Counter())
        finals = {t: c for t, c in have.items() if t in ("order.succeeded", "order.failed")}
        if finals != {FINAL_NOTE[order.status]: 1}:
            missing.append(f"{order.order_no} {order.status}: {dict(have)}")
    if missing:
        problems.append(
            f"{len(missing)} final orders without exactly one matching outbox row, "
            f"e.g. {missing[:3]}"
        )

    # takeovers: counters, events (and the lease audit) agree
    takeovers = sum(r.takeovers for r in orders.values())
    if takeovers != takeover_events:
        problems.append(f"takeover counters {takeovers} != takeover events {takeover_events}")

    claims = 0
    if audit:
        lease = timedelta(seconds=LEASE)
        audited = rows(
            engine,
            "SELECT order_id, old_by, old_until, old_token, new_by, new_until FROM lease_audit",
        )
        claims = len(audited)
        replaced = [a for a in audited if a.old_token is not None]
        if len(replaced) != takeovers:
            problems.append(
                f"{len(replaced)} claims replaced an unreleased lease, "
                f"but {takeovers} takeovers were recorded"
            )
        live = [
            f"order {a.order_id}: {a.new_by} claimed at {a.new_until - lease} while "
            f"{a.old_by} held it until {a.old_until}"
            for a in replaced
            if not a.old_until < a.new_until - lease
        ]
        if live:
            problems.append(f"{len(live)} claims of a live lease, e.g. {live[:3]}")
    return Findings(by_status, problems, takeovers, claims)


def wait_until_final(
    cluster: Cluster,
    engine: sa.Engine,
    *,
    within: float,
    every: float,
    act: Callable[[], None],
    stop_on_death: bool = False,
) -> tuple[bool, float]:
    """Call ``act`` every ``every`` s until no order is open; (all final?, seconds).

    Workers that exit by themselves are noted and replaced, or (``stop_on_death``) end
    the wait at once.
    """
    started = time.monotonic()
    next_act = started + every
    while True:
        now = time.monotonic()
        if open_count(engine) == 0:
            return True, now - started
        if now - started > within:
            return False, now - started
        cluster.reap()
        if stop_on_death and cluster.died:
            return False, now - started
        while len(cluster.live) < WORKERS:
            cluster.start_worker()
        if now >= next_act:
            act()
            next_act = now + every * random.uniform(0.8, 1.2)
        time.sleep(0.25)


def stuck_report(cluster: Cluster, engine: sa.Engine) -> str:
    """Open orders by status, and those overdue with no live lease (stuck unseen)."""
    now = cluster.schedule_now().replace(tzinfo=None)
    real = utcnow().replace(tzinfo=None)
    open_rows = rows(
        engine,
        "SELECT order_no, status, next_run_at, locked_by, locked_until FROM orders "
        "WHERE status NOT IN ('SUCCEEDED', 'FAILED')",
    )
    by_status = Counter(r.status for r in open_rows)
    unscheduled = [r.order_no for r in open_rows if r.next_run_at is None]
    overdue = [
        f"{r.order_no} {r.status} due {r.next_run_at} held by {r.locked_by} until {r.locked_until}"
        for r in open_rows
        if r.next_run_at is not None
        and r.next_run_at <= now
        and (r.locked_until is None or r.locked_until < real)
    ]
    return (
        f"open: {dict(by_status)}; without next_run_at: {unscheduled[:5]}; "
        f"due and unleased now: {len(overdue)} {overdue[:5]}"
    )


def report(
    name: str, cluster: Cluster, facts: dict[str, Any], record: Callable[[str, object], None]
) -> None:
    """The run's figures: a line on stderr (shown with -s or on failure), summary.json
    beside the logs, and properties in the JUnit XML (--junitxml)."""
    line = json.dumps(facts, ensure_ascii=False, default=str)
    (cluster.tmp_path / "summary.json").write_text(line, encoding="utf-8")
    sys.stderr.write(f"\n[{name}] {line}\n")
    for key, value in facts.items():
        record(key, value)


# ---------------------------------------------------------------------------- tests


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", KINDS)
def test_workers_killed_at_random(
    kind: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """4 workers, one killed with SIGKILL every ~2 s and replaced, until every order ends.

    Size: ``ORDERWATCH_CHAOS_ORDERS`` if set; else 5,000 orders (what issue 6 asks for) when
    CI is unset, and 1,500 under CI. Measured on the 2-core machine while it was shared with
    other work (load average 4-7); wall time of the test at ×300 (at ×200 in brackets):

    ======  ==========================  ==========================
    orders  PostgreSQL                  MariaDB
    ======  ==========================  ==========================
    5,000   139 s (194 s), 59 kills     156 s (~245 s), 64 kills
    1,500   101 s (131 s), 39 kills     122 s, 45 kills
    ======  ==========================  ==========================

    A full run takes 2.3-3.8 min per database depending on the load, so both of them
    would cost CI 5-7.5 min; 1,500 orders keep each under ~2 min and still give ~40 kills
    and ~1,000 takeovers. The 5,000-order run is then one command away
    (``ORDERWATCH_CHAOS_ORDERS=5000``), and is the default on a developer's machine.
    """
    n = chaos_orders()
    speed = SPEED
    with cluster_for(kind, tmp_path, speed=speed) as (cluster, engine):
        install_lease_audit(engine, kind)
        import_orders(cluster, n, "RC")
        cluster.maintenance_from_now(*MAINTENANCE_AFTER_IMPORT)
        rng = random.Random(f"chaos:{kind}")
        for _ in range(WORKERS):
            cluster.start_worker()

        def kill_one() -> None:
            if cluster.live:
                cluster.kill(rng.choice(cluster.live))
                cluster.start_worker()

        done, seconds = wait_until_final(
            cluster, engine, within=240 + n / 25, every=2.0, act=kill_one
        )
        stuck = "" if done else stuck_report(cluster, engine)
        cluster.reap()
        codes = cluster.stop_workers()
        sim = cluster.sim_stats()
        found = check_invariants(engine, sim, audit=True)
        report(
            f"chaos {kind}",
            cluster,
            {
                "orders": n,
                "speed": speed,
                "seconds": round(seconds, 1),
                "kills": cluster.killed,
                "workers_started": len(cluster.every),
                "takeovers": found.takeovers,
                "claims": found.claims,
                "by_status": found.summary(),
                "place_requests": sim["place_requests"],
                "max_place_requests": sim["max_place_requests"],
                "queries": sim["queries"],
                "by_answer": sim["by_answer"],
            },
            record_property,
        )
    assert done, f"orders still open after {seconds:.0f} s: {stuck}"
    assert not cluster.died, "workers exited by themselves:\n" + "\n".join(cluster.died)
    assert not found.problems, "\n".join(found.problems)
    assert cluster.killed >= 5, f"only {cluster.killed} kills: the run was too short to count"
    assert found.takeovers > 0, "no lease was ever taken over: nothing was tested"
    unseen = {"maintenance", "timeout", "garbage", "error", "bad_sign", "unknown"} - {
        name for name, count in sim["by_answer"].items() if count
    }
    assert not unseen, f"the vendor never answered with {sorted(unseen)}: nothing was tested"
    assert all(code == 0 for code in codes.values()), f"SIGTERM exit statuses: {codes}"


# Expected failures: src bugs found by these tests (see the report of issue 6). Each is
# strict, and only an AssertionError counts as the expected failure: a broken invariant
# (a second place-order, a broken timeline) or a fault that was never injected fails
# the test outright.


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("kind", KINDS)
def test_database_drops_every_connection(
    kind: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """The database drops every connection every ~3 s; workers reconnect and go on.

    Nothing is lost: every order ends, no order is placed twice, no worker process dies.
    The servers keep running: only this database's connections are dropped
    (``pg_terminate_backend`` / ``KILL CONNECTION``). The wait ends at the first worker that
    dies by itself, since that alone fails the test.
    """
    n = DROP_ORDERS
    with cluster_for(kind, tmp_path, speed=SPEED) as (cluster, engine):
        import_orders(cluster, n, "RD")
        for _ in range(WORKERS):
            cluster.start_worker()
        # Mid-run: a worker that cannot open the database at start-up exits with status 1
        # (Service.open → ensure_schema), which is a start-up failure, not what this tests.
        cluster.wait_started()
        drops: list[int] = []

        def drop() -> None:
            drops.append(drop_connections(engine, kind))

        done, seconds = wait_until_final(
            cluster, engine, within=150, every=3.0, act=drop, stop_on_death=True
        )
        stuck = "" if done else stuck_report(cluster, engine)
        cluster.reap()
        codes = cluster.stop_workers()
        sim = cluster.sim_stats()
        found = check_invariants(engine, sim, audit=False)
        report(
            f"drop {kind}",
            cluster,
            {
                "orders": n,
                "seconds": round(seconds, 1),
                "drops": len(drops),
                "connections_dropped": sum(drops),
                "workers_started": len(cluster.every),
                "died": len(cluster.died),
                "by_status": found.summary(),
                "max_place_requests": sim["max_place_requests"],
            },
            record_property,
        )
    # What must hold even now, and must not pass for the expected failure: pytest.fail.
    broken = [p for p in found.problems if "not final" not in p]
    if broken:
        pytest.fail("\n".join(broken))
    if sim["max_place_requests"] > 1:
        pytest.fail(f"placed twice: {sim}")
    assert not cluster.died, (
        f"{len(cluster.died)} worker process(es) died instead of reconnecting:\n"
        + "\n".join(cluster.died[:2])
    )
    assert done, f"orders still open after {seconds:.0f} s: {stuck}"
    if len(drops) < 3 or not sum(drops):
        pytest.fail(f"too few connections dropped to tell: {drops}")
    assert all(code == 0 for code in codes.values()), f"SIGTERM exit statuses: {codes}"


# ---------------------------------------------------------------------------- one drop, pinned
#
# The same failure, deterministic and in one process: the store's own connection is
# dropped by the server (pg_terminate_backend / KILL CONNECTION of exactly that
# connection) just before one chosen statement, so the transaction around it fails the
# way it does when the database drops connections mid-run.


class ConnectionKiller:
    """Drop the store's own connection, server-side, inside one chosen transaction.

    The store runs every call as ``store._tx(work, mode)`` on its database thread (the bench
    counts transactions the same way). The first transaction whose ``work`` is defined in
    ``target`` (e.g. ``SqlStore.claim_due``) and whose closure variables satisfy ``when``
    has its connection terminated by the server
    (``pg_terminate_backend`` / ``KILL CONNECTION`` of exactly that connection) after
    ``BEGIN`` and before its first statement, as when the database drops connections mid-run.
    """

    def __init__(
        self,
        store: Any,
        kind: str,
        url: str,
        target: str,
        when: Callable[[dict[str, Any]], bool] = lambda _: True,
    ) -> None:
        self.kind = kind
        self.target = f"{target}."
        self.when = when
        self.seen = 0
        self.fired = False
        self.admin = sa.create_engine(engine_url(url), poolclass=sa.NullPool)
        self._original = store._tx
        store._tx = self._tx

    def _tx(self, fn: Callable[[Any], Any], mode: str, **options: Any) -> Any:
        if not self.fired and fn.__qualname__.startswith(self.target):
            self.seen += 1
            names = fn.__code__.co_freevars
            free = dict(zip(names, (c.cell_contents for c in fn.__closure__ or ()), strict=True))
            if self.when(free):
                self.fired = True
                work = fn

                def fn(conn: Any) -> Any:
                    self._drop(conn.connection.dbapi_connection)
                    return work(conn)

        return self._original(fn, mode, **options)

    def _drop(self, dbapi: Any) -> None:
        with self.admin.connect() as admin:
            if self.kind != "postgresql":
                admin.exec_driver_sql(f"KILL CONNECTION {int(dbapi.thread_id())}")
                return
            pid = int(dbapi.info.backend_pid)
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            gone = f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and admin.exec_driver_sql(gone).scalar_one():
                time.sleep(0.01)

    def check(self) -> None:
        """Not an AssertionError, so that an expected failure cannot hide it."""
        if not self.fired:
            raise RuntimeError(
                f"no connection was dropped: {self.seen} transactions of {self.target[:-1]} "
                "ran, none of them the one wanted (did the store change?)"
            )

    def close(self) -> None:
        self.admin.dispose()


async def run_until(
    worker: Any, service: Any, order_no: str, check: Callable[[Any], bool], within: float
) -> tuple[Any, BaseException | None]:
    """Run ``worker`` until ``check(order)`` or ``within`` s; (order, what run() raised)."""
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + within
    order = await service.store.get_order(order_no)
    while not task.done() and not check(order) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        order = await service.store.get_order(order_no)
    worker.stop()
    try:
        await asyncio.wait_for(task, 15)
    except Exception as exc:  # what run() raised is the finding
        return order, exc
    return order, None


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("db_kind", KINDS)
async def test_worker_survives_a_connection_dropped_in_a_claim(
    db_kind: str, make_simulator: Any, make_service: Any, make_worker: Any
) -> None:
    """A claim whose connection the server drops is retried after a pause; the worker
    neither dies nor loses the order."""
    clock = CompressedClock(speed=600)
    sim = await make_simulator(clock, delivery_min=60.0, delivery_max=60.0)
    service = await make_service(
        sim.base_url,
        clock,
        polling={"initial_delay": "1m", "initial_interval": "1m"},
        worker={"lease": "1s"},
    )
    await service.submit([new_order("RK000001")])
    killer = ConnectionKiller(
        service.store, db_kind, service.settings.current.database.url, "SqlStore.claim_due"
    )
    try:
        order, raised = await run_until(
            make_worker(service),
            service,
            "RK000001",
            lambda o: o.status.is_final,
            within=20,
        )
    finally:
        killer.close()
    killer.check()
    assert raised is None, f"Worker.run raised {raised!r} after the claim's connection dropped"
    assert order.status is Status.SUCCEEDED, order
    assert sim.place_requests["RK000001"] == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("db_kind", KINDS)
async def test_failed_write_back_does_not_keep_the_order_leased(
    db_kind: str, make_simulator: Any, make_service: Any, make_worker: Any
) -> None:
    """The write-back of a place-order answer fails (its connection dropped) while another
    order is still in flight: the order must not stay SENT under a lease that the live
    worker renews for ever. It is written back on a retry, or its lease lapses and it is
    reconciled; either way it ends, placed once.
    """
    clock = CompressedClock(speed=600)
    sim = await make_simulator(
        clock, delivery_min=60.0, delivery_max=60.0, place_timeout_rate=0.5, hang=5.0
    )
    candidates = [f"RK{i:06d}" for i in range(100)]
    # A is answered at once; B's place-order hangs (2 s client timeout), keeping the worker
    # busy, so that A's write-back is flushed by the background flush task.
    a = next(no for no in candidates if not sim._fate(no).timeout)
    b = next(no for no in candidates if sim._fate(no).timeout)
    service = await make_service(
        sim.base_url,
        clock,
        polling={"initial_delay": "1m", "initial_interval": "1m"},
        vendor={"timeout": "2s"},
        worker={"lease": "1s"},
    )
    await service.submit([new_order(a), new_order(b)])
    a_id = (await service.store.get_order(a)).id

    def a_placed(free: dict[str, Any]) -> bool:
        """The write-back that applies A's place-order answer (and releases its lease)."""
        return any(w.release and w.transition.order.id == a_id for w in free.get("writes", ()))

    killer = ConnectionKiller(
        service.store, db_kind, service.settings.current.database.url, "SqlStore.apply", a_placed
    )
    try:
        order, raised = await run_until(
            make_worker(service),
            service,
            a,
            lambda o: o.status.is_final,
            within=12,  # 12 leases, 7,200 schedule-seconds: far more than the order needs
        )
    finally:
        killer.close()
    killer.check()
    assert raised is None, f"Worker.run raised {raised!r}"
    assert order.status is Status.SUCCEEDED, (
        f"{a} is {order.status} ({order.description}), leased until {order.locked_until} "
        f"(real now {clock.real()}): the lease of the lost write-back is still being renewed"
    )
    assert sim.place_requests[a] == 1
