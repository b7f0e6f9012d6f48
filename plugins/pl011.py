"""ARM PrimeCell UART (PL011), r1p5: the register model Linux's amba-pl011 driver programs.

The line runs on the guest's clock at the rate the driver programmed (UARTCLK / (16 x IBRD.FBRD),
10 bits a character): a character leaves the 32-entry TX FIFO, or arrives in the 32-entry RX FIFO
from the host's queue, one character time after the one before.  When the RX FIFO is full the
host holds back (ideal flow control): nothing is lost.  The line runs lazily, up to the time of
each access; the model asks for a tick only at the moments something the driver can be told of
happens (a FIFO level crossing a trigger, a DMA request changing, the receive timeout 32 bit
times after the last character), so a 64 KiB transfer costs a tick per FIFO load, not per byte.
UARTCLK is virt's 24 MHz apb-pclk unless the platform gives ``clock_hz`` (the device tree then
gets a fixed clock of that rate as the UART's uartclk).

DMA (DMACR.RXDMAE/TXDMAE, request outputs "rx" and "tx" wired by the platform's ``dmas``), as the
TRM defines the request lines: RX asks for a burst while the RX FIFO is at or above its watermark
and for a single transfer while it holds a character; TX asks for a burst while the TX FIFO is at or
below its watermark and for a single transfer while it has room.
"""

from __future__ import annotations

from collections import deque

from cosim.api import (
    DmaRequestPort,
    DtAliases,
    DtNode,
    Field,
    HostBuffer,
    Peripheral,
    Ref,
    Register,
    Timer,
    hookimpl,
)

FIFO_DEPTH = 32
APB_PCLK_HZ = 24_000_000  # QEMU virt's apb-pclk: uartclk unless the platform gives clock_hz
BITS_PER_CHAR = 10  # start, 8 data, stop
RECEIVE_TIMEOUT_BITS = 32  # RT: the RX FIFO holds data and nothing arrived for this many bits
# IFLS trigger levels, in eighths of the FIFO: 1/8, 1/4, 1/2, 3/4, 7/8
TRIGGER_EIGHTHS = (1, 2, 4, 6, 7)

INTERRUPT_FIELDS = [  # the same bits in IMSC, RIS, MIS and ICR
    Field("RIM", 0), Field("CTSM", 1), Field("DCDM", 2), Field("DSRM", 3), Field("RX", 4),
    Field("TX", 5), Field("RT", 6), Field("FE", 7), Field("PE", 8), Field("BE", 9), Field("OE", 10),
]


class Pl011(Peripheral):
    compatible = ("arm,pl011", "arm,primecell")
    primecell_id = 0x00341011  # part 0x011, designer ARM (0x41), revision 3: 32-entry FIFOs
    irq_names = ("uart",)
    dma_request_names = ("rx", "tx")

    DR = Register(0x000, width=16, fields=[Field("DATA", 0, 8)], fifo_entry_bits=8,
                  on_read="read_data", on_write="write_data")
    RSR = Register(0x004, fields=[Field("FE", 0), Field("PE", 1), Field("BE", 2), Field("OE", 3)],
                   on_write="clear_errors", doc="receive status / error clear")
    FR = Register(0x018, access="ro", on_read="flags", fields=[
        Field("CTS", 0, doc="reads as asserted: the host side is always ready"), Field("DSR", 1),
        Field("DCD", 2), Field("BUSY", 3), Field("RXFE", 4), Field("TXFF", 5), Field("RXFF", 6),
        Field("TXFE", 7), Field("RI", 8)])
    ILPR = Register(0x020, width=8)
    IBRD = Register(0x024, width=16)
    FBRD = Register(0x028, width=8, fields=[Field("DIVFRAC", 0, 6)])
    LCR_H = Register(0x02C, width=8, fields=[
        Field("BRK", 0), Field("PEN", 1), Field("EPS", 2), Field("STP2", 3), Field("FEN", 4),
        Field("WLEN", 5, 2), Field("SPS", 7)])
    CR = Register(0x030, width=16, reset=0x0300, fields=[
        Field("UARTEN", 0), Field("SIREN", 1), Field("SIRLP", 2), Field("LBE", 7), Field("TXE", 8),
        Field("RXE", 9), Field("DTR", 10), Field("RTS", 11), Field("OUT1", 12), Field("OUT2", 13),
        Field("RTSEN", 14), Field("CTSEN", 15)])
    IFLS = Register(0x034, width=8, reset=0x12,
                    fields=[Field("TXIFLSEL", 0, 3), Field("RXIFLSEL", 3, 3)])
    IMSC = Register(0x038, width=16, fields=INTERRUPT_FIELDS)
    RIS = Register(0x03C, width=16, access="ro", fields=INTERRUPT_FIELDS)
    MIS = Register(0x040, width=16, access="ro", on_read="masked_status", fields=INTERRUPT_FIELDS)
    ICR = Register(0x044, width=16, access="wo", on_write="clear_interrupts", fields=INTERRUPT_FIELDS)
    RX, TX, RT = RIS.mask("RX"), RIS.mask("TX"), RIS.mask("RT")
    DMACR = Register(0x048, width=8, fields=[Field("RXDMAE", 0), Field("TXDMAE", 1),
                                            Field("DMAONERR", 2)])

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.rx_fifo: deque[int] = deque()
        self.tx_fifo: deque[int] = deque()
        self.host_queue: deque[int] = deque()
        self.transmitted = HostBuffer(self.lock)
        # UARTCLK: the baud rate is at most a sixteenth of it (3 Mbaud needs 48 MHz)
        self.clock_hz = int(self.properties.get("clock_hz", APB_PCLK_HZ))
        self._tx_done_ns = 0  # when the character at the head of the TX FIFO has left
        self._rx_due_ns = 0  # when the host's next character has arrived, if it may come
        self._rx_last_ns = 0  # when the newest character arrived
        self._timeout_armed = False  # no receive timeout yet since that character
        self._tx_was_above = True  # so that an idle, empty FIFO asserts the TX interrupt once
        self._event: Timer | None = None
        self._refilling = False  # a standing TX order's burst is being written into the FIFO
        self._tx_burst = 0  # entries a standing order's burst brought, once one has been served

    def connect_dma_request(self, port: DmaRequestPort) -> None:
        super().connect_dma_request(port)
        port.on_flush = self._request_dma  # still in need after a flush: ask again

    # --- host side ---

    def send_to_guest(self, data: bytes) -> None:
        """Queues bytes for the guest: the first arrives one character time after the guest's
        time the harness gives them at, the rest back to back as the RX FIFO has room."""
        data = bytes(data)
        with self.lock:
            self.soon(lambda: self._host_sends(data))

    def _host_sends(self, data: bytes) -> None:
        self._run_line()
        if not self.host_queue:
            self._rx_due_ns = max(self._rx_due_ns, self.now() + self.char_ns())
        self.host_queue.extend(data)
        self._settle()

    def take_from_guest(self, count: int, timeout: float) -> bytes:
        """Waits until the guest has sent ``count`` bytes (or ``timeout`` passes); takes them."""
        with self.lock:  # what has left the FIFO by the guest's time now, between ticks too
            if self._run_line():
                self._settle()
        return self.transmitted.take(count, timeout)

    # --- the line, on the guest's clock ---

    def baud(self) -> float:
        divisor = self.regs.IBRD.value + self.regs.FBRD.DIVFRAC / 64
        return self.clock_hz / 16 / max(divisor, 1.0)

    def char_ns(self) -> int:
        return round(BITS_PER_CHAR * 1e9 / self.baud())

    def read(self, offset: int, size: int) -> int:
        with self.lock:
            changed = self._run_line()
            value = super().read(offset, size)
            if changed or offset == self.DR.offset:  # a DR read takes from the RX FIFO
                self._settle()
            return value

    def write(self, offset: int, size: int, data: int) -> None:
        """Every write may change an interrupt, a DMA request or the line (CR, LCR_H, IFLS,
        IMSC, DMACR, DR, ICR): the line runs to now first, the outputs settle after."""
        with self.lock:
            if self._refilling:  # a burst the line itself had served: it goes on after
                super().write(offset, size, data)
                return
            self._run_line()
            super().write(offset, size, data)
            self._settle()

    def write_beats(self, offset: int, size: int, data: bytes) -> None:
        """A DMA burst into DR: the characters go into the TX FIFO at once (as far as it has
        room), without a bus write each."""
        if offset != self.DR.offset or size != 1 or self.regs.CR.LBE or self.in_reset:
            return super().write_beats(offset, size, data)
        with self.lock:
            if not self._refilling:
                self._run_line()
            if self.regs.CR.UARTEN and self.regs.CR.TXE:
                if not self.tx_fifo and data:
                    self._tx_done_ns = self.now() + self.char_ns()
                self.tx_fifo.extend(data[:max(self._depth() - len(self.tx_fifo), 0)])
            if not self._refilling:
                self._settle()

    def _run_line(self) -> bool:
        """Moves the line on to the guest's time now; True if a FIFO changed."""
        now, char = self.now(), self.char_ns()
        sent = []
        refill = self._standing_tx_bursts() > 0
        while self.tx_fifo and self._tx_done_ns <= now:
            sent.append(self.tx_fifo.popleft())
            self._tx_done_ns += char  # the next one follows back to back
            if refill and len(self.tx_fifo) == self._tx_trigger():
                refill = self._refill_tx()
        if sent:
            self.transmitted.append(sent)
        arrived = 0
        while self.host_queue and self._rx_due_ns <= now:
            self._check_timeout(self._rx_due_ns)
            if not self._receiving() or len(self.rx_fifo) >= self._depth():
                self._rx_due_ns = now + char  # held back: it starts once there is room
                break
            self._receive(self.host_queue.popleft(), self._rx_due_ns)
            self._rx_due_ns += char
            arrived += 1
        timed_out = self._check_timeout(now)
        return bool(sent or arrived or timed_out)

    def _standing_tx_bursts(self) -> int:
        """Bursts a TX DMA channel has promised in a row while the TX interrupt is masked (as
        amba-pl011 has it with DMA): then the FIFO's refills at its watermark change nothing
        the driver sees until the order ends, and the line does them as it runs."""
        tx = self.dma_requests.get("tx")
        if tx is None or not self.regs.DMACR.TXDMAE or self.regs.IMSC.value & self.TX:
            return 0
        return tx.standing(burst=True)

    def _refill_tx(self) -> bool:
        """The TX FIFO drained to its watermark on a standing order: the burst it asks for is
        served at that character's time, as a tick there would have; True while more stand."""
        before = len(self.tx_fifo)
        self._refilling = True
        try:
            self.dma_requests["tx"].serve(1, burst=True)
        finally:
            self._refilling = False
        self._tx_burst = max(len(self.tx_fifo) - before, 0)
        return self._standing_tx_bursts() > 0

    def _receive(self, byte: int, at_ns: int) -> None:
        self.rx_fifo.append(byte)
        self._rx_last_ns, self._timeout_armed = at_ns, True
        if len(self.rx_fifo) >= self._rx_trigger():
            self.regs.RIS.value |= self.RX  # the TRM: it asserts as the FIFO reaches its trigger

    def _timeout_ns(self) -> int:
        return self._rx_last_ns + round(RECEIVE_TIMEOUT_BITS * 1e9 / self.baud())

    def _check_timeout(self, at_ns: int) -> bool:
        if self._timeout_armed and self.rx_fifo and at_ns >= self._timeout_ns():
            self._timeout_armed = False
            self.regs.RIS.value |= self.RT
            return True
        return False

    def _settle(self) -> None:
        self.update_interrupts()
        self._schedule_next_event()

    def _line_event(self) -> None:
        self._run_line()
        self._settle()

    def _schedule_next_event(self) -> None:
        """A tick at the next moment the driver can see: the TX FIFO draining to a level that
        changes an interrupt or a DMA request, the RX FIFO filling to one, the host's data
        stopping (held back or all sent), the receive timeout."""
        char, depth, dmacr = self.char_ns(), self._depth(), self.regs.DMACR
        times = []
        queued, trigger = len(self.tx_fifo), self._tx_trigger()
        standing = self._standing_tx_bursts() if self._tx_burst else 0
        if standing and queued > trigger:  # a tick where the last burst of the order is due
            times.append(self._tx_done_ns + (queued - trigger - 1 + (standing - 1) * self._tx_burst) * char)
        else:
            tx_levels = {0, trigger} | ({depth - 1} if dmacr.TXDMAE else set())
            times += [self._tx_done_ns + (queued - 1 - level) * char for level in tx_levels if level < queued]
        held = len(self.rx_fifo)
        coming = min(depth - held, len(self.host_queue)) if self._receiving() else 0
        if coming > 0:
            rx_levels = {self._rx_trigger(), held + coming}
            rx_levels |= {1} if dmacr.RXDMAE else set()
            times += [self._rx_due_ns + (level - held - 1) * char for level in rx_levels
                      if held < level <= held + coming]
        if self._timeout_armed and self.rx_fifo and coming == 0:
            times.append(self._timeout_ns())
        self._event = self.reschedule(self._event, min(times, default=None), self._line_event)

    # --- register side effects ---

    def _depth(self) -> int:
        return FIFO_DEPTH if self.regs.LCR_H.FEN else 1

    def _receiving(self) -> bool:
        return bool(self.regs.CR.UARTEN and self.regs.CR.RXE)

    def read_data(self) -> int:
        value = self.rx_fifo.popleft() if self.rx_fifo else 0
        if not self.rx_fifo:
            self.regs.RIS.value &= ~self.RT  # the TRM: RT clears when the FIFO empties
        return value

    def write_data(self, value: int) -> None:
        byte = value & 0xFF
        if not (self.regs.CR.UARTEN and self.regs.CR.TXE):
            return
        if self.regs.CR.LBE:
            if len(self.rx_fifo) < self._depth():
                self._receive(byte, self.now())
        elif len(self.tx_fifo) < self._depth():  # a write to a full FIFO is lost, as on silicon
            if not self.tx_fifo:
                self._tx_done_ns = self.now() + self.char_ns()
            self.tx_fifo.append(byte)

    def flags(self) -> int:
        depth = self._depth()
        return self.FR.compose(CTS=1, BUSY=bool(self.tx_fifo), RXFE=not self.rx_fifo,
                               TXFF=len(self.tx_fifo) >= depth, RXFF=len(self.rx_fifo) >= depth,
                               TXFE=not self.tx_fifo)

    def clear_errors(self, _value: int) -> None:
        self.regs.RSR.value = 0

    def masked_status(self) -> int:
        return self.regs.RIS.value & self.regs.IMSC.value

    def clear_interrupts(self, value: int) -> None:
        self.regs.RIS.value &= ~value

    def update_interrupts(self) -> None:
        TX = self.TX
        ris = self.regs.RIS.value
        if len(self.tx_fifo) <= self._tx_interrupt_level():
            if self._tx_was_above:
                ris |= TX  # the FIFO drained to its trigger level
            self._tx_was_above = False
        else:
            ris &= ~TX
            self._tx_was_above = True
        if len(self.rx_fifo) < self._rx_trigger():
            ris &= ~self.RX  # read below its trigger level (arrivals at or above it set it)
        self.regs.RIS.value = ris
        self.irq("uart").set(bool(ris & self.regs.IMSC.value))
        self._request_dma()

    def _rx_trigger(self) -> int:
        """The RX level that raises the RX interrupt and a burst request (IFLS; 1 without FIFO)."""
        return self._fifo_level(self.regs.IFLS.RXIFLSEL) if self.regs.LCR_H.FEN else 1

    def _tx_trigger(self) -> int:
        """The TX level at or below which a burst request asserts (IFLS; 1 without FIFO)."""
        return self._fifo_level(self.regs.IFLS.TXIFLSEL) if self.regs.LCR_H.FEN else 1

    def _tx_interrupt_level(self) -> int:
        """The TX level the TX interrupt waits for: the trigger, or without FIFO an empty
        holding register."""
        return self._tx_trigger() if self.regs.LCR_H.FEN else 0

    @staticmethod
    def _fifo_level(select: int) -> int:
        return FIFO_DEPTH * TRIGGER_EIGHTHS[min(select, 4)] // 8

    def _request_dma(self) -> None:
        rx, tx, dmacr = self.dma_requests.get("rx"), self.dma_requests.get("tx"), self.regs.DMACR
        if rx is not None:
            rx.drive(bool(dmacr.RXDMAE and self.rx_fifo),
                     burst=len(self.rx_fifo) >= self._rx_trigger())
        if tx is not None:
            tx.drive(bool(dmacr.TXDMAE and len(self.tx_fifo) < self._depth()),
                     burst=len(self.tx_fifo) <= self._tx_trigger())


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"pl011": Pl011}


@hookimpl
def cosim_device_tree(peripheral: Peripheral, node: DtNode, aliases: DtAliases) -> None:
    if isinstance(peripheral, Pl011):
        aliases.add("serial", node)  # ttyAMA<n> follows serial<n>: a stable name for tests
        apb = Ref("/apb-pclk")  # QEMU virt's fixed 24 MHz APB clock
        uartclk = apb
        if peripheral.clock_hz != APB_PCLK_HZ:  # a UART clock of its own, as SoCs have
            uartclk = node.fixed_clock("uartclk", peripheral.clock_hz)
        node.set("clocks", [uartclk, apb])
        node.set("clock-names", ["uartclk", "apb_pclk"])
