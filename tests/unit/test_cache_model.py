"""The cache state machine (harness/cachemodel/model.c) without QEMU, driven through the DMA
API's real arm64 sequences: Linux 6.12 cleans on map and sync_for_device (DC CVAC per line) and
invalidates on sync_for_cpu and unmap (DC IVAC, with DC CIVAC on unaligned edge lines)."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosim.cachemodel import LINE_SIZE, CacheModel, Kind, Maintenance, Mode

RAM_BASE = 0x4000_0000
RAM_SIZE = 64 * 1024
BUF = RAM_BASE + 0x2000  # a line-aligned buffer
STORE_PC = 0xFFFF_8000_1234_5678
LOAD_PC = 0xFFFF_8000_0000_4444


class Guest:
    """RAM as the CPU sees it (the file QEMU maps) and the model, with the DMA API's cache
    maintenance as arm64 Linux performs it."""

    def __init__(self, folder: Path, mode: Mode):
        self.ram_file = folder / "ram"
        self.ram_file.write_bytes(bytes(RAM_SIZE))
        with self.ram_file.open("r+b") as f:
            self.ram = mmap.mmap(f.fileno(), RAM_SIZE)
        self.model = CacheModel(folder / "cache", self.ram_file, RAM_BASE, RAM_SIZE, mode)
        self.mode = mode

    def cpu_write(self, address: int, data: bytes, pc: int = STORE_PC) -> None:
        for i in range(0, len(data), 8):  # memcpy's 8-byte stores, hook first as in QEMU
            chunk = data[i:i + 8]
            self.model.cpu_access(address + i, len(chunk), True, pc=pc)
            self.ram[address + i - RAM_BASE:address + i - RAM_BASE + len(chunk)] = chunk

    def cpu_read(self, address: int, length: int, pc: int = LOAD_PC) -> bytes:
        for i in range(0, length, 8):
            self.model.cpu_access(address + i, min(8, length - i), False, pc=pc)
        return self.ram[address - RAM_BASE:address - RAM_BASE + length]

    def device_read(self, address: int, length: int, agent: int = 7, transfer: int = 1) -> bytes:
        data = bytearray(self.ram[address - RAM_BASE:address - RAM_BASE + length])
        self.model.device_read(address, data, agent, transfer)
        return bytes(data)

    def device_write(self, address: int, data: bytes, agent: int = 7, transfer: int = 2) -> None:
        self.model.device_write(address, data, agent, transfer)
        if self.mode == Mode.REPORT:  # in emulate mode the model has put the bytes where they go
            self.ram[address - RAM_BASE:address - RAM_BASE + len(data)] = data

    # arm64's dcache_clean_poc and dcache_inval_poc over [start, end)
    def clean(self, start: int, end: int) -> None:
        for line in range(start & ~(LINE_SIZE - 1), end, LINE_SIZE):
            self.model.cpu_maintenance(line, Maintenance.CLEAN)

    def invalidate(self, start: int, end: int) -> None:
        first, last = start & ~(LINE_SIZE - 1), end & ~(LINE_SIZE - 1)
        if end % LINE_SIZE:
            self.model.cpu_maintenance(last, Maintenance.CLEAN_INVALIDATE)
        line = first
        if start % LINE_SIZE:
            self.model.cpu_maintenance(first, Maintenance.CLEAN_INVALIDATE)
            line += LINE_SIZE
        for at in range(line, last, LINE_SIZE):
            self.model.cpu_maintenance(at, Maintenance.INVALIDATE)

    # the streaming DMA API on a non-coherent device (kernel/dma/direct.h, arch/arm64/mm)
    def map(self, address: int, length: int) -> None:  # any direction: dma_map_single
        self.clean(address, address + length)

    def sync_for_device(self, address: int, length: int) -> None:
        self.clean(address, address + length)

    def unmap(self, address: int, length: int, to_device: bool = False) -> None:
        if not to_device:  # dma_unmap_single / dma_sync_single_for_cpu: nothing for TO_DEVICE
            self.invalidate(address, address + length)

    sync_for_cpu = unmap

    def close(self) -> None:
        self.model.close()
        self.ram.close()


@pytest.fixture(params=[Mode.REPORT, Mode.EMULATE], ids=["report", "emulate"])
def guest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Guest]:
    g = Guest(tmp_path, request.param)
    yield g
    g.close()


def kinds(guest: Guest) -> list[Kind]:
    return [e.kind for e in guest.model.drain()]


def pattern(n: int, seed: int) -> bytes:
    return bytes((seed + 7 * i) & 0xFF for i in range(n))


# --- DMA_TO_DEVICE --------------------------------------------------------------------------------

def test_to_device_done_right_is_silent(guest: Guest) -> None:
    data = pattern(256, 1)
    guest.cpu_write(BUF, data)
    guest.map(BUF, 256)
    assert guest.device_read(BUF, 256) == data
    guest.unmap(BUF, 256, to_device=True)
    assert kinds(guest) == []


def test_writes_after_map_without_sync_for_device_are_reported_and_unseen(guest: Guest) -> None:
    guest.cpu_write(BUF, pattern(128, 1))
    guest.map(BUF, 128)
    guest.cpu_write(BUF + 64, pattern(64, 9), pc=STORE_PC + 4)  # the second line, after the map
    seen = guest.device_read(BUF, 128, agent=3, transfer=41)
    events = guest.model.drain()
    assert [(e.kind, e.line, e.bytes, e.pc, e.agent, e.transfer) for e in events] == [
        (Kind.DEVICE_READ_UNCLEAN, BUF + 64, (1 << 64) - 1, STORE_PC + 4, 3, 41)]
    if guest.mode == Mode.EMULATE:  # RAM still holds what the last clean wrote back
        assert seen == pattern(128, 1)
    else:
        assert seen == pattern(128, 1)[:64] + pattern(64, 9)


def test_sync_for_device_after_the_writes_cures_it(guest: Guest) -> None:
    guest.map(BUF, 128)
    guest.cpu_write(BUF, pattern(128, 5))
    guest.sync_for_device(BUF, 128)
    assert guest.device_read(BUF, 128) == pattern(128, 5)
    assert kinds(guest) == []


def test_one_report_per_line_until_its_next_maintenance(guest: Guest) -> None:
    guest.map(BUF, 64)
    guest.cpu_write(BUF, pattern(64, 2))
    for transfer in range(3):
        guest.device_read(BUF, 64, transfer=transfer)
    assert kinds(guest) == [Kind.DEVICE_READ_UNCLEAN]
    guest.sync_for_device(BUF, 64)
    guest.cpu_write(BUF, pattern(8, 3))
    guest.device_read(BUF, 64)
    assert kinds(guest) == [Kind.DEVICE_READ_UNCLEAN]


# --- DMA_FROM_DEVICE ------------------------------------------------------------------------------

def test_from_device_done_right_is_silent(guest: Guest) -> None:
    guest.cpu_read(BUF, 256)  # the CPU held the lines before: they go stale under the device
    guest.map(BUF, 256)
    guest.device_write(BUF, pattern(256, 3))
    guest.unmap(BUF, 256)
    assert guest.cpu_read(BUF, 256) == pattern(256, 3)
    assert kinds(guest) == []


def test_read_without_sync_for_cpu_is_reported_and_stale(guest: Guest) -> None:
    guest.cpu_write(BUF, bytes(128))
    guest.map(BUF, 128)
    guest.device_write(BUF, pattern(128, 4), agent=2)
    seen = guest.cpu_read(BUF + 64, 8, pc=LOAD_PC)
    events = guest.model.drain()
    assert [(e.kind, e.line, e.bytes, e.pc) for e in events] == [
        (Kind.CPU_READ_STALE, BUF + 64, 0xFF, LOAD_PC)]
    assert seen == (bytes(8) if guest.mode == Mode.EMULATE else pattern(128, 4)[64:72])


def test_a_line_untouched_since_its_invalidate_holds_nothing_stale(guest: Guest) -> None:
    """The CPU fetches RAM on its next access (speculative fetches are not modelled: Linux
    relies on that for the cacheable alias of every coherent buffer)."""
    guest.cpu_read(BUF, 64)
    guest.invalidate(BUF, BUF + 64)
    guest.device_write(BUF, pattern(64, 8))
    assert guest.cpu_read(BUF, 64) == pattern(64, 8)
    assert kinds(guest) == []


def test_a_freed_coherent_buffer_reused_by_the_kernel_is_silent(guest: Guest) -> None:
    """dma_alloc_coherent only cleans the linear alias (arch_dma_prep_coherent), whose lines the
    CPU may still hold; the device writes RAM; after dma_free_coherent the page's new owner
    writes it through that alias and reads it back; later it is mapped for DMA again."""
    guest.cpu_read(BUF, 4096)
    guest.clean(BUF, BUF + 4096)
    guest.device_write(BUF, pattern(4096, 12))
    guest.cpu_write(BUF, pattern(4096, 13))  # copy_page into the reused page
    assert guest.cpu_read(BUF, 4096) == pattern(4096, 13)
    guest.map(BUF, 4096)
    assert guest.device_read(BUF, 4096) == pattern(4096, 13)
    assert kinds(guest) == []


def test_a_freed_coherent_buffer_s_unwritten_bytes_read_by_the_new_owner_are_silent(
        guest: Guest) -> None:
    """The same, but the new owner reads a field it never wrote (mas_destroy reads the unused
    slot of a maple node): garbage either way, and no DMA mistake.  The page was a coherent
    buffer, as its uncached accesses said; its next streaming mapping makes it ordinary again."""
    guest.cpu_write(BUF, bytes(4096))  # clear_page: the alias's lines are in the cache
    guest.clean(BUF, BUF + 4096)  # arch_dma_prep_coherent
    guest.model.cpu_access(BUF, 8, True, cached=False)  # the driver fills it through the NC map
    guest.device_write(BUF, pattern(4096, 12))
    guest.cpu_write(BUF, pattern(16, 13))  # the new owner's stores
    guest.cpu_read(BUF + 16, 8)  # and a load of bytes it never stored
    assert kinds(guest) == []
    guest.map(BUF, 4096)  # the page is an ordinary streaming buffer now
    guest.device_write(BUF, pattern(4096, 14))
    guest.cpu_read(BUF + 64, 8)  # no dma_sync_single_for_cpu
    assert kinds(guest) == [Kind.CPU_READ_STALE]


def test_a_coherent_master_s_write_updates_the_cpu_s_copy(guest: Guest) -> None:
    """QEMU's virtio devices snoop: what they write, the CPU reads."""
    guest.cpu_read(BUF, 64)
    guest.device_write(BUF, pattern(64, 14))  # a non-coherent device: the CPU's copy goes stale
    data = pattern(64, 15)
    guest.ram[BUF - RAM_BASE:BUF - RAM_BASE + 64] = data  # QEMU writes guest RAM directly
    guest.model.coherent_write(BUF, 64)
    assert guest.cpu_read(BUF, 64) == data
    assert kinds(guest) == []


def test_cpu_writes_into_a_buffer_the_device_owns(guest: Guest) -> None:
    guest.map(BUF, 64)
    guest.cpu_write(BUF, b"\xee" * 8, pc=STORE_PC + 8)
    guest.device_write(BUF, pattern(64, 6))
    guest.unmap(BUF, 64)
    events = guest.model.drain()
    assert [(e.kind, e.bytes, e.pc) for e in events] == [
        (Kind.DEVICE_WRITE_OVER_DIRTY, 0xFF, STORE_PC + 8),
        (Kind.CPU_WRITE_DISCARDED, 0xFF, STORE_PC + 8)]
    # the invalidate drops the CPU's bytes: the device's data is what the CPU then sees
    assert guest.cpu_read(BUF, 64) == pattern(64, 6)


# --- shared cache lines ---------------------------------------------------------------------------

def receive_into_shared_line(guest: Guest, neighbour_first: bool) -> bytes:
    """A 48-byte receive buffer at offset 16 of a line whose first 16 bytes are a field the CPU
    updates during the transfer (a struct member next to an embedded buffer)."""
    buffer, length = BUF + 16, 48
    guest.cpu_write(BUF, bytes(64))
    guest.map(buffer, length)
    if neighbour_first:
        guest.cpu_write(BUF, b"\x01" * 8, pc=STORE_PC + 12)
    guest.device_write(buffer, pattern(length, 10))
    if not neighbour_first:
        guest.cpu_write(BUF, b"\x01" * 8, pc=STORE_PC + 12)
    guest.unmap(buffer, length)
    return guest.cpu_read(buffer, length)


BUFFER_BYTES = 0xFFFF_FFFF_FFFF << 16  # bytes 16-63 of the line
FIELD_BYTES = 0xFF  # bytes 0-7


def test_neighbour_written_before_the_device_write(guest: Guest) -> None:
    seen = receive_into_shared_line(guest, neighbour_first=True)
    events = guest.model.drain()
    assert [(e.kind, e.bytes, e.other, e.pc) for e in events] == [
        (Kind.DEVICE_WRITE_SHARED_LINE, BUFFER_BYTES, FIELD_BYTES, STORE_PC + 12),
        (Kind.WRITEBACK_OVER_DEVICE, BUFFER_BYTES, FIELD_BYTES, STORE_PC + 12)]
    if guest.mode == Mode.EMULATE:  # the CIVAC on the edge wrote the CPU's whole line back
        assert seen == bytes(48)
    else:
        assert seen == pattern(48, 10)


def test_neighbour_written_after_the_device_write(guest: Guest) -> None:
    seen = receive_into_shared_line(guest, neighbour_first=False)
    events = guest.model.drain()
    # the unmap's clean-and-invalidate of the edge line writes the CPU's stale copy back
    assert [(e.kind, e.bytes, e.other, e.pc) for e in events] == [
        (Kind.WRITEBACK_OVER_DEVICE, BUFFER_BYTES, FIELD_BYTES, STORE_PC + 12)]
    assert seen == (bytes(48) if guest.mode == Mode.EMULATE else pattern(48, 10))


def test_a_line_aligned_buffer_beside_a_busy_field_is_silent(guest: Guest) -> None:
    guest.map(BUF + 64, 64)
    guest.cpu_write(BUF + 56, b"\x01" * 8)  # the field ends where the buffer's line begins
    guest.device_write(BUF + 64, pattern(64, 11))
    guest.unmap(BUF + 64, 64)
    assert guest.cpu_read(BUF + 64, 64) == pattern(64, 11)
    assert kinds(guest) == []


# --- tracking and bookkeeping ---------------------------------------------------------------------

def test_cpu_accesses_to_untracked_pages_are_not_modelled(guest: Guest) -> None:
    guest.cpu_write(BUF, pattern(64, 1))  # nothing tracks this page yet: QEMU would not call
    assert not guest.model.page_tracked(BUF)
    guest.device_read(BUF, 64)
    assert guest.model.page_tracked(BUF)
    assert kinds(guest) == []


def test_device_access_starts_tracking_and_says_so(guest: Guest) -> None:
    started = guest.model.device_read(BUF + 4000, bytearray(200), 1, 1)  # crosses a page
    assert started == 2
    assert guest.model.device_read(BUF + 4000, bytearray(200), 1, 1) == 0
    assert guest.model.counters()["pages_tracked"] == 2


def test_accesses_across_a_line_boundary_touch_both_lines(guest: Guest) -> None:
    guest.map(BUF, 128)
    guest.model.cpu_access(BUF + 60, 8, True, pc=STORE_PC)
    guest.device_read(BUF, 128)
    events = guest.model.drain()
    assert [(e.line, e.bytes) for e in events] == [(BUF, 0xF << 60), (BUF + 64, 0xF)]


def test_maintenance_outside_ram_is_ignored(guest: Guest) -> None:
    assert not guest.model.cpu_maintenance(RAM_BASE + RAM_SIZE, Maintenance.CLEAN)
    guest.model.cpu_access(RAM_BASE - 8, 8, True)
    assert kinds(guest) == []


def test_a_full_event_ring_counts_what_it_drops(guest: Guest) -> None:
    lines = range(RAM_BASE, RAM_BASE + RAM_SIZE, LINE_SIZE)  # 1024 lines

    def dirty_every_line_and_read_it(rounds: int) -> None:
        for _ in range(rounds):
            guest.clean(RAM_BASE, RAM_BASE + RAM_SIZE)
            for line in lines:
                guest.model.cpu_access(line, 8, True)
            guest.device_read(RAM_BASE, RAM_SIZE)

    dirty_every_line_and_read_it(8)  # exactly the ring's 8192 entries
    assert len(guest.model.drain()) == 8192
    assert guest.model.counters()["events_dropped"] == 0
    dirty_every_line_and_read_it(9)
    assert len(guest.model.drain()) == 8192
    assert guest.model.counters()["events_dropped"] == 1024


def test_a_state_file_of_another_board_is_refused(tmp_path: Path) -> None:
    g = Guest(tmp_path, Mode.REPORT)
    try:
        with pytest.raises(ValueError, match="does not fit this board"):
            CacheModel(tmp_path / "cache", g.ram_file, RAM_BASE, RAM_SIZE, Mode.EMULATE)
    finally:
        g.close()


def test_a_coherent_buffer_s_uncached_accesses_see_ram(guest: Guest) -> None:
    """dma_alloc_coherent's buffer is used through a Normal-NC mapping while its cacheable alias
    may still be held: the CPU's uncached reads see what the device wrote, in both modes."""
    guest.cpu_read(BUF, 64)  # the linear alias is in the cache
    guest.clean(BUF, BUF + 64)  # arch_dma_prep_coherent
    guest.model.cpu_access(BUF, 8, True, cached=False)  # a descriptor written through the NC map
    guest.ram[BUF - RAM_BASE:BUF - RAM_BASE + 8] = b"\x11" * 8
    assert guest.device_read(BUF, 8) == b"\x11" * 8
    guest.device_write(BUF + 8, pattern(8, 16))  # the device's status
    guest.model.cpu_access(BUF + 8, 8, False, cached=False)
    assert guest.ram[BUF + 8 - RAM_BASE:BUF + 16 - RAM_BASE] == pattern(8, 16)
    assert kinds(guest) == []


# --- load ordering: descriptor rings in coherent memory -------------------------------------------

RING = BUF + 0x1000  # a descriptor: fields in words 0-1, status in word 2


def complete_descriptor(guest: Guest) -> None:
    """The device writes the descriptor's fields, then (a later transfer) its status."""
    guest.device_write(RING, pattern(16, 20))
    guest.device_write(RING + 16, b"\x01" + bytes(7))


def test_fields_read_after_the_status_without_a_barrier_are_reported(guest: Guest) -> None:
    guest.model.load_barrier()  # the driver's last barrier before the device completes
    complete_descriptor(guest)
    guest.model.cpu_access(RING + 16, 4, False, pc=LOAD_PC, cached=False)  # the status poll
    guest.model.cpu_access(RING + 8, 4, False, pc=LOAD_PC + 8, cached=False)  # desc->len
    events = guest.model.drain()
    assert [(e.kind, e.line, e.bytes, e.pc, e.lr, e.other) for e in events] == [
        (Kind.LOAD_ORDER, RING, 0xF << 8, LOAD_PC + 8, LOAD_PC, RING)]


def test_dma_rmb_between_status_and_fields_is_silent(guest: Guest) -> None:
    guest.model.load_barrier()
    complete_descriptor(guest)
    guest.model.cpu_access(RING + 16, 4, False, cached=False)
    guest.model.load_barrier()  # dma_rmb()
    guest.model.cpu_access(RING, 16, False, cached=False)
    assert kinds(guest) == []


def test_a_completion_seen_after_a_barrier_orders_everything(guest: Guest) -> None:
    """The device finished before the CPU's last barrier (an interrupt, a readl): no load after
    it can miss the writes."""
    complete_descriptor(guest)
    guest.model.load_barrier()
    guest.model.cpu_access(RING + 16, 4, False, cached=False)
    guest.model.cpu_access(RING, 16, False, cached=False)
    assert kinds(guest) == []


def test_reading_in_the_device_s_write_order_is_silent(guest: Guest) -> None:
    guest.model.load_barrier()
    complete_descriptor(guest)
    guest.model.cpu_access(RING, 16, False, cached=False)  # fields first, then the status
    guest.model.cpu_access(RING + 16, 4, False, cached=False)
    assert kinds(guest) == []
