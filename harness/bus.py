"""The system bus as device-side masters see it.

Every DMA a peripheral model performs goes through one :class:`Bus`: it checks the address
against the memory regions and raises :class:`DmaFault` outside them.  Layers (a tracer today; an
IOMMU and a cache model tomorrow) wrap the path without any peripheral knowing.
"""

from __future__ import annotations

import mmap
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


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


class DmaFault(Exception):
    """A bus master touched an address no memory answers: the hardware's decode error."""

    def __init__(self, master: str, address: int, length: int, write: bool, reason: str):
        self.master, self.address, self.length, self.write = master, address, length, write
        self.reason = reason
        kind = "write" if write else "read"
        super().__init__(f"DMA fault: {master} {kind} of {length} bytes at {address:#x}: {reason}")


@dataclass(frozen=True)
class Transaction:
    master: str
    address: int
    length: int
    write: bool
    beat: int = 0  # bytes per bus beat; 0: one beat of ``length`` (a block copy)
    increment: bool = True  # False: every beat goes to ``address`` (a FIFO register)

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

    def access(self, txn: Transaction, data: bytes | None, next_: Next) -> bytes | None: ...


@dataclass
class TraceRecord:
    master: str
    address: int
    length: int
    write: bool
    fault: str | None = None


@dataclass
class BusTracer:
    """Records every transaction (bounded), for the per-test plugin trace."""

    limit: int = 100_000
    records: list[TraceRecord] = field(default_factory=list)
    dropped: int = 0

    def access(self, txn: Transaction, data: bytes | None, next_: Next) -> bytes | None:
        record = TraceRecord(txn.master, txn.address, txn.length, txn.write)
        if len(self.records) < self.limit:
            self.records.append(record)
        else:
            self.dropped += 1
        try:
            return next_(txn, data)
        except DmaFault as fault:
            record.fault = fault.reason
            raise


class Bus:
    def __init__(self, memories: list[Memory] | None = None):
        self.memories: list[Memory] = list(memories or [])
        self.devices: list[tuple[int, int, DeviceWindow]] = []
        # bytes each master moved to or from each device window: who carried a UART's data
        self.device_traffic: Counter[tuple[str, int]] = Counter()
        self.layers: list[BusLayer] = []
        self.faults: list[DmaFault] = []
        self.width_mismatches: list[WidthMismatch] = []
        self._path: Next = self._chain()

    def add_memory(self, memory: Memory) -> None:
        self.memories.append(memory)

    def add_device(self, base: int, size: int, device: DeviceWindow) -> None:
        self.devices.append((base, size, device))

    def add_layer(self, layer: BusLayer) -> None:
        """Adds a layer nearest the masters: the last added sees a transaction first."""
        self.layers.append(layer)
        self._path = self._chain()

    def _chain(self) -> Next:
        path: Next = self._target_access
        for layer in self.layers:
            path = (lambda lyr, nxt: lambda t, d: lyr.access(t, d, nxt))(layer, path)
        return path

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

    def read(self, master: str, address: int, length: int, beat: int = 0,
             increment: bool = True) -> bytes:
        try:
            data = self._path(Transaction(master, address, length, False, beat, increment), None)
        except DmaFault as fault:
            self.faults.append(fault)
            raise
        assert data is not None
        return data

    def write(self, master: str, address: int, data: bytes | bytearray | memoryview, beat: int = 0,
              increment: bool = True) -> None:
        try:
            self._path(Transaction(master, address, len(data), True, beat, increment), data)
        except DmaFault as fault:
            self.faults.append(fault)
            raise

    def copy(self, master: str, src: int, dst: int, length: int) -> None:
        """A memory-to-memory transfer: a read burst then a write burst, as a DMA engine does."""
        self.write(master, dst, self.read(master, src, length))

    def close(self) -> None:
        for memory in self.memories:
            memory.close()
        self.memories.clear()


class BusMaster:
    """A peripheral's bus-master port: all its DMA goes through the bus under its name."""

    def __init__(self, bus: Bus, name: str):
        self.bus, self.name = bus, name

    def read(self, address: int, length: int, beat: int = 0, increment: bool = True) -> bytes:
        return self.bus.read(self.name, address, length, beat, increment)

    def write(self, address: int, data: bytes | bytearray | memoryview, beat: int = 0,
              increment: bool = True) -> None:
        self.bus.write(self.name, address, data, beat, increment)

    def copy(self, src: int, dst: int, length: int) -> None:
        self.bus.copy(self.name, src, dst, length)

    def read_u32(self, address: int) -> int:
        return int.from_bytes(self.read(address, 4), "little")

    def write_u32(self, address: int, value: int) -> None:
        self.write(address, value.to_bytes(4, "little"))
