"""orderwatch's exceptions. Catch :class:`OrderwatchError` to catch them all.

::

    OrderwatchError
    ├── ConfigError          a setting is wrong; names each key, its source and the rule
    ├── ValidationFailed     input records are wrong; carries (location, field, message) rows
    ├── OrderNotFound        no order with that order_no
    ├── Conflict             the request contradicts what is stored (same order_no, other body;
    │                        an action the order's status does not allow)
    └── SchemaNotCurrent     the database needs ``orderwatch db upgrade``
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class OrderwatchError(Exception):
    """Base of every error orderwatch raises on purpose."""


class ConfigError(OrderwatchError):
    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    location: str | None = None  # "line 3", "index 2", ... for files

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}{self.field}: {self.message}"


class ValidationFailed(OrderwatchError):
    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))


class OrderNotFound(OrderwatchError):
    def __init__(self, order_no: str) -> None:
        self.order_no = order_no
        super().__init__(f"no order {order_no!r}")


class Conflict(OrderwatchError):
    def __init__(self, message: str, *, fields: Sequence[str] = ()) -> None:
        self.fields = list(fields)
        super().__init__(message)


class SchemaNotCurrent(OrderwatchError):
    pass
