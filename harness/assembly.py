"""Assembly: a platform file turned into models, wiring and a device tree — no sockets, no QEMU.

``cosim dts``, unit tests and the board share it.  The steps, in order:

1. **check** (at construction): every model's plugin is installed, its window and interrupts fit
   the machine's layout, every wiring key belongs to a connector, which checks its value;
2. **build**: the bus (with its tracer at the ``trace`` place), one model per entry with an
   :class:`~cosim.peripheral.IrqRelay` for its interrupts, then every connector wires them, then
   plugins add their bus layers (``cosim_bus_layers``);
3. **device tree**: a node per model (compatible, reg, interrupts, the plugin's own properties,
   each connector's, the platform's ``dt`` last), board-level nodes, QEMU's own models, aliases.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from .bus import Bus, BusTracer
from .clock import GuestClock
from .connectors import Connector
from .devicetree import DtAliases, DtNode, Ref, dma_ranges_cells, reg_cells, spi_cells
from .peripheral import IrqRelay, ModelNotes, Peripheral, PeripheralConfig
from .platform import BusSpec, LoadedPlatform, MachineLayout, PeripheralSpec, PlatformError
from .pluginmanager import connectors, peripheral_types, spi_device_types
from .protocol import MAX_IRQS_PER_PERIPHERAL
from .spi import SpiDevice
from .trace import EventTrace

HostFailure = Callable[[str, str, str], None]  # (model name, message, details)


@dataclass(frozen=True)
class ModelEntry:
    """One peripheral entry of the platform with its model class, before the model exists."""

    index: int
    spec: PeripheralSpec
    cls: type[Peripheral]
    platform: LoadedPlatform

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def plugin(self) -> str:
        return self.spec.plugin

    @property
    def size(self) -> int:
        return self.spec.size or self.cls.default_size

    def where(self, *loc: str | int) -> str:
        return self.platform.where("peripherals", self.index, *loc)


class Assembly:
    def __init__(self, platform: LoadedPlatform, layout: MachineLayout, pm: pluggy.PluginManager):
        self.platform, self.layout, self.pm = platform, layout, pm
        self.types = peripheral_types(pm)
        self.spi_types = spi_device_types(pm)
        self.connectors: dict[str, Connector] = connectors(pm)
        self.entries: dict[str, ModelEntry] = {}
        self.wiring: dict[str, dict[str, Any]] = {}  # model name -> connector key -> checked value
        self._names: set[str] = set()
        self.trace = EventTrace()
        self.notes = ModelNotes()  # what drivers did that the models do not model
        self.lock = threading.RLock()  # one for all models: see Peripheral.lock
        self.clock = GuestClock()  # the guest's time, as the bridges see it
        self.bus = Bus()
        self.bus.now = lambda: self.clock.now_ns  # a DMA fault's time, to place it in the guest's trace
        self.tracer = BusTracer()
        self.peripherals: dict[str, Peripheral] = {}
        self.irq_relays: dict[str, IrqRelay] = {}
        self.spi_devices: dict[str, SpiDevice] = {}
        self._check()

    # --- check ---

    def _check(self) -> None:
        spec = self.platform.spec
        windows: list[tuple[int, int, str]] = []
        for i, q in enumerate(spec.qemu_devices):
            self._check_window(("qemu_devices", i), q.name, q.base, q.size, windows)
        for i, p in enumerate(spec.peripherals):
            if p.plugin not in self.types:
                known = ", ".join(sorted(self.types)) or "none"
                raise PlatformError(f"{self.platform.where('peripherals', i, 'plugin')}: unknown "
                                    f"plugin '{p.plugin}' — installed plugins: {known}")
            entry = ModelEntry(i, p, self.types[p.plugin], self.platform)
            self.entries[p.name] = entry
            self._names.add(p.name)
            self._check_window(("peripherals", i), p.name, p.base, entry.size, windows)
            self._check_irqs(entry)
            self._check_master_port(entry)
        for i, b in enumerate(spec.buses):
            self.claim_name(b.name, self.platform.where("buses", i, "name"))
        spis = [s for p in [*spec.peripherals, *spec.qemu_devices] for s in p.irqs]
        if len(spis) != len(set(spis)):
            raise PlatformError(f"{self.platform.where('peripherals')}: two peripherals share an SPI")
        allowed = [*PeripheralSpec.model_fields, *self.connectors]
        for entry in self.entries.values():
            self.wiring[entry.name] = {}
            for key, value in entry.spec.wiring.items():
                if key not in self.connectors:
                    raise self.platform.unknown_key(("peripherals", entry.index, key), allowed)
                connector = self.connectors[key]
                self.wiring[entry.name][key] = self.platform.check_value(
                    ("peripherals", entry.index, key), value, connector.value_type)
        for entry in self.entries.values():
            for key, value in self.wiring[entry.name].items():
                self.connectors[key].check(self, entry, value)

    def _check_irqs(self, entry: ModelEntry) -> None:
        wanted = len(entry.cls.irq_names)
        if wanted > MAX_IRQS_PER_PERIPHERAL:
            raise PlatformError(f"{entry.where()}: plugin '{entry.plugin}' declares {wanted} IRQ "
                                f"outputs; the bridge carries at most {MAX_IRQS_PER_PERIPHERAL}")
        if len(entry.spec.irqs) != wanted:
            raise PlatformError(f"{entry.where('irqs')}: '{entry.name}' ({entry.plugin}) has {wanted} "
                                f"IRQ outputs {list(entry.cls.irq_names)}; give {wanted} SPIs")
        free = self.layout.peripheral_spis
        for spi in entry.spec.irqs:
            if spi not in free:
                raise PlatformError(f"{entry.where('irqs')}: SPI {spi} is not free on "
                                    f"{self.layout.name} — use {free.start}..{free.stop - 1}")

    def _check_master_port(self, entry: ModelEntry) -> None:
        spec = entry.spec
        if spec.address_bits < 64 and not entry.cls.dma_master:
            raise PlatformError(f"{entry.where('address_bits')}: '{entry.name}' ({entry.plugin}) is "
                                "not a bus master: address_bits is the width of a DMA master's port")
        if spec.bus is not None and self.platform.spec.bus(spec.bus) is None:
            buses = ", ".join(b.name for b in self.platform.spec.buses) or "none (add a buses: list)"
            raise PlatformError(f"{entry.where('bus')}: no bus '{spec.bus}' — the platform's "
                                f"buses: {buses}")

    def _check_window(self, loc: tuple[str, int], name: str, base: int, size: int,
                      windows: list[tuple[int, int, str]]) -> None:
        lo, hi = self.layout.peripheral_window
        if not (lo <= base and base + size <= hi):
            raise PlatformError(f"{self.platform.where(*loc, 'base')}: window {base:#x}+{size:#x} of "
                                f"'{name}' is outside the free window {lo:#x}..{hi:#x} of "
                                f"{self.layout.name} — move it there")
        for start, end, other in windows:
            if base < end and start < base + size:
                raise PlatformError(f"{self.platform.where(*loc)}: window of '{name}' "
                                    f"({base:#x}+{size:#x}) overlaps '{other}' ({start:#x}..{end:#x})"
                                    " — move one")
        windows.append((base, base + size, name))

    def claim_name(self, name: str, where: str) -> None:
        """Names of models and devices are unique across the board (they name logs and nodes)."""
        if name in self._names:
            raise PlatformError(f"{where}: the name {name!r} is taken twice: devices need their own names")
        self._names.add(name)

    def raw(self, entry: ModelEntry, key: str, default: Any) -> Any:
        """The checked value of another wiring key of ``entry``."""
        return self.wiring[entry.name].get(key, default)

    # --- build ---

    def build(self, on_host_failure: HostFailure | None = None) -> None:
        """Creates the models and wires them.  Host threads a model starts report through
        ``on_host_failure``."""
        self.bus.add_layer(self.tracer, "trace")
        for entry in self.entries.values():
            spec = entry.spec
            relay = IrqRelay()
            config = PeripheralConfig(spec.name, spec.base, entry.size, tuple(spec.irqs),
                                      spec.properties, spec.dt, spec.stream_id, spec.address_bits)
            try:
                model = entry.cls(config, self.bus, relay, lock=self.lock, trace=self.trace,
                                  notes=self.notes, clock=self.clock)
            except Exception as e:
                raise PlatformError(f"{entry.where()}: plugin '{spec.plugin}' failed to create "
                                    f"'{spec.name}': {type(e).__name__}: {e}") from e
            if on_host_failure is not None:
                model.host_failure = (  # type: ignore[method-assign]
                    lambda message, details, name=spec.name: on_host_failure(name, message, details))
            self.peripherals[spec.name] = model
            self.irq_relays[spec.name] = relay
            self.bus.add_device(spec.base, entry.size, model)  # reachable by slave DMA
        for connector in self.connectors.values():
            if connector.role is not None:
                for entry in self.entries.values():
                    if issubclass(entry.cls, connector.role):
                        connector.connect_provider(self, entry)
            for entry in self.entries.values():
                if connector.key in self.wiring[entry.name]:
                    connector.connect(self, entry, self.wiring[entry.name][connector.key])
        for layers in self.pm.hook.cosim_bus_layers(assembly=self):
            for place, layer in layers:
                self.bus.add_layer(layer, place)

    def model(self, name: str) -> Any:
        return self.peripherals[name]

    def node_ref(self, name: str) -> Ref:
        spec = self.entries[name].spec
        return Ref(f"{f'/{spec.bus}' if spec.bus else ''}/{name}@{spec.base:x}")

    # --- device tree ---

    def device_tree_nodes(self, noncoherent: bool = False) -> tuple[list[DtNode], dict[str, str]]:
        """The models' nodes (``noncoherent``: marked ``dma-noncoherent``, as DMA masters on a
        non-coherent interconnect, unless the platform's ``dt`` says ``dma-coherent``), the
        platform's own nodes and QEMU's native devices."""
        nodes: list[DtNode] = []
        aliases = DtAliases(self.layout.aliases_taken)
        buses = {b.name: self._bus_node(b) for b in self.platform.spec.buses}
        nodes += buses.values()
        for entry in self.entries.values():
            spec, model = entry.spec, self.peripherals[entry.name]
            node = DtNode(spec.name, spec.base)
            if spec.bus is not None:
                buses[spec.bus].child(node)
            else:
                nodes.append(node)
            if model.compatible:
                node.set("compatible", list(model.compatible))
            node.set("reg", reg_cells(spec.base, entry.size))
            if spec.irqs:
                node.set("interrupts", spi_cells(spec.irqs))
            if noncoherent and not spec.dt.get("dma-coherent"):
                node.set("dma-noncoherent", True)  # QEMU virt's root says dma-coherent
            self.pm.hook.cosim_device_tree(peripheral=model, node=node, aliases=aliases)
            for connector in self.connectors.values():
                if connector.role is not None and issubclass(entry.cls, connector.role):
                    connector.shape_provider_node(self, entry, node)
                if connector.key in self.wiring[entry.name]:
                    connector.shape_node(self, entry, self.wiring[entry.name][connector.key], node)
            if entry.cls.primecell_id is not None:
                self._primecell_node(node)
            for key, value in spec.dt.items():
                node.set(key, value)
        for name, mapping in self.platform.spec.dt_nodes.items():
            nodes.append(DtNode.from_mapping(name, mapping))
        for q in self.platform.spec.qemu_devices:
            node = DtNode(q.name, q.base, {"compatible": list(q.compatible),
                                           "reg": reg_cells(q.base, q.size)})
            if q.irqs:
                node.set("interrupts", spi_cells(q.irqs))
            for key, value in q.dt.items():
                node.set(key, value)
            nodes.append(node)
        return nodes, aliases.aliases

    def _primecell_node(self, node: DtNode) -> None:
        """What Linux's AMBA bus needs of a PrimeCell, unless the plugin wrote it (a PL011 names
        its UART clock too)."""
        compatible = list(node.properties.get("compatible", []))  # type: ignore[arg-type]
        if "arm,primecell" not in compatible:
            node.set("compatible", [*compatible, "arm,primecell"])
        if "clocks" not in node.properties:
            node.set("clocks", [Ref(self.layout.apb_clock)])
            node.set("clock-names", "apb_pclk")

    @staticmethod
    def _bus_node(bus: BusSpec) -> DtNode:
        node = DtNode(bus.name, properties={"compatible": "simple-bus", "#address-cells": 2,
                                            "#size-cells": 2, "ranges": True})
        if bus.dma_ranges:
            node.set("dma-ranges", dma_ranges_cells(bus.dma_ranges))
        return node

    # --- end ---

    def close(self) -> None:
        """Models release host threads and files (the engine has stopped calling them)."""
        for model in self.models():
            model.close()

    def models(self) -> list[Peripheral | SpiDevice]:
        return [*self.peripherals.values(), *self.spi_devices.values()]

    def save(self, logdir: Path, mmio_accesses: dict[str, int]) -> None:
        """After ``close()``: each model's own artifacts, the timeline (``trace.json``) and the
        DMA transactions (``plugin-trace.log``) into the board's logs."""
        logdir.mkdir(parents=True, exist_ok=True)  # another session may have tidied it away
        for model in self.models():
            with contextlib.suppress(Exception):  # keep what can be kept; stopping goes on
                model.save(logdir)
        lines = [str(record) for record in self.tracer.records]
        if self.tracer.dropped:
            lines.append(f"... {self.tracer.dropped} more transactions not recorded")
        accesses = ", ".join(f"{name}: {count}" for name, count in mmio_accesses.items())
        notes = self.notes.lines()
        with (logdir / "plugin-trace.log").open("a") as f:
            if notes:
                f.write("Not modelled (what drivers did that the models ignore):\n  "
                        + "\n  ".join(notes) + "\n")
            f.write(f"MMIO accesses served: {accesses}\nDMA transactions:\n" + "\n".join(lines) + "\n")
        if self.trace.events:
            self.trace.save(logdir / "trace.json")
