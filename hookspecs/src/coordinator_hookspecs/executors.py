"""What an executor plugin (``coordinator_register_executors``) works with, besides the
coordinator it is given: the recipe that rebuilds the coordinator's engines in another
process, and the backend it hands back to run them there.

``ExecutorRecord.install(coordinator)`` typically calls
``coordinator.engine_recipe(names)``, ships the recipe to its workers (it pickles; the
workers call ``load_engines()`` once), and swaps each engine for its backend with
``coordinator.run_engines_on(names, backend, capacity=..., executor=...)``. The pipeline
around the engine (validation, security, quota, effects, the audit record) stays in the
coordinator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from coordinator_hookspecs.types import EngineResult, ExecutionContext


@runtime_checkable
class StateReader(Protocol):
    """Read-only access to committed state, opened in a worker next to the store."""

    def reader(self, resource_id: str) -> Callable[[bytes], bytes | None]: ...

    def close(self) -> None: ...


@runtime_checkable
class EngineRecipe(Protocol):
    """The coordinator's plugin set and effective config, and the engines a worker serves;
    picklable, so it travels to a worker process or a cluster actor."""

    @property
    def engines(self) -> tuple[str, ...]:
        """The names of the engines the recipe builds."""
        ...

    def load_engines(self) -> tuple[dict[str, Any], Any]:
        """In the worker: the engines by name, with host functions bound, and the registry
        they came from (its host-function records, to bind lookups that go back to the
        coordinator). Raises ``EngineError`` naming an engine the worker cannot build."""
        ...

    def open_state_reader(self) -> StateReader | None:
        """In the worker: committed state read straight from the store's file, or None when
        the store cannot be read from another process (the memory store)."""
        ...


@runtime_checkable
class RemoteEngines(Protocol):
    """The backend an executor runs engines on. ``closed`` is True once closed;
    ``start_error`` is set when a worker failed to start (the dispatcher then keeps the
    engine out of rotation once and clears it)."""

    closed: bool
    start_error: object | None

    def run(self, engine: str, ctx: ExecutionContext) -> EngineResult: ...

    def holds(self, resource_id: str) -> bool: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
