"""The assembly step: roles, connectors and bus layers added by plugins, without the board."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cosim.api import (
    Connector,
    DmaController,
    DmaFault,
    Iommu,
    Peripheral,
    Register,
    ResetController,
    hookimpl,
)
from cosim.platform import PlatformError
from cosim.pluginmanager import PluginError, create_plugin_manager
from cosim.plugins.dma_copy import DmaCopy

from .conftest import assemble


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.yaml"
    path.write_text(text)
    return path


class Sdma(Peripheral, DmaController):
    """A controller whose clients give three cells, as i.MX SDMA's do: event, script, priority."""

    compatible = ("fsl,imx-sdma",)
    dma_cells = 3

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.lines: dict[int, object] = {}

    def dma_request_line(self, cells: tuple[int, ...]) -> int:
        event, _script, priority = cells
        if priority > 2:
            raise ValueError(f"priority {priority} is not 0..2")
        return event

    def connect_request_line(self, line, on_flush):  # type: ignore[no-untyped-def]
        self.lines[line] = on_flush

    def dma_request(self, line, burst, last):  # type: ignore[no-untyped-def]
        pass

    def dma_request_withdraw(self, line):  # type: ignore[no-untyped-def]
        pass


class Client(Peripheral):
    compatible = ("acme,client",)
    dma_request_names = ("rx",)
    dma_master = True
    RESET_SEEN = Register(0x0)

    def reset_input(self, asserted: bool) -> None:
        super().reset_input(asserted)
        self.resets = [*getattr(self, "resets", []), asserted]


class Rst(Peripheral, ResetController):
    compatible = ("acme,rst",)

    def connect_reset_output(self, line, on_change):  # type: ignore[no-untyped-def]
        if line > 3:
            raise ValueError(f"{self.name} has reset lines 0..3, not {line}")
        self.release = lambda: on_change(False)
        on_change(True)


class OffsetIommu(Peripheral, Iommu):
    """Masters' addresses are 0x1000 below physical ones; stream 9 has no mapping."""

    compatible = ("acme,iommu",)
    iommu_cells = 1

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.masters: dict[str, tuple[int | None, tuple[int, ...]]] = {}

    def attach_master(self, master, stream_id, cells):  # type: ignore[no-untyped-def]
        self.masters[master] = (stream_id, cells)

    def translation_layer(self):  # type: ignore[no-untyped-def]
        return self

    def access(self, txn, data, next_):  # type: ignore[no-untyped-def]
        if txn.master not in self.masters or txn.walk:
            return next_(txn, data)
        if txn.stream_id == 9:
            raise DmaFault(txn.master, txn.address, txn.length, txn.write, "translation fault")
        return next_(replace(txn, address=txn.address + 0x1000, master_address=txn.address), data)


class LedConnector(Connector):
    """A kind of wiring cosim does not have: ``leds: [label, ...]`` becomes child nodes."""

    key = "leds"
    value_type = list[str]

    def check(self, a, consumer, value):  # type: ignore[no-untyped-def]
        if len(value) > 2:
            raise PlatformError(f"{consumer.where(self.key)}: at most 2 LEDs")

    def shape_node(self, a, consumer, value, node):  # type: ignore[no-untyped-def]
        from cosim.api import DtNode
        for i, label in enumerate(value):
            node.child(DtNode(f"led{i}", None, {"label": label}))


class Counter:
    def __init__(self) -> None:
        self.seen = 0

    def access(self, txn, data, next_):  # type: ignore[no-untyped-def]
        self.seen += 1
        return next_(txn, data)


class Plugin:
    counter = Counter()

    @hookimpl
    def cosim_peripheral_types(self):  # type: ignore[no-untyped-def]
        return {"sdma": Sdma, "client": Client, "rst": Rst, "iommu": OffsetIommu}

    @hookimpl
    def cosim_connectors(self):  # type: ignore[no-untyped-def]
        return [LedConnector()]

    @hookimpl
    def cosim_bus_layers(self, assembly):  # type: ignore[no-untyped-def]
        return [("coherency", self.counter)]


BOARD = """\
name: t
peripherals:
  - name: sdma
    plugin: sdma
    base: 0x0c000000
  - name: rst
    plugin: rst
    base: 0x0c001000
  - name: mmu
    plugin: iommu
    base: 0x0c002000
  - name: dev
    plugin: client
    base: 0x0c003000
    stream_id: 5
    dmas: {rx: [sdma, 7, 1, 0]}
    resets: [[rst, 2]]
    iommus: [mmu, 5]
    leds: [power, disk]
"""


def test_plugins_add_wiring_and_layers_that_reach_models_and_device_tree(tmp_path):
    a = assemble(write(tmp_path, BOARD), (Plugin(),))
    a.build()
    nodes = {n.name: n for n in a.device_tree_nodes()[0]}
    dev = nodes["dev"].dts()
    assert "dmas = <&{/sdma@c000000} 0x7 0x1 0x0>;" in dev  # three cells, as the provider says
    assert "#dma-cells = <0x3>;" in nodes["sdma"].dts()
    assert "resets = <&{/rst@c001000} 0x2>;" in dev and "#reset-cells = <0x1>;" in nodes["rst"].dts()
    assert "iommus = <&{/mmu@c002000} 0x5>;" in dev and "#iommu-cells = <0x1>;" in nodes["mmu"].dts()
    assert 'label = "power";' in dev and 'label = "disk";' in dev
    model = a.peripherals["dev"]
    assert model.dma_requests["rx"].line == 7
    assert model.in_reset and model.resets == [True]  # held until the controller releases it
    a.peripherals["rst"].release()
    assert not model.in_reset
    assert a.peripherals["mmu"].masters == {"dev": (5, (5,))}


def test_the_dma_path_runs_translation_then_plugin_layers(tmp_path):
    from cosim.bus import Memory

    a = assemble(write(tmp_path, BOARD), (Plugin(),))
    a.build()
    a.bus.add_memory(Memory.zeroed("ram", 0x40000000, 0x10000))
    seen = Plugin.counter.seen
    a.peripherals["dev"].dma.write(0x40000010, b"data")
    assert a.bus.memories[0].buffer[0x1010:0x1014] == b"data"
    assert Plugin.counter.seen == seen + 1
    assert str(a.tracer.records[-1]) == "W dev 0x40001010 (from 0x40000010) +4"


@pytest.mark.parametrize("change,message", [
    ("[sdma, 7, 1, 0]", "'sdma' (sdma) takes 3 cell(s) after its name, not [7, 1]"),
    ("[sdma, 7, 1, 0]", "priority 5 is not 0..2"),
    ("[[rst, 2]]", "rst has reset lines 0..3, not 9"),
    ("[mmu, 5]", "'dev' is not a IOMMU of this platform"),
    ("[power, disk]", "at most 2 LEDs"),
])
def test_connector_errors_name_the_line(tmp_path, change, message):
    replacement = {"'sdma' (sdma) takes 3": "[sdma, 7, 1]", "priority 5": "[sdma, 7, 1, 5]",
                   "rst has": "[[rst, 9]]", "'dev' is": "[dev, 5]", "at most": "[a, b, c]"}
    bad = next(v for k, v in replacement.items() if message.startswith(k))
    with pytest.raises(PlatformError, match=r"board\.yaml:1[3-9]: ") as info:
        assemble(write(tmp_path, BOARD.replace(change, bad)), (Plugin(),)).build()
    assert message in str(info.value)


def test_an_iommu_master_must_do_dma(tmp_path):
    text = BOARD.replace("plugin: client", "plugin: rst").replace(
        "    dmas: {rx: [sdma, 7, 1, 0]}\n    resets: [[rst, 2]]\n", "")
    with pytest.raises(PlatformError, match="does no DMA of its own"):
        assemble(write(tmp_path, text), (Plugin(),))


def test_a_misspelt_hook_is_an_error():
    class Typo:
        @hookimpl
        def cosim_peripheral_type(self):  # type: ignore[no-untyped-def]
            return {}

    with pytest.raises(PluginError, match=r"cosim_peripheral_type.*cosim\.hookspecs"):
        create_plugin_manager((Typo(),))


def test_two_connectors_for_one_key_are_an_error(tmp_path):
    class Again:
        @hookimpl
        def cosim_connectors(self):  # type: ignore[no-untyped-def]
            return [LedConnector()]

    with pytest.raises(PluginError, match="'leds' is wired by both"):
        assemble(write(tmp_path, BOARD), (Plugin(), Again()))


def test_uart_aliases_come_from_the_pl011_plugin(tmp_path):
    a = assemble(Path("virt"))
    a.build()
    assert a.device_tree_nodes()[1] == {"serial1": "/uart1@c000000", "serial2": "/uart2@c040000"}


def test_the_dma_copy_model_is_no_dma_controller(tmp_path):
    text = BOARD.replace("plugin: sdma", "plugin: dma-copy\n    irqs: [112]")
    with pytest.raises(PlatformError, match="'sdma' is not a DMA controller of this platform — name one"):
        assemble(write(tmp_path, text), (Plugin(),))
    assert not issubclass(DmaCopy, DmaController)


def test_a_dropped_machine_node_leaves_the_compiled_tree(tmp_path):
    from cosim.devicetree import compile_dts, delete_nodes_dts, dtb_to_dts, node_paths

    base = "/dts-v1/;\n\n/ {\n\tpl031@9010000 {\n\t\tcompatible = \"arm,pl031\";\n\t};\n\tcpus {\n" \
           "\t\tcpu@0 {\n\t\t};\n\t};\n};\n"
    assert node_paths(base) == ["/pl031@9010000", "/cpus", "/cpus/cpu@0"]
    compile_dts(base + delete_nodes_dts(["/pl031@9010000"]), tmp_path / "t.dtb")
    assert node_paths(dtb_to_dts(tmp_path / "t.dtb")) == ["/cpus", "/cpus/cpu@0"]
