"""Property-based tests of the served OpenAPI document (schemathesis).

For every operation schemathesis generates requests from the schema — valid ones and, in
negative mode, ones that break it — and checks that the API never answers 5xx, that every
status code, content type, header and body it answers is the one the document promises,
and that invalid input is refused. A stateful run then follows the document's links (an
order created by POST /orders is read, paid, cancelled, retried, resolved).

Bounded so the whole module stays well under a minute: a few dozen examples per operation,
no Hypothesis database, no deadline (the first request pays for SQLite's warm-up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from apitools import TOKENS, order_body, settings_overrides
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from orderwatch.api import create_app
from orderwatch.intake import validate_order
from orderwatch.service import Service
from orderwatch.settings import load_settings

EXAMPLES = 25


def role_for(method: str, path: str) -> str:
    """The role that may call the operation, so the generated request gets past auth."""
    if method == "GET":
        return "viewer"
    if path == "/api/v1/orders":
        return "platform"
    if path.endswith("/payment"):
        return "platform"
    return "operator"


def excluded_for(case: Any) -> list[Any]:
    if (case.query or {}).get("cursor") is not None:
        # A cursor is opaque: only one the API handed out is valid, whatever the schema's
        # pattern lets through, so a made-up one is rightly refused.
        return [positive_data_acceptance]
    return []


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    loaded = load_settings(None, env={}, overrides=settings_overrides(tmp_path / "st.db"))
    service = asyncio.run(Service.open(loaded))
    try:
        yield service
    finally:
        asyncio.run(service.close())


def seed(service: Service) -> None:
    """A few stored orders, so that examples naming them reach the 200 paths too."""
    orders = [order_body("R20261126000001"), order_body("R20261126000002", vendor="globex")]
    asyncio.run(service.submit([validate_order(o) for o in orders], actor="seed"))


def reset(service: Service) -> None:
    """Empty the database: each stateful scenario starts from the same state."""

    def wipe(conn: sa.Connection) -> None:
        for table in ("outbox", "order_events", "orders", "vendor_pauses"):
            conn.execute(sa.text(f"DELETE FROM {table}"))

    asyncio.run(service.store.execute(wipe))  # type: ignore[attr-defined]
    seed(service)


@pytest.fixture
def api_schema(service: Service) -> Any:
    seed(service)
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(service))


OPERATIONS = [
    ("POST", "/api/v1/orders"),
    ("GET", "/api/v1/orders"),
    ("GET", "/api/v1/orders/{order_no}"),
    ("POST", "/api/v1/orders/{order_no}/payment"),
    ("POST", "/api/v1/orders/{order_no}/retry"),
    ("POST", "/api/v1/orders/{order_no}/resolve"),
    ("POST", "/api/v1/orders/{order_no}/cancel"),
    ("POST", "/api/v1/orders/bulk/retry"),
    ("POST", "/api/v1/orders/bulk/resolve"),
    ("POST", "/api/v1/orders/{order_no}/notifications/{notification_id}/redeliver"),
    ("POST", "/api/v1/vendors/{name}/pause"),
    ("POST", "/api/v1/vendors/{name}/resume"),
    ("GET", "/api/v1/stats"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]


NO_INPUT = {"/healthz", "/readyz", "/metrics"}


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    served = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert served == set(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_api_matches_its_openapi(
    api_schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    if mode is GenerationMode.NEGATIVE and path in NO_INPUT:
        pytest.skip("nothing to send wrong: the operation takes no input")
    operation = api_schema[path][method]
    token = TOKENS[role_for(method, path)]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples every run: a failure is a bug, never a flake
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"}, excluded_checks=excluded_for(case)
        )

    check()


def test_stateful_workflows(api_schema: Any, service: Service) -> None:
    """Follow the document's links: submit, then read, pay, cancel, retry, resolve it.

    Valid requests only: the stateless run above covers invalid ones per operation, and
    here a run must not depend on which malformed request happened to come first.
    """
    api_schema.config.generation.update(modes=[GenerationMode.POSITIVE])
    base = api_schema.as_state_machine()

    class Workflow(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            reset(service)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            role = role_for(case.method, case.path)
            return {"headers": {"Authorization": f"Bearer {TOKENS[role]}"}}

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=excluded_for(case),
                transport_kwargs=kwargs,
            )

    Workflow.run(
        settings=settings(
            max_examples=30,
            stateful_step_count=6,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )
