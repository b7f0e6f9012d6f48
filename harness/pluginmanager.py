"""Finds plugins (entry-point group ``cosim.plugins``) and the peripheral models they provide."""

from __future__ import annotations

from functools import cache

import pluggy

from . import hookspecs
from .peripheral import Peripheral

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
    types: dict[str, type[Peripheral]] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.cosim_peripheral_types.get_hookimpls():
        for name, cls in impl.function().items():
            if name in types:
                raise PluginError(f"peripheral '{name}' is provided by both {owners[name]} and "
                                  f"{impl.plugin_name}: uninstall one of them")
            if not (isinstance(cls, type) and issubclass(cls, Peripheral)):
                raise PluginError(f"plugin {impl.plugin_name}: '{name}' is not a Peripheral class")
            types[name], owners[name] = cls, impl.plugin_name
    return types
