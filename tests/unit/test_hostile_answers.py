"""Hostile vendor answers, unit level: interpret, retry_after_seconds and after_query."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.support.orders import T0, make_order

from orderwatch.lifecycle import DESCRIPTION_MAX, Policy, after_query, deadline_at
from orderwatch.outcomes import (
    Abnormal,
    Accepted,
    Delivered,
    Exchange,
    InProgress,
    Rejected,
    answer_problem,
    checked,
)
from orderwatch.settings import DEFAULT_STATUS_MAP
from orderwatch.statuses import Status
from orderwatch.vendors import signing
from orderwatch.vendors.reference import ReferenceAdapter, interpret, retry_after_seconds
from orderwatch.worker import _checks_answers

SECRET = "vendor-key"
NOW = T0 + timedelta(minutes=30)


def signed(answer: dict[str, Any]) -> bytes:
    fields = dict(answer)
    fields["sign"] = signing.sign(fields, SECRET)
    return json.dumps(fields, ensure_ascii=False).encode()  # allow_nan: Python writes NaN


def run(kind: str, body: bytes) -> Any:
    return interpret(
        kind,
        http_status=200,
        body=body,
        retry_after=None,
        secret=SECRET,
        status_map=DEFAULT_STATUS_MAP,
    )


# --- NaN / Infinity -------------------------------------------------------------------


def test_nan_in_a_signed_answer_is_malformed_not_stored() -> None:
    """json.loads takes NaN/Infinity; the order then carries a float NaN that every JSON
    writer of orderwatch (API, webhook body) emits as the bare token NaN: not JSON."""
    body = signed(
        {
            "code": "0000",
            "message": "ok",
            "data": {
                "status": "SHIPPED",
                "logistics": {
                    "carrier": "SF",
                    "tracking_no": "SF1",
                    "events": [
                        {"at": "2026-11-26T08:00:00Z", "text": "运输中", "weight_kg": float("nan")}
                    ],
                },
            },
        }
    )
    outcome, _ = run("query", body)
    assert isinstance(outcome, Abnormal), outcome
    assert outcome.kind == "malformed"


# --- lengths the schema cannot hold --------------------------------------------------


def test_a_vendor_order_id_longer_than_the_column_is_malformed() -> None:
    body = signed(
        {
            "code": "0000",
            "message": "ok",
            "data": {"status": "ACCEPTED", "vendor_order_id": "X" * 200},
        }
    )
    outcome, _ = run("place", body)
    assert isinstance(outcome, Abnormal), outcome
    assert "vendor_order_id" in outcome.detail


def test_a_vendor_code_longer_than_the_column_is_malformed() -> None:
    outcome, code = run("place", signed({"code": "E" * 40, "message": "no"}))
    assert isinstance(outcome, Abnormal), outcome
    assert code is None or len(code) <= 32


# --- Retry-After ------------------------------------------------------------------------


def test_retry_after_with_an_absurd_year_is_ignored_not_raised() -> None:
    now = datetime(2026, 11, 26, tzinfo=UTC)
    assert retry_after_seconds("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", now) is None


def test_a_huge_retry_after_is_clamped_to_the_deadline_not_a_crash() -> None:
    order = make_order(Status.ORDERED)
    outcome = Abnormal("maintenance", "HTTP 503", retry_after=3e11)  # ~9500 years
    t = after_query(order, Exchange(outcome, 0.01, 503), Policy(), NOW, random.Random(0))
    assert t.order.next_run_at == deadline_at(order, Policy())


# --- the timeline names the field -------------------------------------------------------


def test_an_abnormal_query_answer_records_what_was_wrong() -> None:
    """A correctly signed answer with a bad field: the order's events (or its description)
    must say which field, not only 'abnormal:malformed'."""
    outcome, _ = run(
        "query",
        signed(
            {"code": "0000", "message": "ok", "data": {"status": "SHIPPED", "logistics": "SF123"}}
        ),
    )
    assert outcome == Abnormal("malformed", "data.logistics must be an object")
    order = make_order(Status.ORDERED)
    t = after_query(order, Exchange(outcome, 0.01, 200, "0000"), Policy(), NOW, random.Random(0))
    recorded = json.dumps([e.detail for e in t.events], ensure_ascii=False)
    assert "data.logistics" in recorded or "data.logistics" in (t.order.description or ""), (
        recorded,
        t.order.description,
    )


def test_a_delivered_answer_naming_another_vendor_order_does_not_end_this_one() -> None:
    order = make_order(Status.ORDERED, vendor_order_id="V-R1")
    outcome = Delivered("已签收", None, "V-SOMEONE-ELSE")
    t = after_query(order, Exchange(outcome, 0.01, 200, "0000"), Policy(), NOW, random.Random(0))
    assert t.order.status is Status.ORDERED, (t.order.status, t.order.description)


# --- sizes every database can store ------------------------------------------------------


def test_logistics_larger_than_can_be_stored_is_malformed() -> None:
    events = [{"at": "2026-11-26T08:00:00Z", "text": "运输中" * 20} for _ in range(500)]
    body = signed(
        {
            "code": "0000",
            "message": "ok",
            "data": {"status": "SHIPPED", "logistics": {"carrier": "SF", "events": events}},
        }
    )
    outcome, _ = run("query", body)
    assert isinstance(outcome, Abnormal), outcome
    assert "data.logistics is larger than" in outcome.detail


def test_a_vendors_long_texts_are_cut_to_what_an_order_keeps() -> None:
    order = make_order(Status.ORDERED)
    answer = InProgress("X" * 40, "在途" * 5_000, None, False, None)
    t = after_query(order, Exchange(answer, 0.01, 200, "0000"), Policy(), NOW, random.Random(0))
    assert t.order.description is not None
    assert len(t.order.description) == DESCRIPTION_MAX
    assert t.order.description.endswith("…")
    assert t.order.vendor_status == "X" * 31 + "…"


def test_nul_characters_in_a_vendors_texts_are_dropped() -> None:
    """PostgreSQL cannot store NUL in text: kept, it failed the write of the result."""
    order = make_order(Status.ORDERED)
    answer = InProgress("IN\x00TRANSIT", "在\x00途", None, False, None)
    t = after_query(order, Exchange(answer, 0.01, 200, "0000"), Policy(), NOW, random.Random(0))
    assert t.order.description == "在途"
    assert t.order.vendor_status == "INTRANSIT"


# ------------------------------------------------------- a plug-in adapter's answers


@pytest.mark.parametrize(
    ("outcome", "problem"),
    [
        (Accepted("V" * 129), "vendor_order_id is longer than 128 characters"),
        (Accepted("V\x001"), "vendor_order_id holds a NUL character"),
        (Accepted(12345), "vendor_order_id is a int, not a string"),
        (InProgress("SHIPPED", None, {"n": math.nan}), "logistics holds NaN or Infinity"),
        (InProgress("SHIPPED", None, {"at": T0}), "logistics holds a value that is not JSON"),
        (Delivered(None, {"events": ["x" * 12_001]}), "logistics is larger than 12000"),
        (Delivered(None, ["SF"]), "logistics is a list, not an object"),
        (InProgress(b"SHIPPED"), "vendor_status is a bytes, not a string"),
        (Rejected("E1", 404), "message is a int, not a string"),
        # what the state machine needs: None there failed the order's every query
        (InProgress(None), "vendor_status is None, not a string"),
        (Rejected(None, "no stock"), "code is None, not a string"),
        (Abnormal("maintenance", "", math.inf), "retry_after is a float, not a number"),
        (Abnormal("maintenance", "", "soon"), "retry_after is a str, not a number"),
        ("ACCEPTED", "str is not one of orderwatch.outcomes' answers"),
        (None, "NoneType is not one of orderwatch.outcomes' answers"),
    ],
)
def test_a_plugin_answer_the_order_cannot_keep_is_abnormal(outcome: Any, problem: str) -> None:
    exchange = Exchange(outcome, 0.05, 200, "0000")
    assert problem in (answer_problem(outcome) or "")
    got = checked(exchange)
    assert isinstance(got.outcome, Abnormal)
    assert got.outcome.kind == "malformed"
    assert problem in got.outcome.detail
    assert (got.latency, got.http_status, got.vendor_code) == (0.05, 200, "0000")


@pytest.mark.parametrize(
    "outcome",
    [
        Accepted("V" * 128),
        Accepted(None),
        InProgress("SHIPPED", "运输中", {"carrier": "SF", "events": [{"text": "运" * 3000}]}),
        Delivered("已签收", None, "V1"),
        Rejected("E1", "out of stock"),
        Abnormal("timeout"),
    ],
)
def test_a_sensible_plugin_answer_passes_unchanged(outcome: Any) -> None:
    exchange = Exchange(outcome, 0.05, 200, "0000")
    assert answer_problem(outcome) is None
    assert checked(exchange) is exchange


@pytest.mark.parametrize(
    ("exchange", "problem"),
    [
        ({"outcome": "accepted"}, "adapter answer: a dict, not an Exchange"),
        (Exchange(Accepted("V1"), latency=math.nan), "latency is nan, not seconds"),
        (Exchange(Accepted("V1"), latency="fast"), "latency is 'fast', not seconds"),
        (Exchange(Accepted("V1"), http_status="200"), "http_status is a str, not an integer"),
        (Exchange(Accepted("V1"), vendor_code=0), "vendor_code is a int, not a string"),
    ],
)
def test_a_plugin_exchange_the_engine_cannot_use_is_abnormal(exchange: Any, problem: str) -> None:
    """The exchange's own fields feed the timeline and the metrics: checked too."""
    got = checked(exchange)
    assert isinstance(got, Exchange)
    assert isinstance(got.outcome, Abnormal)
    assert problem in got.outcome.detail
    assert isinstance(got.latency, float)
    assert got.latency >= 0
    assert got.http_status is None or type(got.http_status) is int
    assert got.vendor_code is None or type(got.vendor_code) is str


def test_an_answer_of_no_known_type_is_named_unknown() -> None:
    """Its name labels a metric series: a None there broke every later scrape."""
    assert Exchange("ACCEPTED").outcome_name == "unknown"


def test_only_an_adapter_class_that_says_so_skips_the_worker_check() -> None:
    """A plug-in built on a built-in adapter may read answers its own way: its answers are
    checked unless it says otherwise itself."""

    class Subclassed(ReferenceAdapter):
        pass

    class Declares(ReferenceAdapter):
        checks_answers = True

    for cls, expected in ((ReferenceAdapter, True), (Subclassed, False), (Declares, True)):
        adapter = object.__new__(cls)
        assert _checks_answers(adapter) is expected, cls
