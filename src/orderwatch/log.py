"""Structured logs: key=value (logfmt) or JSON lines, with order_no, vendor and attempt bound."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class LogfmtRenderer(structlog.processors.LogfmtRenderer):
    """structlog's logfmt renderer, writing the same text, with each key checked once
    rather than on every line: its check (a generator over the key's characters) was
    half the cost of a line, and the worker writes a line for every finished order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._checked: set[str] = set()

    def __call__(self, logger: Any, name: str, event_dict: Any) -> str:
        elements: list[str] = []
        checked = self._checked
        for key, value in self._ordered_items(event_dict):
            if key not in checked:
                if any(c <= " " for c in key):
                    raise ValueError(f'Invalid key: "{key}"')
                if len(checked) < 10_000:  # keys come from the code: a handful
                    checked.add(key)
            if value is None:
                elements.append(f"{key}=")
                continue
            if value is True and self.bool_as_flag:
                elements.append(key)
                continue
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            needs_quotes = " " in text or "=" in text or '"' in text
            if needs_quotes and "\\" in text:
                text = text.replace("\\", "\\\\")
            if '"' in text:
                text = text.replace('"', '\\"')
            if "\n" in text:
                text = text.replace("\n", "\\n")
            elements.append(f'{key}="{text}"' if needs_quotes else f"{key}={text}")
        return " ".join(elements)


def configure(level: str = "info", fmt: str = "logfmt", *, stream: Any = None) -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else LogfmtRenderer(key_order=["event"], drop_missing=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,  # the worker logs per order: build loggers once
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
