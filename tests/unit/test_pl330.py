"""The PL330 model run on microcode like Linux's pl330 driver writes, against the in-memory bus."""

from __future__ import annotations

import os
import random

import pytest

from cosim.plugins import pl330
from cosim.plugins.pl330 import Fault, Pl330, State, instruction_size

from .conftest import RAM_BASE

INTEN, ES, INTMIS, INTCLR, FSRD, FSRC, FTR0 = 0x20, 0x24, 0x28, 0x2C, 0x30, 0x34, 0x40
CS0, CPC0 = 0x100, 0x104
SAR0, DAR0, CCR0, LC0_0 = 0x400, 0x404, 0x408, 0x40C
DBGSTATUS, DBGCMD, DBGINST0, DBGINST1, CR0, CRD = 0xD00, 0xD04, 0xD08, 0xD0C, 0xE00, 0xE14
PROGRAM = RAM_BASE + 0x1000
SRC, DST = RAM_BASE + 0x10000, RAM_BASE + 0x80000


OP = {name: instruction.opcode for name, instruction in pl330.BY_NAME.items()}  # the model's table
CONDITION = {"": 0b00, "S": 0b01, "B": 0b11}  # bits 1:0 of DMALD/DMAST/DMALPEND: bs, x


class Asm:
    """Assembles PL330 microcode with the model's instruction table, as Linux's
    drivers/dma/pl330.c encodes it."""

    def __init__(self) -> None:
        self.code = bytearray()

    def mov(self, reg: str, value: int) -> Asm:
        self.code += bytes([OP["DMAMOV"], {"SAR": 0, "CCR": 1, "DAR": 2}[reg]]) + value.to_bytes(4, "little")
        return self

    def ld(self, cond: str = "") -> Asm:
        self.code.append(OP["DMALD"] | CONDITION[cond])
        return self

    def st(self, cond: str = "") -> Asm:
        self.code.append(OP["DMAST"] | CONDITION[cond])
        return self

    def lp(self, counter: int, times: int) -> int:
        self.code += bytes([OP["DMALP"] | counter << 1, times - 1])
        return len(self.code)

    def lpend(self, counter: int, start: int, forever: bool = False) -> Asm:
        op = OP["DMALPEND"] | (0 if forever else 0x10) | counter << 2
        self.code += bytes([op, len(self.code) - start])
        return self

    def sev(self, event: int) -> Asm:
        self.code += bytes([OP["DMASEV"], event << 3])
        return self

    def wfe(self, event: int) -> Asm:
        self.code += bytes([OP["DMAWFE"], event << 3])
        return self

    def end(self) -> Asm:
        self.code.append(OP["DMAEND"])
        return self

    def raw(self, *data: int) -> Asm:
        self.code += bytes(data)
        return self


def ccr(burst_size: int, burst_len: int, src_inc: bool = True, dst_inc: bool = True, swap: int = 0) -> int:
    size = burst_size.bit_length() - 1
    return (src_inc | size << 1 | (burst_len - 1) << 4 | dst_inc << 14 | size << 15
            | (burst_len - 1) << 18 | swap << 28)


def linux_memcpy(src: int, dst: int, length: int, event: int = 0, bus_bytes: int = 8) -> bytes:
    """The microcode pl330_prep_dma_memcpy + _setup_req produce for one copy."""
    size = bus_bytes
    while (src | dst | length) & (size - 1):
        size //= 2
    burst_len = max(1, min(16, length // size))
    asm = Asm().mov("CCR", ccr(size, burst_len)).mov("SAR", src).mov("DAR", dst)
    bursts = length // (size * burst_len)
    while bursts:
        if bursts >= 256 * 256:
            lc0, lc1 = 256, 256
        elif bursts > 256:
            lc0, lc1 = bursts // 256, 256
        else:
            lc0, lc1 = 0, bursts
        if lc1 == 1 and not lc0:
            asm.ld().st()
            bursts -= 1
            continue
        outer = asm.lp(0, lc0) if lc0 else None
        inner = asm.lp(1, lc1)
        asm.ld().st().lpend(1, inner)
        if outer is not None:
            asm.lpend(0, outer)
        bursts -= lc1 * (lc0 or 1)
    dregs = (length - (length // (size * burst_len)) * size * burst_len) // size
    if dregs:
        asm.mov("CCR", ccr(size, dregs)).ld().st()
    return bytes(asm.sev(event).end().code)


@pytest.fixture
def dmac(make) -> Pl330:
    return make(Pl330, channels=8, peripherals=32, events=32, data_width=64, data_buffer_lines=64)


def go(dmac: Pl330, channel: int, program: bytes, bus) -> None:
    bus.write("cpu", PROGRAM, program)
    insn = bytes([0xA0, channel]) + PROGRAM.to_bytes(4, "little")
    dmac.write(DBGINST0, 4, insn[0] << 16 | insn[1] << 24)
    dmac.write(DBGINST1, 4, int.from_bytes(insn[2:6], "little"))
    dmac.write(DBGCMD, 4, 0)


def kill(dmac: Pl330, channel: int) -> None:
    dmac.write(DBGINST0, 4, 0x01 << 16 | channel << 8 | 1)
    dmac.write(DBGINST1, 4, 0)
    dmac.write(DBGCMD, 4, 0)


def test_identity_and_configuration(dmac):
    periph_id = sum(dmac.read(0xFE0 + 4 * i, 4) << (8 * i) for i in range(4))
    assert periph_id & 0xFFFFF == 0x41330 and periph_id >> 20 & 0xF == 3
    cr0 = dmac.read(CR0, 4)
    assert cr0 & 1 and (cr0 >> 4 & 7) + 1 == 8 and (cr0 >> 12 & 0x1F) + 1 == 32
    assert (cr0 >> 17 & 0x1F) + 1 == 32
    crd = dmac.read(CRD, 4)
    assert 8 << (crd & 7) == 64 and (crd >> 20) + 1 == 64
    assert dmac.read(DBGSTATUS, 4) == 0


def test_configuration_is_checked(make):
    with pytest.raises(ValueError, match="channels"):
        make(Pl330, channels=9)


@pytest.mark.parametrize("length", [1, 3, 8, 100, 128, 4096, 4097, 65536, 1 << 20, (1 << 20) + 24])
def test_linux_memcpy_microcode(dmac, bus, irqs, length):
    data = os.urandom(length)
    src, dst = SRC, DST + 0x100000
    bus.write("cpu", src, data)
    dmac.write(INTEN, 4, 1 << 3)
    go(dmac, 3, linux_memcpy(src, dst, length, event=3), bus)
    assert bus.read("cpu", dst, length) == data
    assert bus.read("cpu", dst + length, 1) == b"\0"
    assert dmac.read(CS0 + 3 * 8, 4) & 0xF == State.STOPPED
    assert dmac.read(ES, 4) == 1 << 3 and dmac.read(INTMIS, 4) == 1 << 3
    assert irqs.levels[0] and not irqs.levels.get(1)
    dmac.write(INTCLR, 4, 1 << 3)
    assert dmac.read(ES, 4) == 0 and not irqs.levels[0]


def test_random_copies_match_memcpy(dmac, bus):
    rng = random.Random(7)
    for _ in range(60):
        length = rng.randrange(1, 70000)
        src, dst = SRC + rng.randrange(64), DST + rng.randrange(64)
        data = rng.randbytes(length)
        bus.write("cpu", src, data)
        go(dmac, rng.randrange(8), linux_memcpy(src, dst, length), bus)
        assert bus.read("cpu", dst, length) == data


def test_bulk_loop_gives_the_same_registers_as_interpreting(dmac, bus):
    go(dmac, 0, linux_memcpy(SRC, DST, 256 * 128), bus)
    assert dmac.read(SAR0, 4) == SRC + 256 * 128 and dmac.read(DAR0, 4) == DST + 256 * 128
    assert dmac.read(LC0_0 + 4, 4) == 0


def test_the_outer_loop_of_a_long_copy_is_one_transfer_too(dmac, bus):
    """Linux nests a copy of more than 256 bursts in an outer loop: it is one transfer as well."""
    class Transfers:
        sizes: list[int] = []

        def access(self, txn, data, next_):  # type: ignore[no-untyped-def]
            self.sizes.append(txn.length)
            return next_(txn, data)

    seen = Transfers()
    bus.add_layer(seen, "trace")
    data = os.urandom(1 << 20)
    bus.write("cpu", SRC, data)
    seen.sizes.clear()
    dst = SRC + (2 << 20)  # clear of the source
    go(dmac, 0, linux_memcpy(SRC, dst, 1 << 20), bus)
    sizes = list(seen.sizes)
    assert bus.read("cpu", dst, 1 << 20) == data
    assert dmac.read(SAR0, 4) == SRC + (1 << 20) and dmac.read(DAR0, 4) == dst + (1 << 20)
    assert dmac.read(LC0_0, 4) == dmac.read(LC0_0 + 4, 4) == 0
    # the microcode's fetches, the first burst as interpreted, then one read and one write
    assert sorted(sizes)[-2:] == [(1 << 20) - 128] * 2 and len(sizes) <= 6, sizes


def test_overlapping_copy_runs_burst_by_burst(dmac, bus):
    bus.write("cpu", SRC, bytes(range(256)))
    # dst 8 bytes above src: each burst reads what the previous one wrote, as on silicon
    asm = Asm().mov("CCR", ccr(8, 1)).mov("SAR", SRC).mov("DAR", SRC + 8)
    start = asm.lp(1, 16)
    go(dmac, 0, bytes(asm.ld().st().lpend(1, start).end().code), bus)
    assert bus.read("cpu", SRC, 136) == bytes(range(8)) * 17


def test_dma_to_an_address_outside_memory_faults_the_channel(dmac, bus, irqs):
    bad = 0xF0000000
    go(dmac, 2, linux_memcpy(SRC, bad, 4096, event=2), bus)
    assert dmac.read(CS0 + 2 * 8, 4) & 0xF == State.FAULTING
    assert dmac.read(FSRC, 4) == 1 << 2
    assert dmac.read(FTR0 + 2 * 4, 4) & Fault.DATA_WRITE_ERR
    assert irqs.levels[1]  # the abort interrupt
    assert bus.faults[-1].address == bad
    kill(dmac, 2)
    assert dmac.read(FSRC, 4) == 0 and not irqs.levels[1]
    assert dmac.read(CS0 + 2 * 8, 4) & 0xF == State.STOPPED
    go(dmac, 2, linux_memcpy(SRC, DST, 64), bus)  # the channel works again
    assert dmac.read(CS0 + 2 * 8, 4) & 0xF == State.STOPPED


def test_read_fault_and_fetch_fault(dmac, bus):
    go(dmac, 0, linux_memcpy(0xF0000000, DST, 64), bus)
    assert dmac.read(FTR0, 4) & Fault.DATA_READ_ERR
    kill(dmac, 0)
    insn = bytes([0xA0, 1]) + (0xE0000000).to_bytes(4, "little")
    dmac.write(DBGINST0, 4, insn[0] << 16 | insn[1] << 24)
    dmac.write(DBGINST1, 4, int.from_bytes(insn[2:6], "little"))
    dmac.write(DBGCMD, 4, 0)
    assert dmac.read(FTR0 + 4, 4) & Fault.INSTR_FETCH_ERR


@pytest.mark.parametrize("program,fault", [
    (bytes([0xFF]), Fault.UNDEF_INSTR),
    (bytes([0xA0, 0, 0, 0, 0, 0]), Fault.UNDEF_INSTR),  # DMAGO is the manager's
    (bytes([0xBC, 3, 0, 0, 0, 0]), Fault.OPERAND_INVALID),  # DMAMOV to no register
    (bytes(Asm().mov("CCR", ccr(8, 1)).st().code), Fault.ST_DATA_UNAVAILABLE),
    (bytes(Asm().mov("CCR", ccr(8, 16)).mov("SAR", SRC).ld().ld().ld().ld().ld().code), Fault.MFIFO_ERR),
])
def test_bad_programs_fault_with_the_right_type(dmac, bus, irqs, program, fault):
    go(dmac, 5, program, bus)
    assert dmac.read(FTR0 + 5 * 4, 4) & fault
    assert dmac.read(FSRC, 4) == 1 << 5 and irqs.levels[1]
    assert dmac.read(CPC0 + 5 * 8, 4) >= PROGRAM


def test_dmago_on_a_busy_channel_is_a_manager_fault(dmac, bus):
    go(dmac, 0, bytes(Asm().wfe(4).end().code), bus)
    assert dmac.read(CS0, 4) & 0xF == State.WFE and (dmac.read(CS0, 4) >> 4) & 0x1F == 4
    go(dmac, 0, bytes(Asm().end().code), bus)
    assert dmac.read(FSRD, 4) == 1


def test_event_without_interrupt_wakes_a_waiting_channel(dmac, bus):
    go(dmac, 0, bytes(Asm().wfe(4).mov("CCR", ccr(4, 1)).mov("SAR", SRC).mov("DAR", DST).ld().st()
                      .end().code), bus)
    bus.write("cpu", SRC, b"wake")
    assert dmac.read(CS0, 4) & 0xF == State.WFE
    dmac.write(DBGINST0, 4, 0x34 << 16 | (4 << 3) << 24)  # DMASEV 4 from the manager
    dmac.write(DBGCMD, 4, 0)
    assert dmac.read(CS0, 4) & 0xF == State.STOPPED
    assert bus.read("cpu", DST, 4) == b"wake"
    assert dmac.read(ES, 4) == 0  # INTEN[4] is clear: an event, not an interrupt


def test_loop_forever_is_stopped_as_a_lockup_not_a_hang(dmac, bus, monkeypatch):
    monkeypatch.setattr(pl330, "STEP_LIMIT", 5000)
    asm = Asm()
    start = len(asm.code)
    asm.raw(0x18).lpend(0, start, forever=True)
    go(dmac, 0, bytes(asm.code), bus)
    assert dmac.read(FTR0, 4) & Fault.LOCKUP_ERR


def test_add_halfword_and_store_zeros_and_endian_swap(dmac, bus):
    bus.write("cpu", SRC, bytes(range(16)))
    program = (Asm().mov("CCR", ccr(4, 1, swap=2)).mov("SAR", SRC).mov("DAR", DST)
               .ld().st()
               .raw(0x56, 0x10, 0x00)  # DMAADDH DAR, 16
               .raw(0x5C, 0xFC, 0xFF)  # DMAADNH SAR, -4 (0xFFFC | 0xFFFF0000)
               .ld().st().raw(0x0C).end())
    go(dmac, 0, bytes(program.code), bus)
    assert bus.read("cpu", DST, 4) == bytes([3, 2, 1, 0])  # 32-bit swap
    assert bus.read("cpu", DST + 20, 4) == bytes([3, 2, 1, 0])  # SAR went back by 4
    assert bus.read("cpu", DST + 24, 4) == bytes(4)  # DMASTZ


def test_instruction_lengths():
    assert [instruction_size(op) for op in (0x00, 0x04, 0x06, 0x20, 0x29, 0x2A, 0x38, 0x54, 0xBC, 0xA2)] == [
        1, 1, 0, 2, 2, 0, 2, 3, 6, 6]


def test_transfers_and_faults_are_on_the_timeline(dmac, bus):
    go(dmac, 2, linux_memcpy(SRC, DST, 4096), bus)
    go(dmac, 3, linux_memcpy(SRC, 0xF0000000, 64), bus)
    trace = dmac.trace.chrome_json()["traceEvents"]
    tracks = {e["args"]["name"]: e["tid"] for e in trace if e["ph"] == "M"}
    [copy] = [e for e in trace if e["ph"] == "X" and e["tid"] == tracks["dut channel 2"]]
    assert copy["name"] == "transfer" and copy["dur"] >= 0
    assert copy["args"] == {"src": f"{SRC:#x}", "dst": f"{DST:#x}", "length": 4096}
    [fault] = [e for e in trace if e["ph"] == "X" and e["tid"] == tracks["dut channel 3"]]
    assert fault["name"] == "fault DATA_WRITE_ERR" and fault["args"]["length"] == 0
