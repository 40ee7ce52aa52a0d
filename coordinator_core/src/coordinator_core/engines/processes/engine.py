"""The engine the dispatcher sees when an engine runs in the process pool, and the start-up
step that swaps it in (``[dispatch] executor = "processes"``; see ``engines/processes/pool.py``)."""

from __future__ import annotations

from typing import Any

from coordinator_core.engines.processes.pool import ProcessPool
from coordinator_core.engines.processes.spec import spec_from
from coordinator_hookspecs import (
    EngineBase,
    EngineResult,
    ExecutionContext,
    InvalidRequest,
    RemoteEngines,
    method_or_default,
    optional,
)


class PooledEngine:
    """Stands in the dispatcher for an engine that runs on a ``RemoteEngines`` backend (the
    process pool, or an executor plugin's workers). Deploy-time methods
    (``canonical_code``, ``inspect``, CLI input helpers) still run on the parent's own
    instance of the engine: the dispatcher keeps them bound to it, and ``__getattr__``
    forwards any other attribute (an engine's own statistics, say) to it."""

    def __init__(self, name: str, inner: Any, pool: RemoteEngines) -> None:
        self.name = name
        self.inner = inner
        self.pool = pool
        self._inner_health = optional(inner, "health", EngineBase)
        self._inner_close = method_or_default(inner, "close", EngineBase)

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        return self.pool.run(self.name, ctx)

    def holds(self, resource_id: str) -> bool:
        return self.pool.holds(resource_id)

    def health(self) -> bool:
        """False once after a worker failed to start (the dispatcher then keeps the engine
        out of rotation for ``health_interval``; the next check lets it try again), or when
        the parent's own instance of the engine reports unhealthy."""
        pool = self.pool
        if pool.closed:
            return False
        if pool.start_error is not None:
            pool.start_error = None
            return False
        inner = self._inner_health
        return inner is None or bool(inner())

    def pool_stats(self) -> dict[str, Any]:
        return self.pool.stats()

    def close(self) -> None:
        self.pool.close()
        self._inner_close()

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None:  # not initialised (copy, unpickling): no delegation yet
            raise AttributeError(name)
        return getattr(inner, name)


def install_process_pool(coordinator: Any, settings: Any) -> tuple[str, ...]:
    """Start the pool for ``coordinator`` and swap the selected engines into it (all or
    nothing: if a worker cannot start, nothing is swapped and the error is raised)."""
    dispatcher = coordinator.dispatcher
    names = tuple(settings.process_engines) or tuple(b.name for b in dispatcher.engines)
    installed = {b.name for b in dispatcher.engines}
    unknown = [n for n in names if n not in installed]
    if unknown:
        raise InvalidRequest(f"[dispatch] process_engines names {', '.join(unknown)}, not "
                             f"installed (installed: {', '.join(sorted(installed)) or 'none'})")
    if not names:
        return ()
    pool = ProcessPool(spec_from(coordinator, names), settings.processes,
                       kill_grace=settings.process_kill_grace,
                       start_timeout=settings.process_start_timeout)
    try:
        pool.start()
    except BaseException:
        pool.close()
        raise
    coordinator.run_engines_on(names, pool, capacity=settings.processes, executor="processes")
    return names
