"""The API as an operator runs it: ``orderwatch api`` and ``orderwatch serve`` as processes,
over a real socket, stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from apitools import TOKENS, auth, order_body

from orderwatch.simulator import Simulator, SimulatorConfig

ORDERWATCH = str(Path(sys.executable).parent / "orderwatch")
SECRET = "s3cret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(folder: Path, *, port: int, vendor_url: str) -> Path:
    tokens = "\n".join(
        f'[[api.tokens]]\nname = "{role}-caller"\ntoken = "{token}"\nrole = "{role}"\n'
        for role, token in TOKENS.items()
    )
    cfg = folder / "orderwatch.toml"
    cfg.write_text(
        f"""
[database]
url = "sqlite:///{folder / "ow.db"}"

[vendors.acme]
base_url = "{vendor_url}"
merchant_id = "M0001"
secret = "{SECRET}"
timeout = "2s"

[worker]
shutdown_grace = "2s"

[api]
listen = "127.0.0.1:{port}"

{tokens}
""",
        encoding="utf-8",
    )
    return cfg


Process = asyncio.subprocess.Process
Start = Callable[..., Awaitable[tuple[Process, str]]]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ORDERWATCH_")}


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """``await start("api", vendor_url=...)`` → (process, base URL) once /healthz answers."""
    started: list[Process] = []

    async def factory(
        command: str, *, vendor_url: str = "http://127.0.0.1:9"
    ) -> tuple[Process, str]:
        port = free_port()
        cfg = write_config(tmp_path, port=port, vendor_url=vendor_url)
        proc = await asyncio.create_subprocess_exec(
            ORDERWATCH,
            command,
            "-c",
            str(cfg),
            env=clean_env(),
            stdout=PIPE,
            stderr=PIPE,
            cwd=tmp_path,
        )
        started.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=base, timeout=2) as client:
            while True:
                if proc.returncode is not None:
                    _out, err = await proc.communicate()
                    pytest.fail(f"{command} exited {proc.returncode}: {err.decode()}")
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{command} never became healthy"
                await asyncio.sleep(0.1)
        return proc, base

    yield factory
    for proc in started:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def stop(proc: Process) -> tuple[int | None, str]:
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        _out, err = await proc.communicate()
    return proc.returncode, err.decode()


async def test_orderwatch_api_over_a_socket(start: Start) -> None:
    proc, base = await start("api")
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        assert (await client.get("/readyz")).json()["status"] == "ready"
        r = await client.post("/api/v1/orders", json=order_body("R1"), headers=auth("platform"))
        assert r.status_code == 201, r.text
        assert "张三".encode() in r.content
        r = await client.get("/api/v1/orders/R1", headers=auth("viewer"))
        assert r.status_code == 200
        assert r.json()["status"] == "PENDING"  # `api` alone runs no worker
        assert r.json()["events"][0]["actor"] == "platform-caller"
        r = await client.get("/api/v1/orders/R1")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        big = b"{" + b" " * (2 << 20) + b"}"
        r = await client.post(
            "/api/v1/orders",
            content=big,
            headers={**auth("platform"), "Content-Type": "application/json"},
        )
        assert r.status_code == 413
        assert "orderwatch_orders" in (await client.get("/metrics")).text
    code, log = await stop(proc)
    assert code == 0, log
    assert "api_listening" in log
    assert all(token not in log for token in TOKENS.values())


async def test_orderwatch_serve_places_at_once(start: Start) -> None:
    sim = Simulator(SimulatorConfig(secret=SECRET, merchant_id="M0001"))
    vendor_url = await sim.start("127.0.0.1", 0)
    try:
        proc, base = await start("serve", vendor_url=vendor_url)
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            began = time.monotonic()
            r = await client.post("/api/v1/orders", json=order_body("R1"), headers=auth("platform"))
            assert r.status_code == 201
            while True:
                o = (await client.get("/api/v1/orders/R1", headers=auth("operator"))).json()
                if o["status"] == "ORDERED":
                    break
                assert time.monotonic() - began < 10, o
                await asyncio.sleep(0.05)
            # Woken by the intake, not found by the worker's idle look up to a second later.
            at = {e["kind"]: datetime.fromisoformat(e["at"]) for e in o["events"]}
            assert (at["sent"] - at["created"]).total_seconds() < 0.5, o["events"]
            assert o["vendor_order_id"]
            assert sim.place_requests["R1"] == 1
        code, log = await stop(proc)
        assert code == 0, log
        assert "worker_stopped" in log
    finally:
        await sim.stop()


async def test_a_busy_port_is_a_configuration_error(start: Start, tmp_path: Path) -> None:
    proc, base = await start("api")
    port = int(base.rsplit(":", 1)[1])
    cfg = tmp_path / "orderwatch.toml"
    other = tmp_path / "other"
    other.mkdir()
    second = await asyncio.create_subprocess_exec(
        ORDERWATCH,
        "api",
        "-c",
        str(cfg),
        "--listen",
        f"127.0.0.1:{port}",
        env=clean_env(),
        stdout=PIPE,
        stderr=PIPE,
        cwd=other,
    )
    async with asyncio.timeout(30):
        _out, err = await second.communicate()
    assert second.returncode == 2
    assert b"api.listen" in err
    await stop(proc)
