"""What a plugin may use: the whole plugin API.  Plugins import from here and nowhere else."""

from .bus import BusMaster, DmaFault
from .devicetree import DtNode, Ref
from .dmarequest import DmaRequestPort, DmaRequestTarget
from .hookspecs import hookimpl
from .peripheral import (
    Field,
    HostBuffer,
    Peripheral,
    PeripheralConfig,
    PeripheralError,
    Register,
    RegisterArray,
)
from .spi import SpiDevice

__all__ = [
    "BusMaster",
    "DmaFault",
    "DmaRequestPort",
    "DmaRequestTarget",
    "DtNode",
    "Field",
    "HostBuffer",
    "Peripheral",
    "PeripheralConfig",
    "PeripheralError",
    "Ref",
    "Register",
    "RegisterArray",
    "SpiDevice",
    "hookimpl",
]
