"""A timeline of what the models did, as Chrome trace-event JSON (opens in Perfetto or
chrome://tracing): one track per DMA channel or request line, a slice per transfer.

Its clock is the host's by default; a board under virtual time gives it the guest's
(``clock``), so a transfer's slice is as long as the guest saw it take."""

from __future__ import annotations

import json
import threading
import time
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .clock import GuestClock

MAX_EVENTS = 300_000
MAX_EVENTS_PER_TRACK = 20_000  # a chatty request line must not crowd the other tracks out


# An event as kept: (ph, name, tid, ts_us, dur_us, key, value, key, value...): one flat tuple of
# strings and numbers, which the garbage collector stops walking after its first pass; a busy
# board's 300,000 dicts made each full collection, which pauses the models, ~0.1 s longer.
_Event = tuple[Any, ...]


class EventTrace:
    def __init__(self, limit: int = MAX_EVENTS, per_track: int = MAX_EVENTS_PER_TRACK,
                 clock: GuestClock | None = None):
        self.limit, self.per_track = limit, per_track
        self.clock = clock  # None: the host's clock
        self.events: list[_Event] = []
        self.dropped = 0
        self._tracks: dict[str, int] = {}
        self._per_track: dict[int, int] = {}
        self._lock = threading.Lock()
        self.origin_ns = time.perf_counter_ns()

    def now(self) -> int:
        """The timestamp to give span(): the guest's time in ns on a guest clock, else ns since
        the trace began."""
        if self.clock is not None:
            return self.clock.now_ns
        return time.perf_counter_ns() - self.origin_ns

    def at(self, perf_ns: int) -> int:
        """A ``time.perf_counter_ns()`` reading as a timestamp for span() (host clock only)."""
        return perf_ns - self.origin_ns

    def _track(self, name: str) -> int:
        if name not in self._tracks:
            self._tracks[name] = len(self._tracks) + 1
        return self._tracks[name]

    def _add(self, ph: str, name: str, track: str, ts_us: float, dur_us: float,
             args: dict[str, Any]) -> None:
        with self._lock:
            tid = self._track(track)
            if len(self.events) >= self.limit or self._per_track.get(tid, 0) >= self.per_track:
                self.dropped += 1
                return
            self._per_track[tid] = self._per_track.get(tid, 0) + 1
            self.events.append((ph, name, tid, ts_us, dur_us, *chain.from_iterable(args.items())))

    def span(self, track: str, name: str, start_ns: int, end_ns: int, **args: Any) -> None:
        """Something that took time on ``track`` (a DMA channel moving a buffer)."""
        self._add("X", name, track, start_ns / 1000, (end_ns - start_ns) / 1000, args)

    def instant(self, track: str, name: str, **args: Any) -> None:
        """A moment on ``track`` (a peripheral's DMA request)."""
        tid = self._tracks.get(track)
        if tid is not None and self._per_track.get(tid, 0) >= self.per_track:
            with self._lock:  # full: skip building the event (requests come per frame)
                self.dropped += 1
            return
        self._add("i", name, track, self.now() / 1000, 0.0, args)

    @staticmethod
    def _as_dict(event: _Event) -> dict[str, Any]:
        ph, name, tid, ts, dur = event[:5]
        args = dict(zip(event[5::2], event[6::2], strict=True))
        shown: dict[str, Any] = {"name": name, "ph": ph, "ts": ts, "pid": 1, "tid": tid, "args": args}
        if ph == "X":
            shown["dur"] = dur
        else:
            shown["s"] = "t"  # an instant on its thread's track
        return shown

    def on_track(self, track: str) -> list[dict[str, Any]]:
        """The events recorded on ``track`` so far (for tests)."""
        with self._lock:
            tid = self._tracks.get(track)
            return [self._as_dict(e) for e in self.events if e[2] == tid]

    def chrome_json(self) -> dict[str, Any]:
        with self._lock:
            names = [{"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": track}}
                     for track, tid in self._tracks.items()]
            meta = {"cosim_dropped_events": self.dropped,
                    "cosim_clock": "host" if self.clock is None else "guest"}
            return {"traceEvents": names + [self._as_dict(e) for e in self.events], "otherData": meta}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.chrome_json()))
