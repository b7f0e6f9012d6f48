"""Allwinner sun6i DMA controller, A64 flavour (``allwinner,sun50i-a64-dma``), as Linux's
sun6i-dma driver programs it.

A linked-list engine: software writes the address of a chain of 24-byte descriptors (LLIs) to a
channel's LLI_ADDR and sets EN; the channel fetches each LLI, moves its ``len`` bytes and follows
``next`` until the end marker 0xfffff800.  Per channel, three interrupts: half package (half of
an LLI moved), package end (an LLI done) and queue end (the chain done).

Flow control: each side of a transfer names a DRQ port; ports 0 (SRAM) and 1 (SDRAM) are memory,
the others are peripherals' request lines (the client's ``dmas = <&dma PORT>``).  A side on a
peripheral port moves data only while that peripheral requests it: a burst request moves one
burst (burst length x width), a single request one beat.  Memory-only transfers run at once.
A channel runs inside the register write (or request) that let it go on, as the PL330 does.

Not modelled: secure mode, the H6 high address bits, bus errors reported to software (the real
block has no error status: a descriptor or data access no memory answers stops the channel and
fails the test as a DMA fault), more than 8 channels (6.12's interrupt handler credits channel
8 + j to j, so a model with more would show that driver bug).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from cosim.api import (
    DmaController,
    DmaFault,
    DtNode,
    Field,
    Peripheral,
    PeripheralError,
    Ref,
    Register,
    RegisterArray,
)

MAX_CHANNELS = 8
LLI = struct.Struct("<6I")  # cfg, src, dst, len, para, next
LLI_LAST = 0xFFFFF800
MEMORY_PORTS = (0, 1)  # DRQ 0: SRAM, 1: SDRAM
BURSTS = (1, 4, 8, 16)  # the CFG burst field's encodings
IRQ_HALF, IRQ_PKG, IRQ_QUEUE = 1, 2, 4
IRQ_KINDS = ("HALF", "PKG", "QUEUE")
MEMORY_ONLY_LLI_LIMIT = 1 << 16  # a longer run of memory-only LLIs is a loop in the chain


def _channel_irq_fields(access: str) -> list[Field]:
    return [Field(f"CH{ch}_{kind}", 4 * ch + bit, access=access,  # type: ignore[arg-type]
                  doc=f"channel {ch}: {('half package', 'package end', 'queue end')[bit]}")
            for ch in range(MAX_CHANNELS) for bit, kind in enumerate(IRQ_KINDS)]


CFG_FIELDS = [
    Field("SRC_DRQ", 0, 5, doc="source DRQ port (1: SDRAM)"),
    Field("SRC_MODE", 5, doc="0: linear (address increments), 1: IO (fixed address)"),
    Field("SRC_BURST", 6, 2, doc="source burst: 1, 4, 8 or 16 beats (H3/A64 position)"),
    Field("SRC_WIDTH", 9, 2, doc="source beat: 1, 2, 4 or 8 bytes"),
    Field("DST_DRQ", 16, 5, doc="destination DRQ port"),
    Field("DST_MODE", 21, doc="0: linear, 1: IO"),
    Field("DST_BURST", 22, 2, doc="destination burst"),
    Field("DST_WIDTH", 25, 2, doc="destination beat"),
]
CFG = Register(0, fields=CFG_FIELDS)  # decodes an LLI's cfg word: the datasheet's table


@dataclass
class Channel:
    index: int
    active: bool = False  # enabled and not at the end of its chain
    paused: bool = False
    lli_addr: int = 0  # the next LLI (what LLI_ADDR reads while a chain runs)
    cfg: int = 0
    src: int = 0
    dst: int = 0
    count: int = 0  # bytes left of the current LLI
    length: int = 0  # the current LLI's len
    para: int = 0
    half_done: bool = False
    started_ns: int = 0
    first_src: int = 0
    first_dst: int = 0

    def field(self, name: str) -> int:
        f = CFG.fields[name]
        return (self.cfg & f.mask) >> f.lsb


class Sun6iDma(Peripheral, DmaController):
    compatible = ("allwinner,sun50i-a64-dma",)
    irq_names = ("dma",)
    dma_master = True
    dma_cells = 1  # the DRQ port

    IRQ_EN0 = Register(0x00, fields=_channel_irq_fields("rw"), on_write="update_irq",
                       doc="interrupt enables, 4 bits a channel")
    IRQ_EN1 = Register(0x04, doc="channels 8-15: none in this 8-channel model")
    IRQ_STAT0 = Register(0x10, fields=_channel_irq_fields("w1c"), on_write="update_irq",
                         doc="interrupt pending, write 1 to clear")
    IRQ_STAT1 = Register(0x14, access="w1c", doc="channels 8-15: none")
    AUTO_GATE = Register(0x28, fields=[Field("MCLK_AUTO_GATE_OFF", 2, doc="clock gating: no "
                                             "behaviour to model")])
    STAT = Register(0x30, access="ro", on_read="busy_channels", doc="bit n: channel n busy")
    EN = RegisterArray(0x100, count=MAX_CHANNELS, stride=0x40, fields=[Field("EN", 0)],
                       on_write="channel_enable")
    PAUSE = RegisterArray(0x104, count=MAX_CHANNELS, stride=0x40, on_write="channel_pause",
                          fields=[Field("PAUSE", 0, 2, doc="Linux writes bit 1 "
                                        "(DMA_CHAN_PAUSE_PAUSE): either bit pauses here")])
    LLI_ADDR = RegisterArray(0x108, count=MAX_CHANNELS, stride=0x40, on_read="channel_lli",
                             on_write="channel_lli_written", doc="the first LLI; then the next one")
    CUR_CFG = RegisterArray(0x10C, count=MAX_CHANNELS, stride=0x40, access="ro", on_read="channel_cfg")
    CUR_SRC = RegisterArray(0x110, count=MAX_CHANNELS, stride=0x40, access="ro", on_read="channel_src")
    CUR_DST = RegisterArray(0x114, count=MAX_CHANNELS, stride=0x40, access="ro", on_read="channel_dst")
    CUR_CNT = RegisterArray(0x118, count=MAX_CHANNELS, stride=0x40, access="ro", on_read="channel_count",
                            doc="bytes left of the current LLI")
    PARA = RegisterArray(0x11C, count=MAX_CHANNELS, stride=0x40, access="ro", on_read="channel_para")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.num_channels = int(self.properties.get("channels", MAX_CHANNELS))
        self.requests = int(self.properties.get("requests", 27))
        if not 1 <= self.num_channels <= MAX_CHANNELS:
            raise PeripheralError(f"channels must be 1..{MAX_CHANNELS}, not {self.num_channels}")
        if not 2 <= self.requests <= 31:
            raise PeripheralError(f"requests (DRQ ports) must be 2..31, not {self.requests}")
        self.channels = [Channel(i) for i in range(self.num_channels)]
        self.pending: dict[int, bool] = {}  # DRQ port -> a burst (True) or single request
        self.running = False
        self.lli_fetches = 0

    def reset_input(self, asserted: bool) -> None:
        super().reset_input(asserted)
        if asserted:
            self.channels = [Channel(i) for i in range(self.num_channels)]
            self.pending.clear()

    # --- DMA controller role: peripherals' DRQ lines ---

    def dma_request_line(self, cells: tuple[int, ...]) -> int:
        port = cells[0]
        if port in MEMORY_PORTS or not port <= self.requests:
            raise ValueError(f"{self.name}: DRQ port {port} is not a peripheral's: use "
                             f"{max(MEMORY_PORTS) + 1}..{self.requests} (0 is SRAM, 1 SDRAM)")
        return port

    def connect_request_line(self, line: int, on_flush: Callable[[], None]) -> None:
        """Nothing to keep: the block has no flush (dma_request_line checked the port)."""

    def dma_request(self, line: int, burst: bool, last: bool) -> None:
        with self.lock:
            if self.pending.get(line) == burst:
                return  # a level already asserted
            self.pending[line] = burst
            self.trace.instant(f"{self.name} DRQ {line}", "burst" if burst else "single")
            self._service()

    def dma_request_withdraw(self, line: int) -> None:
        with self.lock:
            self.pending.pop(line, None)

    # --- registers ---

    def update_irq(self, _value: int = 0) -> None:
        self.irq("dma").set(bool(self.regs.IRQ_STAT0.value & self.regs.IRQ_EN0.value))

    def busy_channels(self) -> int:
        return sum(1 << ch.index for ch in self.channels if ch.active)

    def channel(self, index: int) -> Channel | None:
        return self.channels[index] if index < self.num_channels else None

    def channel_enable(self, index: int, value: int) -> None:
        ch = self.channel(index)
        if ch is None:
            return
        if not value & 1:
            ch.active = False  # stopped: the driver's terminate
            return
        ch.active, ch.count = True, 0
        if self._load_next(ch):
            self._service()

    def channel_pause(self, index: int, value: int) -> None:
        ch = self.channel(index)
        if ch is not None:
            ch.paused = bool(value & 3)
            if not ch.paused:
                self._service()

    def channel_lli_written(self, index: int, value: int) -> None:
        ch = self.channel(index)
        if ch is not None:
            ch.lli_addr = value

    def _current(self, index: int, name: str) -> int:
        ch = self.channel(index)
        return 0 if ch is None else getattr(ch, name)

    def channel_lli(self, index: int) -> int:
        return self._current(index, "lli_addr")

    def channel_cfg(self, index: int) -> int:
        return self._current(index, "cfg")

    def channel_src(self, index: int) -> int:
        return self._current(index, "src")

    def channel_dst(self, index: int) -> int:
        return self._current(index, "dst")

    def channel_count(self, index: int) -> int:
        return self._current(index, "count")

    def channel_para(self, index: int) -> int:
        return self._current(index, "para")

    # --- the channels ---

    def _raise(self, ch: Channel, kind: int) -> None:
        enabled = (self.regs.IRQ_EN0.value >> (4 * ch.index)) & kind
        self.regs.IRQ_STAT0.value |= enabled << (4 * ch.index)
        self.update_irq()

    def _load_next(self, ch: Channel) -> bool:
        """Fetches the LLI at ``ch.lli_addr``; at the end marker the chain is done."""
        if ch.lli_addr == LLI_LAST:
            ch.active = False
            self._raise(ch, IRQ_QUEUE)
            return False
        assert self.dma is not None
        at = ch.lli_addr
        try:
            ch.cfg, ch.src, ch.dst, ch.length, ch.para, ch.lli_addr = LLI.unpack(self.dma.read(at, LLI.size))
        except DmaFault:
            ch.active = False  # the hardware has no error status: the channel just stops
            return False
        self.lli_fetches += 1
        ch.count, ch.half_done = ch.length, False
        ch.started_ns, ch.first_src, ch.first_dst = self.trace.now(), ch.src, ch.dst
        self.trace.instant(f"{self.name} channel {ch.index}", "LLI fetch", lli=f"{at:#x}",
                           cfg=f"{ch.cfg:#x}", length=ch.length, next=f"{ch.lli_addr:#x}")
        return True

    def _service(self) -> None:
        """Runs channels while any can go on; one at a time, as on the block's one bus master.
        A request raised by a transfer (the peripheral asking again) is served by this loop."""
        if self.running:
            return
        self.running = True
        fetched = self.lli_fetches
        try:
            progress = True
            while progress:
                progress = False
                for ch in self.channels:
                    while ch.active and not ch.paused and self._step(ch):
                        progress = True
                        if self.lli_fetches - fetched > MEMORY_ONLY_LLI_LIMIT:
                            ch.active = False
                            raise PeripheralError(
                                f"{self.name} channel {ch.index}: {MEMORY_ONLY_LLI_LIMIT} LLIs without "
                                f"waiting once (now at {ch.lli_addr:#x}): the chain loops")
        finally:
            self.running = False

    def _step(self, ch: Channel) -> bool:
        """Moves what ``ch`` can move now; False when it must wait (or has stopped)."""
        if ch.count == 0:
            return self._finish_lli(ch)
        src_port, dst_port = ch.field("SRC_DRQ"), ch.field("DST_DRQ")
        peripheral = dst_port if src_port in MEMORY_PORTS else src_port
        if peripheral in MEMORY_PORTS:
            return self._move(ch, ch.count)
        burst = self.pending.pop(peripheral, None)
        if burst is None:
            return False  # wait for the peripheral's request
        side = "DST" if peripheral == dst_port else "SRC"
        beat = 1 << ch.field(f"{side}_WIDTH")
        return self._move(ch, min(ch.count, beat * BURSTS[ch.field(f"{side}_BURST")] if burst else beat))

    def _move(self, ch: Channel, n: int) -> bool:
        assert self.dma is not None
        src_linear, dst_linear = not ch.field("SRC_MODE"), not ch.field("DST_MODE")
        try:
            if src_linear and dst_linear:
                self.dma.copy(ch.src, ch.dst, n)
            else:
                data = self.dma.read(ch.src, n, beat=1 << ch.field("SRC_WIDTH"), increment=src_linear)
                self.dma.write(ch.dst, data, beat=1 << ch.field("DST_WIDTH"), increment=dst_linear)
        except DmaFault:
            ch.active = False
            return False
        ch.src += n if src_linear else 0
        ch.dst += n if dst_linear else 0
        ch.count -= n
        if not ch.half_done and ch.count <= ch.length // 2:
            ch.half_done = True
            self._raise(ch, IRQ_HALF)
        return True

    def _finish_lli(self, ch: Channel) -> bool:
        self.trace.span(f"{self.name} channel {ch.index}", "LLI", ch.started_ns, self.trace.now(),
                        src=f"{ch.first_src:#x}", dst=f"{ch.first_dst:#x}", length=ch.length)
        self._raise(ch, IRQ_PKG)
        return self._load_next(ch)


def device_tree(peripheral: Sun6iDma, node: DtNode) -> None:
    node.set("clocks", [Ref("/apb-pclk")])  # the bus clock; a fixed one serves
    node.set("dma-channels", peripheral.num_channels)
    node.set("dma-requests", peripheral.requests)
