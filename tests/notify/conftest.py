"""Fixtures for the notification tests: a real SQLite outbox and a real webhook receiver
(see :mod:`notify_helpers`). Each factory closes what it opened."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from notify_helpers import START, MakeReceiver, Receiver

from orderwatch.clock import ManualClock
from orderwatch.store.sql import SqlStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    s = SqlStore(f"sqlite:///{tmp_path}/notify.db")
    await s.ensure_schema(auto_upgrade=True)
    yield s
    await s.close()


@pytest.fixture
async def make_receiver() -> AsyncIterator[MakeReceiver]:
    made: list[Receiver] = []

    async def factory(clock: ManualClock, **kwargs: Any) -> Receiver:
        r = Receiver(clock, **kwargs)
        await r.start()
        made.append(r)
        return r

    yield factory
    for r in made:
        await r.stop()
