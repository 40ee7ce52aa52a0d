"""What a plugin sees of the coordinator: its configuration and the coordinator itself.

Registration hooks and ``coordinator_configure`` receive a :class:`CoordinatorConfig`;
``coordinator_startup``, ``coordinator_shutdown`` and CLI commands (through
``open_coordinator()``) receive a :class:`CoordinatorView`. Both are protocols: a plugin types
against them and reaches nothing else of the core (its registry, store or pipeline), so the
core can change its insides without breaking a plugin. Every member is read-only to plugins.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from coordinator_hookspecs.errors import CoordinatorError
from coordinator_hookspecs.types import (
    AccessPolicy,
    AuditRecord,
    ExecutionRequest,
    ExecutionResult,
    ResourceInfo,
    SimulationResult,
    Status,
)

#: The record kinds :meth:`CoordinatorView.registered` answers for, in registration order.
RECORD_KINDS = (
    "engines",
    "validators",
    "quota_policies",
    "metrics_sinks",
    "audit_sinks",
    "effect_processors",
    "host_functions",
    "executors",
)


class CoreSettingsView(Protocol):
    """The ``[coordinator]`` settings a plugin may need to fit in with the core."""

    @property
    def max_depth(self) -> int:
        """Depth limit of nested (hybrid) executions: an engine that runs nested calls on
        one thread sizes its stacks for ``max_depth + 1`` levels."""
        ...

    @property
    def default_fee_limit(self) -> int:
        """Fee limit of a request that names none."""
        ...

    @property
    def max_execution_timeout(self) -> float:
        """Upper bound on any execution's timeout, seconds."""
        ...


@runtime_checkable
class CoordinatorConfig(Protocol):
    """The effective configuration as plugins see it in registration hooks."""

    @property
    def data_dir(self) -> Path:
        """The coordinator's data directory (``":memory:"`` for an in-memory store)."""
        ...

    @property
    def core(self) -> CoreSettingsView:
        """The core's own settings that plugins may read (see :class:`CoreSettingsView`)."""
        ...

    def section(self, name: str) -> Any:
        """The structured config of the plugin section ``name`` (see ``ConfigSection``);
        ``KeyError`` if no loaded plugin declared it."""
        ...


class ExecutionHandleView(Protocol):
    """What ``submit`` returns: the execution id at once, the result when it is ready."""

    @property
    def execution_id(self) -> str: ...

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """Block until the execution ends (``TimeoutError`` if ``timeout`` passes first)."""
        ...

    def done(self) -> bool: ...

    def cancel(self) -> bool: ...


class ExecutionStatusView(Protocol):
    """What ``status(execution_id)`` returns: live from memory or final from the log."""

    @property
    def execution_id(self) -> str: ...

    @property
    def status(self) -> Status: ...

    @property
    def resource_id(self) -> str | None: ...

    @property
    def caller(self) -> str | None: ...

    @property
    def error_kind(self) -> str | None: ...

    @property
    def message(self) -> str | None: ...

    @property
    def fee_used(self) -> int: ...

    @property
    def duration(self) -> float: ...


@runtime_checkable
class CoordinatorView(Protocol):
    """The coordinator as plugins see it: the public API of ``Coordinator`` (DESIGN.md §3)
    plus read-only views of what it registered and of its audit log."""

    @property
    def config(self) -> CoordinatorConfig: ...

    def deploy(
        self,
        code: bytes | str,
        resource_type: str = "wasm",
        *,
        name: str = "",
        capabilities: Iterable[str] = (),
        owner: str = "",
        policy: AccessPolicy | None = None,
        source_format: str = "binary",
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """Validate and store a resource; return its content-addressed id. ``options``:
        per-resource engine settings, checked by the engine and kept with the resource."""
        ...

    def execute(self, request: ExecutionRequest) -> ExecutionResult:
        """Run one execution on the calling thread and return its result."""
        ...

    def submit(self, request: ExecutionRequest) -> ExecutionHandleView:
        """Queue one execution on the coordinator's workers; return its handle at once."""
        ...

    async def execute_async(self, request: ExecutionRequest) -> ExecutionResult:
        """``execute`` for asyncio callers."""
        ...

    def query(self, request: ExecutionRequest) -> ExecutionResult:
        """A read-only call: committed state only, capped by ``[coordinator]
        query_fee_limit``; a write or event traps; nothing is committed or consumed."""
        ...

    async def query_async(self, request: ExecutionRequest) -> ExecutionResult:
        """``query`` for asyncio callers."""
        ...

    def simulate(self, request: ExecutionRequest) -> SimulationResult:
        """What ``execute`` would return for ``request`` now (fee, effects, events, state
        root), with nothing committed and no quota consumed."""
        ...

    async def simulate_async(self, request: ExecutionRequest) -> SimulationResult:
        """``simulate`` for asyncio callers."""
        ...

    def status(self, execution_id: str) -> ExecutionStatusView:
        """Where an execution is (``NotFound`` if the id is unknown)."""
        ...

    def cancel(self, execution_id: str) -> bool:
        """Cancel a queued or running execution; False if it already finished."""
        ...

    def metrics(self) -> dict[str, Any]:
        """A structured snapshot: counts, latencies, engines (``engines[name]`` has
        ``inflight``, ``capacity``, ``busy_seconds``, ``healthy``), quota, ``active``."""
        ...

    def resource(self, resource_id: str) -> ResourceInfo:
        """Metadata of a deployed resource (``NotFound`` otherwise)."""
        ...

    def resources(self) -> list[ResourceInfo]: ...

    def set_policy(self, resource_id: str, policy: AccessPolicy, *, caller: str) -> ResourceInfo:
        """Change who may execute a resource; only its owner may."""
        ...

    def state(self, resource_id: str, key: bytes | None = None) -> Any:
        """Committed state of a resource: one value (``key`` given) or all items."""
        ...

    def events(self, resource_id: str, limit: int = 100) -> list[dict[str, Any]]: ...

    def state_root(self, resource_id: str) -> str:
        """The committed state root of a resource (hex; 64 zeros for empty state)."""
        ...

    def global_root(self) -> str:
        """The committed root over all resources' state roots (hex)."""
        ...

    def prove(self, resource_id: str, key: bytes) -> dict[str, Any]:
        """The committed value of ``key`` (hex or None), ``state_root``, ``global_root``,
        ``proof`` (the key under the state root) and ``root_proof`` (the state root under
        the global root); each proof checks with :func:`coordinator_hookspecs.verify_proof`."""
        ...

    def audit_records(self, start: int = 1) -> Iterator[AuditRecord]:
        """The committed audit log from sequence number ``start`` on, oldest first (every
        process sharing the data directory appends to it; sequence numbers have no gaps)."""
        ...

    def serve_writer(self) -> None:
        """Commit for other processes on the data directory too (``[coordinator] writer``):
        processes opened with ``writer = "connect"`` then write through this one."""
        ...

    def record_security_event(
        self,
        caller: str,
        detail: Mapping[str, Any],
        error: CoordinatorError | None = None,
        *,
        resource_id: str | None = None,
    ) -> AuditRecord:
        """Append a ``security`` audit record for a decision a plugin took itself (a front
        end refusing a credential): ``rejected`` with ``error``'s kind and message, else
        ``succeeded``. ``detail`` is JSON and names the action; it never holds a secret."""
        ...

    def registered(self, kind: str) -> Mapping[str, Any]:
        """The implementations of one kind of record this coordinator runs with, by record
        name, after config overrides (a record disabled by ``[records.<name>]`` is absent).

        ``kind`` is one of :data:`RECORD_KINDS` (``"metrics_sinks"``...); a plugin finds its
        own objects this way, e.g. ``coordinator.registered("metrics_sinks").get("mine")``.
        """
        ...
