"""Bad import files and text that the databases cannot store."""

from __future__ import annotations

import json

import pytest

from orderwatch.errors import ValidationFailed
from orderwatch.intake import parse_import, validate_order

VENDORS = ("acme",)


def body(no: str = "R1", **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "order_no": no,
        "vendor": "acme",
        "sku": "SKU-1",
        "quantity": 1,
        "points": 10,
        "recipient": {"name": "张三", "phone": "13800000000", "address": "上海市浦东新区"},
    }
    data.update(changes)
    return data


HUGE = "9" * 5000  # past Python's 4300-digit int conversion limit


@pytest.mark.parametrize(
    ("raw", "filename", "location"),
    [
        # line 2 of a JSON lines file has a 5000-digit number
        (
            json.dumps(body("R1"))
            + "\n"
            + json.dumps(body("R2")).replace('"points": 10', f'"points": {HUGE}'),
            "orders.jsonl",
            "line 2",
        ),
        (
            "["
            + json.dumps(body("R1"))
            + ","
            + json.dumps(body("R2")).replace('"points": 10', f'"points": {HUGE}')
            + "]",
            "orders.json",
            "line 1",
        ),
    ],
)
def test_a_huge_json_number_is_a_field_error_not_a_crash(
    raw: str, filename: str, location: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_import(raw.encode(), filename=filename, vendors=VENDORS)
    assert any(e.location == location for e in info.value.errors), info.value.errors


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sku": "SKU\x001"}, "sku"),
        ({"customer_id": "C\x000"}, "customer_id"),
        (
            {"recipient": {"name": "张\x00三", "phone": "13800000000", "address": "上海"}},
            "recipient.name",
        ),
        (
            {"recipient": {"name": "张三", "phone": "13800000000", "address": "上海\x00"}},
            "recipient.address",
        ),
        # \x0b and \x0c are Unicode spaces (\x1c-\x1f too, for Python's strip): refused,
        # not trimmed away
        ({"sku": "SKU-1\x0c"}, "sku"),
        ({"customer_id": "\x0bC0001"}, "customer_id"),
        (
            {"recipient": {"name": "张三\x1c", "phone": "13800000000", "address": "上海"}},
            "recipient.name",
        ),
    ],
)
def test_control_characters_are_refused_by_field(changes: dict[str, object], field: str) -> None:
    # PostgreSQL cannot store NUL in a text column: accepted here, the insert fails with
    # psycopg.DataError (API: 500, `orders import`: a traceback) instead of naming the field.
    with pytest.raises(ValidationFailed) as info:
        validate_order(body(**changes), vendors=VENDORS)
    assert [e.field for e in info.value.errors] == [field]
