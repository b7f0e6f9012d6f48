from __future__ import annotations

import pytest

from cosim.clock import ManualClock
from cosim.dmarequest import DmaRequestPort
from cosim.peripheral import PeripheralConfig, RecordingIrqSink
from cosim.plugins.pl022 import Pl022
from cosim.spi import SpiDevice

from .test_dma_requests import board_parts, make_board_parts, tick_until_idle  # noqa: F401 - the PL330 fixture
from .test_pl330 import DST, SRC, Asm, ccr, go

CR0, CR1, DR, SR, IMSC, RIS, MIS, ICR, DMACR = 0x00, 0x04, 0x08, 0x0C, 0x14, 0x18, 0x1C, 0x20, 0x24
TFE, TNF, RNE, RFF = 1, 2, 4, 8
RORIM, RTIM, RXIM, TXIM = 1, 2, 4, 8
SPI_BASE = 0x0C050000
BSY = 0x10


def wait_done(spi: Pl022, clock: ManualClock) -> None:
    """The guest's time goes on until the frames are out on the wire (as a driver polls SR.BSY
    before it deselects)."""
    clock.run_until_idle()
    assert not spi.read(SR, 2) & BSY


class Echo(SpiDevice):
    """A device that answers each frame with the previous one (and remembers them all)."""

    def __init__(self, name: str = "echo") -> None:
        super().__init__(name)
        self.seen: list[tuple[int, int]] = []
        self.selects: list[bool] = []

    def select(self, selected: bool) -> None:
        super().select(selected)
        self.selects.append(selected)

    def exchange(self, word: int, bits: int) -> int:
        answer = self.seen[-1][0] if self.seen else 0
        self.seen.append((word, bits))
        return answer


@pytest.fixture
def spi(make) -> Pl022:
    ssp = make(Pl022)
    ssp.write(CR0, 2, 0x7)  # 8-bit frames, SPI
    return ssp


def test_identity(spi):
    periph_id = sum(spi.read(0xFE0 + 4 * i, 4) << (8 * i) for i in range(4))
    assert periph_id & 0xFFFFF == 0x41022


def test_frames_wait_until_the_port_is_enabled_then_loop_back(spi, clock):
    spi.write(CR1, 2, 0x1)  # loopback, not enabled
    for b in (1, 2, 3):
        spi.write(DR, 2, b)
    clock.advance(1_000_000)
    assert spi.read(SR, 2) & (TFE | RNE) == 0
    spi.write(CR1, 2, 0x3)  # enable
    wait_done(spi, clock)
    assert spi.read(SR, 2) & (TFE | RNE) == TFE | RNE
    assert [spi.read(DR, 2) for _ in range(3)] == [1, 2, 3]


def test_frames_go_to_the_attached_device(spi, clock):
    echo = Echo()
    spi.attach(0, echo)  # no chip select wired: tied active
    spi.write(CR0, 2, 0xF)  # 16-bit frames
    spi.write(CR1, 2, 0x2)
    for word in (0x1234, 0xABCD):
        spi.write(DR, 2, word)
    wait_done(spi, clock)
    assert echo.seen == [(0x1234, 16), (0xABCD, 16)]
    assert [spi.read(DR, 2) for _ in range(2)] == [0, 0x1234]


def test_chip_selects_pick_the_device_and_frame_its_commands(spi, clock):
    first, second = Echo("first"), Echo("second")
    spi.attach(0, first)
    spi.attach(1, second)
    spi.gpio_input("cs", 0, True)  # both inactive (high)
    spi.gpio_input("cs", 1, True)
    spi.write(CR1, 2, 0x2)
    spi.write(DR, 2, 0x11)
    wait_done(spi, clock)
    assert spi.read(DR, 2) == 0xFF  # nobody drives MISO: pulled up
    spi.gpio_input("cs", 1, False)  # second selected (active low)
    spi.write(DR, 2, 0x22)
    wait_done(spi, clock)
    spi.gpio_input("cs", 1, True)
    assert first.seen == [] and second.seen == [(0x22, 8)]
    assert second.selects == [False, True, False] and first.selects == [False]
    with pytest.raises(ValueError, match="already has"):
        spi.attach(1, Echo())


def test_frames_wait_while_the_rx_fifo_is_full_and_none_is_lost(spi, clock):
    spi.write(CR1, 2, 0x3)
    for b in range(8):
        spi.write(DR, 2, b)
    wait_done(spi, clock)
    for b in range(8, 12):
        spi.write(DR, 2, b)
    clock.run_until_idle()
    assert spi.read(SR, 2) & RFF and not spi.read(SR, 2) & TFE  # 8 answered, 4 waiting
    first = [spi.read(DR, 2) for _ in range(8)]
    wait_done(spi, clock)
    assert first + [spi.read(DR, 2) for _ in range(4)] == list(range(12))
    assert not spi.read(RIS, 2) & RORIM


def test_writes_to_a_full_tx_fifo_are_lost(spi, clock):
    for b in range(10):  # port disabled: nothing goes out
        spi.write(DR, 2, b)
    spi.write(CR1, 2, 0x3)
    wait_done(spi, clock)
    assert [spi.read(DR, 2) for _ in range(8)] == list(range(8))
    assert not spi.read(SR, 2) & RNE


def test_rx_and_timeout_interrupts(spi, clock):
    spi.write(IMSC, 2, RXIM | RTIM)
    spi.write(CR1, 2, 0x3)
    spi.write(DR, 2, 1)
    assert spi.read(MIS, 2) == 0  # the frame is on the wire
    wait_done(spi, clock)
    assert spi.read(MIS, 2) == RTIM  # one frame waiting, nothing more clocked
    for b in range(3):
        spi.write(DR, 2, b)
    wait_done(spi, clock)
    assert spi.read(MIS, 2) & RXIM


def clocked_dma_ssp(dmac, bus) -> tuple[Pl022, ManualClock]:
    """A PL022 on the bus with its own guest clock, RX and TX requests on lines 2 and 3."""
    clock = ManualClock()
    ssp = Pl022(PeripheralConfig("spi", SPI_BASE, 0x1000, (118,)), bus, RecordingIrqSink(), lock=dmac.lock,
                clock=clock)
    bus.add_device(SPI_BASE, 0x1000, ssp)
    ssp.connect_dma_request(DmaRequestPort("rx", dmac, 2))
    ssp.connect_dma_request(DmaRequestPort("tx", dmac, 3))
    return ssp, clock


def test_dma_moves_frames_both_ways_through_loopback(board_parts):  # noqa: F811
    dmac, _, bus, _ = board_parts
    ssp, clock = clocked_dma_ssp(dmac, bus)
    ssp.write(CR0, 2, 0x7)
    ssp.write(CR1, 2, 0x3)
    ssp.write(DMACR, 2, 0x3)
    data = bytes(range(64))
    bus.write("cpu", SRC, data)

    def slave_program(rx: bool) -> bytes:  # what pl330_prep_slave_sg emits, bursts of 4 bytes
        peri = 2 if rx else 3
        cfg = ccr(1, 4, src_inc=not rx, dst_inc=rx)
        asm = Asm().mov("CCR", cfg).mov("SAR", SPI_BASE + DR if rx else SRC)
        asm.mov("DAR", DST if rx else SPI_BASE + DR).raw(0x35, peri << 3)
        start = asm.lp(1, 16)
        asm.raw(0x32, peri << 3)  # DMAWFPB
        if rx:
            asm.raw(0x27, peri << 3).st("B")  # DMALDPB, DMASTB
        else:
            asm.ld("B").raw(0x2B, peri << 3)  # DMALDB, DMASTPB
        return bytes(asm.lpend(1, start).end().code)

    go(dmac, 0, slave_program(rx=True), bus)  # Linux starts RX before TX
    bus.write("cpu", 0x40001800, slave_program(rx=False))
    insn = bytes([0xA0, 1]) + (0x40001800).to_bytes(4, "little")
    dmac.write(0xD08, 4, insn[0] << 16 | insn[1] << 24)
    dmac.write(0xD0C, 4, int.from_bytes(insn[2:6], "little"))
    dmac.write(0xD04, 4, 0)
    clock.run_until_idle()  # 64 frames on the wire, each asking for the DMA as it ends
    assert bus.read("cpu", DST, 64) == data
    assert ssp.frames == 64 and bus.width_mismatches == []


def test_a_frame_takes_its_time_on_the_wire(spi, clock):
    """SSPCLK 24 MHz / (CPSDVSR 240 x (1 + SCR 9)) = 10 kHz: 8 bits take 0.8 ms, 4 frames 3.2 ms,
    back to back: no sooner (what spi-loopback-test checks) and no later."""
    spi.write(0x10, 2, 240)  # CPSR
    spi.write(CR0, 2, 9 << 8 | 0x7)  # SCR 9, 8-bit frames
    spi.write(CR1, 2, 0x3)  # loopback, enabled
    start = clock.now_ns
    for b in (1, 2, 3, 4):
        spi.write(DR, 2, b)
    clock.advance(3_199_999)
    assert spi.read(SR, 2) & BSY and len(spi.rx) == 3
    wait_done(spi, clock)
    assert clock.now_ns - start == 3_200_000
    assert [spi.read(DR, 2) for _ in range(4)] == [1, 2, 3, 4]


def test_the_wire_goes_on_without_register_accesses(spi, clock):
    spi.write(0x10, 2, 240)
    spi.write(CR0, 2, 9 << 8 | 0x7)  # 10 kHz
    spi.write(CR1, 2, 0x3)
    spi.write(DR, 2, 0x5A)
    clock.advance(800_000)  # no access meanwhile: scheduled work completes the frame
    assert spi.regs.RIS.value & RTIM and list(spi.rx) == [0x5A]


def test_the_wire_ticks_only_where_an_output_changes(spi, clock):
    """Eight frames at 10 kHz clocked with no access in between: the model asks for ticks at
    the RX FIFO reaching 4 (RX interrupt; TX at 4, too) and 8 (full: the wire stops), not at
    every frame's end; each frame still ends at its exact time."""
    spi.write(0x10, 2, 240)
    spi.write(CR0, 2, 9 << 8 | 0x7)
    spi.write(CR1, 2, 0x3)
    for b in range(8):
        spi.write(DR, 2, b)
    ticks = []
    while (when := spi.scheduled_work.next_deadline()) is not None:
        clock.run_until(when)
        ticks.append((clock.now_ns, len(spi.rx)))
    assert ticks == [(3_200_000, 4), (6_400_000, 8)]
    assert spi.frames == 8 and list(spi.rx) == list(range(8))


def single_beat_program(rx: bool, length: int) -> bytes:
    """What Linux 6.12's pl330_prep_slave_sg emits for spi-pl022's 1-frame bursts: per frame a
    DMAFLUSHP, a DMAWFPS and a single load and store, in nested loops of up to 256; an event at
    the end."""
    peri = 2 if rx else 3
    asm = Asm().mov("CCR", ccr(1, 1, src_inc=not rx, dst_inc=rx))
    asm.mov("SAR", SPI_BASE + DR if rx else SRC).mov("DAR", DST if rx else SPI_BASE + DR)
    outer = asm.lp(0, length // 256)
    inner = asm.lp(1, 256)
    asm.raw(0x35, peri << 3).raw(0x30, peri << 3)  # DMAFLUSHP, DMAWFPS
    if rx:
        asm.raw(0x25, peri << 3).st("S")  # DMALDPS, DMASTS
    else:
        asm.ld("S").raw(0x29, peri << 3)  # DMALDS, DMASTPS
    asm.lpend(1, inner).lpend(0, outer)
    return bytes(asm.sev(0 if rx else 1).end().code)


def run_single_beat_dma(length: int) -> tuple[int, int, bytes]:
    """A 12 MHz loopback transfer by single-beat DMA both ways: the ticks it took, when the RX
    channel signalled its end, what arrived."""
    dmac, _, bus, _ = make_board_parts()
    ssp, clock = clocked_dma_ssp(dmac, bus)
    ssp.write(0x10, 2, 2)  # CPSR 2, SCR 0: 24 MHz / 2 = 12 MHz
    ssp.write(CR0, 2, 0x7)
    ssp.write(CR1, 2, 0x3)
    ssp.write(DMACR, 2, 0x3)
    bus.write("cpu", SRC, bytes((i * 7) & 0xFF for i in range(length)))
    dmac.write(0x020, 4, 0x3)  # INTEN: events 0 (RX) and 1 (TX) interrupt
    go(dmac, 0, single_beat_program(rx=True, length=length), bus)
    bus.write("cpu", 0x40001800, single_beat_program(rx=False, length=length))
    insn = bytes([0xA0, 1]) + (0x40001800).to_bytes(4, "little")
    dmac.write(0xD08, 4, insn[0] << 16 | insn[1] << 24)
    dmac.write(0xD0C, 4, int.from_bytes(insn[2:6], "little"))
    dmac.write(0xD04, 4, 0)
    ticks, rx_done = tick_until_idle(ssp, clock, dmac)
    assert rx_done is not None and bus.width_mismatches == []
    return ticks, rx_done, bus.read("cpu", DST, length)


def test_single_beat_dma_at_12_mhz_runs_on_standing_orders_with_the_same_result(monkeypatch):
    """spi-pl022's 1-frame DMA at 12 MHz: the channels' standing orders let the wire run a
    FIFO's worth per step and tick only where an order ends (every 256 frames, the inner
    loop); the data and the end time are those of serving frame by frame."""
    length = 1024
    ticks, done_ns, data = run_single_beat_dma(length)
    assert data == bytes((i * 7) & 0xFF for i in range(length))
    assert done_ns == length * 666  # the last frame's end: 8 bits at 12 MHz take 666 ns (in whole ns)
    assert ticks <= 3 * length // 256 + 4
    monkeypatch.setattr("cosim.plugins.pl330.Pl330.standing_order", lambda self, line, burst=False: 0)
    slow_ticks, slow_done_ns, slow_data = run_single_beat_dma(length)
    assert (slow_done_ns, slow_data) == (done_ns, data) and slow_ticks >= length
