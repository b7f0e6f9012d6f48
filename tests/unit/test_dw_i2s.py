"""The DesignWare I2S model against an in-memory bus: FIFOs, DMA requests, the wire."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import pytest

from cosim.clock import ManualClock
from cosim.dmarequest import DmaRequestPort
from cosim.peripheral import PeripheralConfig, RecordingIrqSink
from cosim.plugins.dw_i2s import FIFO_DEPTH, DwI2s

from .test_dma_requests import board_parts  # noqa: F401 - the PL330 fixture
from .test_pl330 import SRC, Asm, ccr, go

RXDA, RXFO, TXFE, TXFO = DwI2s.RXDA, DwI2s.RXFO, DwI2s.TXFE, DwI2s.TXFO  # the ISR's fields

IER, IRER, ITER, CER, CCR, TXFFR = 0x000, 0x004, 0x008, 0x00C, 0x010, 0x018
LTHR, RTHR, TCR, ISR, ROR, RFCR, TFCR = 0x020, 0x024, 0x034, 0x038, 0x040, 0x048, 0x04C
RXDMA, TXDMA, COMP1, DMACR = 0x1C0, 0x1C8, 0x1F4, 0x200
I2S_BASE = 0x0C0A0000


def write_wav(path: Path, channels: int, frames: bytes) -> Path:
    """A 16-bit 48 kHz WAV file of ``frames``."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(48_000)
        w.writeframes(frames)
    return path


@pytest.fixture
def i2s(make) -> DwI2s:
    return make(DwI2s)


def test_component_parameters_say_what_the_driver_reads(i2s):
    comp1 = i2s.read(COMP1, 4)
    assert 1 << (1 + ((comp1 >> 2) & 3)) == FIFO_DEPTH
    assert comp1 & (1 << 4)  # master: it drives the clocks
    assert comp1 & (1 << 5) and comp1 & (1 << 6)  # transmitter and receiver
    assert (comp1 >> 16) & 7 == 1  # 16-bit words: S16_LE


def test_sample_rate_follows_the_clock_and_word_select_length(make):
    i2s = make(DwI2s, clock_hz=1_536_000)
    assert i2s.sample_rate == 48_000  # WSS 0: 16 clocks a word
    i2s.write(CCR, 4, 2 << 3)  # WSS 2: 32 clocks a word
    assert i2s.sample_rate == 24_000


def test_frames_go_out_left_then_right_and_underruns_send_silence(i2s):
    i2s.write(IER, 4, 1)
    i2s.write(ITER, 4, 1)
    i2s.write(LTHR, 4, 0x1111)
    i2s.write(RTHR, 4, 0x2222)
    with i2s.lock:
        i2s._frame()
        i2s._frame()  # nothing in the FIFO: an underrun
    assert bytes(i2s.played) == struct.pack("<hhhh", 0x1111, 0x2222, 0, 0)
    assert i2s.underruns == 1


def test_a_full_tx_fifo_loses_the_write_and_says_so(i2s):
    for n in range(FIFO_DEPTH + 1):
        i2s.write(TXDMA, 4, n)
        i2s.write(TXDMA, 4, n)
    assert i2s.tx_overruns == 1 and i2s.read(ISR, 4) & TXFO


def test_capture_from_a_wav_and_receive_overrun(make, tmp_path):
    source = write_wav(tmp_path / "in.wav", 2, b"".join(struct.pack("<hh", n, -n) for n in range(1, 40)))
    i2s = make(DwI2s, capture_wav=str(source))
    i2s.write(IER, 4, 1)
    i2s.write(IRER, 4, 1)
    i2s.write(RFCR, 4, 7)
    with i2s.lock:
        for _ in range(FIFO_DEPTH + 2):
            i2s._frame()
    assert i2s.overruns == 2 and i2s.read(ISR, 4) & (RXFO | RXDA) == RXFO | RXDA
    i2s.read(ROR, 4)  # reading ROR clears the overrun
    assert not i2s.read(ISR, 4) & RXFO
    assert [i2s.read(RXDMA, 2) for _ in range(4)] == [1, 0xFFFF, 2, 0xFFFE]


def test_a_capture_wav_must_be_16_bit_stereo(make, tmp_path):
    source = write_wav(tmp_path / "mono.wav", 1, b"\0\0")
    with pytest.raises(ValueError, match="needs 16-bit stereo"):
        make(DwI2s, capture_wav=str(source))


def test_the_wav_of_the_wire(i2s):
    i2s.write(IER, 4, 1)
    i2s.write(ITER, 4, 1)
    i2s.write(TXDMA, 4, 5)
    i2s.write(TXDMA, 4, 6)
    with i2s.lock:
        i2s._frame()
    with wave.open(io.BytesIO(i2s.wav())) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 48_000)
        assert w.readframes(1) == struct.pack("<hh", 5, 6)


def test_frames_leave_at_the_sample_clocks_exact_times(i2s, clock):
    clock.advance(5_000)
    for offset, value in ((IER, 1), (ITER, 1), (CER, 1)):  # the clock starts at 5 us
        i2s.write(offset, 4, value)
    for n in range(1, 4):
        i2s.write(LTHR, 4, n)
        i2s.write(RTHR, 4, n)
    clock.run_until(5_000 + 20_833)  # frame 1 is due at 5 us + ceil(1/48 kHz) = 20834 ns
    i2s.read(ISR, 4)
    assert len(i2s.played) == 0
    clock.run_until(5_000 + 20_834)
    i2s.read(ISR, 4)
    assert len(i2s.played) == 4
    clock.run_until(5_000 + 62_500)  # frame 3 at exactly 3/48000 s
    i2s.read(ISR, 4)
    assert bytes(i2s.played) == struct.pack("<6h", 1, 1, 2, 2, 3, 3) and i2s.underruns == 0
    clock.run_until(5_000 + 83_334)  # frame 4: the FIFO is empty
    i2s.read(ISR, 4)
    assert i2s.underruns == 1


def test_an_underrun_is_a_frame_due_with_the_fifo_empty_however_short_the_delay(i2s, clock):
    """The FIFO's 16 frames (333 us) are all the slack a driver gets: no host-side grace."""
    for offset, value in ((IER, 1), (ITER, 1), (CER, 1)):
        i2s.write(offset, 4, value)
    for _ in range(FIFO_DEPTH):
        i2s.write(TXDMA, 4, 1)
        i2s.write(TXDMA, 4, 1)
    clock.run_until(i2s.frame_time(FIFO_DEPTH))
    i2s.read(ISR, 4)
    assert i2s.underruns == 0
    clock.run_until(i2s.frame_time(FIFO_DEPTH + 1))  # one frame time late with the refill
    i2s.write(TXDMA, 4, 2)
    assert i2s.underruns == 1


def test_cyclic_dma_keeps_the_fifo_fed_in_bursts(board_parts):  # noqa: F811
    dmac, _, bus, _ = board_parts
    i2s = DwI2s(PeripheralConfig("i2s", I2S_BASE, 0x1000, ()), bus, RecordingIrqSink(), lock=dmac.lock)
    bus.add_device(I2S_BASE, 0x1000, i2s)
    i2s.connect_dma_request(DmaRequestPort("rx", dmac, 0))
    i2s.connect_dma_request(DmaRequestPort("tx", dmac, 1))
    samples = struct.pack("<64h", *range(64))  # 32 frames
    bus.write("cpu", SRC, samples)
    for offset, value in ((TCR, 2), (TFCR, 7), (DMACR, 1 << 17), (IER, 1), (ITER, 1)):
        i2s.write(offset, 4, value)
    # what pl330_prep_dma_cyclic emits for a period: bursts of 16 two-byte beats per request
    asm = Asm().mov("CCR", ccr(2, 16, src_inc=True, dst_inc=False)).mov("SAR", SRC)
    asm.mov("DAR", I2S_BASE + TXDMA).raw(0x35, 1 << 3)
    start = asm.lp(0, 4)
    asm.raw(0x32, 1 << 3).ld("B").raw(0x2B, 1 << 3)  # DMAWFPB, DMALDB, DMASTPB
    go(dmac, 0, bytes(asm.lpend(0, start).end().code), bus)
    assert len(i2s.tx) == 8  # one burst; the next waits until the FIFO is at TFCR (7) again
    with i2s.lock:
        for _ in range(32):
            i2s._frame()
    assert bytes(i2s.played) == samples and i2s.underruns == 0
    assert bus.width_mismatches == []
    assert i2s.read(ISR, 4) & TXFE


def clocked_tx_i2s(dmac, bus) -> tuple[DwI2s, ManualClock]:
    """An I2S on the bus with its own guest clock, TX requests on line 1 of ``dmac``."""
    clock = ManualClock()
    i2s = DwI2s(PeripheralConfig("i2s", I2S_BASE, 0x1000, ()), bus, RecordingIrqSink(),
                lock=dmac.lock, clock=clock)
    bus.add_device(I2S_BASE, 0x1000, i2s)
    i2s.connect_dma_request(DmaRequestPort("tx", dmac, 1))
    return i2s, clock


def test_cyclic_dma_on_the_sample_clock_costs_a_tick_per_standing_order(board_parts):  # noqa: F811
    """The clock runs on its own for 1600 frames while a looping DMA program feeds it: every
    frame is played on time, the refills at TFCR happen as the wire runs, and the model asks
    for a tick only where the channel's standing order of bursts ends."""
    dmac, _, bus, _ = board_parts
    i2s, clock = clocked_tx_i2s(dmac, bus)
    ring = struct.pack("<64h", *range(64))  # 32 frames, played round and round
    bus.write("cpu", SRC, ring)
    asm = Asm().mov("CCR", ccr(2, 16, src_inc=True, dst_inc=False))
    outer = len(asm.code)  # DMALPFE: a loop without a counter
    asm.mov("SAR", SRC).mov("DAR", I2S_BASE + TXDMA).raw(0x35, 1 << 3)
    start = asm.lp(0, 4)
    asm.raw(0x32, 1 << 3).ld("B").raw(0x2B, 1 << 3)  # DMAWFPB, DMALDB, DMASTPB
    asm.lpend(0, start)
    go(dmac, 0, bytes(asm.lpend(0, outer, forever=True).end().code), bus)
    for offset, value in ((TCR, 2), (TFCR, 7), (DMACR, 1 << 17), (IER, 1), (ITER, 1), (CER, 1)):
        i2s.write(offset, 4, value)
    ticks = 0
    while i2s.frames_clocked < 1600:
        when = i2s.scheduled_work.next_deadline()
        assert when is not None
        clock.run_until(when)
        ticks += 1
    assert bytes(i2s.played[:1600 * 4]) == ring * 50 and i2s.underruns == 0
    # one at the start, one at the first refill (which shows a burst is 8 frames), then one
    # where each standing order ends: the inner loop's 4 bursts, 32 frames
    assert ticks == 2 + 1600 // 32


def test_beats_wider_than_a_sample_are_reported(board_parts):  # noqa: F811
    dmac, _, bus, _ = board_parts
    i2s = DwI2s(PeripheralConfig("i2s", I2S_BASE, 0x1000, ()), bus, RecordingIrqSink(), lock=dmac.lock)
    bus.add_device(I2S_BASE, 0x1000, i2s)
    i2s.write(TCR, 4, 2)  # 16-bit words
    bus.write("pdma", I2S_BASE + TXDMA, bytes(8), beat=4, increment=False)
    assert [str(m) for m in bus.width_mismatches] == [
        f"DMA width mismatch: pdma wrote 4-byte beats at {I2S_BASE + TXDMA:#x}, a FIFO register "
        "of 16-bit entries: the driver's DMA slave configuration (addr_width) does not fit the device"]


def test_a_dma_restarted_after_an_underrun_refills_a_fifo_that_goes_on_playing(board_parts):  # noqa: F811
    """The driver restarts DMA late, a period after the FIFO ran dry: the bursts the DMAC writes
    then, from the driver's DMAGO and not from a frame of the model's own, must set the wire's
    next tick too — else the FIFO sits full and the wire stands still."""
    dmac, _, bus, _ = board_parts
    i2s, clock = clocked_tx_i2s(dmac, bus)
    samples = struct.pack("<64h", *range(64))  # one 32-frame period
    bus.write("cpu", SRC, samples)
    for offset, value in ((TCR, 2), (TFCR, 7), (DMACR, 1 << 17), (IER, 1), (ITER, 1), (CER, 1)):
        i2s.write(offset, 4, value)
    clock.run_until(i2s.frame_time(10))
    i2s.read(ISR, 4)
    assert i2s.underruns == 10 and not i2s.tx
    asm = Asm().mov("CCR", ccr(2, 16, src_inc=True, dst_inc=False)).mov("SAR", SRC)
    asm.mov("DAR", I2S_BASE + TXDMA).raw(0x35, 1 << 3)
    start = asm.lp(0, 4)
    asm.raw(0x32, 1 << 3).ld("B").raw(0x2B, 1 << 3)  # DMAWFPB, DMALDB, DMASTPB
    go(dmac, 0, bytes(asm.lpend(0, start).end().code), bus)
    assert len(i2s.tx) == 8  # a burst: the next waits for the FIFO at TFCR (7) again
    while (when := i2s.scheduled_work.next_deadline()) is not None:
        clock.run_until(when)  # the bursts, each as the FIFO drains to TFCR
    assert i2s.frames_clocked == 10 + 32 - 7  # then the FIFO sits at TFCR: nothing changes
    clock.run_until(i2s.frame_time(10 + 32))
    i2s.read(ISR, 4)  # the last 7 frames went out, as the driver sees when it looks
    assert bytes(i2s.played[10 * 4:]) == samples and i2s.underruns == 10
