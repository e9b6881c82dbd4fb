"""The public JSON shape of an order (DESIGN §8), masking and RFC 3339 times."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderwatch import jsontext
from orderwatch.lifecycle import Event, Transition
from orderwatch.order import Order, Recipient
from orderwatch.statuses import Reason, Status
from orderwatch.views import (
    event_view,
    mask_address,
    mask_phone,
    notification_body,
    order_view,
    rfc3339,
)

T0 = datetime(2026, 11, 26, 1, 2, 3, tzinfo=UTC)


def make_order(**changes: Any) -> Order:
    fields: dict[str, Any] = {
        "id": 7,
        "order_no": "R20261126000001",
        "vendor": "acme",
        "sku": "SKU-1001",
        "quantity": 1,
        "points": 12000,
        "recipient": Recipient("张三", "13800000000", "上海市浦东新区世纪大道1号"),
        "payment_status": "PAID",
        "customer_id": "C0001",
        "status": Status.ORDERED,
        "reason": None,
        "description": "in transit",
        "vendor_order_id": "V8842001",
        "vendor_status": "SHIPPED",
        "logistics": {"carrier": "SF", "tracking_no": "SF1234567890", "events": []},
        "queries": 4,
        "abnormal": 1,
        "takeovers": 0,
        "placements": 1,
        "unknown_streak": 0,
        "next_run_at": datetime(2026, 11, 26, 8, 40, tzinfo=UTC),
        "started_at": T0,
        "placed_at": T0 + timedelta(seconds=5),
        "created_at": T0,
        "updated_at": datetime(2026, 11, 26, 6, 40, tzinfo=UTC),
        "lease_token": "secret-lease",
        "extra": {"internal": True},
    }
    fields.update(changes)
    return Order(**fields)


def assert_plain_json(value: object) -> None:
    """Only str/int/float/bool/None/list/dict, all the way down (no enums, no datetimes)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_json(item)
    else:
        assert value is None or type(value) in (str, int, float, bool), repr(value)


# --- masking -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13800000000", "138****0000"),
        ("+8613800000000", "+86****0000"),
        ("02112345678", "021****5678"),
        ("12345678", "123****5678"),
        ("1234567", "1****7"),
        ("12345", "1****5"),
        ("123", "1****3"),
        ("12", "****"),
        ("", ""),
    ],
)
def test_mask_phone(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("上海市浦东新区世纪大道1号", "上海市浦东新****"),
        ("1 Infinite Loop, Cupertino", "1 Infi****"),
        ("北京市朝阳区X", "北京市朝阳区****"),
        ("北京市朝阳区", "北京市****"),  # never the whole of a short address
        ("北京", "北****"),
        ("", ""),
    ],
)
def test_mask_address(address: str, masked: str) -> None:
    assert mask_address(address) == masked


# --- rfc3339 -----------------------------------------------------------------------------


def test_rfc3339_seconds_precision_with_z() -> None:
    assert rfc3339(T0) == "2026-11-26T01:02:03Z"


def test_rfc3339_keeps_microseconds_when_present() -> None:
    assert rfc3339(T0.replace(microsecond=120)) == "2026-11-26T01:02:03.000120Z"


def test_rfc3339_converts_to_utc() -> None:
    shanghai = timezone(timedelta(hours=8))
    assert rfc3339(datetime(2026, 11, 26, 9, 2, 3, tzinfo=shanghai)) == "2026-11-26T01:02:03Z"
    # Across a day boundary, too.
    assert rfc3339(datetime(2026, 11, 27, 0, 30, tzinfo=shanghai)) == "2026-11-26T16:30:00Z"


def test_rfc3339_naive_is_taken_as_utc() -> None:
    assert rfc3339(datetime(2026, 11, 26, 1, 2, 3)) == "2026-11-26T01:02:03Z"


def test_rfc3339_round_trips() -> None:
    text = rfc3339(T0.replace(microsecond=5))
    assert datetime.fromisoformat(text) == T0.replace(microsecond=5)


# --- order_view --------------------------------------------------------------------------


def test_order_view_matches_design_shape() -> None:
    assert order_view(make_order()) == {
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
        "status": "ORDERED",
        "status_label": "已下单",
        "reason": None,
        "reason_text": None,
        "description": "in transit",
        "vendor_order_id": "V8842001",
        "logistics": {"carrier": "SF", "tracking_no": "SF1234567890", "events": []},
        "counters": {"queries": 4, "abnormal": 1, "takeovers": 0},
        "placements": 1,
        "next_run_at": "2026-11-26T08:40:00Z",
        "created_at": "2026-11-26T01:02:03Z",
        "updated_at": "2026-11-26T06:40:00Z",
    }


def test_order_view_hides_internals() -> None:
    view = order_view(make_order())
    for internal in ("id", "lease_token", "extra", "unknown_streak", "started_at", "events"):
        assert internal not in view


def test_order_view_failed_order() -> None:
    order = make_order(
        status=Status.FAILED,
        reason=Reason.MAX_POLLS_EXCEEDED,
        description="no final answer after 30 queries (max_polls)",
        next_run_at=None,
        logistics=None,
        vendor_order_id=None,
        customer_id=None,
    )
    view = order_view(order)
    assert (view["status"], view["status_label"]) == ("FAILED", "交易失败")
    assert view["reason"] == "MAX_POLLS_EXCEEDED"
    assert view["reason_text"] == "超过最大轮询次数 (max polls exceeded)"
    assert view["next_run_at"] is None
    assert view["logistics"] is None
    assert view["vendor_order_id"] is None
    assert view["customer_id"] is None


def test_order_view_masks_for_viewers() -> None:
    recipient = order_view(make_order(), mask=True)["recipient"]
    assert recipient == {"name": "张三", "phone": "138****0000", "address": "上海市浦东新****"}


def test_order_view_is_plain_json_with_chinese_kept() -> None:
    order = make_order(
        status=Status.FAILED,
        reason=Reason.VENDOR_FAILED,
        logistics={"carrier": "SF", "events": [{"at": T0, "what": "揽收"}], "codes": ("a", "b")},
    )
    event = Event(
        kind="failed",
        at=T0,
        from_status=Status.ORDERED,
        to_status=Status.FAILED,
        reason=Reason.VENDOR_FAILED,
    )
    view = order_view(order, events=[event])
    assert_plain_json(view)
    assert view["logistics"] == {
        "carrier": "SF",
        "events": [{"at": "2026-11-26T01:02:03Z", "what": "揽收"}],
        "codes": ["a", "b"],
    }
    text = json.dumps(view, ensure_ascii=False)
    assert "交易失败" in text
    assert json.loads(text) == view


def test_order_view_with_events() -> None:
    events = [
        Event(kind="sent", at=T0, from_status=Status.PENDING, to_status=Status.SENT),
        Event(
            kind="placed",
            at=T0 + timedelta(seconds=1),
            from_status=Status.SENT,
            to_status=Status.ORDERED,
            outcome="accepted",
            http_status=200,
            latency_ms=12.5,
        ),
    ]
    view = order_view(make_order(), events=events)
    assert [e["kind"] for e in view["events"]] == ["sent", "placed"]
    assert view["events"][1]["at"] == "2026-11-26T01:02:04Z"
    assert order_view(make_order(), events=[])["events"] == []


def test_order_view_does_not_depend_on_now() -> None:
    order = make_order()
    assert order_view(order, now=T0 + timedelta(days=3)) == order_view(order)


# --- event_view --------------------------------------------------------------------------


def test_event_view_full() -> None:
    event = Event(
        kind="queried",
        at=T0,
        from_status=Status.ORDERED,
        to_status=Status.ORDERED,
        reason=None,
        outcome="in_progress",
        attempt=3,
        http_status=200,
        vendor_code="0000",
        latency_ms=41.25,
        detail={"next_run_at": "2026-11-26T01:22:03+00:00"},
        actor="worker-1",
    )
    assert event_view(event) == {
        "at": "2026-11-26T01:02:03Z",
        "kind": "queried",
        "from": "ORDERED",
        "to": "ORDERED",
        "outcome": "in_progress",
        "attempt": 3,
        "http_status": 200,
        "vendor_code": "0000",
        "latency_ms": 41.25,
        "detail": {"next_run_at": "2026-11-26T01:22:03+00:00"},
        "actor": "worker-1",
    }


def test_event_view_omits_missing_values() -> None:
    event = Event(
        kind="failed",
        at=T0,
        from_status=Status.SENT,
        to_status=Status.FAILED,
        reason=Reason.PLACE_REJECTED,
    )
    view = event_view(event)
    assert view == {
        "at": "2026-11-26T01:02:03Z",
        "kind": "failed",
        "from": "SENT",
        "to": "FAILED",
        "reason": "PLACE_REJECTED",
    }
    assert_plain_json(view)


def test_event_view_keeps_falsy_values_that_are_not_none() -> None:
    event = Event(kind="queried", at=T0, attempt=0, latency_ms=0.0, detail={})
    assert event_view(event) == {
        "at": "2026-11-26T01:02:03Z",
        "kind": "queried",
        "attempt": 0,
        "latency_ms": 0.0,
        "detail": {},
    }


class _Colour(Enum):
    RED = "red"


def test_event_detail_is_made_plain() -> None:
    event = Event(
        kind="note",
        at=T0,
        detail={"when": T0, "status": Status.SENT, "colour": _Colour.RED, "ids": {1: ("a",)}},
    )
    detail = event_view(event)["detail"]
    assert detail == {
        "when": "2026-11-26T01:02:03Z",
        "status": "SENT",
        "colour": "red",
        "ids": {"1": ["a"]},
    }
    assert_plain_json(detail)


# --- notification bodies -----------------------------------------------------------------


class _Size(Enum):
    SMALL = 1


class _Text(str):
    """A str subclass: orjson refuses it, so the body is made the long way."""


def _body_the_long_way(transition: Transition) -> str:
    """What notification_body wrote before its fast path: order_view, made plain, as JSON."""
    order = transition.order
    body = {"type": transition.notify, "timestamp": rfc3339(order.updated_at)}
    return jsontext.dumps({**body, "data": order_view(order)})


logistics_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
    | st.sampled_from([T0, T0.date(), _Colour.RED, _Size.SMALL, Status.SENT, _Text("sub")]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=6) | st.integers(0, 9), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), logistics_values, max_size=5))
def test_notification_body_is_order_view_as_json(logistics: dict[str, Any]) -> None:
    """The fast path (orjson on the logistics as they are) writes exactly what the long way
    writes, for plain values and for every value that must be made plain first."""
    transition = Transition(make_order(logistics=logistics), (), "order.shipped")
    body = notification_body(transition)
    assert body == _body_the_long_way(transition)
    assert json.loads(body)["data"]["logistics"] == json.loads(
        jsontext.dumps(order_view(transition.order)["logistics"])
    )


def test_notification_body_without_logistics() -> None:
    transition = Transition(make_order(logistics=None), (), "order.failed")
    assert json.loads(notification_body(transition))["data"]["logistics"] is None


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.none()
        | st.just(UTC)
        | st.builds(timezone, st.timedeltas(-timedelta(hours=23), timedelta(hours=23))),
    )
)
def test_rfc3339_is_utc_with_z_and_microseconds_only_when_any(dt: datetime) -> None:
    utc = dt if dt.tzinfo is None else dt.astimezone(UTC).replace(tzinfo=None)
    expected = utc.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{utc.microsecond:06d}" if utc.microsecond else ""
    )
    assert rfc3339(dt) == expected + "Z"
