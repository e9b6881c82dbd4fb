"""RFC 9457 problem details: every error the API answers is ``application/problem+json``.

A body carries ``type``, ``title``, ``status``, ``detail`` and ``instance`` (the request
path), plus ``errors: [{"field", "message"}]`` for bad input (DESIGN §7) and ``fields``
naming what differs when an order_no is taken with another body. Types are URNs
(``urn:orderwatch:problem:validation``); plain HTTP errors (an unknown route, a wrong
method) use ``about:blank`` with the status phrase as their title, as the RFC asks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from starlette.responses import Response

from ..errors import FieldError

PROBLEM_JSON = "application/problem+json"

# type slug -> title
TITLES = {
    "validation": "Invalid input",
    "malformed": "Malformed request body",
    "unsupported-media-type": "Unsupported media type",
    "too-large": "Request body too large",
    "unauthorized": "Unauthorized",
    "forbidden": "Forbidden",
    "not-found": "Not found",
    "conflict": "Conflict with the stored order",
    "action-refused": "Action not allowed in the order's status",
    "not-ready": "Not ready",
    "internal": "Internal error",
}


class Problem(Exception):
    """Raise anywhere in a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str | None = None,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or slug or str(status))
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.extensions = extensions


def field_errors(errors: Sequence[FieldError]) -> list[dict[str, str]]:
    return [{"field": e.field, "message": e.message} for e in errors]


def body(problem: Problem, instance: str | None) -> dict[str, Any]:
    if problem.slug is None:
        type_, title = "about:blank", _phrase(problem.status)
    else:
        type_ = f"urn:orderwatch:problem:{problem.slug}"
        title = TITLES.get(problem.slug, _phrase(problem.status))
    doc: dict[str, Any] = {"type": type_, "title": title, "status": problem.status}
    if problem.detail:
        doc["detail"] = problem.detail
    if instance:
        doc["instance"] = instance
    if problem.errors:
        doc["errors"] = field_errors(problem.errors)
    doc.update(problem.extensions)
    return doc


def response(problem: Problem, instance: str | None = None) -> Response:
    content = json.dumps(body(problem, instance), ensure_ascii=False, separators=(",", ":"))
    return Response(
        content.encode("utf-8"),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_JSON,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
