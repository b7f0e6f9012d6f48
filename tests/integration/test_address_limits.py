"""32-bit masters on a board with RAM above 4 GiB (platform virt-highmem): a correct driver's
buffers bounce through swiotlb; a driver that claims 64 bits for a 32-bit master has the master
drop the upper address bits, and cosim names the truncated access and what it overwrote."""

from __future__ import annotations

import re

import pytest

from cosim.watch import BoardFailure

FOUR_GIB = 1 << 32


def control_path(device: str) -> str:
    return f"/sys/kernel/debug/cosim-dma-copy/{device}/control"


def control(board, device: str, command: str, check: bool = True) -> dict[str, str]:
    board.run(f"echo '{command}' > {control_path(device)}", check=check)
    return dict(re.findall(r"(\w+)=(\S+)", board.run(f"cat {control_path(device)}").output))


def bounces(board, device: str) -> int:
    """swiotlb_bounced trace events for ``device``: mappings swiotlb bounce-buffered."""
    trace = board.run("cat /sys/kernel/tracing/trace").output
    return len(re.findall(rf"swiotlb_bounced: dev_name: {re.escape(device)} ", trace))


@pytest.fixture(scope="module")
def highmem(cosim_module_board_factory):
    return cosim_module_board_factory(platform="virt-highmem")


def test_the_guest_has_ram_above_4gib(highmem):
    iomem = highmem.run("cat /proc/iomem").output
    ranges = [tuple(int(x, 16) for x in m) for m in re.findall(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM",
                                                                iomem, re.M)]
    assert min(start for start, _ in ranges) == 0x4000_0000  # virt's RAM starts at 1 GiB
    assert max(end for _, end in ranges) > FOUR_GIB + (1 << 30)  # RAM 4 GiB above RAM


def test_a_correct_driver_on_a_32bit_master_bounces_through_swiotlb(highmem):
    before = bounces(highmem, "c010000.dma32")
    result = control(highmem, "c010000.dma32", "high")
    assert result["mask"] == "32"  # the driver read the engine's ADDR_BITS
    assert int(result["phys"], 16) >= FOUR_GIB  # the buffers are above what the master reaches
    assert int(result["src_dma"], 16) < FOUR_GIB and int(result["dst_dma"], 16) < FOUR_GIB
    assert (result["ret"], result["data"], result["victim_pages"]) == ("0", "intact", "intact")
    assert bounces(highmem, "c010000.dma32") == before + 2  # both mappings bounced
    assert highmem.bus.truncations == []


def test_dma_ranges_keep_a_64bit_mask_within_the_bus(highmem):
    assert control(highmem, "c020000.dma32r", "mask 64")["ret"] == "0"
    before = bounces(highmem, "c020000.dma32r")
    result = control(highmem, "c020000.dma32r", "high")
    assert int(result["src_dma"], 16) < FOUR_GIB and int(result["dst_dma"], 16) < FOUR_GIB
    assert (result["ret"], result["data"], result["victim_pages"]) == ("0", "intact", "intact")
    assert bounces(highmem, "c020000.dma32r") == before + 2
    assert highmem.bus.truncations == []


def test_a_64bit_mask_on_a_32bit_master_overwrites_memory_4gib_below(highmem):
    control(highmem, "c010000.dma32", "mask 64")
    try:
        with highmem.expect("cache", truncations=2):  # the CPU's own lines of the victim, too
            result = control(highmem, "c010000.dma32", "high")
    finally:
        control(highmem, "c010000.dma32", "mask 32")
    src, dst = int(result["src_dma"], 16), int(result["dst_dma"], 16)
    assert src >= FOUR_GIB and dst == src + 4096  # no bounce: the driver believed in 64 bits
    assert (result["data"], result["victim_pages"]) == ("lost", "overwritten")
    read, write = highmem.bus.truncations[-2:]
    assert (read.master, read.issued, read.address, read.write) == ("dma32", src, src - FOUR_GIB, False)
    assert (write.issued, write.address, write.write) == (dst, dst - FOUR_GIB, True)
    assert write.address == int(result["victim"], 16) + 4096 and write.changed == 4096


def test_an_unexpected_truncation_fails_with_the_address_and_what_it_overwrote(cosim_board_factory):
    board = cosim_board_factory(platform="virt-highmem")
    control(board, "c010000.dma32", "mask 64")
    with pytest.raises(BoardFailure) as info:
        board.run(f"echo high > {control_path('c010000.dma32')}")
    message = str(info.value)
    assert "a DMA master dropped address bits: the driver's DMA mask is wider than the master" in message
    m = re.search(r"dma32 has 32 address bits; a write of 4096 bytes meant for (0x[0-9a-f]+) went to "
                  r"(0x[0-9a-f]+), overwriting memory there \(4096 of 4096 bytes changed; they "
                  r"began 3c 3c", message)
    assert m, message
    issued, reached = int(m[1], 16), int(m[2], 16)
    assert reached == issued - FOUR_GIB
    assert re.search(rf"the driver's mapping: dma_map_page by c010000\.dma32 at [\d.]+ s \(\S+\): dma "
                     rf"{m[1]}, 4096 bytes, DMA_FROM_DEVICE(, unmapped since)?; no live DMA mapping "
                     rf"covers {m[2]}: the memory there belongs to the kernel", message), message
