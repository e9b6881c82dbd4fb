"""How the SQLite hot path binds times: the text of a time it has formatted or read is
reused for the same object, never for another one, and memory stays bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from orderwatch.store.hot import HotPath, TimeTexts

aware = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(aware)
def test_time_in_writes_the_same_text_the_first_time_and_from_memory(value: datetime) -> None:
    hot = HotPath("sqlite")
    expected = value.strftime("%Y-%m-%d %H:%M:%S.%f")
    assert hot.time_in(value) == expected
    assert hot.time_in(value) == expected  # remembered
    twin = value + timedelta(0)  # equal, another object: formatted on its own
    assert hot.time_in(twin) == expected
    assert hot.time_out(expected) == value


def test_a_time_in_another_zone_is_written_as_utc() -> None:
    tokyo = datetime(2026, 11, 26, 17, 0, 0, 5, tzinfo=timezone(timedelta(hours=9)))
    hot = HotPath("sqlite")
    assert hot.time_in(tokyo) == "2026-11-26 08:00:00.000005"
    assert hot.time_in(tokyo) == "2026-11-26 08:00:00.000005"


def test_a_claimed_orders_start_is_written_back_as_it_was_read() -> None:
    hot = HotPath("sqlite")
    text = "2026-11-26 08:00:00.000001"
    started = hot._time_out_kept(text)
    assert started == datetime(2026, 11, 26, 8, 0, 0, 1, tzinfo=UTC)
    assert hot.time_in(started) is text  # from memory, not formatted again


def test_texts_are_found_by_identity_only_and_memory_is_bounded() -> None:
    texts = TimeTexts(size=4)
    kept = [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i) for i in range(20)]
    for i, value in enumerate(kept):
        texts.keep(value, f"t{i}")
        assert texts.get(value) == f"t{i}"
        assert texts.get(value + timedelta(0)) is None  # an equal time, another object
        assert len(texts._young) + len(texts._old) <= 2 * texts.size
    # the last generation and the one before it are remembered, older ones forgotten
    assert [texts.get(v) is not None for v in kept[-8:]] == [True] * 8
    assert texts.get(kept[0]) is None


def test_other_databases_bind_datetimes() -> None:
    value = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    assert HotPath("postgresql").time_in(value) == datetime(2026, 11, 26, 8, 0)
