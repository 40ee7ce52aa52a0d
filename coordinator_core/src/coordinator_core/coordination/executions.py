"""The execution half of the coordinator's API (DESIGN.md §3): execute, submit,
execute_async, status and cancel.

Mixed into :class:`~coordinator_core.coordination.coordinator.Coordinator`. Each call either
runs the pipeline in this process or, with ``[coordinator] processes`` set, hands the
execution to the worker processes (``workers/pool.py``); the caller sees no difference.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from coordinator_core.execution.handles import ExecutionHandle, ExecutionStatus
from coordinator_core.execution.ledger import Entry, Ledger
from coordinator_core.execution.pipeline import Pipeline
from coordinator_core.plugin_host.config import Config
from coordinator_core.store.base import Store
from coordinator_hookspecs import (
    ErrorKind,
    ExecutionRequest,
    ExecutionResult,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    Status,
)


class ExecutionCoordinator:
    """Run, queue, inspect and cancel executions."""

    config: Config
    store: Store
    ledger: Ledger
    pipeline: Pipeline
    _pool: ThreadPoolExecutor | None
    _queue_lock: threading.Lock
    _queued: int
    _closed: bool
    _workers: Any

    def execute(self, request: ExecutionRequest) -> ExecutionResult:
        """Run one execution on the calling thread and return its result."""
        _check_request(request)
        pipeline = self.pipeline
        entry = self.ledger.open(request, pipeline.deadline(request), Status.RUNNING)
        if self._workers is None:
            return pipeline.run(entry)
        future: Future[ExecutionResult] = Future()
        entry.future = future
        self._workers.dispatch(entry)
        return future.result()

    def submit(self, request: ExecutionRequest) -> ExecutionHandle:
        """Queue one execution on the worker pool; return its handle at once."""
        if self._closed:
            raise InvalidRequest("the coordinator is closed")
        _check_request(request)
        workers = self._workers
        if workers is not None and workers.admit_inline:
            # Admission cannot block: hand it to a worker process from this thread (each
            # worker queues it behind its own threads, bounded by its own max_queued).
            entry = self.ledger.open(request, self.pipeline.deadline(request), Status.RUNNING)
            future: Future[ExecutionResult] = Future()
            entry.future = future
            workers.dispatch(entry)
            return ExecutionHandle(self, entry.execution_id, future)
        entry = self.ledger.open(request, self.pipeline.deadline(request), Status.QUEUED)
        self.enqueue(entry)
        assert entry.future is not None
        return ExecutionHandle(self, entry.execution_id, entry.future)

    def enqueue(self, entry: Entry) -> None:
        """Queue a ``queued`` entry on the worker threads (``entry.future`` gets its result);
        refused at once when ``max_queued`` executions wait already."""
        entry.future = Future()
        limit = self.config.core.max_queued
        with self._queue_lock:
            full = self._queued >= limit
            if not full:
                self._queued += 1
        if full:  # back-pressure: refused now, recorded, the handle already holds the result
            if self.ledger.claim(entry):  # else its deadline passed already: the watchdog ends it
                self.pipeline.run(entry, refused=QuotaExceeded(
                    f"the coordinator's queue is full: {limit} submitted executions wait for a "
                    "worker ([coordinator] max_queued)", source="coordinator"))
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.config.core.workers, thread_name_prefix="coordinator-worker"
            )
        self._pool.submit(self._run_queued, entry)

    async def execute_async(self, request: ExecutionRequest) -> ExecutionResult:
        """``execute`` for asyncio callers: runs on the worker pool, awaits the result.
        Cancelling the awaiting task cancels the execution."""
        handle = self.submit(request)
        try:
            return await asyncio.wrap_future(handle.future)
        except asyncio.CancelledError:
            self.cancel(handle.execution_id)
            raise

    def _run_queued(self, entry: Entry) -> None:
        with self._queue_lock:
            self._queued -= 1
        if not self.ledger.claim(entry):
            return
        try:
            if self._workers is None:
                self.pipeline.run(entry)
            else:
                self._workers.dispatch(entry)
        except BaseException as exc:  # never leave a handle waiting forever
            future = entry.future
            if future is not None and not future.done():
                future.set_exception(exc)
            raise

    def status(self, execution_id: str) -> ExecutionStatus:
        """Status of an execution: live (queued, running) or final (ledger, then the log)."""
        entry = self.ledger.get(execution_id)
        if entry is not None and entry.result is None:
            status = entry.status
            if self._workers is not None and status is Status.RUNNING:
                status = self._workers.status(entry)
            return ExecutionStatus(
                execution_id, status, entry.request.resource_id, entry.request.caller
            )
        outcome = self.ledger.outcome(execution_id)
        if outcome is not None:
            return ExecutionStatus(execution_id, *outcome)
        record = self.store.execution(execution_id)
        if record is None:
            raise NotFound(f"no execution with id {execution_id!r}")
        return ExecutionStatus(
            execution_id,
            Status(record.status),
            record.resource_id,
            record.caller,
            record.error_kind,
            record.message,
            record.fee_used,
            record.duration,
            source="log",
        )

    def cancel(self, execution_id: str) -> bool:
        """Cancel a queued or running execution; False if it already finished."""
        entry = self.ledger.get(execution_id)
        if entry is None:
            if self.ledger.outcome(execution_id) or self.store.execution(execution_id):
                return False
            raise NotFound(f"no execution with id {execution_id!r}")
        if entry.status.final:
            return False
        if self._workers is not None and entry.status is Status.RUNNING:
            return self._workers.cancel(entry)
        cancelled = entry.token.cancel(ErrorKind.CANCELLED)
        self._finish_unstarted(entry)
        return cancelled

    def _finish_unstarted(self, entry: Entry) -> None:
        """A queued execution whose token was cancelled (by ``cancel`` or its deadline) is
        finished now on this thread, not when a worker gets to it."""
        if self.ledger.claim_unstarted(entry):
            self.pipeline.run(entry)  # sees the cancelled token: records and closes it


def _check_request(request: Any) -> None:
    """Calling with something that is no request is a programming error, raised at once
    (every malformed *field* of a request ends as an ``invalid_request`` result instead)."""
    if not isinstance(request, ExecutionRequest):
        raise InvalidRequest(f"expected an ExecutionRequest, got {type(request).__name__}")
