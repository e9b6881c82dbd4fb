"""Fuzzing the ``mapped`` adapter's answer handling (hypothesis).

:meth:`MappedAdapter.interpret` is pure (HTTP status, body bytes, headers → outcome), so
thousands of answers run in a second or two: random bytes, truncated and huge bodies, wrong
types in every mapped field, unknown codes and statuses, missing and wrong signatures. The
adapter must return an outcome and never raise, and the property that matters most: only a
correctly signed answer whose values the tables map to success yields a success outcome.
Two cases go through real HTTP on loopback (a body past the size limit, and the same answer
unsigned and signed).
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orderwatch.clock import ManualClock
from orderwatch.outcomes import (
    Abnormal,
    Accepted,
    Delivered,
    InProgress,
    Rejected,
    UnknownOrder,
    VendorFailed,
)
from orderwatch.settings import VendorSettings, load_settings
from orderwatch.vendors import signing
from orderwatch.vendors.mapped import MappedAdapter, probe_order
from orderwatch.vendors.reference import MAX_BODY

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "vendors"
SECRET = "fuzz-secret"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def vendor_settings(name: str, base_url: str = "http://127.0.0.1:9") -> VendorSettings:
    data = tomllib.loads((EXAMPLES / f"{name}.toml").read_text(encoding="utf-8"))
    cfg = {**data["vendors"][name], "base_url": base_url, "secret": SECRET}
    return load_settings(None, env={}, overrides={"vendors": {name: cfg}}).settings.vendors[name]


GIFTCO = vendor_settings("giftco")
SHOPMALL = vendor_settings("shopmall")
ADAPTERS = {
    "giftco": MappedAdapter("giftco", GIFTCO, clock=ManualClock()),
    "shopmall": MappedAdapter("shopmall", SHOPMALL, clock=ManualClock()),
}
# GiftCo signs with MD5 in the body field `sign`; ShopMall with HMAC-SHA256 in a header.
SIGNERS = {"giftco": signing.signer_for(GIFTCO), "shopmall": signing.signer_for(SHOPMALL)}
WRONG = {
    name: signing.Signer(sign_type=s.sign_type, secret=SECRET + "!") for name, s in SIGNERS.items()
}
HEADER = {"giftco": None, "shopmall": "X-Mall-Signature"}
assert SHOPMALL.sign_location == "header"
assert SHOPMALL.sign_header == HEADER["shopmall"]
NO_SIGNATURE: Any = object()
Body = tuple[bytes, dict[str, str]]

# A delivered answer of each vendor with every mapped field present.
DELIVERED: dict[str, dict[str, Any]] = {
    "giftco": {
        "resultCode": "SUCCESS",
        "resultMsg": "ok",
        "outTradeNo": "R1",
        "orderId": "V00000001",
        "orderStatus": "30",
        "statusDesc": "已签收",
        "expressCompany": "SF",
        "expressNo": "SF0000000001",
        "traces": [{"time": "2026-11-26T01:00:00Z", "desc": "已签收"}],
    },
    "shopmall": {
        "errcode": 0,
        "errmsg": "ok",
        "data": {
            "result": {
                "bizOrderNo": "R1",
                "mallOrderId": "V00000001",
                "state": "SIGNED",
                "stateText": "已签收",
                "delivery": {
                    "company": "SF",
                    "waybillNo": "SF0000000001",
                    "nodes": [{"time": "2026-11-26T01:00:00Z", "content": "已签收"}],
                },
            }
        },
    },
}
ACCEPTED = {
    "giftco": {"resultCode": "SUCCESS", "resultMsg": "ok", "orderId": "V1", "orderStatus": "00"},
    "shopmall": {"errcode": 0, "errmsg": "ok", "data": {"result": {"state": "CREATED"}}},
}


def with_signature(vendor: str, answer: dict[str, Any], signature: Any) -> Body:
    """The answer with ``signature`` where the vendor puts it (a header or the body)."""
    header = HEADER[vendor]
    if header is not None:
        headers = {} if signature is NO_SIGNATURE else {header: str(signature)}
        return json.dumps(answer, ensure_ascii=False).encode(), headers
    body = dict(answer)
    if signature is not NO_SIGNATURE:
        body["sign"] = signature
    return json.dumps(body, ensure_ascii=False).encode(), {}


def signed(vendor: str, answer: dict[str, Any]) -> Body:
    return with_signature(vendor, answer, SIGNERS[vendor].sign(answer))


def interpret(
    vendor: str, kind: str, body: bytes, headers: dict[str, str] | None = None, status: int = 200
) -> Any:
    return ADAPTERS[vendor].interpret(kind, http_status=status, body=body, headers=headers)  # type: ignore[arg-type]


def _op(vendor: str, kind: str) -> Any:
    mapping = ADAPTERS[vendor].settings.mapping
    assert mapping is not None
    return mapping.place if kind == "place" else mapping.query


def set_path(answer: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(answer)
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return out


vendors = st.sampled_from(sorted(ADAPTERS))
kinds = st.sampled_from(["place", "query"])
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


# ------------------------------------------------------------------------ sanity


@pytest.mark.parametrize("vendor", sorted(ADAPTERS))
def test_the_well_formed_answers_map(vendor: str) -> None:
    """The fuzzing below starts from answers that do map, so its abnormals mean something."""
    delivered = interpret(vendor, "query", *signed(vendor, DELIVERED[vendor])).outcome
    assert delivered == Delivered(
        "已签收",
        {
            "carrier": "SF",
            "tracking_no": "SF0000000001",
            "events": [{"at": "2026-11-26T01:00:00Z", "text": "已签收"}],
        },
        "V00000001",
    )
    accepted = interpret(vendor, "place", *signed(vendor, ACCEPTED[vendor]))
    assert isinstance(accepted.outcome, Accepted)
    assert accepted.signature == "valid"


# ------------------------------------------------------------------------ junk


@FUZZ
@given(vendor=vendors, kind=kinds, body=st.binary(max_size=400))
def test_random_bytes_are_abnormal(vendor: str, kind: str, body: bytes) -> None:
    outcome = interpret(vendor, kind, body).outcome
    assert isinstance(outcome, Abnormal)
    assert outcome.kind in ("malformed", "bad_signature")


@FUZZ
@given(vendor=vendors, kind=kinds, data=st.data())
def test_truncated_json_is_malformed(vendor: str, kind: str, data: st.DataObject) -> None:
    body, headers = signed(vendor, DELIVERED[vendor] if kind == "query" else ACCEPTED[vendor])
    cut = data.draw(st.integers(0, len(body) - 1))
    outcome = interpret(vendor, kind, body[:cut], headers).outcome
    assert outcome == Abnormal("malformed", outcome.detail)  # type: ignore[union-attr]


@FUZZ
@given(vendor=vendors, kind=kinds, status=st.integers(100, 599).filter(lambda s: s != 200))
def test_any_other_http_status_is_abnormal(vendor: str, kind: str, status: int) -> None:
    body, headers = signed(vendor, DELIVERED[vendor])  # a perfect answer, but not HTTP 200
    outcome = interpret(vendor, kind, body, headers, status=status).outcome
    assert isinstance(outcome, Abnormal)
    assert outcome.kind == ("maintenance" if status == 503 else "http_error")


@pytest.mark.parametrize("vendor", sorted(ADAPTERS))
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON parser's recursion
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"1" * 10_000,  # an integer with too many digits for int()
        b" " * (MAX_BODY + 1),  # past the size limit
        b'{"x": "' + b"y" * MAX_BODY + b'"}',
    ],
    ids=["deep-list", "deep-object", "huge-int", "huge-blank", "huge-string"],
)
def test_huge_and_deep_bodies_are_malformed(vendor: str, body: bytes) -> None:
    outcome = interpret(vendor, "query", body).outcome
    assert isinstance(outcome, Abnormal)
    assert outcome.kind == "malformed"


# ------------------------------------------------------------------------ signatures


@FUZZ
@given(vendor=vendors, kind=kinds, how=st.sampled_from(["missing", "empty", "wrong", "type"]))
def test_unsigned_or_badly_signed_success_is_never_trusted(
    vendor: str, kind: str, how: str
) -> None:
    answer = dict(DELIVERED[vendor] if kind == "query" else ACCEPTED[vendor])
    signature = {
        "missing": NO_SIGNATURE,
        "empty": "",
        "wrong": WRONG[vendor].sign(answer),
        "type": 12345,  # a number in the body; "12345" in a header
    }[how]
    result = interpret(vendor, kind, *with_signature(vendor, answer, signature))
    assert isinstance(result.outcome, Abnormal)
    assert result.outcome.kind == "bad_signature"
    in_header = HEADER[vendor] is not None
    bad = how == "wrong" or (how == "type" and in_header)
    assert result.signature == ("invalid" if bad else "missing")


@FUZZ
@given(vendor=vendors, data=st.data())
def test_any_change_after_signing_breaks_the_signature(vendor: str, data: st.DataObject) -> None:
    raw, headers = signed(vendor, DELIVERED[vendor])
    body = json.loads(raw)
    key = data.draw(st.sampled_from(sorted(k for k in body if k != "sign")))
    # a change of the signed text: 0 and "0" sign alike, as the scheme signs text
    signed_as = signing.canonical({key: body[key]})
    value = data.draw(
        json_values.filter(
            lambda v: v not in (None, "") and signing.canonical({key: v}) != signed_as
        )
    )
    body[key] = value
    outcome = interpret(vendor, "query", json.dumps(body).encode(), headers).outcome
    assert isinstance(outcome, Abnormal)
    assert outcome.kind == "bad_signature"


# ------------------------------------------------------------------------ mapped values

# Every mapped field of a delivered query answer, and values of a type it cannot take.
TEXT_FIELDS = {
    "giftco": ["resultMsg", "statusDesc", "expressCompany", "traces.0.time", "traces.0.desc"],
    "shopmall": [
        "errmsg",
        "data.result.stateText",
        "data.result.delivery.company",
        "data.result.delivery.nodes.0.time",
        "data.result.delivery.nodes.0.content",
    ],
}
ID_FIELDS = {
    "giftco": ["orderId", "expressNo"],
    "shopmall": ["data.result.mallOrderId", "data.result.delivery.waybillNo"],
}
KEY_FIELDS = {"giftco": ["resultCode", "orderStatus"], "shopmall": ["errcode", "data.result.state"]}
LIST_FIELDS = {"giftco": ["traces"], "shopmall": ["data.result.delivery.nodes"]}
not_text = (
    st.booleans()
    | st.floats()
    | st.lists(json_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)
)


def _set_list_item(answer: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    parent, _, index = path.rpartition(".")
    out = copy.deepcopy(answer)
    node: Any = out
    for part in parent.split("."):
        node = node[part]
    node[int(index)] = value
    return out


def _with(vendor: str, path: str, value: Any) -> dict[str, Any]:
    answer = DELIVERED[vendor]
    if path.rpartition(".")[2].isdigit():
        return _set_list_item(answer, path, value)
    parts = path.split(".")
    if any(p.isdigit() for p in parts):  # a field inside a list item
        i = next(n for n, p in enumerate(parts) if p.isdigit())
        item = copy.deepcopy(_get(answer, parts[: i + 1]))
        item[parts[i + 1]] = value
        return _set_list_item(answer, ".".join(parts[: i + 1]), item)
    return set_path(answer, path, value)


def _get(answer: Any, parts: list[str]) -> Any:
    for p in parts:
        answer = answer[int(p)] if p.isdigit() else answer[p]
    return answer


@FUZZ
@given(data=st.data())
def test_wrong_types_in_every_mapped_field_are_malformed(data: st.DataObject) -> None:
    vendor = data.draw(vendors)
    cases = (
        [(p, not_text | st.integers()) for p in TEXT_FIELDS[vendor]]
        + [(p, not_text) for p in ID_FIELDS[vendor]]
        + [(p, not_text.filter(lambda v: v is not None)) for p in KEY_FIELDS[vendor]]
        + [(p, st.booleans() | st.integers() | st.text(max_size=5) | st.floats())
           for p in LIST_FIELDS[vendor]]
        + [(p + ".0", st.booleans() | st.integers() | st.text(max_size=5) | st.lists(st.none()))
           for p in LIST_FIELDS[vendor]]
    )  # fmt: skip
    path, values = data.draw(st.sampled_from(cases))
    value = data.draw(values)
    answer = _with(vendor, path, value)
    result = interpret(vendor, "query", *signed(vendor, answer))  # correctly signed
    assert isinstance(result.outcome, Abnormal), (path, value, result)
    assert result.outcome.kind == "malformed", (path, value, result)
    assert path.split(".")[0] in result.outcome.detail or "data" in result.outcome.detail


@FUZZ
@given(vendor=vendors, kind=kinds, code=st.text(max_size=12) | st.integers())
def test_unknown_codes_are_unmapped_never_guessed(vendor: str, kind: str, code: Any) -> None:
    if str(code) in _op(vendor, kind).codes:
        return
    field = KEY_FIELDS[vendor][0]
    base = DELIVERED[vendor] if kind == "query" else ACCEPTED[vendor]
    result = interpret(vendor, kind, *signed(vendor, set_path(base, field, code)))
    assert result.outcome == Abnormal("unmapped", result.outcome.detail)  # type: ignore[union-attr]
    assert field in result.outcome.detail
    assert repr(str(code)) in result.outcome.detail


@FUZZ
@given(vendor=vendors, status=st.text(max_size=12) | st.integers())
def test_unknown_statuses_are_unmapped(vendor: str, status: Any) -> None:
    if str(status) in _op(vendor, "query").statuses:
        return
    field = KEY_FIELDS[vendor][1]
    answer = set_path(DELIVERED[vendor], field, status)
    result = interpret(vendor, "query", *signed(vendor, answer))
    assert result.outcome == Abnormal("unmapped", result.outcome.detail)  # type: ignore[union-attr]
    assert field in result.outcome.detail


# ------------------------------------------------------------------------ the property


def _peek(answer: Any, parts: list[str]) -> Any:
    for p in parts:
        if not isinstance(answer, dict) or p not in answer:
            return None
        answer = answer[p]
    return answer


def _answers(vendor: str) -> st.SearchStrategy[dict[str, Any]]:
    """Answers built from the vendor's own vocabulary mixed with junk, so that fuzzing
    reaches every branch: known and unknown codes and statuses, fields present or not."""
    mapping = ADAPTERS[vendor].settings.mapping
    assert mapping is not None
    codes = sorted(set(mapping.place.codes) | set(mapping.query.codes))
    statuses = sorted(set(mapping.place.statuses) | set(mapping.query.statuses))
    code_field, status_field = KEY_FIELDS[vendor]
    code_values = st.sampled_from(codes) | json_values
    if vendor == "shopmall":
        code_values = st.sampled_from([int(c) for c in codes]) | code_values
    status_values = st.sampled_from(statuses) | json_values
    return st.builds(
        lambda base, code, status, junk: {
            **set_path(set_path(base, code_field, code), status_field, status),
            **junk,
        },
        st.sampled_from([DELIVERED[vendor], ACCEPTED[vendor] | {"data": {"result": {}}}])
        if vendor == "shopmall"
        else st.sampled_from([DELIVERED[vendor], ACCEPTED[vendor]]),
        code_values,
        status_values,
        st.dictionaries(st.text(max_size=6).filter(lambda k: k != "sign"), json_values, max_size=2),
    )


def _success_allowed(vendor: str, kind: str, answer: dict[str, Any]) -> bool:
    """Whether the tables map this answer's code (and status) to success."""
    op = _op(vendor, kind)
    code_field, status_field = KEY_FIELDS[vendor]
    code = _peek(answer, code_field.split("."))
    if type(code) not in (str, int):
        return False
    meaning = op.codes.get(str(code))
    if meaning is not None and meaning.outcome == "status":
        status = _peek(answer, status_field.split("."))
        if type(status) not in (str, int):
            return False
        meaning = op.statuses.get(str(status))
    return meaning is not None and meaning.outcome in ("accepted", "delivered")


@FUZZ
@given(vendor=vendors, kind=kinds, data=st.data())
def test_only_a_correctly_signed_mapped_success_is_a_success(
    vendor: str, kind: str, data: st.DataObject
) -> None:
    answer = data.draw(_answers(vendor))
    how = data.draw(st.sampled_from(["signed", "unsigned", "wrong-secret", "tampered"]))
    if how == "unsigned":
        body, headers = with_signature(vendor, answer, NO_SIGNATURE)
    elif how == "wrong-secret":
        body, headers = with_signature(vendor, answer, WRONG[vendor].sign(answer))
    elif how == "tampered":
        raw, headers = signed(vendor, answer)
        tampered = json.loads(raw)
        tampered[KEY_FIELDS[vendor][0].split(".")[0]] = 0 if vendor == "shopmall" else "SUCCESS"
        tampered["__extra"] = 1
        body = json.dumps(tampered).encode()
    else:
        body, headers = signed(vendor, answer)
    result = interpret(vendor, kind, body, headers)  # must not raise
    outcome = result.outcome
    assert isinstance(
        outcome,
        Abnormal | Accepted | Rejected | InProgress | Delivered | VendorFailed | UnknownOrder,
    )
    success = isinstance(outcome, Accepted | Delivered)
    if success:
        assert how == "signed", (how, answer, outcome)
        assert result.signature == "valid"
        assert _success_allowed(vendor, kind, answer), (answer, outcome)
    if how != "signed":
        assert isinstance(outcome, Abnormal)
        assert outcome.kind in ("bad_signature", "malformed")


# ------------------------------------------------------------------------ over real HTTP


Handler = Callable[[web.Request], Any]


@pytest.fixture
async def vendor_server() -> AsyncIterator[Callable[[Handler], Any]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_streamed_body_past_the_limit_is_cut_off(vendor_server: Any) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length to refuse it early
        await resp.prepare(request)
        chunk = b" " * 65536
        for _ in range(MAX_BODY // len(chunk) + 2):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    url = await vendor_server(huge)
    adapter = MappedAdapter("shopmall", vendor_settings("shopmall", url), clock=ManualClock())
    try:
        exchange = await adapter.query(probe_order("R1", "shopmall", ManualClock().now()))
    finally:
        await adapter.close()
    assert exchange.outcome == Abnormal("malformed", f"answer larger than {MAX_BODY} bytes")
    assert exchange.http_status == 200


async def test_over_http_only_the_signed_answer_is_delivered(vendor_server: Any) -> None:
    answers = [json.dumps(DELIVERED["giftco"]).encode(), signed("giftco", DELIVERED["giftco"])[0]]
    seen: list[dict[str, str]] = []

    async def vendor(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append({k: str(v) for k, v in form.items()})
        return web.Response(body=answers[len(seen) - 1], content_type="application/json")

    url = await vendor_server(vendor)
    adapter = MappedAdapter("giftco", vendor_settings("giftco", url), clock=ManualClock())
    order = probe_order("R1", "giftco", ManualClock().now())
    try:
        first = await adapter.query(order)
        second = await adapter.query(order)
    finally:
        await adapter.close()
    assert first.outcome == Abnormal("bad_signature", "answer signature missing")
    assert isinstance(second.outcome, Delivered)
    assert second.vendor_code == "SUCCESS"
    # what went out is GiftCo's form, signed with MD5 over exactly those fields
    assert set(seen[0]) == {"mchId", "outTradeNo", "reqTime", "nonceStr", "sign"}
    assert signing.verify(seen[0], SECRET, "MD5")
    assert len(seen[0]["reqTime"]) == 14
    assert seen[0]["reqTime"].isdigit()


async def test_network_failures_are_abnormal() -> None:
    cfg = vendor_settings("giftco", "http://127.0.0.1:9")  # nothing listens on port 9
    adapter = MappedAdapter("giftco", cfg, clock=ManualClock())
    try:
        exchange = await adapter.place(probe_order("R1", "giftco", ManualClock().now()))
    finally:
        await adapter.close()
    assert isinstance(exchange.outcome, Abnormal)
    assert exchange.outcome.kind == "network"
