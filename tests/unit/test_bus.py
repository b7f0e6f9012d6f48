from __future__ import annotations

import pytest

from cosim.bus import Bus, BusMaster, BusTracer, DmaFault, Memory

from .conftest import RAM_BASE, RAM_SIZE


def test_read_write_copy(bus):
    master = BusMaster(bus, "dev")
    master.write(RAM_BASE + 16, b"hello world")
    assert master.read(RAM_BASE + 16, 5) == b"hello"
    master.copy(RAM_BASE + 16, RAM_BASE + 100, 11)
    assert master.read(RAM_BASE + 100, 11) == b"hello world"
    master.write_u32(RAM_BASE, 0xDEADBEEF)
    assert master.read_u32(RAM_BASE) == 0xDEADBEEF


@pytest.mark.parametrize("address,length", [
    (RAM_BASE - 4, 4),  # below RAM
    (RAM_BASE + RAM_SIZE - 2, 4),  # straddles the end
    (RAM_BASE + RAM_SIZE, 1),  # just past
    (0x1_0000_0000_0000, 64),  # far away
])
def test_outside_memory_faults_and_is_recorded(bus, address, length):
    master = BusMaster(bus, "dev")
    with pytest.raises(DmaFault) as info:
        master.read(address, length)
    assert info.value.address == address and info.value.master == "dev"
    assert bus.faults == [info.value]
    with pytest.raises(DmaFault):
        master.write(address, b"x" * length)
    assert len(bus.faults) == 2


def test_last_byte_of_ram_is_reachable(bus):
    BusMaster(bus, "dev").write(RAM_BASE + RAM_SIZE - 1, b"\x7f")
    assert bus.read("dev", RAM_BASE + RAM_SIZE - 1, 1) == b"\x7f"


def test_layers_see_transactions_in_order():
    seen: list[str] = []

    class Tag:
        def __init__(self, name):
            self.name = name

        def access(self, txn, data, next_):
            seen.append(self.name)
            return next_(txn, data)

    bus = Bus([Memory.zeroed("ram", 0, 64)])
    bus.add_layer(Tag("inner"))
    bus.add_layer(Tag("outer"))
    bus.read("m", 0, 4)
    assert seen == ["outer", "inner"]


def test_tracer_records_faults_and_bounds_its_memory():
    bus = Bus([Memory.zeroed("ram", 0, 64)])
    tracer = BusTracer(limit=2)
    bus.add_layer(tracer)
    bus.write("m", 0, b"abcd")
    with pytest.raises(DmaFault):
        bus.read("m", 1000, 4)
    bus.read("m", 0, 4)
    assert [(r.write, r.address, r.fault) for r in tracer.records] == [
        (True, 0, None), (False, 1000, "no memory at that address")]
    assert tracer.dropped == 1
