"""Synopsys DesignWare I2S (DW_apb_i2s), one stereo channel pair, as Linux's dwc-i2s drives it
with the generic dmaengine PCM (cyclic DMA).

The block is the bus master of the I2S wires (COMP_PARAM_1 says so): its sample clock is its
``i2sclk`` (a fixed clock of ``clock_hz``, default 1.536 MHz) divided by the word-select length
CCR.WSS programs — 48 kHz with 16-bit words.  As on a board with a fixed audio clock, a stream at
another rate plays at the clock's pace.  While the clock runs (IER.IEN and CER), every sample
period takes one frame (left, right) out of the TX FIFO onto the wire and puts one frame from
the wire into the RX FIFO:

* playback: what the guest plays is the data on the wire, kept in ``played`` and written as a
  WAV file (``<name>-playback.wav`` in the board's logs, and ``playback_wav`` if given);
* capture: frames come from the WAV file ``capture_wav`` (silence after its end, or without one).

FIFOs of 16 frames; DMA (I2S_DMACR, the combined TXDMA/RXDMA registers, left then right sample
per frame): TX asks for a burst while the FIFO is at or below TFCR's level, RX while it holds more
than RFCR's.  A TX FIFO found empty when a frame is due is an underrun: the wire carries silence
and the harness counts it (``underruns``); a full RX FIFO loses the frame (``overruns``, ISR.RXFO).

The sample clock is on the guest's clock: frame n after the clock started is on the wire at
start + ceil(n / rate), exactly, however slow the host.  The wire runs lazily, up to the time of
each access, and the model asks for a tick only at the frame that changes what the DMA controller
or the driver can see (the TX FIFO down to 15 frames, a single request, or to TFCR, a burst and
TXFE; the RX FIFO up to 1 or to RFCR + 1), so cyclic DMA in bursts of 8 frames costs a tick per
8 frames.  An underrun is the FIFO's own: a frame due when the TX FIFO is empty.
"""

from __future__ import annotations

import io
import wave
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cosim.api import (
    DmaRequestPort,
    DtNode,
    Field,
    Peripheral,
    Register,
    RegisterArray,
    Timer,
    hookimpl,
)

FIFO_DEPTH = 16
INTERRUPT_FIELDS = [  # ISR, and the same bits masked in IMR
    Field("RXDA", 0, doc="RX data available: the FIFO is above its trigger level"),
    Field("RXFO", 1, doc="RX FIFO overrun"),
    Field("TXFE", 4, doc="TX FIFO empty: at or below its trigger level"),
    Field("TXFO", 5, doc="TX FIFO overrun")]
WSS_CYCLES = {0: 16, 1: 24, 2: 32}
WLEN_BITS = {0: 0, 1: 12, 2: 16, 3: 20, 4: 24, 5: 32}
COMP_PARAM_1 = (
    2  # APB data width 32 bits
    | 3 << 2  # FIFO depth 16
    | 1 << 4  # master mode (it drives the bit and word clocks)
    | 1 << 5 | 1 << 6  # transmitter and receiver
    | 1 << 16)  # transmit word size 16 bits: S16_LE
COMP_PARAM_2 = 1  # receive word size 16 bits


class DwI2s(Peripheral):
    compatible = ("snps,designware-i2s",)
    dma_request_names = ("rx", "tx")

    IER = Register(0x000, fields=[Field("IEN", 0)], on_write="clock_control")
    IRER = Register(0x004, fields=[Field("RXEN", 0)], on_write="clock_control")
    ITER = Register(0x008, fields=[Field("TXEN", 0)], on_write="clock_control")
    CER = Register(0x00C, fields=[Field("CLKEN", 0)], on_write="clock_control")
    CCR = Register(0x010, fields=[Field("SCLKG", 0, 3), Field("WSS", 3, 2)])
    RXFFR = Register(0x014, access="wo", on_write="reset_rx")
    TXFFR = Register(0x018, access="wo", on_write="reset_tx")
    LRBR_LTHR = Register(0x020, on_read="read_left", on_write="write_left")
    RRBR_RTHR = Register(0x024, on_read="read_right", on_write="write_right")
    RER = Register(0x028, fields=[Field("RXCHEN", 0)], reset=1, on_write="configure")
    TER = Register(0x02C, fields=[Field("TXCHEN", 0)], reset=1, on_write="configure")
    RCR = Register(0x030, fields=[Field("WLEN", 0, 3)], reset=2)
    TCR = Register(0x034, fields=[Field("WLEN", 0, 3)], reset=2)
    ISR = Register(0x038, access="ro", on_read="status", fields=INTERRUPT_FIELDS)
    IMR = Register(0x03C, reset=0x33, fields=INTERRUPT_FIELDS)
    RXDA, RXFO, TXFE, TXFO = ISR.mask("RXDA"), ISR.mask("RXFO"), ISR.mask("TXFE"), ISR.mask("TXFO")
    ROR = Register(0x040, access="ro", on_read="clear_rx_overrun")
    TOR = Register(0x044, access="ro", on_read="clear_tx_overrun")
    RFCR = Register(0x048, fields=[Field("RXCHDT", 0, 4)], on_write="configure")
    TFCR = Register(0x04C, fields=[Field("TXCHET", 0, 4)], on_write="configure")
    RFF = Register(0x050, access="wo", on_write="reset_rx")
    TFF = Register(0x054, access="wo", on_write="reset_tx")
    # Channels 1-3: this instance has one stereo channel (COMP_PARAM_1), so their registers are
    # absent: they read 0 and ignore writes.  dwc-i2s loops over all four channels' IMR/ROR/TOR.
    LRBR_LTHR_ = RegisterArray(0x060, count=3, stride=0x40, access="ro")
    RRBR_RTHR_ = RegisterArray(0x064, count=3, stride=0x40, access="ro")
    RER_ = RegisterArray(0x068, count=3, stride=0x40, access="ro")
    TER_ = RegisterArray(0x06C, count=3, stride=0x40, access="ro")
    RCR_ = RegisterArray(0x070, count=3, stride=0x40, access="ro")
    TCR_ = RegisterArray(0x074, count=3, stride=0x40, access="ro")
    ISR_ = RegisterArray(0x078, count=3, stride=0x40, access="ro")
    IMR_ = RegisterArray(0x07C, count=3, stride=0x40, access="ro")
    ROR_ = RegisterArray(0x080, count=3, stride=0x40, access="ro")
    TOR_ = RegisterArray(0x084, count=3, stride=0x40, access="ro")
    RFCR_ = RegisterArray(0x088, count=3, stride=0x40, access="ro")
    TFCR_ = RegisterArray(0x08C, count=3, stride=0x40, access="ro")
    RFF_ = RegisterArray(0x090, count=3, stride=0x40, access="ro")
    TFF_ = RegisterArray(0x094, count=3, stride=0x40, access="ro")
    RXDMA = Register(0x1C0, on_read="dma_read", fifo_entry_bits="rx_entry_bits")
    RRXDMA = Register(0x1C4, access="wo", on_write="reset_rx")
    TXDMA = Register(0x1C8, on_write="dma_write", fifo_entry_bits="tx_entry_bits")
    RTXDMA = Register(0x1CC, access="wo", on_write="reset_tx")
    COMP_PARAM_2 = Register(0x1F0, access="ro", reset=COMP_PARAM_2)
    COMP_PARAM_1 = Register(0x1F4, access="ro", reset=COMP_PARAM_1)
    COMP_VERSION = Register(0x1F8, access="ro", reset=0x3131302A)  # "1.10*"
    COMP_TYPE = Register(0x1FC, access="ro", reset=0x445701A0)
    DMACR = Register(0x200, fields=[Field("RXBLOCK", 16), Field("TXBLOCK", 17)],
                     on_write="configure")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        p = self.properties
        self.clock_hz = int(p.get("clock_hz", 48_000 * 32))
        self.tx: deque[tuple[int, int]] = deque()
        self.rx: deque[tuple[int, int]] = deque()
        self.tx_left: int | None = None  # a left sample waiting for its right one
        self.rx_right: int | None = None  # the right sample of a frame whose left was read
        self.played = bytearray()  # the wire, transmit side: 16-bit stereo little-endian
        self.underruns = 0  # frames the wire needed and the TX FIFO did not have
        self.overruns = 0  # frames the RX FIFO had no room for
        self.tx_overruns = 0  # writes to a full TX FIFO
        self.flags = 0  # latched ISR bits: TXFO, RXFO
        self.capture = self._load_capture(p.get("capture_wav"))
        self.capture_pos = 0
        self.frames_clocked = 0  # frames since the clock started
        self.tx_switches: list[tuple[bool, int, int]] = []  # (on, frame on the wire, guest ns)
        self._tx_on = False
        self._clock_on = False
        self._clock_start_ns = 0
        self._catching_up = False  # the DMA a frame asks for writes the FIFO from within a frame
        self._event: Timer | None = None
        self._tx_burst = 0  # frames a standing order's burst brought, once one has been served
        self.configure()

    @property
    def sample_rate(self) -> int:
        return self.clock_hz // (2 * WSS_CYCLES.get(self.regs.CCR.WSS, 32))

    def _load_capture(self, path: str | None) -> bytes:
        if path is None:
            return b""
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 2 or w.getsampwidth() != 2:
                raise ValueError(f"capture_wav {path}: needs 16-bit stereo, has "
                                 f"{w.getsampwidth() * 8}-bit, {w.getnchannels()} channel(s)")
            return w.readframes(w.getnframes())

    def connect_dma_request(self, port: DmaRequestPort) -> None:
        super().connect_dma_request(port)
        port.on_flush = self._flushed

    def _flushed(self) -> None:
        """A DMAFLUSHP dropped the request: assert it again as the FIFO stands now."""
        with self._on_the_wire():
            self.update_requests()

    # --- the sample clock ---

    def _running(self) -> bool:
        return bool(self.regs.IER.IEN and self.regs.CER.CLKEN)

    def clock_control(self, _value: int = 0) -> None:
        running = self._running()
        if running and not self._clock_on:
            self._clock_start_ns, self.frames_clocked = self.now(), 0
        self._clock_on = running
        self.configure()

    def frame_time(self, n: int) -> int:
        """When frame ``n`` (from 1) since the clock started is on the wire, in guest ns."""
        return self._clock_start_ns + -(-n * 10**9 // self.sample_rate)

    @contextmanager
    def _on_the_wire(self) -> Iterator[None]:
        """Around every access — the CPU's, a DMA burst, a flush: the wire first clocks the
        frames due by now, and the next tick is set after, from the FIFOs as the access left
        them (a burst the DMAC writes on the driver's DMAGO, not on a frame, moves it too)."""
        with self.lock:
            self._catch_up()
            yield
            self._schedule_next_event()

    def read(self, offset: int, size: int) -> int:
        with self._on_the_wire():
            return super().read(offset, size)

    def write(self, offset: int, size: int, data: int) -> None:
        with self._on_the_wire():
            super().write(offset, size, data)

    def _catch_up(self) -> None:
        """Clocks the frames due by the guest's time now, each with the DMA it asks for."""
        if self._catching_up or not self._clock_on:
            return
        self._catching_up = True
        try:
            now = self.now()
            while self.frame_time(self.frames_clocked + 1) <= now:
                self.frames_clocked += 1
                self._frame()
        finally:
            self._catching_up = False

    def _clock_event(self) -> None:
        self._catch_up()
        self._schedule_next_event()

    def _schedule_next_event(self) -> None:
        if self._catching_up:
            return
        ahead = self._frames_to_next_event() if self._clock_on else None
        when = None if ahead is None else self.frame_time(self.frames_clocked + ahead)
        self._event = self.reschedule(self._event, when, self._clock_event)

    def _frames_to_next_event(self) -> int | None:
        """Frames to the next one that changes a DMA request or a status bit: the TX FIFO
        drained to 15 frames (room for a single) or to TFCR (a burst), the RX FIFO filled to 1
        frame or past RFCR; none while the FIFOs' DMA keeps them where they are."""
        ahead = []
        tx_n, rx_n = len(self.tx), len(self.rx)
        standing = self._standing_tx_bursts() if self._tx_burst else 0
        if self._tx_on and standing and tx_n > self._tx_level:  # where the order's last burst is due
            ahead.append(tx_n - self._tx_level + (standing - 1) * self._tx_burst)
        elif self._tx_on:
            ahead += [tx_n - level for level in (FIFO_DEPTH - 1, self._tx_level) if level < tx_n]
        if self._rx_on:
            ahead += [level - rx_n for level in (1, self._rx_level + 1) if level > rx_n]
        return min(ahead, default=None)

    def _standing_tx_bursts(self) -> int:
        """Bursts a TX DMA channel has promised in a row: the FIFO's refills at TFCR then change
        nothing the driver sees until the order ends (a period of cyclic DMA), so the wire does
        them as it runs and ticks only where the order ends."""
        tx = self.dma_requests.get("tx")
        return tx.standing(burst=True) if tx is not None and self._tx_dma else 0

    def _frame(self) -> None:
        """One sample period on the wire."""
        if self._tx_on:
            if self.tx:
                left, right = self.tx.popleft()
            else:
                left = right = 0
                self.underruns += 1
                self.trace.instant(f"{self.name} wire", "underrun")
            self.played += (left & 0xFFFF).to_bytes(2, "little") + (right & 0xFFFF).to_bytes(2, "little")
            if len(self.tx) == self._tx_level and self._standing_tx_bursts():
                before = len(self.tx)  # the burst the FIFO asks for now, served at this frame
                self.dma_requests["tx"].serve(1, burst=True)
                self._tx_burst = max(len(self.tx) - before, 0)
        if self._rx_on:
            chunk = self.capture[self.capture_pos:self.capture_pos + 4]
            self.capture_pos += 4
            chunk = chunk.ljust(4, b"\0")
            if len(self.rx) < FIFO_DEPTH:
                self.rx.append((int.from_bytes(chunk[:2], "little"), int.from_bytes(chunk[2:], "little")))
            else:
                self.overruns += 1
                self.flags |= self.RXFO
                self.trace.instant(f"{self.name} wire", "overrun")
        self.update_requests()

    # --- FIFOs ---

    def _push(self, left: int, right: int) -> None:
        if len(self.tx) < FIFO_DEPTH:
            self.tx.append((left, right))
        else:
            self.tx_overruns += 1
            self.flags |= self.TXFO
        self.update_requests()

    def write_left(self, value: int) -> None:
        self.tx_left = value

    def write_right(self, value: int) -> None:
        self._push(self.tx_left or 0, value)
        self.tx_left = None

    def read_left(self) -> int:
        if not self.rx:
            return 0
        left, self.rx_right = self.rx.popleft()
        self.update_requests()
        return left

    def read_right(self) -> int:
        right, self.rx_right = self.rx_right or 0, None
        return right

    def dma_write(self, value: int) -> None:
        """Combined DMA register: samples alternate left, right."""
        if self.tx_left is None:
            self.tx_left = value
        else:
            self.write_right(value)

    def dma_read(self) -> int:
        return self.read_right() if self.rx_right is not None else self.read_left()

    def write_beats(self, offset: int, size: int, data: bytes) -> None:
        if offset != self.TXDMA.offset or size != 2 or self.in_reset:
            return super().write_beats(offset, size, data)
        with self._on_the_wire():  # the burst as its beats, without a bus write per sample
            for value in memoryview(data).cast("H"):
                self.dma_write(value)

    def read_beats(self, offset: int, size: int, length: int) -> bytes:
        if offset != self.RXDMA.offset or size != 2 or self.in_reset:
            return super().read_beats(offset, size, length)
        with self._on_the_wire():
            return b"".join(self.dma_read().to_bytes(2, "little") for _ in range(length // 2))

    def tx_entry_bits(self) -> int:
        return 16 if WLEN_BITS.get(self.regs.TCR.WLEN, 32) <= 16 else 32

    def rx_entry_bits(self) -> int:
        return 16 if WLEN_BITS.get(self.regs.RCR.WLEN, 32) <= 16 else 32

    def reset_tx(self, _value: int = 0) -> None:
        self.tx.clear()
        self.tx_left = None
        self.update_requests()

    def reset_rx(self, _value: int = 0) -> None:
        self.rx.clear()
        self.rx_right = None
        self.update_requests()

    # --- status and DMA requests ---

    def status(self) -> int:
        isr = self.flags
        if len(self.tx) <= self._tx_level:
            isr |= self.TXFE
        if len(self.rx) > self._rx_level:
            isr |= self.RXDA
        return isr

    def clear_rx_overrun(self) -> int:
        self.flags &= ~self.RXFO
        return 0

    def clear_tx_overrun(self) -> int:
        self.flags &= ~self.TXFO
        return 0

    def configure(self, _value: int = 0) -> None:
        """A control register changed: recompute what the per-frame paths test."""
        r = self.regs
        tx_on = bool(r.ITER.TXEN and r.TER.TXCHEN)
        if tx_on != self._tx_on:
            # the transmitter started or stopped: where on the wire, and when
            self.tx_switches.append((tx_on, len(self.played) // 4, self.now()))
            self.trace.instant(f"{self.name} wire", "transmit on" if tx_on else "transmit off")
        self._tx_on = tx_on
        self._rx_on = bool(r.IRER.RXEN and r.RER.RXCHEN)
        self._tx_dma = bool(r.DMACR.TXBLOCK and r.ITER.TXEN and r.IER.IEN)
        self._rx_dma = bool(r.DMACR.RXBLOCK and r.IRER.RXEN and r.IER.IEN)
        self._tx_level, self._rx_level = r.TFCR.TXCHET, r.RFCR.RXCHDT
        self.update_requests()

    def update_requests(self, _value: int = 0) -> None:
        # Driven on every change: a request is a level, and the DMAC consumes it at each DMAWFP.
        tx_n, rx_n = len(self.tx), len(self.rx)
        tx, rx = self.dma_requests.get("tx"), self.dma_requests.get("rx")
        if tx is not None:
            tx.drive(self._tx_dma and tx_n < FIFO_DEPTH, burst=tx_n <= self._tx_level)
        if rx is not None:
            rx.drive(self._rx_dma and rx_n > 0, burst=rx_n > self._rx_level)

    # --- host side ---

    def wav(self) -> bytes:
        """What was played, as a WAV file."""
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            w.writeframes(bytes(self.played))
        return out.getvalue()

    def save(self, artifacts: Path) -> None:
        data = self.wav()
        (artifacts / f"{self.name}-playback.wav").write_bytes(data)
        if "playback_wav" in self.properties:
            Path(self.properties["playback_wav"]).write_bytes(data)


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"dw-i2s": DwI2s}


@hookimpl
def cosim_device_tree(peripheral: Peripheral, node: DtNode) -> None:
    if isinstance(peripheral, DwI2s):
        node.set("clocks", [node.fixed_clock("i2sclk", peripheral.clock_hz)])  # the clock it divides
        node.set("clock-names", "i2sclk")
        node.set("#sound-dai-cells", 0)
