"""Linux's upstream pl330 dmaengine driver and dmatest against the Python PL330 model."""

from __future__ import annotations

import re

import pytest

CHANNELS = 8
THREADS = 4
ITERATIONS = 400


def test_upstream_driver_probes_the_model(module_board):
    log = module_board.kernel_log.text()
    assert "dma-pl330 c020000.pl330: Loaded driver for PL330 DMAC-341330" in log
    assert "Num_Chans-8 Num_Peri-8 Num_Events-32" in log


def test_dmatest_passes_on_every_channel(module_board):
    channels = " ".join(f"channel=dma0chan{i}" for i in range(CHANNELS))
    # modprobe returns once its threads are done, when they never sleep: with one vCPU and no
    # preemption, transfers finish before a thread waits for them (36-58 s measured, all 32)
    module_board.run(f"modprobe dmatest timeout=5000 iterations={ITERATIONS} "
                     f"threads_per_chan={THREADS} {channels} run=1", timeout=900)
    module_board.run("cat /sys/module/dmatest/parameters/wait", timeout=900)  # blocks until done
    module_board.kernel_log.settle()
    summaries = re.findall(r"dmatest: (dma0chan\d+)-copy(\d+): summary (\d+) tests, (\d+) failures",
                           module_board.kernel_log.text())
    threads = {(chan, thread) for chan, thread, _, _ in summaries}
    assert threads == {(f"dma0chan{c}", str(t)) for c in range(CHANNELS) for t in range(THREADS)}
    assert all(int(tests) == ITERATIONS and failures == "0" for _, _, tests, failures in summaries)
    assert module_board.run("cat /sys/kernel/debug/dma-api/error_count").output == "0"
    module_board.run("rmmod dmatest")
    # every channel's transfers are on the board's timeline (saved as trace.json with the logs)
    for channel in range(CHANNELS):
        assert any(e["name"] == "transfer" for e in module_board.trace.on_track(f"pl330 channel {channel}"))


def abort_interrupts(board) -> int:
    """The PL330's abort interrupt count (GIC SPI 115 = GIC interrupt 147)."""
    table = board.run("cat /proc/interrupts").output
    match = re.search(r"^\s*\d+:\s+(\d+)\s+GICv3\s+147 Level", table, re.M)
    return int(match.group(1)) if match else 0


def test_transfer_outside_ram_faults_like_the_hardware_and_the_board_lives_on(module_board):
    bad = 0xF000_0000  # a 32-bit bus address no memory answers (RAM is 0x40000000..0x7fffffff)
    before = abort_interrupts(module_board)
    with module_board.expect(dma_faults=1):
        module_board.run(f"echo 'memcpy-to {bad:#x}' > /sys/kernel/debug/cosim-dmaengine/control")
        seen = module_board.run("cat /sys/kernel/debug/cosim-dmaengine/control").output
    fault = module_board.bus.faults[-1]
    assert (fault.master, fault.address, fault.write) == ("pl330", bad, True)
    assert abort_interrupts(module_board) == before + 1
    module_board.kernel_log.settle()
    # The upstream driver's own report: the channel's state (faulting) and fault type (data write)
    reset = re.search(r"dma-pl330 c020000\.pl330: Reset Channel-(\d)\s+CS-f FTC-(\w+)",
                      module_board.kernel_log.text())
    assert reset and int(reset.group(2), 16) & (1 << 17)
    # pl330 completes the aborted descriptor without an error code: the client sees "completed"
    assert "completed=1" in seen
    module_board.run("modprobe dmatest iterations=50 threads_per_chan=2 channel=dma0chan0 run=1")
    module_board.run("cat /sys/module/dmatest/parameters/wait", timeout=300)
    module_board.kernel_log.settle()
    assert re.findall(r"dma0chan0-copy\d: summary 50 tests, 0 failures", module_board.kernel_log.text())
    module_board.run("rmmod dmatest")


def test_qemus_own_pl330_runs_on_the_comparison_platform(cosim_board_factory):
    """The reference side of the benchmark: QEMU's C PL330 put on virt by cosim-sysbus-host."""
    board = cosim_board_factory("virt-qemu-pl330")
    assert "dma-pl330 c020000.pl330: Loaded driver for PL330 DMAC-241330" in board.kernel_log.text()
    board.run("modprobe dmatest iterations=20 threads_per_chan=1 channel=dma0chan0 run=1")
    board.run("cat /sys/module/dmatest/parameters/wait", timeout=300)
    board.kernel_log.settle()
    assert "dma0chan0-copy0: summary 20 tests, 0 failures" in board.kernel_log.text()


# dmatest beyond its defaults, on two channels: sizes of 1 and odd lengths, a forced alignment,
# fixed (non-random) offsets, completion by polling instead of the interrupt, 8 threads a channel
@pytest.mark.parametrize("options,threads,iterations", [
    ("transfer_size=1", 2, 300),
    ("transfer_size=4093", 2, 200),
    ("transfer_size=3 alignment=0", 2, 300),
    ("alignment=3", 2, 300),
    ("norandom=1", 2, 50),
    ("polled=1", 2, 200),
    ("", 8, 100),
])
def test_dmatest_beyond_the_defaults(module_board, options, threads, iterations):
    module_board.kernel_log.settle()
    seen = len(module_board.kernel_log.text())
    module_board.run(f"modprobe dmatest timeout=5000 iterations={iterations} threads_per_chan={threads} "
                     f"{options} channel=dma0chan0 channel=dma0chan1 run=1", timeout=60)
    module_board.run("cat /sys/module/dmatest/parameters/wait", timeout=900)
    module_board.run("rmmod dmatest")
    module_board.kernel_log.settle()
    log = module_board.kernel_log.text()[seen:]
    # a thread's name (its task name) is cut at 15 characters: "dma0chan0-copy10" loses its "0"
    summaries = re.findall(r"dmatest: (dma0chan[01])-copy\d*: summary (\d+) tests, (\d+) failures", log)
    assert sorted(chan for chan, _, _ in summaries) == ["dma0chan0"] * threads + ["dma0chan1"] * threads
    assert all(int(tests) == iterations and failures == "0" for _, tests, failures in summaries), log
    assert module_board.run("cat /sys/kernel/debug/dma-api/error_count").output == "0"
