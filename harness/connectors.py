"""Connectors: each kind of wiring between models is one small part.

A connector owns one key of a platform's peripheral entry (``dmas``, ``gpios``, ``resets``,
``devices``, ``iommus``).  For every entry that has its key it

1. ``check``s the value against the model classes' roles (before any model exists: errors name
   the platform file's line),
2. ``connect``s the built models (a request line, a GPIO output, a device on a bus), and
3. writes the device-tree properties that describe the wiring to the guest (``shape_node``, for
   consumers, and ``shape_provider_node`` for every model that plays its role, e.g. ``#dma-cells``).

The assembly (:mod:`cosim.assembly`) runs them in order; plugins add connectors of their own
through the ``cosim_connectors`` hook, without any change to the board.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from .devicetree import Cell, DtNode
from .dmarequest import DmaRequestPort
from .hookspecs import hookimpl
from .platform import BusDeviceSpec, PlatformError
from .roles import DmaController, GpioController, Iommu, ResetController, Role, SpiBus

if TYPE_CHECKING:
    from .assembly import Assembly, ModelEntry

GPIO_ACTIVE_LOW = 1


class Connector:
    """One kind of wiring; subclasses set ``key`` and ``value_type`` and override the steps."""

    key: ClassVar[str]  # the platform key on a peripheral entry
    value_type: ClassVar[Any]  # what its value must be (checked with pydantic)
    role: ClassVar[type[Role] | None] = None  # the role its providers play

    def check(self, a: Assembly, consumer: ModelEntry, value: Any) -> None:
        """Checks ``value`` against the model classes; raises PlatformError naming the line."""

    def connect(self, a: Assembly, consumer: ModelEntry, value: Any) -> None:
        """Wires the built models."""

    def connect_provider(self, a: Assembly, provider: ModelEntry) -> None:
        """Once for every model playing ``role``, before consumers are connected."""

    def shape_node(self, a: Assembly, consumer: ModelEntry, value: Any, node: DtNode) -> None:
        """Writes the consumer's device-tree properties for this wiring."""

    def shape_provider_node(self, a: Assembly, provider: ModelEntry, node: DtNode) -> None:
        """Writes what every model playing ``role`` needs in its own node (``#dma-cells``)."""


def check_offered(consumer: ModelEntry, where: tuple[str | int, ...], what: str, name: str,
                  offered: tuple[str, ...]) -> None:
    """The consumer's model has the named input or output the platform wires."""
    if name not in offered:
        raise PlatformError(f"{consumer.where(*where)}: '{consumer.name}' ({consumer.plugin}) has no "
                            f"{what} '{name}' — it has {list(offered) or 'none'}")


def provider_cells(a: Assembly, consumer: ModelEntry, where: tuple[str | int, ...], role: type[Role],
                   spec: list[Any] | tuple[Any, ...], cells: int | str) -> tuple[ModelEntry, tuple[int, ...]]:
    """Checks ``[provider, cell, ...]``: a model of this board that plays ``role``, followed by
    exactly ``cells`` cells (or as many as the provider's attribute of that name declares)."""
    at = consumer.where(*where)
    if not spec or not isinstance(spec[0], str):
        raise PlatformError(f"{at}: give [{role.role_name.replace(' ', '-')}, cells...], not {spec!r}")
    provider = a.entries.get(spec[0])
    if provider is None or not issubclass(provider.cls, role):
        raise PlatformError(f"{at}: '{spec[0]}' is not a {role.role_name} of this platform — name "
                            f"one ({role.example})")
    if isinstance(cells, str):
        cells = int(getattr(provider.cls, cells))
    rest = tuple(spec[1:])
    if len(rest) != cells or not all(isinstance(c, int) and not isinstance(c, bool) for c in rest):
        raise PlatformError(f"{at}: '{provider.name}' ({provider.plugin}) takes {cells} cell(s) after "
                            f"its name, not {list(rest)}")
    return provider, rest


class DmaRequests(Connector):
    """``dmas: {rx: [pdma, 6], tx: [pdma, 7]}``: the peripheral's DMA request outputs on a DMA
    controller's request lines; DT ``dmas`` and ``dma-names``."""

    key = "dmas"
    value_type = dict[str, list[str | int]]
    role = DmaController

    def check(self, a: Assembly, consumer: ModelEntry, value: dict[str, list[str | int]]) -> None:
        for request, spec in value.items():
            check_offered(consumer, (self.key, request), "DMA request", request,
                          consumer.cls.dma_request_names)
            provider_cells(a, consumer, (self.key, request), DmaController, spec, "dma_cells")

    def connect(self, a: Assembly, consumer: ModelEntry, value: dict[str, list[str | int]]) -> None:
        for request, spec in value.items():
            controller = a.model(str(spec[0]))
            try:
                line = controller.dma_request_line(tuple(int(c) for c in spec[1:]))
                port = DmaRequestPort(request, controller, line)
            except ValueError as e:
                raise PlatformError(f"{consumer.where(self.key, request)}: {e}") from None
            a.model(consumer.name).connect_dma_request(port)

    def shape_node(self, a: Assembly, consumer: ModelEntry, value: dict[str, list[str | int]],
                   node: DtNode) -> None:
        cells: list[Cell] = []
        for spec in value.values():
            cells += [a.node_ref(str(spec[0])), *(int(c) for c in spec[1:])]
        node.set("dmas", cells)
        node.set("dma-names", list(value))

    def shape_provider_node(self, a: Assembly, provider: ModelEntry, node: DtNode) -> None:
        node.set("#dma-cells", provider.cls.dma_cells)


class GpioLines(Connector):
    """``gpios: {cs: [[gpio0, 0]]}``: the model's GPIO inputs on controllers' lines; DT
    ``<name>-gpios`` (active low)."""

    key = "gpios"
    value_type = dict[str, list[tuple[str, int]]]
    role = GpioController

    def check(self, a: Assembly, consumer: ModelEntry, value: dict[str, list[tuple[str, int]]]) -> None:
        for name, lines in value.items():
            check_offered(consumer, (self.key, name), "GPIO input", name, consumer.cls.gpio_input_names)
            for index, line in enumerate(lines):  # the line only: the flags cell is written here
                provider_cells(a, consumer, (self.key, name, index), GpioController, line, 1)

    def connect(self, a: Assembly, consumer: ModelEntry, value: dict[str, list[tuple[str, int]]]) -> None:
        model = a.model(consumer.name)
        for name, lines in value.items():
            for index, (target, line) in enumerate(lines):
                def on_change(level: bool, name: str = name, index: int = index) -> None:
                    model.gpio_input(name, index, level)
                try:
                    a.model(target).connect_gpio_output(line, on_change)
                except ValueError as e:
                    raise PlatformError(f"{consumer.where(self.key, name)}: {e}") from None

    def shape_node(self, a: Assembly, consumer: ModelEntry, value: dict[str, list[tuple[str, int]]],
                   node: DtNode) -> None:
        for name, lines in value.items():
            cells: list[Cell] = []
            for target, line in lines:
                cells += [a.node_ref(target), line, GPIO_ACTIVE_LOW]
            node.set(f"{name}-gpios", cells)

    def shape_provider_node(self, a: Assembly, provider: ModelEntry, node: DtNode) -> None:
        node.set("gpio-controller", True)
        node.set("#gpio-cells", provider.cls.gpio_cells)


class ResetLines(Connector):
    """``resets: [[rst, 3]]``: the model's reset input held by reset controllers' lines; DT
    ``resets``.  The model hears of it through ``Peripheral.reset_input(asserted)``."""

    key = "resets"
    value_type = list[list[str | int]]
    role = ResetController

    def check(self, a: Assembly, consumer: ModelEntry, value: list[list[str | int]]) -> None:
        for index, spec in enumerate(value):
            provider_cells(a, consumer, (self.key, index), ResetController, spec, "reset_cells")

    def connect(self, a: Assembly, consumer: ModelEntry, value: list[list[str | int]]) -> None:
        model = a.model(consumer.name)
        held: list[bool] = [False] * len(value)

        def on_change(asserted: bool, index: int) -> None:
            held[index] = asserted
            model.reset_input(any(held))  # in reset while any of its lines holds it

        for index, spec in enumerate(value):
            try:
                a.model(str(spec[0])).connect_reset_output(
                    int(spec[1]), lambda asserted, index=index: on_change(asserted, index))
            except ValueError as e:
                raise PlatformError(f"{consumer.where(self.key, index)}: {e}") from None

    def shape_node(self, a: Assembly, consumer: ModelEntry, value: list[list[str | int]],
                   node: DtNode) -> None:
        cells: list[Cell] = []
        for spec in value:
            cells += [a.node_ref(str(spec[0])), *(int(c) for c in spec[1:])]
        node.set("resets", cells)

    def shape_provider_node(self, a: Assembly, provider: ModelEntry, node: DtNode) -> None:
        node.set("#reset-cells", provider.cls.reset_cells)


class SpiDevices(Connector):
    """``devices: [{name: flash, model: spi-nor, reg: 0}]``: device models at an SPI
    controller's chip selects; child nodes of the controller's."""

    key = "devices"
    value_type = list[BusDeviceSpec]
    role = SpiBus

    def check(self, a: Assembly, consumer: ModelEntry, value: list[BusDeviceSpec]) -> None:
        if not issubclass(consumer.cls, SpiBus):
            raise PlatformError(f"{consumer.where(self.key)}: '{consumer.name}' ({consumer.plugin}) "
                                "has no bus for devices")
        for j, d in enumerate(value):
            a.claim_name(d.name, consumer.where(self.key, j, "name"))
            if d.model not in a.spi_types:
                known = ", ".join(sorted(a.spi_types)) or "none"
                raise PlatformError(f"{consumer.where(self.key, j, 'model')}: unknown SPI device model "
                                    f"'{d.model}' — installed: {known}")
            chip_selects = a.raw(consumer, "gpios", {}).get("cs", [])
            if a.spi_types[d.model].needs_chip_select and len(chip_selects) <= d.reg:
                raise PlatformError(f"{consumer.where(self.key, j)}: '{d.name}' ({d.model}) needs a chip "
                                    f"select: wire GPIO line {d.reg} of '{consumer.name}' "
                                    "(gpios: {cs: [...]})")

    def connect(self, a: Assembly, consumer: ModelEntry, value: list[BusDeviceSpec]) -> None:
        for j, d in enumerate(value):
            try:
                device = a.spi_types[d.model](d.name, d.properties, trace=a.trace)
                a.model(consumer.name).attach(d.reg, device)
            except Exception as e:
                raise PlatformError(f"{consumer.where(self.key, j)}: '{d.name}' ({d.model}): "
                                    f"{type(e).__name__}: {e}") from e
            a.spi_devices[d.name] = device

    def shape_node(self, a: Assembly, consumer: ModelEntry, value: list[BusDeviceSpec],
                   node: DtNode) -> None:
        for d in value:
            device = a.spi_devices[d.name]
            child = node.child(DtNode(d.name, d.reg, {"compatible": list(device.compatible),
                                                      "reg": d.reg,
                                                      "spi-max-frequency": device.max_frequency}))
            device.device_tree(child)
            a.model(consumer.name).shape_device_node(child)
            for key, prop in d.dt.items():
                child.set(key, prop)

    def shape_provider_node(self, a: Assembly, provider: ModelEntry, node: DtNode) -> None:
        node.set("#address-cells", 1)  # a child's reg is its chip select
        node.set("#size-cells", 0)


class IommuMasters(Connector):
    """``iommus: [iommu0, 0x10]``: the model's DMA goes through an IOMMU, which keys on its
    stream ID; DT ``iommus``.  The IOMMU's translation layer takes the bus's translation place."""

    key = "iommus"
    value_type = list[str | int]
    role = Iommu

    def check(self, a: Assembly, consumer: ModelEntry, value: list[str | int]) -> None:
        if not consumer.cls.dma_master:
            raise PlatformError(f"{consumer.where(self.key)}: '{consumer.name}' ({consumer.plugin}) "
                                "does no DMA of its own: nothing to translate")
        provider_cells(a, consumer, (self.key,), Iommu, value, "iommu_cells")

    def connect_provider(self, a: Assembly, provider: ModelEntry) -> None:
        a.bus.add_layer(a.model(provider.name).translation_layer(), "translation")

    def connect(self, a: Assembly, consumer: ModelEntry, value: list[str | int]) -> None:
        stream_id = a.model(consumer.name).dma.stream_id
        a.model(str(value[0])).attach_master(consumer.name, stream_id, tuple(int(c) for c in value[1:]))

    def shape_node(self, a: Assembly, consumer: ModelEntry, value: list[str | int], node: DtNode) -> None:
        node.set("iommus", [a.node_ref(str(value[0])), *(int(c) for c in value[1:])])

    def shape_provider_node(self, a: Assembly, provider: ModelEntry, node: DtNode) -> None:
        node.set("#iommu-cells", provider.cls.iommu_cells)


@hookimpl
def cosim_connectors() -> list[Connector]:
    return [SpiDevices(), GpioLines(), ResetLines(), DmaRequests(), IommuMasters()]
