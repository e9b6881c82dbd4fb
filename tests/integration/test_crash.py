"""A worker process killed between "SENT is committed" and "the vendor answered".

The vendor simulator runs in this test's event loop on real time; the workers are real
``orderwatch worker`` processes on a real SQLite file. The first worker sends place-order,
the vendor records the order but holds the answer, and the worker is killed with SIGKILL.
A second worker must take the order over once the lease expires, find out by query that
the vendor has it, and finish it — with the vendor having seen exactly one place-order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from orderwatch.clock import SystemClock
from orderwatch.simulator import Simulator, SimulatorConfig

pytestmark = pytest.mark.slow

ORDERWATCH = Path(sys.executable).parent / "orderwatch"
SECRET = "s3cret"
ORDER_NO = "R20261126000042"


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERWATCH_")}
    env["COLUMNS"] = "200"
    return env


async def cli(*args: str, cwd: Path, within: float = 60) -> tuple[int, str, str]:
    """Run the console script without blocking the loop the simulator answers on."""
    proc = await asyncio.create_subprocess_exec(
        str(ORDERWATCH),
        *args,
        cwd=cwd,
        env=cli_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def db_status(db: Path, order_no: str) -> str | None:
    """The order's status as another process sees it (read-only; WAL lets us read alongside)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        row = conn.execute("SELECT status FROM orders WHERE order_no = ?", (order_no,)).fetchone()
    return None if row is None else str(row[0])


async def wait_until(what: str, check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting until {what}")
        await asyncio.sleep(0.05)


async def test_killed_worker_order_is_finished_by_another_without_placing_twice(
    tmp_path: Path,
) -> None:
    sim = Simulator(
        SimulatorConfig(
            secret=SECRET,
            place_timeout_rate=1.0,  # hold the place-order answer …
            place_timeout_recorded=1.0,  # … after recording the order
            hang=30.0,
            delivery_min=1.0,
            delivery_max=2.0,
        ),
        clock=SystemClock(),
    )
    base_url = await sim.start("127.0.0.1", 0)
    db = tmp_path / "ow.db"
    cfg = tmp_path / "orderwatch.toml"
    cfg.write_text(
        f"""
[database]
url = "sqlite:///{db}"

[polling]
initial_delay = "1s"
initial_interval = "1s"
factor = 1.0
max_interval = "1s"
jitter = 0.0

[worker]
lease = "2s"
shutdown_grace = "2s"

[vendors.acme]
base_url = "{base_url}"
merchant_id = "M0001"
secret = "{SECRET}"
timeout = "20s"
""",
        encoding="utf-8",
    )
    order: dict[str, Any] = {
        "order_no": ORDER_NO,
        "vendor": "acme",
        "sku": "SKU-1001",
        "quantity": 1,
        "points": 12000,
        "payment_status": "PAID",
        "recipient": {"name": "张三", "phone": "13800000000", "address": "上海市浦东新区1号"},
    }
    orders_file = tmp_path / "orders.jsonl"
    orders_file.write_text(json.dumps(order, ensure_ascii=False) + "\n", encoding="utf-8")
    procs: list[asyncio.subprocess.Process] = []

    async def start_worker(log_name: str) -> asyncio.subprocess.Process:
        with (tmp_path / log_name).open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                str(ORDERWATCH),
                "worker",
                "-c",
                str(cfg),
                cwd=tmp_path,
                env=cli_env(),
                stdout=log,
                stderr=log,
            )
        procs.append(proc)
        return proc

    try:
        rc, _, err = await cli("db", "upgrade", "-c", str(cfg), cwd=tmp_path)
        assert rc == 0, err
        rc, _, err = await cli("orders", "import", str(orders_file), "-c", str(cfg), cwd=tmp_path)
        assert rc == 0, err

        first = await start_worker("worker1.log")
        await wait_until(
            "the order is SENT and its place-order reached the vendor",
            lambda: db_status(db, ORDER_NO) == "SENT" and sim.place_requests[ORDER_NO] == 1,
            within=30,
        )
        first.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(first.wait(), 10) == -signal.SIGKILL
        assert db_status(db, ORDER_NO) == "SENT"  # in doubt: the answer never came back

        # Were the order placed again, the vendor would now answer at once.
        sim.configure(place_timeout_rate=0.0)
        second = await start_worker("worker2.log")
        await wait_until(
            "the second worker finishes the order",
            lambda: db_status(db, ORDER_NO) in ("SUCCEEDED", "FAILED"),
            within=45,
        )
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 15) == 0

        rc, out, err = await cli("orders", "show", ORDER_NO, "--json", "-c", str(cfg), cwd=tmp_path)
        assert rc == 0, err
        shown = json.loads(out)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await sim.stop()

    logs = "\n".join((tmp_path / n).read_text(errors="replace") for n in ("worker2.log",))
    assert shown["status"] == "SUCCEEDED", (shown, logs)
    assert shown["reason"] is None
    assert sim.place_requests[ORDER_NO] == 1
    assert sim.stats()["place_requests"] == 1
    assert shown["counters"]["takeovers"] == 1
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds.count("sent") == 1
    assert "placed" not in kinds  # the place-order answer was never seen …
    assert kinds.index("sent") < kinds.index("takeover") < kinds.index("reconciled")  # … asked
    sent = next(e for e in shown["events"] if e["kind"] == "sent")
    takeover = next(e for e in shown["events"] if e["kind"] == "takeover")
    assert sent["actor"] != takeover["actor"]  # two different worker processes
    assert shown["events"][-1]["kind"] == "succeeded"
