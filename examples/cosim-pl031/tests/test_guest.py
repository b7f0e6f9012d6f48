"""Linux's upstream rtc-pl031 on the model, in the real guest, on cosim's default board plus the
RTC (platforms/pl031.yaml extends virt)."""

from __future__ import annotations

import re

START = 1_700_000_000  # the platform's start property


def test_the_upstream_driver_binds_the_model_as_the_only_rtc(module_board):
    assert module_board.unbound == []
    device = module_board.run("readlink /sys/class/rtc/rtc0/device").output
    assert device.endswith("/c0b0000.rtc")
    assert "c0b0000.rtc" in module_board.run("ls /sys/bus/amba/drivers/rtc-pl031").output
    assert module_board.run("ls /sys/class/rtc").output.split() == ["rtc0"]  # virt's own is dropped


def test_the_guest_reads_the_time_the_model_keeps(module_board):
    seconds = int(module_board.run("cat /sys/class/rtc/rtc0/since_epoch").output)
    assert START <= seconds < START + 600  # the guest's time since boot: seconds, not hours
    read = module_board.run("hwclock -r -u -f /dev/rtc0").output  # busybox: "Tue Nov 14 22:13:20 2023"
    assert "Nov 14 22:1" in read and "2023" in read


def test_hwclock_sets_the_counter(module_board):
    module_board.run("date -u -s '2030-01-02 03:04:05' && hwclock -w -u -f /dev/rtc0")
    assert module_board.peripheral("rtc").counter() >= 1893553445  # 2030-01-02 03:04:05 UTC
    read = module_board.run("hwclock -r -u -f /dev/rtc0").output
    assert "Jan  2 03:0" in read and "2030" in read


def test_an_alarm_raises_the_interrupt_the_driver_handles(module_board):
    def count() -> int:
        line = module_board.run("grep rtc-pl031 /proc/interrupts").output
        return int(re.split(r"\s+", line.strip())[1])

    before = count()
    module_board.run("echo +2 > /sys/class/rtc/rtc0/wakealarm && sleep 3")
    assert count() == before + 1
    assert module_board.peripheral("rtc").read(0x14, 4) == 0  # the driver cleared RTCRIS
