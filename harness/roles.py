"""Roles a peripheral model can play on a board, each a documented contract.

A model takes a role by inheriting it beside :class:`~cosim.peripheral.Peripheral`::

    class Pl330(Peripheral, DmaController):
        dma_cells = 1
        ...

The platform checks and the device tree ask the role (``issubclass(cls, DmaController)``), never
whether a method of some name exists.  Each role says which device-tree cells its consumers give
after the provider's phandle (``#dma-cells``, ``#gpio-cells``, ``#reset-cells``...) and which
methods the connectors call.  Connectors (:mod:`cosim.connectors`) are what call them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .bus import BusLayer
    from .devicetree import DtNode
    from .spi import SpiDevice


class Role:
    """Base of every role; ``role_name`` is how error messages call it."""

    role_name: ClassVar[str] = "role"
    example: ClassVar[str] = ""  # a model that plays it, for error messages


class DmaController(Role):
    """Takes peripherals' DMA requests (platform ``dmas: {rx: [dmac, CELLS...]}``, DT ``dmas``).

    ``dma_cells`` is the provider's ``#dma-cells``: how many cells follow its phandle in a
    client's ``dmas`` (PL330 and sun6i 1: the request line; i.MX SDMA 3; STM32 DMA 4).
    """

    role_name = "DMA controller"
    example = "a pl330"
    dma_cells: ClassVar[int] = 1

    def dma_request_line(self, cells: tuple[int, ...]) -> int:
        """The request line a client's specifier ``cells`` selects; raise ValueError for cells
        the hardware has no line for.  The default: the first cell is the line."""
        return cells[0]

    def connect_request_line(self, line: int, on_flush: Callable[[], None]) -> None:
        """A peripheral's request output is wired to ``line``; call ``on_flush`` when the
        controller flushes the line (the peripheral then asserts its request again if it must).
        Raise ValueError for a line the controller does not have."""
        raise NotImplementedError

    def dma_request(self, line: int, burst: bool, last: bool) -> None:
        """The peripheral asserts a request (a level): room or data for one beat, or a burst."""
        raise NotImplementedError

    def dma_request_withdraw(self, line: int) -> None:
        """The peripheral can no longer take or give data: its request is withdrawn."""
        raise NotImplementedError

    def standing_order(self, line: int, burst: bool = False) -> int:
        """How many single (or burst) requests on ``line`` the controller will serve one after the other,
        each the same way and with nothing else happening in between (a channel waiting in a
        slave loop with that many iterations left).  A peripheral that knows it may run that
        far without a tick per request; 0 (the default) promises nothing."""
        return 0

    def serve_requests(self, line: int, count: int, burst: bool = False) -> int:
        """Serves up to ``count`` single (or burst) requests on ``line`` now, at most the standing order,
        with the effect of serving them one by one; returns how many.  The peripheral must have
        the data or room for all of them."""
        return 0


class GpioController(Role):
    """Drives GPIO lines other models listen to (platform ``gpios: {cs: [[gpio0, LINE]]}``).

    Consumers name a line and its flags (``#gpio-cells = <2>``); the controller's node gets
    ``gpio-controller`` and ``#gpio-cells`` from the connector.
    """

    role_name = "GPIO controller"
    example = "a pl061"
    gpio_cells: ClassVar[int] = 2
    gpio_lines: ClassVar[int] = 0

    def connect_gpio_output(self, line: int, on_change: Callable[[bool], None]) -> None:
        """Call ``on_change(level)`` now and whenever ``line``'s electrical level changes;
        raise ValueError for a line the controller does not have."""
        raise NotImplementedError


class ResetController(Role):
    """Holds other models in reset (platform ``resets: [[rst, LINE]]``, DT ``resets``).

    Consumers give one cell, the reset line (``#reset-cells = <1>``)."""

    role_name = "reset controller"
    example = "a reset-simple"
    reset_cells: ClassVar[int] = 1

    def connect_reset_output(self, line: int, on_change: Callable[[bool], None]) -> None:
        """Call ``on_change(asserted)`` now and whenever ``line`` is asserted or released;
        raise ValueError for a line the controller does not have."""
        raise NotImplementedError


class SpiBus(Role):
    """An SPI controller: devices sit at its chip selects (platform ``devices:``, child nodes)."""

    role_name = "SPI controller"
    example = "a pl022"

    def attach(self, chip_select: int, device: SpiDevice) -> None:
        """``device`` answers frames while ``chip_select`` is active; raise ValueError if that
        chip select is taken."""
        raise NotImplementedError

    def shape_device_node(self, node: DtNode) -> None:
        """Adds what the controller's binding asks of each device's child node
        (``pl022,com-mode``...)."""


class Iommu(Role):
    """Translates the DMA of the masters behind it (platform ``iommus: [iommu, CELLS...]``).

    ``iommu_cells`` is its ``#iommu-cells`` (0 for a Rockchip IOMMU, 1 for an SMMU: the stream
    ID).  The contract, which ``plugins/rk_iommu.py`` follows and an SMMUv3 model would too:

    - **Attach**: the ``iommus`` connector calls :meth:`attach_master` once per master with the
      master's ``stream_id`` (the platform's ``stream_id:``) and the DT cells after the phandle;
      refuse what the hardware cannot do (a Rockchip IOMMU serves one master) with a ValueError.
    - **Translate**: :meth:`translation_layer` gives the :class:`BusLayer` the board puts at the
      bus's ``translation`` place, before the cache model and the tracer.  Its ``access`` passes
      other masters' transactions on untouched, keys on ``txn.master`` or ``txn.stream_id``, and
      hands each physically contiguous run on as ``replace(txn, address=physical, length=...,
      master_address=iova)``, so everything after it sees physical addresses and the trace shows
      IOVA → PA.  Table reads go through ``self.dma.walk_read`` (marked ``walk``: past
      translation and the cache model, shown by the tracer).
    - **Fault**: a DMA the tables do not allow raises :class:`DmaFault` with the master, the IOVA
      and the direction, after moving what silicon moves before the faulting page; the model
      records the fault in its registers (or event queue) and raises its interrupt as the
      datasheet says.  The board counts the fault, reports it to the test with the guest's last
      mapping of that IOVA, unless the test expects it (``board.expect(dma_faults=n)``).
    - **Invalidate**: keep what the hardware caches (an IOTLB, a stream-table or context cache)
      and drop it only on the commands that drop it on silicon (ZAP_ONE_LINE, CMD_TLBI_*,
      CMD_CFGI_*), so a driver that forgets an invalidation sees the stale translation.

    The core knows nothing else of an IOMMU: registers, tables and queues are the model's."""

    role_name = "IOMMU"
    example = "an IOMMU model"
    iommu_cells: ClassVar[int] = 1

    def attach_master(self, master: str, stream_id: int | None, cells: tuple[int, ...]) -> None:
        """The bus master ``master`` (with ``stream_id``) sits behind this IOMMU."""
        raise NotImplementedError

    def translation_layer(self) -> BusLayer:
        """The BusLayer the board puts at the ``translation`` place for this IOMMU's masters."""
        raise NotImplementedError
