"""The failure watch: what fails a board, when, and what the failure says."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosim.bus import Bus, BusMaster, Hazard
from cosim.console import KernelLog
from cosim.watch import BoardFailure, FailureWatch

from .conftest import RAM_BASE


@pytest.fixture
def watch(tmp_path: Path, bus: Bus) -> Iterator[FailureWatch]:
    ours, theirs = socket.socketpair()
    watch = FailureWatch(bus, tmp_path, lambda: None)
    watch.kernel_log = KernelLog(ours, tmp_path / "kernel.log")
    yield watch
    theirs.close()
    ours.close()


def test_a_hazard_fails_the_board_between_commands(watch, bus):
    bus.hazards.append(Hazard("mmu", "stale IOTLB entry: ..."))
    watch.check()  # while a command runs, the guest may still be asked about it
    with pytest.raises(BoardFailure, match="a model saw its hardware go wrong:\n  mmu: stale IOTLB entry"):
        watch.check(between_commands=True)


def test_an_expected_hazard_does_not(watch, bus):
    with watch.expect(hazards=1):
        bus.hazards.append(Hazard("mmu", "stale IOTLB entry: ..."))
    watch.check(between_commands=True)
    bus.hazards.append(Hazard("mmu", "another"))
    with pytest.raises(BoardFailure, match="mmu: another"):
        watch.check(between_commands=True)


def test_a_truncation_fails_with_its_notes_and_the_fix(watch, bus):
    BusMaster(bus, "dma32", address_bits=32).write((1 << 32) + RAM_BASE, b"x")
    watch.truncation_notes[0] = "the driver's mapping: ..."
    with pytest.raises(BoardFailure) as info:
        watch.check(between_commands=True)
    assert str(info.value).startswith(
        "a DMA master dropped address bits: the driver's DMA mask is wider than the master (set its "
        "mask to the master's width, or describe the limit with dma-ranges):\n  address truncated: "
        "dma32 has 32 address bits; a write of 1 bytes meant for 0x140000000 went to 0x40000000, "
        "overwriting memory there (1 of 1 bytes changed; they began 00)\n    the driver's mapping: ...")
