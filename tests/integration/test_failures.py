"""Each way a run can go wrong fails the test at once, with the cause and the logs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cosim.board import BoardFailure

from . import faulty_plugin

CONTROL = "/sys/kernel/debug/cosim-dma-copy/c010000.dmacopy/control"
FAULTY_PLATFORM = Path(__file__).parent.parent / "platforms" / "faulty.yaml"


def test_plugin_exception_fails_with_traceback_and_guest_sees_bus_error(cosim_board_factory):
    board = cosim_board_factory(FAULTY_PLATFORM, plugins=(faulty_plugin,))
    assert board.run("devmem 0x0c000000 32").output == "0x0000600D"
    with pytest.raises(BoardFailure) as info:
        board.run("devmem 0x0c000004 32; echo survived", timeout=20)
    message = str(info.value)
    assert "peripheral 'faulty': plugin raised KeyError on a 4-byte read at offset 0x4" in message
    assert "the guest saw a bus error" in message
    assert "in broken" in message and "no such key" in message  # the model's traceback
    assert "logs: " in message
    time.sleep(0.5)
    assert "Bus error" in (board.logdir / "serial.log").read_text(errors="replace")


def test_an_exception_on_a_models_host_thread_fails_the_test(cosim_board_factory):
    board = cosim_board_factory(FAULTY_PLATFORM, plugins=(faulty_plugin,))
    with pytest.raises(BoardFailure) as info:
        board.run("devmem 0x0c000008 32 1; sleep 5", timeout=20)
    message = str(info.value)
    assert "faulty: host thread clock: ZeroDivisionError: the clock divided by zero" in message
    assert "in clock" in message  # the model's traceback


def test_kernel_panic_fails_at_once_with_the_log(board):
    start = time.monotonic()
    with pytest.raises(BoardFailure) as info:
        board.run("echo c > /proc/sysrq-trigger; sleep 60", timeout=120)
    assert time.monotonic() - start < 20
    message = str(info.value)
    assert "sysrq" in message.lower()
    assert "kernel log (tail)" in message
    assert any(word in message for word in ("Kernel panic", "Oops", "Internal error"))


def test_qemu_dying_fails_with_its_exit_status(board):
    os.kill(board.engine.process.pid, signal.SIGKILL)
    with pytest.raises(BoardFailure, match="QEMU exited with status -9"):
        board.run("sleep 5", timeout=30)


def test_unexpected_dma_api_warning_fails(board):
    with pytest.raises(BoardFailure) as info:
        board.run(f"echo misuse > {CONTROL}")
    assert "[DMA-API]" in str(info.value)
    assert "frees DMA memory with different size" in str(info.value)


@pytest.mark.cosim_expect("DMA-API")
def test_expected_dma_api_warning_passes_and_is_counted(board):
    board.run(f"echo misuse > {CONTROL}")
    assert board.run("cat /sys/kernel/debug/dma-api/error_count").output == "1"


def test_unexpected_dma_fault_fails(board):
    with pytest.raises(BoardFailure, match=r"(?s)unexpected DMA fault.*0x100000000000"):
        board.run(f"echo 'fault 0x100000000000' > {CONTROL}", check=False)


def test_a_cache_model_on_a_qemu_without_it_is_refused_before_boot(cosim_board_factory):
    board = cosim_board_factory(cache="report", start=False)
    board.engine.has_device = lambda name: False  # a QEMU built before the cache model
    with pytest.raises(BoardFailure) as info:
        board.start()
    message = str(info.value)
    assert "the platform asks for the cache model (machine.cache: report)" in message
    assert "built without it (no cosim-cache device)" in message and "cosim build" in message
    assert board.engine.process is None  # refused before QEMU started


def test_an_unexpected_cache_report_fails_with_the_fix(cosim_board_factory):
    board = cosim_board_factory(cache="report")
    board.run("modprobe cosim_cache_zoo")
    with pytest.raises(BoardFailure) as info:
        board.run("echo 'to-device-no-sync buggy' > /sys/kernel/debug/cosim-cache-zoo/control")
    message = str(info.value)
    assert "the cache model reported:" in message
    assert "missing dma_sync_single_for_device after the CPU's write at" in message
    assert "cache-reports.txt" in message
