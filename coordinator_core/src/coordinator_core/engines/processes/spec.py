"""What a worker process needs to rebuild the parent's engines: the recipe, not the objects.

Engines hold native handles (wasmtime stores, onnxruntime sessions) that cannot cross a
process boundary, so a worker loads the plugins the way ``Coordinator.open`` did — the same
built-ins, entry points and inline plugins, the same effective configuration — and builds
its own registry. It keeps only the engines it was asked for; nothing in a worker opens the
store or writes anything (effects and audit commit in the parent through its one store).

Inline plugins cross as module names (modules) or pickles (objects); an inline plugin that
cannot be pickled is refused up front with its name, before any process starts.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from coordinator_core.engines.processes.state import state_source
from coordinator_core.plugin_host.bootstrap import Loaded, bootstrap
from coordinator_core.plugin_host.config import Config, CoreSettings, RecordOverride
from coordinator_core.plugin_host.host import PluginHost
from coordinator_hookspecs import EngineBase, EngineError, InvalidRequest, method_or_default


@attrs.frozen
class WorkerSpec:
    """The parent's plugin set and effective config, and the engines a worker serves."""

    engines: tuple[str, ...]
    core: CoreSettings
    data_dir: str
    records: dict[str, RecordOverride]
    raw_sections: dict[str, Any]
    source: str | None
    builtins: tuple[tuple[str, str], ...]
    entry_points: bool
    #: ("module", name) or ("object", pickled bytes), in registration order
    inline: tuple[tuple[str, Any], ...]
    #: where committed state is read from (``procstate.state_source``)
    state: tuple[str, ...] = ("parent",)

    # The contract's ``EngineRecipe``: what an executor plugin calls in its workers.
    def load_engines(self) -> tuple[dict[str, Any], Any]:
        return load_engines_with_registry(self)

    def open_state_reader(self) -> Any:
        from coordinator_core.engines.processes.state import open_reader

        return open_reader(self.state)


def spec_from(coordinator: Any, engines: tuple[str, ...]) -> WorkerSpec:
    """The recipe of ``coordinator``'s plugins for a worker serving ``engines``."""
    host: PluginHost = coordinator.host
    config: Config = coordinator.config
    infos = list(host.infos.values())
    inline: list[tuple[str, Any]] = []
    for info in infos:
        if info.source != "inline" or info.status != "loaded":
            continue
        plugin = host.manager.get_plugin(info.name)
        if plugin is None:
            continue
        if isinstance(plugin, ModuleType):
            inline.append(("module", plugin.__name__))
            continue
        try:
            inline.append(("object", pickle.dumps(plugin)))
        except Exception as exc:
            raise InvalidRequest(
                f"inline plugin {info.name!r} cannot be sent to a worker process "
                f"({type(exc).__name__}: {exc}); define it at module level with picklable "
                "state, register it by module name, or run without worker processes ([dispatch] "
                "executor = \"threads\", [coordinator] processes = 0)"
            ) from None
    return WorkerSpec(
        engines=engines,
        core=config.core,
        data_dir=str(config.data_dir),
        records=dict(config.records),
        raw_sections=dict(config.raw_sections),
        source=str(config.source) if config.source else None,
        builtins=tuple((i.name, i.module) for i in infos if i.source == "builtin"),
        entry_points=any(i.source == "entrypoint" for i in infos),
        inline=tuple(inline),
        state=state_source(coordinator),
    )


def load_plugins(spec: WorkerSpec, core: CoreSettings | None = None) -> Loaded:
    """In a worker: the parent's config (with ``core`` instead of its core settings when
    given) and plugins, loaded the way ``Coordinator.open`` loaded them."""
    config = Config(
        core=core or spec.core,
        data_dir=Path(spec.data_dir),
        records=dict(spec.records),
        raw_sections=dict(spec.raw_sections),
        source=Path(spec.source) if spec.source else None,
    )
    inline = [
        importlib.import_module(value) if kind == "module" else pickle.loads(value)
        for kind, value in spec.inline
    ]
    # The parent warned about undeclared config sections already.
    return bootstrap(
        config,
        builtins=spec.builtins,
        entry_points=spec.entry_points,
        inline=inline,
        warn_unknown=False,
    )


def load_engines(spec: WorkerSpec) -> dict[str, Any]:
    """In a worker: load the plugins, build the registry, return the requested engines by
    name with host functions bound. Other engines the registry built are closed at once."""
    return load_engines_with_registry(spec)[0]


def load_engines_with_registry(spec: WorkerSpec) -> tuple[dict[str, Any], Any]:
    """``load_engines``, and the registry they came from (a worker that binds host
    functions to its own lookups needs the records)."""
    registry = load_plugins(spec).registry
    engines: dict[str, Any] = {}
    for record in registry.engines:
        if record.name in spec.engines:
            method_or_default(record.engine, "bind_host_functions", EngineBase)(
                registry.host_functions)
            engines[record.name] = record.engine
        else:
            _close(record.engine)
    missing = [name for name in spec.engines if name not in engines]
    if missing:
        for engine in engines.values():
            _close(engine)
        raise EngineError(
            f"engine(s) {', '.join(missing)} not registered in the worker process "
            f"(it has: {', '.join(r.name for r in registry.engines) or 'none'})"
        )
    return engines, registry


def _close(engine: Any) -> None:
    try:
        method_or_default(engine, "close", EngineBase)()
    except Exception:  # an engine we never use; its close failing is not our failure
        pass
