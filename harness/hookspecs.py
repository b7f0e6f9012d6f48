"""The cosim plugin contract: every hook a plugin may implement, documented here and nowhere else.

A plugin is a module (or object) registered under the entry-point group ``cosim.plugins``;
cosim's built-in plugins are registered exactly that way.  Implement hooks with::

    from cosim.api import hookimpl

    @hookimpl
    def cosim_peripheral_types():
        return {"acme-timer": AcmeTimer}

A function marked ``@hookimpl`` whose name is not one of these hooks is an error when the plugin
is loaded (pluggy's ``check_pending``): a misspelt hook would otherwise never run.

Order: pluggy calls the implementations of one hook newest-registered first: plugins passed to a
board factory, then entry-point plugins, then cosim's core.  Hooks run in the harness process.
An exception in a hook propagates to whoever asked for the board (a platform error while
assembling, a failed ``Board.start``), except in ``cosim_board_stopping``, which is called
however the board ends and whose exceptions are dropped so that stopping goes on.  Peripheral
register callbacks run on the bridge thread while a guest vCPU waits: they must not block on
anything QEMU's main loop must do (see protocol.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .assembly import Assembly
    from .board import Board
    from .bus import BusLayer
    from .connectors import Connector
    from .devicetree import DtAliases, DtNode
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
def cosim_connectors() -> list[Connector]:
    """Return kinds of wiring this plugin adds (``cosim.api.Connector`` instances, one per
    platform key).  Two connectors for one key are an error: cosim's own (``dmas``, ``gpios``,
    ``resets``, ``devices``, ``iommus``) cannot be replaced."""
    raise NotImplementedError


@hookspec
def cosim_bus_layers(assembly: Assembly) -> list[tuple[str, BusLayer]]:
    """Return ``(place, layer)`` pairs to put on the board's DMA path (places: ``translation``,
    ``coherency``, ``trace``; see cosim.bus).  Called once per board after its models are built
    and wired (``assembly.peripherals``, ``assembly.bus``)."""
    raise NotImplementedError


@hookspec
def cosim_device_tree(peripheral: Peripheral, node: DtNode, aliases: DtAliases) -> None:
    """Shape the device-tree node the guest sees for ``peripheral``.

    Called for every model.  The core has set ``compatible`` (from the model), ``reg`` and
    ``interrupts``; after this hook, connectors add the wiring's properties (``dmas``,
    ``#dma-cells``, ``cs-gpios``...) and the platform's ``dt`` properties come last, overriding
    any.  The model's own plugin adds what its binding needs (clocks...), ``aliases.add("serial",
    node)`` numbers an alias; other plugins may amend any node."""


@hookspec
def cosim_board_started(board: Board) -> None:
    """The guest is booted and its shell is ready: start host-side activity."""


@hookspec
def cosim_board_stopping(board: Board, artifacts: Any) -> None:
    """The board is about to stop (QEMU still runs): write what the plugin wants kept into
    ``artifacts`` (a folder ``Path``) and release host resources.  Models keep their own
    artifacts with ``Peripheral.save`` instead."""
