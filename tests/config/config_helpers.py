"""Helpers shared by the config tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orderwatch.settings import Loaded

PULL = 0.4  # seconds the fake holds a long poll: small, so tests move quickly

MakeNacos = Callable[..., Any]  # the make_nacos fixture
Write = Callable[..., Path]  # the write fixture
Base = Callable[..., Loaded]  # the base fixture


def config_center_toml(address: str, **extra: Any) -> str:
    """A ``[config_center]`` table for ``address`` with test-sized timeouts."""
    values: dict[str, Any] = {
        "server": address,
        "pull_timeout": f"{int(PULL * 1000)}ms",
        "timeout": "1s",
        "retry_initial": "50ms",
        "retry_max": "200ms",
        **extra,
    }
    lines = ["[config_center]"]
    for key, value in values.items():
        lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def events(captured: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured log events called ``name``."""
    return [e for e in captured if e.get("event") == name]


async def until(
    condition: Callable[[], bool], *, within: float = 5.0, what: str = "condition"
) -> None:
    """Wait (real time) until ``condition()`` holds; fail the test after ``within`` s."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)
