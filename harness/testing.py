"""Helpers for plugin authors' unit tests: a model against an in-memory bus, no QEMU.

    from cosim.testing import ModelBench

    bench = ModelBench()
    dmac = bench.add(MyDmac, "dma", base=0x0C010000, channels=8)
    bench.ram[0x1000:0x1004] = b"abcd"          # guest RAM at bench.ram_base
    dmac.write(0x100, 4, 1)                      # a register write, as the guest's would be
    assert bench.irqs["dma"].levels == {0: True}
    bench.clock.advance(10_000)                  # 10 us of guest time: the work due runs
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from .bus import Bus, BusTracer, Memory
from .clock import ManualClock
from .peripheral import ModelNotes, Peripheral, PeripheralConfig, RecordingIrqSink
from .trace import EventTrace

M = TypeVar("M", bound=Peripheral)

RAM_BASE = 0x40000000  # where QEMU virt's RAM starts


class ModelBench:
    """Models sharing one bus, lock, timeline and notes, as on a board."""

    def __init__(self, ram_size: int = 4 << 20, ram_base: int = RAM_BASE):
        self.ram_base = ram_base
        self.memory = Memory.zeroed("ram", ram_base, ram_size)
        self.ram = self.memory.buffer
        self.bus = Bus([self.memory])
        self.tracer = BusTracer()
        self.bus.add_layer(self.tracer, "trace")
        self.lock = threading.RLock()
        self.clock = ManualClock()  # the guest's time: a test moves it (advance())
        self.trace = EventTrace()
        self.notes = ModelNotes()
        self.irqs: dict[str, RecordingIrqSink] = {}
        self.models: dict[str, Peripheral] = {}

    def add(self, cls: type[M], name: str, base: int, size: int | None = None, **properties: Any) -> M:
        """A model at ``base``, reachable by other models' DMA there (slave DMA)."""
        size = size or cls.default_size
        self.irqs[name] = RecordingIrqSink()
        model = cls(PeripheralConfig(name, base, size, properties=properties), self.bus, self.irqs[name],
                    lock=self.lock, trace=self.trace, notes=self.notes, clock=self.clock)
        self.bus.add_device(base, size, model)
        self.models[name] = model
        return model

    def close(self) -> None:
        """Closes the models (their host threads and files)."""
        for model in self.models.values():
            model.close()
