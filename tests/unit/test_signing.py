"""Signatures of the reference protocol (DESIGN §5) against the shared test vectors.

The vectors are read from ``tests/unit/vectors/signing.json``, a copy kept in the repo so that
the tests need nothing outside it; when the shared original is beside the repo, a test checks
that the copy has not drifted from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orderwatch.clock import ManualClock
from orderwatch.outcomes import Abnormal, InProgress
from orderwatch.settings import DEFAULT_STATUS_MAP, VendorSettings
from orderwatch.vendors import signing
from orderwatch.vendors.reference import ReferenceAdapter, interpret

HERE = Path(__file__).resolve().parent
VECTORS_COPY = HERE / "vectors" / "signing.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS_COPY.read_text(encoding="utf-8"))["cases"]
SIGN_TYPES = ("HMAC-SHA256", "MD5")
QUERY_ANSWER = CASES[3]


def _shared_vectors() -> Path | None:
    """``shared/vectors/signing.json`` beside the repo (or any folder above this file)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "vectors" / "signing.json"
        if candidate.is_file():
            return candidate
    return None


def _signed(case: dict[str, Any], sign_type: str) -> dict[str, Any]:
    return {**case["fields"], "sign": case[sign_type]}


def _tampered(fields: dict[str, Any]) -> dict[str, Any]:
    """The same fields with the first signed value changed."""
    key = next(k for k in sorted(fields) if k != "sign" and fields[k] not in (None, ""))
    return {**fields, key: "tampered"}


def test_vectors_copy_matches_the_shared_original() -> None:
    shared = _shared_vectors()
    if shared is None:
        pytest.skip("shared/vectors/signing.json is not beside this checkout")
    assert json.loads(shared.read_text(encoding="utf-8")) == json.loads(
        VECTORS_COPY.read_text(encoding="utf-8")
    )


def test_vectors_cover_the_documented_cases() -> None:
    assert len(CASES) == 4
    assert "WeChat" in CASES[0]["title"]
    assert QUERY_ANSWER["fields"]["code"] == "0000"


@pytest.fixture(params=CASES, ids=[c["title"].split(":")[0][:40] for c in CASES])
def case(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.param  # type: ignore[no-any-return]


def test_canonical_string(case: dict[str, Any]) -> None:
    assert signing.canonical(case["fields"]) == case["canonical"]


@pytest.mark.parametrize("sign_type", SIGN_TYPES)
def test_signature(case: dict[str, Any], sign_type: str) -> None:
    assert signing.sign(case["fields"], case["secret"], sign_type) == case[sign_type]


@pytest.mark.parametrize("sign_type", SIGN_TYPES)
def test_verify_accepts_the_right_signature(case: dict[str, Any], sign_type: str) -> None:
    assert signing.verify(_signed(case, sign_type), case["secret"], sign_type)


@pytest.mark.parametrize("sign_type", SIGN_TYPES)
def test_verify_rejects_a_tampered_field(case: dict[str, Any], sign_type: str) -> None:
    assert not signing.verify(_tampered(_signed(case, sign_type)), case["secret"], sign_type)


@pytest.mark.parametrize("sign_type", SIGN_TYPES)
def test_verify_rejects_an_added_field(case: dict[str, Any], sign_type: str) -> None:
    fields = {**_signed(case, sign_type), "zz_extra": "1"}
    assert not signing.verify(fields, case["secret"], sign_type)


@pytest.mark.parametrize("sign_type", SIGN_TYPES)
def test_verify_ignores_added_empty_fields(case: dict[str, Any], sign_type: str) -> None:
    fields = {**_signed(case, sign_type), "zz_null": None, "zz_empty": ""}
    assert signing.verify(fields, case["secret"], sign_type)


@pytest.mark.parametrize("sign_type", SIGN_TYPES)
@pytest.mark.parametrize("missing", ["absent", None, ""])
def test_verify_rejects_a_missing_sign(case: dict[str, Any], sign_type: str, missing: Any) -> None:
    fields = dict(case["fields"])
    fields.pop("sign", None)
    if missing != "absent":
        fields["sign"] = missing
    assert not signing.verify(fields, case["secret"], sign_type)


@pytest.mark.parametrize(
    ("sign_type", "wrong_case"), [("HMAC-SHA256", str.upper), ("MD5", str.lower)]
)
def test_verify_rejects_the_wrong_letter_case(
    case: dict[str, Any], sign_type: str, wrong_case: Any
) -> None:
    fields = {**case["fields"], "sign": wrong_case(case[sign_type])}
    assert not signing.verify(fields, case["secret"], sign_type)


@pytest.mark.parametrize("sign_type", SIGN_TYPES)
def test_verify_rejects_the_wrong_secret(case: dict[str, Any], sign_type: str) -> None:
    assert not signing.verify(_signed(case, sign_type), case["secret"] + "x", sign_type)


def test_verify_rejects_the_other_sign_type(case: dict[str, Any]) -> None:
    assert not signing.verify(_signed(case, "MD5"), case["secret"], "HMAC-SHA256")
    assert not signing.verify(_signed(case, "HMAC-SHA256"), case["secret"], "MD5")


def test_unknown_sign_type_is_an_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="HMAC-SHA256, MD5"):
        signing.sign({"a": "1"}, "s", "SHA1")


# -------------------------------------------------------------------- both directions


@pytest.mark.parametrize("sign_type", SIGN_TYPES)
def test_a_request_built_by_the_adapter_verifies_with_the_vendor_secret(sign_type: str) -> None:
    vendor = VendorSettings.model_validate(
        {
            "base_url": "http://acme.test",
            "merchant_id": "M0001",
            "secret": "vector-secret-2",
            "sign_type": sign_type,
        }
    )
    clock = ManualClock()
    adapter = ReferenceAdapter("acme", vendor, clock=clock)
    request = dict(CASES[1]["fields"])
    del request["sign"], request["timestamp"], request["nonce"]

    raw, headers = adapter._signed(request)
    body = json.loads(raw)

    assert "X-Signature" not in headers

    assert signing.verify(body, "vector-secret-2", sign_type)
    assert body["timestamp"] == int(clock.now().timestamp())
    assert 16 <= len(body["nonce"]) <= 32
    assert body["recipient"]["name"] == "张三"
    assert not signing.verify(_tampered(body), "vector-secret-2", sign_type)


def _answer(fields: dict[str, Any], sign_type: str, *, ensure_ascii: bool = False) -> bytes:
    signed = {**fields, "sign": signing.sign(fields, QUERY_ANSWER["secret"], sign_type)}
    return json.dumps(signed, ensure_ascii=ensure_ascii).encode()


def _interpret(body: bytes, sign_type: str = "HMAC-SHA256") -> Any:
    return interpret(
        "query",
        http_status=200,
        body=body,
        retry_after=None,
        secret=QUERY_ANSWER["secret"],
        sign_type=sign_type,
        status_map=DEFAULT_STATUS_MAP,
    )


@pytest.mark.parametrize("ensure_ascii", [False, True])
@pytest.mark.parametrize("sign_type", SIGN_TYPES)
def test_a_signed_shipped_answer_is_in_progress_shipped(sign_type: str, ensure_ascii: bool) -> None:
    fields = QUERY_ANSWER["fields"]
    body = _answer(fields, sign_type, ensure_ascii=ensure_ascii)

    outcome, code = _interpret(body, sign_type)

    assert code == "0000"
    assert outcome == InProgress(
        "SHIPPED", "运输中", fields["data"]["logistics"], shipped=True, vendor_order_id=None
    )


def test_the_vector_signature_itself_verifies_through_interpret() -> None:
    body = json.dumps(_signed(QUERY_ANSWER, "HMAC-SHA256"), ensure_ascii=False).encode()

    outcome, _ = _interpret(body)

    assert isinstance(outcome, InProgress)
    assert outcome.shipped


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"SF1234567890", b"SF1234567891"), (b'"weight_kg": 1.25', b'"weight_kg": 1.26')],
)
def test_one_byte_changed_in_a_signed_answer_is_a_bad_signature(old: bytes, new: bytes) -> None:
    body = _answer(QUERY_ANSWER["fields"], "HMAC-SHA256")
    assert old in body
    tampered = body.replace(old, new)
    assert len(tampered) == len(body)

    outcome, code = _interpret(tampered)

    assert outcome == Abnormal("bad_signature", "answer signature missing or wrong")
    assert code == "0000"


def test_one_byte_changed_in_the_sign_is_a_bad_signature() -> None:
    good = _answer(QUERY_ANSWER["fields"], "HMAC-SHA256")
    sign = json.loads(good)["sign"]
    flipped = sign[:-1] + ("0" if sign[-1] != "0" else "1")

    outcome, _ = _interpret(good.replace(sign.encode(), flipped.encode()))

    assert isinstance(outcome, Abnormal)
    assert outcome.kind == "bad_signature"
