"""Fixtures for the console tests: a database seeded once per session (real worker, real
simulator), copied for each test, and the API app over it with an ASGI client.

The browser tests (test_console_browser.py) start a real uvicorn server on a copy instead.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from consoletools import Console, Seeded, load, seed, start_simulator

from orderwatch.api import create_app
from orderwatch.clock import ManualClock
from orderwatch.service import Service

DEAD_VENDOR = "http://127.0.0.1:9"  # no worker runs in these tests


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Seeded]:
    path = tmp_path_factory.mktemp("console-template") / "seeded.db"

    async def build() -> Seeded:
        clock = ManualClock()
        sim = await start_simulator(clock)
        try:
            assert sim.base_url
            service = await Service.open(load(path, sim.base_url), clock=clock)
            try:
                return await seed(service, clock, sim)
            finally:
                await service.close()
        finally:
            await sim.stop()

    return path, asyncio.run(build())


@pytest.fixture
async def console(tmp_path: Path, seeded_db: tuple[Path, Seeded]) -> AsyncIterator[Console]:
    template, seeded = seeded_db
    db = tmp_path / "console.db"
    shutil.copyfile(template, db)
    service = await Service.open(load(db, DEAD_VENDOR))
    app = create_app(service)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://orderwatch.test"
    )
    try:
        yield Console(service, client, seeded)
    finally:
        await client.aclose()
        await service.close()
