"""rockchip,rk3568-iommu: Rockchip's per-master IOMMU (the v2 format, 40-bit physical addresses),
as the upstream ``rockchip-iommu`` driver programs it.

One instance sits in front of one master (``#iommu-cells = <0>``; platform ``iommus: [mmu]`` on
the master).  Register map (32-bit)::

    0x00 DTE_ADDR         the directory table: bits 31:4 of a v2 directory entry (what the driver
                          writes, mk_dtentries(dt_dma)); reads back bits 31:4, 0 after FORCE_RESET
    0x04 STATUS      RO   PAGING_ENABLED (0), PAGE_FAULT_ACTIVE (1), STALL_ACTIVE (2), IDLE (3),
                          REPLAY_BUFFER_EMPTY (4), PAGE_FAULT_IS_WRITE (5), STALL_NOT_ACTIVE (31)
    0x08 COMMAND     WO   0 enable paging, 1 disable paging, 2 enable stall (paging on only),
                          3 disable stall, 4 zap the whole IOTLB, 5 page fault done, 6 force reset
    0x0C PAGE_FAULT_ADDR  RO  the IOVA of the first fault not yet done
    0x10 ZAP_ONE_LINE WO  drops the IOTLB entry of one IOVA
    0x14 INT_RAWSTAT RO   PAGE_FAULT (0), BUS_ERROR (1)
    0x18 INT_CLEAR   WO   clears INT_RAWSTAT bits
    0x1C INT_MASK         enables them onto the interrupt line
    0x20 INT_STATUS  RO   INT_RAWSTAT & INT_MASK
    0x24 AUTO_GATING      kept, no effect

Translation: an IOVA is 10 bits of directory index, 10 of table index, 12 of page offset.  A
directory entry (DTE) and a page-table entry (PTE) hold a page address in the v2 layout (bits
31:12 of it in 31:12, 35:32 in 11:8, 39:36 in 7:4) and a valid bit (0); a PTE adds readable (1)
and writable (2).  A walk reads the entries the transfer needs as the IOMMU's own DMA (the cache
model sees it: a driver that does not flush a table it wrote is reported, and in emulate mode
walks what memory holds), and the rest of their 64-byte lines of 16 PTEs beside it (a 4 KiB AXI
burst per page would otherwise walk for every page); the valid entries it read go into the
IOTLB, where an entry stays until ZAP_ONE_LINE or ZAP_CACHE drops it: a driver
that changes a table without a zap sees the stale translation, as on silicon, and the test hears
of it (a hazard report: the model compares an IOTLB hit with the table in memory, a check the
hardware does not make).  A DMA the tables do not allow is a page fault: the first one's IOVA
and direction are latched, the interrupt raised, and the master's transfer ends with a bus error
(the model cannot hold the master's transfer for a replay, as the hardware's stall would).
Paging disabled passes addresses through untranslated (``passed_through`` counts them).
"""

from __future__ import annotations

import struct

from cosim.api import (
    BusLayer,
    DmaFault,
    DtNode,
    Field,
    Iommu,
    Next,
    Peripheral,
    Ref,
    Register,
    Transaction,
    hookimpl,
)

PAGE = 4096
PTE_LINE = 16  # PTEs a walk reads at least: one 64-byte line of the table
DIRECTORY_MASK = 0xFFFFFFF0  # DTE_ADDR keeps bits 31:4 ("7 nybbles", as the driver checks)
VALID, READABLE, WRITABLE = 1 << 0, 1 << 1, 1 << 2
PAGE_FAULT, BUS_ERROR = 1 << 0, 1 << 1

ENABLE_PAGING, DISABLE_PAGING, ENABLE_STALL, DISABLE_STALL = 0, 1, 2, 3
ZAP_CACHE, PAGE_FAULT_DONE, FORCE_RESET = 4, 5, 6


def entry_address(entry: int) -> int:
    """The 40-bit page address of a v2 directory or page-table entry."""
    return (entry & 0xFFFFF000) | (entry & 0xF00) << 24 | (entry & 0xF0) << 32


class RkIommu(Peripheral, Iommu):
    compatible = ("rockchip,rk3568-iommu",)
    irq_names = ("mmu",)
    dma_master = True  # its table walks
    default_size = 0x100
    iommu_cells = 0

    DTE_ADDR = Register(0x00, on_write="directory_written")
    STATUS = Register(0x04, access="ro", on_read="status",
                      fields=[Field("PAGING_ENABLED", 0), Field("PAGE_FAULT_ACTIVE", 1),
                              Field("STALL_ACTIVE", 2), Field("IDLE", 3),
                              Field("REPLAY_BUFFER_EMPTY", 4), Field("PAGE_FAULT_IS_WRITE", 5),
                              Field("STALL_NOT_ACTIVE", 31)])
    COMMAND = Register(0x08, access="wo", on_write="command")
    PAGE_FAULT_ADDR = Register(0x0C, access="ro")
    # posted: the driver zaps every page it unmaps and never reads back
    ZAP_ONE_LINE = Register(0x10, access="wo", on_write="zap_line", posted=True)
    INT_RAWSTAT = Register(0x14, access="ro", fields=[Field("PAGE_FAULT", 0), Field("BUS_ERROR", 1)])
    INT_CLEAR = Register(0x18, access="wo", on_write="clear_interrupts")
    INT_MASK = Register(0x1C, fields=[Field("PAGE_FAULT", 0), Field("BUS_ERROR", 1)],
                        on_write="update_interrupt")
    INT_STATUS = Register(0x20, access="ro", on_read="masked_status")
    AUTO_GATING = Register(0x24)

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.masters: set[str] = set()
        self.paging = self.stalled = self.fault_active = self.fault_is_write = False
        # IOVA page -> its PTE as the last walk found it, and where in memory that PTE is
        self.iotlb: dict[int, tuple[int, int]] = {}
        self.translated = self.passed_through = self.walks = 0
        self.track = f"{self.name} translation"  # the timeline's
        self.faults: list[DmaFault] = []

    # --- the Iommu role ---

    def attach_master(self, master: str, stream_id: int | None, cells: tuple[int, ...]) -> None:
        if self.masters:
            raise ValueError(f"{self.name} already serves {', '.join(sorted(self.masters))}: a "
                             "Rockchip IOMMU sits in front of one master (#iommu-cells = <0>)")
        self.masters.add(master)

    def translation_layer(self) -> BusLayer:
        return self

    # --- registers ---

    def directory_written(self, value: int) -> None:
        self.regs.DTE_ADDR.value = value & DIRECTORY_MASK

    def status(self) -> int:
        return self.STATUS.compose(PAGING_ENABLED=self.paging, PAGE_FAULT_ACTIVE=self.fault_active,
                                   STALL_ACTIVE=self.stalled, IDLE=1, REPLAY_BUFFER_EMPTY=1,
                                   PAGE_FAULT_IS_WRITE=self.fault_is_write,
                                   STALL_NOT_ACTIVE=not self.stalled)

    def command(self, value: int) -> None:
        if value == ENABLE_PAGING:
            self.paging = True
        elif value == DISABLE_PAGING:
            self.paging = False
        elif value == ENABLE_STALL:
            self.stalled = self.paging  # the TRM: a stall needs paging on
        elif value == DISABLE_STALL:
            self.stalled = False
        elif value == ZAP_CACHE:
            self.iotlb.clear()
        elif value == PAGE_FAULT_DONE:
            self.fault_active = self.fault_is_write = False
        elif value == FORCE_RESET:
            self._reset()
        else:
            self.notes.note(self.name, "unknown COMMAND", self.COMMAND.offset, value)

    def _reset(self) -> None:
        for name in ("DTE_ADDR", "PAGE_FAULT_ADDR", "INT_RAWSTAT", "INT_MASK", "AUTO_GATING"):
            getattr(self.regs, name).value = 0
        self.paging = self.stalled = self.fault_active = self.fault_is_write = False
        self.iotlb.clear()
        self.update_interrupt()

    def zap_line(self, iova: int) -> None:
        self.iotlb.pop(iova // PAGE, None)

    def clear_interrupts(self, value: int) -> None:
        self.regs.INT_RAWSTAT.value &= ~value
        self.update_interrupt()

    def masked_status(self) -> int:
        return self.regs.INT_RAWSTAT.value & self.regs.INT_MASK.value

    def update_interrupt(self, _value: int = 0) -> None:
        self.irq("mmu").set(bool(self.masked_status()))

    # --- translation, on the master's DMA path ---

    def access(self, txn: Transaction, data: bytes | None, next_: Next) -> bytes | None:
        if txn.master not in self.masters:
            return next_(txn, data)
        with self.lock:
            if not self.paging:
                self.passed_through += 1
                return next_(txn, data)
            if self.stalled:
                self.notes.note(self.name, "DMA while stalled (served: the model cannot hold it)", 0)
            pieces, fault = self._translate(txn)
        if len(pieces) == 1 and fault is None and pieces[0][1] == txn.length:  # one run: no copy
            return next_(self._piece(txn, *pieces[0]), data)
        out = bytearray() if data is None else None
        for offset, length, physical in pieces:  # up to a faulting page: what silicon moves
            got = next_(self._piece(txn, offset, length, physical),
                        None if data is None else data[offset:offset + length])
            if out is not None:
                out += got
        if fault is not None:
            raise fault
        return None if out is None else bytes(out)

    def _piece(self, txn: Transaction, offset: int, length: int, physical: int) -> Transaction:
        """The physically contiguous run of ``txn`` at ``offset``, on the timeline too."""
        self.trace.instant(self.track, "write" if txn.write else "read", master=txn.master,
                           iova=hex(txn.address + offset), physical=hex(physical), length=length)
        return Transaction(txn.master, physical, length, txn.write, txn.beat, txn.increment,
                           txn.stream_id, txn.address + offset, txn.walk, txn.placed)

    def _translate(self, txn: Transaction) -> tuple[list[tuple[int, int, int]], DmaFault | None]:
        """(offset into the transfer, length, physical address) of its physically contiguous
        runs, up to the first page the tables do not allow, and that page's fault."""
        self.translated += 1
        last = txn.address + (txn.length - 1 if txn.increment else 0)
        walked: dict[int, tuple[int, int]] = {}  # this transfer's page-table reads: IOVA page -> PTE
        physical = self._one_run(txn, last, walked)
        if physical is not None:
            return [(0, txn.length, physical)], None
        pieces: list[tuple[int, int, int]] = []
        offset = 0
        try:
            while offset < txn.length:
                iova = txn.address + offset
                length = min(PAGE - iova % PAGE, txn.length - offset) if txn.increment else txn.length
                physical = self._physical(txn, iova, last, walked)
                if pieces and pieces[-1][2] + pieces[-1][1] == physical:
                    start, run, base = pieces[-1]
                    pieces[-1] = (start, run + length, base)
                else:
                    pieces.append((offset, length, physical))
                offset += length
        except DmaFault as fault:
            return pieces, fault
        return pieces, None

    def _one_run(self, txn: Transaction, last: int, walked: dict[int, tuple[int, int]]) -> int | None:
        """The physical address of a transfer whose pages all translate, allowed, current (each
        IOTLB hit as the table now holds it) and to one physically contiguous run, from the
        IOTLB or one walk: a driver's mapping of a buffer, checked list by list.  None sends the
        transfer page by page (with ``walked``, the walk made here), where faults and stale
        entries are found and reported."""
        first = txn.address // PAGE
        count = last // PAGE - first + 1
        pages = range(first, first + count)
        cached = list(map(self.iotlb.get, pages))
        misses = cached.count(None)
        if not misses:
            at = cached[0][1]
            raw = self.bus.peek(at, 4 * count)
            if raw is None:
                return None
            live = list(struct.unpack(f"<{count}I", raw))
        elif first >> 10 == (first + count - 1) >> 10:  # misses, all in one page table: one walk
            table = self._read_table(txn.address, last)
            if isinstance(table, str):
                return None
            page0, entries, at0 = table
            live = entries[first - page0:first - page0 + count]
            at = at0 + 4 * (first - page0)
        else:
            return None
        current = list(zip(live, range(at, at + 4 * count, 4), strict=True))
        need = VALID | (WRITABLE if txn.write else READABLE)
        if (live[0] & need != need or live != list(range(live[0], live[0] + PAGE * count, PAGE))
                or not (cached == current if not misses else misses == count
                        or all(hit is None or hit == now for hit, now in zip(cached, current, strict=True)))):
            if misses:
                walked.update((page0 + i, (entry, at0 + 4 * i)) for i, entry in enumerate(entries))
            return None
        if misses:  # the transfer's entries into the IOTLB, and the other valid ones read
            self.iotlb.update(zip(pages, current, strict=True))
            for i in (*range(first - page0), *range(first - page0 + count, len(entries))):
                if entries[i] & VALID:
                    self.iotlb.setdefault(page0 + i, (entries[i], at0 + 4 * i))
        return entry_address(live[0]) + txn.address % PAGE

    def _physical(self, txn: Transaction, iova: int, last: int,
                  walked: dict[int, tuple[int, int]]) -> int:
        page = iova // PAGE
        cached = self.iotlb.get(page)
        if cached is None:
            if page not in walked:
                table = self._read_table(iova, last)
                if isinstance(table, str):
                    self._fault(txn, iova, table)
                page0, entries, at0 = table
                for i, entry in enumerate(entries):
                    walked[page0 + i] = (entry, at0 + 4 * i)
                    if entry & VALID:  # the line's other valid entries: prefetched
                        self.iotlb.setdefault(page0 + i, (entry, at0 + 4 * i))
            pte, at = walked[page]
            if not pte & VALID:
                self._fault(txn, iova, "no page (page-table entry invalid)")
        else:
            pte, at = cached
            self._check_stale(txn, iova, pte, at)
        if not pte & (WRITABLE if txn.write else READABLE):
            self._fault(txn, iova, "the page is not " + ("writable" if txn.write else "readable"))
        return entry_address(pte) + iova % PAGE

    def _check_stale(self, txn: Transaction, iova: int, pte: int, at: int) -> None:
        now = self.bus.peek(at, 4)
        entry = None if now is None else int.from_bytes(now, "little")
        if entry is None or entry == pte:
            return
        table = (f"now maps it to {entry_address(entry):#x}" if entry & VALID
                 else "now says the page is not mapped")
        self.report_hazard(
            f"stale IOTLB entry: {txn.master}'s {'write' if txn.write else 'read'} at IOVA "
            f"{iova:#x} went to {entry_address(pte) + iova % PAGE:#x}, the IOTLB's translation, "
            f"but the page table (entry at {at:#x}) {table}: the IOMMU driver changed the table "
            "without ZAP_ONE_LINE or ZAP_CACHE")

    def _read_table(self, iova: int, last: int) -> tuple[int, list[int], int] | str:
        """One walk: the PTEs of the pages from ``iova`` to ``last`` that share its page table (a
        transfer's pages are consecutive entries), from the start of the 64-byte line that holds
        ``iova``'s entry and at least to its end, as (first page, PTEs, address of the first);
        or why there is no table."""
        if iova >> 32:
            return "above the 32-bit IOVA space"
        assert self.dma is not None
        self.walks += 1
        directory = entry_address(self.regs.DTE_ADDR.value)
        dte = int.from_bytes(self.dma.walk_read(directory + 4 * (iova >> 22), 4), "little")
        if not dte & VALID:
            return f"no page table (directory entry {iova >> 22} invalid)"
        needed = (iova >> 12) & 0x3FF, min(0x3FF, (min(last, 0xFFFFFFFF) >> 12) - (iova >> 22 << 10))
        first = needed[0] & ~(PTE_LINE - 1)
        count = max(needed[1] - first + 1, PTE_LINE)
        table = entry_address(dte)
        # the entries the transfer needs are the walk (the CPU's cache model sees it: a driver
        # that forgets to flush its table is caught); the rest of the line is read beside it
        entries = self.dma.walk_read(table + 4 * needed[0], 4 * (needed[1] - needed[0] + 1))
        before = self.bus.peek(table + 4 * first, 4 * (needed[0] - first)) or b""
        after = self.bus.peek(table + 4 * (needed[1] + 1), 4 * (first + count - needed[1] - 1)) or b""
        raw = before + entries + after
        return (iova >> 22 << 10) + first, list(struct.unpack(f"<{len(raw) // 4}I", raw)), table + 4 * first

    def _fault(self, txn: Transaction, iova: int, why: str) -> None:
        if not self.fault_active:  # the first fault is latched until PAGE_FAULT_DONE
            self.fault_active, self.fault_is_write = True, txn.write
            self.regs.PAGE_FAULT_ADDR.value = iova & 0xFFFFFFFF
        self.regs.INT_RAWSTAT.value |= PAGE_FAULT
        self.update_interrupt()
        fault = DmaFault(txn.master, iova, txn.length, txn.write,
                         f"IOMMU page fault in {self.name} at IOVA {iova:#x}: {why}")
        self.faults.append(fault)
        self.trace.instant(self.track, "page fault", master=txn.master,
                           iova=f"{iova:#x}", access="write" if txn.write else "read", why=why)
        raise fault


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"rk-iommu": RkIommu}


@hookimpl
def cosim_device_tree(peripheral: Peripheral, node: DtNode) -> None:
    if isinstance(peripheral, RkIommu):  # its bus and register clocks: virt's APB clock for both
        node.set("clocks", [Ref("/apb-pclk"), Ref("/apb-pclk")])
        node.set("clock-names", ["aclk", "iface"])
