"""The CPU data-cache model as the harness sees it: the device side of ``model.c``.

The state machine is C (``model.c``), compiled into cosim's QEMU for the CPU side and into a small
host library, loaded here, for the device side and for unit tests: one implementation, one state
file shared in memory by both processes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import mmap
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..build import BuildError, cache_root, digest
from ..bus import Next, Transaction

SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = (SOURCE_DIR / "model.c", SOURCE_DIR / "model.h")
COMPILE = ("gcc", "-O2", "-fPIC", "-shared", "-Wall", "-Werror")
LINE_SIZE = 64
PAGE_SIZE = 4096
MAGIC = 0x4843534D
DRAIN_BATCH = 1024


class Mode(enum.IntEnum):
    REPORT = 1  # the data moves as in a coherent system; every hazard is reported
    EMULATE = 2  # the data is what silicon gives


class Kind(enum.IntEnum):
    DEVICE_READ_UNCLEAN = 1
    DEVICE_WRITE_OVER_DIRTY = 2
    DEVICE_WRITE_SHARED_LINE = 3
    CPU_READ_STALE = 4
    WRITEBACK_OVER_DEVICE = 5
    CPU_WRITE_DISCARDED = 6
    LOAD_ORDER = 7


class Maintenance(enum.IntEnum):
    CLEAN = 1  # DC CVAC
    INVALIDATE = 2  # DC IVAC
    CLEAN_INVALIDATE = 3  # DC CIVAC


class _Event(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_uint32), ("agent", ctypes.c_uint32), ("line", ctypes.c_uint64),
                ("bytes", ctypes.c_uint64), ("other", ctypes.c_uint64), ("pc", ctypes.c_uint64),
                ("seq", ctypes.c_uint64), ("transfer", ctypes.c_uint64),
                ("peer", ctypes.c_uint64), ("lr", ctypes.c_uint64)]


class _Line(ctypes.Structure):
    _fields_ = [("dirty", ctypes.c_uint64), ("stale", ctypes.c_uint64),
                ("overwritten", ctypes.c_uint64), ("store_pc", ctypes.c_uint64), ("flags", ctypes.c_uint32),
                ("store_cpu", ctypes.c_uint32), ("reported", ctypes.c_uint32),
                ("device_agent", ctypes.c_uint32), ("hold_pc", ctypes.c_uint64),
                ("store_lr", ctypes.c_uint64), ("device_seq", ctypes.c_uint64 * 8)]


@dataclass(frozen=True)
class LineState:
    """One line's record: byte masks (bit i = byte i) and whether the CPU may hold it."""

    dirty: int
    stale: int
    held: bool
    store_pc: int
    hold_pc: int  # the access that brought the line in (0: held since before tracking)


class _State(ctypes.Structure):
    _fields_ = [("header", ctypes.c_void_p), ("events", ctypes.c_void_p),
                ("pages", ctypes.c_void_p), ("lines", ctypes.c_void_p),
                ("shadows", ctypes.c_void_p), ("ram", ctypes.c_void_p),
                ("state_size", ctypes.c_size_t)]


class _Header(ctypes.Structure):
    _fields_ = [("magic", ctypes.c_uint32), ("version", ctypes.c_uint32),
                ("mode", ctypes.c_uint32), ("lock", ctypes.c_uint32),
                ("ram_base", ctypes.c_uint64), ("ram_size", ctypes.c_uint64),
                ("seq", ctypes.c_uint64), ("track_generation", ctypes.c_uint64),
                ("event_head", ctypes.c_uint64), ("event_tail", ctypes.c_uint64),
                ("events_dropped", ctypes.c_uint64), ("counters", ctypes.c_uint64 * 6)]


COUNTERS = ("cpu_loads", "cpu_stores", "maintenance", "device_reads", "device_writes",
            "pages_tracked")


@dataclass(frozen=True)
class Event:
    """One hazard the model saw, at one cache line (see model.h's ``cm_kind``)."""

    kind: Kind
    agent: int  # the CPU, or the device master's number
    line: int  # physical address of the line
    bytes: int  # mask: bit i is byte i of the line
    other: int  # the CPU's dirty bytes (CPU_READ_STALE: the line's stale bytes)
    pc: int  # the CPU's access, or its last store to the line
    seq: int
    transfer: int
    peer: int  # device events: the CPU of the last store; CPU events: the device's number
    lr: int = 0  # the link register with ``pc``: the caller when ``pc`` is in a leaf routine


def byte_runs(mask: int) -> list[tuple[int, int]]:
    """Runs of set bits of a line's byte mask as (first, last) byte offsets."""
    runs, start = [], None
    for i in range(LINE_SIZE + 1):
        on = i < LINE_SIZE and bool(mask >> i & 1)
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


_library: ctypes.CDLL | None = None


def library_path() -> Path:
    return cache_root() / f"cachemodel-{digest([*COMPILE, *SOURCES])[:16]}.so"


def library() -> ctypes.CDLL:
    """The model compiled for this host (once per source change)."""
    global _library
    if _library is not None:
        return _library
    path = library_path()
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run([*COMPILE, "-o", str(tmp), str(SOURCES[0])], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise BuildError(f"the cache model does not compile:\n{proc.stderr}")
        tmp.rename(path)
    # Calls take microseconds: holding the GIL through them spares each one a hand-off to the
    # board's other Python threads, which can cost a switch interval (5 ms).
    lib = ctypes.PyDLL(str(path))
    u32, u64, ptr = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p
    state = ctypes.POINTER(_State)
    lib.cm_state_size.argtypes, lib.cm_state_size.restype = [u64], ctypes.c_size_t
    lib.cm_attach.argtypes = [state, ptr, ctypes.c_size_t, ptr, u64, u64, u32]
    lib.cm_attach.restype = ctypes.c_int
    lib.cm_track_page.argtypes, lib.cm_track_page.restype = [state, u64], ctypes.c_bool
    lib.cm_page_tracked.argtypes, lib.cm_page_tracked.restype = [state, u64], ctypes.c_bool
    lib.cm_cpu_access.argtypes = [state, u64, u32, ctypes.c_bool, ctypes.c_bool, u32, u64]
    lib.cm_cpu_access.restype = None
    lib.cm_cpu_maintenance.argtypes = [state, u64, u32, u32, u64]
    lib.cm_cpu_maintenance.restype = ctypes.c_bool
    lib.cm_coherent_write.argtypes, lib.cm_coherent_write.restype = [state, u64, u64], None
    lib.cm_cpu_load_barrier.argtypes, lib.cm_cpu_load_barrier.restype = [state, u32], None
    for name in ("cm_device_read", "cm_device_write"):
        getattr(lib, name).argtypes = [state, u64, u64, u32, u64, ptr]
        getattr(lib, name).restype = u32
    lib.cm_drain.argtypes, lib.cm_drain.restype = [state, ctypes.POINTER(_Event), u32], u32
    lib.cm_line_state.argtypes, lib.cm_line_state.restype = [state, u64, ctypes.POINTER(_Line)], None
    _library = lib
    return lib


def state_size(ram_size: int) -> int:
    return int(library().cm_state_size(ram_size))


class _Mapping:
    """A shared mapping of a whole file, at an address C can use."""

    def __init__(self, path: Path, size: int):
        fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, size, mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self._anchor = ctypes.c_char.from_buffer(self.map)
        self.address = ctypes.addressof(self._anchor)

    def close(self) -> None:
        del self._anchor  # the export must go before the mapping can
        self.map.close()


class CacheModel:
    """The harness's handle on a board's cache state file (created here, mapped by QEMU too)."""

    def __init__(self, state_file: Path, ram_file: Path, ram_base: int, ram_size: int, mode: Mode):
        self.lib = library()
        self.state_file, self.mode = state_file, mode
        self.ram_base, self.ram_size = ram_base, ram_size
        size = state_size(ram_size)
        if not state_file.exists():
            with state_file.open("wb") as f:
                f.truncate(size)  # sparse: only tracked pages' records ever take memory
        self._state_map = _Mapping(state_file, size)
        self._ram_map = _Mapping(ram_file, ram_size)
        self._state = _State()
        rc = self.lib.cm_attach(ctypes.byref(self._state), self._state_map.address, size,
                                self._ram_map.address, ram_base, ram_size, int(mode))
        if rc != 0:
            self.close()
            raise ValueError(f"cache state file {state_file} does not fit this board (error {rc})")
        self._header = _Header.from_address(self._state_map.address)
        self._batch = (_Event * DRAIN_BATCH)()

    def covers(self, address: int, length: int) -> bool:
        return self.ram_base <= address and address + length <= self.ram_base + self.ram_size

    @property
    def track_generation(self) -> int:
        return int(self._header.track_generation)

    @property
    def event_head(self) -> int:
        return int(self._header.event_head)

    def counters(self) -> dict[str, int]:
        return dict(zip(COUNTERS, self._header.counters, strict=True)) | {
            "events_dropped": int(self._header.events_dropped)}

    # The device side: one call per transfer.
    def device_read(self, address: int, data: bytearray, agent: int, transfer: int) -> int:
        buffer = (ctypes.c_char * len(data)).from_buffer(data)
        started = self.lib.cm_device_read(ctypes.byref(self._state), address, len(data), agent,
                                          transfer, ctypes.addressof(buffer))
        del buffer
        return started

    def device_write(self, address: int, data: bytes, agent: int, transfer: int) -> int:
        return self.lib.cm_device_write(ctypes.byref(self._state), address, len(data), agent,
                                        transfer, ctypes.c_char_p(bytes(data)))

    # The CPU side, which QEMU drives; here for tests of the state machine.
    def cpu_access(self, address: int, size: int, store: bool, cpu: int = 0, pc: int = 0,
                   cached: bool = True) -> None:
        self.lib.cm_cpu_access(ctypes.byref(self._state), address, size, store, cached, cpu, pc)

    def cpu_maintenance(self, address: int, op: Maintenance, cpu: int = 0, pc: int = 0) -> bool:
        return self.lib.cm_cpu_maintenance(ctypes.byref(self._state), address, int(op), cpu, pc)

    def load_barrier(self, cpu: int = 0) -> None:
        self.lib.cm_cpu_load_barrier(ctypes.byref(self._state), cpu)

    def coherent_write(self, address: int, length: int) -> None:
        self.lib.cm_coherent_write(ctypes.byref(self._state), address, length)

    def track_page(self, address: int) -> bool:
        return self.lib.cm_track_page(ctypes.byref(self._state), address)

    def page_tracked(self, address: int) -> bool:
        return self.lib.cm_page_tracked(ctypes.byref(self._state), address)

    def line(self, address: int) -> LineState:
        record = _Line()
        self.lib.cm_line_state(ctypes.byref(self._state), address, ctypes.byref(record))
        return LineState(record.dirty, record.stale, bool(record.flags & 1), record.store_pc,
                         record.hold_pc)

    def drain(self) -> list[Event]:
        events = []
        while n := self.lib.cm_drain(ctypes.byref(self._state), self._batch, DRAIN_BATCH):
            events += [Event(Kind(e.kind), e.agent, e.line, e.bytes, e.other, e.pc, e.seq,
                             e.transfer, e.peer, e.lr) for e in self._batch[:n]]
        return events

    def close(self) -> None:
        for mapping in ("_state_map", "_ram_map"):
            if hasattr(self, mapping):
                getattr(self, mapping).close()
                delattr(self, mapping)


@dataclass(frozen=True)
class Transfer:
    """A device transfer the model had something to say about."""

    number: int
    master: str
    address: int
    length: int
    write: bool


class CoherencyLayer:
    """The model's device side on the DMA path (the bus's ``coherency`` place): every transfer
    into RAM is checked line by line in one call, and in emulate mode gets silicon's data."""

    TRANSFERS_KEPT = 10_000

    def __init__(self, model: CacheModel):
        self.model = model
        self.masters: dict[str, int] = {}  # name -> the agent number events carry
        self.transfers: dict[int, Transfer] = {}  # those that raised events, by number
        self.count = 0

    def master_name(self, agent: int) -> str:
        return next((name for name, n in self.masters.items() if n == agent), f"master {agent}")

    def access(self, txn: Transaction, data: bytes | None, next_: Next) -> bytes | None:
        if not self.model.covers(txn.address, txn.length):
            return next_(txn, data)
        agent = self.masters.setdefault(txn.master, len(self.masters) + 1)
        self.count += 1
        head = self.model.event_head
        if data is None:
            out = next_(txn, data)
            assert out is not None
            span = txn.length if txn.increment else txn.beat or txn.length
            seen = bytearray(out[:span])
            self.model.device_read(txn.address, seen, agent, self.count)
            result = bytes(seen) if txn.increment else bytes(seen) * (txn.length // span)
        else:
            # a FIFO-style write to one address leaves its last beat there
            placed = data if txn.increment else data[-(txn.beat or txn.length):]
            self.model.device_write(txn.address, bytes(placed), agent, self.count)
            if self.model.mode == Mode.EMULATE:
                txn = dataclasses.replace(txn, placed=True)
            result = next_(txn, data)
        if self.model.event_head != head:
            self.transfers[self.count] = Transfer(self.count, txn.master, txn.address, txn.length,
                                                  txn.write)
            if len(self.transfers) > self.TRANSFERS_KEPT:
                del self.transfers[next(iter(self.transfers))]
        return result
