"""The gateway's garbage-collection schedule (gateway/collector.py), in this very process."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.collector import NEVER, Collector


class Node:
    """Something that can sit in a reference cycle and be watched with a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A two-object cycle nobody else holds; the weak reference says when it is freed."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector(full_every_s=3600.0, check_every_s=3600.0)
    saved = gc.get_threshold()
    c.start()
    try:
        yield c
    finally:
        c.stop()
        assert gc.get_threshold() == saved and gc.get_freeze_count() == 0


def test_start_freezes_start_up_and_turns_off_the_automatic_old_collections(
    collector: Collector,
) -> None:
    assert collector.running
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[1:] == (NEVER, NEVER)
    collector.start()  # a second start changes nothing, and stop still restores
    assert gc.get_threshold()[1:] == (NEVER, NEVER)


def test_a_young_collection_frees_a_cycle_that_died_young(collector: Collector) -> None:
    ref = cycle()
    assert ref() is not None
    collector.young()
    assert ref() is None


def test_a_cycle_that_outlived_a_young_collection_waits_for_the_full_one(
    collector: Collector,
) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    collector.young()  # alive: moves to the older generation
    del a, b
    for _ in range(3):
        collector.young()
    assert ref() is not None, "a young collection reached into the older generation"
    assert not collector.maybe_full()  # neither due by time nor by growth
    assert ref() is not None

    collector.full_every_s = 0.0
    assert collector.maybe_full()
    assert ref() is None
    assert collector.full_collections == 1 and collector.last_full_ms > 0.0


def test_growth_of_the_heap_brings_the_full_collection_forward(collector: Collector) -> None:
    collector.check_every_s = 0.0
    collector.min_growth = 10_000
    assert not collector.maybe_full()  # nothing grew yet
    kept = [[i] for i in range(50_000)]  # 50,000 lists: well over half of nothing new
    collector.growth = 0.0
    assert collector.maybe_full()
    assert not collector.maybe_full()  # measured again from the new size
    del kept


def test_a_stopped_collector_leaves_the_process_alone() -> None:
    c = Collector(full_every_s=0.0)
    saved = gc.get_threshold()
    c.young()
    assert not c.maybe_full()
    c.stop()
    assert gc.get_threshold() == saved and not c.running
