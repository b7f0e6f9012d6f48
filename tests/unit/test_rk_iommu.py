"""The Rockchip IOMMU model, programmed as rockchip-iommu.c does, in front of the dma-copy engine:
table walks, the IOTLB and its zaps, faults, and the enable/stall/reset sequences it polls for."""

from __future__ import annotations

import os

import pytest

from cosim.bus import DmaFault
from cosim.plugins.dma_copy import DmaCopy
from cosim.plugins.rk_iommu import RkIommu
from cosim.testing import ModelBench

DTE_ADDR, STATUS, COMMAND, PAGE_FAULT_ADDR, ZAP_ONE_LINE = 0x00, 0x04, 0x08, 0x0C, 0x10
INT_RAWSTAT, INT_CLEAR, INT_MASK, INT_STATUS = 0x14, 0x18, 0x1C, 0x20
ENABLE_PAGING, DISABLE_PAGING, ENABLE_STALL, DISABLE_STALL = 0, 1, 2, 3
ZAP_CACHE, PAGE_FAULT_DONE, FORCE_RESET = 4, 5, 6
PAGING_ENABLED, PAGE_FAULT_ACTIVE, STALL_ACTIVE, PAGE_FAULT_IS_WRITE = 1 << 0, 1 << 1, 1 << 2, 1 << 5
READ, WRITE = 1 << 1, 1 << 2
DTE_ADDR_DUMMY = 0xCAFEBABE

COPY_BASE, MMU_BASE = 0x0C010000, 0x0C0B0000
CTRL, COPY_STATUS, SRC, DST, LEN, FAULT = 0x08, 0x0C, 0x10, 0x18, 0x20, 0x2C
START, ERROR = 1, 4


def mk_entry(address: int, flags: int = 0) -> int:
    """rk_mk_dte_v2 / rk_mk_pte_v2: a 40-bit address folded into 32 bits, plus the valid bit."""
    return (address & 0xFFFFF000) | (address >> 24 & 0xF00) | (address >> 32 & 0xF0) | flags | 1


class Tables:
    """The directory and page tables of one domain in guest RAM, as the driver keeps them."""

    def __init__(self, bench: ModelBench, base: int):
        self.bench, self.directory, self.next_table = bench, base, base + 0x1000

    def u32(self, address: int, value: int) -> None:
        offset = address - self.bench.ram_base
        self.bench.ram[offset:offset + 4] = value.to_bytes(4, "little")

    def entry(self, address: int) -> int:
        offset = address - self.bench.ram_base
        return int.from_bytes(self.bench.ram[offset:offset + 4], "little")

    def map(self, iova: int, physical: int, length: int, prot: int = READ | WRITE) -> None:
        for page in range(0, length, 4096):
            dte_at = self.directory + 4 * ((iova + page) >> 22)
            if not self.entry(dte_at) & 1:
                self.u32(dte_at, mk_entry(self.next_table))
                self.next_table += 0x1000
            table = self.entry(dte_at) & 0xFFFFF000
            self.u32(table + 4 * ((iova + page) >> 12 & 0x3FF), mk_entry(physical + page, prot))

    def unmap(self, iova: int, length: int) -> None:
        for page in range(0, length, 4096):
            table = self.entry(self.directory + 4 * ((iova + page) >> 22)) & 0xFFFFF000
            pte_at = table + 4 * ((iova + page) >> 12 & 0x3FF)
            self.u32(pte_at, self.entry(pte_at) & ~1)  # rk_mk_pte_invalid


@pytest.fixture
def parts():
    bench = ModelBench()
    mmu = bench.add(RkIommu, "mmu", base=MMU_BASE)
    copier = bench.add(DmaCopy, "copy", base=COPY_BASE)
    bench.bus.add_layer(mmu.translation_layer(), "translation")
    mmu.attach_master("copy", None, ())
    yield bench, mmu, copier, Tables(bench, bench.ram_base + 0x100000)
    bench.close()


def enable(mmu: RkIommu, tables: Tables) -> None:
    """rk_iommu_enable: stall (only if paging is on), force reset, DTE_ADDR, zap, mask, paging."""
    if mmu.read(STATUS, 4) & PAGING_ENABLED:
        mmu.write(COMMAND, 4, ENABLE_STALL)
        assert mmu.read(STATUS, 4) & STALL_ACTIVE
    mmu.write(DTE_ADDR, 4, DTE_ADDR_DUMMY & 0xFFFFF000)  # rk_dte_pt_address_v2(DUMMY), as u32
    assert mmu.read(DTE_ADDR, 4) == DTE_ADDR_DUMMY & 0xFFFFF000
    mmu.write(COMMAND, 4, FORCE_RESET)
    assert mmu.read(DTE_ADDR, 4) == 0  # rk_iommu_is_reset_done
    mmu.write(DTE_ADDR, 4, mk_entry(tables.directory))
    mmu.write(COMMAND, 4, ZAP_CACHE)
    mmu.write(INT_MASK, 4, 0x3)
    mmu.write(COMMAND, 4, ENABLE_PAGING)
    assert mmu.read(STATUS, 4) & PAGING_ENABLED
    if mmu.read(STATUS, 4) & STALL_ACTIVE:
        mmu.write(COMMAND, 4, DISABLE_STALL)
    assert not mmu.read(STATUS, 4) & STALL_ACTIVE


def copy(copier: DmaCopy, src: int, dst: int, length: int) -> bool:
    """A copy by the engine at bus (IOVA) addresses; True when it completed without an error."""
    copier.write(SRC, 4, src)
    copier.write(DST, 4, dst)
    copier.write(LEN, 4, length)
    copier.write(CTRL, 4, START)
    return not copier.read(COPY_STATUS, 4) & ERROR


def test_a_copy_between_iovas_lands_at_the_physical_pages(parts):
    bench, mmu, copier, tables = parts
    enable(mmu, tables)
    src, dst = bench.ram_base + 0x200000, bench.ram_base + 0x300000
    tables.map(0x1000, src, 0x3000, READ)
    tables.map(0x7FFFF000, dst + 0x2000, 0x1000)  # pages of one IOVA run, anywhere in memory
    tables.map(0x80000000, dst, 0x2000)
    data = os.urandom(0x3000)
    bench.bus.write("cpu", src, data)
    assert copy(copier, 0x1000, 0x7FFFF000, 0x3000)
    assert bench.bus.read("cpu", dst + 0x2000, 0x1000) == data[:0x1000]
    assert bench.bus.read("cpu", dst, 0x2000) == data[0x1000:]
    walks = mmu.walks
    assert copy(copier, 0x1000, 0x7FFFF000, 0x3000) and mmu.walks == walks  # the IOTLB holds them
    trace = [r for r in bench.tracer.records if r.master == "copy" and not r.walk]
    assert (trace[0].master_address, trace[0].address) == (0x1000, src)  # IOVA -> PA on the trace
    timeline = bench.trace.on_track("mmu translation")  # and on the timeline
    assert [(e["name"], e["args"]["iova"], e["args"]["physical"], e["args"]["length"])
            for e in timeline[:3]] == [("read", "0x1000", f"{src:#x}", 0x3000),
                                       ("write", "0x7ffff000", f"{dst + 0x2000:#x}", 0x1000),
                                       ("write", "0x80000000", f"{dst:#x}", 0x2000)]


def test_a_transfer_reads_the_ptes_of_its_pages_in_one_walk_per_table(parts):
    """A 128 KiB transfer is 32 consecutive PTEs: one directory read and one table read, not 64
    reads; a transfer across a 4 MiB boundary walks each of its two tables."""
    bench, mmu, copier, tables = parts
    enable(mmu, tables)
    src, dst = bench.ram_base + 0x200000, bench.ram_base + 0x300000
    tables.map(0x100000, src, 0x20000, READ)
    tables.map(0x3F0000, dst, 0x20000)  # 0x3F0000-0x40FFFF: across two page tables
    data = os.urandom(0x20000)
    bench.bus.write("cpu", src, data)
    before = len([r for r in bench.tracer.records if r.walk])
    assert copy(copier, 0x100000, 0x3F0000, 0x20000)
    walks = [r for r in bench.tracer.records if r.walk][before:]
    assert [r.length for r in walks] == [4, 4 * 32, 4, 4 * 16, 4, 4 * 16]
    assert bench.bus.read("cpu", dst, 0x20000) == data


def test_a_walk_reads_a_line_of_ptes_and_the_next_pages_need_none(parts):
    """Page-sized transfers (AXI bursts do not cross 4 KiB) walk once per 16 pages."""
    bench, mmu, copier, tables = parts
    enable(mmu, tables)
    tables.map(0x100000, bench.ram_base + 0x200000, 0x20000)
    before = mmu.walks
    for page in range(0, 0x20000, 0x1000):
        assert copy(copier, 0x100000 + page, 0x100000 + (page ^ 0x10000), 0x1000)
    assert mmu.walks - before == 2  # 32 pages: two lines


def test_a_dma_to_an_unmapped_iova_faults_as_the_driver_expects(parts):
    bench, mmu, copier, tables = parts
    enable(mmu, tables)
    data = os.urandom(0x2000)
    bench.bus.write("cpu", bench.ram_base + 0x200000, data)
    tables.map(0x1000, bench.ram_base + 0x200000, 0x2000)
    tables.map(0x5000, bench.ram_base + 0x300000, 0x1000)
    assert not copy(copier, 0x1000, 0x5000, 0x2000)  # one page longer than the destination
    assert copier.read(FAULT, 4) == 0x6000
    assert mmu.read(INT_STATUS, 4) & 1 and bench.irqs["mmu"].levels[0]
    status = mmu.read(STATUS, 4)
    assert status & PAGE_FAULT_ACTIVE and status & PAGE_FAULT_IS_WRITE
    assert mmu.read(PAGE_FAULT_ADDR, 4) == 0x6000
    assert bench.bus.read("cpu", bench.ram_base + 0x300000, 0x1000) == data[:0x1000]  # up to the fault
    assert "IOMMU page fault in mmu at IOVA 0x6000" in str(mmu.faults[-1])
    faults = [e["args"] for e in bench.trace.on_track("mmu translation") if e["name"] == "page fault"]
    assert [(f["iova"], f["access"]) for f in faults] == [("0x6000", "write")]
    # rk_iommu_irq: zap, fault done, clear
    mmu.write(COMMAND, 4, ZAP_CACHE)
    mmu.write(COMMAND, 4, PAGE_FAULT_DONE)
    mmu.write(INT_CLEAR, 4, mmu.read(INT_STATUS, 4))
    assert not mmu.read(STATUS, 4) & PAGE_FAULT_ACTIVE and not bench.irqs["mmu"].levels[0]


def test_the_first_fault_stays_latched_until_done(parts):
    bench, mmu, copier, tables = parts
    enable(mmu, tables)
    tables.map(0x1000, bench.ram_base + 0x200000, 0x1000, READ)
    assert not copy(copier, 0x9000, 0x1000, 4)  # a read fault
    assert not copy(copier, 0x1000, 0x1000, 4)  # then a write to a read-only page
    assert mmu.read(PAGE_FAULT_ADDR, 4) == 0x9000 and not mmu.read(STATUS, 4) & PAGE_FAULT_IS_WRITE
    mmu.write(COMMAND, 4, PAGE_FAULT_DONE)
    assert not copy(copier, 0x1000, 0x1000, 4)
    assert mmu.read(PAGE_FAULT_ADDR, 4) == 0x1000 and mmu.read(STATUS, 4) & PAGE_FAULT_IS_WRITE


def test_a_stale_iotlb_entry_translates_until_zapped(parts):
    bench, mmu, copier, tables = parts
    enable(mmu, tables)
    old, new = bench.ram_base + 0x200000, bench.ram_base + 0x280000
    bench.bus.write("cpu", old, b"old!")
    bench.bus.write("cpu", new, b"new!")
    tables.map(0x1000, old, 0x1000)
    tables.map(0x2000, bench.ram_base + 0x300000, 0x1000)
    assert copy(copier, 0x1000, 0x2000, 4)
    tables.unmap(0x1000, 0x1000)
    assert bench.bus.hazards == []  # translations the tables still agree with
    tables.map(0x1000, new, 0x1000)  # remapped without ZAP_ONE_LINE: the IOTLB still has the old
    assert copy(copier, 0x1000, 0x2000, 4)
    assert bench.bus.read("cpu", bench.ram_base + 0x300000, 4) == b"old!"
    [hazard] = bench.bus.hazards
    assert hazard.model == "mmu" and hazard.message.startswith(
        f"stale IOTLB entry: copy's read at IOVA 0x1000 went to {old:#x}, the IOTLB's translation, but "
        f"the page table (entry at {tables.directory + 0x1000 + 4:#x}) now maps it to {new:#x}: the "
        "IOMMU driver changed the table without ZAP_ONE_LINE or ZAP_CACHE")
    mmu.write(ZAP_ONE_LINE, 4, 0x1000)
    assert copy(copier, 0x1000, 0x2000, 4)
    assert bench.bus.read("cpu", bench.ram_base + 0x300000, 4) == b"new!"
    assert len(bench.bus.hazards) == 1


def test_a_stale_entry_among_a_long_transfers_hits_and_misses_is_found(parts):
    """A many-page transfer is translated in one step only when every page is current: one
    remapped page without a zap, in a run the IOTLB otherwise holds, is still read from where
    the stale entry says, and reported; a zapped page beside it is walked afresh."""
    bench, mmu, copier, tables = parts
    enable(mmu, tables)
    src, dst, moved = bench.ram_base + 0x200000, bench.ram_base + 0x300000, bench.ram_base + 0x280000
    data = os.urandom(0x8000)
    bench.bus.write("cpu", src, data)
    bench.bus.write("cpu", moved, b"M" * 0x1000)
    tables.map(0x10000, src, 0x8000, READ)
    tables.map(0x40000, dst, 0x8000)
    assert copy(copier, 0x10000, 0x40000, 0x8000) and bench.bus.hazards == []
    tables.map(0x13000, moved, 0x1000, READ)  # page 3 remapped, not zapped
    mmu.write(ZAP_ONE_LINE, 4, 0x15000)  # page 5 zapped: a miss among the hits
    walks = mmu.walks
    assert copy(copier, 0x10000, 0x40000, 0x8000)
    assert bench.bus.read("cpu", dst, 0x8000) == data  # page 3 still came from src + 0x3000
    [hazard] = bench.bus.hazards
    assert f"read at IOVA 0x13000 went to {src + 0x3000:#x}" in hazard.message
    assert mmu.walks == walks + 1
    mmu.write(ZAP_ONE_LINE, 4, 0x13000)
    assert copy(copier, 0x10000, 0x40000, 0x8000)
    assert bench.bus.read("cpu", dst + 0x3000, 0x1000) == b"M" * 0x1000


def test_paging_disabled_passes_addresses_through(parts):
    bench, mmu, copier, _ = parts
    bench.bus.write("cpu", bench.ram_base + 0x200000, b"flat")
    assert copy(copier, bench.ram_base + 0x200000, bench.ram_base + 0x300000, 4)
    assert bench.bus.read("cpu", bench.ram_base + 0x300000, 4) == b"flat"
    assert mmu.passed_through == 2 and mmu.translated == 0


def test_only_its_master_is_translated(parts):
    bench, mmu, _, tables = parts
    enable(mmu, tables)
    bench.bus.write("cpu", bench.ram_base + 0x1000, b"x")  # no mapping: the CPU is not behind it
    assert bench.bus.read("cpu", bench.ram_base + 0x1000, 1) == b"x"
    with pytest.raises(DmaFault, match="IOMMU page fault"):
        bench.bus.read("copy", bench.ram_base + 0x1000, 1)


def test_the_disable_sequence_turns_paging_off(parts):
    _, mmu, _, tables = parts
    enable(mmu, tables)
    mmu.write(COMMAND, 4, ENABLE_STALL)  # rk_iommu_disable
    mmu.write(COMMAND, 4, DISABLE_PAGING)
    mmu.write(INT_MASK, 4, 0)
    mmu.write(DTE_ADDR, 4, 0)
    mmu.write(COMMAND, 4, DISABLE_STALL)
    assert mmu.read(STATUS, 4) & (PAGING_ENABLED | STALL_ACTIVE) == 0
    mmu.write(COMMAND, 4, ENABLE_STALL)  # a stall needs paging on
    assert not mmu.read(STATUS, 4) & STALL_ACTIVE


def test_a_second_master_is_refused(parts):
    _, mmu, _, _ = parts
    with pytest.raises(ValueError, match="sits in front of one master"):
        mmu.attach_master("other", None, ())


def test_a_walk_reads_tables_as_a_walk_and_a_dma_above_4g_faults(parts):
    bench, mmu, copier, tables = parts
    enable(mmu, tables)
    tables.map(0x1000, bench.ram_base + 0x200000, 0x1000)
    assert copy(copier, 0x1000, 0x1000, 4)
    walks = [r for r in bench.tracer.records if r.walk]
    assert walks and all(r.master == "mmu" for r in walks)
    with pytest.raises(DmaFault, match="above the 32-bit IOVA space"):
        bench.bus.read("copy", 1 << 32, 4)
