"""Health, readiness and metrics answer at the root and under /api/v1, without a token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from orderwatch.api import create_app
from orderwatch.service import Service
from orderwatch.settings import load_settings


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
async def test_probes_answer_without_a_token_at_both_paths(tmp_path: Path, prefix: str) -> None:
    loaded = load_settings(
        None,
        env={},
        overrides={
            "database": {"url": f"sqlite:///{tmp_path}/ow.db"},
            "api": {"tokens": [{"name": "p", "token": "t0ken-platform-123", "role": "platform"}]},
        },
    )
    service = await Service.open(loaded)
    try:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://ow") as client:
            health = await client.get(f"{prefix}/healthz")
            ready = await client.get(f"{prefix}/readyz")
            metrics = await client.get(f"{prefix}/metrics")
            stats = await client.get("/api/v1/stats")  # everything else still needs a token
    finally:
        await service.close()
    assert health.json()["status"] == "ok"
    assert ready.json()["status"] == "ready"
    assert "orderwatch_" in metrics.text
    assert stats.status_code == 401
