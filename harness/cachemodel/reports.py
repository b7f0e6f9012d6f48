"""Cache-model events turned into reports a driver engineer can act on: which device and
transfer, which buffer (from the guest's ``dma`` trace events), which line and bytes, which CPU
instruction (from the kernel's System.map and the guest's kallsyms for modules), and the fix."""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..trace import EventTrace
from . import LINE_SIZE, PAGE_SIZE, CacheModel, CoherencyLayer, Event, Kind, Transfer, byte_runs

TRACE_EVENTS = "/sys/kernel/tracing/events/dma"
TRACE = "/sys/kernel/tracing/trace"
SWIOTLB_BOUNCED = "/sys/kernel/tracing/events/swiotlb/swiotlb_bounced"  # a mapping bounce-buffered
TEXT_TYPES = set("tTwW")
KERNEL_SPACE = 0xFFFF_0000_0000_0000  # arm64: TTBR1 addresses; below them, a process's
# The kernel's leaf string and page routines: the instruction is theirs, the caller is in X30
LEAF_ROUTINES = {"memset", "__memset", "__pi_memset", "memcpy", "__memcpy", "__pi_memcpy",
                 "memmove", "__memmove", "__pi_memmove", "copy_page", "clear_page", "strcpy",
                 "strncpy", "__arch_copy_to_user", "__arch_copy_from_user", "memcpy_fromio",
                 "memcpy_toio"}

_TRACE_LINE = re.compile(
    r"^\s*(?P<task>.+?)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>[\d.]+):\s+(?P<event>dma_\w+):\s+"
    r"(?P<device>\S+)\s+(?P<rest>.*)$")
_FIELD = re.compile(r"(\w+)=(\{[^}]*\}|\S+)")  # arrays print as {a, b}


class Symbols:
    """Kernel text symbols: System.map for the kernel itself, kallsyms lines for modules.  Kept in
    three flat lists, not a tuple per symbol: ~60,000 tuples would lengthen every pass of the
    harness's garbage collector, which pauses the models with it."""

    def __init__(self) -> None:
        self._addresses: list[int] = []
        self._names: list[str] = []
        self._modules: list[str] = []

    @classmethod
    def from_system_map(cls, path: Path | None) -> Symbols:
        symbols = cls()
        if path is not None and path.exists():
            symbols.add(path.read_text(errors="replace"))
        return symbols

    def add(self, text: str) -> None:
        """Lines of System.map or /proc/kallsyms: ``address type name [module]``."""
        entries = list(zip(self._addresses, self._names, self._modules, strict=True))
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in TEXT_TYPES:
                continue
            try:
                address = int(parts[0], 16)
            except ValueError:
                continue
            if address:
                module = parts[3].strip("[]") if len(parts) > 3 else ""
                entries.append((address, parts[2], module))
        entries.sort()
        self._addresses = [e[0] for e in entries]
        self._names = [e[1] for e in entries]
        self._modules = [e[2] for e in entries]

    def name(self, pc: int) -> str | None:
        i = bisect.bisect_right(self._addresses, pc) - 1
        if not pc or i < 0:
            return None
        address, name, module = self._addresses[i], self._names[i], self._modules[i]
        if pc - address > 1 << 20:  # beyond any function: not text we know
            return None
        return f"{name}+{pc - address:#x}" + (f" [{module}]" if module else "")


@dataclass(frozen=True)
class DmaMapping:
    """A DMA-API call from the guest's ``dma`` trace events."""

    call: str  # dma_map_page, dma_map_sg, dma_alloc, ...
    device: str
    direction: str
    dma_address: int
    size: int
    spans: tuple[tuple[int, int], ...]  # physical (address, size) runs
    timestamp: str
    task: str
    unmapped: bool = False
    unmapped_at: str = ""  # the unmap's or free's timestamp
    dma_spans: tuple[tuple[int, int], ...] = ()  # (address, size) runs as the device sees them
    first_physical: int | None = None  # where its first entry is (what dma_unmap_sg names)

    def covers(self, address: int) -> bool:
        return any(base <= address < base + size for base, size in self.spans)

    def covers_dma(self, address: int) -> bool:
        return any(base <= address < base + size for base, size in self.dma_spans)

    def by(self, master: str) -> bool:
        """Whether a board's master made it: Linux names the device ``<unit address>.<node>``."""
        return self.device == master or self.device.endswith(f".{master}")

    def __str__(self) -> str:
        state = ", unmapped since" if self.unmapped else ""
        return (f"{self.call} by {self.device} at {self.timestamp} s ({self.task}): dma "
                f"{self.dma_address:#x}, {self.size} bytes, DMA_{self.direction}{state}")


def parse_dma_trace(text: str) -> list[DmaMapping]:
    """Mappings in the order the trace lists them; a later unmap or free marks its mapping."""
    mappings: list[DmaMapping] = []
    for line in text.splitlines():
        m = _TRACE_LINE.match(line)
        if not m:
            continue
        event, fields = m["event"], dict(_FIELD.findall(m["rest"]))
        if event in ("dma_unmap_page", "dma_unmap_resource", "dma_unmap_sg", "dma_free",
                     "dma_free_sgt"):
            address = _first_address(fields)
            physical = _hex_list(fields.get("phys_addrs", ""))[:1]  # dma_unmap_sg names only these
            for i in range(len(mappings) - 1, -1, -1):
                mapping = mappings[i]
                same = (mapping.dma_address == address if address is not None
                        else bool(physical) and mapping.first_physical == physical[0])
                if same and mapping.device == m["device"] and not mapping.unmapped:
                    mappings[i] = dataclasses.replace(mapping, unmapped=True, unmapped_at=m["ts"])
                    break
            continue
        if event not in ("dma_map_page", "dma_map_resource", "dma_map_sg", "dma_alloc",
                         "dma_alloc_pages", "dma_alloc_sgt"):
            continue
        spans, dma_spans = _spans(fields), _dma_spans(fields)
        if not spans and not dma_spans:
            continue
        starts = _hex_list(fields.get("phys_addrs", "")) or [a for a, _ in spans]
        mappings.append(DmaMapping(event, m["device"], fields.get("dir", "?"),
                                   (dma_spans or spans)[0][0], sum(s for _, s in dma_spans or spans),
                                   tuple(spans), m["ts"], m["task"], dma_spans=tuple(dma_spans),
                                   first_physical=starts[0] if starts else None))
    return mappings


def _hex_list(value: str) -> list[int]:
    return [int(v, 16) for v in re.findall(r"[0-9a-fA-F]+", value.replace("0x", " "))]


def _size_list(value: str) -> list[int]:
    """Sizes as the trace prints them: {0x2579,0x9786} (hex) or plain decimals."""
    return [int(v, 0) for v in re.findall(r"0x[0-9a-fA-F]+|\d+", value)]


def _first_address(fields: dict[str, str]) -> int | None:
    for key in ("dma_addr", "dma_addrs"):
        if key in fields:
            values = _hex_list(fields[key])
            return values[0] if values else None
    return None


def _spans(fields: dict[str, str]) -> list[tuple[int, int]]:
    """Physical runs of a mapping: phys_addr(s) with size(s); without an IOMMU a dma address
    is the physical address (dma_alloc reports no physical address)."""
    if "phys_addr" in fields and "size" in fields:
        return [(int(fields["phys_addr"], 16), int(fields["size"]))]
    if "sizes" in fields and "phys_addrs" in fields:
        # sizes are the DMA segments' (ents); they are the entries' (nents) only when no IOMMU
        # merged entries into fewer segments: else the physical lengths are not in the trace
        physical, sizes = _hex_list(fields["phys_addrs"]), _size_list(fields["sizes"])
        return list(zip(physical, sizes, strict=True)) if len(physical) == len(sizes) else []
    if "dma_addr" in fields and "size" in fields:
        return [(int(fields["dma_addr"], 16), int(fields["size"]))]
    return []


def _dma_spans(fields: dict[str, str]) -> list[tuple[int, int]]:
    """The device's view of a mapping: dma_addr with size, or dma_map_sg's dma_addrs with sizes
    (one per DMA segment, which an IOMMU may have merged)."""
    if "dma_addrs" in fields and "sizes" in fields:
        return list(zip(_hex_list(fields["dma_addrs"]), _size_list(fields["sizes"]), strict=False))
    if "dma_addr" in fields and "size" in fields:
        return [(int(fields["dma_addr"], 16), int(fields["size"]))]
    return []


def describe_fault_address(master: str, address: int, mappings: list[DmaMapping],
                           at: float | None = None) -> str:
    """What the guest's DMA API last said about a faulting device address: the newest mapping by
    ``master`` that covered it, and the newest one it runs past the end of (within a page).
    ``at``: when the access was, on the trace's clock (seconds), if known."""
    own = [m for m in mappings if m.by(master)]
    notes = []
    covering = next((m for m in reversed(own) if m.covers_dma(address)), None)
    if covering is not None:
        if not covering.unmapped:
            state = "still mapped"
        elif at is None:
            state = f"unmapped at {covering.unmapped_at} s"
        else:
            order = "before" if float(covering.unmapped_at) < at else "after"
            state = f"unmapped at {covering.unmapped_at} s, {order} the access (at {at:.6f} s)"
        notes.append(f"the last mapping that covered {address:#x}: "
                     f"{dataclasses.replace(covering, unmapped=False)}, {state}")
    past = next(((m, base + size) for m in reversed(own) if m is not covering
                 for base, size in m.dma_spans if 0 <= address - (base + size) < PAGE_SIZE), None)
    if past is not None:
        mapping, end = past
        notes.append(f"{address - end} bytes past the end of {mapping} (which ends at {end:#x})")
    if notes:
        return "; and ".join(notes)
    return (f"no mapping by {master} in the guest's dma trace covers {address:#x}"
            + ("" if own else f" (the trace holds none of {master}'s mappings)"))


def describe_truncation(master: str, issued: int, address: int,
                        mappings: list[DmaMapping]) -> str:
    """The guest's mappings behind an address truncation: the one the driver gave the master
    (at ``issued``) and what lives at the address the master reached instead."""
    own = next((m for m in reversed(mappings) if m.by(master) and m.covers_dma(issued)), None)
    given = (f"the driver's mapping: {own}" if own is not None else
             f"no mapping by {master} in the guest's dma trace covers {issued:#x}")
    hit = next((m for m in reversed(mappings) if not m.unmapped and m.covers(address)), None)
    there = (f"{address:#x} is inside a live mapping: {hit}" if hit is not None else
             f"no live DMA mapping covers {address:#x}: the memory there belongs to the kernel")
    return f"{given}; {there}"


FIXES = {
    Kind.DEVICE_READ_UNCLEAN: "missing dma_sync_single_for_device after the CPU's write at {store}",
    Kind.CPU_READ_STALE: "missing dma_sync_single_for_cpu before this read at {access}",
    Kind.DEVICE_WRITE_SHARED_LINE: ("buffer shares cache line {line:#x} with bytes the CPU wrote "
                                    "at {store}: align the buffer to the cache line"),
    Kind.DEVICE_WRITE_OVER_DIRTY: "the CPU wrote at {store} while the device owned the buffer",
    Kind.CPU_WRITE_DISCARDED: ("the CPU wrote at {store} while the device owned the buffer: an "
                               "invalidate (dma_sync_single_for_cpu or dma_unmap) threw the write away"),
    Kind.LOAD_ORDER: ("missing dma_rmb() between the read at {earlier} of line {earlier_line:#x} and "
                      "this read at {access}: the device wrote these bytes before the ones read "
                      "there, and with no load barrier between the two reads the CPU may perform "
                      "this one first and miss them"),
}


def _ranges(mask: int) -> str:
    runs = byte_runs(mask)
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "none"


@dataclass
class CacheReport:
    """Lines with one hazard from one transfer (device events) or one instruction (CPU events)."""

    kind: Kind
    events: list[Event]
    transfer: Transfer | None
    device: str  # the device that read or wrote (CPU events: the line's last writer)
    store: str  # the CPU's last store to the first line
    access: str  # the CPU's access (CPU events)
    buffer: DmaMapping | None
    buffer_note: str = ""
    earlier: str = ""  # LOAD_ORDER: the earlier load, which saw the device's later write
    expected: bool = False
    fix: str = field(init=False, default="")

    def __post_init__(self) -> None:
        first = self.events[0]
        if self.kind == Kind.WRITEBACK_OVER_DEVICE:
            if first.bytes & first.other:
                text = ("the CPU wrote at {store} while the device owned the buffer: the "
                        "clean-and-invalidate wrote the CPU's line over the device's data")
            else:
                text = ("buffer shares cache line {line:#x} with bytes the CPU wrote at {store} "
                        "during the transfer: align the buffer to the cache line (its "
                        "clean-and-invalidate wrote the CPU's stale copy over the device's data)")
        else:
            text = FIXES[self.kind]
        self.fix = text.format(store=self.store, access=self.access, line=first.line,
                               earlier=self.earlier, earlier_line=first.other)
        if self.buffer is not None and "owned" in self.fix:
            self.fix += f" (mapped DMA_{self.buffer.direction} by {self.buffer.call} at " \
                        f"{self.buffer.timestamp} s)"
        if self.buffer is not None and self.kind == Kind.CPU_READ_STALE and \
                self.buffer.direction == "TO_DEVICE":
            self.fix = (f"wrong direction: {self.device} wrote a buffer mapped DMA_TO_DEVICE; map it "
                        "DMA_FROM_DEVICE or DMA_BIDIRECTIONAL (the CPU read stale data at "
                        f"{self.access})")

    def __str__(self) -> str:
        first, lines = self.events[0], len(self.events)
        out = [f"cache: {self.fix}"]
        if self.transfer is not None:
            kind = "wrote" if self.transfer.write else "read"
            out.append(f"  device: {self.transfer.master} {kind} {self.transfer.length} bytes at "
                       f"{self.transfer.address:#x} (transfer {self.transfer.number})")
        elif self.device:
            out.append(f"  device: {self.device} wrote the line last")
        span = f"{lines} lines from {first.line:#x}" if lines > 1 else f"{first.line:#x}"
        dirty = first.other if first.kind not in (Kind.CPU_READ_STALE, Kind.LOAD_ORDER) else 0
        out.append(f"  cache line: {span} ({LINE_SIZE} bytes); bytes {_ranges(first.bytes)}"
                   + (f"; CPU-dirty bytes {_ranges(dirty)}" if dirty else ""))
        if self.buffer is not None:
            out.append(f"  buffer: {self.buffer}")
        elif self.buffer_note:
            out.append(f"  buffer: {self.buffer_note}")
        return "\n".join(out)


def group(events: list[Event]) -> list[list[Event]]:
    """Events of one kind from one transfer, or from one CPU instruction, belong together."""
    groups: dict[tuple[Kind, int, int], list[Event]] = {}
    for e in events:
        key = (e.kind, e.transfer, 0) if e.transfer else (e.kind, 0, e.pc)
        groups.setdefault(key, []).append(e)
    return list(groups.values())


class CacheWatch:
    """A board's cache model: drains its events as the board runs, and between guest commands
    turns them into reports (asking the guest for module symbols and its DMA trace)."""

    TRACK = "cache model"  # the timeline's track of hazards and reports

    def __init__(self, model: CacheModel, layer: CoherencyLayer, system_map: Path | None,
                 report_file: Path, trace: EventTrace | None = None):
        self.model, self.layer, self.report_file, self.trace = model, layer, report_file, trace
        self.system_map = system_map
        self._symbols: Symbols | None = None  # read for the first report
        self.module_symbols_loaded = False
        self.pending: list[Event] = []
        self.reports: list[CacheReport] = []
        self.unexpected: list[CacheReport] = []
        self.expecting = 0
        self.trace_available: bool | None = None  # known once the guest has been asked

    @property
    def symbols(self) -> Symbols:
        if self._symbols is None:
            self._symbols = Symbols.from_system_map(self.system_map)
        return self._symbols

    def poll(self) -> None:
        """Takes the model's new events; each hazard goes on the timeline as it is seen."""
        events = self.model.drain()
        if events and self.trace is not None:
            for same in group(events):
                first = same[0]
                transfer = self.layer.transfers.get(first.transfer) if first.transfer else None
                self.trace.instant(self.TRACK, first.kind.name.lower().replace("_", " "),
                                   line=f"{first.line:#x}", lines=len(same),
                                   pc=f"{first.pc:#x}", device=transfer.master if transfer else "")
        self.pending += events

    def has_events(self) -> bool:
        self.poll()
        return bool(self.pending)

    def settle(self, guest: Callable[[str], str] | None) -> list[CacheReport]:
        """Reports for the events so far; ``guest`` runs a shell command in the guest (None: the
        guest cannot be asked, and the reports say what they cannot name)."""
        self.poll()
        if not self.pending:
            return []
        mappings: list[DmaMapping] = []
        note = "the guest was not asked (its console is gone)"
        if guest is not None:
            if not self.module_symbols_loaded:
                self.symbols.add(guest("grep '\\[' /proc/kallsyms || true"))
                self.module_symbols_loaded = True
            if self.trace_available is None:
                self.trace_available = guest(f"test -d {TRACE_EVENTS} && echo yes || true").strip() == "yes"
            if self.trace_available:
                mappings = parse_dma_trace(guest(f"cat {TRACE}"))
                note = "no dma trace event covers it (mapped before the trace's oldest entry?)"
            else:
                note = f"unknown: this guest kernel has no dma trace events ({TRACE_EVENTS})"
        events, self.pending = self.pending, []
        new = [self._report(g, mappings, note) for g in group(events)]
        with self.report_file.open("a") as f:
            for report in new:
                report.expected = self.expecting > 0
                f.write(f"{report}\n" + ("  (expected by the test)\n" if report.expected else "") + "\n")
        self.reports += new
        self.unexpected += [r for r in new if not r.expected]
        if self.trace is not None:
            for report in new:
                self.trace.instant(self.TRACK, "report", fix=report.fix, expected=report.expected)
        return new

    def _name(self, pc: int, lr: int = 0) -> str:
        if not pc:
            return "an unknown instruction"
        if pc < KERNEL_SPACE:
            return f"{pc:#x} (user space)"
        name = self.symbols.name(pc)
        text = f"{name} ({pc:#x})" if name else f"{pc:#x}"
        caller = self.symbols.name(lr) if lr else None
        if name and caller and name.split("+")[0] in LEAF_ROUTINES:
            text += f" called from {caller}"
        return text

    def _report(self, events: list[Event], mappings: list[DmaMapping], note: str) -> CacheReport:
        first = events[0]
        transfer = self.layer.transfers.get(first.transfer) if first.transfer else None
        device = transfer.master if transfer else (self.layer.master_name(first.peer)
                                                   if first.kind in (Kind.CPU_READ_STALE,
                                                                     Kind.WRITEBACK_OVER_DEVICE,
                                                                     Kind.LOAD_ORDER)
                                                   else "")
        buffer = next((m for m in reversed(mappings) if m.covers(first.line + _first_byte(first))),
                      None)
        if first.kind == Kind.LOAD_ORDER:  # ``lr`` is the earlier load's PC
            return CacheReport(first.kind, events, None, device, "", self._name(first.pc),
                               buffer, note, earlier=self._name(first.lr))
        # every other kind but a stale read names the CPU's last store to the line in ``pc``
        store_pc = 0 if first.kind == Kind.CPU_READ_STALE else first.pc
        return CacheReport(first.kind, events, transfer, device,
                           self._name(store_pc, first.lr if store_pc else 0),
                           self._name(first.pc, first.lr), buffer, note)


def _first_byte(event: Event) -> int:
    runs = byte_runs(event.bytes)
    return runs[0][0] if runs else 0
