"""Reading a vendor's answer (DESIGN §5): ``interpret`` never raises and never invents success.

Every wire answer becomes exactly one outcome; anything the engine cannot trust is
:class:`Abnormal` and retried. Only a correctly signed ``0000`` with a mapped status is a
success.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orderwatch.outcomes import (
    MAX_LOGISTICS,
    Abnormal,
    Accepted,
    Delivered,
    InProgress,
    Outcome,
    Rejected,
    UnknownOrder,
    VendorFailed,
    logistics_problem,
    parsed_logistics_problem,
)
from orderwatch.settings import DEFAULT_STATUS_MAP
from orderwatch.vendors import signing
from orderwatch.vendors.reference import interpret, retry_after_seconds

SECRET = "vendor-key"
OUTCOME_TYPES = (Accepted, Rejected, InProgress, Delivered, VendorFailed, UnknownOrder, Abnormal)
SUCCESS = (Accepted, Delivered)
LOGISTICS = {
    "carrier": "SF",
    "tracking_no": "SF1234567890",
    "events": [{"at": "2026-11-26T08:00:00Z", "text": "已揽收"}],
}
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def signed(
    answer: Mapping[str, Any], secret: str = SECRET, sign_type: str = "HMAC-SHA256"
) -> bytes:
    """The body a vendor would send: the answer plus its signature."""
    fields = dict(answer)
    fields["sign"] = signing.sign(fields, secret, sign_type)
    return json.dumps(fields, ensure_ascii=False).encode()


def answer(code: str = "0000", message: str | None = "ok", **data: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "data": data or None}


def run(
    kind: str,
    body: bytes,
    *,
    http_status: int = 200,
    retry_after: float | None = None,
    status_map: Mapping[str, str] = DEFAULT_STATUS_MAP,
    sign_type: str = "HMAC-SHA256",
) -> tuple[Outcome, str | None]:
    return interpret(
        kind,
        http_status=http_status,
        body=body,
        retry_after=retry_after,
        secret=SECRET,
        sign_type=sign_type,
        status_map=status_map,
    )


def abnormal_kind(result: tuple[Outcome, str | None]) -> str:
    outcome, _ = result
    assert isinstance(outcome, Abnormal), outcome
    return outcome.kind


# ------------------------------------------------------------------------ HTTP level


@pytest.mark.parametrize("kind", ["place", "query"])
def test_http_503_is_maintenance_with_retry_after(kind: str) -> None:
    outcome, code = run(
        kind, b"<html>down for maintenance</html>", http_status=503, retry_after=120
    )

    assert outcome == Abnormal("maintenance", "HTTP 503", 120)
    assert code is None


@pytest.mark.parametrize("status", [500, 502, 404, 429, 301])
def test_other_http_statuses_are_http_errors_with_a_snippet(status: int) -> None:
    # even a correctly signed success body does not count outside HTTP 200
    body = signed(answer(status="DELIVERED"))
    outcome, code = run("query", body, http_status=status)

    assert isinstance(outcome, Abnormal)
    assert outcome.kind == "http_error"
    assert f"HTTP {status}" in outcome.detail
    assert '"code"' in outcome.detail
    assert code is None


def test_http_error_snippet_is_short() -> None:
    outcome, _ = run("query", b"x" * 10_000, http_status=500)

    assert isinstance(outcome, Abnormal)
    assert len(outcome.detail) < 120


# ------------------------------------------------------------------------ body level


@pytest.mark.parametrize(
    "body",
    [b"<html><body>502 Bad Gateway</body></html>", b"", b"\xff\xfe\x00garbage", b'{"code":'],
)
def test_a_body_that_is_not_json_is_malformed(body: bytes) -> None:
    outcome, code = run("query", body)

    assert isinstance(outcome, Abnormal)
    assert outcome.kind == "malformed"
    assert outcome.detail.startswith("not JSON")
    assert code is None


@pytest.mark.parametrize("body", [b"[]", b'["0000"]', b'"0000"', b"42", b"null"])
def test_json_that_is_not_an_object_is_malformed(body: bytes) -> None:
    assert run("query", body) == (Abnormal("malformed", "answer is not a JSON object"), None)


@pytest.mark.parametrize("code", ["missing", None, 0, ["0000"]])
def test_an_answer_without_a_string_code_is_malformed(code: Any) -> None:
    fields: dict[str, Any] = {"message": "ok", "data": {"status": "DELIVERED"}}
    if code != "missing":
        fields["code"] = code
    outcome, _ = run("query", signed(fields))

    assert isinstance(outcome, Abnormal)
    assert outcome.kind == "malformed"
    assert "'code'" in outcome.detail


def test_an_unsigned_answer_is_a_bad_signature() -> None:
    body = json.dumps(answer(status="DELIVERED")).encode()

    assert run("query", body) == (
        Abnormal("bad_signature", "answer signature missing or wrong"),
        "0000",
    )


def test_an_answer_signed_with_another_secret_is_a_bad_signature() -> None:
    body = signed(answer(status="DELIVERED"), secret="someone-else")

    assert abnormal_kind(run("query", body)) == "bad_signature"


def test_a_sign_with_non_ascii_characters_is_a_bad_signature_not_a_crash() -> None:
    body = json.dumps({**answer(status="DELIVERED"), "sign": "签名"}).encode()

    assert abnormal_kind(run("query", body)) == "bad_signature"


def test_md5_signed_answers_are_accepted_when_configured() -> None:
    body = signed(answer(status="DELIVERED"), sign_type="MD5")

    outcome, _ = run("query", body, sign_type="MD5")
    assert isinstance(outcome, Delivered)
    assert abnormal_kind(run("query", body)) == "bad_signature"


# ------------------------------------------------------------------------ vendor codes


@pytest.mark.parametrize("kind", ["place", "query"])
def test_code_e503_is_maintenance_with_retry_after(kind: str) -> None:
    outcome, code = run(kind, signed(answer("E503", "系统维护中")), retry_after=1800)

    assert outcome == Abnormal("maintenance", "系统维护中", 1800)
    assert code == "E503"


@pytest.mark.parametrize("kind", ["place", "query"])
@pytest.mark.parametrize("vendor_code", ["E500", "E501", "E599"])
def test_code_e5xx_is_a_vendor_error(kind: str, vendor_code: str) -> None:
    outcome, code = run(kind, signed(answer(vendor_code, "internal error")))

    assert outcome == Abnormal("vendor_error", f"{vendor_code} internal error")
    assert code == vendor_code


@pytest.mark.parametrize(
    ("vendor_code", "message"),
    [("E101", "out of stock"), ("E102", "bad address"), ("E103", "duplicate order_no")],
)
def test_place_with_a_business_code_is_rejected(vendor_code: str, message: str) -> None:
    assert run("place", signed(answer(vendor_code, message))) == (
        Rejected(vendor_code, message),
        vendor_code,
    )


def test_place_rejected_without_message_keeps_the_code() -> None:
    assert run("place", signed(answer("E101", None))) == (Rejected("E101", ""), "E101")


def test_query_e404_is_unknown_order() -> None:
    assert run("query", signed(answer("E404", "order not found"))) == (UnknownOrder(), "E404")


def test_query_with_another_business_code_is_a_vendor_error_not_unknown() -> None:
    outcome, code = run("query", signed(answer("E101", "out of stock")))

    assert isinstance(outcome, Abnormal)
    assert outcome.kind == "vendor_error"
    assert "E101" in outcome.detail
    assert code == "E101"


def test_message_that_is_not_a_string_is_malformed() -> None:
    body = signed({"code": "0000", "message": 7, "data": {"status": "DELIVERED"}})

    assert abnormal_kind(run("query", body)) == "malformed"


# ------------------------------------------------------------------------ 0000 answers


def test_place_accepted() -> None:
    body = signed(answer(status="ACCEPTED", vendor_order_id="V-1"))

    assert run("place", body) == (Accepted("V-1"), "0000")


@pytest.mark.parametrize("status", ["PROCESSING", "DELIVERED", None, 1])
def test_place_answer_with_another_status_is_malformed(status: Any) -> None:
    assert abnormal_kind(run("place", signed(answer(status=status, vendor_order_id="V-1")))) == (
        "malformed"
    )


def test_place_answer_vendor_order_id_must_be_a_string() -> None:
    assert abnormal_kind(run("place", signed(answer(status="ACCEPTED", vendor_order_id=5)))) == (
        "malformed"
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("PROCESSING", InProgress("PROCESSING", "备货中", LOGISTICS, False, "V-1")),
        ("SHIPPED", InProgress("SHIPPED", "备货中", LOGISTICS, True, "V-1")),
        ("DELIVERED", Delivered("备货中", LOGISTICS, "V-1")),
        ("FAILED", VendorFailed("备货中", LOGISTICS, "V-1")),
    ],
)
def test_query_statuses_map_by_the_default_status_map(status: str, expected: Outcome) -> None:
    body = signed(
        answer(status=status, description="备货中", logistics=LOGISTICS, vendor_order_id="V-1")
    )

    assert run("query", body) == (expected, "0000")


@pytest.mark.parametrize("status", ["LOST", "delivered", "", None, 3, ["DELIVERED"]])
def test_query_with_an_unmapped_status_is_malformed(status: Any) -> None:
    outcome, _ = run("query", signed(answer(status=status)))

    assert isinstance(outcome, Abnormal)
    assert outcome.kind == "malformed"
    assert "unmapped status" in outcome.detail


@pytest.mark.parametrize("data", [None, [], "DELIVERED", 1])
def test_query_with_data_that_is_not_an_object_is_malformed(data: Any) -> None:
    body = signed({"code": "0000", "message": "ok", "data": data})

    assert run("query", body) == (Abnormal("malformed", "field 'data' must be an object"), "0000")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"description": 5}, "data.description"),
        ({"description": {"text": "x"}}, "data.description"),
        ({"logistics": ["SF"]}, "data.logistics"),
        ({"logistics": "SF123"}, "data.logistics"),
        ({"logistics": {"carrier": 1}}, "data.logistics.carrier"),
        ({"logistics": {"tracking_no": ["x"]}}, "data.logistics.tracking_no"),
        ({"logistics": {"events": "已揽收"}}, "data.logistics.events"),
        ({"logistics": {"events": ["已揽收"]}}, "data.logistics.events"),
        ({"vendor_order_id": 12}, "data.vendor_order_id"),
    ],
)
def test_query_fields_of_the_wrong_type_are_malformed_naming_the_field(
    data: dict[str, Any], field: str
) -> None:
    body = signed(answer(status="DELIVERED", **data))

    outcome, code = run("query", body)
    assert isinstance(outcome, Abnormal)
    assert outcome.kind == "malformed"
    assert field in outcome.detail
    assert code == "0000"


def test_a_custom_status_map_decides_what_each_vendor_status_means() -> None:
    status_map = {
        "OPEN": "processing",
        "IN_TRANSIT": "shipped",
        "SIGNED": "succeeded",
        "CANCELLED": "failed",
    }

    def query_status(status: str) -> Outcome:
        return run("query", signed(answer(status=status)), status_map=status_map)[0]

    assert query_status("OPEN") == InProgress("OPEN")
    assert query_status("IN_TRANSIT") == InProgress("IN_TRANSIT", shipped=True)
    assert query_status("SIGNED") == Delivered()
    assert query_status("CANCELLED") == VendorFailed()
    unmapped = query_status("DELIVERED")  # the default names mean nothing to this vendor
    assert isinstance(unmapped, Abnormal)
    assert unmapped.kind == "malformed"


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"code":"0000","x":' + b"[" * 5000 + b"}"])
def test_a_deeply_nested_body_is_malformed_not_a_crash(body: bytes) -> None:
    assert abnormal_kind(run("query", body)) == "malformed"


# ------------------------------------------------------------------------ fuzz

KINDS = st.sampled_from(["place", "query"])
HTTP_STATUSES = st.one_of(st.just(200), st.just(503), st.integers(100, 599))
RETRY_AFTER = st.none() | st.floats(0, 1e6)
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
CODES = st.sampled_from(["0000", "E404", "E503", "E500", "E101"]) | st.text(max_size=5)
STATUSES = (
    st.sampled_from(["ACCEPTED", "PROCESSING", "SHIPPED", "DELIVERED", "FAILED"]) | JSON_SCALARS
)
PLAUSIBLE = st.fixed_dictionaries(
    {
        "code": CODES,
        "message": st.none() | st.text(max_size=10),
        "data": st.fixed_dictionaries(
            {"status": STATUSES},
            optional={
                "vendor_order_id": JSON_SCALARS,
                "description": JSON_SCALARS,
                "logistics": JSON_VALUES,
            },
        ),
    },
    optional={"sign": st.text(max_size=64) | st.text("0123456789abcdef", min_size=64, max_size=64)},
)


def check_never_success(
    kind: str, http_status: int, body: bytes, retry_after: float | None
) -> None:
    outcome, code = run(kind, body, http_status=http_status, retry_after=retry_after)

    assert isinstance(outcome, OUTCOME_TYPES)
    assert code is None or isinstance(code, str)
    assert not isinstance(outcome, SUCCESS), (body, outcome)


@FUZZ
@given(kind=KINDS, http_status=HTTP_STATUSES, body=st.binary(max_size=300), retry_after=RETRY_AFTER)
def test_fuzz_random_bytes_never_raise_and_never_succeed(
    kind: str, http_status: int, body: bytes, retry_after: float | None
) -> None:
    check_never_success(kind, http_status, body, retry_after)


@FUZZ
@given(
    kind=KINDS,
    http_status=HTTP_STATUSES,
    value=JSON_VALUES | PLAUSIBLE,
    retry_after=RETRY_AFTER,
)
def test_fuzz_unsigned_json_never_raises_and_never_succeeds(
    kind: str, http_status: int, value: Any, retry_after: float | None
) -> None:
    check_never_success(kind, http_status, json.dumps(value).encode(), retry_after)


@FUZZ
@given(
    kind=KINDS,
    http_status=HTTP_STATUSES,
    value=PLAUSIBLE,
    secret=st.just(SECRET) | st.text(max_size=10),
)
def test_fuzz_signed_answers_succeed_only_with_the_right_secret_over_http_200(
    kind: str, http_status: int, value: dict[str, Any], secret: str
) -> None:
    fields = {k: v for k, v in value.items() if k != "sign"}
    outcome, _ = run(kind, signed(fields, secret=secret), http_status=http_status)

    assert isinstance(outcome, OUTCOME_TYPES)
    data = value["data"]
    success_status = "ACCEPTED" if kind == "place" else "DELIVERED"
    can_succeed = (
        secret == SECRET
        and http_status == 200
        and value["code"] == "0000"
        and data["status"] == success_status
    )
    if not can_succeed:
        assert not isinstance(outcome, SUCCESS)


@FUZZ
@given(
    kind=KINDS,
    # any text a vendor could store: no NUL (malformed: the databases refuse it)
    vendor_order_id=st.none()
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20),
    description=st.none() | st.text(max_size=20),
    extra=st.dictionaries(st.text(min_size=1, max_size=8), JSON_SCALARS, max_size=3),
)
def test_fuzz_correctly_signed_success_is_recognised(
    kind: str, vendor_order_id: str | None, description: str | None, extra: dict[str, Any]
) -> None:
    status = "ACCEPTED" if kind == "place" else "DELIVERED"
    fields = {
        **{k: v for k, v in extra.items() if k not in ("code", "message", "data", "sign")},
        "code": "0000",
        "message": "ok",
        "data": {"status": status, "vendor_order_id": vendor_order_id, "description": description},
    }
    outcome, code = run(kind, signed(fields))

    assert code == "0000"
    if kind == "place":
        assert outcome == Accepted(vendor_order_id)
    else:
        assert outcome == Delivered(description, None, vendor_order_id)


# ------------------------------------------------------------------------ Retry-After

NOW = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 30 ", 30.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Thu, 26 Nov 2026 00:02:00 GMT", 120.0),
        ("Wed, 25 Nov 2026 23:00:00 GMT", 0.0),  # a date in the past: go now
        ("soon", None),
        ("", None),
        (None, None),
        ("-5", None),
        ("NaN", None),
        ("inf", None),
        ("1e400", None),
        (str(400 * 86400), None),  # absurdly far: ignored, not obeyed
        ("Thu, 26 Nov 2026 00:02:00 -0000", None),  # no usable time zone
        ("Mon, 32 Foo 2026 99:00:00 GMT", None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    got = retry_after_seconds(value, NOW)

    assert got == expected
    assert got is None or (math.isfinite(got) and got >= 0)


# What json.loads makes of a vendor's logistics: text, 64-bit and larger integers, floats
# with NaN and Infinity (json.loads takes them), booleans, null, lists and objects.
parsed_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=16,
)


@given(st.dictionaries(st.text(max_size=8), parsed_values, max_size=5))
def test_parsed_logistics_are_judged_as_the_strict_check_judges_them(
    value: dict[str, Any],
) -> None:
    assert parsed_logistics_problem(value) == logistics_problem(value)


@pytest.mark.parametrize("size", [MAX_LOGISTICS - 1, MAX_LOGISTICS, MAX_LOGISTICS + 1])
@pytest.mark.parametrize("char", ["a", "运"])
def test_parsed_logistics_size_limit_is_in_characters(size: int, char: str) -> None:
    value = {"t": char * (size - len('{"t":""}'))}
    assert len(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) == size
    assert parsed_logistics_problem(value) == logistics_problem(value)
    assert (parsed_logistics_problem(value) is None) == (size <= MAX_LOGISTICS)
