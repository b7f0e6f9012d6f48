"""Platform files: what loads, and errors that name file, line and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.devicetree import Ref
from cosim.platform import PlatformError, load_platform

from .conftest import assemble

GOOD = """\
name: t
machine:
  memory: 512M
peripherals:
  - name: uart1
    plugin: pl011
    base: 0x0c000000
    irqs: [112]
  - name: copy
    plugin: dma-copy
    base: 0x0c001000
    irqs: [113]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.yaml"
    path.write_text(text)
    return path


def board_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(PlatformError) as info:
        assemble(write(tmp_path, text)).build()
    return str(info.value)


def test_default_platform_loads_and_checks():
    platform = load_platform("virt")
    assert platform.spec.machine.gic == 3
    assert {p.plugin for p in platform.spec.peripherals} >= {"pl011", "dma-copy"}
    assemble(platform.path)


def test_good_file(tmp_path):
    spec = load_platform(write(tmp_path, GOOD)).spec
    assert spec.machine.memory == 512 << 20
    assert [p.base for p in spec.peripherals] == [0x0C000000, 0x0C001000]


def test_unknown_key_names_line_and_allowed_keys(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("    irqs: [113]", "    irqs: [113]\n    colour: red"))
    assert "board.yaml:13: unknown key 'colour'" in msg
    assert ("allowed here: address_bits, base, bus, devices, dmas, dt, gpios, iommus, irqs, name, "
            "plugin, properties, resets, size, stream_id") in msg


def test_missing_field(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("    plugin: pl011\n", ""))
    assert "board.yaml:5: missing field 'peripherals.0.plugin'" in msg


def test_bad_yaml_names_the_line(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("irqs: [112]", "irqs: [112"))
    assert "board.yaml:9: invalid YAML" in msg or "board.yaml:8: invalid YAML" in msg


def test_wrong_type(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("base: 0x0c001000", "base: far"))
    assert "board.yaml:11: peripherals.1.base" in msg


def test_unknown_plugin_lists_installed_ones(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("plugin: dma-copy", "plugin: dma-cpoy"))
    assert "board.yaml:10: unknown plugin 'dma-cpoy'" in msg
    assert "dma-copy" in msg and "pl011" in msg


def test_overlapping_windows(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("base: 0x0c001000", "base: 0x0c000800"))
    assert "board.yaml:9" in msg and "overlaps 'uart1'" in msg


def test_window_outside_free_region(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("base: 0x0c001000", "base: 0x09000000"))
    assert "board.yaml:11" in msg and "outside the free window" in msg


def test_irq_count_must_match_the_model(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("irqs: [113]", "irqs: [113, 114]"))
    assert "board.yaml:12" in msg and "has 1 IRQ outputs ['done']" in msg


def test_spi_outside_free_range(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("irqs: [113]", "irqs: [33]"))
    assert "SPI 33 is not free" in msg and "112..175" in msg


def test_shared_spi(tmp_path):
    assert "share an SPI" in board_error(tmp_path, GOOD.replace("irqs: [113]", "irqs: [112]"))


def test_duplicate_names(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("name: copy", "name: uart1"))
    assert "two peripherals are named 'uart1'" in msg


def test_unknown_platform_name_lists_known_ones():
    with pytest.raises(PlatformError, match=r"no platform 'vrit'.*virt"):
        load_platform("vrit")


def test_sizes_accept_units(tmp_path):
    spec = load_platform(write(tmp_path, GOOD.replace("512M", "2G"))).spec
    assert spec.machine.memory == 2 << 30


def test_more_irq_outputs_than_the_bridge_carries(tmp_path):
    from cosim.api import Peripheral, hookimpl

    class Many(Peripheral):
        irq_names = tuple(f"irq{i}" for i in range(33))

    class Plugin:
        @hookimpl
        def cosim_peripheral_types(self):
            return {"many": Many}

    path = write(tmp_path, "name: t\nperipherals:\n  - name: m\n    plugin: many\n    base: 0x0c000000\n")
    with pytest.raises(PlatformError, match="declares 33 IRQ outputs; the bridge carries at most 32"):
        assemble(path, (Plugin(),))


SPI_BOARD = """\
name: t
peripherals:
  - name: gpio0
    plugin: pl061
    base: 0x0c000000
    irqs: [112]
  - name: spi1
    plugin: pl022
    base: 0x0c001000
    irqs: [113]
    gpios: {cs: [[gpio0, 0]]}
    devices:
      - {name: flash, model: spi-nor, reg: 0}
"""


def test_spi_devices_and_chip_selects_reach_the_device_tree(tmp_path):
    board = assemble(write(tmp_path, SPI_BOARD))
    board.build()
    nodes, _ = board.device_tree_nodes()
    spi = next(n for n in nodes if n.name == "spi1")
    assert spi.properties["cs-gpios"] == [Ref("/gpio0@c000000"), 0, 1]
    flash = spi.children[0]
    assert flash.full_name == "flash@0"
    assert flash.properties["compatible"] == ["jedec,spi-nor"]
    assert flash.properties["pl022,com-mode"] == 2


def test_unknown_spi_device_model(tmp_path):
    msg = board_error(tmp_path, SPI_BOARD.replace("model: spi-nor", "model: eeprom"))
    assert "board.yaml:13: unknown SPI device model 'eeprom' — installed: spi-nor, spidev" in msg


def test_a_flash_needs_a_chip_select(tmp_path):
    msg = board_error(tmp_path, SPI_BOARD.replace("    gpios: {cs: [[gpio0, 0]]}\n", ""))
    assert "'flash' (spi-nor) needs a chip select: wire GPIO line 0 of 'spi1'" in msg


def test_gpios_name_a_gpio_controller_and_an_input_the_model_has(tmp_path):
    msg = board_error(tmp_path, SPI_BOARD.replace("[[gpio0, 0]]", "[[spi1, 0]]"))
    assert "'spi1' is not a GPIO controller of this platform" in msg
    msg = board_error(tmp_path, SPI_BOARD.replace("gpios: {cs:", "gpios: {reset:"))
    assert "'spi1' (pl022) has no GPIO input 'reset' — it has ['cs']" in msg


def test_a_gpio_line_the_controller_lacks(tmp_path):
    board = assemble(write(tmp_path, SPI_BOARD.replace("[[gpio0, 0]]", "[[gpio0, 9]]")
                           .replace("reg: 0}", "reg: 0, model: spidev}").replace("model: spi-nor, ", "")))
    with pytest.raises(PlatformError, match=r"board.yaml:11: gpio0 has GPIO lines 0\.\.7, not 9"):
        board.build()


def test_devices_need_a_bus(tmp_path):
    msg = board_error(tmp_path, SPI_BOARD.replace("plugin: pl022", "plugin: dma-copy").replace(
        "    gpios: {cs: [[gpio0, 0]]}\n", ""))
    assert "'spi1' (dma-copy) has no bus for devices" in msg


def test_board_level_device_tree_nodes(tmp_path):
    text = SPI_BOARD + ('dt_nodes:\n  codec:\n    compatible: asahi-kasei,ak4554\n'
                        '    "#sound-dai-cells": 0\n    port: {reg: 1}\n')
    board = assemble(write(tmp_path, text))
    board.build()
    nodes, _ = board.device_tree_nodes()
    codec = next(n for n in nodes if n.name == "codec")
    assert codec.dts() == ('\tcodec {\n\t\tcompatible = "asahi-kasei,ak4554";\n'
                           '\t\t#sound-dai-cells = <0x0>;\n\t\tport {\n\t\t\treg = <0x1>;\n\t\t};\n\t};')


def test_device_names_are_unique_across_the_board(tmp_path):
    msg = board_error(tmp_path, SPI_BOARD.replace("name: flash", "name: gpio0"))
    assert "the name 'gpio0' is taken twice: devices need their own names" in msg


HIGHMEM = GOOD.replace("memory: 512M", "memory: 6G") + """\
    address_bits: 32
    bus: lowbus
buses:
  - name: lowbus
    dma_ranges: [[0, 0, 4G]]
"""


def test_a_32bit_master_on_a_bus_with_dma_ranges(tmp_path):
    board = assemble(write(tmp_path, HIGHMEM))
    board.build()
    assert board.platform.spec.machine.memory == 6 << 30
    assert board.bus.address_bits == {"copy": 32}
    nodes, _ = board.device_tree_nodes()
    lowbus = next(n for n in nodes if n.name == "lowbus")
    assert lowbus.properties["compatible"] == "simple-bus" and lowbus.properties["ranges"] is True
    assert "dma-ranges = <0x0 0x0 0x0 0x0 0x1 0x0>;" in lowbus.dts()
    assert [c.path for c in lowbus.children] == ["/lowbus/copy@c001000"]
    assert "copy@c001000" not in [n.full_name for n in nodes]  # only under its bus
    assert board.node_ref("copy") == Ref("/lowbus/copy@c001000")


@pytest.mark.parametrize("change,message", [
    (("bus: lowbus", "bus: highbus"), "board.yaml:14: no bus 'highbus' — the platform's buses: lowbus"),
    (("    irqs: [112]", "    irqs: [112]\n    address_bits: 32"),
     "board.yaml:9: 'uart1' (pl011) is not a bus master: address_bits is the width"),
    (("address_bits: 32", "address_bits: 65"),
     "board.yaml:13: peripherals.1.address_bits: Input should be less than or equal to 64"),
])
def test_buses_and_address_bits_errors_name_the_line(tmp_path, change, message):
    assert message in board_error(tmp_path, HIGHMEM.replace(*change, 1))


def test_a_bare_off_is_the_cache_model_off(tmp_path):
    spec = load_platform(write(tmp_path, GOOD.replace("memory: 512M", "memory: 512M\n  cache: off"))).spec
    assert spec.machine.cache == "off"


def test_a_primecell_model_gets_what_the_amba_bus_needs(tmp_path):
    from cosim.api import Peripheral, hookimpl

    class Rtc(Peripheral):
        compatible = ("arm,pl031",)
        primecell_id = 0x00041031

    class Plugin:
        @hookimpl
        def cosim_peripheral_types(self):  # type: ignore[no-untyped-def]
            return {"rtc": Rtc}

    text = "name: t\nperipherals:\n  - {name: rtc, plugin: rtc, base: 0x0c000000}\n"
    board = assemble(write(tmp_path, text), (Plugin(),))
    board.build()
    [node] = [n for n in board.device_tree_nodes()[0] if n.name == "rtc"]
    assert node.properties["compatible"] == ["arm,pl031", "arm,primecell"]
    assert node.properties["clocks"] == [Ref("/apb-pclk")] and node.properties["clock-names"] == "apb_pclk"
    assert board.peripherals["rtc"].read(0xFE0, 4) == 0x31 and board.peripherals["rtc"].read(0xFF0, 4) == 0x0D


def test_a_platform_extends_another_and_adds_its_device(tmp_path):
    child = write(tmp_path, "name: mine\nextends: virt\nmachine:\n  memory: 2G\nperipherals:\n"
                            "  - {name: copy2, plugin: dma-copy, base: 0x0c0c0000, irqs: [127]}\n")
    platform = load_platform(child)
    virt = load_platform("virt").spec
    assert platform.spec.name == "mine" and platform.spec.extends is None
    assert platform.spec.machine.memory == 2 << 30 and platform.spec.machine.gic == virt.machine.gic
    assert [p.name for p in platform.spec.peripherals] == [p.name for p in virt.peripherals] + ["copy2"]
    assert platform.spec.guest.bootargs == virt.guest.bootargs
    assert platform.where("peripherals", len(virt.peripherals)) == f"{child}:6"
    assert platform.where("peripherals", 0).startswith(f"{load_platform('virt').path}:")
    assemble(child)


def test_an_entry_of_the_same_name_replaces_the_base_one(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(GOOD)
    child = tmp_path / "child.yaml"
    child.write_text("name: child\nextends: base.yaml\nperipherals:\n"
                     "  - {name: copy, plugin: dma-copy, base: 0x0c002000, irqs: [114]}\n")
    spec = load_platform(child).spec
    assert [(p.name, p.base) for p in spec.peripherals] == [("uart1", 0x0C000000), ("copy", 0x0C002000)]


def test_errors_name_the_file_each_part_came_from(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(GOOD.replace("    irqs: [113]", "    irqs: [113]\n    colour: red"))
    child = tmp_path / "child.yaml"
    child.write_text("name: child\nextends: base.yaml\nmachine:\n  gic: 4\n")
    with pytest.raises(PlatformError) as info:
        load_platform(child)
    assert f"{child}:4: machine.gic: Input should be 2 or 3" in str(info.value)
    msg = board_error(tmp_path, "name: child\nextends: base.yaml\n")
    assert f"{base}:13: unknown key 'colour'" in msg


def test_a_platform_needs_its_own_name_and_a_base_that_exists(tmp_path):
    (tmp_path / "base.yaml").write_text(GOOD)
    with pytest.raises(PlatformError, match=r"board\.yaml:1: missing field 'name' — add it"):
        load_platform(write(tmp_path, "extends: base.yaml\n"))
    with pytest.raises(PlatformError, match=r"board\.yaml:2: extends: no platform 'nowhere'"):
        load_platform(write(tmp_path, "name: x\nextends: nowhere\n"))


def test_platforms_that_extend_each_other_in_a_circle(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nextends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("name: b\nextends: a.yaml\n")
    with pytest.raises(PlatformError, match="platforms extend each other in a circle"):
        load_platform(tmp_path / "a.yaml")
