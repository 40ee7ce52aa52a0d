"""The interfaces a plugin implements. Structural: no base class to inherit.

Each protocol lists its required methods; its docstring names the optional ones, whose
signatures and no-op defaults are the methods of the matching base class in ``bases.py``
(``EngineBase``, ``ValidatorBase``, ...). Inheriting a base class is optional: the core binds
every optional method once when a coordinator opens, so a plugin that lacks one costs nothing
per execution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from coordinator_hookspecs.records import HostFunctionRecord
from coordinator_hookspecs.types import (
    AuditRecord,
    DeployRequest,
    Effect,
    EngineResult,
    ExecutionContext,
    ExecutionReport,
    ExecutionRequest,
    ResourceInfo,
)


@runtime_checkable
class Engine(Protocol):
    """Runs executions of one or more resource types.

    Required: ``execute``. Optional (defaults in ``EngineBase``):
    ``canonical_code(code, source_format) -> bytes`` (turn a deploy's input, e.g. WAT text,
    into the canonical bytes that are hashed and stored), ``inspect(deploy) -> dict``
    (metadata to keep with the resource, e.g. a model's signature; raise ``InvalidRequest``
    for bytes it cannot run; an engine taking deploy options checks ``deploy.options`` here
    and returns those it accepts as ``meta["options"]``), ``bind_host_functions(records)``
    (called once with every registered host function), ``health() -> bool``,
    ``warm_up()`` (load now what the first execution would pay for),
    ``holds(resource_id) -> bool`` (has it warm, for affinity scheduling),
    ``pool_stats() -> dict | None`` (workers of an engine that runs executions elsewhere),
    ``model_stats() -> dict | None`` (per-resource statistics, e.g. batch sizes, under
    ``metrics()["engines"][name]["models"]``), ``decode_cli_input(data, filename)`` and
    ``encode_output(output)`` (the ``coordinator exec`` command's input and output),
    ``close()``.
    """

    def execute(self, ctx: ExecutionContext) -> EngineResult:
        """Run ``ctx.request`` on ``ctx.resource``; raise a ``CoordinatorError`` on failure.

        Must honour ``ctx.fee_limit`` and ``ctx.token`` (cancel and deadline), and must not
        write state itself: writes, events and logs are returned as effects.
        """
        ...


@runtime_checkable
class SecurityValidator(Protocol):
    """Decides whether a deploy or an execution may go ahead.

    Implement either or both of ``validate_deploy(deploy)`` and
    ``validate_execution(request, resource)``; each returns None (admit) or a ``Verdict``
    (reject, or admit with a risk score). Raising ``SecurityRejected`` is a hard rejection;
    any other exception is a rejection too (validators fail closed). ``ValidatorBase`` has
    both; only the ones a validator overrides are called.
    """


@runtime_checkable
class QuotaPolicy(Protocol):
    """Admits, delays or refuses executions; gets back what it admitted.

    ``acquire`` returns a lease (any object, None included) or raises ``QuotaExceeded``. It may
    block to wait, but never past ``deadline`` (``time.monotonic()`` seconds). ``release`` is
    called exactly once for every successful ``acquire``, on every path, with the fee used.

    Optional: an ``acquire`` that also accepts a ``token`` keyword gets the execution's
    ``CancelToken``, so a wait can end as soon as the execution is cancelled (register a
    wake-up with ``token.on_cancel``; raise ``ERROR_OF_KIND[token.reason]``);
    ``snapshot(caller=None) -> dict`` (limits and usage, for ``metrics()`` and ``coordinator
    quota status``; a ``caller`` parameter gets one caller's view); ``may_wait() -> bool``
    (whether ``acquire`` can block with this configuration: a coordinator with worker
    processes then admits submitted executions off the caller's thread); ``check(request,
    resource)`` (raise ``QuotaExceeded`` if ``acquire`` would refuse, consuming nothing: what
    ``simulate`` runs instead of ``acquire``). Defaults in ``QuotaPolicyBase``.
    """

    def acquire(
        self, request: ExecutionRequest, resource: ResourceInfo, deadline: float
    ) -> Any: ...

    def release(self, lease: Any, fee_used: int) -> None: ...


@runtime_checkable
class MetricsSink(Protocol):
    """Receives one report per finished execution. Keep it fast: it runs on the caller's
    thread after the result is decided. Optional (defaults in ``MetricsSinkBase``):
    ``snapshot() -> dict``, ``close()``."""

    def record(self, report: ExecutionReport) -> None: ...


@runtime_checkable
class AuditSink(Protocol):
    """Receives every audit record after it is committed to the core's log. Optional
    (default in ``AuditSinkBase``): ``close()``."""

    def emit(self, record: AuditRecord) -> None: ...


@runtime_checkable
class EffectProcessor(Protocol):
    """Applies one execution's effects of the kinds it registered, atomically with the rest.

    ``prepare`` stages the effects (inside ``txn``, the store's open transaction, for
    processors that write to it) and raises to veto the commit. ``commit`` runs after the
    store transaction committed; ``rollback`` after a veto or failure. Each gets the same
    ``execution_id`` so a processor can keep per-execution staging.

    Optional: a class attribute ``txn_only = True`` declares that ``prepare`` writes only
    through ``txn`` (nothing staged elsewhere) and that ``commit`` and ``rollback`` do
    nothing; a store may then skip them and run ``prepare`` again after rolling back an
    attempt (the SQLite store's short commit path, docs/storage.md). ``EffectProcessorBase``
    has do-nothing steps to override.
    """

    def prepare(self, execution_id: str, effects: Sequence[Effect], txn: Any) -> None: ...

    def commit(self, execution_id: str) -> None: ...

    def rollback(self, execution_id: str) -> None: ...


class HostCall(Protocol):
    """What a host function receives as its first argument: the running execution.

    Memory accessors check every range (negative, overflowing or past the end raise ``Trap``).
    """

    context: ExecutionContext

    def read(self, ptr: int, length: int) -> bytes: ...

    def write(self, ptr: int, data: bytes) -> None: ...

    def emit(self, effect: Effect) -> None: ...

    def charge(self, fee: int) -> None: ...

    def fee_remaining(self) -> int: ...


__all__ = [
    "AuditSink",
    "DeployRequest",
    "EffectProcessor",
    "Engine",
    "HostCall",
    "HostFunctionRecord",
    "MetricsSink",
    "QuotaPolicy",
    "SecurityValidator",
]
