"""Fixtures for the config tests: a fake Nacos over real HTTP (see :mod:`nacos_fake`), a
config file that points at it, and log capture. No Nacos server is started anywhere.

Every factory closes what it opened; long polls are held for ``PULL`` seconds, not 30.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from config_helpers import Base, MakeNacos, Write, config_center_toml
from nacos_fake import FakeNacos

from orderwatch.settings import Loaded, load_settings


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty folder as cwd and cache home: no stray orderwatch.toml or cached copy."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
async def make_nacos() -> AsyncIterator[MakeNacos]:
    """``await make_nacos(users={"nacos": "pw"})`` → a started FakeNacos."""
    made: list[FakeNacos] = []

    async def factory(**kwargs: Any) -> FakeNacos:
        fake = FakeNacos(**kwargs)
        await fake.start()
        made.append(fake)
        return fake

    yield factory
    for fake in made:
        await fake.stop()


@pytest.fixture
async def nacos(make_nacos: MakeNacos) -> FakeNacos:
    fake: FakeNacos = await make_nacos()
    return fake


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """``write(text)`` → ``orderwatch.toml`` in the test's folder, its database beside it."""

    def factory(text: str, name: str = "orderwatch.toml") -> Path:
        path = tmp_path / name
        db = f'[database]\nurl = "sqlite:///{tmp_path / "ow.db"}"\n'
        path.write_text(db + text, encoding="utf-8")
        return path

    return factory


@pytest.fixture
def base(write: Write) -> Base:
    """``base(fake, file_text=..., **config_center)`` → file + env settings pointing at it."""

    def factory(fake: FakeNacos, *, file_text: str = "", **config_center: Any) -> Loaded:
        path = write(file_text + config_center_toml(fake.address, **config_center))
        return load_settings(path, env={})

    return factory


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Structured log events emitted during the test (structlog's capture)."""
    with structlog.testing.capture_logs() as captured:
        yield captured
