"""The system bus as device-side masters see it: the DMA path.

Every DMA a peripheral model performs goes through one :class:`Bus`, from the master towards
memory through named places, in this order::

    master --> translation --> coherency --> trace --> memory (or a device window)

* ``translation``: IOMMUs.  A layer here turns the master's address into a physical one
  (``dataclasses.replace(txn, address=...)``) or raises :class:`DmaFault` (a translation fault).
* ``coherency``: a CPU-cache model sees physical addresses and every device access to them.  In
  emulate mode it stores a write itself (where silicon puts it) and marks the transaction
  ``placed``: memory then checks the address and stores nothing.
* ``trace``: the board's :class:`BusTracer` records physical addresses (and the master's own
  address, when translated).
* memory: the address is checked against RAM and device windows; nothing there is a DMA fault.

Before all of them, a master with fewer address bits than the address it was given (a 32-bit
master on a board with RAM above 4 GiB) loses the upper bits on its wires, as silicon does: the
access goes on to the alias, and the bus records an :class:`AddressTruncation` for the test.

Layers are :class:`BusLayer` objects added at a place (``bus.add_layer(layer, "coherency")``;
plugins do it through the ``cosim_bus_layers`` hook); within one place, the first added is
nearest the master.  Every transaction carries its master's name and ``stream_id`` (the
identity a translation layer keys on).  Table walks (an IOMMU reading its page tables) enter the
path below ``translation`` and are marked ``walk``: they are not the device's own traffic.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

PLACES = ("translation", "coherency", "trace")  # from the masters towards memory

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


@functools.cache  # once a process: the setting is the process's
def keep_freed_heap() -> None:
    """A DMA moves its data as bytes objects of the transfer's size.  glibc gives a freed heap top
    back to the kernel once it passes its trim threshold, and the next MiB-sized transfer then
    takes a page fault for every 4 KiB of its buffers (measured: 3 a page per 1 MiB dmatest copy,
    0.8 ms of its 6 ms): keep up to 256 MiB of freed heap, and serve blocks up to 32 MiB from it."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library this process runs on
    if mallopt is None:
        return  # no mallopt: that allocator's own policy stands
    mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)


@dataclass(frozen=True)
class WidthMismatch:
    """A DMA beat of the wrong width into or out of a FIFO data register: the transfer goes on as
    the hardware takes it (losing or garbling data), and the test hears of it."""

    master: str
    address: int
    beat_bytes: int
    entry_bits: int
    write: bool

    def __str__(self) -> str:
        kind = "wrote" if self.write else "read"
        return (f"DMA width mismatch: {self.master} {kind} {self.beat_bytes}-byte beats at "
                f"{self.address:#x}, a FIFO register of {self.entry_bits}-bit entries: the "
                "driver's DMA slave configuration (addr_width) does not fit the device")


@dataclass(frozen=True)
class AddressTruncation:
    """A master was given an address wider than its address bus: the upper bits were lost on the
    wires, and the access went to ``address`` instead of ``issued``.  For a write into memory,
    ``before`` holds what was there (up to 8 bytes) and ``changed`` how many bytes it altered."""

    master: str
    address_bits: int
    issued: int
    address: int
    length: int
    write: bool
    before: bytes = b""
    changed: int | None = None

    def __str__(self) -> str:
        kind = "write" if self.write else "read"
        text = (f"address truncated: {self.master} has {self.address_bits} address bits; a {kind} "
                f"of {self.length} bytes meant for {self.issued:#x} went to {self.address:#x}")
        if self.changed is not None:
            text += (f", overwriting memory there ({self.changed} of {self.length} bytes changed;"
                     f" they began {self.before.hex(' ')})")
        return text


@dataclass(frozen=True)
class Hazard:
    """What a model saw its hardware do wrongly because of what a driver did (a stale IOTLB
    entry used): the hardware goes on as silicon would, silently, and the test hears of it."""

    model: str
    message: str

    def __str__(self) -> str:
        return f"{self.model}: {self.message}"


class DmaFault(Exception):
    """A bus master touched an address no memory answers: the hardware's decode error."""

    def __init__(self, master: str, address: int, length: int, write: bool, reason: str):
        self.master, self.address, self.length, self.write = master, address, length, write
        self.reason = reason
        self.guest_ns: int | None = None  # the guest's virtual clock when it happened, on a board
        kind = "write" if write else "read"
        super().__init__(f"DMA fault: {master} {kind} of {length} bytes at {address:#x}: {reason}")


@dataclass(frozen=True)
class Transaction:
    """One DMA access on its way from a master to memory, as the layers of the path see it."""

    master: str
    address: int  # where the transaction goes now: physical once past ``translation``
    length: int
    write: bool
    beat: int = 0  # bytes per bus beat; 0: one beat of ``length`` (a block copy)
    increment: bool = True  # False: every beat goes to ``address`` (a FIFO register)
    stream_id: int | None = None  # the master's identity on the bus (an IOMMU's stream ID)
    master_address: int | None = None  # the address the master issued, set when translated
    walk: bool = False  # a table walk on the master's behalf, not the master's own data
    placed: bool = False  # a write the coherency model already stored

    def beats(self) -> list[tuple[int, int, int]]:
        """(address, offset into the data, size) of each beat."""
        beat = self.beat or self.length
        return [(self.address + (i if self.increment else 0), i, min(beat, self.length - i))
                for i in range(0, self.length, beat)]


class DeviceWindow(Protocol):
    """A peripheral's registers as a bus master sees them (slave DMA into a FIFO register)."""

    def read(self, offset: int, size: int) -> int: ...

    def write(self, offset: int, size: int, data: int) -> None: ...

    def fifo_entry_bits(self, offset: int) -> int | None: ...

    def write_beats(self, offset: int, size: int, data: bytes) -> None: ...

    def read_beats(self, offset: int, size: int, length: int) -> bytes: ...


class Memory:
    """A span of memory backed by a buffer (a bytearray in tests, the guest-RAM mmap in a run)."""

    def __init__(self, name: str, base: int, buffer: bytearray | mmap.mmap):
        self.name, self.base, self.size = name, base, len(buffer)
        self.buffer = buffer
        self.view = memoryview(buffer)

    @classmethod
    def zeroed(cls, name: str, base: int, size: int) -> Memory:
        return cls(name, base, bytearray(size))

    @classmethod
    def shared_file(cls, name: str, base: int, path: Path, size: int) -> Memory:
        with path.open("r+b") as f:
            return cls(name, base, mmap.mmap(f.fileno(), size, mmap.MAP_SHARED))

    def contains(self, address: int, length: int) -> bool:
        return self.base <= address and address + length <= self.base + self.size

    def close(self) -> None:
        self.view.release()
        if isinstance(self.buffer, mmap.mmap):
            self.buffer.close()


Next = Callable[[Transaction, bytes | None], bytes | None]


class BusLayer(Protocol):
    """Sits on the DMA path: sees each transaction and passes it on (or faults it)."""

    def access(self, txn: Transaction, data: bytes | None, next_: Next) -> bytes | None:
        """Sees ``txn`` (with its data, for a write) and passes it on with ``next_(txn, data)``,
        changed or not, or raises DmaFault; returns what a read returned."""
        ...


@dataclass
class TraceRecord:
    master: str
    address: int
    length: int
    write: bool
    fault: str | None = None
    master_address: int | None = None
    walk: bool = False

    def __str__(self) -> str:
        via = "" if self.master_address is None else f" (from {self.master_address:#x})"
        return (f"{'W' if self.write else 'R'} {self.master}{' walk' if self.walk else ''} "
                f"{self.address:#x}{via} +{self.length}" + (f" FAULT {self.fault}" if self.fault else ""))


class BusTracer:
    """Records every transaction (bounded), for the per-test plugin trace.  Rows are kept as
    tuples of numbers and strings, which the garbage collector stops walking after one pass (a
    full collection pauses the models: 100,000 objects made each one ~40 ms longer)."""

    def __init__(self, limit: int = 100_000):
        self.limit = limit
        self.dropped = 0
        self._rows: list[tuple[str, int, int, bool, str | None, int | None, bool]] = []

    @property
    def records(self) -> list[TraceRecord]:
        return [TraceRecord(*row) for row in self._rows]

    def access(self, txn: Transaction, data: bytes | None, next_: Next) -> bytes | None:
        row = (txn.master, txn.address, txn.length, txn.write, None, txn.master_address, txn.walk)
        index = len(self._rows)
        if index < self.limit:
            self._rows.append(row)
        else:
            self.dropped += 1
        try:
            return next_(txn, data)
        except DmaFault as fault:
            if index < self.limit:
                self._rows[index] = (*row[:4], fault.reason, *row[5:])
            raise


class Bus:
    def __init__(self, memories: list[Memory] | None = None):
        self.memories: list[Memory] = list(memories or [])
        self.devices: list[tuple[int, int, DeviceWindow]] = []
        # bytes each master moved to or from each device window: who carried a UART's data
        self.device_traffic: Counter[tuple[str, int]] = Counter()
        self.layers: dict[str, list[BusLayer]] = {place: [] for place in PLACES}
        self.faults: list[DmaFault] = []
        self.width_mismatches: list[WidthMismatch] = []
        self.address_bits: dict[str, int] = {}  # master -> its address width, when narrower than 64
        self.truncations: list[AddressTruncation] = []
        self.hazards: list[Hazard] = []
        self.now: Callable[[], int] | None = None  # the guest's virtual clock (ns), on a board
        self._path: Next = self._target_access
        self._walk_path: Next = self._target_access

    def add_memory(self, memory: Memory) -> None:
        self.memories.append(memory)

    def add_device(self, base: int, size: int, device: DeviceWindow) -> None:
        self.devices.append((base, size, device))

    def limit_address(self, master: str, bits: int) -> None:
        """``master`` drives only ``bits`` address lines: higher bits of its addresses are lost."""
        self.address_bits[master] = bits

    def add_layer(self, layer: BusLayer, place: str) -> None:
        """Puts ``layer`` at ``place`` (one of PLACES), after the layers already there."""
        if place not in self.layers:
            raise ValueError(f"no place '{place}' on the DMA path; the places are {', '.join(PLACES)}")
        self.layers[place].append(layer)
        self._path = self._chain(PLACES)
        self._walk_path = self._chain(PLACES[1:])

    def _chain(self, places: tuple[str, ...]) -> Next:
        path: Next = self._target_access
        for layer in reversed([layer for place in places for layer in self.layers[place]]):
            path = self._through(layer, path)
        return path

    @staticmethod
    def _through(layer: BusLayer, next_: Next) -> Next:
        return lambda txn, data: layer.access(txn, data, next_)

    def _memory_for(self, txn: Transaction) -> Memory:
        for memory in self.memories:
            if memory.contains(txn.address, txn.length):
                return memory
        raise DmaFault(txn.master, txn.address, txn.length, txn.write, "no memory at that address")

    def _target_access(self, txn: Transaction, data: bytes | None) -> bytes | None:
        """The end of the path: a device window (slave DMA) or a memory."""
        for base, size, device in self.devices:
            if base <= txn.address < base + size:
                return self._device_access(txn, data, base, size, device)
        memory = self._memory_for(txn)
        start = txn.address - memory.base
        if txn.placed:
            return None
        if txn.increment:
            if data is None:
                return bytes(memory.view[start:start + txn.length])
            memory.view[start:start + txn.length] = data
            return None
        out = bytearray()
        for _, offset, size in txn.beats():  # a fixed address: each beat lands on the same bytes
            if data is None:
                out += memory.view[start:start + size]
            else:
                memory.view[start:start + size] = data[offset:offset + size]
        return None if data is not None else bytes(out)

    def _device_access(self, txn: Transaction, data: bytes | None, base: int, size: int,
                       device: DeviceWindow) -> bytes | None:
        self.device_traffic[txn.master, base] += txn.length
        bits = device.fifo_entry_bits(txn.address - base)
        beat = txn.beat or txn.length
        if bits is not None and beat * 8 != bits:
            mismatch = WidthMismatch(txn.master, txn.address, beat, bits, txn.write)
            if mismatch not in self.width_mismatches:  # each distinct one once
                self.width_mismatches.append(mismatch)
        if not txn.increment and txn.length % beat == 0 and beat in (1, 2, 4, 8) and \
                base <= txn.address and txn.address + beat <= base + size:
            # every beat to one register (a FIFO): the device takes the burst in one call
            if data is None:
                return device.read_beats(txn.address - base, beat, txn.length)
            device.write_beats(txn.address - base, beat, bytes(data))
            return None
        out = bytearray()
        for address, offset, width in txn.beats():
            if not base <= address < address + width <= base + size or width not in (1, 2, 4, 8):
                raise DmaFault(txn.master, address, width, txn.write,
                               f"no {width}-byte beat possible into the device at {base:#x}")
            if data is None:
                out += device.read(address - base, width).to_bytes(width, "little")
            else:
                device.write(address - base, width,
                             int.from_bytes(data[offset:offset + width], "little"))
        return None if data is not None else bytes(out)

    def _truncate(self, txn: Transaction, bits: int,
                  data: bytes | bytearray | memoryview | None) -> Transaction:
        address = txn.address & ((1 << bits) - 1)
        before, changed = b"", None
        if data is not None and (old := self.peek(address, txn.length)) is not None:
            before = old[:8]
            changed = sum(a != b for a, b in zip(old, bytes(data), strict=True))
        self.truncations.append(AddressTruncation(txn.master, bits, txn.address, address,
                                                  txn.length, txn.write, before, changed))
        return replace(txn, address=address)

    def peek(self, address: int, length: int) -> bytes | None:
        """What memory holds at ``address``, outside the DMA path (no transaction, no trace):
        for a model's own checks, never for the data it moves.  None where no memory is."""
        for memory in self.memories:
            if memory.contains(address, length):
                start = address - memory.base
                return memory.view[start:start + length].tobytes()
        return None

    def _issue(self, txn: Transaction, data: bytes | bytearray | memoryview | None) -> bytes | None:
        bits = self.address_bits.get(txn.master)
        if bits is not None:
            last = txn.address + (txn.length - 1 if txn.increment else 0)
            if txn.address >> bits != last >> bits:
                return self._issue_across(txn, data, 1 << bits)
            if txn.address >> bits:
                txn = self._truncate(txn, bits, data)
        try:
            return (self._walk_path if txn.walk else self._path)(txn, data)
        except DmaFault as fault:
            if self.now is not None:
                fault.guest_ns = self.now()
            self.faults.append(fault)
            raise

    def _issue_across(self, txn: Transaction, data: bytes | bytearray | memoryview | None,
                      reach: int) -> bytes | None:
        """A transfer across a multiple of what its master reaches: each side on its own, as the
        master's address counter wraps there (the side above it truncated, and recorded)."""
        out, offset = bytearray(), 0
        while offset < txn.length:
            address = txn.address + offset
            length = min(reach - address % reach, txn.length - offset)
            got = self._issue(replace(txn, address=address, length=length),
                              None if data is None else data[offset:offset + length])
            out += got or b""
            offset += length
        return None if data is not None else bytes(out)

    def read(self, master: str, address: int, length: int, beat: int = 0,
             increment: bool = True, stream_id: int | None = None, walk: bool = False) -> bytes:
        data = self._issue(Transaction(master, address, length, False, beat, increment, stream_id,
                                       walk=walk), None)
        assert data is not None
        return data

    def write(self, master: str, address: int, data: bytes | bytearray | memoryview, beat: int = 0,
              increment: bool = True, stream_id: int | None = None, walk: bool = False) -> None:
        self._issue(Transaction(master, address, len(data), True, beat, increment, stream_id,
                                walk=walk), data)

    def copy(self, master: str, src: int, dst: int, length: int, stream_id: int | None = None) -> None:
        """A memory-to-memory transfer: a read burst then a write burst, as a DMA engine does."""
        self.write(master, dst, self.read(master, src, length, stream_id=stream_id),
                   stream_id=stream_id)

    def close(self) -> None:
        for memory in self.memories:
            memory.close()
        self.memories.clear()


class BusMaster:
    """A peripheral's bus-master port: all its DMA goes through the bus under its name and
    stream ID."""

    def __init__(self, bus: Bus, name: str, stream_id: int | None = None,
                 address_bits: int = 64):
        self.bus, self.name, self.stream_id = bus, name, stream_id
        self.address_bits = address_bits
        if address_bits < 64:
            bus.limit_address(name, address_bits)

    def read(self, address: int, length: int, beat: int = 0, increment: bool = True) -> bytes:
        """Reads ``length`` bytes at ``address`` in ``beat``-byte beats (0: one block); with
        ``increment`` False every beat reads one address (a FIFO register)."""
        return self.bus.read(self.name, address, length, beat, increment, self.stream_id)

    def write(self, address: int, data: bytes | bytearray | memoryview, beat: int = 0,
              increment: bool = True) -> None:
        """Writes ``data`` at ``address``, as ``read`` reads."""
        self.bus.write(self.name, address, data, beat, increment, self.stream_id)

    def copy(self, src: int, dst: int, length: int) -> None:
        """A memory-to-memory transfer under this master's name: a read burst, then a write."""
        self.bus.copy(self.name, src, dst, length, self.stream_id)

    def read_u32(self, address: int) -> int:
        """A little-endian 32-bit word (a descriptor's field)."""
        return int.from_bytes(self.read(address, 4), "little")

    def write_u32(self, address: int, value: int) -> None:
        """Writes a little-endian 32-bit word."""
        self.write(address, value.to_bytes(4, "little"))

    def walk_read(self, address: int, length: int) -> bytes:
        """A table walk (an IOMMU's page-table read): a physical address, past translation,
        recorded as a walk rather than as this master's data."""
        return self.bus.read(self.name, address, length, stream_id=self.stream_id, walk=True)
