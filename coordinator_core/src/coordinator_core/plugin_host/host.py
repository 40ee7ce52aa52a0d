"""Plugin discovery: a fresh pluggy manager per coordinator, built-ins first, then entry points.

Built-ins are ordinary plugins listed in :data:`BUILTIN_PLUGINS` (datasette's
``DEFAULT_PLUGINS`` habit). Entry points of group ``coordinator`` are loaded one by one: a
plugin whose import or hook validation fails is logged with its distribution and skipped
(strict mode re-raises), so one broken plugin never takes the host down.
``COORDINATOR_DISABLE_PLUGINS`` (or ``[coordinator] disable_plugins``) blocks names with
pluggy's ``set_blocked``, except the essential built-ins no coordinator can work without.
Hooks are called the pluggy way (``tryfirst``, ``trylast`` and wrappers honoured) through
:class:`CoordinatorManager`, which tells which plugin gave each record.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs

from coordinator_core.log import logger
from coordinator_core.plugin_host.manager import CoordinatorManager
from coordinator_hookspecs import CoordinatorError, InvalidRequest

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


def new_manager() -> CoordinatorManager:
    """A fresh manager with the coordinator's hookspecs (never a module-level global)."""
    return CoordinatorManager()


class PluginHost:
    """Owns one plugin manager and remembers where each plugin came from.

    ``essential``: plugin names that may not be disabled (the coordinator cannot open
    without them); naming one in ``disabled`` is an ``InvalidRequest``.
    """

    def __init__(
        self,
        *,
        disabled: Iterable[str] = (),
        strict: bool = False,
        essential: Iterable[str] = (),
    ) -> None:
        self.manager = new_manager()
        self.disabled = frozenset(disabled)
        refused = sorted(self.disabled & frozenset(essential))
        if refused:
            raise InvalidRequest(
                f"plugin(s) {', '.join(refused)} cannot be disabled: the coordinator needs "
                "them (remove them from [coordinator] disable_plugins / "
                "COORDINATOR_DISABLE_PLUGINS)"
            )
        for name in self.disabled:
            self.manager.set_blocked(name)
        self.strict = strict
        self.infos: dict[str, PluginInfo] = {}

    # -- loading -------------------------------------------------------------------------
    def load_builtins(self, builtins: Iterable[tuple[str, str]]) -> None:
        """Register the built-in plugins, given as (name, module) pairs; a broken built-in
        is a bug and always raises."""
        for name, module_name in builtins:
            if self.manager.is_blocked(name):
                self.infos[name] = PluginInfo(
                    name=name, source="builtin", module=module_name, status="disabled"
                )
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
            module = getattr(plugin, "__module__", name)
            if self.manager.is_blocked(name):
                self.infos[name] = PluginInfo(
                    name=name, source="inline", module=module, status="disabled"
                )
                continue
            self._register(plugin, name, "inline", module)

    def _load_entry_point(self, ep: EntryPoint) -> None:
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        if self.manager.is_blocked(ep.name):
            self.infos[ep.name] = PluginInfo(
                name=ep.name,
                source="entrypoint",
                module=ep.value,
                distribution=dist,
                version=version,
                status="disabled",
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
        self.infos[name] = PluginInfo(
            name=name, source=source, module=module, distribution=dist, version=version
        )

    def _fail(
        self, name: str, module: str, dist: str | None, version: str | None, why: str
    ) -> None:
        message = f"plugin {name} from {dist or module} {version or ''} failed to load: {why}"
        if self.strict:
            raise PluginError(message)
        logger.warning(message.replace("  ", " "))
        self.infos[name] = PluginInfo(
            name=name,
            source="entrypoint",
            module=module,
            distribution=dist,
            version=version,
            status="failed",
            error=why,
        )

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
        """Call a registration hook; return (plugin, item) pairs in pluggy's call order.

        A plugin whose implementation raises is dropped alone (the others' records stay).
        ``InvalidRequest`` is the exception: it says the user's configuration cannot work,
        and stops start-up with the plugin's message.
        """
        results, outcome = self.manager.call(hook_name, kwargs, collecting=True)
        for plugin, exc in outcome.failures:
            self.drop(plugin, f"{hook_name} raised {type(exc).__name__}: {exc}")
        return [(outcome.provider(item), item) for items in results for item in items or ()]

    def broadcast(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin; a failing plugin is logged, not fatal."""
        _, outcome = self.manager.call(hook_name, kwargs, collecting=False)
        for plugin, exc in outcome.failures:
            if self.strict:
                raise PluginError(f"plugin {plugin}: {hook_name} raised {exc}") from exc
            logger.opt(exception=exc).warning(
                "plugin {}: {} raised {}: {}", plugin, hook_name, type(exc).__name__, exc
            )

    def rank(self, name: str) -> int:
        """Registration position of plugin ``name`` (conflict messages name the first
        registered first)."""
        return next((i for i, n in enumerate(self.infos) if n == name), len(self.infos))

    def describe(self) -> list[dict[str, Any]]:
        """Plain data for ``coordinator plugins``."""
        return [attrs.asdict(info) for info in self.infos.values()]
