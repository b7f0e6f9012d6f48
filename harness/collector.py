"""When the harness's garbage collector runs, and what its pauses were.

A full collection holds the GIL while it walks every live object, pausing the models with it:
0.1-0.3 s for the ~200,000 objects of a pytest session (measured on a 2-core VM), longer than a
guest driver's timeout allows (the SPI core gives a transfer 200 ms plus twice its wire time).
So the walks happen when no guest waits on them: a board's start collects before QEMU runs and
freezes what exists once the guest is up (``gc.freeze``: the collector never walks it again);
a board's stop collects its garbage (the peripherals, bus and consoles hold reference cycles)
and freezes again for the boards still running.  The pauses that remain go on each board's
timeline (track "harness"), where a guest's timeout can be set against them.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any

SHOWN_NS = 5_000_000  # pauses this long or longer are kept for the timeline
_pauses: deque[tuple[int, int, int]] = deque(maxlen=10_000)  # (start, end) perf_counter_ns, generation
_started_ns = 0


def _time_collection(phase: str, info: dict[str, Any]) -> None:
    # No locks here: a collection can start inside any allocation, a lock's holder's included.
    global _started_ns
    now = time.perf_counter_ns()
    if phase == "start":
        _started_ns = now
    elif now - _started_ns >= SHOWN_NS:
        _pauses.append((_started_ns, now, info["generation"]))


gc.callbacks.append(_time_collection)


def collect() -> None:
    """Frees the garbage of everything, frozen or not (a pause of up to a few 100 ms)."""
    gc.unfreeze()
    gc.collect()


def freeze() -> None:
    """Leaves what exists now out of every later collection, until the next ``collect``."""
    gc.freeze()


def pauses_since(start_ns: int) -> list[tuple[int, int, int]]:
    """The collections of ``SHOWN_NS`` or longer that began at ``start_ns`` (perf_counter_ns) or
    later: (start, end, generation)."""
    return [p for p in list(_pauses) if p[0] >= start_ns]
