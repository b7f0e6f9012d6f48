"""The cache model against the bug zoo (guest/drivers/cosim_cache_zoo.c): each classic
non-coherent DMA mistake is caught with the report that names its fix, in report mode (the data
moves as on a coherent system) and in emulate mode (the data is what silicon gives, so the buggy
case corrupts it); each fixed twin runs without a report."""

from __future__ import annotations

import pytest

from cosim.board import Board

CONTROL = "/sys/kernel/debug/cosim-cache-zoo/control"
MODULE = "[cosim_cache_zoo]"

# case -> what its report must say (the fix; the buffer's mapping where the report names it)
CASES = {
    "to-device-no-sync": ["missing dma_sync_single_for_device after the CPU's write at", MODULE,
                          "device: pl330 read"],
    "from-device-no-sync": ["missing dma_sync_single_for_cpu before this read at", MODULE,
                            "DMA_FROM_DEVICE"],
    "shared-line": ["buffer shares cache line", "align the buffer to the cache line", MODULE],
    "cpu-writes-owned": ["the CPU wrote at", "while the device owned the buffer",
                         "mapped DMA_FROM_DEVICE", "memset+", "called from cpu_writes_owned+"],
    "wrong-direction": ["wrong direction", "mapped DMA_TO_DEVICE", "DMA_FROM_DEVICE or "
                        "DMA_BIDIRECTIONAL", MODULE],
}


@pytest.fixture(scope="module", params=["report", "emulate"])
def zoo_board(request: pytest.FixtureRequest, cosim_module_board_factory) -> Board:
    board = cosim_module_board_factory(cache=request.param)
    board.run("modprobe cosim_cache_zoo")
    return board


def run_case(board: Board, case: str, variant: str) -> str:
    board.run(f"echo '{case} {variant}' > {CONTROL}")
    return board.run(f"cat {CONTROL}").output


@pytest.mark.parametrize("case", CASES)
def test_each_bug_is_caught_with_its_fix_and_corrupts_only_on_silicon(zoo_board: Board, case: str) -> None:
    before = len(zoo_board.cache_reports)
    with zoo_board.expect("cache"):
        outcome = run_case(zoo_board, case, "buggy")
    reports = zoo_board.cache_reports[before:]
    assert reports, f"{case}: no report"
    text = "\n".join(str(r) for r in reports)
    for phrase in CASES[case]:
        assert phrase in text, f"{case}: '{phrase}' not in:\n{text}"
    emulate = zoo_board.cache_mode == "emulate"
    assert f"data={'corrupt' if emulate else 'intact'}" in outcome, outcome
    assert outcome.endswith("ret=0"), outcome


@pytest.mark.parametrize("case", CASES)
def test_each_fixed_twin_is_silent_and_intact(zoo_board: Board, case: str) -> None:
    before = len(zoo_board.cache_reports)
    outcome = run_case(zoo_board, case, "fixed")  # any report fails the board here
    assert "data=intact" in outcome and outcome.endswith("ret=0"), outcome
    assert len(zoo_board.cache_reports) == before


def test_zero_copy_to_user_space_done_wrong_and_right(zoo_board: Board) -> None:
    """A streaming page given to user space with cacheable attributes: the program's writes sit
    in the cache when the device reads the page.  dma_mmap_coherent gives it the coherent
    buffer's attributes instead."""
    before = len(zoo_board.cache_reports)
    with zoo_board.expect("cache"):
        outcome = zoo_board.run("zoo-mmap buggy").output
    text = "\n".join(str(r) for r in zoo_board.cache_reports[before:])
    assert "missing dma_sync_single_for_device after the CPU's write at 0x" in text, text
    assert "(user space)" in text and "DMA_TO_DEVICE" in text, text
    emulate = zoo_board.cache_mode == "emulate"
    assert f"mmap buggy data={'corrupt' if emulate else 'intact'}" in outcome, outcome
    before = len(zoo_board.cache_reports)
    outcome = zoo_board.run("zoo-mmap fixed").output
    assert "mmap fixed data=intact" in outcome and outcome.endswith("ret=0"), outcome
    assert len(zoo_board.cache_reports) == before


COPY_CONTROL = "/sys/kernel/debug/cosim-dma-copy/c010000.dmacopy/control"


def test_a_ring_entry_read_without_dma_rmb_is_caught(zoo_board: Board) -> None:
    """The dma-copy engine completes a ring entry's fields, then its status; the CPU polls the
    status and reads a field after it.  Without dma_rmb() the field's read may be performed
    first.  (QEMU performs loads in order, so emulate mode reports it but cannot show it.)"""
    before = len(zoo_board.cache_reports)
    with zoo_board.expect("cache"):
        zoo_board.run(f"echo 'ring buggy' > {COPY_CONTROL}")
    text = "\n".join(str(r) for r in zoo_board.cache_reports[before:])
    assert "missing dma_rmb() between the read at run_ring+" in text, text
    assert "[cosim_dma_copy]" in text and "and this read at run_ring+" in text, text
    assert "ring buggy length=4096" in zoo_board.run(f"cat {COPY_CONTROL}").output
    before = len(zoo_board.cache_reports)
    zoo_board.run(f"echo 'ring fixed' > {COPY_CONTROL}")
    outcome = zoo_board.run(f"cat {COPY_CONTROL}").output
    assert "ring fixed length=4096" in outcome and "polled=done" in outcome, outcome
    assert len(zoo_board.cache_reports) == before
