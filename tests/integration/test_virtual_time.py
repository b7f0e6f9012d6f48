"""Virtual time: the guest's clock counts instructions, stands still while Python answers and
skips idle time, so what the guest measures does not depend on the host."""

from __future__ import annotations

import re

import pytest

COPY_ENGINE = 0x0C010000


@pytest.fixture(scope="module")
def virtual_board(cosim_module_board_factory):
    return cosim_module_board_factory(time="virtual")


def test_idle_guest_time_costs_no_host_time(virtual_board):
    """A minute of sleeping, inside a 30 s host timeout: idle time skips to the next timer."""
    assert virtual_board.time_mode == "virtual"
    virtual_board.run("sleep 60", timeout=30)


def test_the_guest_does_not_see_how_long_python_takes_to_answer(virtual_board):
    """20,000 register reads, each a round trip to Python (tens of microseconds of host time):
    the guest's clock does not move while one is answered."""
    out = virtual_board.run(f"mmio-bench {COPY_ENGINE:#x} 20000").output
    seconds = float(re.search(r"seconds=([\d.]+)", out).group(1))
    assert seconds < 0.002, out


def test_the_timeline_is_in_the_guests_time(virtual_board):
    """The timeline's clock is the guest's: PL330 transfers made after 30 s of guest sleep are
    stamped within the guest's uptime, whatever the host took."""
    virtual_board.run("sleep 30", timeout=30)
    virtual_board.run("modprobe dmatest iterations=4 channel=dma0chan0 run=1", timeout=120)
    virtual_board.run("cat /sys/module/dmatest/parameters/wait", timeout=120)
    virtual_board.run("rmmod dmatest")
    uptime_ns = float(virtual_board.run("cut -d' ' -f1 /proc/uptime").output) * 1e9
    transfers = [e for e in virtual_board.trace.on_track("pl330 channel 0") if e["name"] == "transfer"]
    assert virtual_board.trace.chrome_json()["otherData"]["cosim_clock"] == "guest"
    assert len(transfers) >= 4
    for event in transfers:
        assert 30e9 < event["ts"] * 1000 <= uptime_ns
