"""The guest's clock as the models see it, and the work they schedule on it.

Time is QEMU's virtual clock in nanoseconds: the guest's own time.  Each bridge request carries
it, so during an access or a tick ``GuestClock.now_ns`` is the guest's time of that moment.  A
model schedules work with ``Peripheral.at(when_ns, callback)``; its bridge gives QEMU the
earliest deadline in every reply, QEMU arms a virtual-clock timer, and when the guest's time gets
there the work runs in a tick, under the same rules as an MMIO access (the model lock held, IRQ
changes riding on the reply).  Work never waits on the host's clock: under instruction counting,
the guest sees the device take exactly the time the model says, however slow the host is.
"""

from __future__ import annotations

import heapq
import itertools
import mmap
import threading
from collections.abc import Callable
from pathlib import Path

# A callback that schedules work at or before the current time runs in the same pass; this many
# in one pass is a model that never lets time move.
RUNAWAY_CALLBACKS = 1_000_000
SOON = -1  # a deadline before any other: at the next tick, at the guest's time then


class ClockError(RuntimeError):
    pass


class Timer:
    """Work scheduled at ``when`` (virtual ns); ``cancel()`` takes it back. ``pending`` until it
    runs or is cancelled."""

    __slots__ = ("callback", "pending", "when")

    def __init__(self, when: int, callback: Callable[[], None]):
        self.when, self.callback, self.pending = when, callback, True

    def cancel(self) -> None:
        """Takes the work back: it will not run."""
        self.pending = False


class Timers:
    """One model's scheduled work, earliest first, run with the model's ``lock`` held.
    ``on_earlier`` is told when work is added ahead of everything else (its bridge then asks
    QEMU for a tick, unless it is serving)."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self._heap: list[tuple[int, int, Timer]] = []
        self._order = itertools.count()
        self.on_earlier: Callable[[], None] | None = None

    def add(self, when: int, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        earliest = self.next_deadline()
        heapq.heappush(self._heap, (when, next(self._order), timer))
        if self.on_earlier is not None and (earliest is None or when < earliest):
            self.on_earlier()
        return timer

    def next_deadline(self) -> int | None:
        while self._heap and not self._heap[0][2].pending:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run_due(self, clock: GuestClock, now: int) -> None:
        """Runs, in time order, the work due at ``now`` or before, each at its own time on
        ``clock`` (work a late tick catches up on sees the time it was due); ``clock`` then reads
        ``now``."""
        for _ in range(RUNAWAY_CALLBACKS):
            when = self.next_deadline()
            if when is None or when > now:
                clock.now_ns = now
                return
            _, _, timer = heapq.heappop(self._heap)
            clock.now_ns = now if when == SOON else when
            timer.pending = False
            timer.callback()
        raise ClockError(f"{RUNAWAY_CALLBACKS} callbacks at one time: a model keeps scheduling "
                         "work at the current time")


class GuestClock:
    """The board's reading of the guest's clock: set from each bridge request (the newest)."""

    def __init__(self) -> None:
        self.now_ns = 0

    def attach(self, timers: Timers) -> None:
        """A model's timers (their bridge serves them on a board)."""

    def seen(self, vclock_ns: int) -> int:
        """A request at ``vclock_ns`` arrived; returns the time it is now."""
        if vclock_ns > self.now_ns:
            self.now_ns = vclock_ns
        return self.now_ns


class ManualClock(GuestClock):
    """A guest clock a unit test moves (``ModelBench.clock``): ``advance`` runs every model's
    work due on the way, in time order, as ticks would."""

    def __init__(self) -> None:
        super().__init__()
        self.timers: list[Timers] = []

    def attach(self, timers: Timers) -> None:
        self.timers.append(timers)

    def advance(self, ns: int) -> None:
        self.run_until(self.now_ns + ns)

    def run_until(self, end_ns: int) -> None:
        while True:
            due = [(when, t) for t in self.timers if (when := t.next_deadline()) is not None]
            when, timers = min(due, key=lambda d: d[0], default=(None, None))
            if when is None or timers is None or when > end_ns:
                break
            with timers.lock:
                timers.run_due(self, max(self.now_ns, when))
        self.now_ns = max(self.now_ns, end_ns)

    def run_until_idle(self, limit_ns: int = 10**12) -> None:
        """Runs scheduled work until none is left (at most ``limit_ns`` of guest time)."""
        end = self.now_ns + limit_ns
        while True:
            pending = [w for t in self.timers if (w := t.next_deadline()) is not None]
            if not pending:
                return
            if min(pending) > end:
                raise ClockError(f"work still scheduled after {limit_ns} ns of guest time")
            self.run_until(min(pending))


class IdleHold:
    """The harness's hold on an idle guest's time, under virtual time: between guest commands
    nobody waits on the guest, and QEMU would otherwise skip its idle time from timer to timer,
    spinning a host core.  While held and no model has work scheduled, an idle guest waits at a
    standstill (QEMU's cosim-clock device maps this file; see include/system/cosim-clock.h)."""

    def __init__(self, path: Path):
        self.path = path
        path.write_bytes(bytes(mmap.PAGESIZE))
        with path.open("r+b") as f:
            self._map = mmap.mmap(f.fileno(), mmap.PAGESIZE)

    def hold(self) -> None:
        self._map[0] = 1

    def release(self) -> None:
        self._map[0] = 0

    def close(self) -> None:
        self._map.close()
