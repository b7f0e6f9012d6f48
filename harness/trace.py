"""A timeline of what the models did, as Chrome trace-event JSON (opens in Perfetto or
chrome://tracing): one track per DMA channel or request line, a slice per transfer."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

MAX_EVENTS = 200_000


class EventTrace:
    def __init__(self, limit: int = MAX_EVENTS):
        self.limit = limit
        self.events: list[dict[str, Any]] = []
        self.dropped = 0
        self._tracks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._origin = time.perf_counter_ns()

    def now(self) -> int:
        """Nanoseconds since the trace began: the timestamps to give span()."""
        return time.perf_counter_ns() - self._origin

    def _track(self, name: str) -> int:
        if name not in self._tracks:
            self._tracks[name] = len(self._tracks) + 1
        return self._tracks[name]

    def _add(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self.events) >= self.limit:
                self.dropped += 1
                return
            event["tid"] = self._track(event.pop("track"))
            self.events.append(event)

    def span(self, track: str, name: str, start_ns: int, end_ns: int, **args: Any) -> None:
        """Something that took time on ``track`` (a DMA channel moving a buffer)."""
        self._add({"name": name, "ph": "X", "ts": start_ns / 1000, "dur": (end_ns - start_ns) / 1000,
                   "pid": 1, "track": track, "args": args})

    def instant(self, track: str, name: str, **args: Any) -> None:
        """A moment on ``track`` (a peripheral's DMA request)."""
        self._add({"name": name, "ph": "i", "s": "t", "ts": self.now() / 1000, "pid": 1,
                   "track": track, "args": args})

    def chrome_json(self) -> dict[str, Any]:
        with self._lock:
            names = [{"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": track}}
                     for track, tid in self._tracks.items()]
            meta = {"cosim_dropped_events": self.dropped}
            return {"traceEvents": names + list(self.events), "otherData": meta}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.chrome_json()))
