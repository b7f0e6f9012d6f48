from __future__ import annotations

import os

import pytest

from cosim.clock import ManualClock
from cosim.dmarequest import DmaRequestPort
from cosim.peripheral import PeripheralConfig, RecordingIrqSink
from cosim.plugins.pl011 import Pl011

from .test_dma_requests import make_board_parts, tick_until_idle
from .test_pl330 import SRC, Asm, ccr, go

DR, FR, LCR_H, CR, IFLS, IMSC, RIS, MIS, ICR = 0x0, 0x18, 0x2C, 0x30, 0x34, 0x38, 0x3C, 0x40, 0x44
BUSY, RXFE, TXFF, RXFF, TXFE = 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7
RXIM, TXIM, RTIM = 1 << 4, 1 << 5, 1 << 6
ENABLE = 0x301  # UARTEN | TXE | RXE
FEN_8BIT = 0x70


IBRD, FBRD = 0x24, 0x28
CHAR_NS = 86_771  # 10 bits at 24 MHz / (16 x 13.015625) = 115246 baud


@pytest.fixture
def uart(make) -> Pl011:
    u = make(Pl011)
    u.write(IBRD, 2, 13)
    u.write(FBRD, 1, 1)
    u.write(LCR_H, 1, FEN_8BIT)
    u.write(CR, 2, ENABLE)
    return u


DRIVER_RX_BUDGET = 256  # amba-pl011 takes at most this many characters per RX interrupt
DRIVER_TX_BUDGET = 16  # and writes at most half its FIFO per TX interrupt


def drain(uart: Pl011) -> bytes:
    """What the Linux driver does in its RX interrupt: read DR until the FIFO is empty, or its
    budget is spent."""
    out = bytearray()
    while len(out) < DRIVER_RX_BUDGET and not uart.read(FR, 2) & RXFE:
        out.append(uart.read(DR, 2) & 0xFF)
    return bytes(out)


def next_tick(uart: Pl011, clock: ManualClock) -> bool:
    """Moves the guest's time to the model's next scheduled work and runs it; False if none."""
    when = uart.scheduled_work.next_deadline()
    if when is None:
        return False
    clock.run_until(max(when, clock.now_ns))
    return True


def receive(uart: Pl011, clock: ManualClock, count: int) -> bytes:
    out = bytearray(drain(uart))
    while len(out) < count:
        assert next_tick(uart, clock), f"the line stopped after {len(out)} of {count} bytes"
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


def test_tx_fifo_fills_and_drains_at_the_line_rate(uart, clock):
    for b in bytes(40):
        uart.write(DR, 2, b)
    assert uart.read(FR, 2) & TXFF  # 32 entries; the 8 written while full were lost
    clock.advance(32 * CHAR_NS - 1)
    assert uart.take_from_guest(40, timeout=0) == bytes(31) and uart.read(FR, 2) & BUSY
    clock.advance(1)
    assert uart.take_from_guest(40, timeout=0) == bytes(1)
    assert uart.read(FR, 2) & TXFE and not uart.read(FR, 2) & BUSY


def test_tx_reaches_host_and_raises_tx_interrupt(uart, irqs, clock):
    uart.write(IMSC, 2, TXIM)
    uart.write(ICR, 2, TXIM)
    for b in b"hi!" * 10:  # 30: above the trigger (16)
        uart.write(DR, 2, b)
    assert not uart.read(RIS, 2) & TXIM
    clock.advance(14 * CHAR_NS - 1)
    assert not irqs.levels.get(0)
    clock.advance(1)  # 14 characters gone: 16 left, the trigger level
    assert uart.read(RIS, 2) & TXIM and irqs.levels[0]
    uart.write(ICR, 2, TXIM)
    assert not uart.read(MIS, 2) and not irqs.levels[0]
    clock.advance(16 * CHAR_NS)
    assert uart.take_from_guest(30, timeout=0) == b"hi!" * 10


def test_tx_when_disabled_is_dropped(make, clock):
    u = make(Pl011)
    u.write(DR, 2, 0x41)
    clock.advance(10**9)
    assert u.take_from_guest(1, timeout=0) == b""


def test_rx_raises_rx_at_the_trigger_then_the_timeout_32_bits_after_the_last(uart, irqs, clock):
    uart.write(IMSC, 2, RXIM | RTIM)
    uart.send_to_guest(bytes(range(20)))
    clock.advance(0)  # the harness's bytes enter at the guest's time now: the first is a char later
    clock.advance(16 * CHAR_NS - 1)
    assert not irqs.levels.get(0) and uart.read(FR, 2) & RXFE == 0
    clock.advance(1)
    assert uart.read(MIS, 2) == RXIM and irqs.levels[0]  # 16: half of 32
    for _ in range(10):
        uart.read(DR, 2)
    assert uart.read(MIS, 2) == 0 and not irqs.levels[0]  # below the trigger again
    clock.advance(4 * CHAR_NS)  # all 20 are in
    timeout_ns = round(32 * CHAR_NS / 10)
    clock.advance(timeout_ns - 1)
    assert uart.read(MIS, 2) == 0
    clock.advance(1)
    assert uart.read(MIS, 2) == RTIM and irqs.levels[0]  # receive timeout
    assert drain(uart) == bytes(range(10, 20))
    assert uart.read(MIS, 2) == 0 and not irqs.levels[0]


def test_masked_interrupts_do_not_reach_the_line(uart, irqs, clock):
    uart.send_to_guest(b"x")
    clock.advance(10 * CHAR_NS)
    assert uart.read(RIS, 2) & RTIM
    assert not irqs.levels.get(0, False)


def test_host_data_waits_while_the_fifo_is_full_without_loss(uart, clock):
    data = os.urandom(1000)
    uart.send_to_guest(data)
    clock.advance(1000 * CHAR_NS)  # the FIFO fills, the rest waits
    assert uart.read(FR, 2) & RXFF
    assert drain(uart) == data[:32]
    held_until = clock.now_ns
    clock.advance(CHAR_NS - 1)
    assert uart.read(FR, 2) & RXFE  # the next one takes a whole character time from now
    clock.advance(1)
    assert not uart.read(FR, 2) & RXFE
    assert clock.now_ns == held_until + CHAR_NS
    assert receive(uart, clock, 1000 - 32) == data[32:]


def test_line_rate_follows_the_programmed_divisor(uart, clock):
    assert uart.char_ns() == CHAR_NS
    uart.write(IBRD, 2, 1)  # 1.5 Mbaud
    uart.write(FBRD, 1, 0)
    assert uart.char_ns() == 6_667
    uart.send_to_guest(bytes(64))
    clock.advance(0)
    start = clock.now_ns
    receive(uart, clock, 64)
    assert clock.now_ns == start + 64 * 6_667  # the last arrives 64 character times later


def test_fifo_disabled_means_depth_one(make, clock):
    u = make(Pl011)
    u.write(CR, 2, ENABLE)
    u.send_to_guest(b"ab")
    clock.advance(10**6)
    assert u.read(FR, 2) & RXFF
    assert receive(u, clock, 2) == b"ab"


def test_receiver_disabled_holds_data_until_enabled(make, clock):
    u = make(Pl011)
    u.write(LCR_H, 1, FEN_8BIT)
    u.send_to_guest(b"late")
    clock.advance(10**8)
    assert u.read(FR, 2) & RXFE
    u.write(CR, 2, ENABLE)
    assert receive(u, clock, 4) == b"late"


def test_loopback(uart, clock):
    uart.write(CR, 2, ENABLE | 1 << 7)
    for b in b"loop":
        uart.write(DR, 2, b)
    assert drain(uart) == b"loop"
    clock.advance(10**8)
    assert uart.take_from_guest(4, timeout=0) == b""


def test_interrupt_driven_16k_both_ways_with_the_hardwares_interrupt_counts(uart, irqs, clock):
    """A driver that only reads on interrupts gets every byte, one RX interrupt per trigger
    level's worth and one TX interrupt per half FIFO: the counts the hardware gives whatever
    the host's speed; the model asks for few ticks (not one per character)."""
    uart.write(IMSC, 2, RXIM | RTIM)
    data = os.urandom(16 * 1024)
    uart.send_to_guest(data)
    got = bytearray()
    interrupts = ticks = 0
    while len(got) < len(data):
        assert next_tick(uart, clock)
        ticks += 1
        if irqs.levels.get(0):  # the driver reads only when interrupted
            interrupts += 1
            got += drain(uart)
    assert bytes(got) == data
    assert interrupts == len(data) // 16
    assert ticks <= interrupts + 1  # the host's bytes enter at a tick of their own
    sent = os.urandom(16 * 1024)
    uart.write(IMSC, 2, TXIM)
    uart.write(ICR, 2, TXIM)
    written = 0
    while written < len(sent) and not uart.read(FR, 2) & TXFF:  # start_tx fills the FIFO
        uart.write(DR, 2, sent[written])
        written += 1
    tx_interrupts = ticks = 0
    while uart.read(IMSC, 2) & TXIM:
        assert next_tick(uart, clock)
        ticks += 1
        if not irqs.levels.get(0):
            continue
        tx_interrupts += 1
        if written == len(sent):
            uart.write(IMSC, 2, 0)  # nothing left: the driver stops TX
        for b in sent[written:written + DRIVER_TX_BUDGET]:
            uart.write(DR, 2, b)
        written = min(len(sent), written + DRIVER_TX_BUDGET)
    clock.run_until_idle()
    assert uart.take_from_guest(len(sent), timeout=0) == sent
    assert tx_interrupts == 1 + (len(sent) - 32) // DRIVER_TX_BUDGET
    assert ticks == tx_interrupts


def test_a_uart_clock_of_its_own_reaches_3_mbaud(make):
    u = make(Pl011, clock_hz=48_000_000)
    u.write(IBRD, 2, 1)  # what amba-pl011 programs for 3000000 baud at 48 MHz
    u.write(FBRD, 1, 0)
    assert u.baud() == 3_000_000 and u.char_ns() == 3_333


UART_BASE = 0x0C0B0000
DMACR = 0x48


def tx_burst_program(length: int) -> bytes:
    """What Linux 6.12's pl330_prep_slave_sg emits for amba-pl011's TX (bursts of 16 bytes):
    per burst a DMAFLUSHP, a DMAWFPB, a burst load and a burst store to DR; an event at the end."""
    asm = Asm().mov("CCR", ccr(1, 16, src_inc=True, dst_inc=False)).mov("SAR", SRC)
    asm.mov("DAR", UART_BASE + DR)
    start = asm.lp(1, length // 16)
    asm.raw(0x35, 1 << 3).raw(0x32, 1 << 3).ld("B").raw(0x2B, 1 << 3)  # FLUSHP, WFPB, LDB, STPB
    return bytes(asm.lpend(1, start).sev(0).end().code)


def run_tx_dma(length: int) -> tuple[int, int, bytes]:
    """A TX DMA transfer at 3 Mbaud, the TX interrupt masked as amba-pl011 has it: the ticks it
    took, when the channel signalled its end, what went out on the line."""
    dmac, _, bus, _ = make_board_parts()
    clock = ManualClock()
    uart = Pl011(PeripheralConfig("uart", UART_BASE, 0x1000, (33,), {"clock_hz": 48_000_000}), bus,
                 RecordingIrqSink(), lock=dmac.lock, clock=clock)
    bus.add_device(UART_BASE, 0x1000, uart)
    uart.connect_dma_request(DmaRequestPort("tx", dmac, 1))
    uart.write(IBRD, 2, 1)
    uart.write(FBRD, 1, 0)
    uart.write(LCR_H, 1, FEN_8BIT)
    uart.write(CR, 2, ENABLE)
    uart.write(DMACR, 1, 0x2)  # TXDMAE
    data = bytes((i * 13) & 0xFF for i in range(length))
    bus.write("cpu", SRC, data)
    dmac.write(0x020, 4, 0x1)  # INTEN: event 0 interrupts
    go(dmac, 0, tx_burst_program(length), bus)
    ticks, done = tick_until_idle(uart, clock, dmac)
    assert done is not None
    return ticks, done, uart.transmitted.take(length, timeout=0)


def test_tx_dma_in_bursts_refills_as_the_line_runs_with_the_same_result(monkeypatch):
    """A standing order of bursts lets the line refill the FIFO at its watermark as it runs,
    ticking where the order ends instead of twice a burst; the bytes on the line and the time
    the channel ends are those of serving burst by burst on ticks."""
    length = 4096
    ticks, done_ns, sent = run_tx_dma(length)
    assert sent == bytes((i * 13) & 0xFF for i in range(length))
    # two bursts fill the empty FIFO at once; each later one goes in as it drains to 16, the
    # last when 4096 - 32 characters have left, 3333 ns each
    assert done_ns == (length - 32) * 3_333
    assert ticks <= 8  # the first refill, the order's end, the last 32 characters draining
    monkeypatch.setattr("cosim.plugins.pl330.Pl330.standing_order", lambda self, line, burst=False: 0)
    slow_ticks, slow_done_ns, slow_sent = run_tx_dma(length)
    assert (slow_done_ns, slow_sent) == (done_ns, sent) and slow_ticks >= length // 16
