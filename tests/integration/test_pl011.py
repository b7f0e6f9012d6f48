"""Linux's upstream amba-pl011 driver against the Python PL011 model."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

SIZE = 64 * 1024
PORT = "/dev/ttyAMA1"
# The interrupt counts the hardware gives a CPU that answers within a character time, as the
# guest's does under virtual time however slow the host: the RX interrupt comes at the trigger
# level amba-pl011 sets (IFLS RX 4/8: 16 of 32), and its handler empties the FIFO; for TX,
# start_tx fills the FIFO (32) and each interrupt (TX 4/8: at 16 left) refills it with 16.
RX_TRIGGER = TX_REFILL = 16
FIFO_DEPTH = 32


def uart_interrupts(board) -> int:
    """The interrupt count of the Python UART (GIC SPI 112 = GIC interrupt 144)."""
    table = board.run("cat /proc/interrupts").output
    match = re.search(r"^\s*\d+:\s+(\d+)\s+GICv3\s+144 Level", table, re.M)
    return int(match.group(1)) if match else 0


@pytest.fixture(scope="module")
def uart_board(module_board):
    assert "ttyAMA1 at MMIO 0xc000000" in module_board.kernel_log.text()
    # 115200 baud: 64 KiB take 5.7 s of line time each way, an interrupt every FIFO-load.
    module_board.run(f"stty -F {PORT} 115200 raw -echo -ixon -ixoff")
    # Hold the port open in the console's shell so the driver keeps its interrupt (and its
    # count) between the tests' own opens.
    module_board.run(f"exec 4<>{PORT}")
    return module_board


def test_upstream_driver_binds_the_model(uart_board):
    log = uart_board.kernel_log.text()
    assert re.search(r"c000000\.uart1: ttyAMA1 at MMIO 0xc000000 .* is a PL011 rev3", log)


def test_64k_host_to_guest_without_loss(uart_board):
    uart = uart_board.peripheral("uart1")
    data = os.urandom(SIZE)
    before = uart_interrupts(uart_board)
    # The reader opens the port, says so with one byte, then reads: data sent before a port is
    # open is lost on real hardware too (the driver drains the FIFO when it starts up).
    uart_board.run(f"(exec 3<>{PORT}; printf R >&3; head -c {SIZE} <&3 > /tmp/rx) & echo $! > /tmp/rx.pid")
    assert uart.take_from_guest(1, timeout=10) == b"R"
    uart.send_to_guest(data)
    uart_board.run("wait $(cat /tmp/rx.pid)", timeout=120)
    digest = uart_board.run("md5sum /tmp/rx").output.split()[0]
    assert digest == hashlib.md5(data).hexdigest()
    assert uart_interrupts(uart_board) - before == SIZE // RX_TRIGGER


def test_64k_guest_to_host_without_loss(uart_board):
    uart = uart_board.peripheral("uart1")
    before = uart_interrupts(uart_board)
    uart_board.run(f"head -c {SIZE} /dev/urandom > /tmp/tx")
    digest = uart_board.run("md5sum /tmp/tx").output.split()[0]
    uart_board.run(f"cat /tmp/tx > {PORT}", timeout=120)
    received = uart.take_from_guest(SIZE, timeout=30)
    assert len(received) == SIZE
    assert hashlib.md5(received).hexdigest() == digest
    assert uart_interrupts(uart_board) - before == (SIZE - FIFO_DEPTH) // TX_REFILL
    assert uart.take_from_guest(1, timeout=0.2) == b""  # nothing beyond what was sent
