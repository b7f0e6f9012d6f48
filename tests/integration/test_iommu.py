"""The Rockchip IOMMU model driven by the upstream rockchip-iommu driver, in front of the dma-copy
engine and the PL330: DMA through IOVAs, and page faults as the driver reports them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cosim.watch import BoardFailure

from .test_dma_copy import CONTROL, control

UNMAPPED_IOVA = 0x10000  # iommu-dma hands out IOVAs from the top of the 32-bit space down
# the same board with the zoo's rockchip-iommu: one that forgets its IOTLB zap on unmap, and one
# that leaves the PTEs it writes in the CPU's cache
NOZAP_PLATFORM = Path(__file__).parent.parent / "platforms" / "virt-iommu-nozap.yaml"
NOFLUSH_PLATFORM = Path(__file__).parent.parent / "platforms" / "virt-iommu-noflush.yaml"


@pytest.fixture(scope="module")
def iommu_board(cosim_module_board_factory):
    return cosim_module_board_factory(platform="virt-iommu")


def test_both_masters_are_in_iommu_groups(iommu_board):
    groups = iommu_board.run("ls /sys/kernel/iommu_groups/*/devices").output
    assert "c010000.dmacopy" in groups and "c020000.pl330" in groups


def test_dma_copy_through_the_iommu(iommu_board):
    mmu = iommu_board.peripherals["copy_mmu"]
    result = control(iommu_board, "test all 1000 1007 65536")
    assert result["failures"] == "0"
    assert mmu.paging and mmu.translated > 0 and mmu.walks > 0 and mmu.passed_through == 0
    assert int(iommu_board.run("cat /sys/kernel/debug/dma-api/error_count").output) == 0


def test_dmatest_through_the_iommu(iommu_board):
    mmu = iommu_board.peripherals["pl330_mmu"]
    before = mmu.translated
    iommu_board.run("modprobe dmatest iterations=200 threads_per_chan=2 channel=dma0chan0 run=1",
                    timeout=300)
    iommu_board.run("cat /sys/module/dmatest/parameters/wait", timeout=600)
    iommu_board.run("rmmod dmatest")
    iommu_board.kernel_log.settle()
    summaries = re.findall(r"dmatest: (dma0chan0-copy\d+): summary (\d+) tests, (\d+) failures",
                           iommu_board.kernel_log.text())
    assert len(summaries) == 2 and all(tests == "200" and failures == "0" for _, tests, failures in summaries)
    assert mmu.translated > before and mmu.passed_through == 0


def test_a_dma_to_an_unmapped_iova_is_a_page_fault(iommu_board):
    mmu = iommu_board.peripherals["copy_mmu"]
    with iommu_board.expect(dma_faults=1):
        failed = iommu_board.run(f"echo 'fault {UNMAPPED_IOVA:#x}' > {CONTROL}", check=False)
        assert control(iommu_board, "test all 30 5 4096")["failures"] == "0"  # the board lives on
    assert failed.status != 0
    fault = iommu_board.bus.faults[-1]
    assert (fault.master, fault.address, fault.write) == ("dmacopy", UNMAPPED_IOVA, True)
    assert "IOMMU page fault in copy_mmu" in str(fault)
    iommu_board.kernel_log.settle()
    log = iommu_board.kernel_log.text()
    assert f"Page fault at {UNMAPPED_IOVA:#018x} of type write" in log
    assert not mmu.fault_active  # the driver's handler sent PAGE_FAULT_DONE


def test_a_dma_after_unmap_faults_at_the_unmapped_iova(iommu_board):
    faults = len(iommu_board.bus.faults)
    with iommu_board.expect(dma_faults=1):
        result = control(iommu_board, "after-unmap buggy", check=False)
    assert len(iommu_board.bus.faults) == faults + 1
    fault = iommu_board.bus.faults[-1]
    assert (fault.master, fault.address, fault.write) == ("dmacopy", int(result["dma"], 16), True)
    assert result["data"] == "lost"


def test_its_fixed_twin_unmaps_after_the_copy(iommu_board):
    faults = len(iommu_board.bus.faults)
    result = control(iommu_board, "after-unmap fixed")
    assert (result["ret"], result["data"]) == ("0", "intact")
    assert len(iommu_board.bus.faults) == faults


def test_a_copy_one_page_longer_than_its_mapping_faults_at_its_end(iommu_board):
    with iommu_board.expect(dma_faults=1):
        result = control(iommu_board, "overrun buggy", check=False)
    fault = iommu_board.bus.faults[-1]
    end = int(result["dma"], 16) + int(result["mapped"])
    assert (fault.master, fault.address, fault.write) == ("dmacopy", end, True)
    assert result["ret"] != "0"


def test_its_fixed_twin_copies_what_it_mapped(iommu_board):
    faults = len(iommu_board.bus.faults)
    assert control(iommu_board, "overrun fixed")["ret"] == "0"
    assert len(iommu_board.bus.faults) == faults


@pytest.mark.parametrize("case,explained", [
    ("after-unmap buggy", r"the last mapping that covered (0x[0-9a-f]+): dma_map_page by c010000\.dmacopy "
                          r"at [\d.]+ s \(\S+\): dma \1, 4096 bytes, DMA_FROM_DEVICE, unmapped at "
                          r"[\d.]+ s, before the access \(at [\d.]+ s\)"),
    ("overrun buggy", r"0 bytes past the end of dma_map_page by c010000\.dmacopy at [\d.]+ s \(\S+\): "
                      r"dma (0x[0-9a-f]+), 4096 bytes, DMA_FROM_DEVICE(, unmapped since)? \(which ends at "
                      r"0x[0-9a-f]+\)"),
])
def test_an_unexpected_fault_names_the_mapping_it_missed(cosim_board_factory, case, explained):
    board = cosim_board_factory(platform="virt-iommu")
    with pytest.raises(BoardFailure) as info:
        board.run(f"echo '{case}' > {CONTROL}", check=False)
    message = str(info.value)
    assert "unexpected DMA fault(s):" in message and "IOMMU page fault in copy_mmu" in message
    assert re.search(explained, message), message


def test_a_buffer_mapped_where_another_was_gets_its_own_pages(iommu_board):
    result = control(iommu_board, "remap")
    assert result["a_dma"] == result["b_dma"]  # iommu-dma reuses the IOVAs: the zap matters
    assert (result["ret"], result["b"], result["a"]) == ("0", "intact", "intact")
    assert iommu_board.bus.hazards == []


def test_an_iommu_driver_that_forgets_its_zap_sends_dma_to_stale_pages(cosim_board_factory):
    board = cosim_board_factory(platform=NOZAP_PLATFORM)
    with board.expect("cache", hazards=2):  # the CPU's lines of the first buffer are hit, too
        result = control(board, "remap")
    assert result["a_dma"] == result["b_dma"]
    assert (result["ret"], result["b"], result["a"]) == ("0", "lost", "overwritten")  # silently
    b_dma = int(result["b_dma"], 16)
    assert [h.model for h in board.bus.hazards] == ["copy_mmu", "copy_mmu"]
    for hazard, page in zip(board.bus.hazards, (1, 2), strict=True):  # the map zapped pages 0 and 3
        assert re.fullmatch(rf"stale IOTLB entry: dmacopy's write at IOVA {b_dma + page * 4096:#x} went "
                            r"to 0x[0-9a-f]+, the IOTLB's translation, but the page table \(entry at "
                            r"0x[0-9a-f]+\) now maps it to 0x[0-9a-f]+: the IOMMU driver changed the "
                            "table without ZAP_ONE_LINE or ZAP_CACHE", hazard.message), hazard.message


def test_an_iommu_driver_that_does_not_flush_its_ptes_is_named_by_the_cache_model(cosim_board_factory):
    """The IOMMU's table walk is DMA like any other: the PTE the CPU wrote and never cleaned is
    reported with the write that left it and the table's mapping."""
    board = cosim_board_factory(platform=NOFLUSH_PLATFORM)
    with pytest.raises(BoardFailure) as info:
        control(board, "bench 4096 1")
    message = str(info.value)
    assert re.search(r"cache: missing dma_sync_single_for_device after the CPU's write at "
                     r"rk_iommu_map\+0x[0-9a-f]+ \(0x[0-9a-f]+\)\n  device: copy_mmu read 4 bytes at "
                     r"0x[0-9a-f]+ \(transfer \d+\)", message), message
    assert re.search(r"buffer: dma_map_page by c0b0000\.copy_mmu at [\d.]+ s \(\S+\): dma "
                     r"0x[0-9a-f]+, 4096 bytes, DMA_TO_DEVICE", message), message


def test_in_emulate_mode_the_unflushed_pte_is_a_page_fault(cosim_board_factory):
    """What silicon does: the walk reads the entry memory still holds (invalid), a page fault,
    while the driver's own dump of the entry (through the CPU's cache) says it is valid."""
    board = cosim_board_factory(platform=NOFLUSH_PLATFORM, cache="emulate")
    with board.expect("cache"), pytest.raises(BoardFailure) as info:
        control(board, "bench 4096 1", check=False)
    [fault] = board.peripherals["copy_mmu"].faults
    assert "no page (page-table entry invalid)" in str(fault)
    # the copy's buffer was freed once the copy failed: after the access, and the note says so
    message = str(info.value)
    assert re.search(rf"the last mapping that covered {fault.address:#x}: dma_alloc by c010000\.dmacopy .*"
                     r"unmapped at ([\d.]+) s, after the access \(at ([\d.]+) s\)", message), message
    board.kernel_log.settle()
    log = board.kernel_log.text()
    assert f"rk_iommu c0b0000.copy_mmu: Page fault at {fault.address:#018x} of type read" in log
    assert re.search(r"pte@0x[0-9a-f]+: 0x[0-9a-f]+ valid: 1 page@", log), log


def test_the_zoo_kernel_with_no_bug_switched_on_is_clean(cosim_board_factory):
    """The zoo's switches off: the patched driver is upstream's, and the same copy is clean."""
    board = cosim_board_factory(platform=Path(NOFLUSH_PLATFORM).with_name("virt-iommu-zoo.yaml"))
    assert control(board, "bench 4096 1")["mbytes_per_s"]
    assert board.bus.hazards == [] and board.peripherals["copy_mmu"].faults == []
