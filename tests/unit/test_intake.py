"""Intake rules (DESIGN §8): what a caller or an import file gets told when a record is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orderwatch.errors import FieldError, ValidationFailed
from orderwatch.intake import parse_import, validate_order
from orderwatch.order import NewOrder, Recipient

VENDORS = ("acme", "beta")

HEADER = (
    "order_no,vendor,sku,quantity,points,customer_id,payment_status,"
    "recipient.name,recipient.phone,recipient.address"
)


def body(**changes: Any) -> dict[str, Any]:
    """A valid intake body; ``changes`` replace fields (``...`` removes one)."""
    data: dict[str, Any] = {
        "order_no": "R20261126000001",
        "vendor": "acme",
        "sku": "SKU-1001",
        "quantity": 1,
        "points": 12000,
        "customer_id": "C0001",
        "payment_status": "PAID",
        "recipient": {
            "name": "张三",
            "phone": "13800000000",
            "address": "上海市浦东新区世纪大道1号",
        },
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def recipient(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "张三",
        "phone": "13800000000",
        "address": "上海市浦东新区世纪大道1号",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def errors_of(data: object, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as info:
        validate_order(data, **kwargs)
    return [(e.field, e.message) for e in info.value.errors]


def fields_of(data: object, **kwargs: Any) -> list[str]:
    return [field for field, _ in errors_of(data, **kwargs)]


def import_errors(raw: bytes, **kwargs: Any) -> list[FieldError]:
    with pytest.raises(ValidationFailed) as info:
        parse_import(raw, **kwargs)
    return info.value.errors


def where(errors: list[FieldError]) -> list[tuple[str | None, str]]:
    return [(e.location, e.field) for e in errors]


# --- validate_order ----------------------------------------------------------------------


def test_valid_body_becomes_new_order() -> None:
    order = validate_order(body(), vendors=VENDORS)
    assert order == NewOrder(
        order_no="R20261126000001",
        vendor="acme",
        sku="SKU-1001",
        quantity=1,
        points=12000,
        recipient=Recipient("张三", "13800000000", "上海市浦东新区世纪大道1号"),
        payment_status="PAID",
        customer_id="C0001",
    )


def test_defaults_and_whitespace() -> None:
    order = validate_order(
        body(
            order_no="  R1 ",
            sku=" SKU-1 ",
            customer_id=...,
            payment_status=...,
            recipient=recipient(name=" 李四 ", phone=" +86 138-0000-0000 "),
        )
    )
    assert (order.order_no, order.sku) == ("R1", "SKU-1")
    assert order.payment_status == "PAID"
    assert order.customer_id is None
    assert order.recipient.name == "李四"
    assert order.recipient.phone == "+86 138-0000-0000"


def test_empty_customer_id_means_none() -> None:
    assert validate_order(body(customer_id="")).customer_id is None
    assert validate_order(body(customer_id="   ")).customer_id is None
    assert validate_order(body(customer_id=None)).customer_id is None


def test_unpaid_is_accepted() -> None:
    assert validate_order(body(payment_status="UNPAID")).payment_status == "UNPAID"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"order_no": ""}, "order_no", "must be 1-64 characters of A-Z a-z 0-9 _ -"),
        ({"order_no": "R 1"}, "order_no", "must be 1-64 characters of A-Z a-z 0-9 _ -"),
        ({"order_no": "订单1"}, "order_no", "must be 1-64 characters of A-Z a-z 0-9 _ -"),
        ({"order_no": "R" * 65}, "order_no", "must be 1-64 characters of A-Z a-z 0-9 _ -"),
        ({"order_no": 123}, "order_no", "must be a string"),
        ({"vendor": ""}, "vendor", "must be 1-64 characters"),
        ({"vendor": "v" * 65}, "vendor", "must be 1-64 characters"),
        ({"sku": "  "}, "sku", "must be 1-64 characters"),
        ({"sku": "S" * 65}, "sku", "must be 1-64 characters"),
        ({"quantity": 0}, "quantity", "must be a whole number from 1 to 999"),
        ({"quantity": 1000}, "quantity", "must be a whole number from 1 to 999"),
        ({"quantity": True}, "quantity", "must be a whole number from 1 to 999"),
        ({"quantity": 1.5}, "quantity", "must be a whole number from 1 to 999"),
        ({"quantity": "abc"}, "quantity", "must be a whole number from 1 to 999"),
        ({"quantity": None}, "quantity", "must be a whole number from 1 to 999"),
        ({"points": -1}, "points", "must be a whole number from 0 to 100000000"),
        ({"points": 100_000_001}, "points", "must be a whole number from 0 to 100000000"),
        ({"points": False}, "points", "must be a whole number from 0 to 100000000"),
        ({"customer_id": "C" * 65}, "customer_id", "must be 1-64 characters, or empty"),
        ({"customer_id": 7}, "customer_id", "must be a string"),
        ({"payment_status": "paid"}, "payment_status", "must be PAID or UNPAID"),
        ({"payment_status": "REFUNDED"}, "payment_status", "must be PAID or UNPAID"),
        ({"recipient": "张三"}, "recipient", "must be an object with name, phone and address"),
        ({"recipient": recipient(name="")}, "recipient.name", "must be 1-64 characters"),
        ({"recipient": recipient(name="名" * 65)}, "recipient.name", "must be 1-64 characters"),
        ({"recipient": recipient(address="")}, "recipient.address", "must be 1-256 characters"),
        (
            {"recipient": recipient(address="路" * 257)},
            "recipient.address",
            "must be 1-256 characters",
        ),
        ({"recipient": recipient(phone=13800000000)}, "recipient.phone", "must be a string"),
        ({"recipient": recipient(name=...)}, "recipient.name", "required"),
        ({"recipient": recipient(extra="x")}, "recipient.extra", "unknown field"),
        ({"order_no": ...}, "order_no", "required"),
        ({"recipient": ...}, "recipient", "required"),
        ({"priority": "high"}, "priority", "unknown field"),
    ],
)
def test_each_problem_names_its_field(changes: dict[str, Any], field: str, message: str) -> None:
    assert errors_of(body(**changes)) == [(field, message)]


@pytest.mark.parametrize("phone", ["1234", "1" * 21, "138-abcd-0000", "-----", "138\t0000"])
def test_bad_phones(phone: str) -> None:
    assert fields_of(body(recipient=recipient(phone=phone))) == ["recipient.phone"]


def test_longest_and_shortest_values_pass() -> None:
    order = validate_order(
        body(
            order_no="a_B-9" * 12 + "abcd",
            quantity=999,
            points=100_000_000,
            recipient=recipient(phone="12345", address="路" * 256, name="名" * 64),
        )
    )
    assert len(order.order_no) == 64
    assert validate_order(body(quantity=1, points=0)).points == 0


def test_unknown_vendor_lists_configured_ones() -> None:
    assert errors_of(body(vendor="gamma"), vendors=["beta", "acme"]) == [
        ("vendor", "unknown vendor 'gamma'; configured: acme, beta")
    ]
    assert errors_of(body(vendor="acme"), vendors=[]) == [
        ("vendor", "unknown vendor 'acme'; configured: (none)")
    ]
    # Without a vendor list, any well-formed vendor name passes.
    assert validate_order(body(vendor="gamma")).vendor == "gamma"


def test_every_problem_reported_at_once_in_field_order() -> None:
    data = body(
        order_no="bad no",
        vendor="gamma",
        quantity=0,
        points="lots",
        payment_status="?",
        recipient={"name": "", "phone": "x", "city": "SH"},
        note="hi",
    )
    assert fields_of(data, vendors=VENDORS) == [
        "order_no",
        "vendor",
        "quantity",
        "points",
        "payment_status",
        "recipient.name",
        "recipient.phone",
        "recipient.address",
        "recipient.city",
        "note",
    ]


def test_location_is_attached() -> None:
    with pytest.raises(ValidationFailed) as info:
        validate_order(body(quantity=0), location="line 7")
    assert info.value.errors == [
        FieldError("quantity", "must be a whole number from 1 to 999", "line 7")
    ]
    assert str(info.value) == "line 7: quantity: must be a whole number from 1 to 999"


@pytest.mark.parametrize("data", [[body()], "order", None, 42])
def test_body_must_be_an_object(data: object) -> None:
    assert errors_of(data) == [("(record)", "must be a JSON object")]


# --- parse_import: formats ---------------------------------------------------------------


def jsonl(*records: object) -> bytes:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()


def csv_bytes(*rows: str, encoding: str = "utf-8", header: str = HEADER) -> bytes:
    return "\r\n".join((header, *rows)).encode(encoding) + b"\r\n"


def test_json_lines() -> None:
    raw = jsonl(body(order_no="R1"), body(order_no="R2", quantity=2)) + b"\n\n"
    orders = parse_import(raw, filename="orders.jsonl", vendors=VENDORS)
    assert [(o.order_no, o.quantity) for o in orders] == [("R1", 1), ("R2", 2)]
    assert orders[0].recipient.name == "张三"


def test_json_array() -> None:
    raw = json.dumps([body(order_no="R1"), body(order_no="R2")]).encode()
    orders = parse_import(raw, filename="orders.json")
    assert [o.order_no for o in orders] == ["R1", "R2"]


@pytest.mark.parametrize("filename", [None, "orders.txt", "orders"])
def test_format_sniffed_without_known_extension(filename: str | None) -> None:
    array = json.dumps([body(order_no="A1")]).encode()
    lines = jsonl(body(order_no="L1"), body(order_no="L2"))
    table = csv_bytes("C1,acme,SKU-1,1,10,,,张三,13800000000,上海市浦东新区")
    assert [o.order_no for o in parse_import(b"  \n" + array, filename=filename)] == ["A1"]
    assert [o.order_no for o in parse_import(lines, filename=filename)] == ["L1", "L2"]
    assert [o.order_no for o in parse_import(table, filename=filename)] == ["C1"]


def test_json_lines_in_a_dot_json_file() -> None:
    raw = jsonl(body(order_no="R1"), body(order_no="R2"))
    assert [o.order_no for o in parse_import(raw, filename="orders.json")] == ["R1", "R2"]


def test_csv_values_arrive_as_strings() -> None:
    raw = csv_bytes(
        "R1,acme,SKU-1,3,12000,C0001,UNPAID,张三,13800000000,上海市浦东新区",
        "R2,beta,SKU-2, 2 ,0,,,李四,+86 138 0000 0000,北京市朝阳区",
    )
    first, second = parse_import(raw, filename="orders.csv", vendors=VENDORS)
    assert (first.quantity, first.points, first.payment_status, first.customer_id) == (
        3,
        12000,
        "UNPAID",
        "C0001",
    )
    # Empty cells are fields not given: customer_id None, payment_status its default.
    assert (second.quantity, second.points, second.customer_id) == (2, 0, None)
    assert second.payment_status == "PAID"
    assert second.recipient.phone == "+86 138 0000 0000"


def test_csv_column_order_is_free_and_optional_columns_may_be_absent() -> None:
    header = "recipient.address,recipient.phone,recipient.name,points,quantity,sku,vendor,order_no"
    raw = csv_bytes("上海市浦东新区,13800000000,张三,10,1,SKU-1,acme,R1", header=header)
    (order,) = parse_import(raw, filename="orders.csv")
    assert (order.order_no, order.recipient.address, order.customer_id) == (
        "R1",
        "上海市浦东新区",
        None,
    )


def test_gb18030_csv_with_chinese_names() -> None:
    raw = csv_bytes(
        "R1,acme,SKU-1,1,10,,,张三,13800000000,上海市浦东新区世纪大道1号",
        "R2,acme,SKU-1,1,10,,,欧阳娜娜,13900000000,广州市天河区",
        encoding="gb18030",
    )
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # the test really exercises the fallback
    orders = parse_import(raw, filename="订单.csv")
    assert [o.recipient.name for o in orders] == ["张三", "欧阳娜娜"]
    assert orders[1].recipient.address == "广州市天河区"


def test_utf8_bom_csv() -> None:
    raw = b"\xef\xbb\xbf" + csv_bytes("R1,acme,SKU-1,1,10,,,张三,13800000000,上海市浦东新区")
    (order,) = parse_import(raw, filename="orders.csv")
    assert order.order_no == "R1"  # not "\ufeffR1", and order_no is a known column
    assert order.recipient.name == "张三"


def test_utf8_bom_json_lines() -> None:
    raw = b"\xef\xbb\xbf" + jsonl(body(order_no="R1"))
    assert [o.order_no for o in parse_import(raw)] == ["R1"]


def test_undecodable_file_is_named() -> None:
    errors = import_errors(b"\xff\xfe\x00o\x00r", filename="orders.csv")
    assert where(errors) == [("orders.csv", "(file)")]
    assert "UTF-8" in errors[0].message
    assert "GB18030" in errors[0].message


@pytest.mark.parametrize("raw", [b"", b"  \r\n\n", b"\xef\xbb\xbf", b"[]", HEADER.encode()])
def test_empty_file_is_an_error(raw: bytes) -> None:
    errors = import_errors(raw, filename="orders.csv" if raw.startswith(b"order") else None)
    assert [(e.field, e.message) for e in errors] == [("(file)", "no orders in the file")]


# --- parse_import: errors carry their place ----------------------------------------------


def test_jsonl_errors_carry_line_numbers_and_only_bad_records() -> None:
    raw = b"\n".join(
        [
            jsonl(body(order_no="R1")),
            jsonl(body(order_no="R2", quantity=0)),
            b"",
            jsonl(body(order_no="R3")),
            b'{"order_no": "R4", ',
            b"[1, 2]",
            jsonl(body(order_no="R6", recipient=recipient(phone="call me"))),
        ]
    )
    errors = import_errors(raw, filename="orders.jsonl", vendors=VENDORS)
    assert where(errors) == [
        ("line 2", "quantity"),
        ("line 5", "(record)"),
        ("line 6", "(record)"),
        ("line 7", "recipient.phone"),
    ]
    assert errors[1].message.startswith("invalid JSON")
    assert errors[2].message == "must be a JSON object"


def test_json_array_errors_carry_index() -> None:
    raw = json.dumps(
        [body(order_no="R0"), body(order_no="R1", vendor="gamma"), body(order_no="R2"), "x"]
    ).encode()
    errors = import_errors(raw, filename="orders.json", vendors=VENDORS)
    assert where(errors) == [("index 1", "vendor"), ("index 3", "(record)")]
    assert errors[0].message == "unknown vendor 'gamma'; configured: acme, beta"


def test_json_array_syntax_error_says_where() -> None:
    errors = import_errors(b'[\n{"order_no": "R1"},\n{oops}\n]', filename="orders.json")
    assert where(errors) == [("line 3", "(file)")]
    assert errors[0].message.startswith("invalid JSON")


def test_json_array_must_be_an_array() -> None:
    errors = import_errors(b'"orders"', filename="orders.json")
    assert [(e.field, e.message) for e in errors] == [("(file)", "must be a JSON array of orders")]


def test_csv_errors_count_the_header_as_line_1() -> None:
    raw = csv_bytes(
        "R1,acme,SKU-1,1,10,,,张三,13800000000,上海市浦东新区",  # line 2
        "R2,acme,SKU-1,1.5,abc,,,张三,13800000000,上海市浦东新区",  # line 3
        "",  # line 4, blank: skipped but counted
        'R3,acme,SKU-1,1,10,,,"王\n五",13800000000,上海',  # lines 5-6, a quoted newline
        "R4,acme,SKU-1,1,10,,paid,,13800000000,上海市浦东新区",  # line 7
        "R5,acme,SKU-1,1,10",  # line 8
    )
    errors = import_errors(raw, filename="orders.csv")
    assert where(errors) == [
        ("line 3", "quantity"),
        ("line 3", "points"),
        ("line 7", "payment_status"),
        ("line 7", "recipient.name"),
        ("line 8", "(record)"),
    ]
    assert [e.message for e in errors[:4]] == [
        "must be a whole number from 1 to 999",
        "must be a whole number from 0 to 100000000",
        "must be PAID or UNPAID",
        "required",
    ]
    assert errors[4].message == "has 5 cells, the header has 10"
    assert str(errors[0]) == "line 3: quantity: must be a whole number from 1 to 999"


def test_csv_bad_header_is_reported_once() -> None:
    header = "order_no,vendor,sku,qty,points,recipient.name,recipient.phone,order_no"
    raw = csv_bytes("R1,acme,SKU-1,1,10,张三,13800000000,R1", header=header)
    errors = import_errors(raw, filename="orders.csv")
    assert [(e.location, e.field, e.message) for e in errors] == [
        ("line 1", "qty", "unknown column"),
        ("line 1", "order_no", "column appears twice"),
        ("line 1", "quantity", "required column missing"),
        ("line 1", "recipient.address", "required column missing"),
    ]


def test_csv_trailing_unnamed_columns_are_ignored_while_empty() -> None:
    raw = csv_bytes(
        "R1,acme,SKU-1,1,10,,,张三,13800000000,上海市浦东新区,,",
        "R2,acme,SKU-1,1,10,,,张三,13800000000,上海市浦东新区,,stray",
        header=HEADER + ",,",
    )
    errors = import_errors(raw, filename="orders.csv")
    assert where(errors) == [("line 3", "(record)")]


def test_unknown_vendor_in_csv() -> None:
    raw = csv_bytes("R1,gamma,SKU-1,1,10,,,张三,13800000000,上海市浦东新区")
    errors = import_errors(raw, filename="orders.csv", vendors=VENDORS)
    assert [(e.location, e.field, e.message) for e in errors] == [
        ("line 2", "vendor", "unknown vendor 'gamma'; configured: acme, beta")
    ]


# --- parse_import: duplicates ------------------------------------------------------------


def test_identical_duplicates_collapse() -> None:
    raw = jsonl(body(order_no="R1"), body(order_no="R2"), body(order_no="R1"))
    assert [o.order_no for o in parse_import(raw)] == ["R1", "R2"]


def test_identical_after_normalising_collapse() -> None:
    raw = csv_bytes(
        "R1,acme,SKU-1,1,10,,PAID,张三,13800000000,上海市浦东新区",
        " R1 ,acme,SKU-1,01,10,, ,张三,13800000000,上海市浦东新区",
    )
    assert [o.order_no for o in parse_import(raw, filename="orders.csv")] == ["R1"]


def test_same_order_no_with_another_body_is_an_error() -> None:
    raw = jsonl(body(order_no="R1"), body(order_no="R2"), body(order_no="R1", points=5))
    errors = import_errors(raw)
    assert [(e.location, e.field, e.message) for e in errors] == [
        ("line 3", "order_no", "'R1' appears again with a different body (first at line 1)")
    ]


def test_every_bad_record_is_listed_not_just_the_first() -> None:
    good = [body(order_no=f"G{i}") for i in range(50)]
    bad = [body(order_no=f"B{i}", quantity=0) for i in range(3)]
    records = [*good[:10], bad[0], *good[10:30], bad[1], *good[30:], bad[2]]
    errors = import_errors(json.dumps(records).encode(), filename="orders.json")
    assert where(errors) == [
        ("index 10", "quantity"),
        ("index 31", "quantity"),
        ("index 52", "quantity"),
    ]


def test_csv_empty_recipient_cells_name_each_field() -> None:
    raw = csv_bytes("R1,acme,SKU-1,1,10,,,,,")
    errors = import_errors(raw, filename="orders.csv")
    assert [(e.location, e.field, e.message) for e in errors] == [
        ("line 2", "recipient.name", "required"),
        ("line 2", "recipient.phone", "required"),
        ("line 2", "recipient.address", "required"),
    ]
