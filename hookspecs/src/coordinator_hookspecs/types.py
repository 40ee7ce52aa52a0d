"""The values that cross the plugin boundary: requests, results, effects, resources.

All are frozen attrs classes with slots, built once per execution (or once per deploy) and
never mutated, so they can be shared between threads and logged without copies. The only
mutable object an engine sees is the :class:`CancelToken` (and the engine's own buffers).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs


class Status(str, enum.Enum):
    """Lifecycle of one execution (DESIGN.md §3)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def final(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)


class ErrorKind(str, enum.Enum):
    """The ten stable error kinds (DESIGN.md §3)."""

    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    SECURITY_REJECTED = "security_rejected"
    QUOTA_EXCEEDED = "quota_exceeded"
    FEE_EXHAUSTED = "fee_exhausted"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    TRAP = "trap"
    ENGINE_ERROR = "engine_error"
    INTERNAL = "internal"


class EffectKind:
    """Effect kinds the built-in processors understand; plugins may add their own strings."""

    STATE_SET = "state.set"
    STATE_DELETE = "state.delete"
    EVENT = "event"
    LOG = "log"


@attrs.frozen(slots=True)
class Effect:
    """One side effect an engine asks for; applied only if the whole execution succeeds.

    ``key``/``value`` carry a state write (``state.set``; ``state.delete`` has no value),
    an event's payload (``value``), or a log line (``key`` = level as ASCII, ``value`` = text).
    Plugin-defined kinds use the two byte fields as they document.
    """

    kind: str
    resource_id: str
    key: bytes = b""
    value: bytes = b""


@attrs.frozen(slots=True)
class AccessPolicy:
    """Who may execute a resource. Settable at deploy; changeable only by the owner."""

    public: bool = True
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()


@attrs.frozen(slots=True)
class ResourceInfo:
    """A deployed resource: content-addressed bytes plus metadata.

    ``id`` is the lowercase hex sha256 of the canonical bytes. ``meta`` holds what an engine
    learned at deploy time (a model's input signature, a module's imports), JSON-compatible.
    """

    id: str
    type: str
    name: str = ""
    owner: str = ""
    capabilities: frozenset[str] = frozenset()
    policy: AccessPolicy = AccessPolicy()
    size: int = 0
    deployed_at: float = 0.0
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False, eq=False)

    @property
    def options(self) -> Mapping[str, Any]:
        """The deploy options the engine accepted (``meta["options"]``; empty when none)."""
        options: Mapping[str, Any] = self.meta.get("options") or {}
        return options


@attrs.frozen(slots=True)
class DeployRequest:
    """What a deploy-time validator sees: the canonical bytes, the requested metadata, and
    ``meta``, what the engine's ``inspect`` learned (for example
    ``meta["required_capabilities"]``, the capabilities the code's imports need).

    ``options`` are the per-resource settings the deployer asked for (``deploy(...,
    options={"max_batch_size": 8})``), as given. An engine that takes options checks them in
    ``inspect`` (``InvalidRequest`` naming the key) and returns them, normalised, as
    ``meta["options"]``; the core refuses options an engine did not return that way."""

    code: bytes
    resource_type: str
    resource_id: str
    name: str = ""
    owner: str = ""
    capabilities: frozenset[str] = frozenset()
    policy: AccessPolicy = AccessPolicy()
    meta: Mapping[str, Any] = attrs.field(factory=dict, hash=False, eq=False)
    options: Mapping[str, Any] = attrs.field(factory=dict, hash=False, eq=False)


@attrs.frozen(slots=True)
class ExecutionRequest:
    """One call into a deployed resource (DESIGN.md §3).

    ``input`` is bytes for a WASM entry using the I/O ABI, or a mapping of input name to
    array for ONNX. ``args`` holds numeric arguments for a WASM entry that takes params.
    ``fee_limit``/``timeout`` of None take the configured defaults; the timeout is capped by
    the configured maximum. ``parent_id``, ``parent_resource_id`` (the calling resource) and
    ``depth`` are set by the core for nested calls only; a top-level request setting them is
    refused.
    """

    resource_id: str
    caller: str = "anonymous"
    entry: str | None = None
    input: Any = b""
    args: tuple[Any, ...] | None = None
    fee_limit: int | None = None
    timeout: float | None = None
    parent_id: str | None = None
    depth: int = 0
    parent_resource_id: str | None = None


@attrs.frozen(slots=True)
class Verdict:
    """A security validator's decision. ``allow=False`` is a hard rejection (fail fast);
    an admitting verdict may carry a risk ``score`` that is weighted and summed."""

    allow: bool = True
    reason: str = ""
    score: float = 0.0

    @classmethod
    def reject(cls, reason: str) -> Verdict:
        return cls(allow=False, reason=reason)


@attrs.frozen(slots=True)
class ErrorInfo:
    """The error of a failed result: a stable kind, a message naming what was wrong, and the
    plugin or stage that decided (for example the rejecting validator's name)."""

    kind: ErrorKind
    message: str
    source: str | None = None

    def __str__(self) -> str:
        # A user prints ``result.error``; the attrs repr would show the enum and every field.
        kind = self.kind.value if isinstance(self.kind, ErrorKind) else self.kind
        return f"{kind}: {self.message}"


@attrs.frozen(slots=True)
class ExecutionResult:
    """The final outcome of one execution, whatever its end."""

    execution_id: str
    status: Status
    resource_id: str
    caller: str
    output: Any = None
    fee_used: int = 0
    effects: tuple[Effect, ...] = ()
    error: ErrorInfo | None = None
    engine: str | None = None
    duration: float = 0.0
    parent_id: str | None = None
    #: CPU seconds of the engine call: the thread that ran it (nested executions it made
    #: included, as they run on that thread) plus what the engine reports it spent elsewhere
    #: (``EngineResult.cpu_seconds``). 0.0 when ``[coordinator] measure_resources`` is off.
    cpu_seconds: float = 0.0
    #: Peak memory of the execution as its engine counts it, bytes (0 when the engine reports
    #: none, and for an execution that failed in its engine).
    memory_bytes: int = 0
    #: The engine's breakdown of ``memory_bytes`` (``EngineResult.usage``), or None.
    usage: Mapping[str, int] | None = attrs.field(default=None, hash=False, eq=False)

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCEEDED


@attrs.frozen(slots=True)
class SimulationResult(ExecutionResult):
    """What ``simulate`` returns: the result ``execute`` would return for the same request
    on the same committed state, committed nowhere.

    ``effects`` are the writes, events and log lines the execution would commit (nested
    executions' included); ``events`` is the ``event`` effects among them, in order.
    ``state_root`` and ``global_root`` are the hex roots committing those effects would
    produce (the resource's state tree and the tree over every resource's root, as the
    execution's audit record would carry them); None when the execution failed.
    """

    events: tuple[Effect, ...] = ()
    state_root: str | None = None
    global_root: str | None = None


@attrs.frozen(slots=True)
class EngineResult:
    """What an engine returns on success. Failures are raised as ``CoordinatorError``
    subclasses carrying ``fee_used``."""

    output: Any = None
    fee_used: int = 0
    effects: tuple[Effect, ...] = ()
    #: Peak memory the execution held, bytes, as the engine counts it (wasm: linear memory
    #: at the end, which is its peak; onnx: input plus output tensor bytes).
    memory_bytes: int = 0
    #: The breakdown of ``memory_bytes`` (names to non-negative ints, JSON-compatible), kept
    #: on the execution's result; None when there is nothing to add.
    usage: Mapping[str, int] | None = None
    #: CPU seconds the execution spent outside the thread that called ``execute`` (an
    #: engine running it in another process); the core adds the calling thread's own.
    cpu_seconds: float = 0.0


@attrs.frozen(slots=True)
class ExecutionReport:
    """Handed to metrics sinks after every execution: the result, the resource type and
    the time spent in each pipeline stage (seconds), in pipeline order."""

    result: ExecutionResult
    resource_type: str | None
    stages: tuple[tuple[str, float], ...]


@attrs.frozen(slots=True)
class AuditRecord:
    """One entry of the tamper-evident audit log, as handed to audit sinks.

    ``record_kind`` is ``execution`` (the one final record of an execution), ``deploy``,
    ``security``, ``quota``, ``rollback`` or a plugin-defined string. ``leaf_hash`` and
    ``chain_hash`` are hex digests of the RFC 6962-style chain (see docs/architecture.md).
    """

    seq: int
    record_kind: str
    timestamp: float
    execution_id: str | None = None
    parent_id: str | None = None
    caller: str | None = None
    resource_id: str | None = None
    status: str | None = None
    error_kind: str | None = None
    message: str | None = None
    fee_used: int = 0
    duration: float = 0.0
    effect_digest: str | None = None
    detail: Mapping[str, Any] = attrs.field(factory=dict, hash=False, eq=False)
    leaf_hash: str = ""
    chain_hash: str = ""


def _run_callback(callback: Callable[[ErrorKind], object], reason: ErrorKind) -> None:
    """One failing cancel callback must not stop the others, nor the thread cancelling (the
    coordinator's watchdog): it is reported through ``logging`` and skipped."""
    try:
        callback(reason)
    except Exception:
        logging.getLogger("coordinator").exception("a cancel callback raised; skipped")


class CancelToken:
    """Cancellation and deadline of one execution, shared by the core and the engine.

    The core cancels the token on ``Coordinator.cancel`` (reason ``cancelled``) and when the
    deadline passes (reason ``timeout``). An engine either polls :meth:`poll` from a place it
    regains control (a wasm epoch callback, a loop between ops) or registers a callback with
    :meth:`on_cancel` that interrupts the running call (``RunOptions.terminate``). Callbacks run
    on the cancelling thread and must be quick and thread-safe.
    """

    __slots__ = ("_callbacks", "_lock", "deadline", "reason")

    def __init__(self, deadline: float = float("inf")) -> None:
        self.deadline = deadline
        self.reason: ErrorKind | None = None
        self._callbacks: list[Callable[[ErrorKind], object]] = []
        self._lock = threading.Lock()

    def cancel(self, reason: ErrorKind = ErrorKind.CANCELLED) -> bool:
        """Cancel with ``reason``; return False if already cancelled (first reason wins)."""
        with self._lock:
            if self.reason is not None:
                return False
            self.reason = reason
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _run_callback(callback, reason)
        return True

    def on_cancel(self, callback: Callable[[ErrorKind], object]) -> None:
        """Run ``callback(reason)`` on cancellation (at once if already cancelled)."""
        with self._lock:
            if self.reason is None:
                self._callbacks.append(callback)
                return
        _run_callback(callback, self.reason)

    def poll(self) -> ErrorKind | None:
        """Return the reason to stop, or None to go on; a passed deadline cancels as timeout."""
        if self.reason is None and time.monotonic() >= self.deadline:
            self.cancel(ErrorKind.TIMEOUT)
        return self.reason

    @property
    def remaining(self) -> float:
        """Seconds until the deadline (negative once passed)."""
        return self.deadline - time.monotonic()


@attrs.define(slots=True)
class ExecutionContext:
    """Everything an engine needs for one execution, built by the core.

    ``fee_limit`` and ``token.deadline`` are already resolved from the request and config.
    ``state_get(key)`` reads the resource's committed state (engines overlay their own pending
    writes). ``load_code()`` returns the resource's bytes for an engine whose cache missed.
    ``invoke(request)`` runs a nested execution through the whole pipeline (hybrid flow); its
    effects are returned, not committed, so the caller folds them into its own. It is None
    when nesting is not allowed (depth limit reached). ``read_only`` is set for a query
    (``Coordinator.query``): an engine refuses every effect at once, as a ``Trap`` naming it
    (the core refuses an engine result carrying effects all the same).
    """

    execution_id: str
    request: ExecutionRequest
    resource: ResourceInfo
    fee_limit: int
    token: CancelToken
    state_get: Callable[[bytes], bytes | None]
    load_code: Callable[[], bytes]
    invoke: Callable[[ExecutionRequest], ExecutionResult] | None = None
    read_only: bool = False
