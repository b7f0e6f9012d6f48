"""cosim,dma-copy: a memory-to-memory copy engine, the smallest honest DMA master.

Register map (32-bit registers)::

    0x00 ID          RO  0x434F5059 ("COPY")
    0x04 VERSION     RO  0x00010000
    0x08 CTRL        START (0, self-clearing), DESC (1: run the descriptor chain), IRQ_EN (2)
    0x0C STATUS      BUSY (0, RO), DONE (1, W1C), ERROR (2, W1C)
    0x10/0x14 SRC    source address, low/high word
    0x18/0x1C DST    destination address, low/high word
    0x20 LEN         bytes to copy (single mode)
    0x24/0x28 DESC   address of the first descriptor (descriptor mode)
    0x2C/0x30 FAULT  RO: the address of the transaction that faulted
    0x34 COPIED      RO: bytes copied by the last run
    0x38 COMPLETED   RO: runs completed since reset
    0x3C ADDR_BITS   RO: address lines of the engine's bus-master port (32 or 64, as built)

A descriptor is 32 bytes in guest memory: u64 src, u64 dst, u32 len, u32 flags (reserved, 0),
u64 next (0 ends the chain).  A transfer that touches an address outside memory stops, sets
ERROR and FAULT, and interrupts, as a bus decode error does on silicon.
"""

from __future__ import annotations

import struct

from cosim.api import DmaFault, Field, Peripheral, Register, hookimpl

DESCRIPTOR = struct.Struct("<QQIIQ")
MAX_CHAIN = 1 << 16  # a longer chain is a loop in the guest's descriptors


class DmaCopy(Peripheral):
    compatible = ("cosim,dma-copy",)
    irq_names = ("done",)
    dma_master = True

    ID = Register(0x00, access="ro", reset=0x434F5059)
    VERSION = Register(0x04, access="ro", reset=0x00010000)
    CTRL = Register(0x08, fields=[Field("START", 0), Field("DESC", 1), Field("IRQ_EN", 2)],
                    on_write="control_written")
    STATUS = Register(0x0C, fields=[Field("BUSY", 0, access="ro"), Field("DONE", 1, access="w1c"),
                                    Field("ERROR", 2, access="w1c")],
                      on_write="update_interrupt")
    SRC_LO = Register(0x10)
    SRC_HI = Register(0x14)
    DST_LO = Register(0x18)
    DST_HI = Register(0x1C)
    LEN = Register(0x20)
    DESC_LO = Register(0x24)
    DESC_HI = Register(0x28)
    FAULT_LO = Register(0x2C, access="ro")
    FAULT_HI = Register(0x30, access="ro")
    COPIED = Register(0x34, access="ro")
    COMPLETED = Register(0x38, access="ro")
    ADDR_BITS = Register(0x3C, access="ro", on_read="address_bits")

    def address_bits(self) -> int:
        assert self.dma is not None
        return self.dma.address_bits  # the platform's address_bits

    def control_written(self, _value: int) -> None:
        if not self.regs.CTRL.START:
            self.update_interrupt()
            return
        self.regs.CTRL.START = 0
        self.regs.STATUS.DONE = 0
        self.regs.STATUS.ERROR = 0
        copied = 0
        try:
            if self.regs.CTRL.DESC:
                copied = self._run_chain(self.regs.DESC_LO.value | self.regs.DESC_HI.value << 32)
            else:
                copied = self._copy(self.regs.SRC_LO.value | self.regs.SRC_HI.value << 32,
                                    self.regs.DST_LO.value | self.regs.DST_HI.value << 32,
                                    self.regs.LEN.value)
            self.regs.STATUS.DONE = 1
        except DmaFault as fault:
            self.regs.STATUS.ERROR = 1
            self.regs.FAULT_LO.value = fault.address & 0xFFFFFFFF
            self.regs.FAULT_HI.value = fault.address >> 32
        except _ChainTooLong:
            self.regs.STATUS.ERROR = 1
        self.regs.COPIED.value = copied & 0xFFFFFFFF
        self.regs.COMPLETED.value = (self.regs.COMPLETED.value + 1) & 0xFFFFFFFF
        self.update_interrupt()

    def _copy(self, src: int, dst: int, length: int) -> int:
        assert self.dma is not None
        if length:
            self.dma.copy(src, dst, length)
        return length

    def _run_chain(self, address: int) -> int:
        assert self.dma is not None
        copied = 0
        for _ in range(MAX_CHAIN):
            src, dst, length, _flags, nxt = DESCRIPTOR.unpack(self.dma.read(address, DESCRIPTOR.size))
            copied += self._copy(src, dst, length)
            if nxt == 0:
                return copied
            address = nxt
        raise _ChainTooLong

    def update_interrupt(self, _value: int = 0) -> None:
        status = self.regs.STATUS
        self.irq("done").set(bool(self.regs.CTRL.IRQ_EN and (status.DONE or status.ERROR)))


class _ChainTooLong(Exception):
    pass


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"dma-copy": DmaCopy}
