"""ARM PrimeSync SSP (PL022) in SPI master mode, as Linux's spi-pl022 driver programs it.

Frames of 4 to 16 bits (CR0.DSS) go out of the 8-entry TX FIFO once the port is enabled
(CR1.SSE): each is exchanged with the selected SPI device — or, in loopback (CR1.LBM), with
itself — and what comes back enters the 8-entry RX FIFO.  A frame takes its time on the wire: the
bit clock is SSPCLK / (CPSDVSR x (1 + SCR)) (SSPCLK is virt's 24 MHz apb-pclk), and a frame's
answer reaches the RX FIFO when its last bit has been clocked, frames back to back while the TX
FIFO has any.  The wire keeps the guest's time (``Peripheral.at``): a transfer never finishes
sooner than its wire time — the SPI core's own test checks that — and, under virtual time, never
later either, however slow the host.  A frame goes out only when the RX FIFO has room for its
answer: no frame is lost to a receive overrun.

Interrupts: RX when the RX FIFO is half full or more, TX when the TX FIFO is half empty or more, RT
(receive timeout) when data waits in the RX FIFO and nothing more is being clocked.  DMA
(DMACR.RXDMAE/TXDMAE, request outputs "rx"/"tx"): RX asks for a burst at half full and a single
transfer while it holds a frame; TX asks for a burst at half empty and a single transfer while it
has room.

Devices (cosim.spi) sit on chip selects 0..n.  The ARM PL022 has no chip-select outputs of its own:
boards use GPIOs (``gpios: {cs: [...]}``, the binding's cs-gpios, active low).  A device whose chip
select is not wired is tied active, as on a board with one device.  Frames go to the selected
devices; MISO is pulled up when none drives it."""

from __future__ import annotations

from collections import deque
from itertools import islice

from cosim.api import (
    DmaRequestPort,
    DtNode,
    Field,
    Peripheral,
    Ref,
    Register,
    SpiBus,
    SpiDevice,
    Timer,
    hookimpl,
)

FIFO_DEPTH = 8
SSPCLK_HZ = 24_000_000  # QEMU virt's apb-pclk, which the device tree gives as sspclk
HALF = FIFO_DEPTH // 2
INTERRUPT_FIELDS = [  # the same bits in IMSC, RIS, MIS and ICR (the TRM's xxIM, xxRIS...)
    Field("ROR", 0, doc="receive overrun"), Field("RT", 1, doc="receive timeout"),
    Field("RX", 2, doc="RX FIFO half full or more"), Field("TX", 3, doc="TX FIFO half empty or more")]


class Pl022(Peripheral, SpiBus):
    compatible = ("arm,pl022", "arm,primecell")
    primecell_id = 0x00041022  # ARM's PL022: 8-entry FIFOs
    irq_names = ("ssp",)
    dma_request_names = ("rx", "tx")
    gpio_input_names = ("cs",)

    CR0 = Register(0x00, width=16, fields=[Field("DSS", 0, 4), Field("FRF", 4, 2), Field("SPO", 6),
                                           Field("SPH", 7), Field("SCR", 8, 8)], on_write="configure")
    CR1 = Register(0x04, width=16, fields=[Field("LBM", 0), Field("SSE", 1), Field("MS", 2),
                                           Field("SOD", 3)], on_write="configure")
    DR = Register(0x08, width=16, on_read="read_frame", on_write="write_frame",
                  fifo_entry_bits="frame_bits")
    SR = Register(0x0C, width=16, access="ro", on_read="status", fields=[
        Field("TFE", 0), Field("TNF", 1), Field("RNE", 2), Field("RFF", 3),
        Field("BSY", 4, doc="frames still to go out on the wire")])
    CPSR = Register(0x10, width=16, fields=[Field("CPSDVSR", 0, 8)])
    IMSC = Register(0x14, width=16, fields=INTERRUPT_FIELDS, on_write="configure")
    RIS = Register(0x18, width=16, access="ro", on_read="raw_status", fields=INTERRUPT_FIELDS)
    MIS = Register(0x1C, width=16, access="ro", on_read="masked_status", fields=INTERRUPT_FIELDS)
    ICR = Register(0x20, width=16, access="wo", on_write="clear_interrupts",
                   fields=[INTERRUPT_FIELDS[0], INTERRUPT_FIELDS[1]])  # the other two are levels
    ROR, RT, RX, TX = RIS.mask("ROR"), RIS.mask("RT"), RIS.mask("RX"), RIS.mask("TX")
    DMACR = Register(0x24, width=16, fields=[Field("RXDMAE", 0), Field("TXDMAE", 1)],
                     on_write="configure")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.tx: deque[int] = deque()
        self.rx: deque[int] = deque()
        self.devices: dict[int, SpiDevice] = {}  # chip select -> device
        self.selected: dict[int, bool] = {}  # chip select -> active; absent: not wired, tied active
        self.frames = 0  # frames clocked since reset
        self._frame_ns = 0  # one frame's time on the wire
        self._last_end = 0  # when the last frame's final bit was clocked (guest ns)
        self._next_end: int | None = None  # when the frame on the wire will be done
        self._wire_done: Timer | None = None  # completes that frame if no access comes first
        self._shifting = False  # the wire is being run: DMA from within it finds it so
        self._over_depth = False  # standing DMA orders move more than a FIFO's worth at once
        self.configure()

    def attach(self, chip_select: int, device: SpiDevice) -> None:
        """Puts ``device`` on the bus at ``chip_select``."""
        if chip_select in self.devices:
            raise ValueError(f"chip select {chip_select} of {self.name} already has "
                             f"'{self.devices[chip_select].name}'")
        self.devices[chip_select] = device

    def shape_device_node(self, node: DtNode) -> None:
        node.set("pl022,interface", 0)  # SPI
        node.set("pl022,com-mode", 2)  # DMA transfers when the controller has channels

    def gpio_input(self, name: str, index: int, level: bool) -> None:
        if name != "cs":
            super().gpio_input(name, index, level)
        with self.lock:
            self.shift()  # the frames before the change went to the old selection
            active = not level  # active low
            if self.selected.get(index) == active:
                return
            self.selected[index] = active
            device = self.devices.get(index)
            if device is not None:
                device.select(active)

    def connect_dma_request(self, port: DmaRequestPort) -> None:
        super().connect_dma_request(port)
        port.on_flush = self._request_rx if port.name == "rx" else self._request_tx

    def configure(self, _value: int = 0) -> None:
        """A control register changed: keep what the per-frame paths test at hand."""
        r = self.regs
        self._bits = max(r.CR0.DSS, 3) + 1
        divisor = max(r.CPSR.CPSDVSR & ~1, 2) * (1 + r.CR0.SCR)  # CPSDVSR is even, 2..254
        self._frame_ns = self._bits * divisor * 1_000_000_000 // SSPCLK_HZ
        self._clocking = bool(r.CR1.SSE and not r.CR1.MS)
        self._loopback = bool(r.CR1.LBM)
        self._imsc = r.IMSC.value
        self._rx_dma, self._tx_dma = bool(r.DMACR.RXDMAE), bool(r.DMACR.TXDMAE)
        self.shift()

    def frame_bits(self) -> int:
        return self._bits

    # --- registers ---

    def write_frame(self, value: int) -> None:
        if len(self.tx) < FIFO_DEPTH or self._over_depth:  # a write to a full FIFO is lost
            self.tx.append(value & ((1 << self._bits) - 1))
        self.shift()

    def read_frame(self) -> int:
        self.shift()  # what the wire finished by now is in the FIFO
        value = self.rx.popleft() if self.rx else 0
        self.shift()  # room for an answer: the next frame goes out
        return value

    def read_beats(self, offset: int, size: int, length: int) -> bytes:
        if offset != self.DR.offset or size > 2 or self.in_reset:
            return super().read_beats(offset, size, length)
        with self.lock:  # a DMA burst from DR: what an empty FIFO gives reads as 0
            self.shift()
            count = length // size
            taken = take(self.rx, count)
            taken += [0] * (count - len(taken))
            self.shift()
            if size == 1:
                return bytes(taken) if self._bits <= 8 else bytes(value & 0xFF for value in taken)
            return b"".join(value.to_bytes(2, "little") for value in taken)

    def write_beats(self, offset: int, size: int, data: bytes) -> None:
        if offset != self.DR.offset or size > 2 or self.in_reset:
            return super().write_beats(offset, size, data)
        with self.lock:  # a DMA burst into DR: writes beyond a full FIFO are lost
            mask = (1 << self._bits) - 1
            words = data if size == 1 else memoryview(data).cast("H")
            room = len(words) if self._over_depth else max(FIFO_DEPTH - len(self.tx), 0)
            if size == 1 and self._bits == 8:
                self.tx.extend(words[:room])  # bytes: already 8-bit frames
            else:
                self.tx.extend(word & mask for word in words[:room])
            self.shift()

    def shift(self, _value: int = 0) -> None:
        """Completes the frames whose wire time is over, back to back from the TX FIFO; a frame
        starts when its word is there and the RX FIFO has room for the answer.  After each run
        of frames the DMA takes what they left and the outputs settle, until nothing changes.
        (A register access from that DMA, inside this, finds the wire already being run.)"""
        if self._shifting:
            return
        self._shifting = True
        try:
            while True:
                frames = self.frames
                self._clock_frames_due()
                levels = len(self.tx), len(self.rx)
                self._serve_standing_orders()
                self.update_interrupts()  # requests: other DMA may move data right here
                if self.frames == frames and (len(self.tx), len(self.rx)) == levels:
                    break
        finally:
            self._shifting = False
        if not self.tx or len(self.rx) >= FIFO_DEPTH:
            self._next_end = None  # the wire stalls (or idles) until there is a word and room
        self._schedule_wire()

    def _clock_frames_due(self) -> None:
        """The frames due by now that the FIFOs allow without service: a service right after
        them is at the last one's end, as it would be frame by frame, so the next follows back
        to back."""
        if not self._clocking:
            return
        now, frame_ns = self.now(), self._frame_ns
        if not self.tx or len(self.rx) >= FIFO_DEPTH:
            return
        if self._next_end is None:  # the wire was idle (or stalled): a frame starts now
            self._next_end = max(now, self._last_end) + frame_ns
        if now < self._next_end:
            return
        due = 1 + (now - self._next_end) // frame_ns
        steady = self._steady_frames()
        run = self._clock_steady_frames(min(due, steady)) if due > 1 and steady > 1 else 0
        if not run:
            run = min(due, len(self.tx), FIFO_DEPTH - len(self.rx))
            self._clock(run)
        self._last_end = self._next_end + (run - 1) * frame_ns
        self._next_end = self._last_end + frame_ns  # back to back, if DMA serves the FIFOs now

    def _clock(self, frames: int) -> None:
        words = take(self.tx, frames)
        self.rx.extend(words if self._loopback else self._exchange_words(words))
        self.frames += frames

    def _clock_steady_frames(self, frames: int) -> int:
        """``frames`` frames while DMA standing orders keep the TX FIFO full and the RX FIFO
        empty: the FIFOs are then a fixed delay, so the TX channel's next words go in at once,
        the wire takes them, and the RX channel takes all the answers — the same words, in the
        same order, as frame by frame (TX always reads ahead of RX, as it does there)."""
        rx, tx = self.dma_requests["rx"], self.dma_requests["tx"]
        self._over_depth = True  # the FIFOs hold more than 8 only inside this
        try:
            frames = tx.serve(frames)
            self._clock(frames)
            rx.serve(frames)
        finally:
            self._over_depth = False
        return frames

    def _serve_standing_orders(self) -> None:
        """DMA channels that have promised to serve single requests in a row take the RX FIFO's
        answers and top the TX FIFO up at once, as they would have frame by frame."""
        rx, tx = self.dma_requests.get("rx"), self.dma_requests.get("tx")
        if rx is not None and self._rx_dma and self.rx:
            rx.serve(min(len(self.rx), rx.standing()))
        if tx is not None and self._tx_dma and len(self.tx) < FIFO_DEPTH:
            tx.serve(min(FIFO_DEPTH - len(self.tx), tx.standing()))

    def _steady_frames(self) -> int:
        """Frames the wire runs with nothing visible changing: with both directions' DMA standing
        and the FIFOs where those orders keep them (TX full, RX empty), until an order runs out."""
        if not (self._tx_dma and self._rx_dma) or len(self.tx) < FIFO_DEPTH or self.rx:
            return 0
        rx, tx = self.dma_requests.get("rx"), self.dma_requests.get("tx")
        if rx is None or tx is None:
            return 0
        return min(rx.standing(), tx.standing())

    def _schedule_wire(self) -> None:
        """A tick at the end of the next frame that changes an output — the TX FIFO down to
        7 (a single DMA request, with TX DMA on), 4 (the TX interrupt, a burst) or 0; the RX
        FIFO up to 1 (with RX DMA on), 4 or 8 (the wire stalls) — not at every frame; while DMA
        standing orders keep the FIFOs steady, at the frame that ends one of them."""
        if self._next_end is None:
            self._wire_done = self.reschedule(self._wire_done, None, self.shift)
            return
        steady = self._steady_frames()
        if steady:
            ahead = steady
        else:
            tx_n, rx_n = len(self.tx), len(self.rx)
            last = min(tx_n, FIFO_DEPTH - rx_n)  # frames the wire can clock before it stops
            tx_levels = {HALF, 0} | ({FIFO_DEPTH - 1} if self._tx_dma else set())
            rx_levels = {HALF, FIFO_DEPTH} | ({1} if self._rx_dma else set())
            frames = [tx_n - level for level in tx_levels if 0 < tx_n - level <= last]
            frames += [level - rx_n for level in rx_levels if 0 < level - rx_n <= last]
            ahead = min(frames, default=last)
        self._wire_done = self.reschedule(self._wire_done, self._next_end + (ahead - 1) * self._frame_ns,
                                          self.shift)

    def _exchange_words(self, words: list[int]) -> list[int]:
        bits = self._bits
        answers: list[int] | None = None  # MISO pulled up while nobody answers
        for cs, device in self.devices.items():
            if self.selected.get(cs, True):
                mine = device.exchange_words(words, bits)
                # several drivers: the low ones win
                answers = mine if answers is None else [a & b for a, b in zip(answers, mine, strict=True)]
        return [(1 << bits) - 1] * len(words) if answers is None else answers

    def status(self) -> int:
        self.shift()  # the frames whose wire time is over are done by now
        return self.SR.compose(TFE=not self.tx, TNF=len(self.tx) < FIFO_DEPTH, RNE=bool(self.rx),
                               RFF=len(self.rx) >= FIFO_DEPTH, BSY=bool(self.tx))

    def raw_status(self) -> int:
        self.shift()
        return self.regs.RIS.value

    def masked_status(self) -> int:
        return self.raw_status() & self.regs.IMSC.value

    def clear_interrupts(self, value: int) -> None:
        self.regs.RIS.value &= ~(value & (self.ROR | self.RT))
        self.update_interrupts()

    def update_interrupts(self, _value: int = 0) -> None:
        ris = self.regs.RIS.value & self.ROR
        if len(self.rx) >= HALF:
            ris |= self.RX
        if len(self.tx) <= HALF:
            ris |= self.TX
        if self.rx and not (self.tx and self._clocking):
            ris |= self.RT  # nothing more is being clocked in
        self.regs.RIS.value = ris
        self.irqs["ssp"].set(bool(ris & self._imsc))
        self._request_dma()

    def _request_dma(self) -> None:
        self._request_rx()
        self._request_tx()

    def _request_rx(self) -> None:
        rx = self.dma_requests.get("rx")
        if rx is not None:
            rx.drive(self._rx_dma and bool(self.rx), burst=len(self.rx) >= HALF)

    def _request_tx(self) -> None:
        tx = self.dma_requests.get("tx")
        if tx is not None:
            tx.drive(self._tx_dma and len(self.tx) < FIFO_DEPTH, burst=len(self.tx) <= HALF)



def take(fifo: deque[int], count: int) -> list[int]:
    """The first ``count`` words (fewer if it holds fewer) out of ``fifo``, at C speed: a DMA
    run takes hundreds at once."""
    if count >= len(fifo):
        words = list(fifo)
        fifo.clear()
        return words
    words, rest = list(islice(fifo, count)), list(islice(fifo, count, None))
    fifo.clear()
    fifo.extend(rest)
    return words

@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"pl022": Pl022}


@hookimpl
def cosim_device_tree(peripheral: Peripheral, node: DtNode) -> None:
    if isinstance(peripheral, Pl022):
        node.set("clocks", [Ref("/apb-pclk"), Ref("/apb-pclk")])
        node.set("clock-names", ["sspclk", "apb_pclk"])
