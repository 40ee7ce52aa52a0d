"""Plugin discovery: a fresh pluggy manager per coordinator, built-ins first, then entry points.

Built-ins are ordinary plugins listed in :data:`BUILTIN_PLUGINS` (datasette's
``DEFAULT_PLUGINS`` habit). Entry points of group ``coordinator`` are loaded one by one: a
plugin whose import or hook validation fails is logged with its distribution and skipped
(strict mode re-raises), so one broken plugin never takes the host down.
``COORDINATOR_DISABLE_PLUGINS`` (or ``[coordinator] disable_plugins``) blocks by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs
import pluggy
from loguru import logger

from coordinator_hookspecs import PROJECT_NAME, CoordinatorError, InvalidRequest
from coordinator_hookspecs import spec as hookspec_module

#: Entry-point group plugin distributions declare.
ENTRY_POINT_GROUP = "coordinator"



class PluginError(CoordinatorError):
    """A plugin could not be loaded, or its records conflict with another plugin's.

    Reported with kind ``internal``: the installation, not the request, is at fault.
    """


@attrs.frozen
class PluginInfo:
    """What ``coordinator plugins`` shows for one plugin."""

    name: str
    source: str  # builtin | entrypoint | inline
    module: str
    distribution: str | None = None
    version: str | None = None
    status: str = "loaded"  # loaded | failed | disabled
    error: str | None = None


def new_manager() -> pluggy.PluginManager:
    """A fresh manager with the coordinator's hookspecs (never a module-level global)."""
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspec_module)
    return manager


class PluginHost:
    """Owns one plugin manager and remembers where each plugin came from."""

    def __init__(self, *, disabled: Iterable[str] = (), strict: bool = False) -> None:
        self.manager = new_manager()
        self.disabled = frozenset(disabled)
        self.strict = strict
        self.infos: dict[str, PluginInfo] = {}

    # -- loading -------------------------------------------------------------------------
    def load_builtins(self, builtins: Iterable[tuple[str, str]]) -> None:
        """Register the built-in plugins, given as (name, module) pairs; a broken built-in
        is a bug and always raises."""
        for name, module_name in builtins:
            if name in self.disabled:
                self.infos[name] = PluginInfo(name, "builtin", module_name, status="disabled")
                continue
            self._register(importlib.import_module(module_name), name, "builtin", module_name)

    def load_entry_points(self) -> None:
        """Load every ``coordinator`` entry point, skipping (or, strict, raising on) failures."""
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            self._load_entry_point(ep)

    def load_inline(self, plugins: Iterable[Any]) -> None:
        """Register plugin objects or modules given directly (tests, embedding)."""
        for index, plugin in enumerate(plugins):
            name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"
            self._register(plugin, name, "inline", getattr(plugin, "__module__", name))

    def _load_entry_point(self, ep: EntryPoint) -> None:
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        if ep.name in self.disabled:
            self.infos[ep.name] = PluginInfo(
                ep.name, "entrypoint", ep.value, dist, version, status="disabled"
            )
            logger.info("plugin {} ({}) disabled by configuration", ep.name, dist)
            return
        if ep.name in self.infos:
            other = self.infos[ep.name]
            self._fail(
                ep.name,
                ep.value,
                dist,
                version,
                f"plugin name {ep.name!r} is provided by both {other.distribution or other.source}"
                f" and {dist}",
            )
            return
        try:
            plugin = ep.load()
            self._register(plugin, ep.name, "entrypoint", ep.value, dist, version)
        except Exception as exc:  # any import-time error of a third-party plugin
            self._fail(ep.name, ep.value, dist, version, f"{type(exc).__name__}: {exc}")

    def _register(
        self,
        plugin: Any,
        name: str,
        source: str,
        module: str,
        dist: str | None = None,
        version: str | None = None,
    ) -> None:
        if self.manager.has_plugin(name):
            raise PluginError(f"plugin name {name!r} is registered twice ({module})")
        self.manager.register(plugin, name=name)
        try:
            # Reject misspelled hooks and bad signatures before anything runs.
            self.manager.check_pending()
        except Exception:
            self.manager.unregister(plugin)
            raise
        self.infos[name] = PluginInfo(name, source, module, dist, version)

    def _fail(
        self, name: str, module: str, dist: str | None, version: str | None, why: str
    ) -> None:
        message = f"plugin {name} from {dist or module} {version or ''} failed to load: {why}"
        if self.strict:
            raise PluginError(message)
        logger.warning(message.replace("  ", " "))
        self.infos[name] = PluginInfo(name, "entrypoint", module, dist, version, "failed", why)

    def drop(self, name: str, why: str) -> None:
        """Unregister a plugin whose registration hook failed (strict mode raises)."""
        info = self.infos.get(name)
        message = f"plugin {name} ({(info and info.distribution) or 'builtin'}) failed: {why}"
        if self.strict or (info is not None and info.source == "builtin"):
            raise PluginError(message)
        logger.warning(message)
        plugin = self.manager.get_plugin(name)
        if plugin is not None:
            self.manager.unregister(plugin)
        if info is not None:
            self.infos[name] = attrs.evolve(info, status="failed", error=why)

    # -- calling -------------------------------------------------------------------------
    def collect(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call a registration hook on each plugin separately; return (plugin, item) pairs.

        Calling implementations one by one (conda's ``get_hook_results``) tells us which
        plugin gave each record, so conflicts can name both providers and a plugin whose hook
        raises can be dropped alone. ``InvalidRequest`` is the exception: it says the user's
        configuration cannot work, and stops start-up with the plugin's message.
        """
        caller = getattr(self.manager.hook, hook_name)
        out: list[tuple[str, Any]] = []
        for impl in caller.get_hookimpls():  # registration order: built-ins first
            plugin_name = self.manager.get_name(impl.plugin) or repr(impl.plugin)
            try:
                items = impl.function(**{k: kwargs[k] for k in impl.argnames})
                items = list(items or ())  # a generator may raise, a bare record is no list
            except InvalidRequest:
                raise  # the user's configuration is wrong, not the plugin: say so, loudly
            except Exception as exc:
                self.drop(plugin_name, f"{hook_name} raised {type(exc).__name__}: {exc}")
                continue
            out.extend((plugin_name, item) for item in items)
        return out

    def broadcast(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; a failing plugin is logged, not fatal."""
        caller = getattr(self.manager.hook, hook_name)
        for impl in caller.get_hookimpls():  # registration order: built-ins first
            plugin_name = self.manager.get_name(impl.plugin) or repr(impl.plugin)
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as exc:
                if self.strict:
                    raise PluginError(f"plugin {plugin_name}: {hook_name} raised {exc}") from exc
                logger.opt(exception=exc).warning(
                    "plugin {}: {} raised {}: {}", plugin_name, hook_name, type(exc).__name__, exc
                )

    def describe(self) -> list[dict[str, Any]]:
        """Plain data for ``coordinator plugins``."""
        return [attrs.asdict(info) for info in self.infos.values()]
