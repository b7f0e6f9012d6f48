"""ARM CoreLink DMA-330 (PL330) DMA controller, r1p2, as Linux's pl330 dmaengine driver drives it.

The controller runs microcode from memory: a manager thread (driven here, as by Linux, through the
debug registers) starts channel threads with DMAGO; each channel executes DMAMOV/DMALD/DMAST/DMALP
... through its MFIFO.  A channel runs as far as it can at once — until DMAEND, a fault, or a wait
for a peripheral (DMAWFP) or an event (DMAWFE) — inside the register write that started or woke it;
a channel woken while another runs goes next (one channel at a time, as on the one bus master).

Bulk speed: when a DMALPEND closes a loop whose body only moves whole bursts from SAR to DAR
(the driver's memcpy loop), the remaining iterations — and those of the outer loop Linux wraps
around it for more than 256 bursts — are done as one bus transfer with exactly the effect of
running them.  Everything else is interpreted instruction by instruction.

Configuration (platform ``properties``): ``channels`` (1-8), ``peripherals`` (request lines,
0-32), ``events`` (1-32), ``data_width`` (bits: 32, 64, 128), ``data_buffer_lines`` (MFIFO depth
in data-width lines).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from cosim.api import DmaController, DmaFault, DtNode, Peripheral, Ref, Register, RegisterArray, hookimpl

MAX_CHANNELS = 8
STEP_LIMIT = 1 << 19  # instructions in one run (~1 s) before the channel counts as locked up
ICACHE_LINE = 64


class State(IntEnum):
    STOPPED = 0x0
    EXECUTING = 0x1
    WFE = 0x4
    WFP = 0x7
    KILLING = 0x8
    COMPLETING = 0x9
    FAULT_COMPLETING = 0xE
    FAULTING = 0xF


class Fault(IntEnum):
    """Bits of the channel fault-type registers FTR0-7 (and, for some, of FTRD)."""

    UNDEF_INSTR = 1 << 0
    OPERAND_INVALID = 1 << 1
    DMAGO_ERR = 1 << 4  # manager only
    EVENT_ERR = 1 << 5
    PERIPH_ERR = 1 << 6
    MFIFO_ERR = 1 << 12
    ST_DATA_UNAVAILABLE = 1 << 13
    INSTR_FETCH_ERR = 1 << 16
    DATA_WRITE_ERR = 1 << 17
    DATA_READ_ERR = 1 << 18
    DBG_INSTR = 1 << 30
    LOCKUP_ERR = 1 << 31


SINGLE, BURST = 0, 1
SAR, CCR, DAR = 0, 1, 2


@dataclass(frozen=True)
class SlaveLoop:
    """A slave loop's shape, as ``Pl330._slave_loop`` finds it: ``DMAFLUSHP`` (optional);
    ``DMAWFP``; a load; a store; ``DMALPEND`` back to the loop's start.  Linux nests it in an
    outer loop for more than 256 requests (``DMALP`` of the other counter; ``DMALP`` of this
    one; the loop; ``DMALPEND`` back to that inner ``DMALP``): ``outer_counter`` is then set."""

    counter: int  # the loop counter DMALPEND tests
    start: int  # the loop's first instruction: the DMAFLUSHP, or the DMAWFP itself
    store: int  # the store's address (where a faulting store leaves CPC)
    end: int  # the DMALPEND's address
    outer_counter: int | None = None
    pass_length: int = 0  # iterations of the loop per outer pass (its DMALP's count)

    def iterations_left(self, lc: list[int]) -> int:
        """Requests left to serve, the channel waiting in the loop with counters ``lc``."""
        left = lc[self.counter] + 1  # DMALP counts from n-1
        if self.outer_counter is not None:
            left += lc[self.outer_counter] * self.pass_length
        return left

    def advance(self, ch: Channel, iterations: int) -> None:
        """``ch``'s counters and CPC after ``iterations`` more (at most ``iterations_left``): at
        the DMAWFP's loop start for the next, or at the DMALPEND that falls through."""
        first = ch.lc[self.counter] + 1
        if iterations < first:
            ch.lc[self.counter] -= iterations
            ch.pc = self.start
            return
        assert self.outer_counter is not None or iterations == first
        passes, partial = divmod(iterations - first, self.pass_length or 1)
        if partial:
            ch.lc[self.outer_counter] -= passes + 1  # each outer DMALPEND that jumps counts down
            ch.lc[self.counter] = self.pass_length - 1 - partial
            ch.pc = self.start
        else:
            if self.outer_counter is not None:
                ch.lc[self.outer_counter] -= passes
            ch.lc[self.counter] = 0
            ch.pc = self.end


@dataclass
class Channel:
    index: int
    state: State = State.STOPPED
    pc: int = 0
    sar: int = 0
    dar: int = 0
    ccr: int = 0
    lc: list[int] = field(default_factory=lambda: [0, 0])
    mfifo: bytearray = field(default_factory=bytearray)
    request: int = SINGLE  # the request type the last DMAWFP set: conditions test it
    wait_on: int = 0  # the event or peripheral a waiting channel waits for
    wfp_op: int = 0  # the DMAWFP a channel waits in: its S/B/P form sets the request type
    last_request: bool = False  # the peripheral said "last": a DMALPFE loop ends
    fault: int = 0
    nonsecure: bool = False
    icache: dict[int, bytes] = field(default_factory=dict)
    decoded: dict[int, bytes] = field(default_factory=dict)  # pc -> instruction, from the icache
    started_ns: int = 0  # the transfer on the timeline: from DMAGO to DMAEND
    first_src: int | None = None
    first_dst: int | None = None
    moved: int = 0
    loops: dict[tuple[int, int], bool] = field(default_factory=dict)  # fast-path verdicts
    slave_loops: dict[int, SlaveLoop | None] = field(default_factory=dict)  # DMAWFP -> its loop

    def src_burst(self) -> int:
        return (((self.ccr >> 4) & 0xF) + 1) << ((self.ccr >> 1) & 0x7)

    def dst_burst(self) -> int:
        return (((self.ccr >> 18) & 0xF) + 1) << ((self.ccr >> 15) & 0x7)

    def src_beat(self) -> int:
        return 1 << ((self.ccr >> 1) & 0x7)

    def dst_beat(self) -> int:
        return 1 << ((self.ccr >> 15) & 0x7)

    def src_inc(self) -> bool:
        return bool(self.ccr & 1)

    def dst_inc(self) -> bool:
        return bool(self.ccr & (1 << 14))

    def swap_bytes(self) -> int:
        return 1 << ((self.ccr >> 28) & 0x7)  # 1 means no endian swap


class Pl330(Peripheral, DmaController):
    compatible = ("arm,pl330", "arm,primecell")
    dma_cells = 1  # the request line
    primecell_id = 0x00341330  # part 0x330, ARM, revision 3 (r1p2): lock-up free LD/ST
    irq_names = ("events", "abort")
    dma_master = True
    default_size = 0x1000

    DSR = Register(0x000, access="ro")  # the manager stays Stopped: Linux drives it by debug
    DPC = Register(0x004, access="ro")
    INTEN = Register(0x020, on_write="update_interrupts")
    INT_EVENT_RIS = Register(0x024, access="ro")
    INTMIS = Register(0x028, access="ro", on_read="masked_interrupts")
    INTCLR = Register(0x02C, access="wo", on_write="clear_interrupts")
    FSRD = Register(0x030, access="ro")
    FSRC = Register(0x034, access="ro", on_read="channel_fault_status")
    FTRD = Register(0x038, access="ro")
    FTR = RegisterArray(0x040, count=MAX_CHANNELS, stride=4, access="ro", on_read="fault_type")
    CSR = RegisterArray(0x100, count=MAX_CHANNELS, stride=8, access="ro", on_read="channel_status")
    CPC = RegisterArray(0x104, count=MAX_CHANNELS, stride=8, access="ro", on_read="channel_pc")
    SAR = RegisterArray(0x400, count=MAX_CHANNELS, stride=0x20, access="ro", on_read="channel_sar")
    DAR = RegisterArray(0x404, count=MAX_CHANNELS, stride=0x20, access="ro", on_read="channel_dar")
    CCR = RegisterArray(0x408, count=MAX_CHANNELS, stride=0x20, access="ro", on_read="channel_ccr")
    LC0 = RegisterArray(0x40C, count=MAX_CHANNELS, stride=0x20, access="ro", on_read="channel_lc0")
    LC1 = RegisterArray(0x410, count=MAX_CHANNELS, stride=0x20, access="ro", on_read="channel_lc1")
    DBGSTATUS = Register(0xD00, access="ro")  # never busy: debug instructions complete at once
    DBGCMD = Register(0xD04, access="wo", on_write="debug_command")
    DBGINST0 = Register(0xD08)
    DBGINST1 = Register(0xD0C)
    CR0 = Register(0xE00, access="ro")
    CR1 = Register(0xE04, access="ro")
    CR2 = Register(0xE08, access="ro")
    CR3 = Register(0xE0C, access="ro")
    CR4 = Register(0xE10, access="ro")
    CRD = Register(0xE14, access="ro")
    WD = Register(0xE80)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        p = self.properties
        self.num_channels = int(p.get("channels", 8))
        self.num_peripherals = int(p.get("peripherals", 32))
        self.num_events = int(p.get("events", 32))
        data_width = int(p.get("data_width", 64))
        buffer_lines = int(p.get("data_buffer_lines", 64))
        if not 1 <= self.num_channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be 1..{MAX_CHANNELS}, not {self.num_channels}")
        if not 0 <= self.num_peripherals <= 32 or not 1 <= self.num_events <= 32:
            raise ValueError("peripherals must be 0..32 and events 1..32")
        if data_width not in (32, 64, 128):
            raise ValueError(f"data_width must be 32, 64 or 128 bits, not {data_width}")
        self.mfifo_bytes = buffer_lines * data_width // 8
        self.channels = [Channel(i) for i in range(self.num_channels)]
        self.pending_events = 0  # events signalled without an interrupt, not yet waited for
        self.pending_requests: dict[int, tuple[int, bool]] = {}  # line -> (type, last)
        self.flush_handlers: dict[int, Callable[[], None]] = {}
        self.runnable: deque[Channel] = deque()  # woken channels waiting for the one running
        self.running = False
        self._handlers = [getattr(self, i.handler or f"_op_{i.name.lower()}") if i else self._op_undefined
                          for i in DECODE]
        self.regs.CR0.value = (
            (self.num_peripherals > 0)
            | (self.num_channels - 1) << 4
            | (max(self.num_peripherals, 1) - 1) << 12
            | (self.num_events - 1) << 17)
        self.regs.CR1.value = 0x4 << 4 | 0x2  # 4 i-cache lines of 4 words: informational
        self.regs.CRD.value = (
            {32: 2, 64: 3, 128: 4}[data_width] | 7 << 4 | 7 << 8 | 7 << 12 | 7 << 16
            | (buffer_lines - 1) << 20)

    # --- peripheral request interface (cosim.dmarequest) ---

    @property
    def request_lines(self) -> int:
        return self.num_peripherals

    def connect_request_line(self, line: int, on_flush: Callable[[], None]) -> None:
        if not 0 <= line < self.num_peripherals:
            raise ValueError(f"{self.name} has request lines 0..{self.num_peripherals - 1}, not {line}")
        self.flush_handlers[line] = on_flush

    def dma_request(self, line: int, burst: bool, last: bool) -> None:
        """A peripheral asserts a request.  One request per line stays pending until a DMAWFP
        consumes it: DMAWFPB a burst request, DMAWFPP either type, DMAWFPS a single one — a
        DMAWFPS goes on past a burst request but leaves it pending, for a DMAWFPB or DMAFLUSHP
        (the request FIFO's rules in the DMA-330 documentation)."""
        with self.lock:
            kind = BURST if burst else SINGLE
            if self.pending_requests.get(line) == (kind, last):
                return  # a level already asserted: nothing changes
            self.trace.instant(f"{self.name} request line {line}", "burst" if burst else "single",
                               last=last)
            for ch in self.channels:
                if ch.state == State.WFP and ch.wait_on == line and accepts(ch.wfp_op, kind):
                    self._accept_request(ch, ch.wfp_op, kind, last)
                    if leaves_pending(ch.wfp_op, kind):
                        self.pending_requests[line] = (kind, last)
                    self._wake(ch)
                    return
            self.pending_requests[line] = (kind, last)

    def dma_request_withdraw(self, line: int) -> None:
        with self.lock:
            self.pending_requests.pop(line, None)

    def standing_order(self, line: int, burst: bool = False) -> int:
        """Single (or burst) requests on ``line`` that will each be served by the same load and
        store, with nothing else happening: the iterations left of the slave loop a channel
        waits in (a DMAWFPS or DMAWFPB, one load, one store, a DMALPEND back to it, as Linux's
        pl330 emits for a transfer).  0 when no channel waits so."""
        with self.lock:
            found = self._parked_in_slave_loop(line, BURST if burst else SINGLE)
            if found is None:
                return 0
            ch, loop = found
            return loop.iterations_left(ch.lc)

    def serve_requests(self, line: int, count: int, burst: bool = False) -> int:
        """Serves ``count`` single (or burst) requests on ``line`` at once (at most the standing
        order), with exactly the effect of ``count`` iterations of the slave loop: one bus
        transfer each way instead of a load and a store per request.  Returns how many."""
        kind = BURST if burst else SINGLE
        with self.lock:
            found = self._parked_in_slave_loop(line, kind) if count > 0 else None
            if found is None:
                return 0
            ch, loop = found
            count = min(count, loop.iterations_left(ch.lc))
            n = ch.src_burst()
            total = count * n
            assert self.dma is not None
            ch.state = State.EXECUTING  # requests the peripheral asserts meanwhile stay pending
            try:
                data = self.dma.read(ch.sar, total, beat=ch.src_beat(), increment=ch.src_inc())
            except DmaFault:
                ch.state = State.WFP  # the interpreter finds the exact faulting load
                return 0
            if ch.first_src is None:
                ch.first_src, ch.first_dst = ch.sar, ch.dar
            try:
                self.dma.write(ch.dar, data, beat=ch.dst_beat(), increment=ch.dst_inc())
            except DmaFault:
                return self._serve_to_the_fault(ch, loop, data)
            if ch.src_inc():
                ch.sar = (ch.sar + total) & 0xFFFFFFFF
            if ch.dst_inc():
                ch.dar = (ch.dar + total) & 0xFFFFFFFF
            ch.moved += total
            ch.request = kind
            loop.advance(ch, count)
            self._wake(ch)
            return count

    def _serve_to_the_fault(self, ch: Channel, loop: SlaveLoop, data: bytes) -> int:
        """A bulk store faulted: store request by request, as the loop would have, and fault at
        the store that cannot be done.  The units read after it from the peripheral are lost
        (on silicon they would still be in its FIFO when the driver aborts the transfer)."""
        n = ch.src_burst()
        assert self.dma is not None
        for served in range(len(data) // n):
            try:
                self.dma.write(ch.dar, data[served * n:(served + 1) * n], beat=ch.dst_beat(),
                               increment=ch.dst_inc())
            except DmaFault:
                loop.advance(ch, served)
                if ch.pc == loop.end:  # the faulting store is the first of the next outer pass
                    assert loop.outer_counter is not None
                    ch.lc[loop.outer_counter] -= 1
                    ch.lc[loop.counter] = loop.pass_length - 1
                if ch.src_inc():
                    ch.sar = (ch.sar + (served + 1) * n) & 0xFFFFFFFF
                ch.pc = loop.store
                self._fault(ch, Fault.DATA_WRITE_ERR)
                self.update_interrupts()
                return served
            ch.moved += n
            if ch.dst_inc():
                ch.dar = (ch.dar + n) & 0xFFFFFFFF
            if ch.src_inc():
                ch.sar = (ch.sar + n) & 0xFFFFFFFF
        raise AssertionError("a bulk store faulted but every request's store succeeded")

    def _parked_in_slave_loop(self, line: int, kind: int) -> tuple[Channel, SlaveLoop] | None:
        """The channel waiting on ``line`` at the DMAWFP for ``kind`` (DMAWFPS, DMAWFPB) of a slave
        loop, and that loop."""
        for ch in self.channels:
            if ch.state == State.WFP and ch.wait_on == line:
                break
        else:
            return None
        if ch.wfp_op & 0x3 != (0x2 if kind == BURST else 0x0) or ch.mfifo or ch.swap_bytes() != 1:
            return None
        if ch.src_burst() != ch.dst_burst():
            return None
        wfp = (ch.pc - 2) & 0xFFFFFFFF
        if wfp not in ch.slave_loops:
            ch.slave_loops[wfp] = self._slave_loop(ch, wfp, kind)
        loop = ch.slave_loops[wfp]
        return None if loop is None else (ch, loop)

    def _slave_loop(self, ch: Channel, wfp: int, kind: int) -> SlaveLoop | None:
        """The loop if the code at ``wfp`` is a DMAWFP; a load; a store; a DMALPEND (not forever,
        unconditional) back to the DMAWFP or to a DMAFLUSHP of the same peripheral just before
        it (Linux's pl330 emits both) — the load and store in the forms that execute after a
        request of ``kind`` — else None."""
        try:
            code = self._fetch(ch, wfp, 8)
        except DmaFault:
            return None
        try:
            before = self._fetch(ch, (wfp - 2) & 0xFFFFFFFF, 2)
        except DmaFault:
            before = b""
        at, store = 2, 0
        for name, peripheral_form in (("DMALD", "DMALDP"), ("DMAST", "DMASTP")):
            store, op = at, code[at]
            if DECODE[op] is BY_NAME[peripheral_form] and (op >> 1) & 1 == kind:  # DMALDP<S|B>
                at += 2
            elif DECODE[op] is BY_NAME[name] and op & 0x3 in (0x0, 0x1 | kind << 1):  # DMALD, or <S|B>
                at += 1
            else:
                return None
        lpend = code[at]
        if DECODE[lpend] is not BY_NAME["DMALPEND"] or not lpend & 0x10 or lpend & 0x1:
            return None
        start = (wfp + at - code[at + 1]) & 0xFFFFFFFF
        flush = before == bytes([BY_NAME["DMAFLUSHP"].opcode, code[1]])
        if start != wfp and not (flush and start == (wfp - 2) & 0xFFFFFFFF):
            return None
        counter, end = (lpend >> 2) & 1, (wfp + at) & 0xFFFFFFFF
        outer = self._outer_loop(ch, counter, start, end)
        return SlaveLoop(counter, start, (wfp + store) & 0xFFFFFFFF, end, *outer)

    def _outer_loop(self, ch: Channel, counter: int, start: int, end: int) -> tuple[int, int] | tuple[()]:
        """(outer counter, iterations per pass) if the loop ending at ``end`` is Linux's inner
        loop: right after it a DMALPEND (not forever, unconditional) of the other counter back
        to a DMALP of ``counter`` just before ``start``; else ()."""
        try:
            lpend, jump = self._fetch(ch, (end + 2) & 0xFFFFFFFF, 2)
            lp, count = self._fetch(ch, (start - 2) & 0xFFFFFFFF, 2)
        except DmaFault:
            return ()
        if DECODE[lpend] is not BY_NAME["DMALPEND"] or not lpend & 0x10 or lpend & 0x1:
            return ()
        outer = (lpend >> 2) & 1
        if outer == counter or lp != BY_NAME["DMALP"].opcode | counter << 1:
            return ()
        if (end + 2 - jump) & 0xFFFFFFFF != (start - 2) & 0xFFFFFFFF:
            return ()
        return outer, count + 1

    @staticmethod
    def _accept_request(ch: Channel, wfp_op: int, kind: int, last: bool) -> None:
        ch.request = kind if wfp_op & 1 else (wfp_op >> 1) & 1  # DMAWFPP takes the peripheral's
        ch.last_request = last

    # --- status registers ---

    def channel(self, index: int) -> Channel | None:
        return self.channels[index] if index < self.num_channels else None

    def channel_status(self, index: int) -> int:
        ch = self.channel(index)
        if ch is None:
            return 0
        waiting = ch.wait_on << 4 if ch.state in (State.WFE, State.WFP) else 0
        return ch.state | waiting | ch.nonsecure << 21

    def _channel_field(self, index: int, name: str) -> int:
        ch = self.channel(index)
        return 0 if ch is None else getattr(ch, name)

    def channel_pc(self, index: int) -> int:
        return self._channel_field(index, "pc")

    def channel_sar(self, index: int) -> int:
        return self._channel_field(index, "sar")

    def channel_dar(self, index: int) -> int:
        return self._channel_field(index, "dar")

    def channel_ccr(self, index: int) -> int:
        return self._channel_field(index, "ccr")

    def channel_lc0(self, index: int) -> int:
        ch = self.channel(index)
        return 0 if ch is None else ch.lc[0]

    def channel_lc1(self, index: int) -> int:
        ch = self.channel(index)
        return 0 if ch is None else ch.lc[1]

    def fault_type(self, index: int) -> int:
        return self._channel_field(index, "fault")

    def channel_fault_status(self) -> int:
        return sum(1 << ch.index for ch in self.channels if ch.state == State.FAULTING)

    def masked_interrupts(self) -> int:
        return self.regs.INT_EVENT_RIS.value & self.regs.INTEN.value

    def clear_interrupts(self, value: int) -> None:
        self.regs.INT_EVENT_RIS.value &= ~(value & self.regs.INTEN.value)
        self.update_interrupts()

    def update_interrupts(self, _value: int = 0) -> None:
        self.irq("events").set(bool(self.masked_interrupts()))
        self.irq("abort").set(bool(self.regs.FSRD.value or self.channel_fault_status()))

    # --- the debug interface: how Linux issues DMAGO, DMASEV and DMAKILL ---

    def debug_command(self, value: int) -> None:
        if value & 0x3:
            return  # reserved commands
        inst0, inst1 = self.regs.DBGINST0.value, self.regs.DBGINST1.value
        insn = bytes([(inst0 >> 16) & 0xFF, (inst0 >> 24) & 0xFF]) + inst1.to_bytes(4, "little")
        found = DECODE[insn[0]]
        name = found.name if found else ""
        if inst0 & 1:  # to a channel thread: only DMAKILL is allowed
            ch = self.channel((inst0 >> 8) & 0x7)
            if ch is not None:
                if name == "DMAKILL":
                    self._kill(ch)
                else:
                    self._fault(ch, Fault.DBG_INSTR)
        elif name == "DMAGO":
            self._go(insn[1] & 0x7, int.from_bytes(insn[2:6], "little"), bool(insn[0] & 2))
        elif name == "DMASEV":
            self._signal_event(insn[1] >> 3)
        elif name == "DMAKILL":  # of the manager: clears its fault
            self.regs.FSRD.value = 0
            self.regs.FTRD.value = 0
        else:
            self._manager_fault(Fault.DBG_INSTR)
        self.update_interrupts()

    def _manager_fault(self, kind: Fault) -> None:
        self.regs.FSRD.value = 1
        self.regs.FTRD.value |= kind

    def _go(self, index: int, address: int, nonsecure: bool) -> None:
        ch = self.channel(index)
        if ch is None or ch.state != State.STOPPED:
            self._manager_fault(Fault.DMAGO_ERR)
            return
        ch.pc, ch.nonsecure, ch.state = address, nonsecure, State.EXECUTING
        ch.started_ns, ch.first_src, ch.first_dst, ch.moved = self.trace.now(), None, None, 0
        ch.mfifo.clear()
        ch.icache.clear()
        ch.decoded.clear()
        ch.loops.clear()
        ch.slave_loops.clear()
        self._wake(ch)

    def _kill(self, ch: Channel) -> None:
        ch.state, ch.fault = State.STOPPED, 0
        ch.mfifo.clear()

    def _signal_event(self, event: int) -> None:
        if event >= self.num_events:
            return
        if self.regs.INTEN.value & (1 << event):
            self.regs.INT_EVENT_RIS.value |= 1 << event
            return
        for ch in self.channels:
            if ch.state == State.WFE and ch.wait_on == event:
                self._wake(ch)
                return
        self.pending_events |= 1 << event

    def _fault(self, ch: Channel, kind: Fault) -> None:
        ch.fault |= kind
        ch.state = State.FAULTING
        self._trace_transfer(ch, f"fault {Fault(kind).name}")

    def _trace_transfer(self, ch: Channel, name: str) -> None:
        src = "-" if ch.first_src is None else f"{ch.first_src:#x}"
        dst = "-" if ch.first_dst is None else f"{ch.first_dst:#x}"
        self.trace.span(f"{self.name} channel {ch.index}", name, ch.started_ns, self.trace.now(),
                        src=src, dst=dst, length=ch.moved)

    # --- channel threads ---

    def _fetch(self, ch: Channel, address: int, length: int) -> bytes:
        out = b""
        while len(out) < length:
            line = address & ~(ICACHE_LINE - 1)
            data = ch.icache.get(line)
            if data is None:
                assert self.dma is not None
                data = ch.icache[line] = self.dma.read(line, ICACHE_LINE)
            start = address - line
            out += data[start:start + length - len(out)]
            address = line + ICACHE_LINE
        return out

    def _wake(self, ch: Channel) -> None:
        """``ch`` can execute.  One channel runs at a time, as on the DMAC's single bus master: a
        channel woken while another runs (by a request that other channel's store raised) runs
        after it, so a slave loop goes on while its peripheral keeps asking."""
        ch.state = State.EXECUTING
        self.runnable.append(ch)
        if self.running:
            return
        self.running = True
        try:
            while self.runnable:
                self._run(self.runnable.popleft())
        finally:
            self.running = False

    def _run(self, ch: Channel) -> None:
        """Executes ``ch`` until it stops, faults or waits."""
        decoded = ch.decoded
        for _ in range(STEP_LIMIT):
            if ch.state != State.EXECUTING:
                break
            here = ch.pc
            insn = decoded.get(here)
            if insn is None:
                try:
                    head = self._fetch(ch, here, 1)[0]
                    size = instruction_size(head)
                    if size == 0:
                        self._fault(ch, Fault.UNDEF_INSTR)
                        break
                    insn = decoded[here] = self._fetch(ch, here, size) if size > 1 else bytes([head])
                except DmaFault:
                    self._fault(ch, Fault.INSTR_FETCH_ERR)
                    break
            self._execute(ch, insn)
            if ch.state == State.FAULTING:
                ch.pc = here  # CPC names the instruction that faulted
        else:
            self._fault(ch, Fault.LOCKUP_ERR)
        self.update_interrupts()

    def _execute(self, ch: Channel, insn: bytes) -> None:
        here = ch.pc
        ch.pc = (ch.pc + len(insn)) & 0xFFFFFFFF
        self._handlers[insn[0]](ch, insn, here)

    # --- the instructions (INSTRUCTIONS below gives their encodings) ---

    def _op_dmald(self, ch: Channel, insn: bytes, here: int) -> None:
        if self._condition(ch, insn[0]):
            self._load(ch)

    def _op_dmast(self, ch: Channel, insn: bytes, here: int) -> None:
        if self._condition(ch, insn[0]):
            self._store(ch)

    def _op_dmaldp(self, ch: Channel, insn: bytes, here: int) -> None:
        if self._peripheral_ok(ch, insn) and self._condition(ch, insn[0] | 1):
            self._load(ch)

    def _op_dmastp(self, ch: Channel, insn: bytes, here: int) -> None:
        if self._peripheral_ok(ch, insn) and self._condition(ch, insn[0]):
            self._store(ch)

    def _op_dmawfp(self, ch: Channel, insn: bytes, here: int) -> None:
        if self._peripheral_ok(ch, insn):
            self._wait_for_peripheral(ch, insn[0], insn[1] >> 3)

    def _op_dmaflushp(self, ch: Channel, insn: bytes, here: int) -> None:
        # drop the request; the peripheral asserts it anew if it must
        if self._peripheral_ok(ch, insn):
            self.pending_requests.pop(insn[1] >> 3, None)
            self.flush_handlers.get(insn[1] >> 3, lambda: None)()

    def _op_dmalpend(self, ch: Channel, insn: bytes, here: int) -> None:
        self._loop_end(ch, insn[0], insn[1], here)

    def _op_dmaend(self, ch: Channel, insn: bytes, here: int) -> None:
        ch.state = State.STOPPED
        ch.mfifo.clear()
        self._trace_transfer(ch, "transfer")

    def _op_dmakill(self, ch: Channel, insn: bytes, here: int) -> None:
        self._kill(ch)

    def _op_dmastz(self, ch: Channel, insn: bytes, here: int) -> None:
        self._store(ch, zeros=True)

    def _op_nothing(self, ch: Channel, insn: bytes, here: int) -> None:
        """DMARMB, DMAWMB, DMANOP: nothing to order or wait for here."""

    def _op_dmalp(self, ch: Channel, insn: bytes, here: int) -> None:
        ch.lc[(insn[0] >> 1) & 1] = insn[1]

    def _op_dmasev(self, ch: Channel, insn: bytes, here: int) -> None:
        if insn[1] >> 3 >= self.num_events:
            self._fault(ch, Fault.EVENT_ERR)
        else:
            self._signal_event(insn[1] >> 3)

    def _op_dmawfe(self, ch: Channel, insn: bytes, here: int) -> None:
        self._wait_for_event(ch, insn[1] >> 3)

    def _op_dmaaddh(self, ch: Channel, insn: bytes, here: int) -> None:  # DMAADNH too
        op = insn[0]
        delta = int.from_bytes(insn[1:3], "little") | (0xFFFF0000 if op & 0x08 else 0)
        if op & 2:
            ch.dar = (ch.dar + delta) & 0xFFFFFFFF
        else:
            ch.sar = (ch.sar + delta) & 0xFFFFFFFF

    def _op_dmamov(self, ch: Channel, insn: bytes, here: int) -> None:
        value = int.from_bytes(insn[2:6], "little")
        if insn[1] == SAR:
            ch.sar = value
        elif insn[1] == CCR:
            ch.ccr = value
        elif insn[1] == DAR:
            ch.dar = value
        else:
            self._fault(ch, Fault.OPERAND_INVALID)

    def _op_undefined(self, ch: Channel, insn: bytes, here: int) -> None:
        """DMAGO in a channel program (manager only), or an encoding no instruction has."""
        self._fault(ch, Fault.UNDEF_INSTR)

    @staticmethod
    def _condition(ch: Channel, op: int) -> bool:
        """x (bit 0) makes the instruction conditional on the request type bs (bit 1)."""
        if not op & 1:
            return True
        return ch.request == ((op >> 1) & 1)

    def _peripheral_ok(self, ch: Channel, insn: bytes) -> bool:
        if insn[1] & 0x7 or insn[1] >> 3 >= self.num_peripherals:
            self._fault(ch, Fault.OPERAND_INVALID)
            return False
        return True

    def _load(self, ch: Channel) -> None:
        n = ch.src_burst()
        if len(ch.mfifo) + n > self.mfifo_bytes:
            self._fault(ch, Fault.MFIFO_ERR)
            return
        assert self.dma is not None
        if ch.first_src is None:
            ch.first_src = ch.sar
        try:
            ch.mfifo += self.dma.read(ch.sar, n, beat=ch.src_beat(), increment=ch.src_inc())
        except DmaFault:
            self._fault(ch, Fault.DATA_READ_ERR)
            return
        if ch.src_inc():
            ch.sar = (ch.sar + n) & 0xFFFFFFFF

    def _store(self, ch: Channel, zeros: bool = False) -> None:
        n = ch.dst_burst()
        if zeros:
            data = bytes(n)
        elif len(ch.mfifo) < n:
            self._fault(ch, Fault.ST_DATA_UNAVAILABLE)
            return
        else:
            data = swap(bytes(ch.mfifo[:n]), ch.swap_bytes())
            del ch.mfifo[:n]
        assert self.dma is not None
        if ch.first_dst is None:
            ch.first_dst = ch.dar
        try:
            self.dma.write(ch.dar, data, beat=ch.dst_beat(), increment=ch.dst_inc())
        except DmaFault:
            self._fault(ch, Fault.DATA_WRITE_ERR)
            return
        ch.moved += n
        if ch.dst_inc():
            ch.dar = (ch.dar + n) & 0xFFFFFFFF

    def _loop_end(self, ch: Channel, op: int, jump: int, here: int) -> None:
        forever, counter = not op & 0x10, (op >> 2) & 1
        if not self._condition(ch, op):
            return
        if not forever and ch.lc[counter] == 0:
            return  # the loop is done: fall through
        if forever and ch.last_request:
            ch.last_request = False  # the peripheral's last request ends a DMALPFE loop
            return
        start = (here - jump) & 0xFFFFFFFF
        if not forever and self._bulk_loop(ch, start, here, counter):
            return
        if not forever:
            ch.lc[counter] -= 1
        ch.pc = start

    def _bulk_loop(self, ch: Channel, start: int, end: int, counter: int) -> bool:
        """Runs the remaining iterations of a pure burst-copy loop as one transfer."""
        key = (start, end)
        if key not in ch.loops:
            try:
                body = self._fetch(ch, start, end - start)
            except DmaFault:
                return False
            ld, st = BY_NAME["DMALD"].opcode, BY_NAME["DMAST"].opcode  # unconditional forms
            ch.loops[key] = bool(body) and len(body) % 2 == 0 and all(
                body[i] == ld and body[i + 1] == st for i in range(0, len(body), 2))
        n = ch.src_burst()
        if not ch.loops[key] or ch.mfifo or n != ch.dst_burst() or ch.swap_bytes() != 1:
            return False
        if not (ch.src_inc() and ch.dst_inc()):
            return False
        per_iteration = n * ((end - start) // 2)
        total = ch.lc[counter] * per_iteration
        outer = self._outer_loop(ch, counter, start, end)
        if outer:  # Linux's outer loop only repeats this one: its passes too
            outer_counter, pass_length = outer
            total += ch.lc[outer_counter] * pass_length * per_iteration
        if ch.sar < ch.dar + total and ch.dar < ch.sar + total:
            return False  # overlapping: burst order matters, interpret it
        if ch.sar + total > 1 << 32 or ch.dar + total > 1 << 32:
            return False
        assert self.dma is not None
        try:
            self.dma.copy(ch.sar, ch.dar, total)
        except DmaFault:
            return False  # let the interpreter find the exact faulting burst
        ch.sar += total
        ch.dar += total
        ch.moved += total
        ch.lc[counter] = 0
        if outer:
            ch.lc[outer[0]] = 0
        ch.pc = end  # DMALPEND again: it now falls through, and the outer one after it
        return True

    def _wait_for_peripheral(self, ch: Channel, op: int, peripheral: int) -> None:
        request = self.pending_requests.get(peripheral)
        if request is None or not accepts(op, request[0]):
            ch.state, ch.wait_on, ch.wfp_op = State.WFP, peripheral, op
            return
        if not leaves_pending(op, request[0]):
            del self.pending_requests[peripheral]
        self._accept_request(ch, op, *request)

    def _wait_for_event(self, ch: Channel, event: int) -> None:
        if event >= self.num_events:
            self._fault(ch, Fault.EVENT_ERR)
        elif self.pending_events & (1 << event):
            self.pending_events &= ~(1 << event)
        else:
            ch.state, ch.wait_on = State.WFE, event


def accepts(wfp_op: int, kind: int) -> bool:
    """Whether a channel in this DMAWFP form goes on at a request of this type."""
    return kind == BURST or wfp_op & 0x3 != 0x2


def leaves_pending(wfp_op: int, kind: int) -> bool:
    """A DMAWFPS going on at a burst request leaves it for a DMAWFPB or DMAFLUSHP."""
    return wfp_op & 0x3 == 0x0 and kind == BURST


@dataclass(frozen=True)
class Instruction:
    """One row of the DMA-330's instruction table: ``opcode`` with its variable bits zero, the
    ``mask`` of the bits that name the instruction, its size in bytes."""

    name: str
    opcode: int
    mask: int
    size: int
    undefined: tuple[int, ...] = ()  # encodings under the mask that no instruction has
    handler: str = ""  # the method that executes it, if not _op_<name>


INSTRUCTIONS = (  # the first row that matches decides: DMASTP comes before DMALPEND
    Instruction("DMAEND", 0x00, 0xFF, 1),
    Instruction("DMAKILL", 0x01, 0xFF, 1),
    Instruction("DMALD", 0x04, 0xFC, 1, undefined=(0x06,)),  # bit 0: conditional, bit 1: burst
    Instruction("DMAST", 0x08, 0xFC, 1, undefined=(0x0A,)),
    Instruction("DMASTZ", 0x0C, 0xFF, 1),
    Instruction("DMARMB", 0x12, 0xFF, 1, handler="_op_nothing"),
    Instruction("DMAWMB", 0x13, 0xFF, 1, handler="_op_nothing"),
    Instruction("DMANOP", 0x18, 0xFF, 1, handler="_op_nothing"),
    Instruction("DMALP", 0x20, 0xFD, 2),  # bit 1: loop counter
    Instruction("DMALDP", 0x25, 0xFD, 2),  # bit 1: burst
    Instruction("DMASTP", 0x29, 0xFD, 2),
    # bits 0-1 as DMALD's, bit 2: loop counter, bit 4: not forever (DMALPEND) / forever (DMALPFE)
    Instruction("DMALPEND", 0x28, 0xE8, 2, undefined=(0x2A, 0x2E, 0x3A, 0x3E)),
    Instruction("DMAWFP", 0x30, 0xFC, 2, undefined=(0x33,)),  # bits 0-1: single, periph, burst
    Instruction("DMASEV", 0x34, 0xFF, 2),
    Instruction("DMAFLUSHP", 0x35, 0xFF, 2),
    Instruction("DMAWFE", 0x36, 0xFF, 2),
    Instruction("DMAADDH", 0x54, 0xFD, 3),  # bit 1: DAR
    Instruction("DMAADNH", 0x5C, 0xFD, 3, handler="_op_dmaaddh"),  # a negative half-word
    Instruction("DMAGO", 0xA0, 0xFD, 6, handler="_op_undefined"),  # manager only (debug path)
    Instruction("DMAMOV", 0xBC, 0xFF, 6),
)
BY_NAME = {i.name: i for i in INSTRUCTIONS}


def _decode_table() -> tuple[Instruction | None, ...]:
    table: list[Instruction | None] = []
    for op in range(256):
        table.append(next((i for i in INSTRUCTIONS
                           if op & i.mask == i.opcode and op not in i.undefined), None))
    return tuple(table)


DECODE = _decode_table()  # first byte -> instruction (None: undefined)


def instruction_size(op: int) -> int:
    """Length of the instruction starting with ``op``; 0 for an undefined encoding."""
    found = DECODE[op]
    return found.size if found else 0


def swap(data: bytes, group: int) -> bytes:
    if group == 1:
        return data
    return b"".join(data[i:i + group][::-1] for i in range(0, len(data), group))


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"pl330": Pl330}


@hookimpl
def cosim_device_tree(peripheral: Peripheral, node: DtNode) -> None:
    if isinstance(peripheral, Pl330):
        node.set("clocks", [Ref("/apb-pclk")])
        node.set("clock-names", "apb_pclk")
