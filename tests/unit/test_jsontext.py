"""orderwatch's own JSON text (orjson, with the standard library where orjson differs)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderwatch import jsontext

COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# What orderwatch writes: text (any Unicode but lone surrogates), 64-bit integers,
# booleans, null, lists and string-keyed objects; floats are checked apart (orjson and
# json may spell the same float differently, e.g. 1e+16 and 1e16).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(st.characters(exclude_categories=["Cs"]))
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(documents)
def test_dumps_writes_what_the_standard_library_writes(value: Any) -> None:
    assert jsontext.dumps(value) == COMPACT.encode(value)
    assert jsontext.loads(jsontext.dumps(value)) == value


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_read_back_the_same(value: float) -> None:
    assert json.loads(jsontext.dumps({"x": value})) == {"x": value}


@pytest.mark.parametrize(
    "value",
    [
        {"tracking_no": 123456789012345678901234567890},
        [-(2**70), 2**64],
        {1: "int key", None: "null key", 2.5: "float key"},
    ],
    ids=["big-int", "big-ints-in-a-list", "keys-that-are-not-strings"],
)
def test_what_orjson_refuses_is_written_as_the_standard_library_writes_it(value: Any) -> None:
    assert jsontext.dumps(value) == COMPACT.encode(value)


def test_values_json_refuses_are_still_refused() -> None:
    """orjson would write a datetime or a dataclass; orderwatch's rows never hold one, and
    one there is a bug that should fail where it is made, not reach a vendor or a customer."""

    @dataclass
    class Point:
        x: int

    for value in ({"at": datetime(2026, 12, 3, tzinfo=UTC)}, [Point(1)]):
        with pytest.raises(TypeError):
            jsontext.dumps(value)


def test_nan_is_never_written_as_text_a_json_reader_refuses() -> None:
    """What reaches here was checked for NaN; were one to slip through, the row and the
    webhook body stay JSON (null), not Python's ``NaN``, which JSON readers refuse."""
    assert jsontext.dumps([math.nan, -math.inf]) == "[null,null]"


def test_a_subclass_is_written_as_the_standard_library_writes_it() -> None:
    """A plug-in's logistics may hold a dict subclass: its size is checked with json, so
    what is stored must be json's text for it, not the dict's raw contents."""

    class Masked(dict[str, str]):
        def items(self) -> Any:
            return [(k, "***") for k in self]

    value = {"events": [Masked(phone="13800000000")], "n": True}
    assert jsontext.dumps(value) == COMPACT.encode(value) == '{"events":[{"phone":"***"}],"n":true}'


big_documents = st.recursive(
    scalars | st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(big_documents)
def test_loads_exact_reads_what_json_loads_reads(value: Any) -> None:
    text = jsontext.dumps(value)
    assert jsontext.loads_exact(text) == json.loads(text)
    assert jsontext.loads_exact(f" {text}\n") == json.loads(f" {text}\n")


def test_loads_exact_keeps_integers_beyond_64_bits_and_refuses_what_json_refuses() -> None:
    assert jsontext.loads_exact('{"n":123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }
    for bad in ('{"a":1} x', "", '{"a":'):
        with pytest.raises(json.JSONDecodeError) as expected:
            json.loads(bad)
        with pytest.raises(json.JSONDecodeError) as got:
            jsontext.loads_exact(bad)
        assert str(got.value) == str(expected.value)
