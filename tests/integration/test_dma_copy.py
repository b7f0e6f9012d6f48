"""Our guest driver for the dma-copy engine: the DMA API end to end against the Python model."""

from __future__ import annotations

import re

import pytest

CONTROL = "/sys/kernel/debug/cosim-dma-copy/c010000.dmacopy/control"
BAD_ADDRESS = 0x1000_0000_0000  # no memory there: the bus answers with a decode error


def control(board, command: str, timeout: float = 300, check: bool = True) -> dict[str, str]:
    board.run(f"echo '{command}' > {CONTROL}", timeout=timeout, check=check)
    line = board.run(f"cat {CONTROL}").output
    return dict(re.findall(r"(\w+)=(\S+)", line))


def dma_api_errors(board) -> int:
    return int(board.run("cat /sys/kernel/debug/dma-api/error_count").output)


def copy_interrupts(board) -> int:
    table = board.run("cat /proc/interrupts").output
    return int(re.search(r"^\s*\d+:\s+(\d+)\s+GICv3\s+145 Level", table, re.M).group(1))


@pytest.mark.parametrize("mode,iterations", [("coherent", 1000), ("single", 1000), ("sg", 1000),
                                             ("all", 3000)])
def test_thousands_of_random_copies_verified_in_guest(module_board, mode, iterations):
    before = copy_interrupts(module_board)
    result = control(module_board, f"test {mode} {iterations} {iterations + 7} 65536")
    assert result["mode"] == mode
    assert int(result["iterations"]) == iterations
    assert result["failures"] == "0"
    assert copy_interrupts(module_board) - before >= iterations
    assert dma_api_errors(module_board) == 0


def test_large_copies(module_board):
    result = control(module_board, "test all 30 3 1048576")
    assert result["failures"] == "0" and int(result["bytes"]) > 4 * 1024 * 1024 // 4


def test_dma_fault_reaches_guest_and_test_and_the_board_lives_on(module_board):
    with module_board.expect(dma_faults=1):
        failed = module_board.run(f"echo 'fault {BAD_ADDRESS:#x}' > {CONTROL}", check=False)
        result = control(module_board, "bench 4096 1")  # any later command: board still works
    assert failed.status != 0 and "Input/output error" in failed.output
    fault = module_board.bus.faults[-1]
    assert fault.address == BAD_ADDRESS and fault.write and fault.master == "dmacopy"
    module_board.kernel_log.settle()
    assert f"DMA fault at {BAD_ADDRESS:#x}" in module_board.kernel_log.text()
    assert result["count"] == "1"
    assert control(module_board, "test all 30 5 4096")["failures"] == "0"
