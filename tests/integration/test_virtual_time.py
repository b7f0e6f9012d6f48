"""Virtual time: the guest's clock counts instructions, stands still while Python answers and
skips idle time, so what the guest measures does not depend on the host."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator

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


@pytest.fixture
def busy_host() -> Iterator[None]:
    """Every host core kept busy by other processes, as on a loaded CI machine."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_real_rates_hold_on_a_busy_host(virtual_board, busy_host):
    """The hardware's rates and tolerances, with the host's cores taken by other processes:
    spidev at 12 MHz with 64 KiB, audio with 512-frame periods and the FIFO's own underrun
    margin, a UART at 3 Mbaud by DMA — none times out or runs dry."""
    board = virtual_board
    board.run("head -c 65536 /dev/urandom > /tmp/in")
    board.run("spidev_test -D /dev/spidev0.0 -l -s 12000000 -i /tmp/in -o /tmp/out", timeout=300)
    assert board.run("cmp /tmp/in /tmp/out").status == 0
    i2s = board.peripherals["i2s0"]
    underruns = i2s.underruns
    out = board.run("pcmtest play /dev/snd/pcmC0D0p 48000 1000 24000", timeout=300).output
    assert "played 24000 frames at 48000 Hz, xruns 0" in out and i2s.underruns == underruns
    uart = board.peripheral("uart2")
    board.run("stty -F /dev/ttyAMA2 3000000 raw -echo -ixon -ixoff")
    board.run("head -c 65536 /dev/urandom > /tmp/tx")
    digest = board.run("md5sum /tmp/tx").output.split()[0]
    board.run("cat /tmp/tx > /dev/ttyAMA2", timeout=300)
    received = uart.take_from_guest(65536, timeout=60)
    assert hashlib.md5(received).hexdigest() == digest
