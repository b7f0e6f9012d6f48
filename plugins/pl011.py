"""ARM PrimeCell UART (PL011), r1p5: the register model Linux's amba-pl011 driver programs.

Both directions run at the line rate the driver programmed (UARTCLK / (16 x IBRD.FBRD), 10 bits a
character), so interrupts come FIFO by FIFO as on a real line: the 32-entry TX FIFO drains to a
host buffer, and host data waits in a host queue until it arrives in the 32-entry RX FIFO.  When
the RX FIFO is full the host holds back (ideal flow control): nothing is lost.

DMA (DMACR.RXDMAE/TXDMAE, request outputs "rx" and "tx" wired by the platform's ``dmas``), as the
TRM defines the request lines: RX asks for a burst while the RX FIFO is at or above its watermark
and for a single transfer while it holds a character; TX asks for a burst while the TX FIFO is at or
below its watermark and for a single transfer while it has room.
"""

from __future__ import annotations

import threading
import time
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
    hookimpl,
)

FIFO_DEPTH = 32
UARTCLK_HZ = 24_000_000  # QEMU virt's apb-pclk, which the device tree gives as uartclk
BITS_PER_CHAR = 10  # start, 8 data, stop
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
        Field("WLEN", 5, 2), Field("SPS", 7)], on_write="update_interrupts")
    CR = Register(0x030, width=16, reset=0x0300, fields=[
        Field("UARTEN", 0), Field("SIREN", 1), Field("SIRLP", 2), Field("LBE", 7), Field("TXE", 8),
        Field("RXE", 9), Field("DTR", 10), Field("RTS", 11), Field("OUT1", 12), Field("OUT2", 13),
        Field("RTSEN", 14), Field("CTSEN", 15)], on_write="control_written")
    IFLS = Register(0x034, width=8, reset=0x12,
                    fields=[Field("TXIFLSEL", 0, 3), Field("RXIFLSEL", 3, 3)],
                    on_write="update_interrupts")
    IMSC = Register(0x038, width=16, fields=INTERRUPT_FIELDS, on_write="update_interrupts")
    RIS = Register(0x03C, width=16, access="ro", fields=INTERRUPT_FIELDS)
    MIS = Register(0x040, width=16, access="ro", on_read="masked_status", fields=INTERRUPT_FIELDS)
    ICR = Register(0x044, width=16, access="wo", on_write="clear_interrupts", fields=INTERRUPT_FIELDS)
    RX, TX, RT = RIS.mask("RX"), RIS.mask("TX"), RIS.mask("RT")
    DMACR = Register(0x048, width=8, fields=[Field("RXDMAE", 0), Field("TXDMAE", 1),
                                            Field("DMAONERR", 2)], on_write="update_interrupts")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.rx_fifo: deque[int] = deque()
        self.tx_fifo: deque[int] = deque()
        self.host_queue: deque[int] = deque()
        self.transmitted = HostBuffer(self.lock)
        self._line = threading.Condition(self.lock)  # wakes the feeder
        self._closed = False
        self._tx_was_above = True  # so that an idle, empty FIFO asserts the TX interrupt once
        self._feeder: threading.Thread | None = None

    def connect_dma_request(self, port: DmaRequestPort) -> None:
        super().connect_dma_request(port)
        port.on_flush = self._request_dma  # still in need after a flush: ask again

    # --- host side ---

    def send_to_guest(self, data: bytes) -> None:
        """Queues bytes for the guest; they arrive in the RX FIFO at the line rate."""
        with self.lock:
            self.host_queue.extend(data)
            self._wake_line()

    def _wake_line(self) -> None:
        if self._feeder is None:
            self._feeder = self.start_host_thread(self._run_line)
        self._line.notify()

    def chars_per_second(self) -> float:
        divisor = self.regs.IBRD.value + self.regs.FBRD.DIVFRAC / 64
        baud = UARTCLK_HZ / 16 / max(divisor, 1.0)
        return baud / BITS_PER_CHAR

    def _run_line(self) -> None:
        """The line: characters cross it at the programmed rate, both ways, while there is room."""
        with self.lock:
            line_clock = time.monotonic()
            while not self._closed:
                now = time.monotonic()
                rx_ready = self.host_queue and self._receiving() and len(self.rx_fifo) < self._depth()
                if rx_ready or self.tx_fifo:
                    due = int((now - line_clock) * self.chars_per_second())
                    if due:
                        self._refill(limit=due)
                        self._transmit(limit=due)
                        self.update_interrupts()
                        line_clock = now
                    self._line.wait(timeout=max(4 / self.chars_per_second(), 0.0005))
                else:
                    line_clock = now  # an idle or blocked line starts counting again
                    self._line.wait(timeout=1.0)

    def _transmit(self, limit: int) -> None:
        sent = [self.tx_fifo.popleft() for _ in range(min(limit, len(self.tx_fifo)))]
        if sent:
            self.transmitted.append(sent)

    def close(self) -> None:
        with self.lock:
            self._closed = True
            self._line.notify()
        if self._feeder is not None:
            self._feeder.join(timeout=2)

    def take_from_guest(self, count: int, timeout: float) -> bytes:
        """Waits until the guest has sent ``count`` bytes (or ``timeout`` passes); takes them."""
        return self.transmitted.take(count, timeout)

    # --- register side effects ---

    def _depth(self) -> int:
        return FIFO_DEPTH if self.regs.LCR_H.FEN else 1

    def _receiving(self) -> bool:
        return bool(self.regs.CR.UARTEN and self.regs.CR.RXE)

    def _refill(self, limit: int) -> None:
        room = min(self._depth() - len(self.rx_fifo), limit)
        for _ in range(min(room, len(self.host_queue))):
            self.rx_fifo.append(self.host_queue.popleft())

    def read_data(self) -> int:
        value = self.rx_fifo.popleft() if self.rx_fifo else 0
        if self.host_queue:
            self._line.notify()  # room again: the held-back line resumes
        self.update_interrupts()
        return value

    def write_data(self, value: int) -> None:
        byte = value & 0xFF
        if not (self.regs.CR.UARTEN and self.regs.CR.TXE):
            return
        if self.regs.CR.LBE:
            if len(self.rx_fifo) < self._depth():
                self.rx_fifo.append(byte)
        elif len(self.tx_fifo) < self._depth():  # a write to a full FIFO is lost, as on silicon
            self.tx_fifo.append(byte)
            self._wake_line()
        self.update_interrupts()

    def flags(self) -> int:
        depth = self._depth()
        return self.FR.compose(CTS=1, BUSY=bool(self.tx_fifo), RXFE=not self.rx_fifo,
                               TXFF=len(self.tx_fifo) >= depth, RXFF=len(self.rx_fifo) >= depth,
                               TXFE=not self.tx_fifo)

    def clear_errors(self, _value: int) -> None:
        self.regs.RSR.value = 0

    def control_written(self, _value: int) -> None:
        self._line.notify()  # the receiver may just have been enabled
        self.update_interrupts()

    def masked_status(self) -> int:
        return self.regs.RIS.value & self.regs.IMSC.value

    def clear_interrupts(self, value: int) -> None:
        self.regs.RIS.value &= ~value
        self.update_interrupts(recompute_rx=False)

    def update_interrupts(self, _value: int = 0, recompute_rx: bool = True) -> None:
        RX, TX, RT = self.RX, self.TX, self.RT  # the TRM's names, as locals
        ris = self.regs.RIS.value
        tx_trigger = FIFO_DEPTH * TRIGGER_EIGHTHS[min(self.regs.IFLS.TXIFLSEL, 4)] // 8
        if len(self.tx_fifo) <= (tx_trigger if self.regs.LCR_H.FEN else 0):
            if self._tx_was_above:
                ris |= TX  # the FIFO drained to its trigger level
            self._tx_was_above = False
        else:
            ris &= ~TX
            self._tx_was_above = True
        if recompute_rx:
            level = len(self.rx_fifo)
            trigger = FIFO_DEPTH * TRIGGER_EIGHTHS[min(self.regs.IFLS.RXIFLSEL, 4)] // 8
            ris = ris | RX if level >= (trigger if self.regs.LCR_H.FEN else 1) else ris & ~RX
            # Receive timeout: data is waiting and no more is arriving right now.
            ris = ris | RT if level and not self.host_queue and not ris & RX else ris & ~RT
            if not level:
                ris &= ~RT
        self.regs.RIS.value = ris
        self.irq("uart").set(bool(ris & self.regs.IMSC.value))
        self._request_dma()

    def _trigger(self, select: int) -> int:
        return FIFO_DEPTH * TRIGGER_EIGHTHS[min(select, 4)] // 8 if self.regs.LCR_H.FEN else 1

    def _request_dma(self) -> None:
        rx, tx, dmacr = self.dma_requests.get("rx"), self.dma_requests.get("tx"), self.regs.DMACR
        if rx is not None:
            rx.drive(bool(dmacr.RXDMAE and self.rx_fifo),
                     burst=len(self.rx_fifo) >= self._trigger(self.regs.IFLS.RXIFLSEL))
        if tx is not None:
            tx.drive(bool(dmacr.TXDMAE and len(self.tx_fifo) < self._depth()),
                     burst=len(self.tx_fifo) <= self._trigger(self.regs.IFLS.TXIFLSEL))


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"pl011": Pl011}


@hookimpl
def cosim_device_tree(peripheral: Peripheral, node: DtNode, aliases: DtAliases) -> None:
    if isinstance(peripheral, Pl011):
        aliases.add("serial", node)  # ttyAMA<n> follows serial<n>: a stable name for tests
        clock = Ref("/apb-pclk")  # QEMU virt's fixed 24 MHz APB clock
        node.set("clocks", [clock, clock])
        node.set("clock-names", ["uartclk", "apb_pclk"])
