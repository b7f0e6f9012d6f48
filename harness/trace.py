"""A timeline of what the models did, as Chrome trace-event JSON (opens in Perfetto or
chrome://tracing): one track per DMA channel or request line, a slice per transfer."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

MAX_EVENTS = 300_000
MAX_EVENTS_PER_TRACK = 20_000  # a chatty request line must not crowd the other tracks out


class EventTrace:
    def __init__(self, limit: int = MAX_EVENTS, per_track: int = MAX_EVENTS_PER_TRACK):
        self.limit, self.per_track = limit, per_track
        self.events: list[dict[str, Any]] = []
        self.dropped = 0
        self._tracks: dict[str, int] = {}
        self._per_track: dict[int, int] = {}
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
            tid = self._track(event.pop("track"))
            if len(self.events) >= self.limit or self._per_track.get(tid, 0) >= self.per_track:
                self.dropped += 1
                return
            self._per_track[tid] = self._per_track.get(tid, 0) + 1
            event["tid"] = tid
            self.events.append(event)

    def span(self, track: str, name: str, start_ns: int, end_ns: int, **args: Any) -> None:
        """Something that took time on ``track`` (a DMA channel moving a buffer)."""
        self._add({"name": name, "ph": "X", "ts": start_ns / 1000, "dur": (end_ns - start_ns) / 1000,
                   "pid": 1, "track": track, "args": args})

    def instant(self, track: str, name: str, **args: Any) -> None:
        """A moment on ``track`` (a peripheral's DMA request)."""
        tid = self._tracks.get(track)
        if tid is not None and self._per_track.get(tid, 0) >= self.per_track:
            with self._lock:  # full: skip building the event (requests come per frame)
                self.dropped += 1
            return
        self._add({"name": name, "ph": "i", "s": "t", "ts": self.now() / 1000, "pid": 1,
                   "track": track, "args": args})

    def on_track(self, track: str) -> list[dict[str, Any]]:
        """The events recorded on ``track`` so far (for tests)."""
        with self._lock:
            tid = self._tracks.get(track)
            return [e for e in self.events if e["tid"] == tid]

    def chrome_json(self) -> dict[str, Any]:
        with self._lock:
            names = [{"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": track}}
                     for track, tid in self._tracks.items()]
            meta = {"cosim_dropped_events": self.dropped}
            return {"traceEvents": names + list(self.events), "otherData": meta}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.chrome_json()))
