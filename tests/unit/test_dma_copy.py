from __future__ import annotations

import os
import struct

import pytest

from cosim.plugins.dma_copy import DESCRIPTOR, DmaCopy

from .conftest import RAM_BASE, RAM_SIZE

CTRL, STATUS, SRC, DST, LEN, DESC, FAULT, COPIED, COMPLETED = (
    0x08, 0x0C, 0x10, 0x18, 0x20, 0x24, 0x2C, 0x34, 0x38)
START, DESC_MODE, IRQ_EN = 1, 2, 4
DONE, ERROR = 2, 4


def write64(dev, offset, value):
    dev.write(offset, 4, value & 0xFFFFFFFF)
    dev.write(offset + 4, 4, value >> 32)


@pytest.fixture
def engine(make) -> DmaCopy:
    return make(DmaCopy)


def test_identity(engine):
    assert engine.read(0x00, 4) == 0x434F5059


@pytest.mark.parametrize("length,src_off,dst_off", [(1, 0, 0), (3, 1, 7), (4096, 0, 0), (65537, 13, 5)])
def test_single_copy(engine, bus, irqs, length, src_off, dst_off):
    data = os.urandom(length)
    src, dst = RAM_BASE + 0x1000 + src_off, RAM_BASE + 0x80000 + dst_off
    bus.write("test", src, data)
    write64(engine, SRC, src)
    write64(engine, DST, dst)
    engine.write(LEN, 4, length)
    engine.write(CTRL, 4, START | IRQ_EN)
    assert bus.read("test", dst, length) == data
    assert bus.read("test", dst - 1, 1) == b"\0" and bus.read("test", dst + length, 1) == b"\0"
    assert engine.read(STATUS, 4) == DONE
    assert engine.read(COPIED, 4) == length and engine.read(COMPLETED, 4) == 1
    assert irqs.levels[0]
    engine.write(STATUS, 4, DONE)  # write one to clear
    assert engine.read(STATUS, 4) == 0 and not irqs.levels[0]


def test_no_interrupt_without_irq_enable(engine, irqs):
    engine.write(LEN, 4, 0)
    engine.write(CTRL, 4, START)
    assert engine.read(STATUS, 4) == DONE
    assert not irqs.levels.get(0, False)


def test_descriptor_chain(engine, bus):
    pieces = [os.urandom(n) for n in (5, 4096, 333)]
    table = RAM_BASE + 0x200
    for i, piece in enumerate(pieces):
        src, dst = RAM_BASE + 0x10000 * (i + 1), RAM_BASE + 0x90000 + 0x2000 * i
        bus.write("test", src, piece)
        nxt = table + DESCRIPTOR.size * (i + 1) if i < len(pieces) - 1 else 0
        bus.write("test", table + DESCRIPTOR.size * i, DESCRIPTOR.pack(src, dst, len(piece), 0, nxt))
    write64(engine, DESC, table)
    engine.write(CTRL, 4, START | DESC_MODE | IRQ_EN)
    assert engine.read(STATUS, 4) == DONE
    assert engine.read(COPIED, 4) == sum(map(len, pieces))
    for i, piece in enumerate(pieces):
        assert bus.read("test", RAM_BASE + 0x90000 + 0x2000 * i, len(piece)) == piece


@pytest.mark.parametrize("bad", [RAM_BASE + RAM_SIZE, 0x1_0000_0000, RAM_BASE - 0x1000])
def test_destination_outside_ram_is_a_dma_fault(engine, bus, irqs, bad):
    write64(engine, SRC, RAM_BASE)
    write64(engine, DST, bad)
    engine.write(LEN, 4, 64)
    engine.write(CTRL, 4, START | IRQ_EN)
    assert engine.read(STATUS, 4) == ERROR
    fault = engine.read(FAULT, 4) | engine.read(FAULT + 4, 4) << 32
    assert fault == bad
    assert irqs.levels[0]
    assert [f.address for f in bus.faults] == [bad]


def test_descriptor_outside_ram_faults(engine, bus):
    write64(engine, DESC, 0xDEAD0000)
    engine.write(CTRL, 4, START | DESC_MODE)
    assert engine.read(STATUS, 4) == ERROR
    assert engine.read(FAULT, 4) == 0xDEAD0000


def test_descriptor_loop_is_an_error_not_a_hang(engine, bus):
    table = RAM_BASE + 0x300
    bus.write("test", table, DESCRIPTOR.pack(RAM_BASE, RAM_BASE + 0x100, 4, 0, table))
    write64(engine, DESC, table)
    engine.write(CTRL, 4, START | DESC_MODE)
    assert engine.read(STATUS, 4) == ERROR


def test_descriptor_layout():
    assert DESCRIPTOR.size == 32
    assert struct.calcsize("<QQIIQ") == 32


def test_the_engine_reports_the_width_of_its_port(bus, irqs, clock):
    from cosim.peripheral import PeripheralConfig

    narrow = DmaCopy(PeripheralConfig("dma32", 0x0C000000, 0x1000, (112,), address_bits=32),
                     bus, irqs, clock=clock)
    assert narrow.read(0x3C, 4) == 32
    assert DmaCopy(PeripheralConfig("dma64", 0x0C001000, 0x1000, (113,)), bus, irqs,
                   clock=clock).read(0x3C, 4) == 64
