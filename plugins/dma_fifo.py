"""cosim,dma-fifo: a data FIFO served by a DMA controller's request lines — the smallest slave.

Register map (32-bit)::

    0x00 DATA    write: into the TX FIFO (towards the host); read: from the RX FIFO
    0x04 STATUS  RO: TX level (bits 7:0), RX level (bits 15:8)
    0x08 CTRL    RX_DMA (0), TX_DMA (1): request service on the "rx"/"tx" DMA request lines
    0x0C ID      RO: 0x46494630 ("FIF0")

Both FIFOs hold 16 words.  The TX FIFO drains to the host at once.  Host data waits in a host
queue and enters the RX FIFO as it has room.  A request line asks for a burst while a burst's
worth (4 words) of data or room is there, as peripherals with a watermark do; below that, the
RX side asks for single transfers, which a burst-waiting channel does not take.
"""

from __future__ import annotations

from collections import deque

from cosim.api import DmaRequestPort, Field, HostBuffer, Peripheral, Register, hookimpl

DEPTH = 16
BURST = 4


class DmaFifo(Peripheral):
    compatible = ("cosim,dma-fifo",)
    dma_request_names = ("rx", "tx")

    DATA = Register(0x00, on_read="pop", on_write="push", fifo_entry_bits=32)
    STATUS = Register(0x04, access="ro", on_read="status")
    CTRL = Register(0x08, fields=[Field("RX_DMA", 0), Field("TX_DMA", 1)], on_write="request")
    ID = Register(0x0C, access="ro", reset=0x46494630)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.rx: deque[int] = deque()
        self.host_queue: deque[int] = deque()
        self.transmitted = HostBuffer(self.lock)

    def connect_dma_request(self, port: DmaRequestPort) -> None:
        super().connect_dma_request(port)
        port.on_flush = self.request  # a flushed request is asserted again while still needed

    # --- host side ---

    def send_to_guest(self, data: bytes) -> None:
        """Queues bytes (whole 32-bit words) for the guest's RX FIFO."""
        if len(data) % 4:
            raise ValueError("the FIFO moves 32-bit words: give a multiple of 4 bytes")
        with self.lock:
            self.host_queue.extend(int.from_bytes(data[i:i + 4], "little")
                                   for i in range(0, len(data), 4))
            self._refill()
            self.request()

    def take_from_guest(self, count: int, timeout: float) -> bytes:
        return self.transmitted.take(count, timeout)

    # --- registers ---

    def _refill(self) -> None:
        while self.host_queue and len(self.rx) < DEPTH:
            self.rx.append(self.host_queue.popleft())

    def pop(self) -> int:
        value = self.rx.popleft() if self.rx else 0
        self._refill()
        self.request()
        return value

    def push(self, value: int) -> None:
        self.transmitted.append(value.to_bytes(4, "little"))  # the TX FIFO drains at once
        self.request()

    def status(self) -> int:
        return len(self.rx) << 8

    def request(self, _value: int = 0) -> None:
        """Asserts the request lines that need service now."""
        rx, tx = self.dma_requests.get("rx"), self.dma_requests.get("tx")
        if rx is not None:
            rx.drive(bool(self.regs.CTRL.RX_DMA and self.rx), burst=len(self.rx) >= BURST)
        if tx is not None:  # the TX FIFO is always empty: room for a burst
            tx.drive(bool(self.regs.CTRL.TX_DMA), burst=True)


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"dma-fifo": DmaFifo}
