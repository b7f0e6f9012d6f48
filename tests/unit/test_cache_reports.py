"""Cache-model events into reports: the guest's dma trace parsed and joined, symbols named, the
fix worded per hazard (harness/cachemodel/reports.py), without QEMU."""

from __future__ import annotations

from pathlib import Path

from cosim.cachemodel import Event, Kind, Transfer
from cosim.cachemodel.reports import (
    CacheReport,
    CacheWatch,
    Symbols,
    describe_fault_address,
    describe_truncation,
    group,
    parse_dma_trace,
)


def trace_line(task: str, ts: str, event: str, fields: str) -> str:
    return f"     {task:<20}[000] .....     {ts}: {event}: {fields}"


TRACE = "\n".join([
    "# tracer: nop",
    trace_line("cosim-agent-54", "1.629298", "dma_map_page", "c020000.pl330 dir=TO_DEVICE "
               "dma_addr=436b8200 size=256 phys_addr=436b8200 attrs="),
    trace_line("cosim-agent-54", "1.640000", "dma_unmap_page", "c020000.pl330 dir=TO_DEVICE "
               "dma_addr=436b8200 size=256 attrs="),
    trace_line("cosim-agent-54", "1.700000", "dma_alloc", "c020000.pl330 dir=BIDIRECTIONAL "
               "dma_addr=7bc60000 size=8256 virt_addr=00000000a0279035 flags=GFP_KERNEL attrs="),
    trace_line("kworker/0:1-20", "1.800000", "dma_map_sg", "c050000.spi0 dir=FROM_DEVICE "
               "nents=2/2 ents=2/2 dma_addrs={0x41000000, 0x41002000} sizes={4096, 100} "
               "phys_addrs={0x41000000, 0x41002000} attrs="),
])

SYMBOLS = """\
ffff800080010000 T _text
ffff8000803e5040 T memset
ffff8000803e5200 T memcpy
ffff800080400000 t pl330_tasklet
"""
MODULE_SYMBOLS = """\
ffff8000788b0800 t cpu_writes_owned\t[cosim_cache_zoo]
ffff8000788b0900 t to_device_no_sync\t[cosim_cache_zoo]
"""


def test_the_dma_trace_gives_mappings_and_marks_their_unmaps() -> None:
    mappings = parse_dma_trace(TRACE)
    assert [(m.call, m.device, m.direction, m.dma_address, m.size, m.unmapped) for m in mappings] == [
        ("dma_map_page", "c020000.pl330", "TO_DEVICE", 0x436B8200, 256, True),
        ("dma_alloc", "c020000.pl330", "BIDIRECTIONAL", 0x7BC60000, 8256, False),
        ("dma_map_sg", "c050000.spi0", "FROM_DEVICE", 0x41000000, 4196, False)]
    sg = mappings[2]
    assert sg.covers(0x41002063) and not sg.covers(0x41002064) and not sg.covers(0x41001000)
    assert mappings[0].covers(0x436B82FF) and not mappings[0].covers(0x436B8300)


# As Linux 6.12 prints them behind an IOMMU: IOVAs from the top of the 32-bit space, hex sizes,
# and dma_unmap_sg naming only the physical addresses.
IOMMU_TRACE = "\n".join([
    trace_line("cosim-agent-46", "0.990789", "dma_map_page", "c010000.dmacopy dir=TO_DEVICE "
               "dma_addr=fffe0000 size=65600 phys_addr=45360000 attrs="),
    trace_line("cosim-agent-46", "0.991835", "dma_unmap_page", "c010000.dmacopy dir=TO_DEVICE "
               "dma_addr=fffe0000 size=65600 attrs="),
    trace_line("cosim-agent-46", "1.004654", "dma_map_sg", "c010000.dmacopy dir=FROM_DEVICE "
               "nents=2/2 ents=2/2 dma_addrs={0xfff60000,0xfff63000} sizes={0x2579,0x9786} "
               "phys_addrs={0x41d18000,0x453f0000} attrs="),
    trace_line("cosim-agent-46", "1.004668", "dma_unmap_sg", "c010000.dmacopy dir=FROM_DEVICE "
               "phys_addrs={0x41d18000,0x453f0000} attrs="),
    trace_line("cosim-agent-46", "1.004720", "dma_map_page", "c020000.pl330 dir=FROM_DEVICE "
               "dma_addr=fffe0000 size=4096 phys_addr=47000000 attrs="),
])


def test_an_iommu_trace_gives_iovas_hex_sizes_and_sg_unmaps_by_physical_address() -> None:
    single, sg, other = parse_dma_trace(IOMMU_TRACE)
    assert (single.dma_address, single.spans, single.unmapped) == (0xFFFE0000, ((0x45360000, 65600),),
                                                                 True)
    assert sg.dma_spans == ((0xFFF60000, 0x2579), (0xFFF63000, 0x9786)) and sg.unmapped
    assert sg.covers_dma(0xFFF6C785) and not sg.covers_dma(0xFFF6C786)
    assert other.by("pl330") and not other.by("dmacopy") and not other.unmapped


def test_an_sg_list_an_iommu_merged_has_no_physical_lengths_to_pair() -> None:
    merged, = parse_dma_trace("\n".join([
        trace_line("cosim-agent-46", "1.0", "dma_map_sg", "c010000.dmacopy dir=TO_DEVICE nents=2/2 "
                   "ents=1/1 dma_addrs={0xfff00000} sizes={0x2000} phys_addrs={0x41000000,0x47000000} "
                   "attrs="),
        trace_line("cosim-agent-46", "1.1", "dma_unmap_sg", "c010000.dmacopy dir=TO_DEVICE "
                   "phys_addrs={0x41000000,0x47000000} attrs=")]))
    assert merged.spans == () and merged.dma_spans == ((0xFFF00000, 0x2000),) and merged.size == 0x2000
    assert merged.unmapped and not merged.covers(0x47000000)  # not a guess at where 0x47000000 ends


def test_a_fault_names_the_last_mapping_that_covered_its_address() -> None:
    mappings = parse_dma_trace(IOMMU_TRACE)
    named = ("the last mapping that covered 0xfffe1000: dma_map_page by c010000.dmacopy at 0.990789 s "
             "(cosim-agent-46): dma 0xfffe0000, 65600 bytes, DMA_TO_DEVICE, unmapped at 0.991835 s")
    assert describe_fault_address("dmacopy", 0xFFFE1000, mappings) == named  # the access's time unknown
    assert describe_fault_address("dmacopy", 0xFFFE1000, mappings, at=0.9925) == (
        named + ", before the access (at 0.992500 s)")  # a use after unmap
    assert describe_fault_address("dmacopy", 0xFFFE1000, mappings, at=0.9915).endswith(
        "unmapped at 0.991835 s, after the access (at 0.991500 s)")  # the driver's clean-up after it
    assert describe_fault_address("pl330", 0xFFFE0010, mappings).endswith(", still mapped")


def test_a_fault_just_past_a_mapping_says_how_far_past() -> None:
    text = describe_fault_address("dmacopy", 0xFFFF0040 + 0x40, parse_dma_trace(IOMMU_TRACE))
    assert text.startswith("64 bytes past the end of dma_map_page by c010000.dmacopy")
    assert "(which ends at 0xffff0040)" in text


def test_a_fault_past_one_mapping_and_inside_an_unmapped_one_names_both() -> None:
    mappings = parse_dma_trace(IOMMU_TRACE + "\n" + trace_line(
        "cosim-agent-46", "1.100000", "dma_map_page", "c010000.dmacopy dir=FROM_DEVICE "
        "dma_addr=fffd0000 size=65536 phys_addr=46000000 attrs="))
    text = describe_fault_address("dmacopy", 0xFFFE0000, mappings, at=1.2)
    assert text.startswith("the last mapping that covered 0xfffe0000: dma_map_page by c010000.dmacopy "
                           "at 0.990789 s")
    assert text.endswith("before the access (at 1.200000 s); and 0 bytes past the end of dma_map_page by "
                         "c010000.dmacopy at 1.100000 s (cosim-agent-46): dma 0xfffd0000, 65536 bytes, "
                         "DMA_FROM_DEVICE (which ends at 0xfffe0000)")


def test_a_fault_no_mapping_explains_says_so() -> None:
    mappings = parse_dma_trace(IOMMU_TRACE)
    assert describe_fault_address("dmacopy", 0x10000, mappings) == (
        "no mapping by dmacopy in the guest's dma trace covers 0x10000")
    assert describe_fault_address("spi0", 0x10000, mappings).endswith(
        "(the trace holds none of spi0's mappings)")


def test_a_truncation_names_the_drivers_mapping_and_what_lives_where_it_landed() -> None:
    mappings = parse_dma_trace(TRACE + "\n" + trace_line(
        "cosim-agent-60", "2.000000", "dma_map_page", "c010000.dma32 dir=FROM_DEVICE "
        "dma_addr=17f123000 size=4096 phys_addr=17f123000 attrs="))
    assert describe_truncation("dma32", 0x17F123000, 0x7F123000, mappings) == (
        "the driver's mapping: dma_map_page by c010000.dma32 at 2.000000 s (cosim-agent-60): dma "
        "0x17f123000, 4096 bytes, DMA_FROM_DEVICE; no live DMA mapping covers 0x7f123000: the "
        "memory there belongs to the kernel")
    assert describe_truncation("dma32", 0x141000010, 0x41000010, mappings).endswith(
        "0x41000010 is inside a live mapping: dma_map_sg by c050000.spi0 at 1.800000 s "
        "(kworker/0:1-20): dma 0x41000000, 4196 bytes, DMA_FROM_DEVICE")


def test_symbols_name_kernel_and_module_text() -> None:
    symbols = Symbols()
    symbols.add(SYMBOLS)
    symbols.add(MODULE_SYMBOLS)
    assert symbols.name(0xFFFF8000803E5114) == "memset+0xd4"
    assert symbols.name(0xFFFF8000788B0944) == "to_device_no_sync+0x44 [cosim_cache_zoo]"
    assert symbols.name(0x1000) is None


class _Layer:
    masters = {"pl330": 1}
    transfers = {7: Transfer(7, "pl330", 0x436B8200, 64, False)}

    def master_name(self, agent: int) -> str:
        return "pl330"


def watch(tmp_path: Path) -> CacheWatch:
    w = CacheWatch(model=None, layer=_Layer(), system_map=None,  # type: ignore[arg-type]
                   report_file=tmp_path / "cache-reports.txt")
    w.symbols.add(SYMBOLS)
    w.symbols.add(MODULE_SYMBOLS)
    return w


def event(kind: Kind, line: int, bytes_: int, other: int, pc: int, transfer: int = 0,
          lr: int = 0) -> Event:
    return Event(kind, 1, line, bytes_, other, pc, 1, transfer, 0, lr)


def test_a_device_read_of_unclean_bytes_names_the_store_and_the_buffer(tmp_path: Path) -> None:
    w = watch(tmp_path)
    events = [event(Kind.DEVICE_READ_UNCLEAN, 0x436B8200, (1 << 64) - 1, (1 << 64) - 1,
                    0xFFFF8000788B0944, transfer=7)]
    report = w._report(events, parse_dma_trace(TRACE), "")
    text = str(report)
    assert text.splitlines()[0] == ("cache: missing dma_sync_single_for_device after the CPU's write "
                                    "at to_device_no_sync+0x44 [cosim_cache_zoo] (0xffff8000788b0944)")
    assert "device: pl330 read 64 bytes at 0x436b8200 (transfer 7)" in text
    assert "bytes 0-63" in text
    assert "buffer: dma_map_page by c020000.pl330 at 1.629298 s" in text and "DMA_TO_DEVICE" in text


def test_a_leaf_routine_is_named_with_its_caller(tmp_path: Path) -> None:
    w = watch(tmp_path)
    events = [event(Kind.CPU_WRITE_DISCARDED, 0x41000000, 0xFF, 0xFF, 0xFFFF8000803E5114,
                    lr=0xFFFF8000788B0840)]
    text = str(w._report(events, parse_dma_trace(TRACE), ""))
    assert ("the CPU wrote at memset+0xd4 (0xffff8000803e5114) called from cpu_writes_owned+0x40 "
            "[cosim_cache_zoo] while the device owned the buffer") in text
    assert "(mapped DMA_FROM_DEVICE by dma_map_sg at 1.800000 s)" in text


def test_a_write_back_over_device_bytes_says_shared_line_or_ownership(tmp_path: Path) -> None:
    w = watch(tmp_path)
    neighbour = event(Kind.WRITEBACK_OVER_DEVICE, 0x41000000, 0xFFFF_FFFF_FFFF_FFF0, 0xF,
                      0xFFFF8000788B0910)
    assert "buffer shares cache line 0x41000000 with bytes the CPU wrote at to_device_no_sync" \
        in str(w._report([neighbour], [], "none"))
    inside = event(Kind.WRITEBACK_OVER_DEVICE, 0x41000000, 0xFF00, 0xFF00, 0xFFFF8000788B0910)
    assert "while the device owned the buffer" in str(w._report([inside], [], "none"))


def test_a_stale_read_of_a_to_device_buffer_is_a_wrong_direction(tmp_path: Path) -> None:
    w = watch(tmp_path)
    stale = event(Kind.CPU_READ_STALE, 0x436B8200, 0x1, 0xFF, 0xFFFF8000788B0910)
    report = w._report([stale], parse_dma_trace(TRACE), "")
    assert report.fix.startswith("wrong direction: pl330 wrote a buffer mapped DMA_TO_DEVICE")


def test_user_space_and_unknown_pcs_are_said_as_such(tmp_path: Path) -> None:
    w = watch(tmp_path)
    assert w._name(0xFFFF9C96BE40) == "0xffff9c96be40 (user space)"
    assert w._name(0) == "an unknown instruction"


def test_events_group_by_transfer_or_instruction() -> None:
    a = event(Kind.DEVICE_READ_UNCLEAN, 0x1000, 1, 1, 5, transfer=3)
    b = event(Kind.DEVICE_READ_UNCLEAN, 0x1040, 1, 1, 5, transfer=3)
    c = event(Kind.CPU_READ_STALE, 0x2000, 1, 1, 9)
    d = event(Kind.CPU_READ_STALE, 0x2040, 1, 1, 9)
    e = event(Kind.CPU_READ_STALE, 0x2080, 1, 1, 10)
    assert group([a, b, c, d, e]) == [[a, b], [c, d], [e]]


def test_without_the_guest_a_report_says_what_it_cannot_name(tmp_path: Path) -> None:
    report = CacheReport(Kind.CPU_READ_STALE, [event(Kind.CPU_READ_STALE, 0x2000, 1, 1, 0)], None,
                         "pl330", "", "an unknown instruction", None,
                         "unknown: this guest kernel has no dma trace events")
    assert "buffer: unknown: this guest kernel has no dma trace events" in str(report)


class _Model:
    def __init__(self, events: list[Event]):
        self.events = events

    def drain(self) -> list[Event]:
        events, self.events = self.events, []
        return events


def test_hazards_and_reports_go_on_the_timeline(tmp_path: Path) -> None:
    from cosim.trace import EventTrace

    trace = EventTrace()
    events = [event(Kind.DEVICE_READ_UNCLEAN, 0x436B8200 + 64 * i, 1, 1, 0xFFFF8000788B0944,
                    transfer=7) for i in range(3)]
    w = CacheWatch(_Model(events), _Layer(), None, tmp_path / "cache-reports.txt",  # type: ignore[arg-type]
                   trace)
    w.symbols.add(MODULE_SYMBOLS)
    w.poll()
    [seen] = trace.on_track(CacheWatch.TRACK)
    assert seen["name"] == "device read unclean"
    assert seen["args"] == {"line": "0x436b8200", "lines": 3, "pc": "0xffff8000788b0944",
                            "device": "pl330"}
    [report] = w.settle(None)
    assert not report.expected and w.unexpected == [report]
    assert trace.on_track(CacheWatch.TRACK)[-1]["args"]["fix"] == report.fix
    assert "missing dma_sync_single_for_device" in (tmp_path / "cache-reports.txt").read_text()


def test_a_read_that_may_pass_the_status_read_names_both_reads(tmp_path: Path) -> None:
    w = watch(tmp_path)
    order = event(Kind.LOAD_ORDER, 0x41000000, 0xFF00, 0x41000000, 0xFFFF8000788B0944,
                  lr=0xFFFF8000788B0910)
    report = w._report([order], [], "")
    assert report.fix.startswith("missing dma_rmb() between the read at to_device_no_sync+0x10 "
                                 "[cosim_cache_zoo] (0xffff8000788b0910) of line 0x41000000 and "
                                 "this read at to_device_no_sync+0x44")
    assert "CPU-dirty" not in str(report)
