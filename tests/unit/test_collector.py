"""The harness's garbage-collection policy: frozen objects are not walked, a board's stop frees
its cycles, and the pauses are kept for the timeline."""

from __future__ import annotations

import gc
import time
import weakref

from cosim import collector


class Node:
    def __init__(self) -> None:
        self.peer: Node = self  # a reference cycle: only the collector frees it


def test_frozen_objects_are_left_out_of_collections_until_collect() -> None:
    node = Node()
    alive = weakref.ref(node)
    collector.freeze()
    try:
        assert all(o is not node for o in gc.get_objects())
        del node
        gc.collect()
        assert alive() is not None  # frozen: a collection does not look at it
        collector.collect()
        assert alive() is None
    finally:
        gc.unfreeze()


def test_pauses_are_kept_with_their_generation(monkeypatch) -> None:
    monkeypatch.setattr(collector, "SHOWN_NS", 0)
    start = time.perf_counter_ns()
    gc.collect()
    pauses = collector.pauses_since(start)
    assert pauses and pauses[-1][2] == 2 and start <= pauses[-1][0] <= pauses[-1][1]
    assert not collector.pauses_since(time.perf_counter_ns() + 1)
