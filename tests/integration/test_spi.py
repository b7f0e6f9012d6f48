"""Linux's spi-pl022 with DMA through the Python PL330, checked with the upstream spidev_test."""

from __future__ import annotations

import re

import pytest

SPI0 = 0x0C050000


def test_upstream_driver_probes_with_dma(module_board):
    log = module_board.kernel_log.text()
    assert "ssp-pl022 c050000.spi0: ARM PL022 driver, device ID: 0x00041022" in log
    assert module_board.run("ls /dev/spidev0.0").status == 0


# The SPI core gives a transfer twice its time on the wire (+200 ms): under virtual time that is
# the guest's time, which stands still while the Python models work, so the device's own 12 MHz
# passes however slow the host (the PL022's top rate is SSPCLK / 2, 12 MHz).
@pytest.mark.parametrize("bits,size,hz", [(8, 1, 12_000_000), (8, 7, 12_000_000), (8, 64, 12_000_000),
                                          (8, 4096, 12_000_000), (8, 65536, 12_000_000),
                                          (8, 4096, 100_000), (16, 2, 12_000_000),
                                          (16, 4096, 12_000_000), (16, 65536, 12_000_000)])
def test_spidev_test_loopback(module_board, bits, size, hz):
    before = module_board.bus.device_traffic["pdma", SPI0]
    module_board.run(f"head -c {size} /dev/urandom > /tmp/in")
    module_board.run(f"spidev_test -D /dev/spidev0.0 -l -b {bits} -s {hz} -i /tmp/in -o /tmp/out",
                     timeout=60)
    assert module_board.run("cmp /tmp/in /tmp/out").status == 0
    # both directions went through the DMA controller, not the CPU
    assert module_board.bus.device_traffic["pdma", SPI0] - before == 2 * size


def test_spidev_test_reports_its_frames(module_board):
    out = module_board.run('spidev_test -D /dev/spidev0.0 -l -v -p "hello cosim"').output
    tx = re.search(r"^TX \| ([0-9A-F ]+?) __", out, re.M).group(1)
    rx = re.search(r"^RX \| ([0-9A-F ]+?) __", out, re.M).group(1)
    assert tx == rx == "68 65 6C 6C 6F 20 63 6F 73 69 6D"
