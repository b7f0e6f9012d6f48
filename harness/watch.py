"""The failure watch: whatever goes wrong on a board becomes one :class:`BoardFailure` with the
logs that explain it — a plugin exception, a kernel oops, an unexpected DMA fault or width
mismatch, QEMU exiting.  The console calls :meth:`FailureWatch.check` while it waits, so a broken
board fails the test at once instead of at its time-out."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .bridge import BridgeFailure
from .bus import Bus
from .cachemodel.reports import CacheWatch
from .console import EXPECTABLE, KernelLog

CACHE = "cache"  # what a test expects when it expects cache-model reports


class BoardFailure(AssertionError):
    """The board broke; the message carries the cause and where the logs are."""


class FailureWatch:
    def __init__(self, bus: Bus, logdir: Path, engine_exit_code: Callable[[], int | None]):
        self.bus, self.logdir, self.engine_exit_code = bus, logdir, engine_exit_code
        self.kernel_log: KernelLog | None = None  # set once the kernel console is connected
        self.failures: list[BridgeFailure] = []
        self.expected_dma_faults = 0
        self.fault_notes: dict[int, str] = {}  # bus.faults index -> what the guest's DMA API said
        self.expected_width_mismatches = 0
        self.expected_truncations = 0
        self.expected_hazards = 0
        self.truncation_notes: dict[int, str] = {}  # bus.truncations index -> the guest's mappings
        self.cache: CacheWatch | None = None  # set when the board runs the cache model
        self.failure: BoardFailure | None = None
        self._lock = threading.Lock()

    def model_failed(self, failure: BridgeFailure) -> None:
        """A model raised (on the bridge thread or a host thread of its own)."""
        with self._lock:
            self.failures.append(failure)
        self.trace_line(f"FAILURE {failure.peripheral}: {failure.message}\n{failure.traceback}")

    def trace_line(self, text: str) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        with (self.logdir / "plugin-trace.log").open("a") as f:
            f.write(text.rstrip() + "\n")

    def check(self, between_commands: bool = False) -> None:
        """Raises BoardFailure if anything went wrong.  The first failure sticks: a broken board
        raises it again on every later use.  DMA faults, like cache reports, fail the board
        between guest commands, once the guest has been asked about them (Board.check)."""
        __tracebackhide__ = True  # pytest shows the test's frame, not cosim's
        if self.failure is not None:
            raise self.failure
        cause = self._find_failure(between_commands)
        if cause is not None:
            self.failure = BoardFailure(cause)
            raise self.failure

    def unexpected_faults(self) -> list[int]:
        """Indices in bus.faults of the faults no test expected."""
        return list(range(self.expected_dma_faults, len(self.bus.faults)))

    def unexpected_truncations(self) -> list[int]:
        """Indices in bus.truncations of the address truncations no test expected."""
        return list(range(self.expected_truncations, len(self.bus.truncations)))

    @staticmethod
    def _first_five(lines: list[str]) -> str:
        more = len(lines) - 5
        return "\n".join(lines[:5]) + (f"\n  ... and {more} more" if more > 0 else "")

    def _find_failure(self, between_commands: bool) -> str | None:
        if self.failures:
            f = self.failures[0]
            return self.report(f"peripheral '{f.peripheral}': {f.message}", f.traceback)
        if self.kernel_log is not None and (events := self.kernel_log.unexpected()):
            self.kernel_log.settle()
            lines = "\n".join(f"  [{e.category}] {e.line}" for e in events[:5])
            return self.report(f"the guest kernel reported:\n{lines}")
        if between_commands and (unexpected := self.unexpected_faults()):
            faults = "\n".join(f"  {self.bus.faults[i]}" + (f"\n    {self.fault_notes[i]}"
                                                           if i in self.fault_notes else "")
                               for i in unexpected[:5])
            return self.report(f"unexpected DMA fault(s):\n{faults}")
        if between_commands and (unexpected := self.unexpected_truncations()):
            lines = [f"  {self.bus.truncations[i]}" + (f"\n    {self.truncation_notes[i]}"
                                                       if i in self.truncation_notes else "")
                     for i in unexpected]
            return self.report("a DMA master dropped address bits: the driver's DMA mask is wider "
                               "than the master (set its mask to the master's width, or describe "
                               f"the limit with dma-ranges):\n{self._first_five(lines)}")
        if between_commands and (hazards := self.bus.hazards[self.expected_hazards:]):
            lines = [f"  {h}" for h in hazards]
            return self.report(f"a model saw its hardware go wrong:\n{self._first_five(lines)}")
        # a cache report after a DMA fault or a truncation is its consequence: the cause first
        if self.cache is not None:
            self.cache.poll()
            if self.cache.unexpected:
                reports = "\n".join(str(r) for r in self.cache.unexpected[:5])
                more = len(self.cache.unexpected) - 5
                return self.report(f"the cache model reported:\n{reports}"
                                   + (f"\n... and {more} more" if more > 0 else "")
                                   + f"\n(all in {self.cache.report_file})")
        unexpected = len(self.bus.width_mismatches) - self.expected_width_mismatches
        if unexpected > 0:
            lines = "\n".join(f"  {m}" for m in self.bus.width_mismatches[-unexpected:][:5])
            return self.report(f"unexpected DMA width mismatch(es):\n{lines}")
        code = self.engine_exit_code()
        if code is not None:
            if self.kernel_log is not None:
                self.kernel_log.settle()
            stderr_log = self.logdir / "qemu-stderr.log"
            stderr = stderr_log.read_text(errors="replace").strip() if stderr_log.exists() else ""
            return self.report(f"QEMU exited with status {code}\nQEMU stderr:\n{stderr or '(empty)'}")
        return None

    def report(self, cause: str, detail: str = "") -> str:
        parts = [cause]
        if detail:
            parts.append(detail.rstrip())
        if self.kernel_log is not None:
            parts.append("--- kernel log (tail) ---\n" + self.kernel_log.tail(40))
        parts.append(f"logs: {self.logdir}")
        return "\n".join(parts)

    @contextlib.contextmanager
    def expect(self, *categories: str, dma_faults: int = 0, width_mismatches: int = 0,
               truncations: int = 0, hazards: int = 0) -> Iterator[None]:
        """Within the block, the named kernel-log categories (e.g. "DMA-API"), up to
        ``dma_faults`` DMA faults, ``width_mismatches`` DMA width mismatches, ``truncations``
        address truncations (accesses of a master given too wide an address) and ``hazards``
        models' hazard reports (``Peripheral.report_hazard``) are expected."""
        unknown = set(categories) - EXPECTABLE - {CACHE}
        if unknown:
            raise ValueError(f"cannot expect {sorted(unknown)}; expectable: "
                             f"{sorted(EXPECTABLE | {CACHE})}")
        assert self.kernel_log is not None, "the board is not started"
        before = set(self.kernel_log.expected)
        logged = set(categories) - {CACHE}
        self.kernel_log.expected |= logged | ({"warning"} if "DMA-API" in logged else set())
        self.expected_dma_faults += dma_faults
        self.expected_width_mismatches += width_mismatches
        self.expected_truncations += truncations
        self.expected_hazards += hazards
        cache = self.cache if CACHE in categories else None
        if cache is not None:
            cache.expecting += 1
        try:
            yield
        finally:
            self.kernel_log.expected = before
            if cache is not None:
                cache.expecting -= 1
