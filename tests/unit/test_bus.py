from __future__ import annotations

from dataclasses import replace

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


class Tag:
    """A layer that notes what it saw and passes it on."""

    def __init__(self, name: str, seen: list[str]):
        self.name, self.seen = name, seen

    def access(self, txn, data, next_):
        self.seen.append(f"{self.name} {txn.address:#x}{' walk' if txn.walk else ''}")
        return next_(txn, data)


class Offset:
    """A translation layer: the master's addresses are 0x1000 below physical ones, except for
    stream 7, which has no mapping (a translation fault)."""

    def access(self, txn, data, next_):
        if txn.stream_id == 7:
            raise DmaFault(txn.master, txn.address, txn.length, txn.write, "translation fault")
        return next_(replace(txn, address=txn.address + 0x1000, master_address=txn.address), data)


def test_places_order_the_path_whatever_order_layers_are_added_in():
    seen: list[str] = []
    bus = Bus([Memory.zeroed("ram", 0, 0x2000)])
    bus.add_layer(Tag("trace", seen), "trace")
    bus.add_layer(Tag("cache", seen), "coherency")
    bus.add_layer(Offset(), "translation")
    bus.add_layer(Tag("cache2", seen), "coherency")  # same place: after the first
    bus.read("m", 0x10, 4)
    assert seen == ["cache 0x1010", "cache2 0x1010", "trace 0x1010"]


def test_an_unknown_place_is_refused():
    with pytest.raises(ValueError, match=r"no place 'cache'.*translation, coherency, trace"):
        Bus().add_layer(Tag("x", []), "cache")


def test_translation_faults_and_stream_ids():
    bus = Bus([Memory.zeroed("ram", 0, 0x2000)])
    tracer = BusTracer()
    bus.add_layer(tracer, "trace")
    bus.add_layer(Offset(), "translation")
    BusMaster(bus, "dev", stream_id=3).write(0x20, b"data")
    assert bus.memories[0].buffer[0x1020:0x1024] == b"data"
    assert str(tracer.records[0]) == "W dev 0x1020 (from 0x20) +4"
    with pytest.raises(DmaFault, match="translation fault"):
        BusMaster(bus, "rogue", stream_id=7).read(0x20, 4)
    assert bus.faults[-1].master == "rogue"  # the board's failure watch sees it


def test_table_walks_skip_translation_and_are_marked():
    seen: list[str] = []
    bus = Bus([Memory.zeroed("ram", 0, 0x2000)])
    bus.add_layer(Offset(), "translation")
    bus.add_layer(Tag("cache", seen), "coherency")
    tracer = BusTracer()
    bus.add_layer(tracer, "trace")
    BusMaster(bus, "iommu0").walk_read(0x40, 8)
    assert seen == ["cache 0x40 walk"]  # a physical address: the cache model still sees it
    assert str(tracer.records[0]) == "R iommu0 walk 0x40 +8"


def test_tracer_records_faults_and_bounds_its_memory():
    bus = Bus([Memory.zeroed("ram", 0, 64)])
    tracer = BusTracer(limit=2)
    bus.add_layer(tracer, "trace")
    bus.write("m", 0, b"abcd")
    with pytest.raises(DmaFault):
        bus.read("m", 1000, 4)
    bus.read("m", 0, 4)
    assert [(r.write, r.address, r.fault) for r in tracer.records] == [
        (True, 0, None), (False, 1000, "no memory at that address")]
    assert tracer.dropped == 1


def test_a_narrow_master_drops_the_upper_address_bits_and_the_bus_records_it(bus):
    narrow = BusMaster(bus, "dma32", address_bits=32)
    alias = RAM_BASE + 0x2000
    bus.write("cpu", alias, b"\xa5" * 8)
    narrow.write((1 << 32) + alias, b"\xa5\xa5\x00\x00\x00\x00\x00\x01")  # meant 4 GiB higher
    assert bus.read("cpu", alias, 8) == b"\xa5\xa5\x00\x00\x00\x00\x00\x01"
    [truncation] = bus.truncations
    assert (truncation.master, truncation.issued, truncation.address) == ("dma32", (1 << 32) + alias, alias)
    assert (truncation.write, truncation.changed, truncation.before) == (True, 6, b"\xa5" * 8)
    assert "dma32 has 32 address bits; a write of 8 bytes meant for 0x140002000 went to 0x40002000" \
        in str(truncation) and "6 of 8 bytes changed" in str(truncation)
    assert narrow.read((1 << 32) + alias, 2) == b"\xa5\xa5" and len(bus.truncations) == 2


def test_a_transfer_across_the_4g_line_wraps_at_it_as_the_masters_counter_does():
    """A 32-bit master's 8 KiB write from 0xffff_f000: the second page is meant for 4 GiB and
    lands at 0 (the counter wraps); the first stays where it was meant, and one truncation, the
    second page's, is recorded."""
    low, high = Memory.zeroed("low", 0x0, 0x1000), Memory.zeroed("high", 0xFFFF_F000, 0x1000)
    bus = Bus([low, high])
    narrow = BusMaster(bus, "dma32", address_bits=32)
    narrow.write(0xFFFF_F000, b"A" * 0x1000 + b"B" * 0x1000)
    assert bus.read("cpu", 0xFFFF_F000, 0x1000) == b"A" * 0x1000
    assert bus.read("cpu", 0, 0x1000) == b"B" * 0x1000
    [truncation] = bus.truncations
    assert (truncation.issued, truncation.address, truncation.length) == (1 << 32, 0, 0x1000)
    assert narrow.read(0xFFFF_F000, 0x2000) == b"A" * 0x1000 + b"B" * 0x1000


def test_a_narrow_master_within_its_reach_is_not_truncated(bus):
    BusMaster(bus, "dma32", address_bits=32).write(RAM_BASE, b"ok")
    BusMaster(bus, "wide").write(RAM_BASE, b"ok")
    assert bus.truncations == []


def test_a_truncated_address_with_no_memory_is_a_fault_as_well(bus):
    with pytest.raises(DmaFault):
        BusMaster(bus, "dma32", address_bits=32).read(1 << 32, 4)  # reaches 0: no RAM there
    assert bus.truncations[0].address == 0 and bus.truncations[0].changed is None
