"""The sun6i DMA model against an in-memory bus, driven as Linux's sun6i-dma driver drives it."""

from __future__ import annotations

import struct
from collections import deque

import pytest
from cosim_sun6i.dma import LLI_LAST, Sun6iDma
from cosim_sun6i.reset import Sun6iReset

from cosim.api import DmaRequestPort, Peripheral, PeripheralError, Register
from cosim.testing import ModelBench

RAM = 0x40000000
IRQ_EN0, IRQ_STAT0, STAT = 0x00, 0x10, 0x30
EN, PAUSE, LLI_ADDR, CUR_CNT = 0x100, 0x104, 0x108, 0x118
HALF, PKG, QUEUE = 1, 2, 4
FIFO_BASE = 0x0C030000


def cfg(src_drq: int = 1, dst_drq: int = 1, src_io: bool = False, dst_io: bool = False,
        width: int = 4, burst: int = 8) -> int:
    """An LLI's cfg word as set_config + set_drq/mode/burst_length (H3/A64) build it."""
    w, b = width.bit_length() - 1, (1, 4, 8, 16).index(burst)
    return (src_drq | src_io << 5 | b << 6 | w << 9
            | dst_drq << 16 | dst_io << 21 | b << 22 | w << 25)


def lli(bench: ModelBench, at: int, cfg_word: int, src: int, dst: int, length: int,
        next_: int = LLI_LAST) -> int:
    bench.bus.write("cpu", at, struct.pack("<6I", cfg_word, src, dst, length, 8, next_))
    return at


def channel(ch: int, reg: int) -> int:
    return reg + 0x40 * ch


class Fifo(Peripheral):
    """A peripheral with an 8-entry byte FIFO that asks for DMA as a UART or SPI controller does:
    a burst request while 4 entries (or room for 4) are there, a single request below."""

    dma_request_names = ("rx", "tx")
    DATA = Register(0x0, on_read="pop", on_write="push", fifo_entry_bits=8)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.rx: deque[int] = deque()
        self.tx: list[int] = []
        self.tx_room = 8

    def connect_dma_request(self, port: DmaRequestPort) -> None:
        super().connect_dma_request(port)
        self.request()

    def request(self) -> None:
        if "rx" in self.dma_requests:
            self.dma_requests["rx"].drive(bool(self.rx), burst=len(self.rx) >= 4)
        if "tx" in self.dma_requests:
            self.dma_requests["tx"].drive(self.tx_room > 0, burst=self.tx_room >= 4)

    def receive(self, data: bytes) -> None:
        with self.lock:
            self.rx.extend(data)
            self.request()

    def drain(self) -> None:
        """The far side took everything sent so far: room again."""
        with self.lock:
            self.tx_room = 8
            self.request()

    def pop(self) -> int:
        value = self.rx.popleft() if self.rx else 0xEE
        self.request()
        return value

    def push(self, value: int) -> None:
        self.tx.append(value)
        self.tx_room -= 1
        self.request()


@pytest.fixture
def bench():
    bench = ModelBench()
    yield bench
    bench.close()


@pytest.fixture
def dma(bench) -> Sun6iDma:
    return bench.add(Sun6iDma, "dma", 0x0C010000, channels=8, requests=27)


def test_memcpy_runs_the_chain_and_raises_queue_end(bench, dma):
    data = bytes(range(256)) * 16
    bench.bus.write("cpu", RAM + 0x10000, data)
    first = lli(bench, RAM + 0x100, cfg(), RAM + 0x10000, RAM + 0x20000, 1024, RAM + 0x120)
    lli(bench, RAM + 0x120, cfg(), RAM + 0x10400, RAM + 0x20400, 3072)
    dma.write(IRQ_EN0, 4, QUEUE << 4)  # channel 1: queue end only, as for a memcpy
    dma.write(channel(1, LLI_ADDR), 4, first)
    dma.write(channel(1, EN), 4, 1)
    assert bench.bus.read("cpu", RAM + 0x20000, 4096) == data
    assert dma.read(IRQ_STAT0, 4) == QUEUE << 4  # package ends were not enabled
    assert bench.irqs["dma"].levels[0] is True
    assert dma.read(STAT, 4) == 0 and dma.read(channel(1, LLI_ADDR), 4) == LLI_LAST
    dma.write(IRQ_STAT0, 4, QUEUE << 4)  # write 1 to clear
    assert bench.irqs["dma"].levels[0] is False
    fetches = [e for e in bench.trace.on_track("dma channel 1") if e["name"] == "LLI fetch"]
    assert [e["args"]["lli"] for e in fetches] == [hex(RAM + 0x100), hex(RAM + 0x120)]


def test_slave_transfer_moves_only_what_the_peripheral_asks_for(bench, dma):
    fifo = bench.add(Fifo, "fifo", FIFO_BASE)
    fifo.connect_dma_request(DmaRequestPort("tx", dma, dma.dma_request_line((5,))))
    bench.bus.write("cpu", RAM + 0x10000, bytes(range(20)))
    first = lli(bench, RAM + 0x100, cfg(dst_drq=5, dst_io=True, width=1, burst=4), RAM + 0x10000,
                FIFO_BASE, 20)
    dma.write(IRQ_EN0, 4, QUEUE | HALF)
    dma.write(channel(0, LLI_ADDR), 4, first)
    dma.write(channel(0, EN), 4, 1)
    assert fifo.tx == list(range(8))  # two bursts of 4 one-byte beats filled the FIFO
    assert dma.read(STAT, 4) == 1 and dma.read(channel(0, CUR_CNT), 4) == 12  # the residue
    assert dma.read(IRQ_STAT0, 4) == 0
    fifo.drain()
    assert fifo.tx == list(range(16)) and dma.read(IRQ_STAT0, 4) == HALF
    fifo.drain()
    assert fifo.tx == list(range(20)) and dma.read(IRQ_STAT0, 4) == HALF | QUEUE
    assert dma.read(STAT, 4) == 0


def test_cyclic_receive_raises_package_end_per_period(bench, dma):
    fifo = bench.add(Fifo, "fifo", FIFO_BASE)
    fifo.connect_dma_request(DmaRequestPort("rx", dma, 4))
    period = cfg(src_drq=4, src_io=True, width=1, burst=4)
    lli(bench, RAM + 0x100, period, FIFO_BASE, RAM + 0x20000, 8, RAM + 0x120)
    lli(bench, RAM + 0x120, period, FIFO_BASE, RAM + 0x20008, 8, RAM + 0x100)  # back to the first
    dma.write(IRQ_EN0, 4, PKG)
    dma.write(channel(0, LLI_ADDR), 4, RAM + 0x100)
    dma.write(channel(0, EN), 4, 1)
    fifo.receive(bytes(range(1, 9)))
    assert dma.read(IRQ_STAT0, 4) == PKG
    dma.write(IRQ_STAT0, 4, PKG)
    fifo.receive(bytes(range(9, 17)))
    fifo.receive(bytes(range(17, 20)))  # wraps into the first period again
    assert bench.bus.read("cpu", RAM + 0x20000, 16) == bytes(range(17, 20)) + bytes(range(4, 17))
    assert dma.read(IRQ_STAT0, 4) == PKG and dma.read(STAT, 4) == 1


def test_pause_holds_a_channel_until_resumed(bench, dma):
    fifo = bench.add(Fifo, "fifo", FIFO_BASE)
    fifo.connect_dma_request(DmaRequestPort("rx", dma, 4))
    first = lli(bench, RAM + 0x100, cfg(src_drq=4, src_io=True, width=1, burst=4), FIFO_BASE,
                RAM + 0x20000, 8)
    dma.write(channel(0, LLI_ADDR), 4, first)
    dma.write(channel(0, EN), 4, 1)
    dma.write(channel(0, PAUSE), 4, 2)  # DMA_CHAN_PAUSE_PAUSE, as Linux writes it
    fifo.receive(bytes(8))
    assert dma.read(channel(0, CUR_CNT), 4) == 8
    dma.write(channel(0, PAUSE), 4, 0)
    assert dma.read(STAT, 4) == 0 and not fifo.rx


def test_held_in_reset_until_the_driver_releases_it(bench):
    ccu = bench.add(Sun6iReset, "ccu", 0x0C000000)
    dma = bench.add(Sun6iDma, "dma", 0x0C010000)
    ccu.connect_reset_output(0, dma.reset_input)
    dma.write(IRQ_EN0, 4, QUEUE)
    assert dma.read(IRQ_EN0, 4) == 0 and dma.in_reset
    ccu.write(0, 4, 1)  # reset_control_deassert: active low, the bit set releases the line
    dma.write(IRQ_EN0, 4, QUEUE)
    assert dma.read(IRQ_EN0, 4) == QUEUE
    assert ("dma", "write while held in reset", IRQ_EN0) in bench.notes.counts


def test_a_descriptor_no_memory_answers_stops_the_channel_with_a_dma_fault(bench, dma):
    dma.write(channel(2, LLI_ADDR), 4, 0x1000)
    dma.write(channel(2, EN), 4, 1)
    assert dma.read(STAT, 4) == 0
    assert bench.bus.faults[0].address == 0x1000


def test_drq_ports_are_checked(dma):
    assert dma.dma_request_line((27,)) == 27
    for port in (0, 1, 28):
        with pytest.raises(ValueError, match="is not a peripheral's"):
            dma.dma_request_line((port,))


def test_a_memory_only_chain_that_loops_is_a_clear_error(bench, dma):
    first = lli(bench, RAM + 0x100, cfg(), RAM + 0x1000, RAM + 0x2000, 4, RAM + 0x100)
    dma.write(channel(0, LLI_ADDR), 4, first)
    with pytest.raises(PeripheralError, match="the chain loops"):
        dma.write(channel(0, EN), 4, 1)
