"""The PL031 model against cosim's in-memory bus: registers as the TRM gives them, on the
guest's clock, which the test moves."""

from __future__ import annotations

import pytest
from cosim_pl031.rtc import Pl031

from cosim.testing import ModelBench

DR, MR, LR, CR, IMSC, RIS, MIS, ICR = range(0, 0x20, 4)
SECOND = 1_000_000_000


@pytest.fixture
def bench(model_bench: ModelBench) -> ModelBench:  # cosim's pytest plugin gives the bench
    return model_bench


@pytest.fixture
def rtc(bench):
    return bench.add(Pl031, "rtc", base=0x0C0B0000, start=100)


def test_amba_probing_finds_a_pl031(rtc):
    periph_id = sum(rtc.read(0xFE0 + 4 * i, 4) << (8 * i) for i in range(4))
    cell_id = sum(rtc.read(0xFF0 + 4 * i, 4) << (8 * i) for i in range(4))
    assert (periph_id, cell_id) == (0x00041031, 0xB105F00D)


def test_the_counter_counts_seconds_of_guest_time(bench, rtc):
    assert rtc.read(DR, 4) == 100
    bench.clock.advance(SECOND - 1)
    assert rtc.read(DR, 4) == 100
    bench.clock.advance(1)
    assert rtc.read(DR, 4) == 101


def test_a_load_sets_the_counter(bench, rtc):
    bench.clock.advance(SECOND // 2)
    rtc.write(LR, 4, 1_700_000_000)
    bench.clock.advance(3 * SECOND)
    assert rtc.read(DR, 4) == 1_700_000_003


def test_start_stays_set(rtc):
    rtc.write(CR, 4, 1)
    rtc.write(CR, 4, 0)
    assert rtc.read(CR, 4) == 1


def test_the_match_raises_the_interrupt_when_unmasked_until_cleared(bench, rtc):
    irq = bench.irqs["rtc"]
    rtc.write(MR, 4, 105)
    rtc.write(IMSC, 4, 1)
    bench.clock.advance(5 * SECOND - 1)
    assert rtc.read(RIS, 4) == 0 and not irq.levels.get(0)
    bench.clock.advance(1)
    assert rtc.read(RIS, 4) == 1 and rtc.read(MIS, 4) == 1 and irq.levels[0] and rtc.irq("rtc").level
    rtc.write(ICR, 4, 1)
    assert rtc.read(RIS, 4) == 0 and not irq.levels[0]


def test_a_masked_match_sets_only_the_raw_status(bench, rtc):
    rtc.write(MR, 4, 101)
    bench.clock.advance(SECOND)
    assert (rtc.read(RIS, 4), rtc.read(MIS, 4), bench.irqs["rtc"].levels.get(0, False)) == (1, 0, False)


def test_a_new_load_moves_the_match(bench, rtc):
    rtc.write(MR, 4, 200)
    rtc.write(LR, 4, 198)
    bench.clock.advance(2 * SECOND)
    assert rtc.read(RIS, 4) == 1
