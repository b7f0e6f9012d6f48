"""Finds plugins (entry-point group ``cosim.plugins``) and what they provide."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from . import connectors as core_connectors
from . import hookspecs
from .peripheral import Peripheral
from .spi import SpiDevice

if TYPE_CHECKING:
    from .connectors import Connector

T = TypeVar("T")

ENTRY_POINT_GROUP = "cosim.plugins"


class PluginError(RuntimeError):
    pass


def create_plugin_manager(extra_plugins: tuple[object, ...] = ()) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(core_connectors, name="cosim.connectors")
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        pm.register(plugin)
    try:
        pm.check_pending()  # a hook name that is not in the contract: a typo that would never run
    except pluggy.PluginValidationError as e:
        raise PluginError(f"plugin {e.plugin!r}: {e} — the hooks are listed in cosim.hookspecs") from None
    return pm


@cache
def default_plugin_manager() -> pluggy.PluginManager:
    return create_plugin_manager()


def peripheral_types(pm: pluggy.PluginManager) -> dict[str, type[Peripheral]]:
    return _provided(pm.hook.cosim_peripheral_types, "peripheral", Peripheral)


def spi_device_types(pm: pluggy.PluginManager) -> dict[str, type[SpiDevice]]:
    return _provided(pm.hook.cosim_spi_device_types, "SPI device", SpiDevice)


def connectors(pm: pluggy.PluginManager) -> dict[str, Connector]:
    found: dict[str, Connector] = {}
    owners: dict[str, str] = {}
    for impl in reversed(pm.hook.cosim_connectors.get_hookimpls()):  # cosim's own first
        for connector in impl.function():
            if connector.key in found:
                raise PluginError(f"the platform key '{connector.key}' is wired by both "
                                  f"{owners[connector.key]} and {impl.plugin_name}: uninstall one")
            found[connector.key], owners[connector.key] = connector, impl.plugin_name
    return found


def _provided(hook: Any, what: str, base: type[T]) -> dict[str, type[T]]:
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
