"""The cosim plugin contract: every hook a plugin may implement, documented here and nowhere else.

A plugin is a module (or object) registered under the entry-point group ``cosim.plugins``;
cosim's built-in plugins are registered exactly that way.  Implement hooks with::

    from cosim.api import hookimpl

    @hookimpl
    def cosim_peripheral_types():
        return {"acme-timer": AcmeTimer}

Hooks run in the harness process.  Peripheral register callbacks run on the bridge thread while a
guest vCPU waits: they must not block on anything QEMU's main loop must do (see protocol.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .board import Board
    from .devicetree import DtNode
    from .peripheral import Peripheral
    from .spi import SpiDevice

PROJECT = "cosim"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    """Return the peripheral models this plugin provides, by the name platform files use
    (``plugin: NAME``).  Two plugins providing one name is an error."""
    raise NotImplementedError


@hookspec
def cosim_spi_device_types() -> dict[str, type[SpiDevice]]:
    """Return the SPI device models (flashes, sensors) this plugin provides, by the name platform
    files use under a controller's ``devices`` (``model: NAME``)."""
    raise NotImplementedError


@hookspec
def cosim_device_tree(peripheral: Peripheral, node: DtNode) -> None:
    """Shape the device-tree node the guest sees for ``peripheral``.

    The core has already set ``reg``, ``interrupts``, ``compatible`` (from the model) and the
    platform's extra properties.  The model's own plugin adds what its binding needs (clocks,
    ``#dma-cells``...); other plugins may amend any node (an IOMMU plugin adds ``iommus``)."""


@hookspec
def cosim_board_started(board: Board) -> None:
    """The guest is booted and its shell is ready: start host-side activity."""


@hookspec
def cosim_board_stopping(board: Board, artifacts: Any) -> None:
    """The board is about to stop: write what the plugin wants kept into ``artifacts``
    (a folder ``Path``) and release host resources."""
