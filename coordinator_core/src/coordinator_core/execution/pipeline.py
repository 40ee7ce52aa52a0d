"""The execution pipeline of SPEC.md, run once per execution as plain code over frozen tuples.

validate -> security -> quota -> select engine -> lock state -> execute (deadline, cancel)
-> commit effects and the final audit record -> audit sinks -> metrics sinks. No pluggy call
happens here: every plugin was bound to a tuple when the coordinator opened (DESIGN.md §2),
and every stage is a callable bound once in ``__init__``. The stages live beside this module:
``checks`` (request and engine result), ``resource_cache``, ``scope`` (state locks of an
execution tree), ``commit`` (final records) and ``nested`` (``ExecutionContext.invoke``); the
sinks are the composites of ``services/metrics`` and ``services/audit``.

Whatever happens, an execution ends with exactly one final audit record and one result; quota
is released on every path; a failed execution leaves no state change; a failing sink is
logged once and never changes the result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from coordinator_core.engines.dispatcher import Dispatcher
from coordinator_core.execution.checks import RequestChecks, checked, stopped
from coordinator_core.execution.commit import Committer
from coordinator_core.execution.dry import DryRun, DryRunCounters
from coordinator_core.execution.ledger import Entry, Ledger
from coordinator_core.execution.locks import ResourceLocks
from coordinator_core.execution.nested import Nested
from coordinator_core.execution.resource_cache import RESOURCES_RECHECK, ResourceCache
from coordinator_core.execution.scope import StateScope, Tree
from coordinator_core.execution.usage import engine_use, thread_time_ns
from coordinator_core.log import logger
from coordinator_core.plugin_host.config import CoreSettings
from coordinator_core.services.audit.sinks import AuditSinks
from coordinator_core.services.metrics.sinks import MetricsSinks
from coordinator_core.services.quota.manager import Held, QuotaManager
from coordinator_core.services.security.integrator import SecurityIntegrator
from coordinator_core.store.base import BoundProcessor, Store
from coordinator_hookspecs import (
    STATUS_OF_KIND,
    CoordinatorError,
    Effect,
    ErrorInfo,
    ErrorKind,
    ExecutionContext,
    ExecutionReport,
    ExecutionResult,
    ResourceInfo,
    Status,
    Trap,
)

__all__ = ["RESOURCES_RECHECK", "Pipeline"]

_SUCCEEDED = Status.SUCCEEDED
_FAILED = Status.FAILED


class Pipeline:
    """Holds the stages, bound once, and runs executions through them."""

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
        metrics: MetricsSinks,
        audit: AuditSinks,
        state_locks: ResourceLocks | None = None,
    ) -> None:
        self.ledger = ledger
        self.state_locks = state_locks or ResourceLocks()
        checks = RequestChecks(settings)
        cache = ResourceCache(store, security)
        scope = StateScope(self.state_locks)
        audit_events = settings.enable_audit_events and bool(audit)
        committer = Committer(store, ledger, processors,
                              tracking=settings.enable_audit_tracking, events=audit_events)
        #: the request's absolute deadline, for the ledger entry (``RequestChecks.deadline``)
        self.deadline = checks.deadline
        #: a resource's cached metadata (``ResourceCache.resource``), and dropping it
        self.resource = cache.resource
        self.forget = cache.forget
        # The stages, in the order run() calls them.
        self._validate = checks.validate
        self._check_security = settings.enable_security_validation and bool(
            security.execution_validators
        )
        self._security = security.check_execution
        self._check_quota = settings.enable_quota_management and bool(quota.policies)
        self._acquire = quota.acquire
        self._release = quota.release
        self._select = dispatcher.select
        self._state_capabilities = frozenset(settings.state_capabilities)
        self._lock_state = scope.acquire
        self._release_state = scope.release
        self._state_reader = cache.state_reader
        self._code_loader = cache.code_loader
        self._max_depth = settings.max_depth
        self._commit = committer.commit
        self._check_quota_only = quota.check
        self._query_fee_limit = settings.query_fee_limit
        #: finished queries and simulations (they report to no metrics sink)
        self.dry_runs = DryRunCounters()
        self._settle_children = committer.settle_children
        self._audit_events = audit_events
        self._emit_audit = audit.emit_all
        self._report = metrics.record
        self._measure = settings.measure_resources

    def admit(self, entry: Entry) -> tuple[ResourceInfo, Held]:
        """The stages a coordinator with worker processes runs itself before handing an
        execution to a worker: validation, the resource, and quota (one quota state for all
        workers keeps limits exact). Raises what ``run`` would record; ``run(entry,
        refused=error)`` then records it. The caller releases what it returns as held."""
        request = entry.request
        self._validate(request, False)
        resource = self.resource(request.resource_id)
        held: Held = []
        if self._check_quota:
            try:
                self._acquire(request, resource, entry.token, held)
            except BaseException:
                self._release(held, 0)
                raise
        return resource, held

    def release(self, held: Held, fee_used: int) -> None:
        """Give back quota ``admit`` took, with the fee the execution used."""
        if held:
            self._release(held, fee_used)

    def run(self, entry: Entry, *, tree: Tree | None = None,
            refused: CoordinatorError | None = None,
            dry: DryRun | None = None) -> ExecutionResult:
        """Run one execution to its end; never raises for an execution failure.

        ``refused``: the coordinator turned the request away before it could start (its
        queue is full); the execution ends with that error, recorded like any refusal.

        With ``tree`` it runs a nested execution: its effects are returned for the parent to
        fold into its own, its state locks and final record join the top level's ``tree``,
        released and committed with the top-level execution.

        With ``dry`` (``execution/dry.py``) it is a query or a simulation: the result says
        what happened, nothing is committed or recorded, and no quota is consumed."""
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
        cpu_ns, memory, usage = 0, 0, None
        measure = self._measure
        held: Held = []
        top = tree is None
        if tree is None:
            tree = Tree()
        stage = "validation"
        read_only = dry is not None and dry.read_only
        try:
            fee_limit = self._validate(request, not top)
            if read_only and fee_limit > self._query_fee_limit:
                fee_limit = self._query_fee_limit
            if refused is not None:
                raise refused
            if token.reason is not None:  # cancelled or timed out while queued
                raise stopped(token.reason, "before it started")
            resource = self.resource(request.resource_id)
            t1 = clock()
            stages.append(("validation", t1 - t0))
            if self._check_security:
                stage = "security"
                self._security(request, resource)
                t2 = clock()
                stages.append(("security", t2 - t1))
                t1 = t2
            if self._check_quota and not read_only:
                stage = "quota"
                if dry is None:
                    self._acquire(request, resource, token, held)
                else:
                    self._check_quota_only(request, resource)
                t2 = clock()
                stages.append(("quota", t2 - t1))
                t1 = t2
            stage = "selection"
            bound = self._select(resource)
            t2 = clock()
            stages.append(("selection", t2 - t1))
            if not read_only and not self._state_capabilities.isdisjoint(resource.capabilities):
                stage = "lock"
                self._lock_state(resource.id, token, tree)
                t1, t2 = t2, clock()
                stages.append(("lock", t2 - t1))
            reason = token.poll()
            if reason is not None:
                raise stopped(reason, "before it started")
            stage = "execution"
            ctx = ExecutionContext(  # positional, in field order (keywords cost more)
                entry.execution_id,
                request,
                resource,
                fee_limit,
                token,
                self._state_reader(resource.id),  # state_get
                self._code_loader(resource.id),  # load_code
                Nested(self, entry, tree, dry) if request.depth < self._max_depth else None,
                read_only,
            )
            cpu0 = thread_time_ns() if measure else 0
            try:
                outcome = bound.run(ctx)
            finally:
                if measure:
                    cpu_ns = thread_time_ns() - cpu0
                stages.append(("execution", clock() - t2))
            output, fee_used, effects = checked(outcome, bound.name)
            if read_only and effects:
                raise _written(effects, bound.name, fee_used)
            memory, usage, elsewhere = engine_use(outcome, bound.name)
            if elsewhere and measure:
                cpu_ns += round(elsewhere * 1e9)
            if token.reason is not None:
                # Finished, but cancelled or past its deadline meanwhile (an engine that does
                # not stop at once): cancel() returned True, so the result must say so.
                raise stopped(token.reason, "while it ran", fee_used)
        except CoordinatorError as exc:
            error = ErrorInfo(exc.kind, exc.message, exc.source)
            fee_used = exc.fee_used if type(exc.fee_used) is int and exc.fee_used >= 0 else 0
        except Exception as exc:
            error = _unexpected(exc, stage, bound)
        finally:
            if held:
                self._release(held, fee_used)
        status = _SUCCEEDED if error is None else STATUS_OF_KIND[error.kind]
        if status is not _SUCCEEDED:
            effects, output = (), None
        t_commit = clock()
        if dry is not None:
            return self._dry_end(entry, dry, status, output, fee_used, effects, error, bound,
                                 tree, top, t_commit - t0)
        if top and tree.locks and not effects:
            # Nothing to write: the tree's reads are done, so the next execution of these
            # resources may start now instead of after this record's commit.
            self._release_state(tree)
        try:
            finished = self._commit(
                entry, status, error, fee_used, t_commit - t0, effects, bound, tree, top,
                output, (cpu_ns, memory) if measure else None,
            )
        finally:
            if top and tree.locks:
                self._release_state(tree)
        if finished.error is not None:  # vetoed, or the store failed: nothing was kept
            error, status, effects, output = finished.error, _FAILED, (), None
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
            cpu_ns * 1e-9,  # cpu_seconds
            memory,  # memory_bytes
            usage,
        )
        self.ledger.close(entry, result)
        if self._audit_events:
            self._emit_audit(finished.records)
            stages.append(("audit_sinks", clock() - t_end))
        self._report(ExecutionReport(result, resource.type if resource else None, tuple(stages)))
        return result

    def _dry_end(self, entry: Entry, dry: DryRun, status: Status, output: Any, fee_used: int,
                 effects: tuple[Effect, ...], error: ErrorInfo | None, bound: Any, tree: Tree,
                 top: bool, duration: float) -> ExecutionResult:
        """The end of a dry run: no commit, no record, no report to the sinks; the state
        locks of its tree are given back and its ledger entries dropped, not kept."""
        if top and tree.locks:
            self._release_state(tree)
        request = entry.request
        result = ExecutionResult(
            entry.execution_id, status, request.resource_id, request.caller, output,
            fee_used, effects, error, bound.name if bound is not None else None, duration,
            request.parent_id,
        )
        self.ledger.drop(entry, result)  # nested ones too: each ends here
        if top:
            self.dry_runs.record(dry, result)
        return result


def _written(effects: tuple[Effect, ...], engine: str, fee_used: int) -> Trap:
    """The error of a query whose engine returned effects (an engine that does not look at
    ``ExecutionContext.read_only``; the wasm engine traps at the write itself)."""
    kinds = ", ".join(sorted({e.kind for e in effects}))
    return Trap(f"a query is read-only, but engine {engine} returned {len(effects)} "
                f"effect(s) ({kinds}): use execute to change state or emit events",
                source=engine, fee_used=fee_used)


def _unexpected(exc: Exception, stage: str, bound: Any) -> ErrorInfo:
    """A stage raised something other than a ``CoordinatorError``: an engine's exception is
    ``engine_error`` (the engine's fault), any other stage's is ``internal`` (the core's)."""
    if stage == "execution" and bound is not None:
        logger.opt(exception=exc).warning("engine {} raised {}", bound.name, type(exc).__name__)
        return ErrorInfo(
            ErrorKind.ENGINE_ERROR,
            f"engine {bound.name} raised {type(exc).__name__}: {exc}",
            bound.name,
        )
    logger.opt(exception=exc).error("internal error in the {} stage", stage)
    return ErrorInfo(ErrorKind.INTERNAL, f"{stage} stage failed: {type(exc).__name__}: {exc}")
