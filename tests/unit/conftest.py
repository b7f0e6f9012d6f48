"""Unit tests: models against an in-memory bus, no QEMU."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cosim.assembly import Assembly
from cosim.bus import Bus, Memory
from cosim.clock import ManualClock
from cosim.engines.qemu.engine import QemuEngine
from cosim.peripheral import Peripheral, PeripheralConfig, RecordingIrqSink
from cosim.platform import load_platform
from cosim.pluginmanager import create_plugin_manager, default_plugin_manager

RAM_BASE = 0x40000000
RAM_SIZE = 4 << 20


@pytest.fixture
def bus() -> Bus:
    return Bus([Memory.zeroed("ram", RAM_BASE, RAM_SIZE)])


@pytest.fixture
def irqs() -> RecordingIrqSink:
    return RecordingIrqSink()


@pytest.fixture
def clock() -> ManualClock:
    """The guest's time for the models a test makes: it moves only when the test moves it."""
    return ManualClock()


@pytest.fixture
def make(bus: Bus, irqs: RecordingIrqSink, clock: ManualClock) -> Iterator[Callable[..., Peripheral]]:
    made: list[Peripheral] = []

    def make(cls: type[Peripheral], **properties: object) -> Peripheral:
        made.append(cls(PeripheralConfig("dut", 0x0C000000, cls.default_size, (112,), properties),
                        bus, irqs, clock=clock))
        return made[-1]

    yield make
    for peripheral in made:
        peripheral.close()


def assemble(platform: Path, plugins: tuple[object, ...] = ()) -> Assembly:
    """A platform's models and wiring as the board builds them, without QEMU or sockets."""
    pm = create_plugin_manager(plugins) if plugins else default_plugin_manager()
    return Assembly(load_platform(platform), QemuEngine.layout, pm)
