"""Linux's amba-pl011 moving data with the PL330 through the Python PL011's DMA requests."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

SIZE = 256 * 1024
PORT = "/dev/ttyAMA2"
UART2 = 0x0C040000


@pytest.fixture(scope="module")
def dma_uart(module_board):
    # 921600 baud: 256 KiB take 2.8 s of line time each way
    module_board.run(f"stty -F {PORT} 921600 raw -echo -ixon -ixoff")
    module_board.run(f"exec 4<>{PORT}")  # keep the port (and its DMA set-up) open between tests
    return module_board


def test_upstream_driver_takes_dma_channels(dma_uart):
    log = dma_uart.kernel_log.text()
    assert re.search(r"uart-pl011 c040000\.uart2: DMA channel TX dma1chan1", log)
    assert re.search(r"uart-pl011 c040000\.uart2: DMA channel RX dma1chan0", log)


def test_256k_host_to_guest_by_dma(dma_uart):
    uart = dma_uart.peripheral("uart2")
    data = os.urandom(SIZE)
    before = dma_uart.bus.device_traffic["pdma", UART2]
    dma_uart.run(f"(exec 3<>{PORT}; printf R >&3; head -c {SIZE} <&3 > /tmp/rx) & echo $! > /tmp/rx.pid")
    assert uart.take_from_guest(1, timeout=10) == b"R"
    uart.send_to_guest(data)
    dma_uart.run("wait $(cat /tmp/rx.pid)", timeout=120)
    assert dma_uart.run("md5sum /tmp/rx").output.split()[0] == hashlib.md5(data).hexdigest()
    by_dma = dma_uart.bus.device_traffic["pdma", UART2] - before
    # The DMA reads the FIFO in bursts; only what is left below a burst when the line goes quiet
    # is read by the CPU after the receive timeout, as the driver does on silicon.
    assert by_dma >= 0.9 * SIZE


def test_256k_guest_to_host_by_dma(dma_uart):
    uart = dma_uart.peripheral("uart2")
    dma_uart.run(f"head -c {SIZE} /dev/urandom > /tmp/tx")
    digest = dma_uart.run("md5sum /tmp/tx").output.split()[0]
    before = dma_uart.bus.device_traffic["pdma", UART2]
    dma_uart.run(f"cat /tmp/tx > {PORT}", timeout=120)
    received = uart.take_from_guest(SIZE, timeout=30)
    assert len(received) == SIZE and hashlib.md5(received).hexdigest() == digest
    assert dma_uart.bus.device_traffic["pdma", UART2] - before >= 0.9 * SIZE
    assert uart.take_from_guest(1, timeout=0.2) == b""


def test_64k_both_ways_at_3_mbaud(dma_uart):
    """The UART's 48 MHz clock allows its top rate, UARTCLK / 16: a character every 3.3 us of
    the guest's time, by DMA both ways, nothing lost."""
    uart = dma_uart.peripheral("uart2")
    dma_uart.run(f"stty -F {PORT} 3000000")
    assert uart.baud() == 3_000_000
    data = os.urandom(64 * 1024)
    dma_uart.run(f"(exec 3<>{PORT}; printf R >&3; head -c {len(data)} <&3 > /tmp/rx) & echo $! > /tmp/rx.pid")
    assert uart.take_from_guest(1, timeout=10) == b"R"
    uart.send_to_guest(data)
    dma_uart.run("wait $(cat /tmp/rx.pid)", timeout=120)
    assert dma_uart.run("md5sum /tmp/rx").output.split()[0] == hashlib.md5(data).hexdigest()
    dma_uart.run(f"head -c {len(data)} /dev/urandom > /tmp/tx")
    digest = dma_uart.run("md5sum /tmp/tx").output.split()[0]
    dma_uart.run(f"cat /tmp/tx > {PORT}", timeout=120)
    received = uart.take_from_guest(len(data), timeout=30)
    assert len(received) == len(data) and hashlib.md5(received).hexdigest() == digest
