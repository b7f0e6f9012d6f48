"""Finds plugins (entry-point group ``cosim.plugins``) and the models they provide."""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import pluggy

from . import hookspecs
from .peripheral import Peripheral
from .spi import SpiDevice

T = TypeVar("T")

ENTRY_POINT_GROUP = "cosim.plugins"


class PluginError(RuntimeError):
    pass


def create_plugin_manager(extra_plugins: tuple[object, ...] = ()) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        pm.register(plugin)
    return pm


@cache
def default_plugin_manager() -> pluggy.PluginManager:
    return create_plugin_manager()


def peripheral_types(pm: pluggy.PluginManager) -> dict[str, type[Peripheral]]:
    return _model_types(pm.hook.cosim_peripheral_types, Peripheral, "peripheral")


def spi_device_types(pm: pluggy.PluginManager) -> dict[str, type[SpiDevice]]:
    return _model_types(pm.hook.cosim_spi_device_types, SpiDevice, "SPI device")


def _model_types(hook: Any, base: type[T], what: str) -> dict[str, type[T]]:
    types: dict[str, type[T]] = {}
    owners: dict[str, str] = {}
    for impl in hook.get_hookimpls():
        for name, cls in impl.function().items():
            if name in types:
                raise PluginError(f"{what} '{name}' is provided by both {owners[name]} and "
                                  f"{impl.plugin_name}: uninstall one of them")
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise PluginError(f"plugin {impl.plugin_name}: '{name}' is not a {base.__name__} class")
            types[name], owners[name] = cls, impl.plugin_name
    return types
