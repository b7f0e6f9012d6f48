"""The kernel's own test suites, run as shipped, against the Python models — and the upstream
spi-pl022 bug the first of them found, with cosim's fix (guest/kernel/patches)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cosim.board import BoardFailure
from cosim.build import build_all

from .conftest import virt_with

# spi-loopback-test runs every test of its list for every length of ITERATE_LEN_LIST
# (drivers/spi/spi-test.h), each with up to 16 pairs of buffer offsets; run_only_iter_len picks a
# length.  These are all of its lengths up to 4099, around a page among them (4096 from offset 1
# spans two pages); 65536, 65537 and its 128 KiB maximum would add ~100 MB through the Python
# SPI path at ~15 KB/s: hours.
LOOPBACK_LENGTHS = (0, 1, 2, 3, 7, 11, 16, 31, 32, 64, 97, 128, 251, 256, 1021, 1024, 1031, 4093,
                    4096, 4099)
SPIDEV = "/sys/bus/spi/devices/spi0.0"
ITERATION = r"with iteration values: len = (\d+), tx_off = (\d+), rx_off = (\d+)"


def bind_loopback_test(board) -> None:
    board.run(f"echo spi0.0 > /sys/bus/spi/drivers/spidev/unbind; "
              f"echo spi-loopback-test > {SPIDEV}/driver_override")


def test_spi_loopback_test_passes_on_the_pl022_with_our_patch(cosim_board_factory):
    board = cosim_board_factory()  # spidev's own 12 MHz: the PL022's top rate
    bind_loopback_test(board)
    for length in LOOPBACK_LENGTHS:
        board.kernel_log.settle()
        seen = len(board.kernel_log.text())
        # delay_ms=0: no 100 ms pause between its tests (there for a logic analyzer), an mdelay
        # that spins the guest's CPU: under virtual time that ran ~380x slower than real time
        board.run(f"modprobe spi-loopback-test loop_req=1 run_only_iter_len={length} delay_ms=0",
                  timeout=600)
        board.run("rmmod spi-loopback-test")
        board.kernel_log.settle()
        log = board.kernel_log.text()[seen:]
        assert "Finished spi-loopback-tests with return: 0" in log, log[-3000:]
        runs = re.findall(ITERATION, log)
        assert runs and {int(n) for n, _, _ in runs} == {length}
        if length == 4096:  # the case that hit BUG_ON(bytesleft) before the fix
            assert ("4096", "0", "1") in runs
    assert board.run("cat /sys/kernel/debug/dma-api/error_count").output == "0"


def test_without_the_patch_spi_loopback_test_hits_the_bug(cosim_board_factory):
    """The same run on a kernel built without guest/kernel/patches (cached like any build)."""
    board = cosim_board_factory(artifacts=build_all(kernel_patches=()))
    bind_loopback_test(board)
    with pytest.raises(BoardFailure) as failure:
        board.run("modprobe spi-loopback-test loop_req=1 run_only_iter_len=4096 delay_ms=0",
                  timeout=600)
    assert "[kernel BUG] " in str(failure.value) and "spi-pl022.c:791!" in str(failure.value)
    before = board.kernel_log.text().split("kernel BUG at drivers/spi/spi-pl022.c")[0]
    # the last case it ran: a 4096-byte buffer one byte into its page
    assert re.findall(ITERATION, before)[-1] == ("4096", "0", "1")


def test_without_the_patch_mtd_stresstest_hits_the_bug_through_spi_nor(cosim_board_factory, tmp_path):
    board = cosim_board_factory(flash_platform(tmp_path), artifacts=build_all(kernel_patches=()))
    with pytest.raises(BoardFailure) as failure:
        board.run("modprobe mtd_stresstest dev=0 count=200", timeout=600)
    assert "kernel BUG at drivers/spi/spi-pl022.c:791!" in str(failure.value)
    assert "spi_nor" in board.kernel_log.text().split("kernel BUG at")[1]  # spi-nor's call path


# The MTD tests on the SPI NOR flash, as an M25P20 (256 KiB, four 64 KiB eraseblocks): whole-device
# passes go through the Python SPI path at ~7-11 KiB/s, so the smaller part keeps them in minutes.
def flash_platform(folder: Path) -> Path:
    def m25p20(spi1: dict) -> None:
        spi1["devices"][0]["properties"] = {"jedec_id": 0x202012, "size": 256 << 10}
    return virt_with(folder, "spi1", m25p20)


@pytest.fixture(scope="module")
def flash_board(cosim_module_board_factory, tmp_path_factory):
    board = cosim_module_board_factory(flash_platform(tmp_path_factory.mktemp("mtd")))
    assert board.run("cat /sys/bus/spi/devices/spi1.0/spi-nor/partname").output == "m25p20"
    assert "mtd0: 00040000 00010000" in board.run("cat /proc/mtd").output
    return board


def mtd_test(board, module: str, params: str, timeout: float) -> str:
    """Loads one of the kernel's MTD test modules on mtd0; returns what it logged."""
    board.kernel_log.settle()
    seen = len(board.kernel_log.text())
    result = board.run(f"modprobe {module} dev=0 {params}; status=$?; rmmod {module}; exit $status",
                       timeout=timeout, check=False)
    board.kernel_log.settle()
    log = board.kernel_log.text()[seen:]
    assert result.status == 0, f"{module} failed ({result.output}):\n{log[-3000:]}"
    return log


def test_mtd_readtest_reads_the_whole_flash(flash_board):
    log = mtd_test(flash_board, "mtd_readtest", "", timeout=300)
    assert "mtd_readtest: finished" in log and "error" not in log.lower()


def test_mtd_torturetest(flash_board):
    log = mtd_test(flash_board, "mtd_torturetest", "eb=0 ebcnt=2 cycles_count=1", timeout=600)
    assert "mtd_torturetest: finished after 1 erase cycles" in log


def test_mtd_stresstest(flash_board):
    log = mtd_test(flash_board, "mtd_stresstest", "count=20", timeout=600)
    assert "mtd_stresstest: finished, 20 operations done" in log


def test_mtd_speedtest(flash_board):
    log = mtd_test(flash_board, "mtd_speedtest", "count=1", timeout=600)
    assert "mtd_speedtest: finished" in log
    speeds = dict(re.findall(r"mtd_speedtest: (eraseblock write|eraseblock read) speed is (\d+) KiB/s", log))
    assert set(speeds) == {"eraseblock write", "eraseblock read"}  # measured, reported, not asserted
