"""The DMA request interface between slave peripherals and the PL330, with a fake FIFO device."""

from __future__ import annotations

import threading
from collections import deque

import pytest

from cosim.bus import Bus, Memory
from cosim.clock import ManualClock
from cosim.dmarequest import DmaRequestPort
from cosim.peripheral import Peripheral, PeripheralConfig, RecordingIrqSink, Register
from cosim.plugins.pl330 import Pl330, State
from cosim.trace import EventTrace

from .conftest import assemble
from .test_pl330 import CS0, DST, ES, INTEN, RAM_BASE, SRC, Asm, ccr, go

FIFO_BASE = 0x0C030000
BURST_WORDS = 4


class FifoDevice(Peripheral):
    """A device with a 32-bit data FIFO that asks for DMA like a UART or SPI controller does:
    a burst request while a burst's worth is there (or room for it), single requests below."""

    dma_request_names = ("rx", "tx")

    DATA = Register(0x0, on_read="pop", on_write="push")

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.rx: deque[int] = deque()
        self.tx: list[int] = []
        self.flushes = 0
        self.last_at: int | None = None  # say "last" with the request for this word count

    def connect_dma_request(self, port: DmaRequestPort) -> None:
        super().connect_dma_request(port)
        port.on_flush = self.flushed

    def flushed(self) -> None:
        self.flushes += 1
        self.request_rx()

    def receive(self, words: list[int]) -> None:  # from the host side
        with self.lock:
            self.rx.extend(words)
            self.request_rx()

    def request_rx(self) -> None:
        port = self.dma_requests.get("rx")
        if port is None:
            return
        if not self.rx:
            port.withdraw()  # nothing left to give
            return
        last = self.last_at is not None and len(self.rx) <= self.last_at
        if len(self.rx) >= BURST_WORDS:
            port.burst(last=last)
        else:
            port.single(last=last)

    def pop(self) -> int:
        value = self.rx.popleft() if self.rx else 0xDEAD
        self.request_rx()
        return value

    def push(self, value: int) -> None:
        self.tx.append(value)


@pytest.fixture
def board_parts():
    return make_board_parts()


def make_board_parts() -> tuple[Pl330, FifoDevice, Bus, RecordingIrqSink]:
    """A PL330 and a FIFO device on request line 0 of it, on a bus with RAM."""
    lock = threading.RLock()
    bus = Bus([Memory.zeroed("ram", RAM_BASE, 4 << 20)])
    irqs = RecordingIrqSink()
    dmac = Pl330(PeripheralConfig("pl330", 0x0C020000, 0x1000, (114, 115),
                                  {"channels": 8, "peripherals": 8}), bus, irqs, lock=lock)
    device = FifoDevice(PeripheralConfig("fifo", FIFO_BASE, 0x1000), bus, RecordingIrqSink(), lock=lock)
    bus.add_device(FIFO_BASE, 0x1000, device)
    device.connect_dma_request(DmaRequestPort("rx", dmac, 0))
    return dmac, device, bus, irqs


def tick_until_idle(model: Peripheral, clock: ManualClock, dmac: Pl330) -> tuple[int, int | None]:
    """Runs the guest's time from tick to tick of ``model`` until it asks for none: the ticks
    taken, and how long after the start ``dmac`` had raised event 0 (None: it never did)."""
    start, ticks, event_ns = clock.now_ns, 0, None
    while (when := model.scheduled_work.next_deadline()) is not None:
        clock.run_until(when)
        ticks += 1
        if event_ns is None and dmac.regs.INT_EVENT_RIS.value & 1:
            event_ns = clock.now_ns - start
    return ticks, event_ns


def rx_program(words: int, burst: bool = True) -> bytes:
    """What pl330_prep_slave_sg emits for DEV_TO_MEM: FLUSHP, then WFP/LDP/ST per burst."""
    length = BURST_WORDS if burst else 1
    asm = Asm().mov("CCR", ccr(4, length, src_inc=False)).mov("SAR", FIFO_BASE).mov("DAR", DST)
    asm.raw(0x35, 0 << 3)  # DMAFLUSHP 0
    start = asm.lp(1, words // length)
    cond = 0x2 if burst else 0x0
    asm.raw(0x30 | cond, 0).raw(0x25 | cond, 0).st("B" if burst else "S")  # DMAWFP, DMALDP, DMAST
    return bytes(asm.lpend(1, start).sev(0).end().code)


def test_channel_waits_for_the_peripheral_then_moves_bursts(board_parts):
    dmac, device, bus, irqs = board_parts
    dmac.write(INTEN, 4, 1)
    go(dmac, 0, rx_program(16), bus)
    assert device.flushes == 1
    status = dmac.read(CS0, 4)
    assert status & 0xF == State.WFP and (status >> 4) & 0x1F == 0  # waiting on peripheral 0
    words = list(range(0x100, 0x110))
    device.receive(words)
    assert dmac.read(CS0, 4) & 0xF == State.STOPPED
    data = bus.read("cpu", DST, 64)
    assert [int.from_bytes(data[i:i + 4], "little") for i in range(0, 64, 4)] == words
    assert not device.rx and dmac.read(ES, 4) == 1 and irqs.levels[0]
    events = dmac.trace.chrome_json()["traceEvents"]
    tracks = {e["args"]["name"]: e["tid"] for e in events if e["ph"] == "M"}
    requests = [e for e in events if e["ph"] == "i" and e["tid"] == tracks["pl330 request line 0"]]
    # requests and transfers on one timeline; the device re-asserts after each pop, the
    # controller absorbs repeats while one is pending
    assert len(requests) >= 4 and requests[0]["name"] == "burst"


def test_data_arriving_in_pieces_is_moved_as_it_comes(board_parts):
    dmac, device, bus, _ = board_parts
    go(dmac, 1, rx_program(12), bus)
    device.receive([1, 2, 3, 4])
    device.receive([5, 6])  # below a burst: a single request, which DMAWFPB does not take
    assert dmac.read(CS0 + 8, 4) & 0xF == State.WFP
    device.receive([7, 8, 9, 10, 11, 12])
    assert dmac.read(CS0 + 8, 4) & 0xF == State.STOPPED
    assert bus.read("cpu", DST, 48) == b"".join(i.to_bytes(4, "little") for i in range(1, 13))


def test_requests_before_the_channel_runs_are_flushed_and_asserted_again(board_parts):
    dmac, device, bus, _ = board_parts
    device.receive([9] * 4)  # pending before any DMAWFP
    go(dmac, 0, rx_program(4), bus)
    assert device.flushes == 1  # DMAFLUSHP dropped it; the device asked again and was served
    assert dmac.read(CS0, 4) & 0xF == State.STOPPED and not device.rx


def test_single_requests_skip_burst_only_instructions(board_parts):
    dmac, device, bus, _ = board_parts
    # DMAWFPP takes the peripheral's request type; LDPB/STB are then NOPs, LDPS/STS run.
    asm = Asm().mov("CCR", ccr(4, 1, src_inc=False)).mov("SAR", FIFO_BASE).mov("DAR", DST)
    asm.raw(0x31, 0).raw(0x27, 0).st("B").raw(0x25, 0).st("S").end()
    device.receive([0xAB])  # one word: a single request
    go(dmac, 0, bytes(asm.code), bus)
    assert bus.read("cpu", DST, 4) == (0xAB).to_bytes(4, "little")
    assert bus.read("cpu", DST + 4, 4) == bytes(4)


def test_a_dmawfps_goes_on_at_a_burst_request_and_leaves_it_for_a_dmawfpb(board_parts):
    dmac, _, bus, _ = board_parts
    program = bytes(Asm().raw(0x30, 0).raw(0x32, 0).end().code)  # DMAWFPS 0; DMAWFPB 0
    dmac.dma_request(0, burst=True, last=False)
    go(dmac, 0, program, bus)
    assert dmac.read(CS0, 4) & 0xF == State.STOPPED  # the DMAWFPB found the burst request
    assert 0 not in dmac.pending_requests  # and consumed it
    dmac.dma_request(0, burst=False, last=False)
    go(dmac, 0, program, bus)
    assert dmac.read(CS0, 4) & 0xF == State.WFP  # a single one the DMAWFPS consumed


def test_last_request_ends_a_loop_forever(board_parts):
    dmac, device, bus, _ = board_parts
    device.last_at = 1  # the peripheral controls the length: its final word comes with "last"
    asm = Asm().mov("CCR", ccr(4, 1, src_inc=False)).mov("SAR", FIFO_BASE).mov("DAR", DST)
    start = len(asm.code)
    asm.raw(0x31, 0).raw(0x25, 0).st("S").lpend(0, start, forever=True).end()
    go(dmac, 0, bytes(asm.code), bus)
    device.receive([1, 2, 3])
    assert dmac.read(CS0, 4) & 0xF == State.STOPPED
    assert bus.read("cpu", DST, 12) == b"".join(i.to_bytes(4, "little") for i in (1, 2, 3))


def test_memory_to_device_writes_each_beat_to_the_fifo_register(board_parts):
    dmac, device, bus, _ = board_parts
    bus.write("cpu", SRC, b"".join(i.to_bytes(4, "little") for i in range(8)))
    asm = Asm().mov("CCR", ccr(4, 8, dst_inc=False)).mov("SAR", SRC).mov("DAR", FIFO_BASE)
    go(dmac, 0, bytes(asm.ld().st().end().code), bus)
    assert device.tx == list(range(8))


def test_a_beat_the_device_cannot_take_is_a_dma_fault(board_parts):
    dmac, _, bus, _ = board_parts
    asm = Asm().mov("CCR", ccr(4, 1, dst_inc=False)).mov("SAR", SRC).mov("DAR", FIFO_BASE + 0xFFE)
    go(dmac, 0, bytes(asm.ld().st().end().code), bus)
    assert dmac.read(CS0, 4) & 0xF == State.FAULTING
    assert "4-byte beat" in bus.faults[-1].reason


def test_request_line_out_of_range_is_refused(board_parts):
    dmac = board_parts[0]
    with pytest.raises(ValueError, match=r"request lines 0\.\.7"):
        DmaRequestPort("tx", dmac, 8)


PLATFORM = """\
name: t
peripherals:
  - name: pl330
    plugin: pl330
    base: 0x0c020000
    irqs: [114, 115]
    properties: {peripherals: 8}
  - name: uart1
    plugin: pl011
    base: 0x0c000000
    irqs: [112]
    dmas: {rx: [pl330, 0], tx: [pl330, 1]}
"""


def test_platform_wires_requests_into_the_device_tree(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PLATFORM)
    board = assemble(path)
    board.build()
    nodes = {n.name: n for n in board.device_tree_nodes()[0]}
    text = nodes["uart1"].dts()
    assert "dmas = <&{/pl330@c020000} 0x0 &{/pl330@c020000} 0x1>;" in text
    assert 'dma-names = "rx", "tx";' in text
    assert "#dma-cells = <0x1>;" in nodes["pl330"].dts()  # from the DMA controller role
    assert board.peripherals["uart1"].dma_requests["tx"].line == 1


@pytest.mark.parametrize("change,message", [
    ("rx: [pl330, 0]", "has no DMA request 'rx2'"),
    ("tx: [pl330, 1]", "'uart9' is not a DMA controller"),
    ("[pl330, 1]}", "request lines 0..7, not 9"),
])
def test_bad_dma_wiring_names_the_line(tmp_path, change, message):
    from cosim.platform import PlatformError

    replacement = {"rx: [pl330, 0]": "rx2: [pl330, 0]", "tx: [pl330, 1]": "tx: [uart9, 1]",
                   "[pl330, 1]}": "[pl330, 9]}"}[change]
    path = tmp_path / "p.yaml"
    path.write_text(PLATFORM.replace(change, replacement))
    with pytest.raises(PlatformError, match=message) as info:
        assemble(path).build()
    assert "p.yaml:12" in str(info.value)


def test_wrong_beat_width_into_a_uart_loses_data_and_is_reported(board_parts):
    from cosim.plugins.pl011 import Pl011

    dmac, _, bus, _ = board_parts
    clock = ManualClock()
    uart = Pl011(PeripheralConfig("uart", 0x0C040000, 0x1000, (117,)), bus, RecordingIrqSink(),
                 lock=dmac.lock, clock=clock)
    bus.add_device(0x0C040000, 0x1000, uart)
    uart.write(0x2C, 1, 0x70)  # FIFOs on, 8 bits
    uart.write(0x30, 2, 0x301)  # enabled
    bus.write("cpu", SRC, b"ABCDEFGH")
    # a driver that set dst_addr_width = 4 for the 8-bit DR: 4-byte beats, 2 of them
    asm = Asm().mov("CCR", ccr(4, 2, dst_inc=False)).mov("SAR", SRC).mov("DAR", 0x0C040000)
    go(dmac, 0, bytes(asm.ld().st().end().code), bus)
    clock.advance(10**7)  # the line sends what the FIFO took
    assert uart.take_from_guest(8, timeout=0) == b"AE"  # DR keeps bits 7:0 of each beat
    [mismatch] = bus.width_mismatches
    assert (mismatch.beat_bytes, mismatch.entry_bits, mismatch.write) == (4, 8, True)
    assert "addr_width" in str(mismatch)


def test_matching_beats_are_not_reported(board_parts):
    dmac, device, bus, _ = board_parts
    go(dmac, 0, rx_program(4), bus)
    device.receive([1, 2, 3, 4])
    assert bus.width_mismatches == []


def test_a_withdrawn_request_no_longer_releases_a_channel(board_parts):
    dmac, device, bus, _ = board_parts
    device.receive([7])  # a single request...
    device.rx.clear()
    device.request_rx()  # ...withdrawn when the FIFO empties (the test device re-evaluates)
    device.dma_requests["rx"].withdraw()
    asm = Asm().mov("CCR", ccr(4, 1, src_inc=False)).mov("SAR", FIFO_BASE).mov("DAR", DST)
    go(dmac, 0, bytes(asm.raw(0x30, 0).raw(0x25, 0).st("S").end().code), bus)
    assert dmac.read(CS0, 4) & 0xF == State.WFP


def test_a_chatty_track_does_not_crowd_the_others_out_of_the_timeline():
    trace = EventTrace(limit=10, per_track=3)
    for _ in range(5):
        trace.instant("pdma request line 3", "single")
    trace.instant("flash", "page program")
    assert len(trace.on_track("pdma request line 3")) == 3
    assert [e["name"] for e in trace.on_track("flash")] == ["page program"]
    assert trace.chrome_json()["otherData"]["cosim_dropped_events"] == 2


def parked_rx_loop(board_parts, words: int, held: int) -> tuple[Pl330, FifoDevice, Bus, DmaRequestPort]:
    """The single-beat DEV_TO_MEM loop for ``words`` words, its channel waiting at the DMAWFPS,
    the device holding ``held`` words it has not asked to move yet."""
    dmac, device, bus, _ = board_parts
    dmac.write(INTEN, 4, 1)
    go(dmac, 0, rx_program(words, burst=False), bus)
    device.rx.extend(range(0x200, 0x200 + held))
    return dmac, device, bus, device.dma_requests["rx"]


def test_a_channel_in_a_slave_loop_stands_for_its_iterations_left(board_parts):
    _, device, bus, port = parked_rx_loop(board_parts, 10, held=1)
    assert port.standing() == 10
    device.request_rx()  # one request, interpreted: the order shrinks by one
    assert port.standing() == 9
    assert bus.read("cpu", DST, 4) == (0x200).to_bytes(4, "little")


def test_serving_a_fifo_at_once_has_the_effect_of_serving_it_request_by_request(board_parts):
    dmac, device, bus, port = parked_rx_loop(board_parts, 10, held=6)
    assert port.serve(6) == 6
    assert dmac.read(CS0, 4) & 0xF == State.WFP and port.standing() == 4
    assert dmac.channels[0].dar == DST + 24 and dmac.channels[0].lc[1] == 3
    device.rx.extend(range(0x206, 0x20A))
    assert port.serve(100) == 4  # no more than the order: then the program goes on
    assert dmac.read(CS0, 4) & 0xF == State.STOPPED and dmac.read(ES, 4) == 1
    assert bus.read("cpu", DST, 40) == b"".join(i.to_bytes(4, "little") for i in range(0x200, 0x20A))
    assert dmac.channels[0].moved == 40 and not device.rx
    assert port.standing() == 0 and port.serve(1) == 0


def test_a_burst_loop_stands_for_bursts_and_not_for_singles(board_parts):
    dmac, device, bus, _ = board_parts
    go(dmac, 0, rx_program(16), bus)  # DMAWFPB, DMALDPB, DMASTB: four bursts of four words
    port = device.dma_requests["rx"]
    assert port.standing() == 0 and port.standing(burst=True) == 4
    device.rx.extend(range(8))
    assert port.serve(2, burst=True) == 2 and port.standing(burst=True) == 2
    assert bus.read("cpu", DST, 32) == b"".join(i.to_bytes(4, "little") for i in range(8))
    assert dmac.channels[0].dar == DST + 32


def test_a_loop_that_is_not_a_plain_slave_loop_stands_for_nothing(board_parts):
    dmac, device, bus, _ = board_parts
    asm = Asm().mov("CCR", ccr(4, 1, src_inc=False)).mov("SAR", FIFO_BASE).mov("DAR", DST)
    start = asm.lp(1, 4)
    asm.raw(0x30, 0).raw(0x25, 0).st("S").sev(1)  # an event in every iteration
    go(dmac, 0, bytes(asm.lpend(1, start).end().code), bus)
    assert dmac.read(CS0, 4) & 0xF == State.WFP
    assert device.dma_requests["rx"].standing() == 0


def test_a_bulk_store_that_faults_faults_at_the_request_it_reaches(board_parts):
    dmac, device, bus, _ = board_parts
    end_of_ram = RAM_BASE + (4 << 20)
    asm = Asm().mov("CCR", ccr(4, 1, src_inc=False)).mov("SAR", FIFO_BASE).mov("DAR", end_of_ram - 8)
    start = asm.lp(1, 4)
    asm.raw(0x30, 0).raw(0x25, 0).st("S")
    go(dmac, 0, bytes(asm.lpend(1, start).end().code), bus)
    device.rx.extend([1, 2, 3, 4])
    port = device.dma_requests["rx"]
    assert port.serve(4) == 2  # two words fit below the end of RAM
    ch = dmac.channels[0]
    assert dmac.read(CS0, 4) & 0xF == State.FAULTING and ch.fault & (1 << 17)  # data write error
    assert ch.dar == end_of_ram and ch.lc[1] == 1
    assert bus.read("cpu", end_of_ram - 8, 8) == bytes([1, 0, 0, 0, 2, 0, 0, 0])


def nested_rx_program(passes: int, per_pass: int) -> bytes:
    """Linux's shape for more than 256 requests: DMALP lc0; DMALP lc1; FLUSHP, WFPS, LDPS, STS;
    DMALPEND lc1; DMALPEND lc0 back to the DMALP lc1 (single-beat words, DEV_TO_MEM)."""
    asm = Asm().mov("CCR", ccr(4, 1, src_inc=False)).mov("SAR", FIFO_BASE).mov("DAR", DST)
    outer = asm.lp(0, passes)
    inner = asm.lp(1, per_pass)
    asm.raw(0x35, 0 << 3).raw(0x30, 0).raw(0x25, 0).st("S")
    return bytes(asm.lpend(1, inner).lpend(0, outer).sev(0).end().code)


def parked_nested_loop(passes: int, per_pass: int):
    dmac, device, bus, _ = make_board_parts()
    dmac.write(INTEN, 4, 1)
    go(dmac, 0, nested_rx_program(passes, per_pass), bus)
    return dmac, device, bus, device.dma_requests["rx"]


def test_an_outer_loop_stands_for_all_its_passes():
    _, _, _, port = parked_nested_loop(passes=3, per_pass=10)
    assert port.standing() == 30


@pytest.mark.parametrize("steps", [[30], [10, 20], [7, 10, 13], [3, 17, 5, 5], [1] * 30, [25, 5]])
def test_serving_across_outer_passes_matches_request_by_request(steps):
    """Served in pieces that end inside a pass, at its end and across passes: the same words
    in RAM, the same counters and CPC at each step as interpreting request by request."""
    fast, fast_device, _, fast_port = parked_nested_loop(passes=3, per_pass=10)
    slow, slow_device, slow_bus, _ = parked_nested_loop(passes=3, per_pass=10)
    words = iter(range(0x1000, 0x1000 + 30))
    done = 0
    for step in steps:
        piece = [next(words) for _ in range(step)]
        fast_device.rx.extend(piece)
        assert fast_port.serve(step) == step
        slow_device.receive(piece)  # a request per word, each interpreted by the channel
        done += step
        fast_ch, slow_ch = fast.channels[0], slow.channels[0]
        assert (fast_ch.lc, fast_ch.pc, fast_ch.dar, fast_ch.state) == \
               (slow_ch.lc, slow_ch.pc, slow_ch.dar, slow_ch.state), f"after {done}"
        assert fast_port.standing() == 30 - done
    assert fast.read(CS0, 4) & 0xF == State.STOPPED and fast.read(ES, 4) == 1
    expected = b"".join(i.to_bytes(4, "little") for i in range(0x1000, 0x1000 + 30))
    assert fast.dma.read(DST, 120) == expected == slow_bus.read("cpu", DST, 120)


@pytest.mark.parametrize("fit", [2, 4, 6, 9])
def test_a_bulk_store_faulting_in_a_later_pass_faults_where_interpreting_does(fit):
    """``fit`` words fit below the end of RAM: the store of the next faults, inside a pass or
    as the first of the next one, with the counters and CPC request-by-request leaves."""
    end_of_ram = RAM_BASE + (4 << 20)
    program = nested_rx_program(passes=3, per_pass=4).replace(
        DST.to_bytes(4, "little"), (end_of_ram - 4 * fit).to_bytes(4, "little"))
    channels = []
    for bulk in (True, False):
        dmac, device, bus, _ = make_board_parts()
        go(dmac, 0, program, bus)
        device.rx.extend(range(1, 13))
        if bulk:
            assert device.dma_requests["rx"].serve(12) == fit
        else:
            for _ in range(fit + 1):
                device.request_rx()
        assert dmac.read(CS0, 4) & 0xF == State.FAULTING
        channels.append(dmac.channels[0])
        assert bus.read("cpu", end_of_ram - 4 * fit, 4 * fit) == b"".join(
            i.to_bytes(4, "little") for i in range(1, fit + 1))
    fast, slow = channels
    assert (fast.lc, fast.pc, fast.dar, fast.fault) == (slow.lc, slow.pc, slow.dar, slow.fault)
    assert fast.fault & (1 << 17)  # a data write error
