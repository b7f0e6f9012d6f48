"""What a plugin may use: the whole plugin API.  Plugins import from here and nowhere else."""

from .bus import PLACES, BusLayer, BusMaster, DmaFault, Next, Transaction
from .clock import Timer
from .connectors import Connector
from .devicetree import DtAliases, DtNode, Ref
from .dmarequest import DmaRequestPort
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
from .roles import DmaController, GpioController, Iommu, ResetController, SpiBus
from .spi import SpiDevice

__all__ = [
    "PLACES",
    "BusLayer",
    "BusMaster",
    "Connector",
    "DmaController",
    "DmaFault",
    "DmaRequestPort",
    "DtAliases",
    "DtNode",
    "Field",
    "GpioController",
    "HostBuffer",
    "Iommu",
    "Next",
    "Peripheral",
    "PeripheralConfig",
    "PeripheralError",
    "Ref",
    "Register",
    "RegisterArray",
    "ResetController",
    "SpiBus",
    "SpiDevice",
    "Timer",
    "Transaction",
    "hookimpl",
]
