"""After boot, a model's device that no guest driver bound is reported with why."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.api import Peripheral, Register, hookimpl
from cosim.binding import UnboundDeviceWarning


class Rtc(Peripheral):
    """Enough of an ARM PL031 for the AMBA bus to match it; cosim's guest kernel has no RTC."""

    compatible = ("arm,pl031",)
    primecell_id = 0x00041031
    DR = Register(0x000, access="ro")


class Widget(Peripheral):
    compatible = ("acme,widget",)


class Plugin:
    @hookimpl
    def cosim_peripheral_types(self):  # type: ignore[no-untyped-def]
        return {"rtc": Rtc, "widget": Widget}


BOARD = """\
name: unbound
peripherals:
  - {name: rtc, plugin: rtc, base: 0x0c000000}
  - {name: widget, plugin: widget, base: 0x0c001000}
  - {name: dmacopy, plugin: dma-copy, base: 0x0c010000, irqs: [113]}
"""


def test_devices_no_driver_bound_are_named_with_the_option_they_lack(cosim_board_factory, tmp_path: Path):
    platform = tmp_path / "unbound.yaml"
    platform.write_text(BOARD)
    with pytest.warns(UnboundDeviceWarning) as warned:
        board = cosim_board_factory(platform=platform, plugins=(Plugin(),))
    assert board.unbound == [
        "rtc (arm,pl031) at 0xc000000: no driver bound — drivers/rtc/rtc-pl031.c drives PrimeCell ID "
        "0x00041031, built with CONFIG_RTC_DRV_PL031, which this guest kernel does not set: add "
        "CONFIG_RTC_DRV_PL031=y to guest.kernel.options; it depends on RTC_CLASS, ARM_AMBA, of which "
        "this kernel lacks RTC_CLASS",
        "widget (acme,widget) at 0xc001000: no driver bound — no driver in this kernel's source "
        "matches 'acme,widget'"]
    assert [str(w.message) for w in warned if w.category is UnboundDeviceWarning] == board.unbound
    assert "c010000.dmacopy" in board.run("ls /sys/bus/platform/drivers/cosim-dma-copy").output
