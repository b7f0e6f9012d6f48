"""Devices no driver bound: the guest's sysfs listing, and what the kernel's source says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.binding import DEFERRED_MARK, ModelDevice, parse_unbound, unbound_devices

RTC = ModelDevice("rtc", 0x0C000000, ("arm,pl031",), 0x00041031)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A kernel tree as far as the explanation reads it."""
    (tmp_path / "drivers" / "rtc").mkdir(parents=True)
    (tmp_path / "drivers" / "rtc" / "rtc-pl031.c").write_text("{ .id = 0x00041031, .mask = 0x000fffff },\n")
    (tmp_path / "drivers" / "rtc" / "Makefile").write_text("obj-$(CONFIG_RTC_DRV_PL031)\t+= rtc-pl031.o\n")
    (tmp_path / "drivers" / "rtc" / "Kconfig").write_text(
        "menuconfig RTC_CLASS\n\tbool \"RTC\"\n\nif RTC_CLASS\n\nconfig RTC_DRV_OTHER\n\tdepends on I2C\n\n"
        "config RTC_DRV_PL031\n\ttristate \"PL031\"\n\tdepends on ARM_AMBA || COMPILE_TEST\n\thelp\n"
        "\t  depends on NOTHING\n\nendif # RTC_CLASS\n")
    (tmp_path / "drivers" / "gpu").mkdir()
    (tmp_path / "drivers" / "gpu" / "widget-core.c").write_text('"acme,widget"\n')
    (tmp_path / "drivers" / "gpu" / "Makefile").write_text(
        "widget-y := widget-core.o \\\n\twidget-irq.o\nobj-$(CONFIG_DRM_WIDGET) += widget.o\n")
    (tmp_path / ".config").write_text(
        "CONFIG_DRM_WIDGET=m\n# CONFIG_RTC_DRV_PL031 is not set\nCONFIG_ARM_AMBA=y\n")
    return tmp_path


def test_the_listing_gives_devices_without_a_driver_and_deferred_reasons():
    unbound, deferred = parse_unbound(f"c000000.rtc\nc010000.dmacopy\n{DEFERRED_MARK}\n"
                                      "c010000.dmacopy\twait for supplier /copy_mmu@c0b0000\n")
    assert unbound == {"c000000.rtc", "c010000.dmacopy"}
    assert deferred == {"c010000.dmacopy": "wait for supplier /copy_mmu@c0b0000"}


def test_a_driver_the_kernel_does_not_build_is_named_with_its_option(tree):
    [line] = unbound_devices([RTC], f"c000000.rtc\n{DEFERRED_MARK}\n", tree)
    assert line == ("rtc (arm,pl031) at 0xc000000: no driver bound — drivers/rtc/rtc-pl031.c drives "
                    "PrimeCell ID 0x00041031, built with CONFIG_RTC_DRV_PL031, which this guest kernel "
                    "does not set: add CONFIG_RTC_DRV_PL031=y to guest.kernel.options; it depends on "
                    "RTC_CLASS, ARM_AMBA, of which this kernel lacks RTC_CLASS")


def test_a_driver_built_through_a_composite_object_that_did_not_bind(tree):
    widget = ModelDevice("widget", 0x0C010000, ("acme,widget",))
    [line] = unbound_devices([widget], "c010000.widget\n", tree)
    assert "drivers/gpu/widget-core.c matches 'acme,widget' and CONFIG_DRM_WIDGET=m is set" in line


def test_no_driver_anywhere_and_a_deferred_probe(tree):
    gadget = ModelDevice("gadget", 0x0C020000, ("acme,gadget",))
    lines = unbound_devices([gadget, RTC], f"c020000.gadget\nc000000.rtc\n{DEFERRED_MARK}\n"
                            "c000000.rtc\tno clock\n", tree)
    assert lines == ["gadget (acme,gadget) at 0xc020000: no driver bound — no driver in this "
                     "kernel's source matches 'acme,gadget'",
                     "rtc (arm,pl031) at 0xc000000: no driver bound — its probe was deferred: no clock"]


def test_bound_devices_and_devices_without_a_compatible_say_nothing(tree):
    bare = ModelDevice("bare", 0x0C030000, ())
    assert unbound_devices([RTC, bare], "c030000.bare\n", tree) == []
