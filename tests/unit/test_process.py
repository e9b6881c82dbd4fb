"""The process settings the long-running commands make."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from orderwatch.process import GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_tune_gc_freezes_start_up_objects_and_collects_less_often() -> None:
    _, older, oldest = gc.get_threshold()
    tune_gc()
    assert gc.get_freeze_count() > 1000  # the modules, classes and settings alive now
    assert gc.get_threshold() == (GEN0_THRESHOLD, older, oldest)


@pytest.mark.usefixtures("restored_gc")
def test_cyclic_garbage_is_still_collected_after_tuning() -> None:
    tune_gc()
    collected_before = gc.get_stats()[0]["collected"]

    class Node:
        def __init__(self) -> None:
            self.me = self

    for _ in range(GEN0_THRESHOLD * 3):
        Node()
    assert gc.get_stats()[0]["collected"] > collected_before
