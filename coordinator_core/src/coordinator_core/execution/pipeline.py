"""The execution pipeline of SPEC.md, run once per execution as plain code over frozen tuples.

validate -> security -> quota -> select engine -> execute (deadline, cancel) -> commit effects
and the final audit record -> audit sinks -> metrics sinks. No pluggy call happens here: every
plugin was bound to a tuple when the coordinator opened (DESIGN.md §2).

Whatever happens, an execution ends with exactly one final audit record and one result; quota
is released on every path; a failed execution leaves no state change; a failing sink is
logged once and never changes the result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import attrs
from loguru import logger

from coordinator_core.engines.dispatcher import Dispatcher
from coordinator_core.execution.ledger import Entry, Ledger
from coordinator_core.execution.locks import ResourceLocks
from coordinator_core.plugin_host.config import CoreSettings
from coordinator_core.services.quota.manager import Held, QuotaManager
from coordinator_core.services.security.integrator import SecurityIntegrator
from coordinator_core.store.base import BoundProcessor, Store
from coordinator_core.store.chain import effect_digest
from coordinator_core.store.effects import discarded
from coordinator_hookspecs import (
    ERROR_OF_KIND,
    STATUS_OF_KIND,
    AuditRecord,
    CoordinatorError,
    Effect,
    EngineError,
    EngineResult,
    ErrorInfo,
    ErrorKind,
    ExecutionContext,
    ExecutionReport,
    ExecutionRequest,
    ExecutionResult,
    InvalidRequest,
    NotFound,
    ResourceInfo,
    Status,
)

_SUCCEEDED = Status.SUCCEEDED
#: enum member -> its string, without the (slow) ``.value`` descriptor on the hot path
_VALUE: dict[Any, str] = {m: m.value for m in (*Status, *ErrorKind)}


#: Seconds between looks at the store's resources version: how soon a resource change made
#: by another process (an access policy set from the CLI) reaches this one's caches.
RESOURCES_RECHECK = 0.1


class Pipeline:
    """Holds the frozen collaborators and runs executions through them."""

    def __init__(
        self,
        *,
        settings: CoreSettings,
        store: Store,
        ledger: Ledger,
        dispatcher: Dispatcher,
        security: SecurityIntegrator,
        quota: QuotaManager,
        processors: Sequence[BoundProcessor],
        metrics_sinks: Sequence[tuple[str, Any]],
        audit_sinks: Sequence[tuple[str, Any]],
        state_locks: ResourceLocks | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ledger = ledger
        self.dispatcher = dispatcher
        self.security = security
        self.quota = quota
        self.processors = tuple(processors)
        self.metrics_sinks = tuple((name, sink.record) for name, sink in metrics_sinks)
        self.audit_sinks = tuple((name, sink.emit) for name, sink in audit_sinks)
        self._check_security = settings.enable_security_validation and bool(
            security.execution_validators
        )
        self._check_quota = settings.enable_quota_management and bool(quota.policies)
        self._audit_tracking = settings.enable_audit_tracking
        self._audit_events = settings.enable_audit_events and bool(self.audit_sinks)
        self._resources: dict[str, ResourceInfo] = {}
        self._failed_sinks: set[str] = set()
        self._state_capabilities = frozenset(settings.state_capabilities)
        self.state_locks = state_locks or ResourceLocks()
        self._generation = 0  # bumped by forget(): a lookup racing it does not cache
        self._code_loaders: dict[str, Any] = {}  # resource id -> its load_code, made once
        # A store without state_reader (an older custom one) gets state_get bound here.
        self._state_reader = getattr(store, "state_reader", None) or _binds_state_get(store)
        # A store without resources_version (an older custom one) is never polled.
        polled = hasattr(store, "resources_version")
        self._resources_version = store.resources_version() if polled else 0
        self._resources_checked = time.monotonic() if polled else float("inf")

    # -- request entry ---------------------------------------------------------------------
    def deadline(self, request: ExecutionRequest) -> float:
        """Absolute monotonic deadline: the request's timeout capped by the configured max."""
        timeout = request.timeout
        if timeout is None:
            timeout = self.settings.default_timeout
        elif not isinstance(timeout, (int, float)) or timeout != timeout or timeout <= 0:
            timeout = 0.0  # refused in validation; the entry still needs a deadline
        return time.monotonic() + min(timeout, self.settings.max_execution_timeout)

    def resource(self, resource_id: str) -> ResourceInfo:
        """The resource's metadata (cached); ``NotFound`` if it was never deployed."""
        if type(resource_id) is not str or not resource_id:
            raise InvalidRequest(f"resource_id must be a non-empty string, got {resource_id!r}")
        now = time.monotonic()
        if now >= self._resources_checked + RESOURCES_RECHECK:
            self._refresh_resources(now)
        info = self._resources.get(resource_id)
        if info is None:
            generation = self._generation
            info = self.store.get_resource(resource_id)
            if info is None:
                raise NotFound(f"no resource with id {resource_id!r} is deployed")
            if generation == self._generation:  # else a policy changed while we read: no cache
                self._resources[resource_id] = info
        return info

    def _refresh_resources(self, now: float) -> None:
        """Drop every cached resource and verdict if the store's resources changed since the
        last look: another process (``coordinator policy set`` beside a running service) may
        have changed an access policy. One indexed read per ``RESOURCES_RECHECK`` seconds."""
        self._resources_checked = now
        version = self.store.resources_version()
        if version != self._resources_version:
            self._resources_version = version
            self._generation += 1
            self._resources.clear()
            self.security.invalidate()

    def _code_loader(self, resource_id: str) -> Any:
        load = self._code_loaders.get(resource_id)
        if load is None:
            load = self._code_loaders.setdefault(resource_id,
                                                 _loader(self.store, resource_id))
        return load

    def forget(self, resource_id: str) -> None:
        """Drop cached metadata and verdicts of a resource whose metadata changed."""
        self._generation += 1
        self._resources.pop(resource_id, None)
        self.security.invalidate(resource_id)

    def _validate(self, request: ExecutionRequest, nested: bool) -> int:
        """validateParameters of SPEC.md: the shape of the request; returns the fee limit."""
        if not isinstance(request, ExecutionRequest):
            raise InvalidRequest(f"expected an ExecutionRequest, got {type(request).__name__}")
        if not nested and (
            request.parent_id is not None or request.parent_resource_id is not None or request.depth
        ):
            # Nested calls pass quota through on their parent's lease: a caller must not be
            # able to claim to be one.
            raise InvalidRequest(
                "parent_id and depth are set by the coordinator for nested executions only"
            )
        if not isinstance(request.caller, str) or not request.caller:
            raise InvalidRequest(f"caller must be a non-empty string, got {request.caller!r}")
        timeout = request.timeout
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or not timeout > 0 or isinstance(timeout, bool)
        ):
            raise InvalidRequest(f"timeout must be a positive number of seconds, got {timeout!r}")
        if request.entry is not None and not isinstance(request.entry, str):
            raise InvalidRequest(f"entry must be a string, got {request.entry!r}")
        if type(request.depth) is not int or request.depth < 0:
            raise InvalidRequest(f"depth must be a non-negative integer, got {request.depth!r}")
        fee_limit = request.fee_limit
        if fee_limit is None:
            return self.settings.default_fee_limit
        if type(fee_limit) is not int or fee_limit <= 0:
            raise InvalidRequest(f"fee_limit must be a positive integer, got {fee_limit!r}")
        return fee_limit

    # -- the run ---------------------------------------------------------------------------
    def run(self, entry: Entry, *, tree: _Tree | None = None,
            refused: CoordinatorError | None = None) -> ExecutionResult:
        """Run one execution to its end; never raises for an execution failure.

        ``refused``: the coordinator turned the request away before it could start (its
        queue is full); the execution ends with that error, recorded like any refusal.

        With ``tree`` it runs a nested execution: its effects are returned for the parent to
        fold into its own, its state locks and final record join the top level's ``tree``,
        released and committed with the top-level execution."""
        clock = time.perf_counter
        t0 = clock()
        request = entry.request
        token = entry.token
        stages: list[tuple[str, float]] = []
        resource: ResourceInfo | None = None
        bound = None
        output: Any = None
        fee_used = 0
        effects: tuple[Effect, ...] = ()
        error: ErrorInfo | None = None
        held: Held = []
        top = tree is None
        if tree is None:
            tree = _Tree()
        stage = "validation"
        try:
            fee_limit = self._validate(request, nested=not top)
            if refused is not None:
                raise refused
            if token.reason is not None:  # cancelled or timed out while queued
                raise _stopped(token.reason, "before it started")
            resource = self.resource(request.resource_id)
            t1 = clock()
            stages.append(("validation", t1 - t0))
            if self._check_security:
                stage = "security"
                self.security.check_execution(request, resource)
                t2 = clock()
                stages.append(("security", t2 - t1))
                t1 = t2
            if self._check_quota:
                stage = "quota"
                self.quota.acquire(request, resource, token, held)
                t2 = clock()
                stages.append(("quota", t2 - t1))
                t1 = t2
            stage = "selection"
            bound = self.dispatcher.select(resource)
            t2 = clock()
            stages.append(("selection", t2 - t1))
            if not self._state_capabilities.isdisjoint(resource.capabilities):
                stage = "lock"
                self._lock_state(resource.id, token, tree.locks)
                t1, t2 = t2, clock()
                stages.append(("lock", t2 - t1))
            reason = token.poll()
            if reason is not None:
                raise _stopped(reason, "before it started")
            stage = "execution"
            ctx = ExecutionContext(  # positional, in field order (keywords cost more)
                entry.execution_id,
                request,
                resource,
                fee_limit,
                token,
                self._state_reader(resource.id),  # state_get
                self._code_loader(resource.id),  # load_code
                _Nested(self, entry, tree) if request.depth < self.settings.max_depth else None,
            )
            bound.inflight += 1
            try:
                outcome = bound.engine.execute(ctx)
            finally:
                bound.inflight -= 1
                bound.executions += 1
                t3 = clock()
                bound.busy_seconds += t3 - t2
                stages.append(("execution", t3 - t2))
            output, fee_used, effects = _checked(outcome, bound.name)
            if token.reason is not None:
                # Finished, but cancelled or past its deadline meanwhile (an engine that does
                # not stop at once): cancel() returned True, so the result must say so.
                raise _stopped(token.reason, "while it ran", fee_used)
        except CoordinatorError as exc:
            error = ErrorInfo(exc.kind, exc.message, exc.source)
            fee_used = exc.fee_used if type(exc.fee_used) is int and exc.fee_used >= 0 else 0
        except Exception as exc:
            error = self._unexpected(exc, stage, bound)
        finally:
            if held:
                self.quota.release(held, fee_used)
        status = _SUCCEEDED if error is None else STATUS_OF_KIND[error.kind]
        if status is not _SUCCEEDED:
            effects, output = (), None
        t_commit = clock()
        if top and tree.locks and not effects:
            # Nothing to write: the tree's reads are done, so the next execution of these
            # resources may start now instead of after this record's commit.
            self._release_state(tree)
        try:
            committed, status, error, effects, output = self._commit(
                entry, status, error, fee_used, t_commit - t0, effects, output, bound, tree, top
            )
        finally:
            if top and tree.locks:
                self._release_state(tree)
        if top and tree.children and status is not _SUCCEEDED:
            self._settle_children(entry, tree, status, error)
        t_end = clock()
        stages.append(("commit", t_end - t_commit))
        result = ExecutionResult(  # positional, in field order
            entry.execution_id,
            status,
            request.resource_id,
            request.caller,
            output,
            fee_used,
            effects,
            error,
            bound.name if bound is not None else None,  # engine
            t_end - t0,  # duration
            request.parent_id,
        )
        self.ledger.close(entry, result)
        if self._audit_events:
            self._emit_audit(committed)
            stages.append(("audit_sinks", clock() - t_end))
        self._report(ExecutionReport(result, resource.type if resource else None, tuple(stages)))
        return result

    def _commit(
        self,
        entry: Entry,
        status: Status,
        error: ErrorInfo | None,
        fee_used: int,
        duration: float,
        effects: tuple[Effect, ...],
        output: Any,
        bound: Any,
        tree: _Tree,
        top: bool,
    ) -> tuple[Sequence[AuditRecord], Status, ErrorInfo | None, tuple[Effect, ...], Any]:
        """Commit the effects and the final audit record in one store transaction; a veto or
        a store failure turns the execution into a failure.

        A nested execution commits nothing itself: its record waits in ``tree.records`` and
        is committed with the top-level execution's, which rewrites it as failed if the top
        level's effects are not kept (so the log never says succeeded for discarded writes).
        """
        if not (self._audit_tracking or self._audit_events or (effects and top)):
            return (), status, error, effects, output
        record = self._final_record(entry, status, error, fee_used, duration, effects, bound)
        if not top:
            tree.records.append(record)
            return (), status, error, effects, output
        committed: Sequence[AuditRecord] = (record,)
        children = tuple(tree.records)
        if self._audit_tracking or effects or children:
            try:
                finished = self.store.finish(record, effects, self.processors, children)
                committed = finished.records
                if finished.error is not None:
                    error, status, effects, output = finished.error, Status.FAILED, (), None
            except Exception as exc:
                logger.opt(exception=exc).error("commit of {} failed", entry.execution_id)
                error = ErrorInfo(ErrorKind.INTERNAL, f"commit failed: {type(exc).__name__}: {exc}")
                status, effects, output = Status.FAILED, (), None
                committed = self._record_failure(record, error, children)
        return committed, status, error, effects, output

    def _settle_children(self, entry: Entry, tree: _Tree, status: Status,
                         error: ErrorInfo | None) -> None:
        """The top level ended without keeping its effects, so neither did its nested
        executions: each one that succeeded is failed in the ledger too, as its durable record
        says (``discarded``), and ``status`` never contradicts the audit log."""
        kind = error.kind if error is not None else ErrorKind.INTERNAL
        why = (f"discarded with its parent execution {entry.execution_id}, which ended "
               f"{_VALUE[status]} ({_VALUE[kind]})")
        for child in tree.children:
            result = child.result
            if result is not None and result.status is _SUCCEEDED:
                self.ledger.amend(child, attrs.evolve(
                    result, status=Status.FAILED, output=None, effects=(),
                    error=ErrorInfo(kind, why, "coordinator")))

    def _record_failure(
        self, record: AuditRecord, error: ErrorInfo, children: Sequence[AuditRecord] = ()
    ) -> Sequence[AuditRecord]:
        """The final records of an execution whose commit failed (nothing of it was written)
        and of its nested executions, discarded with it: one more try, alone and without
        effects, so the log still has them."""
        failed = attrs.evolve(
            record,
            status=_VALUE[Status.FAILED],
            error_kind=_VALUE[error.kind],
            message=error.message,
            effect_digest=None,
        )
        written = []
        for each in (*discarded(children, failed, error), failed):
            try:
                written.append(self.store.append(each))
            except Exception as exc:
                logger.opt(exception=exc).error(
                    "the final record of {} could not be written either", each.execution_id
                )
        return tuple(written)

    def _release_state(self, tree: _Tree) -> None:
        locks, tree.locks = tree.locks, []
        for resource_id in reversed(locks):
            self.state_locks.release(resource_id)

    def _lock_state(self, resource_id: str, token: Any, locks: list[str]) -> None:
        """Serialise executions that may write a resource's state, from read to commit.

        Engines read committed state and return absolute writes, so two executions of one
        contract running at once would lose an update. The lock is taken once per top-level
        execution tree (a nested call back into a resource the tree holds is refused) and
        bounded by the deadline, so crossing nested calls cannot deadlock."""
        if resource_id in locks:
            # A nested call back into a stateful resource of its own tree would read the
            # committed state, not the pending writes of the outer call, and the later
            # write would silently undo the earlier one.
            raise InvalidRequest(
                f"re-entrant call into resource {resource_id[:12]}, which this execution "
                "tree already runs: nested calls into a stateful resource of the same tree "
                "are refused"
            )
        state_locks = self.state_locks
        # Uncontended (the usual case): one try, no clock read, no timed wait.
        if not state_locks.acquire(resource_id, 0.0):
            # Contended: wait in short slices so a cancel is seen, bounded by the deadline.
            while not state_locks.acquire(resource_id, min(0.01, max(0.0, token.remaining))):
                reason = token.poll()
                if reason is not None:
                    raise _stopped(
                        reason,
                        f"waiting for resource {resource_id[:12]}, held by another execution",
                    )
        locks.append(resource_id)

    def _final_record(
        self,
        entry: Entry,
        status: Status,
        error: ErrorInfo | None,
        fee_used: int,
        duration: float,
        effects: tuple[Effect, ...],
        bound: Any,
    ) -> AuditRecord:
        """The one final audit record of an execution (seq and hashes set by the store)."""
        request = entry.request
        caller, resource_id = request.caller, request.resource_id
        return AuditRecord(  # positional, in field order: keywords cost more on every commit
            0,  # seq
            "execution",  # record_kind
            time.time(),  # timestamp
            entry.execution_id,
            request.parent_id,
            caller if isinstance(caller, str) else repr(caller),
            resource_id if isinstance(resource_id, str) else None,
            _VALUE[status],
            _VALUE[error.kind] if error else None,  # error_kind
            error.message if error else None,  # message
            fee_used,
            duration,
            effect_digest(effects) if effects else None,
            _detail(request, bound, error),
        )

    # -- post-processing (fails open) ------------------------------------------------------
    def _emit_audit(self, records: Sequence[AuditRecord]) -> None:
        for name, emit in self.audit_sinks:
            for record in records:
                try:
                    emit(record)
                except Exception as exc:
                    self._sink_failed("audit sink", name, exc)

    def _report(self, report: ExecutionReport) -> None:
        for name, record in self.metrics_sinks:
            try:
                record(report)
            except Exception as exc:
                self._sink_failed("metrics sink", name, exc)

    def _sink_failed(self, kind: str, name: str, exc: Exception) -> None:
        """Log a failing sink once (per sink) with its name; the result stays as it was."""
        if name in self._failed_sinks:
            return
        self._failed_sinks.add(name)
        logger.error(
            "{} {} failed: {}: {} (result unaffected; further failures of this sink are not "
            "logged)",
            kind,
            name,
            type(exc).__name__,
            exc,
        )

    def _unexpected(self, exc: Exception, stage: str, bound: Any) -> ErrorInfo:
        if stage == "execution" and bound is not None:
            logger.opt(exception=exc).warning("engine {} raised {}", bound.name, type(exc).__name__)
            return ErrorInfo(
                ErrorKind.ENGINE_ERROR,
                f"engine {bound.name} raised {type(exc).__name__}: {exc}",
                bound.name,
            )
        logger.opt(exception=exc).error("internal error in the {} stage", stage)
        return ErrorInfo(ErrorKind.INTERNAL, f"{stage} stage failed: {type(exc).__name__}: {exc}")


class _Tree:
    """What a top-level execution shares with its nested calls: the state locks taken (held
    until the top level committed) and the nested executions' final records (committed in
    the same transaction)."""

    __slots__ = ("children", "locks", "records")

    def __init__(self) -> None:
        self.locks: list[str] = []  # resource ids whose state lock the tree holds
        self.records: list[AuditRecord] = []
        self.children: list[Entry] = []  # every nested execution's ledger entry


class _Nested:
    """``ExecutionContext.invoke`` of a running execution: runs a child execution through
    the whole pipeline, linked to the parent, bounded by its deadline, cancelled with it,
    its effects returned (not committed) so they stand or fall with the parent's."""

    __slots__ = ("_parent", "_pipeline", "_tree")

    def __init__(self, pipeline: Pipeline, parent: Entry, tree: _Tree) -> None:
        self._pipeline = pipeline
        self._parent = parent
        self._tree = tree

    def __call__(self, request: ExecutionRequest) -> ExecutionResult:
        parent = self._parent
        child = attrs.evolve(
            request,
            parent_id=parent.execution_id,
            parent_resource_id=parent.request.resource_id,
            depth=parent.request.depth + 1,
        )
        deadline = min(parent.token.deadline, self._pipeline.deadline(child))
        entry = self._pipeline.ledger.open(child, deadline, Status.RUNNING)
        self._tree.children.append(entry)
        parent.token.on_cancel(entry.token.cancel)
        return self._pipeline.run(entry, tree=self._tree)


def _binds_state_get(store: Store) -> Any:
    state_get = store.state_get

    def reader(resource_id: str) -> Any:
        def get(key: bytes) -> bytes | None:
            return state_get(resource_id, key)

        return get

    return reader


def _loader(store: Store, resource_id: str) -> Any:
    def load() -> bytes:
        return store.load_code(resource_id)

    return load


def _stopped(reason: ErrorKind, when: str, fee_used: int = 0) -> CoordinatorError:
    cls = ERROR_OF_KIND.get(reason, EngineError)
    text = "cancelled" if reason is ErrorKind.CANCELLED else "deadline passed"
    return cls(f"{text} {when}", fee_used=fee_used)


def _checked(outcome: Any, engine: str) -> tuple[Any, int, tuple[Effect, ...]]:
    """The engine's result, refused as ``engine_error`` when malformed: a bad fee or effect
    would otherwise fail later, in the commit, where nothing can report it cleanly."""
    if not isinstance(outcome, EngineResult):
        raise EngineError(
            f"engine {engine} returned {type(outcome).__name__}, not an EngineResult", source=engine
        )
    fee = outcome.fee_used
    if type(fee) is not int or fee < 0:
        raise EngineError(
            f"engine {engine} reported fee_used {fee!r}, not a non-negative integer", source=engine
        )
    effects = tuple(outcome.effects)
    for effect in effects:
        if not (
            type(effect) is Effect
            and type(effect.kind) is str
            and type(effect.resource_id) is str
            and type(effect.key) is bytes
            and type(effect.value) is bytes
        ):
            raise EngineError(
                f"engine {engine} returned a malformed effect {effect!r} "
                "(kind and resource_id str, key and value bytes)",
                source=engine,
            )
    return outcome.output, fee, effects


def _detail(request: ExecutionRequest, bound: Any, error: ErrorInfo | None) -> dict[str, Any]:
    detail: dict[str, Any] = {"entry": request.entry}
    if bound is not None:
        detail["engine"] = bound.name
    if error is not None and error.source:
        detail["source"] = error.source
    if request.depth:
        detail["depth"] = request.depth
    return detail
