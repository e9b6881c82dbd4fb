"""Order intake: turn what a caller or a file sends into validated :class:`NewOrder` values.

The API, ``orders import`` and the library call all go through :func:`validate_order`, so an
order is judged by the same rules wherever it comes from, and every problem is reported as a
:class:`~orderwatch.errors.FieldError` naming the field (``recipient.phone``) and, for files,
where the record is (``line 3``, ``index 2``). Files are checked whole before anything is
stored: one bad record and nothing is imported (DESIGN §8).

>>> validate_order({"order_no": "R1", "vendor": "acme", "sku": "SKU-1", "quantity": 1,
...                 "points": 100, "recipient": {"name": "张三", "phone": "13800000000",
...                                              "address": "上海市浦东新区"}}).order_no
'R1'
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection, Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from .errors import FieldError, ValidationFailed
from .order import NewOrder, Recipient

__all__ = ["OrderIn", "RecipientIn", "parse_import", "printable", "validate_order"]

_PHONE = re.compile(r"[0-9+\- ]{5,20}")
_WHOLE = re.compile(r"[+-]?[0-9]+")

# One message per field that states the rule, so a user sees what to fix whatever was wrong.
_RULES = {
    "order_no": "must be 1-64 characters of A-Z a-z 0-9 _ -",
    "vendor": "must be 1-64 characters",
    "sku": "must be 1-64 characters",
    "quantity": "must be a whole number from 1 to 999",
    "points": "must be a whole number from 0 to 100000000",
    "customer_id": "must be 1-64 characters, or empty",
    "payment_status": "must be PAID or UNPAID",
    "recipient": "must be an object with name, phone and address",
    "recipient.name": "must be 1-64 characters",
    "recipient.phone": "must be 5-20 characters of digits, '+', '-' and spaces, with a digit",
    "recipient.address": "must be 1-256 characters",
}

_FIELDS = ("order_no", "vendor", "sku", "quantity", "points", "customer_id", "payment_status")
_RECIPIENT_FIELDS = ("name", "phone", "address")
_REQUIRED = ("order_no", "vendor", "sku", "quantity", "points")

RECORD = "(record)"
"""The field named by an error about a record as a whole (not an object, bad JSON, ...)."""
FILE = "(file)"
"""The field named by an error about a file as a whole (empty, undecodable, bad header)."""


def _whole_number(value: object) -> object:
    """Accept ints and digit strings (CSV cells); refuse bools, which Python counts as ints."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return int(value.strip())
    if isinstance(value, int):
        return value
    raise ValueError("not a whole number")


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


#: C0 controls but tab, LF and CR, and DEL (a regex character range; the API's OpenAPI
#: patterns are built from it too).
CONTROL_CHARACTERS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")
_CONTROL_MESSAGE = "must not contain control characters such as NUL (tabs and line breaks are fine)"


def printable(value: object) -> object:
    """Refuse NUL and the other C0 controls but tab, LF and CR: PostgreSQL cannot store NUL
    in a text column at all (the insert would fail after every check had passed)."""
    if isinstance(value, str) and _CONTROL.search(value):
        raise ValueError(_CONTROL_MESSAGE)
    return value


# Before the model trims strings: its trimming takes a leading or trailing \x0b or \x0c
# (Unicode spaces) away, where it should be refused (the API's schema refuses it).
Printable = BeforeValidator(printable)


def _optional_text(value: object) -> object:
    """An empty cell or string means "not given": CSV cannot tell the two apart."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _phone(value: object) -> object:
    if isinstance(value, str):
        value = value.strip()
        if not (_PHONE.fullmatch(value) and any(c.isdigit() for c in value)):
            raise ValueError("bad phone")
    return value


WholeNumber = BeforeValidator(_whole_number)


class RecipientIn(BaseModel):
    """Who receives the goods."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Annotated[str, Field(min_length=1, max_length=64), Printable]
    phone: Annotated[str, BeforeValidator(_phone)]
    address: Annotated[str, Field(min_length=1, max_length=256), Printable]


class OrderIn(BaseModel):
    """The intake body of DESIGN §8, as the API takes it and ``orders import`` reads it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    order_no: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    vendor: str = Field(min_length=1, max_length=64)
    sku: Annotated[str, Field(min_length=1, max_length=64), Printable]
    quantity: Annotated[int, WholeNumber, Field(ge=1, le=999)]
    points: Annotated[int, WholeNumber, Field(ge=0, le=100_000_000)]
    customer_id: Annotated[
        Annotated[str, Field(min_length=1, max_length=64), Printable] | None,
        BeforeValidator(_optional_text),
    ] = None
    payment_status: Annotated[Literal["PAID", "UNPAID"], BeforeValidator(_strip)] = "PAID"
    recipient: RecipientIn

    def to_new_order(self) -> NewOrder:
        return NewOrder(
            order_no=self.order_no,
            vendor=self.vendor,
            sku=self.sku,
            quantity=self.quantity,
            points=self.points,
            recipient=Recipient(
                name=self.recipient.name,
                phone=self.recipient.phone,
                address=self.recipient.address,
            ),
            payment_status=self.payment_status,
            customer_id=self.customer_id,
        )


def _field_error(error: ErrorDetails, location: str | None) -> FieldError:
    field = ".".join(str(part) for part in error["loc"]) or RECORD
    kind = error["type"]
    if kind == "missing":
        message = "required"
    elif kind == "extra_forbidden":
        message = "unknown field"
    elif kind in {"model_type", "model_attributes_type"}:
        message = _RULES.get(field, "must be an object")
    elif kind == "string_type":
        message = "must be a string"
    elif kind == "value_error" and _CONTROL_MESSAGE in error["msg"]:
        message = _CONTROL_MESSAGE
    else:
        message = _RULES.get(field, error["msg"])
    return FieldError(field, message, location)


def validate_order(
    data: object, *, vendors: Collection[str] | None = None, location: str | None = None
) -> NewOrder:
    """Check one intake body and return it as a :class:`NewOrder`.

    Every problem is reported at once (one :class:`FieldError` each, tagged with
    ``location``), so a caller fixes a record in one go rather than one error per attempt.
    With ``vendors``, the vendor must be one of them: an order for a vendor that is not
    configured would only wait and then fail.
    """
    if not isinstance(data, dict):
        raise ValidationFailed([FieldError(RECORD, "must be a JSON object", location)])
    errors: list[FieldError] = []
    model: OrderIn | None = None
    try:
        model = OrderIn.model_validate(data)
    except ValidationError as exc:
        errors.extend(_field_error(e, location) for e in exc.errors())
    if vendors is not None:
        vendor = data.get("vendor")
        vendor = vendor.strip() if isinstance(vendor, str) else vendor
        bad_vendor = any(e.field == "vendor" for e in errors)
        if not bad_vendor and isinstance(vendor, str) and vendor not in vendors:
            configured = ", ".join(sorted(vendors)) or "(none)"
            errors.append(
                FieldError(
                    "vendor", f"unknown vendor {vendor!r}; configured: {configured}", location
                )
            )
    if errors or model is None:
        raise ValidationFailed(sorted(errors, key=_field_order))
    return model.to_new_order()


_ORDER = {
    name: i
    for i, name in enumerate(
        (*_FIELDS, "recipient", *(f"recipient.{f}" for f in _RECIPIENT_FIELDS))
    )
}


def _field_order(error: FieldError) -> int:
    """Errors in the order the fields appear in DESIGN §8, unknown fields last."""
    return _ORDER.get(error.field, len(_ORDER))


# --- files -------------------------------------------------------------------------------


def _decode(raw: bytes, filename: str | None) -> str:
    """UTF-8 (a BOM is dropped), else GB18030: the two encodings Chinese spreadsheets save."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("gb18030")
    except UnicodeDecodeError:
        raise ValidationFailed(
            [FieldError(FILE, "not UTF-8 or GB18030 text; save it as UTF-8", filename)]
        ) from None


def _format(text: str, filename: str | None) -> Literal["csv", "array", "lines"]:
    suffix = filename.rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
    first = text.lstrip()[:1]
    if suffix == "csv":
        return "csv"
    if suffix in ("jsonl", "ndjson"):
        return "lines"
    if suffix == "json":
        # A .json file is often JSON lines in practice; the first character tells them apart.
        return "lines" if first == "{" else "array"
    if first == "[":
        return "array"
    if first == "{":
        return "lines"
    return "csv"


def _json_lines(text: str) -> Iterator[tuple[str, object]]:
    # split("\n"), not splitlines(): U+2028 and friends may appear raw inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record: object = json.loads(line)
        except json.JSONDecodeError as exc:
            record = _BadRecord(
                FieldError(RECORD, f"invalid JSON: {exc.msg} (column {exc.colno})", where)
            )
        except ValueError as exc:  # a number past Python's int digit limit, say
            record = _BadRecord(FieldError(RECORD, f"invalid JSON: {exc}", where))
        yield where, record


def _json_array(text: str) -> Iterator[tuple[str, object]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadRecord(
            FieldError(FILE, f"invalid JSON: {exc.msg} (column {exc.colno})", f"line {exc.lineno}")
        ) from None
    except ValueError as exc:  # a number past Python's int digit limit, say
        raise _BadRecord(FieldError(FILE, f"invalid JSON: {exc}", "line 1")) from None
    if not isinstance(data, list):
        raise _BadRecord(FieldError(FILE, "must be a JSON array of orders"))
    for index, item in enumerate(data):
        yield f"index {index}", item


_COLUMNS = frozenset((*_FIELDS, *(f"recipient.{f}" for f in _RECIPIENT_FIELDS)))
_REQUIRED_COLUMNS = (*_REQUIRED, *(f"recipient.{f}" for f in _RECIPIENT_FIELDS))


def _csv_rows(text: str) -> Iterator[tuple[str, object]]:
    """Rows as nested dicts; numbering counts physical lines, the header being line 1."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise _BadRecord(FieldError(FILE, f"unreadable CSV: {exc}", "line 1")) from None
    if header is None:
        return
    columns = [name.strip() for name in header]
    # Columns without a name (a spreadsheet's trailing commas) are ignored while empty.
    problems = [
        FieldError(name, "unknown column", "line 1")
        for name in columns
        if name and name not in _COLUMNS
    ]
    problems += [
        FieldError(name, "column appears twice", "line 1")
        for name in sorted({n for n in columns if n and columns.count(n) > 1})
    ]
    problems += [
        FieldError(name, "required column missing", "line 1")
        for name in _REQUIRED_COLUMNS
        if name not in columns
    ]
    if problems:
        # A broken header would make every row wrong in the same way: report it once.
        raise ValidationFailed(problems)

    last = reader.line_num
    while True:
        start = last + 1
        try:
            row = next(reader, None)
        except csv.Error as exc:
            raise _BadRecord(
                FieldError(RECORD, f"unreadable CSV: {exc}", f"line {start}")
            ) from None
        last = reader.line_num
        if row is None:
            return
        if not any(cell.strip() for cell in row):
            continue
        where = f"line {start}"
        if len(row) != len(columns):
            yield (
                where,
                _BadRecord(
                    FieldError(
                        RECORD, f"has {len(row)} cells, the header has {len(columns)}", where
                    )
                ),
            )
            continue
        if any(cell.strip() for name, cell in zip(columns, row, strict=True) if not name):
            yield (
                where,
                _BadRecord(FieldError(RECORD, "has a value in a column with no name", where)),
            )
            continue
        # recipient always present, so that empty cells are reported as recipient.name etc.
        record: dict[str, Any] = {"recipient": {}}
        for name, cell in zip(columns, row, strict=True):
            if not name or not cell.strip():
                continue  # an empty cell is a field not given: "required", or its default
            head, _, tail = name.partition(".")
            if tail:
                record[head][tail] = cell
            else:
                record[name] = cell
        yield where, record


class _BadRecord(Exception):
    """A record (or the whole file) that cannot even be read as a record."""

    def __init__(self, error: FieldError) -> None:
        super().__init__(str(error))
        self.error = error


def parse_import(
    raw: bytes, *, filename: str | None = None, vendors: Collection[str] | None = None
) -> list[NewOrder]:
    """Read an ``orders import`` file: JSON lines, a JSON array, or CSV (DESIGN §8).

    The format comes from the extension (``.csv``, ``.json``, ``.jsonl``/``.ndjson``), else
    from the first character. Every record is checked before anything is returned, and all
    the problems are raised together in one :class:`ValidationFailed`, each with its
    ``line N`` (JSON lines and CSV, the header being line 1) or ``index N`` (a JSON array,
    counted from 0): an import is all or nothing. The same order_no twice with the same body
    is one order; with different bodies it is an error.

    >>> [o.order_no for o in parse_import(b"order_no,vendor,sku,quantity,points,"
    ...     b"recipient.name,recipient.phone,recipient.address\\n"
    ...     b"R1,acme,S1,1,10,Li,13800000000,Shanghai\\n")]
    ['R1']
    """
    text = _decode(raw, filename)
    if not text.strip():
        raise ValidationFailed([FieldError(FILE, "no orders in the file", filename)])
    fmt = _format(text, filename)
    records = {"csv": _csv_rows, "array": _json_array, "lines": _json_lines}[fmt](text)

    errors: list[FieldError] = []
    orders: list[NewOrder] = []
    first_seen: dict[str, tuple[str, NewOrder]] = {}
    seen_any = False
    try:
        for where, record in records:
            seen_any = True
            if isinstance(record, _BadRecord):
                errors.append(record.error)
                continue
            try:
                order = validate_order(record, vendors=vendors, location=where)
            except ValidationFailed as exc:
                errors.extend(exc.errors)
                continue
            previous = first_seen.get(order.order_no)
            if previous is None:
                first_seen[order.order_no] = (where, order)
                orders.append(order)
            elif previous[1].body() != order.body():
                errors.append(
                    FieldError(
                        "order_no",
                        f"{order.order_no!r} appears again with a different body "
                        f"(first at {previous[0]})",
                        where,
                    )
                )
    except _BadRecord as exc:
        errors.append(exc.error)
    if not seen_any and not errors:
        errors.append(FieldError(FILE, "no orders in the file", filename))
    if errors:
        raise ValidationFailed(errors)
    return orders
