"""Linux's upstream pl330 dmaengine driver and dmatest against the Python PL330 model."""

from __future__ import annotations

import re

CHANNELS = 8
THREADS = 4
ITERATIONS = 400


def test_upstream_driver_probes_the_model(module_board):
    log = module_board.kernel_log.text()
    assert "dma-pl330 c020000.pl330: Loaded driver for PL330 DMAC-341330" in log
    assert "Num_Chans-8 Num_Peri-8 Num_Events-32" in log


def test_dmatest_passes_on_every_channel(module_board):
    channels = " ".join(f"channel=dma0chan{i}" for i in range(CHANNELS))
    module_board.run(f"modprobe dmatest timeout=5000 iterations={ITERATIONS} "
                     f"threads_per_chan={THREADS} {channels} run=1", timeout=60)
    module_board.run("cat /sys/module/dmatest/parameters/wait", timeout=900)  # blocks until done
    module_board.kernel_log.settle()
    summaries = re.findall(r"dmatest: (dma0chan\d+)-copy(\d+): summary (\d+) tests, (\d+) failures",
                           module_board.kernel_log.text())
    threads = {(chan, thread) for chan, thread, _, _ in summaries}
    assert threads == {(f"dma0chan{c}", str(t)) for c in range(CHANNELS) for t in range(THREADS)}
    assert all(int(tests) == ITERATIONS and failures == "0" for _, _, tests, failures in summaries)
    assert module_board.run("cat /sys/kernel/debug/dma-api/error_count").output == "0"
    module_board.run("rmmod dmatest")
