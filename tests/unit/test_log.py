"""orderwatch's logfmt renderer writes exactly what structlog's writes, faster."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from orderwatch.log import LogfmtRenderer

keys = st.text(min_size=1, max_size=8)
values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)


@given(st.dictionaries(keys, values, max_size=6), st.booleans())
def test_lines_are_structlogs(event: dict[str, Any], bool_as_flag: bool) -> None:
    theirs = structlog.processors.LogfmtRenderer(
        key_order=["event"], drop_missing=True, bool_as_flag=bool_as_flag
    )
    ours = LogfmtRenderer(key_order=["event"], drop_missing=True, bool_as_flag=bool_as_flag)
    try:
        expected = theirs(None, "info", dict(event))
    except ValueError as exc:
        refusal = str(exc)
    else:
        refusal = None
    if refusal is not None:
        with pytest.raises(ValueError, match="Invalid key") as raised:
            ours(None, "info", dict(event))
        assert str(raised.value) == refusal
        return
    assert ours(None, "info", dict(event)) == expected
    assert ours(None, "info", dict(event)) == expected  # keys now known


def test_a_key_with_a_space_is_refused_every_time() -> None:
    ours = LogfmtRenderer()
    for _ in range(2):
        with pytest.raises(ValueError, match='Invalid key: "a b"'):
            ours(None, "info", {"a b": 1})


def test_values_are_quoted_and_escaped() -> None:
    line = LogfmtRenderer(key_order=["event"], drop_missing=True)(
        None,
        "info",
        {"event": "x", "error": 'say "hi"\nC:\\ =', "ok": True, "no": False, "gone": None},
    )
    assert line == 'event=x error="say \\"hi\\"\\nC:\\\\ =" ok no=false gone='
