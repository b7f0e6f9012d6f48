"""Platform files: what loads, and errors that name file, line and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim.board import Board
from cosim.build import Artifacts
from cosim.platform import PlatformError, load_platform

NOWHERE = Artifacts(Path("/nonexistent/qemu"), Path("/nonexistent/Image"), Path("/nonexistent/initrd"))

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
        Board(load_platform(write(tmp_path, text)), NOWHERE, tmp_path / "logs")
    return str(info.value)


def test_default_platform_loads_and_checks():
    platform = load_platform("virt")
    assert platform.spec.machine.gic == 3
    assert {p.plugin for p in platform.spec.peripherals} >= {"pl011", "dma-copy"}
    Board(platform, NOWHERE, Path("/nonexistent"))


def test_good_file(tmp_path):
    spec = load_platform(write(tmp_path, GOOD)).spec
    assert spec.machine.memory == 512 << 20
    assert [p.base for p in spec.peripherals] == [0x0C000000, 0x0C001000]


def test_unknown_key_names_line_and_allowed_keys(tmp_path):
    msg = board_error(tmp_path, GOOD.replace("    irqs: [113]", "    irqs: [113]\n    colour: red"))
    assert "board.yaml:13: unknown key 'colour'" in msg
    assert "allowed here: base, devices, dmas, dt, gpios, irqs, name, plugin, properties, size" in msg


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
    from cosim.pluginmanager import create_plugin_manager

    class Many(Peripheral):
        irq_names = tuple(f"irq{i}" for i in range(33))

    class Plugin:
        @hookimpl
        def cosim_peripheral_types(self):
            return {"many": Many}

    path = write(tmp_path, "name: t\nperipherals:\n  - name: m\n    plugin: many\n    base: 0x0c000000\n")
    with pytest.raises(PlatformError, match="declares 33 IRQ outputs; the bridge carries at most 32"):
        Board(load_platform(path), NOWHERE, tmp_path, pm=create_plugin_manager((Plugin(),)))
