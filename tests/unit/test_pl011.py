from __future__ import annotations

import os
import time

import pytest

from cosim.plugins.pl011 import Pl011

DR, FR, LCR_H, CR, IFLS, IMSC, RIS, MIS, ICR = 0x0, 0x18, 0x2C, 0x30, 0x34, 0x38, 0x3C, 0x40, 0x44
RXFE, TXFF, RXFF, TXFE = 1 << 4, 1 << 5, 1 << 6, 1 << 7
RXIM, TXIM, RTIM = 1 << 4, 1 << 5, 1 << 6
ENABLE = 0x301  # UARTEN | TXE | RXE
FEN_8BIT = 0x70


@pytest.fixture
def uart(make) -> Pl011:
    u = make(Pl011)
    u.write(LCR_H, 1, FEN_8BIT)
    u.write(CR, 2, ENABLE)
    return u


DRIVER_RX_BUDGET = 256  # amba-pl011 takes at most this many characters per RX interrupt
DRIVER_TX_BUDGET = 16  # and writes at most half its FIFO per TX interrupt


def drain(uart: Pl011) -> bytes:
    """What the Linux driver does in its RX interrupt: read DR until the FIFO is empty, or its
    budget is spent (the line may refill the FIFO while it reads)."""
    out = bytearray()
    while len(out) < DRIVER_RX_BUDGET and not uart.read(FR, 2) & RXFE:
        out.append(uart.read(DR, 2) & 0xFF)
    return bytes(out)


def next_load(uart: Pl011, timeout: float = 2.0) -> None:
    """Waits for the line to deliver the next FIFO-load."""
    deadline = time.monotonic() + timeout
    while uart.read(FR, 2) & RXFE:
        assert time.monotonic() < deadline, "no data arrived"
        time.sleep(0.001)


def receive(uart: Pl011, count: int) -> bytes:
    out = bytearray()
    while len(out) < count:
        next_load(uart)
        out += drain(uart)
    return bytes(out)


def test_primecell_identity_is_what_amba_pl011_matches(make):
    u = make(Pl011)
    periph_id = sum(u.read(0xFE0 + 4 * i, 4) << (8 * i) for i in range(4))
    assert periph_id & 0x000FFFFF == 0x00041011
    assert (periph_id >> 20) & 0xF == 3  # revision 3: the driver picks 32-entry FIFOs


def test_reset_state(make):
    u = make(Pl011)
    assert u.read(FR, 2) & (RXFE | TXFE) == RXFE | TXFE
    assert u.read(CR, 2) == 0x300
    assert u.read(IFLS, 1) == 0x12


def test_tx_fifo_fills_and_drains_at_the_line_rate(uart):
    for b in bytes(40):
        uart.write(DR, 2, b)
    assert uart.read(FR, 2) & TXFF  # 32 entries; the 8 written while full were lost
    assert uart.take_from_guest(40, timeout=0.5) == bytes(32)
    assert uart.read(FR, 2) & TXFE


def test_tx_reaches_host_and_raises_tx_interrupt(uart, irqs):
    uart.write(IMSC, 2, TXIM)
    for b in b"hi!":
        uart.write(DR, 2, b)
    assert uart.take_from_guest(3, timeout=1) == b"hi!"
    assert uart.read(RIS, 2) & TXIM
    assert irqs.levels[0]
    uart.write(ICR, 2, TXIM)
    assert not uart.read(MIS, 2) and not irqs.levels[0]


def test_tx_when_disabled_is_dropped(make):
    u = make(Pl011)
    u.write(DR, 2, 0x41)
    assert u.take_from_guest(1, timeout=0.01) == b""


def test_rx_above_trigger_raises_rx_then_timeout_for_the_rest(uart, irqs):
    uart.write(IMSC, 2, RXIM | RTIM)
    uart.send_to_guest(bytes(range(20)))
    next_load(uart)
    assert uart.read(MIS, 2) == RXIM  # 20 >= 16 (half of 32)
    assert irqs.levels[0]
    for _ in range(10):
        uart.read(DR, 2)
    assert uart.read(MIS, 2) == RTIM  # 10 left, nothing more arriving: receive timeout
    assert drain(uart) == bytes(range(10, 20))
    assert uart.read(MIS, 2) == 0 and not irqs.levels[0]


def test_masked_interrupts_do_not_reach_the_line(uart, irqs):
    uart.send_to_guest(b"x")
    next_load(uart)
    assert uart.read(RIS, 2) & RTIM
    assert not irqs.levels.get(0, False)


def test_host_data_waits_while_the_fifo_is_full_without_loss(uart):
    data = os.urandom(1000)
    uart.send_to_guest(data)
    time.sleep(0.05)  # 1000 characters' time at the reset rate: the FIFO fills, the rest waits
    assert uart.read(FR, 2) & RXFF
    assert drain(uart) == data[:32]
    assert receive(uart, 1000 - 32) == data[32:]


def test_line_rate_follows_the_programmed_divisor(uart):
    uart.write(0x24, 2, 13)  # IBRD: 24 MHz / (16 x 13.02) = 115200 baud
    uart.write(0x28, 1, 1)
    assert uart.chars_per_second() == pytest.approx(11520, rel=0.001)
    uart.send_to_guest(bytes(64))
    start = time.monotonic()
    receive(uart, 64)
    assert time.monotonic() - start >= 0.8 * 63 / 11520


def test_fifo_disabled_means_depth_one(make):
    u = make(Pl011)
    u.write(CR, 2, ENABLE)
    u.send_to_guest(b"ab")
    next_load(u)
    assert u.read(FR, 2) & RXFF
    assert receive(u, 2) == b"ab"


def test_receiver_disabled_holds_data_until_enabled(make):
    u = make(Pl011)
    u.write(LCR_H, 1, FEN_8BIT)
    u.send_to_guest(b"late")
    time.sleep(0.05)
    assert u.read(FR, 2) & RXFE
    u.write(CR, 2, ENABLE)
    assert receive(u, 4) == b"late"


def test_loopback(uart):
    uart.write(CR, 2, ENABLE | 1 << 7)
    for b in b"loop":
        uart.write(DR, 2, b)
    assert drain(uart) == b"loop"
    assert uart.take_from_guest(4, timeout=0.01) == b""


def test_interrupt_driven_64k_both_ways(uart, irqs):
    """A driver that only reads on interrupts still gets every byte."""
    uart.write(IMSC, 2, RXIM | RTIM)
    data = os.urandom(64 * 1024)
    uart.send_to_guest(data)
    got = bytearray()
    interrupts = 0
    deadline = time.monotonic() + 20
    while len(got) < len(data) and time.monotonic() < deadline:
        if irqs.levels.get(0):  # the driver reads only when interrupted
            interrupts += 1
            got += drain(uart)
        time.sleep(0.0001)
    assert bytes(got) == data
    # a pass reads at most the driver's budget: however fast the host, that many passes at least
    assert interrupts >= len(data) // DRIVER_RX_BUDGET
    sent = os.urandom(64 * 1024)
    uart.write(IMSC, 2, TXIM)
    written = tx_interrupts = 0
    while written < len(sent):
        budget = written + DRIVER_TX_BUDGET
        while written < min(len(sent), budget) and not uart.read(FR, 2) & TXFF:
            uart.write(DR, 2, sent[written])
            written += 1
        while not irqs.levels.get(0):  # the FIFO is full: wait for it to drain to its trigger
            assert time.monotonic() < deadline
            time.sleep(0.0001)
        tx_interrupts += 1
    assert uart.take_from_guest(len(sent), timeout=5) == sent
    assert tx_interrupts >= len(sent) // DRIVER_TX_BUDGET
