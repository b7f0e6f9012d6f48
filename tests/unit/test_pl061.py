from __future__ import annotations

import pytest

from cosim.plugins.pl061 import Pl061

DIR, IS, IBE, IEV, IE, RIS, MIS, IC = 0x400, 0x404, 0x408, 0x40C, 0x410, 0x414, 0x418, 0x41C


@pytest.fixture
def gpio(make) -> Pl061:
    return make(Pl061)


def test_identity(gpio):
    periph_id = sum(gpio.read(0xFE0 + 4 * i, 4) << (8 * i) for i in range(4))
    assert periph_id & 0xFFFFF == 0x41061


def test_outputs_drive_their_listeners_through_the_address_mask(gpio):
    seen: list[tuple[int, bool]] = []
    for line in (0, 3):
        gpio.connect_gpio_output(line, lambda level, line=line: seen.append((line, level)))
    assert seen == [(0, True), (3, True)]  # undriven lines are pulled up
    gpio.write(DIR, 1, 0x09)  # lines 0 and 3 out, latch still 0: both go low
    assert seen[2:] == [(0, False), (3, False)]
    seen.clear()
    gpio.write(1 << (3 + 2), 1, 0xFF)  # the address selects line 3 only
    assert seen == [(3, True)]
    assert gpio.read(0x3FC, 1) == 0xFE  # all high but output line 0
    assert gpio.read(1 << 2, 1) == 0  # only line 0 is read


def test_edge_and_level_interrupts(gpio, irqs):
    gpio.write(IEV, 1, 0x01)  # line 0: rising edge
    gpio.write(IE, 1, 0x03)
    gpio.write(IS, 1, 0x02)  # line 1: level, low (IEV bit clear)
    gpio.set_input(0, False)
    assert gpio.read(MIS, 1) == 0
    gpio.set_input(0, True)
    assert gpio.read(MIS, 1) == 0x01 and irqs.levels.get(0)
    gpio.write(IC, 1, 0x01)
    assert gpio.read(MIS, 1) == 0 and not irqs.levels.get(0)
    gpio.set_input(1, False)
    assert gpio.read(MIS, 1) == 0x02
    gpio.write(IC, 1, 0x02)  # a level stays while the line does
    assert gpio.read(MIS, 1) == 0x02
    gpio.set_input(1, True)
    assert gpio.read(MIS, 1) == 0


def test_a_line_out_of_range_is_refused(gpio):
    with pytest.raises(ValueError, match=r"lines 0\.\.7"):
        gpio.connect_gpio_output(8, lambda level: None)
