"""Worker processes running the whole pipeline, and the coordinator's side of them.

With ``[coordinator] processes = N`` the coordinator starts N worker processes
(``worker.py``), each holding its engines, caches and threads, and keeps for itself what
must be one for all of them:

- **admission**: validation, the resource lookup and quota run here (``Pipeline.admit``),
  against one quota state, so rate, concurrency and fee-budget limits hold exactly however
  many workers there are; a refusal is recorded here as it would be in-process;
- **the writer**: the one SQLite writer connection. A worker's commit (effects plus the final
  audit record) arrives as a ``finish`` call; this process's store commits it, groups it with
  what other workers finished at the same time (``store/groupcommit.py``), assigns the
  sequence number and links the chain, then answers. No SQLite write lock is ever contended
  between processes on the execution path;
- **the sinks**: audit sinks get each committed record here, metrics sinks each result.

Routing: an execution of a resource holding a state capability goes to the worker its id
hashes to, so its state cache and lock stay warm in one process (the file lock of
``execution/locks.py`` still serialises it across processes, e.g. when a nested call from
another worker reaches it); anything else goes to the worker with the fewest executions in
flight. A worker that dies fails its in-flight executions with ``engine_error`` (recorded,
nothing applied: their commit never reached the writer) and is replaced.

One reader thread per worker serves its pipe: commits, appends, results and replies
(``writer.py`` commits).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

from coordinator_core.engines.processes.spec import spec_from
from coordinator_core.execution.ledger import Entry
from coordinator_core.log import logger
from coordinator_core.workers.channel import Channel, ChannelClosed, serve_batches
from coordinator_core.workers.process import START_TIMEOUT, WorkerProcess, home, load
from coordinator_core.workers.worker import (
    CANCEL,
    RESULT,
    RUN,
    STATUS,
    STOP,
)
from coordinator_core.workers.writer import CommitService
from coordinator_hookspecs import (
    CoordinatorError,
    EngineError,
    ErrorInfo,
    ErrorKind,
    ExecutionReport,
    ExecutionResult,
    InternalError,
    InvalidRequest,
    QuotaExceeded,
    Status,
)

#: Most messages of one worker handled as one batch (one group commit, one reply message).
MAX_READ = 256


class WorkerProcesses:
    """The coordinator's worker processes; see the module docstring."""

    def __init__(self, coordinator: Any, count: int) -> None:
        if count < 1:
            raise InvalidRequest(f"processes must be at least 1 here, got {count}")
        self.coordinator = coordinator
        self._store = coordinator.store
        self._pipeline = coordinator.pipeline
        self._ledger = coordinator.ledger
        self._commits = CommitService(
            coordinator.store, coordinator.pipeline_processors, coordinator.audit_sinks,
            coordinator.config.core.enable_audit_events and bool(coordinator.audit_sinks))
        self._metrics = coordinator.metrics_sinks.record
        core = coordinator.config.core
        self._state_capabilities = frozenset(core.state_capabilities)
        self._affinity = core.process_routing == "affinity"
        #: no quota policy can block admission: ``submit`` dispatches on the caller's thread
        self.admit_inline = not (core.enable_quota_management and coordinator.quota.may_wait)
        self._spec = spec_from(coordinator, ())
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        #: execution id -> (entry, its worker, quota held for it)
        self._inflight: dict[str, tuple[Entry, WorkerProcess, Any]] = {}
        self._closing = False
        self._max_queued = coordinator.config.core.max_queued
        self.restarts = 0
        procs = [WorkerProcess(i, self._ctx, self._spec) for i in range(count)]
        try:
            for proc in procs:
                proc.await_ready(START_TIMEOUT)
        except BaseException:
            for proc in procs:
                proc.process.kill()
            raise
        self._procs = procs
        for proc in procs:
            self._start_reader(proc)

    # -- handing executions out ------------------------------------------------------------
    def dispatch(self, entry: Entry) -> None:
        """Admit ``entry`` here, then hand it to a worker; its result completes the entry's
        future when the worker reports it. A refusal is recorded and completed here."""
        pipeline = self._pipeline
        if len(self._inflight) >= self._max_queued:  # back-pressure, as in-process
            pipeline.run(entry, refused=QuotaExceeded(
                f"the worker processes hold {self._max_queued} executions already "
                "([coordinator] max_queued)", source="coordinator"))
            return
        try:
            resource, held = pipeline.admit(entry)
        except CoordinatorError as exc:
            pipeline.run(entry, refused=exc)
            return
        except Exception as exc:  # a quota plugin's bug: refused as internal, recorded
            pipeline.run(entry, refused=InternalError(
                f"admission failed: {type(exc).__name__}: {exc}"))
            return
        if entry.token.reason is not None:  # cancelled or timed out while admitted
            pipeline.release(held, 0)
            pipeline.run(entry)
            return
        stateful = self._affinity and not self._state_capabilities.isdisjoint(
            resource.capabilities)
        error: Exception | None = None
        for proc in self._choices(resource.id if stateful else None):
            with self._lock:
                self._inflight[entry.execution_id] = (entry, proc, held)
                proc.inflight += 1
            try:
                proc.channel.send((RUN, entry.execution_id, entry.request,
                                   entry.token.deadline))
            except Exception as exc:  # that worker just died: nothing was handed over
                self._forget(entry.execution_id)
                error = exc
                continue
            if entry.token.reason is ErrorKind.CANCELLED:
                # cancel() came between the check above and the registration, found nothing
                # handed out and answered True: the worker must hear of it too.
                try:
                    proc.channel.call(CANCEL, entry.execution_id)
                except ChannelClosed:
                    pass
            return
        pipeline.release(held, 0)
        pipeline.run(entry, refused=EngineError(
            f"no worker process could take the execution ({error or 'none is running'})"))

    def _choices(self, home_of: str | None) -> list[WorkerProcess]:
        """The live workers to try, best first: the resource's home (affinity), or the least
        loaded. A home that is down is skipped: the state lock keeps its resources safe on
        any worker until it is back."""
        live = [p for p in self._procs if p.alive]
        if home_of is not None:
            first = self._procs[home(home_of, len(self._procs))]
            return [first, *(p for p in live if p is not first)] if first.alive else live
        return sorted(live, key=load)

    def cancel(self, entry: Entry) -> bool:
        """Cancel a dispatched execution in its worker; False if it already ended."""
        found = self._inflight.get(entry.execution_id)
        if found is None:
            if entry.result is not None or entry.status.final:
                return False  # it finished a moment ago
            # Not handed out yet: dispatch sees the token (before or after handing it out).
            return entry.token.cancel(ErrorKind.CANCELLED)
        try:
            return bool(found[1].channel.call(CANCEL, entry.execution_id))
        except ChannelClosed:
            return False

    def status(self, entry: Entry) -> Status:
        """``queued`` or ``running``, as the worker holding the execution sees it."""
        found = self._inflight.get(entry.execution_id)
        if found is None:
            return entry.status
        try:
            status = found[1].channel.call(STATUS, entry.execution_id)
        except ChannelClosed:
            return entry.status
        return status if status is not None else entry.status

    def snapshot(self) -> dict[str, Any]:
        return {
            "processes": [{"index": p.index, "pid": p.pid, "inflight": p.inflight,
                           "alive": p.process.is_alive()} for p in self._procs],
            "restarts": self.restarts,
        }

    # -- the reader of each worker's pipe --------------------------------------------------
    def _start_reader(self, proc: WorkerProcess) -> None:
        proc.reader = threading.Thread(target=self._serve, args=(proc,), daemon=True,
                                       name=f"coordinator-worker-{proc.index}-reader")
        proc.reader.start()

    def _serve(self, proc: WorkerProcess) -> None:
        """Read ``proc``'s pipe until it closes: what one read finds waiting is committed as
        one group and answered in one message (``CommitService``), then the results of the
        executions it finished complete their entries."""
        commit, complete = self._commits.handle, self._complete

        def handle(channel: Channel, messages: list[tuple[Any, ...]]) -> None:
            results: list[tuple[Any, ...]] = [m[1:] for m in messages if m[0] == RESULT]
            try:
                commit(channel, messages, results)
            finally:  # whatever failed after the commits, their callers get their results
                for result, resource_type, stages in results:
                    complete(result, resource_type, stages)

        why = serve_batches(proc.channel, handle, MAX_READ)
        self._lost(proc, why)

    def _complete(self, result: ExecutionResult, resource_type: str | None,
                  stages: tuple[tuple[str, float], ...]) -> None:
        found = self._forget(result.execution_id)
        if found is not None:
            self._pipeline.release(found[2], result.fee_used)
        # Metrics first: a caller reading metrics() after its result sees it counted.
        self._metrics(ExecutionReport(result, resource_type, stages))
        if found is not None:
            self._ledger.close(found[0], result)

    def _forget(self, execution_id: str) -> tuple[Entry, WorkerProcess, Any] | None:
        with self._lock:
            found = self._inflight.pop(execution_id, None)
            if found is not None:
                found[1].inflight -= 1
        return found

    def _lost(self, proc: WorkerProcess, why: str) -> None:
        """``proc``'s pipe closed. Everything it sent was handled first (one reader, in
        order), so an execution still in flight either has its final record (committed, its
        result lost with the process) or never reached the writer: it fails here."""
        proc.alive = False
        proc.process.join(1.0)
        code = proc.process.exitcode
        with self._lock:
            mine = [eid for eid, (_, p, _) in self._inflight.items() if p is proc]
        if not self._closing or mine:
            logger.error("worker process {} (pid {}) exited ({}; exit code {}) with {} "
                         "execution(s) in flight", proc.index, proc.pid, why, code, len(mine))
        for execution_id in mine:
            found = self._forget(execution_id)
            if found is None:
                continue
            entry, _, held = found
            record = self._store.execution(execution_id)
            self._pipeline.release(held, record.fee_used if record is not None else 0)
            if record is not None:
                self._ledger.close(entry, _result_of(record))
                continue
            self._pipeline.run(entry, refused=EngineError(
                f"worker process {proc.pid} exited (exit code {code}) while running this "
                "execution; nothing of it was applied", source="coordinator"))
        if self._closing:
            return
        try:
            replacement = WorkerProcess(proc.index, self._ctx, self._spec)
            replacement.await_ready(START_TIMEOUT)
        except Exception as exc:
            logger.error("worker process {} could not be replaced: {}", proc.index, exc)
            return
        with self._lock:
            closing = self._closing
            if not closing:
                self._procs[proc.index] = replacement
                self.restarts += 1
        if closing:  # close() began meanwhile: this one must not outlive it
            replacement.stop(0)
            return
        self._start_reader(replacement)
        logger.warning("worker process {} replaced (pid {})", proc.index, replacement.pid)

    # -- closing ---------------------------------------------------------------------------
    def close(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for executions in flight, then stop every worker."""
        deadline = time.monotonic() + grace
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.005)
        if self._inflight:
            logger.warning("closing: cancelling {} execution(s) still in worker processes",
                           len(self._inflight))
            for entry, proc, _ in list(self._inflight.values()):
                try:
                    proc.channel.call(CANCEL, entry.execution_id)
                except Exception:  # a worker gone meanwhile: its reader ends the entry
                    pass
            end = time.monotonic() + grace
            while self._inflight and time.monotonic() < end:
                time.sleep(0.005)
        with self._lock:
            self._closing = True
        for proc in self._procs:
            try:
                proc.channel.send((STOP,))
            except Exception:
                pass
        for proc in self._procs:
            proc.stop()


def _result_of(record: Any) -> ExecutionResult:
    """The result of an execution whose worker died after its commit: what the record says
    (its output was lost with the process)."""
    error = None
    detail = record.detail or {}
    if record.error_kind:
        error = ErrorInfo(ErrorKind(record.error_kind), record.message or "",
                          detail.get("source"))
    return ExecutionResult(record.execution_id, Status(record.status), record.resource_id or "",
                           record.caller or "", None, record.fee_used, (), error,
                           detail.get("engine"), record.duration, record.parent_id,
                           detail.get("cpu_ns", 0) * 1e-9, detail.get("memory_bytes", 0))
