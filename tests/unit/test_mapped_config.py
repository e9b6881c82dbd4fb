"""The ``mapped`` adapter's config and requests, and the simulator's dialects, without I/O.

Config errors must name the dotted key (``vendors.acme.mapping.query.codes.2004``) and say
what is allowed; requests must carry each field from its configured source, in the
configured body shape and timestamp format, signed over exactly what is sent.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orderwatch.clock import ManualClock
from orderwatch.errors import ConfigError
from orderwatch.order import Order, evolve
from orderwatch.outcomes import Delivered
from orderwatch.settings import VendorSettings, load_settings
from orderwatch.sim_dialect import REFERENCE, dialect_from_dict, load_dialect
from orderwatch.simulator import _check
from orderwatch.vendors import signing
from orderwatch.vendors.mapped import MappedAdapter, probe_order

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "vendors"
NOON_UTC = datetime(2026, 11, 26, 4, 5, 6, 789000, tzinfo=UTC)  # 12:05:06 in Beijing

MAPPING: dict[str, Any] = {
    "body": "json",
    "answer": {"code": "ret", "message": "msg", "status": "data.state"},
    "place": {
        "path": "/order/create",
        "fields": {
            "mch": "merchant_id",
            "no": "order.order_no",
            "goods.sku": "order.sku",
            "goods.qty": "order.quantity",
            "to": "order.recipient",
            "items": "order.items",
            "customer": "order.customer_id",
            "channel": "const:BANK",
            "version": 2,
            "test": False,
            "ts": "timestamp",
            "nonce": "nonce",
        },
        "codes": {"0": "accepted", "1001": {"outcome": "rejected", "reason": "sold out"}},
    },
    "query": {
        "path": "/order/query",
        "fields": {"mch": "merchant_id", "no": "order.order_no", "ts": "timestamp"},
        "codes": {"0": "status", "404": "unknown_order"},
        "statuses": {"1": "processing", "2": "shipped", "3": "delivered", "4": "failed"},
    },
}


def load(mapping: Any, **vendor: Any) -> VendorSettings:
    cfg = {
        "adapter": "mapped",
        "base_url": "http://127.0.0.1:9",
        "merchant_id": "M1",
        "secret": "s",
        "mapping": mapping,
        **vendor,
    }
    loaded = load_settings(None, env={}, overrides={"vendors": {"acme": cfg}})
    return loaded.settings.vendors["acme"]


def problems(mapping: Any, **vendor: Any) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(mapping, **vendor)
    return exc.value.problems


def changed(path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(MAPPING)
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return out


# ------------------------------------------------------------------------ config


@pytest.mark.parametrize("name", ["giftco", "shopmall"])
def test_the_example_configs_load(name: str) -> None:
    loaded = load_settings(
        EXAMPLES / f"{name}.toml", env={f"{name.upper()}_SECRET": "from-env"}
    ).settings
    vendor = loaded.vendors[name]
    assert vendor.adapter == "mapped"
    assert vendor.mapping is not None
    assert vendor.secret is not None
    assert vendor.secret.get_secret_value() == "from-env"


@pytest.mark.parametrize(
    ("path", "value", "where", "says"),
    [
        ("query.fieldz", {}, "vendors.acme.mapping.query.fieldz", "unknown key"),
        ("place.fields.no", "order.number", "vendors.acme.mapping.place.fields", "'no'"),
        ("place.fields.no", "order.number", "vendors.acme.mapping.place.fields", "const:TEXT"),
        ("query.codes.404", "not_found", "vendors.acme.mapping.query.codes", "unknown_order"),
        ("place.codes.0", "delivered", "vendors.acme.mapping.place.codes", "accepted"),
        ("query.codes.404", {"outcome": "failed", "reason": "x"}, "query.codes", "reason"),
        ("query.statuses", None, "vendors.acme.mapping.query", "no 'statuses' table"),
        ("query.path", "order/query", "vendors.acme.mapping.query.path", "start with '/'"),
        ("query.method", "PATCH", "vendors.acme.mapping.query.method", "POST"),
        ("body", "xml", "vendors.acme.mapping.body", "json"),
        ("timestamp", "minutes", "vendors.acme.mapping.timestamp", "yyyyMMddHHmmss"),
        ("timezone", "Mars/Olympus", "vendors.acme.mapping.timezone", "unknown time zone"),
        ("answer.status", "data..state", "vendors.acme.mapping.answer.status", "dotted path"),
        ("query.answer", {"stat": "x"}, "vendors.acme.mapping.query.answer", "stat"),
        ("place.fields", {}, "vendors.acme.mapping.place.fields", "at least 1"),
        ("place", None, "vendors.acme.mapping.place", "required"),
    ],
)
def test_config_errors_name_the_key(path: str, value: Any, where: str, says: str) -> None:
    found = problems(changed(path, value))
    assert any(where in p and says in p for p in found), found


def test_a_table_without_its_path_is_refused() -> None:
    mapping = changed("answer.status", None)
    mapping["answer"]["status"] = None
    found = problems(mapping)
    assert any("query.statuses is given but answer.status is unset" in p for p in found), found


def test_mapped_needs_a_mapping_and_reference_refuses_one() -> None:
    found = problems(None)
    assert any(p.startswith("vendors.acme.mapping") and "required when" in p for p in found)
    found = problems(MAPPING, adapter="reference")
    assert any("vendors.acme.mapping" in p and "only read by" in p for p in found), found


def test_operation_answer_paths_override_the_shared_ones() -> None:
    mapping = changed("query.answer", {"status": "data.result.state"})
    vendor = load(mapping)
    assert vendor.mapping is not None
    assert vendor.mapping.answer_for("query").status == "data.result.state"
    assert vendor.mapping.answer_for("query").code == "ret"
    assert vendor.mapping.answer_for("place").status == "data.state"


# ------------------------------------------------------------------------ requests


def order(customer_id: str | None = "C9") -> Order:
    return evolve(probe_order("R-1", "acme", NOON_UTC), customer_id=customer_id)


def adapter(mapping: Any, **vendor: Any) -> MappedAdapter:
    return MappedAdapter("acme", load(mapping, **vendor), clock=ManualClock(NOON_UTC))


def test_json_request_fields_come_from_their_sources() -> None:
    fields, headers = adapter(MAPPING).build("place", order())
    assert headers == {}
    assert fields["mch"] == "M1"
    assert fields["no"] == "R-1"
    assert fields["goods"] == {"sku": "CHECK-SKU", "qty": 1}  # dotted names nest
    assert fields["to"] == {"name": "check", "phone": "00000000000", "address": "check"}
    assert fields["items"] == [{"sku": "CHECK-SKU", "quantity": 1}]
    assert fields["customer"] == "C9"
    assert (fields["channel"], fields["version"], fields["test"]) == ("BANK", 2, False)
    assert fields["ts"] == int(NOON_UTC.timestamp())
    assert len(fields["nonce"]) == 32
    assert signing.verify(fields, "s", "HMAC-SHA256")


@pytest.mark.parametrize("length", [8, 9, 17, 64])
def test_nonce_length(length: int) -> None:
    fields, _ = adapter({**MAPPING, "nonce_length": length}).build("place", order())
    assert len(fields["nonce"]) == length
    assert fields["nonce"] != adapter(MAPPING).build("place", order())[0]["nonce"]


def test_absent_values_are_not_sent() -> None:
    fields, _ = adapter(MAPPING).build("place", order(customer_id=None))
    assert "customer" not in fields


@pytest.mark.parametrize(
    ("fmt", "tz", "expected"),
    [
        ("seconds", "Asia/Shanghai", 1795665906),
        ("milliseconds", "Asia/Shanghai", 1795665906789),
        ("yyyyMMddHHmmss", "Asia/Shanghai", "20261126120506"),
        ("yyyyMMddHHmmss", "UTC", "20261126040506"),
    ],
)
def test_timestamp_formats(fmt: str, tz: str, expected: int | str) -> None:
    mapping = {**MAPPING, "timestamp": fmt, "timezone": tz}
    fields, _ = adapter(mapping).build("query", order())
    assert fields["ts"] == expected


def test_form_bodies_send_text_and_sign_it() -> None:
    fields, _ = adapter({**MAPPING, "body": "form"}, sign_type="MD5").build("place", order())
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["goods.qty"] == "1"  # a form has no nesting: the name is sent as written
    assert fields["test"] == "false"
    assert json.loads(fields["to"]) == {"name": "check", "phone": "00000000000", "address": "check"}
    assert signing.verify(fields, "s", "MD5")
    assert fields["sign"] == fields["sign"].upper()


def test_header_signatures_leave_the_body_alone() -> None:
    a = adapter(MAPPING, sign_location="header", sign_header="X-Sig")
    fields, headers = a.build("query", order())
    assert "sign" not in fields
    assert signing.Signer(secret="s").verify(fields, headers["X-Sig"])
    answer = {"ret": "0", "data": {"state": "3"}}
    sig = signing.Signer(secret="s").sign(answer)
    body = json.dumps(answer).encode()
    ok = a.interpret("query", http_status=200, body=body, headers={"X-Sig": sig})
    assert ok.signature == "valid"
    assert ok.outcome == Delivered(None, None, None)
    in_body = json.dumps({**answer, "sign": sig}).encode()
    assert a.interpret("query", http_status=200, body=in_body).signature == "missing"


# ------------------------------------------------------------------------ dialects


def test_the_reference_dialect_is_the_default() -> None:
    assert REFERENCE.is_reference
    assert not load_dialect(EXAMPLES / "giftco.sim.toml").is_reference


def test_a_dialect_reads_requests_into_the_reference_shape() -> None:
    giftco = load_dialect(EXAMPLES / "giftco.sim.toml")
    raw = (
        "mchId=GC1&outTradeNo=R1&goodsCode=SKU&goodsNum=2&points=10&receiverName=%E5%BC%A0"
        "&receiverMobile=138&receiverAddress=addr&reqTime=20261126120506&nonceStr=" + "n" * 16
    )
    decoded = giftco.decode(raw.encode() + b"&sign=ABC", {}, "POST")
    assert isinstance(decoded, dict)
    body = giftco.to_reference(decoded)
    assert isinstance(body, dict)
    assert body["recipient"] == {"name": "张", "phone": "138", "address": "addr"}
    assert (body["quantity"], body["points"]) == (2, 10)
    assert body["timestamp"] == 1795665906  # Beijing time read back to Unix seconds
    assert _check(body, place=True) is None
    bad = giftco.to_reference({**decoded, "reqTime": "2026-11-26"})
    assert bad == "reqTime: must be a timestamp in yyyyMMddHHmmss"
    assert giftco.problem("order_no: must be a string") == "outTradeNo: must be a string"
    assert giftco.decode(b"\xff\xfe", {}, "POST") == (
        "body: not a valid form (application/x-www-form-urlencoded)"
    )


def test_a_dialect_writes_answers_in_the_vendors_shape() -> None:
    shopmall = load_dialect(EXAMPLES / "shopmall.sim.toml")
    out = shopmall.to_vendor(
        {
            "code": "0000",
            "message": "ok",
            "data": {
                "vendor_order_id": "V1",
                "status": "SHIPPED",
                "logistics": {"carrier": "SF", "events": [{"at": "t", "text": "x"}]},
            },
        }
    )
    assert out == {
        "errcode": 0,
        "errmsg": "ok",
        "data": {
            "result": {
                "mallOrderId": "V1",
                "state": "DELIVERING",
                "delivery": {"company": "SF", "nodes": [{"time": "t", "content": "x"}]},
            }
        },
    }


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"body": "xml"}, "body: must be 'json' or 'form'"),
        ({"timestamp": "minutes"}, "timestamp: must be one of"),
        ({"request": {"order_number": "x"}}, "request.order_number: not a field"),
        ({"answer": {"data.state": "x"}}, "answer.data.state: not a path"),
        ({"codes": {"0000": True}}, "codes.0000: must be a string or an integer"),
        ({"place": {"path": "orders"}}, "place.path: must start with '/'"),
        ({"query": {"path": "/orders"}}, "query.path: must differ from place.path"),
        ({"sign_location": "cookie"}, "sign_location: must be 'body' or 'header'"),
        ({"colour": "red"}, "unknown key(s) colour"),
    ],
)
def test_dialect_errors_name_the_key(data: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        dialect_from_dict(data)
