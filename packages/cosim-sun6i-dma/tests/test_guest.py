"""The upstream sun6i-dma driver on the model in the real guest: probe, dmatest, a slave."""

from __future__ import annotations

import re

CHANNELS = 8  # dmatest channels: as many as the controller has physical ones
THREADS = 2
ITERATIONS = 200
SPI0 = 0x0C020000


def free_channels(board) -> list[str]:
    """The controller's virtual channels no client holds (spi0 holds two while bound)."""
    listing = board.run("for c in /sys/class/dma/dma0chan*; do echo ${c##*/} $(cat $c/in_use); done")
    return [name for name, in_use in (line.split() for line in listing.output.splitlines())
            if in_use == "0"]


def test_upstream_driver_probes_after_releasing_its_reset(module_board):
    assert "c010000.dma" in module_board.run("ls /sys/bus/platform/drivers/sun6i-dma/").output.split()
    # num_vchans = 2 * (dma-requests + 1): one dmaengine channel each
    assert len(module_board.run("ls -d /sys/class/dma/dma0chan*").output.split()) == 56
    dma = module_board.peripheral("dma")
    assert not dma.in_reset and module_board.peripheral("ccu").released & 1
    assert module_board.run("cat /sys/class/dma/dma0chan0/in_use").output == "1"  # spi0's


def test_dmatest_passes_on_its_channels(module_board):
    channels = free_channels(module_board)[:CHANNELS]
    assert len(channels) == CHANNELS
    dma = module_board.peripheral("dma")
    fetches = dma.lli_fetches
    module_board.run(f"modprobe dmatest timeout=5000 iterations={ITERATIONS} threads_per_chan={THREADS} "
                     + " ".join(f"channel={c}" for c in channels) + " run=1", timeout=60)
    module_board.run("cat /sys/module/dmatest/parameters/wait", timeout=900)  # blocks until done
    module_board.kernel_log.settle()
    # a thread's name is its task name, cut at 15 characters: "dma0chan10-copy1" loses its "1"
    summaries = re.findall(r"dmatest: (dma0chan\d+)-copy\d?: summary (\d+) tests, (\d+) failures",
                           module_board.kernel_log.text())
    assert sorted(c for c, _, _ in summaries) == sorted(channels * THREADS)
    assert all(int(tests) == ITERATIONS and failures == "0" for _, tests, failures in summaries)
    assert module_board.run("cat /sys/kernel/debug/dma-api/error_count").output == "0"
    module_board.run("rmmod dmatest")
    # every copy was one LLI the model fetched from guest memory, and every fetch is on the
    # timeline (on the track of the physical channel the driver's tasklet picked: which ones it
    # picks depends on how transfers overlap, so no particular channel is asserted)
    assert dma.lli_fetches - fetches >= CHANNELS * THREADS * ITERATIONS
    on_timeline = sum(1 for i in range(8) for e in module_board.trace.on_track(f"dma channel {i}")
                      if e["name"] == "LLI fetch")
    assert on_timeline == dma.lli_fetches


def test_spi_rewired_to_the_vendor_dmac_loops_data_back(module_board):
    log = module_board.kernel_log.text()
    assert "ssp-pl022 c020000.spi0: ARM PL022 driver, device ID: 0x00041022" in log
    for size, hz in ((64, 1_000_000), (4096, 1_000_000), (65536, 100_000)):
        before = module_board.bus.device_traffic["dma", SPI0]
        module_board.run(f"head -c {size} /dev/urandom > /tmp/in")
        module_board.run(f"spidev_test -D /dev/spidev0.0 -l -s {hz} -i /tmp/in -o /tmp/out", timeout=60)
        assert module_board.run("cmp /tmp/in /tmp/out").status == 0
        # both directions went through the sun6i DMA into the PL022's FIFO, not the CPU
        assert module_board.bus.device_traffic["dma", SPI0] - before == 2 * size
    requests = module_board.trace.on_track("dma DRQ 4") + module_board.trace.on_track("dma DRQ 5")
    assert {e["name"] for e in requests} == {"burst", "single"}
