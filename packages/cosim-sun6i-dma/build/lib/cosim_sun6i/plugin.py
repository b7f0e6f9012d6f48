"""The cosim plugin: what this package provides to a board (entry point ``cosim.plugins``)."""

from __future__ import annotations

from cosim.api import DtNode, Peripheral, hookimpl

from . import dma
from .dma import Sun6iDma
from .reset import Sun6iReset


@hookimpl
def cosim_peripheral_types() -> dict[str, type[Peripheral]]:
    return {"sun6i-dma": Sun6iDma, "sun6i-reset": Sun6iReset}


@hookimpl
def cosim_device_tree(peripheral: Peripheral, node: DtNode) -> None:
    if isinstance(peripheral, Sun6iDma):
        dma.device_tree(peripheral, node)
