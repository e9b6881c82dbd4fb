"""Fixtures for the API tests: a real SqlStore on a temporary SQLite file, the app over it,
and an httpx client speaking ASGI to it (no socket). Each factory closes what it opened.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apitools import Api, MakeApi, settings_overrides

from orderwatch.api import create_app
from orderwatch.clock import ManualClock
from orderwatch.service import Service
from orderwatch.settings import load_settings


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database migrated once per session; each test starts from a copy of it."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    loaded = load_settings(None, env={}, overrides=settings_overrides(path))

    async def migrate() -> None:
        service = await Service.open(loaded)
        await service.close()

    asyncio.run(migrate())
    return path


@pytest.fixture
async def make_api(tmp_path: Path, template_db: Path) -> AsyncIterator[MakeApi]:
    """``await make_api(tokens=True, **settings)`` → an :class:`Api` on a fresh database."""
    opened: list[Api] = []

    async def factory(*, tokens: bool = True, max_body: int | None = None, **extra: Any) -> Api:
        db = tmp_path / f"api{len(opened)}.db"
        shutil.copyfile(template_db, db)
        loaded = load_settings(
            None, env={}, overrides=settings_overrides(db, tokens=tokens, **extra)
        )
        clock = ManualClock()
        service = await Service.open(loaded, clock=clock)
        woken: list[int] = []
        kwargs: dict[str, Any] = {"wake": lambda: woken.append(1)}
        if max_body is not None:
            kwargs["max_body"] = max_body
        app = create_app(service, **kwargs)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://orderwatch.test"
        )
        api = Api(service, app, client, clock, woken)
        opened.append(api)
        return api

    yield factory
    for api in reversed(opened):
        await api.client.aclose()
        await api.service.close()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()
