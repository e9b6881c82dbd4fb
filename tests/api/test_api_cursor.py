"""A cursor that decodes but holds an id no database can hold."""

from __future__ import annotations

import base64
import json

import pytest
from apitools import Api, auth, fields, problem

from orderwatch.api.app import _cursor_key
from orderwatch.store.base import OrderFilter


@pytest.mark.parametrize("before", [2**63, 2**70, -(2**70)])
async def test_out_of_range_cursor_is_422_not_500(api: Api, before: int) -> None:
    await api.create("R1")
    raw = json.dumps({"b": before, "f": _cursor_key(OrderFilter())}).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    r = await api.client.get(f"/api/v1/orders?cursor={cursor}", headers=auth("viewer"))
    assert fields(problem(r, 422)) == {"cursor"}
