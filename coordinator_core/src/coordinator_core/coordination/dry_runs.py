"""The dry-run half of the coordinator's API: ``query`` and ``simulate`` (and their async
forms), which run the pipeline and commit nothing (``execution/dry.py``).

Mixed into :class:`~coordinator_core.coordination.coordinator.Coordinator`. Both always run
in this process, also with ``[coordinator] processes`` set: they commit nothing, so they need
neither a worker's writer nor its routing, and they read the committed state every process
shares (docs/query-simulate.md).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

import attrs

from coordinator_core.execution.dry import QUERY, SIMULATE, DryRun
from coordinator_core.execution.ledger import Entry, Ledger
from coordinator_core.execution.pipeline import Pipeline
from coordinator_core.plugin_host.config import Config
from coordinator_core.store.base import Store
from coordinator_hookspecs import (
    AuditRecord,
    EffectKind,
    ErrorInfo,
    ErrorKind,
    ExecutionRequest,
    ExecutionResult,
    InvalidRequest,
    SimulationResult,
    Status,
)


class DryRunCoordinator:
    """Read-only queries and simulations of executions."""

    config: Config
    store: Store
    ledger: Ledger
    pipeline: Pipeline
    _closed: bool
    _append_audit: Callable[[AuditRecord], AuditRecord]

    def query(self, request: ExecutionRequest) -> ExecutionResult:
        """Run a read-only call of a deployed resource and return its result.

        It reads committed state, is capped by ``[coordinator] query_fee_limit`` (the
        request's own fee limit may lower it), and any storage write, event or log line
        traps. Security validators run; quota is neither checked nor consumed; nothing is
        committed and no audit record is written (but see ``query_audit_sample``)."""
        return self._query_end(request, self.pipeline.run(self._dry_entry(request), dry=QUERY))

    def simulate(self, request: ExecutionRequest) -> SimulationResult:
        """Run ``request`` as ``execute`` would (security, quota checked but not consumed,
        state lock, nested calls) and return what it would return, committing nothing: no
        state, no events, no audit record. ``fee_used`` is the fee the execution uses on
        the same committed state; ``state_root`` the roots its effects would produce, when
        the store keeps state roots."""
        return self._simulation(self.pipeline.run(self._dry_entry(request), dry=SIMULATE))

    async def query_async(self, request: ExecutionRequest) -> ExecutionResult:
        """``query`` for asyncio callers, on a thread; cancelling the task cancels it."""
        return self._query_end(request, await self._dry_async(request, QUERY))

    async def simulate_async(self, request: ExecutionRequest) -> SimulationResult:
        """``simulate`` for asyncio callers, on a thread; cancelling the task cancels it."""
        return self._simulation(await self._dry_async(request, SIMULATE))

    # -- inside ------------------------------------------------------------------------------
    def _dry_entry(self, request: ExecutionRequest) -> Entry:
        if not isinstance(request, ExecutionRequest):
            raise InvalidRequest(f"expected an ExecutionRequest, got {type(request).__name__}")
        if self._closed:
            raise InvalidRequest("the coordinator is closed")
        return self.ledger.open(request, self.pipeline.deadline(request), Status.RUNNING)

    async def _dry_async(self, request: ExecutionRequest, dry: DryRun) -> ExecutionResult:
        entry = self._dry_entry(request)
        run = functools.partial(self.pipeline.run, entry, dry=dry)
        try:
            return await asyncio.get_running_loop().run_in_executor(None, run)
        except asyncio.CancelledError:
            entry.token.cancel(ErrorKind.CANCELLED)
            raise

    def _query_end(self, request: ExecutionRequest, result: ExecutionResult) -> ExecutionResult:
        """A query's result: a fee exhausted at the cap says so; sampled into the log."""
        error = result.error
        if error is not None and error.kind is ErrorKind.FEE_EXHAUSTED:
            cap = self.config.core.query_fee_limit
            if request.fee_limit is None or request.fee_limit >= cap:
                result = attrs.evolve(result, error=ErrorInfo(
                    error.kind, f"{error.message} (a query's fee is capped by [coordinator] "
                    f"query_fee_limit = {cap})", error.source))
        if self.pipeline.dry_runs.sample(self.config.core.query_audit_sample):
            self._audit_query(request, result)
        return result

    def _simulation(self, result: ExecutionResult) -> SimulationResult:
        """The result as a ``SimulationResult``: every field of the execution's (by name, so
        a field ``ExecutionResult`` gains later comes along), its events and state roots."""
        effects = result.effects
        roots: dict[str, Any] = (self.store.preview_roots(effects, result.resource_id)
                                 if result.ok else {})
        return SimulationResult(
            **attrs.asdict(result, recurse=False),
            events=tuple(e for e in effects if e.kind == EffectKind.EVENT),
            state_root=roots.get("state_roots", {}).get(result.resource_id),
            global_root=roots.get("global_root"),
        )

    def _audit_query(self, request: ExecutionRequest, result: ExecutionResult) -> None:
        """A sampled query's ``query`` audit record (``query_audit_sample``)."""
        error = result.error
        self._append_audit(AuditRecord(
            seq=0, record_kind="query", timestamp=time.time(),
            execution_id=result.execution_id, caller=result.caller,
            resource_id=result.resource_id, status=result.status.value,
            error_kind=error.kind.value if error else None,
            message=error.message if error else None, fee_used=result.fee_used,
            duration=result.duration, detail={"entry": request.entry},
        ))
