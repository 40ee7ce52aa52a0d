"""The one load sequence: plugins, their config sections, ``coordinator_configure``, records.

``Coordinator.open``, the CLI and each worker process load plugins the same way through
:func:`bootstrap`. The CLI splits it in two (:func:`load_plugins` once at start, because
its sub-commands come from plugins, then :func:`build` when a command needs the records), so
plugins are imported, and a broken one reported, once per command.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from coordinator_core.log import logger
from coordinator_core.plugin_host.builtins import BUILTIN_PLUGINS, ESSENTIAL_PLUGINS
from coordinator_core.plugin_host.config import Config
from coordinator_core.plugin_host.host import PluginError, PluginHost, PluginInfo
from coordinator_core.plugin_host.registry import Registry, build_registry, collect_sections


@attrs.frozen
class Loaded:
    """What the load sequence built: the config with its sections bound, the plugin host,
    and the frozen registry."""

    config: Config
    host: PluginHost
    registry: Registry

    def discard(self) -> None:
        """Close the engines and sinks the registry built, when no coordinator will own
        them (opening failed): an engine may hold a thread."""
        registry = self.registry
        for item in (
            *(r.engine for r in registry.engines),
            *(r.sink for r in registry.metrics_sinks),
            *(r.sink for r in registry.audit_sinks),
        ):
            close = getattr(item, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # the opening error is the one to report
                    logger.debug("closing {} failed: {}", type(item).__name__, exc)


def load_plugins(
    config: Config,
    *,
    builtins: Iterable[tuple[str, str]] = BUILTIN_PLUGINS,
    entry_points: bool = True,
    inline: Iterable[Any] = (),
) -> PluginHost:
    """Register the built-ins, then the ``coordinator`` entry points, then ``inline``
    plugins, with ``disable_plugins`` blocked (an essential built-in refused)."""
    core = config.core
    host = PluginHost(
        disabled=core.disable_plugins, strict=core.strict_plugins, essential=ESSENTIAL_PLUGINS
    )
    host.load_builtins(builtins)
    if entry_points:
        host.load_entry_points()
    host.load_inline(inline)
    return host


def build(
    config: Config, host: PluginHost, *, warn_unknown: bool = True, keep_conflicts: bool = False
) -> Loaded:
    """Bind the plugins' config sections (warning about undeclared ones), tell plugins the
    config, and build the registry (``keep_conflicts``: list clashing names instead of
    failing, for ``coordinator plugins``)."""
    sections = collect_sections(host)
    unknown = config.bind_sections(sections)
    if warn_unknown:
        config.warn_unknown(unknown, sections)
    host.broadcast("coordinator_configure", config=config)
    registry = build_registry(host, config, keep_conflicts=keep_conflicts)
    return Loaded(config, host, registry)


def bootstrap(
    config: Config,
    *,
    builtins: Iterable[tuple[str, str]] = BUILTIN_PLUGINS,
    entry_points: bool = True,
    inline: Iterable[Any] = (),
    warn_unknown: bool = True,
) -> Loaded:
    """The whole sequence: :func:`load_plugins`, then :func:`build`."""
    host = load_plugins(config, builtins=builtins, entry_points=entry_points, inline=inline)
    return build(config, host, warn_unknown=warn_unknown)


def required_problems(host: PluginHost, required: Sequence[str]) -> list[str]:
    """Why each of the ``required`` plugins (plugin or distribution names) is not running;
    empty when all are loaded."""
    problems = []
    for name in required:
        info = _find(host, name)
        if info is None:
            problems.append(
                f"required plugin {name!r} is not installed (no built-in plugin, entry point "
                "of group 'coordinator' or distribution has that name)"
            )
        elif info.status == "disabled":
            problems.append(
                f"required plugin {name!r} is disabled ([coordinator] disable_plugins or "
                "COORDINATOR_DISABLE_PLUGINS)"
            )
        elif info.status != "loaded":
            where = f" from {info.distribution}" if info.distribution else ""
            problems.append(f"required plugin {name!r}{where} failed to load: {info.error}")
    return problems


def check_required(host: PluginHost, required: Sequence[str]) -> None:
    """Fail closed: raise ``PluginError`` naming every required plugin that is not running
    (``[coordinator] required_plugins``)."""
    problems = required_problems(host, required)
    if problems:
        raise PluginError("the coordinator cannot open: " + "; ".join(problems))


def _find(host: PluginHost, name: str) -> PluginInfo | None:
    if name in host.infos:
        return host.infos[name]
    wanted = _dist_key(name)
    matches = [i for i in host.infos.values() if _dist_key(i.distribution or "") == wanted]
    # A distribution is running only if every plugin it provides is.
    return next((i for i in matches if i.status != "loaded"), matches[0] if matches else None)


def _dist_key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
